//! Measurement drivers: what to time, in what order, and which rows come out.
//! The engines plug in through two small traits, so this file knows nothing of
//! sessions or graphs.
//!
//! # LM ([`bench_lm`] over a [`FrameStepper`])
//! Optional prefill first (timed whole, repeated), then for every position `p`
//! of the plan: `reset(p)` (untimed), `warmup` untimed frames, then `timed`
//! frames, each timed in two parts (backbone step, decoder calls). Frames
//! advance the position, so the timed frames run at `p + warmup ..`. Rows per
//! position: backbone step, decoder frame, whole frame (ms; with a floor when a
//! bandwidth is given), frames/s and the real-time factor (audio seconds per
//! wall second: a frame is 80 ms of audio), then the session calls a frame
//! takes. When the engine has a frame graph, the same frames through it follow
//! (after a fresh `reset(p)`): its frame (ms, floor), frames/s, calls per
//! frame and its speed-up over the per-step frame (ratio of medians).
//!
//! # Codec ([`bench_codec`] over a [`CodecStepper`])
//! Euler steps and window decodes, each timed over the repeats. Rows: estimator
//! step, decode window, decode per second of audio, and the codec's real-time
//! factor for steady-state windows (`hop seconds / (steps · step + decode)`).

use std::time::Instant;

use heart::config::CodecConfig;
use heart::precision::Precision;

use super::BenchError;
use super::stats::Row;
use super::stats::{Repeats, Stats, time_repeats};
use heart::cost::codec::{
    ESTIMATOR_BATCH, EstimatorWeights, latent_frames_per_second, scalar_decoder_weights, scalar_decoder_window_flops,
};
use heart::cost::lm::{LmRoofline, compute_floor_ms, memory_floor_ms};
use heart::geometry::{HOP_LATENTS, WINDOW_LATENTS};

/// One LM engine, driven frame by frame.
///
/// Contract: after `reset(p)` the next `backbone_step` generates the frame at
/// position `p` (the cache holds `p` positions; their values need not be real,
/// attention cost does not depend on them). `backbone_step` then
/// `decoder_frame` form one frame and advance the position by one.
pub trait FrameStepper {
    /// The engine's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Resets and runs the prefill of a prompt of `tokens` positions.
    fn prefill(&mut self, tokens: usize) -> Result<(), Self::Error>;

    /// Puts the engine at `position` cached positions (untimed).
    fn reset(&mut self, position: usize) -> Result<(), Self::Error>;

    /// The backbone call of the next frame: embedding of the previous frame,
    /// backbone with its cache, `codebook0_head`, sampling of codebook 0.
    fn backbone_step(&mut self) -> Result<(), Self::Error>;

    /// The decoder calls completing the frame (codebooks 1..7 with sampling).
    fn decoder_frame(&mut self) -> Result<(), Self::Error>;

    /// Session calls per frame: through the per-step graphs, and through the
    /// frame graph (`None` when the engine has none).
    fn calls_per_frame(&self) -> (usize, Option<usize>);

    /// A whole frame through the frame graph: the embedding of the previous
    /// frame, then one call (backbone, sampling, decoder steps). Advances the
    /// position by one. Only called when [`Self::calls_per_frame`] has one.
    fn whole_frame(&mut self) -> Result<(), Self::Error>;
}

/// What [`bench_lm`] measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmPlan {
    /// Positions to measure frames at.
    pub positions: Vec<usize>,
    /// Warm-up and timed frames per position (and prefill runs).
    pub repeats: Repeats,
    /// Prompt length of the prefill measurement, if any.
    pub prefill_tokens: Option<usize>,
}

impl Default for LmPlan {
    /// Positions 0, 1024, 2048; 1 warm-up and 5 timed frames; no prefill.
    fn default() -> Self {
        Self {
            positions: vec![0, 1024, 2048],
            repeats: Repeats::new(1, 5),
            prefill_tokens: None,
        }
    }
}

/// What LM floors are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct LmFloor {
    /// Bytes per frame of the engine.
    pub roofline: LmRoofline,
    /// Memory read bandwidth, GB/s.
    pub bandwidth_gb_s: f64,
}

