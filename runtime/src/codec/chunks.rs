//! Chunked scalar decoding: one window's latents decoded in bounded pieces whose
//! kept output equals the whole-window decode (spec §4.7).
//!
//! Why: the decoder's activations grow with the input length. At the released
//! widths one channel of a whole 744-frame window keeps about 1.0 GB in ONNX
//! Runtime's arena (the 64-channel tensors at 48 kHz are 366 MB each: the
//! post-processor's repeated input, its conv output, the last up block's
//! ConvTranspose buffer); chunks of [`DEFAULT_CHUNK_LATENTS`] frames keep about
//! 0.4 GB, whatever the window length (`examples/codec_bench.rs` prints both).
//!
//! Why it is exact: every layer after `decoder.0` is causal. `decoder.0` (kernel
//! `k0`, symmetric zero padding `(k0 − 1)/2`) looks `(k0 − 1)/2` frames ahead, so
//! a chunk's input runs that many frames past the chunk ([`DecoderContext::right`]).
//! To the left, a chunk that does not start the window begins
//! [`DecoderContext::left`] frames early: the layers pad the chunk's start with
//! zeros where the whole-window decode has real history, and
//! [`DecoderContext::of`] follows the first sample that is still exact through
//! the layers (each conv of kernel `k` and dilation `d` moves it right by
//! `d·(k − 1)`; an up block's ConvTranspose (kernel `2s`, stride `s`) reads
//! input frames `⌊n/s⌋ − 1` and `⌊n/s⌋`, so it lands at `(c + 1)·s`; the
//! post-processor's repeat multiplies it by `num_samples`). Kept samples start at
//! or after that point, so they are computed from exactly the same inputs as in
//! the whole-window decode; only float rounding can differ. At the default chunk
//! size the audio is bit-identical to the whole-window decode (released widths,
//! the fixture codec and a narrow codec with the released strides); chunks of 1
//! to 100 frames differ by up to 1.1e-6 of the peak, where MLAS blocks the GEMM
//! sums of a short call differently (`runtime/tests/codec_chunked.rs`).
//!
//! Cost: each chunk but the first recomputes `left + right` frames: at the
//! released config (left 44, right 2) and 256-frame chunks a 744-frame window
//! computes 836 frames, 12 % more decoder work.

use std::num::NonZeroUsize;
use std::ops::Range;

use heart::config::CodecConfig;

/// Latent frames per decoder call when chunking (10.24 s of audio): the window's
/// 744 frames go in three calls of at most 302 input frames.
pub const DEFAULT_CHUNK_LATENTS: NonZeroUsize = NonZeroUsize::new(256).expect("non-zero");

/// Latent frames of input a chunk needs around the frames it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderContext {
    /// Frames before the chunk (history the causal layers read).
    pub left: usize,
    /// Frames after the chunk (`decoder.0`'s look-ahead).
    pub right: usize,
}

impl DecoderContext {
    /// The context of the scalar decoder of `cfg` (module doc for the derivation).
    pub fn of(cfg: &CodecConfig) -> Self {
        let pad0 = (cfg.delay_kernel_size.max(1) - 1) / 2;
        let res_field: usize = CodecConfig::RES_DILATIONS
            .iter()
            .map(|d| d * (cfg.res_kernel_size.max(1) - 1))
            .sum();
        // First exact sample of each stage's output, in that stage's samples.
        let mut first = pad0;
        for &stride in &cfg.upsample_factors {
            first = (first + 1) * stride + res_field;
        }
        let tail = cfg.default_kernel_size.max(1) - 1;
        if cfg.has_post_processor() {
            first = first * cfg.num_samples + tail;
        }
        first += tail;
        Self {
            left: first.div_ceil(cfg.samples_per_latent().max(1)),
            right: pad0,
        }
    }
}

/// One decoder call of a chunked decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Latent frames fed to the decoder.
    pub input: Range<usize>,
    /// Latent frames whose audio is kept (inside `input`).
    pub keep: Range<usize>,
}

