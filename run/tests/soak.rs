//! Soak: many consecutive songs from tiny engines built from the bundled
//! fixture, with different seeds, (a) in one process through the library API
//! (`Pipeline::open` once, `Pipeline::generate` per song: the path a server takes)
//! and (b) as separate `heart-run` processes. No song may fail, every WAV must
//! be a valid file of the length its frame count implies, and the in-process
//! resident memory must stay flat once warmed up.
//!
//! CI runs 10 songs each. By hand: `scripts/soak.sh 100` (sets
//! `HEART_SOAK_SONGS` and prints the figures).

use std::path::Path;

use heart::manifest::Verify;
use heart_runtime::mem::{current_rss_bytes, peak_rss_bytes};
use heart_runtime::settings::SettingsArgs;
use heart_runtime::song::{Pipeline, SongRequest};
use heart_runtime::wav::{WavFormat, write_wav};
use heart_test_support::{fixture_engines as engines, run};

/// Seconds asked of every song (the fixture's LM usually stops earlier).
const DURATION_S: f32 = 6.0;
/// Frames per second of audio.
const FRAME_RATE: f64 = 12.5;

fn songs() -> usize {
    match std::env::var("HEART_SOAK_SONGS") {
        Ok(v) => v.parse().expect("HEART_SOAK_SONGS is a song count"),
        Err(_) => 10,
    }
}

fn tags(i: usize) -> String {
    ["piano,happy", "rock,guitar", "ambient,calm", "jazz,night"][i % 4].to_string()
}

fn lyrics(i: usize) -> String {
    format!("[verse] la la {i}\n[chorus] oh oh")
}

/// Checks a WAV written for `frames` LM frames: readable, stereo 16-bit at
/// the codec's rate, exactly the implied length, every sample read back.
fn check_wav(path: &Path, frames: Option<usize>, what: &str) {
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{what}: {e}"));
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 300, 16),
        "{what}"
    );
    if let Some(frames) = frames {
        let expected = (frames as f64 / FRAME_RATE * f64::from(spec.sample_rate)) as u32;
        assert_eq!(reader.duration(), expected, "{what}: length of {frames} frames");
    }
    assert!(reader.duration() > 0, "{what}: empty song");
    let samples = reader
        .samples::<i16>()
        .map(|s| s.map(|_| ()))
        .collect::<Result<Vec<_>, _>>();
    assert_eq!(
        samples.unwrap_or_else(|e| panic!("{what}: {e}")).len(),
        2 * reader.duration() as usize,
        "{what}"
    );
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[test]
fn songs_in_one_process_keep_memory_flat() {
    let n = songs();
    assert!(n >= 4, "the soak needs at least 4 songs to compare warm-up and end");
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let mut engine = Pipeline::open(&rt, engines(), Verify::Quick).unwrap();
    let settings = SettingsArgs {
        duration: Some(DURATION_S),
        ..SettingsArgs::default()
    }
    .resolve(&SettingsArgs::default())
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut rss = Vec::with_capacity(n);
    let start = std::time::Instant::now();
    for i in 0..n {
        let request = SongRequest {
            tags: tags(i),
            lyrics: lyrics(i),
            settings,
            seed: 1000 + i as u64,
        };
        let song = engine
            .generate(&request, &mut |_| {})
            .unwrap_or_else(|e| panic!("song {i}: {e:#}"));
        let path = out.path().join(format!("{i}.wav"));
        write_wav(&path, &song.audio, WavFormat::Pcm16).unwrap();
        check_wav(&path, Some(song.frames), &format!("song {i}"));
        std::fs::remove_file(&path).unwrap();
        rss.push((current_rss_bytes().unwrap(), peak_rss_bytes().unwrap()));
    }
    let window = (n / 2).min(10);
    let first = &rss[..window];
    let last = &rss[n - window..];
    let max = |w: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| w.iter().map(f).max().unwrap();
    let (first_rss, last_rss) = (max(first, |r| r.0), max(last, |r| r.0));
    let (first_peak, last_peak) = (max(first, |r| r.1), max(last, |r| r.1));
    eprintln!(
        "soak in-process: {n} songs, 0 failed, {:.1} s; RSS max of first {window} {:.1} MB, of last {window} {:.1} MB; \
         peak RSS after first {window} {:.1} MB, after last {window} {:.1} MB",
        start.elapsed().as_secs_f64(),
        mb(first_rss),
        mb(last_rss),
        mb(first_peak),
        mb(last_peak)
    );
    // Flat: no more than 5 % + 16 MB above the warmed-up level (allocator
    // noise); a leak of one song's audio or caches per song would exceed it
    // within a few dozen songs.
    let allowed = |base: u64| base + base / 20 + 16_000_000;
    assert!(
        last_rss <= allowed(first_rss),
        "resident memory grew from {:.1} MB to {:.1} MB",
        mb(first_rss),
        mb(last_rss)
    );
    assert!(
        last_peak <= allowed(first_peak),
        "peak memory grew from {:.1} MB to {:.1} MB",
        mb(first_peak),
        mb(last_peak)
    );
}

#[test]
fn songs_as_separate_processes_all_succeed() {
    let n = songs();
    let out = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    for i in 0..n {
        let path = out.path().join(format!("{i}.wav"));
        let o = run(
            "heart-run",
            &[
                "--engines",
                engines().to_str().unwrap(),
                "--tags",
                &tags(i),
                "--lyrics",
                &lyrics(i),
                "--duration",
                &DURATION_S.to_string(),
                "--seed",
                &(2000 + i).to_string(),
                "--json",
                "--out",
                path.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "song {i}: {}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
        let frames = summary["frames"].as_u64().expect("frames") as usize;
        check_wav(&path, Some(frames), &format!("process song {i}"));
        std::fs::remove_file(&path).unwrap();
    }
    eprintln!(
        "soak processes: {n} songs, 0 failed, {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