/// Measures `stepper` as `plan` says; rows as in the module doc. Floors (when
/// given) count the KV cache at the plan's position, the least a frame there reads.
pub fn bench_lm<S: FrameStepper>(
    stepper: &mut S,
    plan: &LmPlan,
    floor: Option<&LmFloor>,
) -> Result<Vec<Row>, BenchError> {
    plan.repeats.check()?;
    let mut rows = Vec::new();
    if let Some(tokens) = plan.prefill_tokens {
        let what = format!("prefill {tokens} tokens");
        let secs = time_repeats(plan.repeats, || {
            stepper.prefill(tokens).map_err(|e| BenchError::engine(&what, e))
        })?;
        let row = Row::millis(&what, "ms", secs);
        let rate = row.rate("prefill tokens/s", "tokens/s", tokens as f64 * 1e3);
        rows.extend([row, rate]);
    }
    for &p in &plan.positions {
        rows.extend(bench_position(stepper, p, plan.repeats, floor)?);
    }
    Ok(rows)
}

/// The rows of one position.
fn bench_position<S: FrameStepper>(
    stepper: &mut S,
    position: usize,
    repeats: Repeats,
    floor: Option<&LmFloor>,
) -> Result<Vec<Row>, BenchError> {
    let at = |what: &str| format!("{what} @ pos {position}");
    stepper
        .reset(position)
        .map_err(|e| BenchError::engine(at("reset"), e))?;
    let (mut backbone, mut decoder) = (Vec::new(), Vec::new());
    for i in 0..repeats.warmup + repeats.timed {
        let start = Instant::now();
        stepper
            .backbone_step()
            .map_err(|e| BenchError::engine(at("backbone step"), e))?;
        let mid = Instant::now();
        stepper
            .decoder_frame()
            .map_err(|e| BenchError::engine(at("decoder frame"), e))?;
        let end = Instant::now();
        if i >= repeats.warmup {
            backbone.push((mid - start).as_secs_f64());
            decoder.push((end - mid).as_secs_f64());
        }
    }
    let frame: Vec<f64> = backbone.iter().zip(&decoder).map(|(b, d)| b + d).collect();
    let mut backbone = Row::millis(at("lm backbone step"), "ms", Stats::from_samples(&backbone)?);
    let mut decoder = Row::millis(at("lm decoder frame"), "ms", Stats::from_samples(&decoder)?);
    let mut frame = Row::millis(at("lm frame"), "ms/frame", Stats::from_samples(&frame)?);
    if let Some(f) = floor {
        let bytes = f.roofline.frame_bytes(position);
        backbone = backbone.with_floor(memory_floor_ms(bytes.backbone(), f.bandwidth_gb_s));
        decoder = decoder.with_floor(memory_floor_ms(bytes.decoder(), f.bandwidth_gb_s));
        frame = frame.with_floor(memory_floor_ms(bytes.total(), f.bandwidth_gb_s));
    }
    let fps = frame.rate(at("lm frames/s"), "frames/s", 1e3);
    let rtf = frame.rate(at("lm real-time factor"), "x", heart::geometry::FRAME_MS as f64);
    let (per_step_calls, frame_graph_calls) = stepper.calls_per_frame();
    let calls = Row::new(at("lm calls per frame"), "calls", Stats::single(per_step_calls as f64));
    let mut rows = vec![backbone, decoder, frame, fps, rtf, calls];
    if let Some(graph_calls) = frame_graph_calls {
        stepper
            .reset(position)
            .map_err(|e| BenchError::engine(at("reset"), e))?;
        let secs = time_repeats(repeats, || {
            stepper
                .whole_frame()
                .map_err(|e| BenchError::engine(at("frame graph"), e))
        })?;
        let mut whole = Row::millis(at("lm frame graph"), "ms/frame", secs);
        if let Some(f) = floor {
            whole = whole.with_floor(memory_floor_ms(
                f.roofline.frame_bytes(position).total(),
                f.bandwidth_gb_s,
            ));
        }
        let fps = whole.rate(at("lm frame graph frames/s"), "frames/s", 1e3);
        let calls = Row::new(
            at("lm frame graph calls per frame"),
            "calls",
            Stats::single(graph_calls as f64),
        );
        let speedup = Row::new(
            at("lm frame graph speed-up"),
            "x",
            Stats::single(rows[2].stats.median / whole.stats.median),
        );
        rows.extend([whole, fps, calls, speedup]);
    }
    Ok(rows)
}

/// One codec engine, driven step by step.
pub trait CodecStepper {
    /// The engine's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// One Euler step of one window: the estimator on both CFG rows and the update.
    fn estimator_step(&mut self) -> Result<(), Self::Error>;

    /// The scalar decoder on one window of latents (both audio channels).
    fn decode_window(&mut self) -> Result<(), Self::Error>;
}

