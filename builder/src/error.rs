//! heart-build's error type. A variant says which side failed (the request,
//! a file, a dependency crate, TensorRT-RTX); [`BuildError::Context`] adds the
//! build step that was running, so `{:#}` through anyhow reads
//! "step: cause", naming the file or flag and what was expected.

/// Errors of heart-build's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A build the inputs cannot express: a flag, profile, draft, engine
    /// folder to simulate or output folder; the message names it and what
    /// was expected.
    #[error("{0}")]
    Request(String),
    /// A file the build wrote that the manifest cannot list: outside the
    /// engine folder, or of no known engine-file kind.
    #[error("{0}")]
    Unlisted(String),
    /// Reading, writing, renaming, listing or locking a file or folder.
    #[error("{what}")]
    Io {
        /// What was being done, naming the file or folder ("writing PATH").
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint, manifest, prompt or calibration set of the core crate.
    #[error(transparent)]
    Core(#[from] heart::Error),
    /// A build profile that does not parse or validate.
    #[error(transparent)]
    Profile(#[from] heart::profile::ProfileError),
    /// A tensor that cannot be quantized.
    #[error(transparent)]
    Quant(#[from] heart::quant::QuantError),
    /// Graph export.
    #[error(transparent)]
    Export(#[from] onnx_export::ExportError),
    /// ONNX Runtime could not be located or loaded.
    #[error(transparent)]
    OrtSetup(#[from] heart_backend::library::OrtSetupError),
    /// A backend asked for that this machine lacks (boxed: the largest
    /// variant by far).
    #[error(transparent)]
    Backend(Box<heart_backend::BackendError>),
    /// ONNX Runtime refused a graph (the TensorRT provider's engine build).
    #[error(transparent)]
    Ort(#[from] ort::Error),
    /// The calibration run of the LM.
    #[error(transparent)]
    Lm(#[from] heart_runtime::lm::LmError),
    /// JSON that could not be written or read (calibration statistics, checkpoint configs).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// ONNX Runtime's TensorRT provider built an engine folder out of
    /// contract (an EP-context model missing).
    #[error("{0}")]
    TensorRt(String),
    /// The TensorRT-RTX build helper failed or replied out of contract; the
    /// message carries its own words and the tail of the builder's log.
    #[error("{0}")]
    TrtRtx(String),
    /// The Ctrl-C handler could not be installed.
    #[error("installing the Ctrl-C handler")]
    Interrupt(#[from] ctrlc::Error),
    /// `source` failed during the build step `what`.
    #[error("{what}")]
    Context {
        /// The step, naming its file, graph or profile.
        what: String,
        /// The cause.
        source: Box<BuildError>,
    },
}

impl From<heart_backend::BackendError> for BuildError {
    fn from(e: heart_backend::BackendError) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// heart-build's result type.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Names the build step an error happened in ([`BuildError::Context`]).
pub trait Context<T> {
    /// Wraps the error with `what`.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// Wraps the error with the step `what()` names, computed only on error.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<BuildError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| BuildError::Context {
            what: what.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| BuildError::Context {
            what: what().into(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| BuildError::Io {
            what: what.into(),
            source,
        })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| BuildError::Io {
            what: what().into(),
            source,
        })
    }
}
