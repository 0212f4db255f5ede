//! Speculative decoding in the benchmark: one prompt and seed decoded plainly
//! by the target, plainly by the draft alone, and speculatively for each `K`,
//! in one run, so the speed-up is a ratio of figures taken side by side.
//!
//! The prompt is placeholder text rows (the work per frame does not depend on
//! the ids). Every generation runs to the frame budget unless the model emits
//! end-of-audio; the per-frame times divide by the frames each run produced.
//!
//! On synthesized (random) weights acceptance is not what a real checkpoint
//! gives: a lower-precision draft of a random model agrees with its target
//! more than a real one would (random weights have no outlier channels, the
//! error a quantizer fears most), and an early-exit draft agrees far less
//! (untrained intermediate layers predict nothing about the output).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use heart_runtime::lm::{
    Decoding, Engines, GenParams, HeartMula, LmError, Prompt, SamplerParams, SeededNoise, SpecStats, decode,
};

use super::BenchError;
use super::stats::Row;
use super::stats::Stats;

/// What [`bench_speculation`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecPlan {
    /// Frames drafted per round, one speculative run each.
    pub draft_frames: Vec<usize>,
    /// Frame budget of every generation (after the first frame).
    pub frames: usize,
    /// Prompt rows.
    pub prompt_len: usize,
    /// Text vocabulary size of the model (the placeholder ids stay below it).
    pub text_vocab: usize,
    /// LM guidance scale (> 1 runs batch 2).
    pub cfg_scale: f32,
    /// Temperature and top-k.
    pub sampler: SamplerParams,
    /// Seed of every generation's noise.
    pub seed: u64,
}

/// One plain generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlainRun {
    /// Frames produced.
    pub frames: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl PlainRun {
    /// Milliseconds per frame.
    pub fn ms_per_frame(&self) -> f64 {
        self.seconds * 1e3 / self.frames.max(1) as f64
    }
}

/// One speculative generation and how it compares with plain decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecRun {
    /// Frames drafted per round (`K`).
    pub draft_frames: usize,
    /// Frames and time of the run.
    pub run: PlainRun,
    /// Plain target time per frame over this run's time per frame.
    pub speedup: f64,
    /// Fraction of drafted codes accepted, per codebook (null where none was judged).
    pub acceptance_per_codebook: Vec<f64>,
    /// Drafted frames accepted whole per round.
    pub accepted_frames_per_round: f64,
    /// Target backbone calls per frame (plain decoding: 1).
    pub target_backbone_calls_per_frame: f64,
    /// Target decoder calls per frame (plain decoding: codebooks − 1).
    pub target_decoder_calls_per_frame: f64,
    /// Seconds spent in the draft.
    pub draft_seconds: f64,
    /// Seconds spent in the target.
    pub target_seconds: f64,
}

impl SpecRun {
    fn new(draft_frames: usize, stats: &SpecStats, plain: &PlainRun) -> Self {
        let run = PlainRun {
            frames: stats.frames,
            seconds: stats.total_time.as_secs_f64(),
        };
        Self {
            draft_frames,
            run,
            speedup: plain.ms_per_frame() / run.ms_per_frame(),
            acceptance_per_codebook: stats.acceptance_rates(),
            accepted_frames_per_round: stats.accepted_frames_per_round(),
            target_backbone_calls_per_frame: stats.target_backbone_per_frame(),
            target_decoder_calls_per_frame: stats.target_decoder_per_frame(),
            draft_seconds: stats.draft_time.as_secs_f64(),
            target_seconds: stats.target_time.as_secs_f64(),
        }
    }
}

/// Everything [`bench_speculation`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecBench {
    /// The target alone.
    pub plain: PlainRun,
    /// The draft alone (speculation can only pay when it costs well under the target).
    pub draft_alone: PlainRun,
    /// One entry per `K`.
    pub runs: Vec<SpecRun>,
}