/// What [`bench_codec`] measures and how figures are scaled to audio time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecPlan {
    /// Warm-up and timed runs of each of the two measurements.
    pub repeats: Repeats,
    /// Euler steps per window.
    pub flow_steps: usize,
    /// Latent frames per window.
    pub window_latent_frames: usize,
    /// New latent frames per window after the first.
    pub hop_latent_frames: usize,
    /// Latent frames per second of audio.
    pub latent_frames_per_second: f64,
}

impl CodecPlan {
    /// The upstream geometry (744-frame windows, 640-frame hop) at `cfg`'s latent rate.
    pub fn new(cfg: &CodecConfig, repeats: Repeats, flow_steps: usize) -> Self {
        Self {
            repeats,
            flow_steps,
            window_latent_frames: WINDOW_LATENTS,
            hop_latent_frames: HOP_LATENTS,
            latent_frames_per_second: latent_frames_per_second(cfg),
        }
    }

    fn seconds(&self, latent_frames: usize) -> f64 {
        latent_frames as f64 / self.latent_frames_per_second
    }
}

/// What codec floors are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecFloor {
    /// The codec's configuration (for weights and FLOPs).
    pub config: CodecConfig,
    /// Precision its weights are stored at.
    pub precision: Precision,
    /// Memory read bandwidth, GB/s.
    pub bandwidth_gb_s: f64,
    /// Peak f32 throughput, GFLOP/s.
    pub peak_gflop_s: f64,
}

impl CodecFloor {
    /// Floors in ms of one estimator step and one window decode:
    /// `max(bytes / bandwidth, FLOPs / peak)` each.
    pub fn floors_ms(&self, window_latent_frames: usize) -> (f64, f64) {
        let est = EstimatorWeights::new(&self.config);
        let step = memory_floor_ms(est.all().bytes(self.precision), self.bandwidth_gb_s).max(compute_floor_ms(
            est.call_flops(window_latent_frames, ESTIMATOR_BATCH),
            self.peak_gflop_s,
        ));
        let decode_bytes = scalar_decoder_weights(&self.config).bytes(self.precision);
        let decode = memory_floor_ms(decode_bytes, self.bandwidth_gb_s).max(compute_floor_ms(
            scalar_decoder_window_flops(&self.config, window_latent_frames),
            self.peak_gflop_s,
        ));
        (step, decode)
    }
}

/// Measures `stepper` as `plan` says; rows as in the module doc.
pub fn bench_codec<S: CodecStepper>(
    stepper: &mut S,
    plan: &CodecPlan,
    floor: Option<&CodecFloor>,
) -> Result<Vec<Row>, BenchError> {
    if plan.flow_steps == 0 || plan.window_latent_frames == 0 || plan.latent_frames_per_second <= 0.0 {
        return Err(BenchError::Plan(format!(
            "codec plan needs steps, window and rate > 0: {plan:?}"
        )));
    }
    let step = time_repeats(plan.repeats, || {
        stepper
            .estimator_step()
            .map_err(|e| BenchError::engine("codec estimator step", e))
    })?;
    let decode = time_repeats(plan.repeats, || {
        stepper
            .decode_window()
            .map_err(|e| BenchError::engine("codec decode window", e))
    })?;
    let mut step = Row::millis("codec estimator step", "ms/step", step);
    let mut decode = Row::millis("codec decode window", "ms/window", decode);
    if let Some(f) = floor {
        let (step_floor, decode_floor) = f.floors_ms(plan.window_latent_frames);
        step = step.with_floor(step_floor);
        decode = decode.with_floor(decode_floor);
    }
    let window_s = plan.seconds(plan.window_latent_frames);
    let per_audio_s = scaled_row("codec decode per audio second", "ms/audio s", &decode, 1.0 / window_s);
    let steps = plan.flow_steps as f64;
    let window = Stats {
        n: step.stats.n.min(decode.stats.n),
        median: steps * step.stats.median + decode.stats.median,
        min: steps * step.stats.min + decode.stats.min,
        max: steps * step.stats.max + decode.stats.max,
        p10: steps * step.stats.p10 + decode.stats.p10,
        p90: steps * step.stats.p90 + decode.stats.p90,
    };
    let hop_ms = plan.seconds(plan.hop_latent_frames) * 1e3;
    let rtf = Row::new("codec real-time factor", "x", window.reciprocal(hop_ms));
    Ok(vec![step, decode, per_audio_s, rtf])
}

/// `row` with every statistic and its floor multiplied by `factor`.
fn scaled_row(name: &str, unit: &str, row: &Row, factor: f64) -> Row {
    let scaled = Row::new(name, unit, row.stats.scaled(factor));
    match row.floor {
        Some(f) => scaled.with_floor(f * factor),
        None => scaled,
    }
}
