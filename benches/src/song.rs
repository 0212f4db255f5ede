//! End to end: one whole song through [`Pipeline::generate`] (prompt, frame
//! loop, codec windows decoded while the LM runs), timed from the request to
//! the first audio (time to first audio, TTFA) and to the last.
//!
//! Run last: the LM and the codec are both resident here, as in `heart-run`,
//! so the bench's peak-memory row that follows is the peak of a whole song.

use std::path::Path;
use std::time::Instant;

use heart::manifest::Verify;
use heart_backend::OrtRuntime;
use heart_runtime::settings::{Settings, SettingsArgs};
use heart_runtime::song::{Pipeline, SongRequest};

use crate::{BenchError, Row, Stats};

/// Tags of the benchmark song.
pub const SONG_TAGS: &str = "piano,happy";
/// Lyrics of the benchmark song.
pub const SONG_LYRICS: &str = "[verse]\nla la la\n[chorus]\noh oh";

/// What one benchmark song is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SongPlan {
    /// Longest song in seconds (the LM may end it earlier).
    pub seconds: f32,
    /// Euler steps per codec window.
    pub flow_steps: usize,
    /// LM guidance scale.
    pub cfg_scale: f32,
    /// Seed of the LM sampling and codec noise.
    pub seed: u64,
}

/// Generates one song with the engines in `dir` and returns its rows: time
/// to first audio, total, the audio's length and the real-time factor.
pub fn bench_song(rt: &OrtRuntime, dir: &Path, plan: SongPlan) -> Result<Vec<Row>, BenchError> {
    let mut pipeline =
        Pipeline::open(rt, dir, Verify::Quick).map_err(|e| BenchError::engine("opening the song pipeline", e))?;
    let settings = settings(plan)?;
    let request = SongRequest {
        tags: SONG_TAGS.into(),
        lyrics: SONG_LYRICS.into(),
        settings,
        seed: plan.seed,
    };
    let start = Instant::now();
    let song = pipeline
        .generate(&request, &mut |_| {})
        .map_err(|e| BenchError::engine(format!("a {} s song", plan.seconds), e))?;
    let total = start.elapsed().as_secs_f64();
    let t = song.times;
    let audio = song.audio.seconds();
    let name = |what: &str| format!("song {} s: {what}", plan.seconds);
    Ok(vec![
        Row::new(
            name("time to first audio"),
            "s",
            Stats::single(t.first_audio.as_secs_f64()),
        ),
        Row::new(name("total"), "s", Stats::single(total)),
        Row::new(name("audio"), "s", Stats::single(audio)),
        Row::new(name("real-time factor"), "x", Stats::single(total / audio.max(1e-9))),
    ])
}

fn settings(plan: SongPlan) -> Result<Settings, BenchError> {
    let args = SettingsArgs {
        duration: Some(plan.seconds),
        flow_steps: Some(plan.flow_steps),
        cfg_scale: Some(plan.cfg_scale),
        ..Default::default()
    };
    args.resolve(&SettingsArgs::default())
        .map_err(|e| BenchError::Plan(format!("--song-seconds {}: {e}", plan.seconds)))
}