/// Runs `plan`: a short warm-up of both models, then plain target, plain
/// draft and one speculative generation per `K`, all with the same prompt and seed.
pub fn bench_speculation(
    target: &mut HeartMula,
    draft: &mut HeartMula,
    plan: &SpecPlan,
) -> Result<SpecBench, BenchError> {
    if plan.draft_frames.contains(&0) {
        return Err(BenchError::Plan("--speculate: K must be at least 1".into()));
    }
    let text = (plan.text_vocab as i64 - 1).max(1);
    let ids: Vec<i64> = (0..plan.prompt_len as i64).map(|i| (i * 37 + 5) % text).collect();
    let prompt = Prompt::from_text(&ids, plan.prompt_len / 4);
    let params = GenParams {
        cfg_scale: plan.cfg_scale,
        max_audio_length_ms: plan.frames as u64 * heart::geometry::FRAME_MS,
    };
    let warm = GenParams {
        max_audio_length_ms: heart::geometry::FRAME_MS,
        ..params
    };
    plain_run(target, &prompt, &warm, plan).map_err(|e| BenchError::engine("warm-up of the target", e))?;
    plain_run(draft, &prompt, &warm, plan).map_err(|e| BenchError::engine("warm-up of the draft", e))?;
    let plain = plain_run(target, &prompt, &params, plan).map_err(|e| BenchError::engine("plain decoding", e))?;
    let draft_alone = plain_run(draft, &prompt, &params, plan).map_err(|e| BenchError::engine("the draft alone", e))?;
    let mut runs = Vec::new();
    for &k in &plan.draft_frames {
        let engines = Engines {
            target: &mut *target,
            draft: Some(&mut *draft),
        };
        let decoding = Decoding::Speculative { draft_frames: k };
        let out = decode(
            decoding,
            engines,
            &prompt,
            params,
            plan.sampler,
            &mut SeededNoise::new(plan.seed),
            &mut |_| Ok(()),
        )
        .map_err(|e| BenchError::engine(format!("speculative decoding with K = {k}"), e))?;
        let stats = out
            .speculation
            .ok_or_else(|| BenchError::Plan(format!("speculative decoding with K = {k} reported no statistics")))?;
        runs.push(SpecRun::new(k, &stats, &plain));
    }
    Ok(SpecBench {
        plain,
        draft_alone,
        runs,
    })
}

fn plain_run(lm: &mut HeartMula, prompt: &Prompt, params: &GenParams, plan: &SpecPlan) -> Result<PlainRun, LmError> {
    let engines = Engines {
        target: lm,
        draft: None,
    };
    let start = Instant::now();
    let out = decode(
        Decoding::Plain,
        engines,
        prompt,
        *params,
        plan.sampler,
        &mut SeededNoise::new(plan.seed),
        &mut |_| Ok(()),
    )?;
    Ok(PlainRun {
        frames: out.generation.frames.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
impl SpecBench {
    /// Table rows: per-frame times, and per `K` the speed-up, accepted frames
    /// per round, target calls per frame and acceptance of codebook 0 and of
    /// codebooks 1.. (mean). Single runs: `n` = 1.
    pub fn rows(&self) -> Result<Vec<Row>, BenchError> {
        let one = |x: f64| Stats::from_samples(&[x]);
        let mut rows = vec![
            Row::new("plain decoding (target)", "ms/frame", one(self.plain.ms_per_frame())?),
            Row::new("draft alone", "ms/frame", one(self.draft_alone.ms_per_frame())?),
        ];
        for r in &self.runs {
            let k = |what: &str| format!("speculate K={} {what}", r.draft_frames);
            let rest: Vec<f64> = r
                .acceptance_per_codebook
                .iter()
                .skip(1)
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            let rest_mean = rest.iter().sum::<f64>() / rest.len().max(1) as f64;
            let first = r.acceptance_per_codebook.first().copied().unwrap_or(f64::NAN);
            rows.extend([
                Row::new(k("frame"), "ms/frame", one(r.run.ms_per_frame())?),
                Row::new(k("speed-up"), "x", one(r.speedup)?),
                Row::new(k("accepted frames/round"), "frames", one(r.accepted_frames_per_round)?),
                Row::new(
                    k("target backbone calls"),
                    "/frame",
                    one(r.target_backbone_calls_per_frame)?,
                ),
                Row::new(
                    k("target decoder calls"),
                    "/frame",
                    one(r.target_decoder_calls_per_frame)?,
                ),
                Row::new(k("acceptance cb 0"), "%", one(first * 100.0)?),
                Row::new(k("acceptance cb 1.. mean"), "%", one(rest_mean * 100.0)?),
            ]);
        }
        Ok(rows)
    }
}
