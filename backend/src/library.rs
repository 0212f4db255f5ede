//! Finding and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`, so nothing links against ONNX Runtime at
//! build time and one binary serves CPU and GPU builds of the library. The library
//! is looked up, in order: an explicit path (`--ort-lib`), `ORT_DYLIB_PATH`, then
//! `.ort/libonnxruntime.so.1.31.1` in the current directory, next to the
//! executable's ancestors, or in this source tree (where `scripts/setup-ort.sh`
//! puts it). A missing library is an error telling the user what to run, never a
//! panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::session::OrtRuntime;

/// The ONNX Runtime version this build targets (`ort` feature `api-31`).
pub const ORT_VERSION: &str = "1.31.1";

/// File name of the library inside `.ort/`.
pub fn library_file_name() -> String {
    format!("libonnxruntime.so.{ORT_VERSION}")
}

/// Errors while locating or initialising ONNX Runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrtSetupError {
    /// No library was found at any of the searched places.
    #[error(
        "ONNX Runtime {ORT_VERSION} shared library not found (searched: {searched}).\n\
         Run `bash scripts/setup-ort.sh` in the heart source tree, or set ORT_DYLIB_PATH \
         to a libonnxruntime.so of version {ORT_VERSION}"
    )]
    NotFound {
        /// The places that were searched, comma-separated.
        searched: String,
    },
    /// The library exists but could not be loaded or initialised.
    #[error("failed to load ONNX Runtime from {}: {message}", path.display())]
    Load {
        /// The library path.
        path: PathBuf,
        /// ONNX Runtime's or the loader's message.
        message: String,
    },
}

/// Candidate library paths, in search order.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    let name = library_file_name();
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(".ort").join(&name));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            out.push(dir.join(".ort").join(&name));
        }
    }
    let source_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    out.push(source_root.join(".ort").join(&name));
    out
}

static INIT: OnceLock<Result<OrtRuntime, InitFailure>> = OnceLock::new();

#[derive(Clone)]
enum InitFailure {
    NotFound(String),
    Load(PathBuf, String),
}

/// Loads ONNX Runtime once per process and builds the global environment. Later
/// calls return the first result (the library cannot be swapped in-process).
pub fn init(explicit: Option<&Path>) -> Result<OrtRuntime, OrtSetupError> {
    let result = INIT.get_or_init(|| {
        let searched = candidates(explicit);
        let Some(path) = searched.iter().find(|p| p.is_file()).cloned() else {
            let list = searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
            return Err(InitFailure::NotFound(list.join(", ")));
        };
        let builder = ort::init_from(&path).map_err(|e| InitFailure::Load(path.clone(), e.to_string()))?;
        let env = builder
            .with_name("heart")
            .build()
            .map_err(|e| InitFailure::Load(path.clone(), e.to_string()))?;
        Ok(OrtRuntime {
            library: path,
            env,
            plan: Default::default(),
        })
    });
    result.clone().map_err(|f| match f {
        InitFailure::NotFound(searched) => OrtSetupError::NotFound { searched },
        InitFailure::Load(path, message) => OrtSetupError::Load { path, message },
    })
}

/// Ends the process at once with `code`, without running `atexit` handlers or
/// static destructors. For interrupt handlers: `std::process::exit` from the
/// Ctrl-C thread tears down ONNX Runtime's globals while another thread is
/// still inside a session, which crashed `heart-run` (killed by a signal
/// instead of exiting 130) in about one interrupt in five. The caller removes
/// its partial output first; nothing else needs flushing.
pub fn exit_now(code: i32) -> ! {
    unsafe extern "C" {
        fn _exit(status: i32) -> !;
    }
    // SAFETY: `_exit` is async-signal-safe and only ends the process.
    unsafe { _exit(code) }
}
