//! Floor of the time to first audio (TTFA) of a pipelined song: the prompt
//! prefill, the LM frames of the first codec window (372, i.e. 29.76 s of
//! audio), then that window's Euler steps and its scalar decode — the codec
//! cannot start before its 372 codes exist, and nothing is audible before the
//! window is decoded. Each stage's floor is `max(bytes / bandwidth, FLOPs /
//! tensor throughput)` on one accelerator ([`Accelerator`]).
//!
//! Stages and the rates they use:
//! - prefill: one backbone pass over the prompt at batch `B` (2 with CFG):
//!   the backbone weights once, `2 · params · positions · B` FLOPs at the LM's
//!   tensor rate;
//! - frames: [`LmRoofline::frame_bytes`] per frame at its cache length, read
//!   at `bandwidth` (GEMV: the FLOPs are far below the tensor rate);
//! - estimator: [`EstimatorWeights::call_flops`] on 744 latent frames per
//!   step at the codec's tensor rate, against its weights at `bandwidth`;
//! - scalar decoder: [`scalar_decoder_window_flops`] likewise.

use serde::Serialize;

use crate::config::{CodecConfig, MulaConfig};
use crate::geometry::{WINDOW_CODES, WINDOW_LATENTS};
use crate::precision::Precision;

use super::codec::{EstimatorWeights, scalar_decoder_weights, scalar_decoder_window_flops};
use super::lm::LmRoofline;

/// Roofline figures of one accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accelerator {
    /// Memory bandwidth, GB/s (10⁹ B/s).
    pub bandwidth_gb_s: f64,
    /// Dense tensor throughput at the LM's precision, TFLOP/s.
    pub lm_tflop_s: f64,
    /// Dense tensor throughput at the codec's precision, TFLOP/s.
    pub codec_tflop_s: f64,
}

/// The GB10 (DGX Spark) with an NVFP4 LM and an FP16 codec: 273 GB/s of
/// LPDDR5X; NVIDIA's "1 PFLOP FP4" is with 2:4 sparsity, so 500 TFLOP/s dense
/// FP4; FP16 with FP32 accumulation at a quarter of that, 125 TFLOP/s
/// (Blackwell's FP16 : FP8 : FP4 = 1 : 2 : 4 tensor ratio).
pub const GB10: Accelerator = Accelerator {
    bandwidth_gb_s: 273.0,
    lm_tflop_s: 500.0,
    codec_tflop_s: 125.0,
};

/// One song's time-to-first-audio floor, seconds per stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TtfaFloor {
    /// Prompt prefill.
    pub prefill_s: f64,
    /// LM frames of the first window.
    pub frames_s: f64,
    /// The first window's Euler steps.
    pub estimator_s: f64,
    /// The first window's scalar decode.
    pub decoder_s: f64,
}

impl TtfaFloor {
    /// The whole floor.
    pub fn total_s(&self) -> f64 {
        self.prefill_s + self.frames_s + self.estimator_s + self.decoder_s
    }
}

/// What the floor is computed for.
#[derive(Debug, Clone, Copy)]
pub struct TtfaPlan<'a> {
    /// The LM.
    pub model: &'a MulaConfig,
    /// Its stored precision.
    pub lm_precision: Precision,
    /// The codec.
    pub codec: &'a CodecConfig,
    /// The codec's stored precision.
    pub codec_precision: Precision,
    /// Prompt positions.
    pub prompt_len: usize,
    /// LM batch rows (2 with CFG).
    pub lm_batch: usize,
    /// Euler steps per window.
    pub flow_steps: usize,
    /// Estimator rows per step (2 with codec CFG).
    pub codec_batch: usize,
}

/// The TTFA floor of `plan` on `acc`.
pub fn ttfa_floor(plan: &TtfaPlan<'_>, acc: &Accelerator) -> TtfaFloor {
    let secs = |bytes: u64, flops: u64, tflop_s: f64| {
        (bytes as f64 / (acc.bandwidth_gb_s * 1e9)).max(flops as f64 / (tflop_s * 1e12))
    };
    let roof = LmRoofline::new(plan.model, plan.lm_precision, plan.lm_batch);
    let backbone = &roof.weights.backbone;
    let prefill_flops = 2 * backbone.matrix_params() * (plan.prompt_len * plan.lm_batch) as u64;
    let prefill_s = secs(backbone.bytes(plan.lm_precision), prefill_flops, acc.lm_tflop_s);
    let frame_bytes: u64 = (0..WINDOW_CODES)
        .map(|i| roof.frame_bytes(plan.prompt_len + i + 1).total())
        .sum();
    let frames_s = frame_bytes as f64 / (acc.bandwidth_gb_s * 1e9);
    let est = EstimatorWeights::new(plan.codec);
    let step_s = secs(
        est.all().bytes(plan.codec_precision),
        est.call_flops(WINDOW_LATENTS, plan.codec_batch),
        acc.codec_tflop_s,
    );
    let decoder_s = secs(
        scalar_decoder_weights(plan.codec).bytes(plan.codec_precision),
        scalar_decoder_window_flops(plan.codec, WINDOW_LATENTS),
        acc.codec_tflop_s,
    );
    TtfaFloor {
        prefill_s,
        frames_s,
        estimator_s: plan.flow_steps as f64 * step_s,
        decoder_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(model: &'a MulaConfig, codec: &'a CodecConfig, steps: usize) -> TtfaPlan<'a> {
        TtfaPlan {
            model,
            lm_precision: Precision::Fp4,
            codec,
            codec_precision: Precision::Fp16,
            prompt_len: 300,
            lm_batch: 2,
            flow_steps: steps,
            codec_batch: 2,
        }
    }

    #[test]
    fn released_model_on_the_gb10() {
        let (model, codec) = (MulaConfig::heartmula_oss_3b(), CodecConfig::heartcodec_oss());
        let f = ttfa_floor(&plan(&model, &codec, 10), &GB10);
        // 372 frames of ~3 GB at 273 GB/s: ~11 ms each (README's GB10 roofline).
        let per_frame_ms = f.frames_s / WINDOW_CODES as f64 * 1e3;
        assert!((10.0..13.0).contains(&per_frame_ms), "{per_frame_ms} ms/frame");
        // The estimator is compute-bound at FP16: ~4.4 TFLOP a step.
        let est = EstimatorWeights::new(&codec);
        let step_tflop = est.call_flops(WINDOW_LATENTS, 2) as f64 / 1e12;
        assert!((4.0..5.0).contains(&step_tflop), "{step_tflop} TFLOP");
        assert!((f.estimator_s - 10.0 * step_tflop / 125.0).abs() < 1e-9);
        // Halving the steps halves the estimator term and nothing else.
        let g = ttfa_floor(&plan(&model, &codec, 5), &GB10);
        assert!((g.estimator_s * 2.0 - f.estimator_s).abs() < 1e-12);
        assert_eq!(
            (g.frames_s, g.prefill_s, g.decoder_s),
            (f.frames_s, f.prefill_s, f.decoder_s)
        );
        assert!(f.total_s() < 10.0, "the seed plan's 10 s target: {f:?}");
    }
}
