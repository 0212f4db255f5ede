//! Errors of the codec runtime. Each names the file, tensor or graph involved.

use std::path::PathBuf;

use super::noise::NoiseExhausted;

/// Errors while loading a codec engine or detokenizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// An engine file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The codec config in the engine folder is missing or invalid.
    #[error(transparent)]
    Config(#[from] heart::Error),
    /// A table in `codec_tables.safetensors` is missing or has the wrong shape/dtype.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    Table {
        /// The tables file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Expected vs found.
        message: String,
    },
    /// ONNX Runtime failed to load or run a graph.
    #[error("{}: {message}", path.display())]
    Ort {
        /// The graph file.
        path: PathBuf,
        /// ONNX Runtime's message, prefixed with what was being done.
        message: String,
    },
    /// A graph produced an output of unexpected shape.
    #[error("{}: output `{output}` has shape {got:?}, expected {expected:?}", path.display())]
    OutputShape {
        /// The graph file.
        path: PathBuf,
        /// The output name.
        output: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape produced.
        got: Vec<usize>,
    },
    /// The code matrix handed to `detokenize` is unusable.
    #[error("invalid codes: {0}")]
    Codes(String),
    /// An input buffer has the wrong length for the shape it is declared with.
    #[error("{what}: expected {expected} values, got {got}")]
    InputLength {
        /// Which input.
        what: &'static str,
        /// Expected element count.
        expected: usize,
        /// Actual element count.
        got: usize,
    },
    /// Decoder chunks that do not tile the window they are applied to.
    #[error("decoder chunks {spans} do not tile a window of {frames} latent frames")]
    ChunkPlan {
        /// The spans, debug-formatted.
        spans: String,
        /// Latent frames of the window.
        frames: usize,
    },
    /// Recorded noise ran out.
    #[error(transparent)]
    Noise(#[from] NoiseExhausted),
    /// The caller's per-window observer asked the stream to stop (e.g. a
    /// cancelled request); the caller holds the reason.
    #[error("decoding was stopped by its caller")]
    Stopped,
}

/// Result alias of the codec runtime.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
