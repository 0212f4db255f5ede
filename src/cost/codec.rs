//! Cost model of HeartCodec decoding: weights read and floating-point work per
//! flow-matching Euler step and per scalar-decoder window, from `CodecConfig`.
//!
//! Estimator (spec §4.4): one call per Euler step on a batch of 2 (the CFG rows)
//! of `T` latent frames (744 per window). It reads every weight once per call
//! and does `2 · params · T · B` FLOPs in its per-token matrices (the
//! `ProjectLayer` convs count `k = 3` taps), `4 · T² · D · B` per attention
//! layer (`q·Kᵀ` and `P·V`), and `2 · params · B` in the timestep MLPs
//! (`adaln_single*`, once per call). At ~740 FLOP per byte it is compute-bound on
//! any CPU, so its floor is `max(bytes / bandwidth, FLOPs / peak)`.
//!
//! Scalar decoder (spec §4.7): a CNN run on the two audio channels as a batch
//! of 2; per latent frame each conv costs `c_out · c_in · k` multiply–adds at
//! its own time rate (×5, ×4, ×4, ×4, ×3 after each upsampling block, ×2 after
//! the post-processor). Elementwise work (norms, PReLU, softmax, RoPE) is left
//! out: it is O(T·D) against the matmuls' O(T·D²). The floor counts every latent
//! frame once; the chunked CPU decode (`codec::chunks`) recomputes each chunk's
//! context frames (836 frames per 744-frame window at the default chunk, 12 %
//! more), which shows as a lower share of the floor.

use crate::config::CodecConfig;
use serde::{Deserialize, Serialize};

use super::lm::{Matrix, Weights};

/// Kernel width of the estimator's `ProjectLayer` convs (hard-coded upstream).
pub const PROJECT_KERNEL: usize = 3;

/// Rows of an estimator call: the unconditional and the conditional CFG row.
pub const ESTIMATOR_BATCH: usize = 2;

/// The estimator's weights, split by how often they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatorWeights {
    /// Applied to every latent frame: projections, attention and MLP matrices,
    /// plus every f32 vector (norms, biases, modulation tables).
    pub per_token: Weights,
    /// Applied once per call and row: the two timestep MLPs (`adaln_single*`).
    pub per_call: Weights,
    /// Sum over attention layers of their width (`Σ D`), for the `T²` term.
    pub attention_width: u64,
}

impl EstimatorWeights {
    /// The estimator of `cfg` (spec §4.2 names, §4.4 structure).
    pub fn new(cfg: &CodecConfig) -> Self {
        let (d1, d2, c_in, c_out) = (cfg.inner_dim(), cfg.inner_dim_2(), cfg.in_channels, cfg.out_channels);
        let mut per_token = project_layer(d1, c_in);
        per_token.add(&transformer_block(d1), cfg.num_layers);
        per_token.add(&project_layer(d2, c_in + d1), 1);
        per_token.add(&transformer_block(d2), cfg.num_layers_2);
        per_token.add(&project_layer(c_out, d2), 1);
        // Final (shift, scale) tables of both stages.
        per_token.vector_params += 2 * (d1 + d2) as u64;
        let mut per_call = timestep_mlp(d1);
        per_call.add(&timestep_mlp(d2), 1);
        Self {
            per_token,
            per_call,
            attention_width: (cfg.num_layers * d1 + cfg.num_layers_2 * d2) as u64,
        }
    }

    /// All estimator weights (what one call reads).
    pub fn all(&self) -> Weights {
        let mut all = self.per_token.clone();
        all.add(&self.per_call, 1);
        all
    }

    /// FLOPs of one estimator call on `batch` rows of `tokens` latent frames.
    pub fn call_flops(&self, tokens: usize, batch: usize) -> u64 {
        let (t, b) = (tokens as u64, batch as u64);
        let per_token = 2 * self.per_token.matrix_params() * t * b;
        let per_call = 2 * self.per_call.matrix_params() * b;
        let attention = 4 * t * t * self.attention_width * b;
        per_token + per_call + attention
    }
}

/// `ProjectLayer(c_in → c_out)`: a k=3 conv and a linear, both with biases.
fn project_layer(c_out: usize, c_in: usize) -> Weights {
    Weights {
        matrices: vec![Matrix::new(c_out, c_in * PROJECT_KERNEL), Matrix::new(c_out, c_out)],
        vector_params: 2 * c_out as u64,
    }
}

/// One adaLN-single transformer block of width `d`: q/k/v/o, SwiGLU gate/up/down,
/// two RMSNorm weights and the `[6, d]` modulation table.
fn transformer_block(d: usize) -> Weights {
    let h = CodecConfig::mlp_hidden(d);
    Weights {
        matrices: vec![
            Matrix::new(d, d),
            Matrix::new(d, d),
            Matrix::new(d, d),
            Matrix::new(d, d),
            Matrix::new(h, d),
            Matrix::new(h, d),
            Matrix::new(d, h),
        ],
        vector_params: 8 * d as u64,
    }
}

/// `adaln_single` of width `d`: 512 timestep features → `d` → `d`, then `d → 6d`.
fn timestep_mlp(d: usize) -> Weights {
    Weights {
        matrices: vec![
            Matrix::new(d, CodecConfig::TIMESTEP_FEATURES),
            Matrix::new(d, d),
            Matrix::new(6 * d, d),
        ],
        vector_params: 8 * d as u64,
    }
}

/// One conv of the scalar decoder, for its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conv {
    c_out: u64,
    c_in: u64,
    kernel: u64,
    /// Input time steps per latent frame.
    rate: u64,
}

impl Conv {
    fn macs_per_latent_frame(&self) -> u64 {
        self.c_out * self.c_in * self.kernel * self.rate
    }
}