impl ChunkSpan {
    /// Range of the decoder's output samples to keep, `samples_per_latent` per frame.
    pub fn kept_samples(&self, samples_per_latent: usize) -> Range<usize> {
        let skip = self.keep.start - self.input.start;
        skip * samples_per_latent..(skip + self.keep.len()) * samples_per_latent
    }
}

/// Splits `frames` latent frames into chunks of `chunk` kept frames, each with
/// the input context `ctx` clipped to the window. The kept ranges tile
/// `0..frames` in order.
pub fn plan_chunks(frames: usize, chunk: NonZeroUsize, ctx: DecoderContext) -> Vec<ChunkSpan> {
    (0..frames)
        .step_by(chunk.get())
        .map(|start| {
            let end = (start + chunk.get()).min(frames);
            ChunkSpan {
                input: start.saturating_sub(ctx.left)..(end + ctx.right).min(frames),
                keep: start..end,
            }
        })
        .collect()
}

/// Latent frames the decoder computes for one window under `spans` (the cost of
/// the chunked decode, against `frames` for the whole window).
pub fn computed_frames(spans: &[ChunkSpan]) -> usize {
    spans.iter().map(|s| s.input.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn released_context_hand_worked() {
        // decoder.0: first exact frame 2. Residual units add 6·(1+3+5+7+9) = 150.
        // ×5: 3·5+150 = 165; ×4: 166·4+150 = 814; ×4: 3410; ×4: 13794; ×3: 41535;
        // post-processor ×2 + 6 = 83076; final conv + 6 = 83082 samples
        // = 43.27 frames of 1920 samples → 44.
        assert_eq!(
            DecoderContext::of(&CodecConfig::heartcodec_oss()),
            DecoderContext { left: 44, right: 2 }
        );
    }

    #[test]
    fn fixture_context_hand_worked() {
        // tiny-a codec: strides 3, 2, num_samples 2 (12 samples per frame).
        // 3·3+150 = 159; 160·2+150 = 470; 470·2+6 = 946; +6 = 952 → ⌈952/12⌉ = 80.
        let mut cfg = CodecConfig::heartcodec_oss();
        cfg.upsample_factors = vec![3, 2];
        cfg.upsample_kernel_sizes = vec![6, 4];
        cfg.sample_rate = 300;
        assert_eq!(DecoderContext::of(&cfg), DecoderContext { left: 80, right: 2 });
    }

    #[test]
    fn released_window_plan() {
        let ctx = DecoderContext::of(&CodecConfig::heartcodec_oss());
        let spans = plan_chunks(744, DEFAULT_CHUNK_LATENTS, ctx);
        let inputs: Vec<_> = spans.iter().map(|s| s.input.clone()).collect();
        assert_eq!(inputs, [0..258, 212..514, 468..744]);
        assert_eq!(computed_frames(&spans), 836);
        assert_eq!(spans[1].kept_samples(1920), 44 * 1920..300 * 1920);
        assert_eq!(spans[2].kept_samples(1920), 44 * 1920..276 * 1920);
    }

    #[test]
    fn kept_ranges_tile_the_window_for_any_chunk() {
        let ctx = DecoderContext { left: 5, right: 2 };
        for frames in [1, 7, 20, 744] {
            for c in [1, 3, 6, 19, 744, 1000] {
                let spans = plan_chunks(frames, chunk(c), ctx);
                let mut next = 0;
                for s in &spans {
                    assert_eq!(s.keep.start, next);
                    assert!(s.keep.len() <= c && !s.keep.is_empty());
                    assert_eq!(s.input.start, s.keep.start.saturating_sub(5));
                    assert_eq!(s.input.end, (s.keep.end + 2).min(frames));
                    next = s.keep.end;
                }
                assert_eq!(next, frames, "frames {frames}, chunk {c}");
            }
        }
    }

    #[test]
    fn one_chunk_covering_the_window_is_the_whole_decode() {
        let spans = plan_chunks(744, chunk(744), DecoderContext { left: 44, right: 2 });
        assert_eq!(
            spans,
            [ChunkSpan {
                input: 0..744,
                keep: 0..744
            }]
        );
        assert!(plan_chunks(0, chunk(4), DecoderContext { left: 1, right: 1 }).is_empty());
    }
}
