//! The core library's error type. Every variant names the file (and tensor or
//! field) it is about, so a user can act on the message alone.

use std::path::PathBuf;

/// Errors of the `heart` core library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The folder given as an engine folder is missing, not a folder, or has
    /// no manifest.
    #[error(
        "engine folder {} {what}: build one with `heart-build --mula DIR --codec DIR --out {}` \
         (or try `heart-build synth --size tiny --out ckpt` first)",
        path.display(),
        path.display()
    )]
    NoEngineFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A JSON/TOML configuration file is malformed or inconsistent.
    #[error("{}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A checkpoint directory is incomplete or laid out unexpectedly.
    #[error("{}: {message}", path.display())]
    Layout {
        /// The directory or file that is missing or ambiguous.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// A safetensors file is unreadable (truncated, bad header).
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Safetensors {
        /// The shard.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A tensor is missing, unexpected, or has the wrong shape or dtype.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    Tensor {
        /// The checkpoint file (or index) the tensor belongs to.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong, naming expected and found.
        message: String,
    },
    /// A golden-fixture folder (`cases/cases.json` and its tensor files) is
    /// incomplete or inconsistent.
    #[error("{}: {message}", path.display())]
    Fixture {
        /// The fixture file at fault (`cases.json` or a case's safetensors file).
        path: PathBuf,
        /// What is wrong, naming the case and tensor.
        message: String,
    },
    /// The tokenizer could not be loaded or failed to encode.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
}

/// Result alias of the core library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `error` is, or wraps, "no space left on device": binaries walk their
/// error chains with it to tell the user the disk is full in plain words.
pub fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        next = e.source();
    }
    false
}