/// Every conv of the scalar decoder (weight norm folded), in order.
fn scalar_convs(cfg: &CodecConfig) -> Vec<Conv> {
    let ch: Vec<u64> = cfg.scalar_channels().iter().map(|&c| c as u64).collect();
    let conv = |c_out, c_in, kernel: usize, rate| Conv {
        c_out,
        c_in,
        kernel: kernel as u64,
        rate,
    };
    let mut convs = vec![conv(ch[0], cfg.latent_hidden_dim as u64, cfg.delay_kernel_size, 1)];
    let mut rate = 1;
    for (j, (&stride, &kernel)) in cfg.upsample_factors.iter().zip(&cfg.upsample_kernel_sizes).enumerate() {
        // ConvTranspose: every input step scatters c_in · c_out · k products.
        convs.push(conv(ch[j + 1], ch[j], kernel, rate));
        rate *= stride as u64;
        for _ in CodecConfig::RES_DILATIONS {
            convs.push(conv(ch[j + 1], ch[j + 1], cfg.res_kernel_size, rate));
            convs.push(conv(ch[j + 1], ch[j + 1], 1, rate));
        }
    }
    let last = ch[ch.len() - 1];
    if cfg.has_post_processor() {
        rate *= cfg.num_samples as u64;
        convs.push(conv(last, last, cfg.default_kernel_size, rate));
    }
    convs.push(conv(1, last, cfg.default_kernel_size, rate));
    convs
}

/// Multiply–adds of the scalar decoder per latent frame of one audio channel.
pub fn scalar_decoder_macs_per_latent_frame(cfg: &CodecConfig) -> u64 {
    scalar_convs(cfg).iter().map(Conv::macs_per_latent_frame).sum()
}

/// Latent frames per second of audio (`sample_rate / samples_per_latent`, 25).
pub fn latent_frames_per_second(cfg: &CodecConfig) -> f64 {
    f64::from(cfg.sample_rate) / cfg.samples_per_latent() as f64
}

/// FLOPs the scalar decoder spends per second of stereo audio
/// (2 FLOPs per multiply–add, two channels).
pub fn scalar_decoder_flops_per_audio_second(cfg: &CodecConfig) -> f64 {
    2.0 * scalar_decoder_macs_per_latent_frame(cfg) as f64 * latent_frames_per_second(cfg) * 2.0
}

/// FLOPs of one scalar-decoder call on a window of `latent_frames`, both channels.
pub fn scalar_decoder_window_flops(cfg: &CodecConfig, latent_frames: usize) -> u64 {
    2 * scalar_decoder_macs_per_latent_frame(cfg) * latent_frames as u64 * 2
}

/// The scalar decoder's weights after weight-norm folding (what a call reads):
/// conv kernels as matrices, biases and PReLU slopes as vectors.
pub fn scalar_decoder_weights(cfg: &CodecConfig) -> Weights {
    let convs = scalar_convs(cfg);
    let prelu_slopes =
        2 * CodecConfig::RES_DILATIONS.len() * cfg.upsample_factors.len() + usize::from(cfg.has_post_processor());
    Weights {
        matrices: convs
            .iter()
            .map(|c| Matrix::new(c.c_out as usize, (c.c_in * c.kernel) as usize))
            .collect(),
        vector_params: convs.iter().map(|c| c.c_out).sum::<u64>() + prelu_slopes as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;

    #[test]
    fn estimator_parameters_match_spec_section_8() {
        let w = EstimatorWeights::new(&CodecConfig::heartcodec_oss());
        assert_eq!(w.all().params(), 1_486_920_192);
        // adaln_single + adaln_single_2.
        assert_eq!(w.per_call.params(), 17_313_792 + 67_657_728);
        // Stage 1 and stage 2 matrices (679,477,248 each) plus the three ProjectLayers.
        assert_eq!(
            w.per_token.matrix_params(),
            2 * 679_477_248 + 7_077_888 + 33_030_144 + 2_424_832
        );
        assert_eq!(w.attention_width, 24 * 1536 + 6 * 3072);
    }

    #[test]
    fn estimator_step_flops_hand_worked() {
        let w = EstimatorWeights::new(&CodecConfig::heartcodec_oss());
        let per_token = 2 * 1_401_487_360u64 * 744 * 2;
        let per_call = 2 * (84_971_520u64 - 36_864) * 2;
        let attention = 4 * 744 * 744 * 55_296u64 * 2;
        assert_eq!(w.call_flops(744, 2), per_token + per_call + attention);
        assert_eq!(w.call_flops(744, 2), 4_416_032_735_232);
        assert_eq!(w.all().bytes(Precision::Fp32), 4 * 1_486_920_192);
    }

    #[test]
    fn scalar_decoder_cost_hand_worked() {
        let cfg = CodecConfig::heartcodec_oss();
        // Folded weights = stored 83,784,821 minus the 25,857 weight-norm gains (spec §8).
        assert_eq!(scalar_decoder_weights(&cfg).params(), 83_784_821 - 25_857);
        // decoder.0 + 5 up-convs + 25 residual units + post-processor + final conv (see module doc).
        let macs =
            1_310_720 + (4 * 20_971_520 + 15_728_640) + (4 * 209_715_200 + 157_286_400) + 55_050_240 + 448 * 1920;
        assert_eq!(scalar_decoder_macs_per_latent_frame(&cfg), macs);
        assert_eq!(latent_frames_per_second(&cfg), 25.0);
        assert_eq!(scalar_decoder_flops_per_audio_second(&cfg), 115_298_304_000.0);
        assert_eq!(scalar_decoder_window_flops(&cfg, 744), 2 * macs * 744 * 2);
    }
}
