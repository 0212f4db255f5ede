//! Quality evaluation of engines: the A/B harness behind `heart-eval ab`, and
//! the tapped frame loop the builder's calibration run shares.
//!
//! - [`tapped`]: the frame loop with extra graph outputs per step.
//! - [`ab`]: teacher-forced, greedy and audio comparison of two engine folders.
//! - [`exact`]: a quantized engine against its simulation (the exactness gate).
//! - [`metrics`]: cosine, sampling KL, top-1, relative error, SNR.
//! - [`thresholds`]: the TOML quality gates.
//! - [`budget`]: which gate belongs to the model under test.
//! - [`report`]: the report, its checks and renderings.
//! - [`plots`]: the report's PNG plots.
//! - [`cli`]: the `heart-eval` command line.

pub mod ab;
pub mod budget;
pub mod cli;
pub mod exact;
pub mod exact_cli;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod tapped;
pub mod thresholds;

use std::path::PathBuf;

/// Errors of the evaluation harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A manifest, tokenizer, prompt set or config could not be read.
    #[error(transparent)]
    Core(#[from] heart::Error),
    /// The LM runtime failed.
    #[error(transparent)]
    Lm(#[from] crate::lm::LmError),
    /// The codec runtime failed.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The thresholds file is unreadable or lacks the gate.
    #[error(transparent)]
    Thresholds(#[from] thresholds::ThresholdsError),
    /// A report file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A plot of the report could not be drawn.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    /// The engines or options cannot be compared.
    #[error("{0}")]
    Input(String),
}
