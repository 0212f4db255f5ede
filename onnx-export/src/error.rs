//! Errors of graph export. Every variant names the file, graph or tensor it is
//! about and what was expected.

use std::path::PathBuf;

/// Errors while building or writing an ONNX graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Writing a graph or its external data file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading a checkpoint tensor failed (missing, bad dtype, out of range).
    #[error(transparent)]
    Checkpoint(#[from] heart::Error),
    /// A checkpoint tensor or an initializer has an unexpected shape or size.
    #[error("tensor `{tensor}`: expected {expected}, got {got}")]
    Shape {
        /// The tensor or initializer name.
        tensor: String,
        /// What the graph needs.
        expected: String,
        /// What was found.
        got: String,
    },
    /// The requested export (precision, dtype, layout) is not implemented.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked for and why it cannot be done.
        what: String,
    },
}

/// Result alias of the export crate.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;
