//! `heart-eval`: quality evaluation of engine folders, the A/B harness behind
//! `heart-eval ab` (the tapped frame loop it drives lives in
//! [`heart_runtime::lm::tapped`], shared with the builder's calibration).
//!
//! - [`ab`]: teacher-forced, greedy and audio comparison of two engine folders.
//! - [`exact`]: a quantized engine against its simulation (the exactness gate).
//! - [`metrics`]: cosine, sampling KL, top-1, relative error, SNR.
//! - [`thresholds`]: the TOML quality gates.
//! - [`budget`]: which gate belongs to the model under test.
//! - [`report`]: the report, its checks and renderings.
//! - [`plots`]: the report's PNG plots.
//! - [`output`]: the report folder (`report.json`, `report.md`, plots).
//! - [`cli`]: the `heart-eval` command line.

pub mod ab;
pub mod audio_metrics;
pub mod budget;
pub mod cli;
pub mod exact;
pub mod exact_cli;
pub mod metrics;
pub mod output;
pub mod plots;
pub mod report;
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
    Lm(#[from] heart_runtime::lm::LmError),
    /// The codec runtime failed.
    #[error(transparent)]
    Codec(#[from] heart_runtime::codec::CodecError),
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
    /// An engine folder could not be opened.
    #[error(transparent)]
    Engine(Box<heart_runtime::engine::EngineError>),
}

impl From<heart_runtime::engine::EngineError> for EvalError {
    fn from(e: heart_runtime::engine::EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}
