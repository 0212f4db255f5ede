//! HeartCodec detokenization: codes `[8, T]` → stereo waveform (spec §4).
//!
//! Pipeline per window of 372 codes ([`geometry`]): RVQ lookup + conditioning in
//! Rust ([`tables`]), Euler flow matching with CFG on the `flow_estimator.onnx`
//! graph ([`flow`]), scalar decoding of the 744 latent frames on
//! `scalar_decoder.onnx`, then cross-fade assembly ([`assemble`]). Window `w > 0`
//! takes its last-104-frame context from window `w − 1`'s final latents, so
//! windows run in order.
//!
//! Memory: the weights (5.95 GB of estimator and 0.34 GB of decoder at the
//! released shapes, fp32) plus two working sets that do not grow with the song.
//! Measured at the released shapes (`examples/codec_bench.rs`, RSS 6.1 GB after
//! loading): the estimator's (batch 2 × 744 frames) about 0.4 GB; the scalar
//! decoder's about 0.4 GB, because on the CPU each channel is decoded on its
//! own and in chunks of [`chunks::DEFAULT_CHUNK_LATENTS`] frames with the
//! context that makes the audio equal to the whole-window decode ([`chunks`];
//! a whole window takes about 1.0 GB). Peak 7.3 GB, down from 8.9 GB with
//! whole-window decoding and ONNX Runtime's memory pattern on
//! ([`sessions`]). GPU backends decode the whole window (the TensorRT profile
//! is built for it); [`Codec::set_decode_chunk`] changes either choice.
//!
//! Engine folder contents used here: [`CODEC_CONFIG_FILE`], [`TABLES_FILE`],
//! [`heart::engine::FLOW_ESTIMATOR_GRAPH`], [`heart::engine::SCALAR_DECODER_GRAPH`] (+ their external data).

pub mod assemble;
pub mod chunks;
pub mod error;
pub mod flow;
pub mod geometry;
pub mod noise;
pub mod sessions;
pub mod stream;
pub mod tables;

use std::num::NonZeroUsize;
use std::path::Path;

use heart::config::CodecConfig;
use ndarray::ArrayView2;

pub use assemble::{Assembler, Audio};
pub use chunks::{ChunkSpan, DecoderContext};
pub use error::{CodecError, Result};
pub use flow::{FlowParams, VelocityField, WindowInputs, solve_window};
pub use geometry::{TailPolicy, WindowPlan};
pub use noise::{NoiseSource, RecordedNoise, SeededNoise};
pub use sessions::{FlowEstimator, ScalarDecoder};
pub use stream::{AudioChunk, WindowStream};
pub use tables::{CodecTables, Conditioning, TABLES_FILE};

use heart::geometry::WINDOW_LATENTS;

/// The HeartCodec `config.json`, copied into the engine folder under this name.
pub const CODEC_CONFIG_FILE: &str = heart::engine::CODEC_CONFIG;

/// Settings of one `detokenize` call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DetokenizeParams {
    /// Euler steps and CFG scale (defaults 10 / 1.25).
    pub flow: FlowParams,
    /// What to do at code lengths that hit upstream's padding quirk.
    pub tail: TailPolicy,
}

/// Everything computed for one window, handed to a [`Codec::detokenize_observed`] observer.
#[derive(Debug)]
pub struct WindowTrace<'a> {
    /// Window index.
    pub index: usize,
    /// The window's codes `[num_quantizers, 372]` after looping pad.
    pub codes: ArrayView2<'a, i64>,
    /// RVQ output, conditioning and `mu`.
    pub conditioning: &'a Conditioning,
    /// Final latents `[744, latent]`.
    pub latents: &'a [f32],
    /// Decoded audio, planar `[2, 744 · samples_per_latent]`.
    pub audio: &'a [f32],
}

/// A loaded codec engine.
pub struct Codec {
    cfg: CodecConfig,
    tables: CodecTables,
    estimator: FlowEstimator,
    decoder: ScalarDecoder,
    decode_chunk: Option<NonZeroUsize>,
}

impl Codec {
    /// Opens the codec files of engine folder `dir` (config from [`CODEC_CONFIG_FILE`]).
    pub fn open(rt: &heart_backend::OrtRuntime, dir: &Path) -> Result<Self> {
        let cfg = CodecConfig::from_file(&dir.join(CODEC_CONFIG_FILE))?;
        Self::open_with_config(rt, dir, cfg)
    }

