//! HeartMuLa on ONNX Runtime: sessions, KV cache, embeddings, sampler and the
//! frame loop.
//!
//! Entry points: [`HeartMula::open`] on an engine folder (the graphs and tables
//! `onnx_export::lm::export_lm` writes), then [`generate`] with a [`Prompt`],
//! [`GenParams`] and a [`CodePicker`] ([`Sampling`] over a [`NoiseSource`]),
//! or [`generate_frames`] through the engine's frame graph (one call per
//! frame, sampling in the graph); [`decode`] picks between them.
//! Lower-level steps ([`HeartMula::prefill`], [`HeartMula::feed_frame`],
//! [`HeartMula::decode_frame`]) are public for conformance and for drivers such
//! as [`generate_speculative`] (lossless speculative decoding with a draft
//! engine, [`HeartMula::open_draft`]).

pub mod decoding;
pub mod device;
pub mod embed;
pub mod frame_graph;
pub mod frame_loop;
pub mod kv_cache;
pub mod model;
pub mod sampler;
pub mod session;
mod spec_sampling;
pub mod spec_stats;
pub mod speculative;
pub mod tapped;

use std::path::PathBuf;

pub use decoding::{Decoded, Decoding, Engines, KeptFrame, decode};
pub use embed::{Embedder, Prompt, Row};
pub use frame_graph::{WholeFrame, generate_frames};
pub use frame_loop::{
    CodePicker, FrameEvent, GenParams, Generation, Sampling, StopReason, ends_generation, generate, try_generate,
};
pub use kv_cache::{CacheDtype, CacheShape, KvCache};
pub use model::{
    BackboneAll, BackboneOut, FrameSampling, GraphKind, HeartMula, LmDims, LmFiles, LmState, ScoredFrames, StackCache,
    TapValues, Taps,
};
pub use sampler::{NoiseSource, RecordedNoise, SamplerParams, SeededNoise};
pub use speculative::{
    FrameOrigin, SpecEvent, SpecGeneration, SpecParams, SpecStats, generate_speculative, try_generate_speculative,
};

/// Errors of the LM runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LmError {
    /// ONNX Runtime failed to load or run a graph.
    #[error("{}: ONNX Runtime: {message}", path.display())]
    Ort {
        /// The graph file.
        path: PathBuf,
        /// ORT's message.
        message: String,
    },
    /// An engine file is missing or does not have the expected contents.
    #[error("{}: {message}", path.display())]
    Engine {
        /// The file or folder.
        path: PathBuf,
        /// What was expected and found.
        message: String,
    },
    /// Data handed to the runtime has the wrong size.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// What the data is.
        what: String,
        /// Expected size.
        expected: String,
        /// Actual size.
        got: String,
    },
    /// A prompt, code or parameter is out of range.
    #[error("invalid input: {0}")]
    Input(String),
    /// The caller's per-frame observer asked the loop to stop (e.g. the
    /// consumer of a streamed song went away); the caller holds the reason.
    #[error("generation was stopped by its caller")]
    Stopped,
    /// The backbone context cannot hold the requested positions.
    #[error(
        "{needed} positions do not fit the cache limit of {max} (prompt plus one frame per 80 ms of max_audio_length_ms)"
    )]
    CacheFull {
        /// Positions needed.
        needed: usize,
        /// The limit.
        max: usize,
    },
}