    /// Opens the codec files of `dir` with an already-read config.
    pub fn open_with_config(rt: &heart_backend::OrtRuntime, dir: &Path, cfg: CodecConfig) -> Result<Self> {
        let tables = CodecTables::load(&dir.join(TABLES_FILE), cfg.num_quantizers)?;
        if tables.dim() != cfg.dim {
            return Err(CodecError::Table {
                path: dir.join(TABLES_FILE),
                name: tables::COND_BIAS.into(),
                message: format!(
                    "conditioning width {} does not match the config's dim {}",
                    tables.dim(),
                    cfg.dim
                ),
            });
        }
        let estimator = FlowEstimator::open(rt, dir, cfg.in_channels, cfg.out_channels)?;
        let decoder = ScalarDecoder::open(rt, dir, cfg.latent_hidden_dim, cfg.samples_per_latent())?;
        let on_cpu = rt.on_cpu();
        Ok(Self {
            cfg,
            tables,
            estimator,
            decoder,
            decode_chunk: on_cpu.then_some(chunks::DEFAULT_CHUNK_LATENTS),
        })
    }

    /// Decodes windows in chunks of `chunk` latent frames (`None`: the whole
    /// window in one call). The audio is the same either way; chunks bound the
    /// decoder's working set ([`chunks`]).
    pub fn set_decode_chunk(&mut self, chunk: Option<NonZeroUsize>) {
        self.decode_chunk = chunk;
    }

    /// Latent frames per decoder call (`None`: whole windows).
    pub fn decode_chunk(&self) -> Option<NonZeroUsize> {
        self.decode_chunk
    }

    /// The codec config.
    pub fn config(&self) -> &CodecConfig {
        &self.cfg
    }

    /// The RVQ / conditioning tables.
    pub fn tables(&self) -> &CodecTables {
        &self.tables
    }

    /// The estimator session (for direct calls, e.g. conformance and benchmarks).
    pub fn estimator(&mut self) -> &mut FlowEstimator {
        &mut self.estimator
    }

    /// The scalar decoder session.
    pub fn decoder(&mut self) -> &mut ScalarDecoder {
        &mut self.decoder
    }

    /// Codes `[num_quantizers, T]` → stereo audio of `int(T / 12.5 · sample_rate)`
    /// samples per channel (fewer under [`TailPolicy::UpstreamQuirk`]).
    pub fn detokenize(
        &mut self,
        codes: ArrayView2<'_, i64>,
        params: DetokenizeParams,
        noise: &mut impl NoiseSource,
    ) -> Result<Audio> {
        self.detokenize_observed(codes, params, noise, &mut |_| {})
    }

    /// [`Codec::detokenize`], reporting every window to `observer`.
    pub fn detokenize_observed(
        &mut self,
        codes: ArrayView2<'_, i64>,
        params: DetokenizeParams,
        noise: &mut impl NoiseSource,
        observer: &mut dyn FnMut(&WindowTrace<'_>),
    ) -> Result<Audio> {
        let (_, audio) = WindowStream::new(&self.cfg, params).finish(self, codes, noise, &mut |trace| {
            observer(trace);
            Ok(())
        })?;
        Ok(audio)
    }

    /// Decodes one window's latents `[T, 2·latent_hidden_dim]` to planar stereo
    /// `[2, T · samples_per_latent]`: latent dims `0..128` are channel 0, `128..256`
    /// channel 1. The channels run one after the other (batch 1 each, the same
    /// numbers as one batch of 2, half the working set), each in chunks of
    /// [`Codec::decode_chunk`] frames when set.
    pub fn decode_latents(&mut self, latents: &[f32]) -> Result<Vec<f32>> {
        let half = self.cfg.latent_hidden_dim;
        let width = 2 * half;
        if latents.is_empty() || !latents.len().is_multiple_of(width) {
            return Err(CodecError::InputLength {
                what: "window latents",
                expected: WINDOW_LATENTS * width,
                got: latents.len(),
            });
        }
        let frames = latents.len() / width;
        let mut planar = vec![0f32; latents.len()];
        for (t, row) in latents.chunks_exact(width).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                planar[k * frames + t] = v;
            }
        }
        let spans = match self.decode_chunk {
            Some(chunk) => chunks::plan_chunks(frames, chunk, DecoderContext::of(&self.cfg)),
            None => vec![ChunkSpan {
                input: 0..frames,
                keep: 0..frames,
            }],
        };
        let mut audio = Vec::with_capacity(2 * frames * self.cfg.samples_per_latent());
        for channel in planar.chunks_exact(half * frames) {
            audio.extend(self.decoder.decode_chunked(channel, frames, &spans)?);
        }
        Ok(audio)
    }
}
