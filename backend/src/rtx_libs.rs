//! The shared libraries the NvTensorRTRTX plugin needs, loaded by absolute
//! path before ONNX Runtime opens the plugin, so `heart-run` works from a
//! fresh shell without `LD_LIBRARY_PATH`.
//!
//! Why this works: the plugin has no RUNPATH and NEEDS its libraries by
//! soname (`libcudart.so.13`, `libtensorrt_rtx.so.1`,
//! `libtensorrt_onnxparser_rtx.so.1`, `libcuda.so.1`, `libnvidia-ml.so.1`,
//! read with `readelf -d` from the 0.5.0 wheel). The dynamic loader satisfies
//! a NEEDED entry or a `dlopen` of a bare name with an already loaded object
//! whose soname matches, before it searches any path; so loading each
//! bundled library once, by its file path, with `RTLD_GLOBAL` (what the
//! wheel's Python `__init__.py` does at import) makes every later lookup by
//! soname find it. TensorRT-RTX `dlopen`s itself as `libtensorrt_rtx.so.1`
//! (its soname) and `libnvrtc.so.<major>`; the plugin loads
//! `libtensorrt_plugins.so` (soname `libtensorrt_plugins.so`) for plugin
//! layers. A bundled library is found as `<dir>/<soname>` (the link
//! `scripts/setup-trt-rtx-ep.sh` makes) or else as its newest versioned file
//! `<dir>/<soname>.*` (the wheel ships only those), so a folder without the
//! links works too.
//!
//! The driver's libraries come from the system's loader path; NVRTC from it
//! or the CUDA toolkit's usual folders. [`preload`] loads in dependency
//! order, skips libraries whose dependency is missing (they are not what is
//! missing) and reports exactly which required libraries were not found.

use std::path::{Path, PathBuf};

/// Where a library comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Shipped in the plugin's folder (the wheel).
    Bundled,
    /// The NVIDIA driver, on the system's loader path.
    Driver,
    /// The CUDA toolkit: the loader path, then its usual install folders.
    Toolkit,
}

/// One library of the plugin's closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Library {
    /// The soname others ask for.
    pub soname: &'static str,
    /// Where it comes from.
    pub source: Source,
    /// Libraries it NEEDS that are part of this closure (loaded earlier).
    pub needs: &'static [&'static str],
    /// Whether the plugin cannot load without it (else it serves optional
    /// features: plugin layers, runtime-compiled kernels).
    pub required: bool,
}

const CUDART: &str = "libcudart.so.13";
const TENSORRT_RTX: &str = "libtensorrt_rtx.so.1";
const CUDA: &str = "libcuda.so.1";

/// The closure in load order.
pub const LIBRARIES: [Library; 7] = [
    Library {
        soname: CUDART,
        source: Source::Bundled,
        needs: &[],
        required: true,
    },
    Library {
        soname: TENSORRT_RTX,
        source: Source::Bundled,
        needs: &[],
        required: true,
    },
    Library {
        soname: "libtensorrt_onnxparser_rtx.so.1",
        source: Source::Bundled,
        needs: &[TENSORRT_RTX],
        required: true,
    },
    Library {
        soname: CUDA,
        source: Source::Driver,
        needs: &[],
        required: true,
    },
    Library {
        soname: "libnvidia-ml.so.1",
        source: Source::Driver,
        needs: &[],
        required: true,
    },
    Library {
        soname: "libtensorrt_plugins.so",
        source: Source::Bundled,
        needs: &[CUDART, TENSORRT_RTX, CUDA],
        required: false,
    },
    Library {
        soname: "libnvrtc.so.13",
        source: Source::Toolkit,
        needs: &[],
        required: false,
    },
];

/// The CUDA toolkit's library folders tried for [`Source::Toolkit`] after
/// the loader path.
pub const TOOLKIT_DIRS: [&str; 3] = [
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/sbsa-linux/lib",
    "/usr/local/cuda/targets/x86_64-linux/lib",
];

/// What to hand `dlopen` for `lib`, in order: file paths for bundled
/// libraries (the soname link, else the newest versioned file in `dir`),
/// the bare soname (the loader's own search) then toolkit folders otherwise.
pub fn candidates(lib: &Library, dir: &Path) -> Vec<PathBuf> {
    match lib.source {
        Source::Bundled => {
            let link = dir.join(lib.soname);
            if link.exists() {
                return vec![link];
            }
            let prefix = format!("{}.", lib.soname);
            let mut versioned: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let rest = name.strip_prefix(&prefix)?;
                    let version = rest.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u64>>>()?;
                    Some((version, e.path()))
                })
                .collect();
            versioned.sort();
            versioned.pop().map(|(_, p)| p).into_iter().collect()
        }
        Source::Driver => vec![PathBuf::from(lib.soname)],
        Source::Toolkit => std::iter::once(PathBuf::from(lib.soname))
            .chain(TOOLKIT_DIRS.iter().map(|d| Path::new(d).join(lib.soname)))
            .collect(),
    }
}

/// A library that did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Its soname.
    pub soname: &'static str,
    /// Where it should have come from.
    pub source: Source,
    /// Whether the plugin needs it to load.
    pub required: bool,
    /// The loader's message for the last candidate tried.
    pub reason: String,
}

/// What [`preload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preload {
    /// Libraries loaded, with the file or name that loaded.
    pub loaded: Vec<(&'static str, PathBuf)>,
    /// Libraries not found (or not loadable).
    pub missing: Vec<Missing>,
    /// Libraries not tried because one they need is missing.
    pub skipped: Vec<&'static str>,
}

impl Preload {
    /// Why the plugin cannot load, naming exactly the required libraries
    /// that are missing and where each should come from; `None` when none is.
    pub fn refusal(&self, dir: &Path) -> Option<String> {
        let required: Vec<&Missing> = self.missing.iter().filter(|m| m.required).collect();
        if required.is_empty() {
            return None;
        }
        let names = |source: Source| -> Vec<&str> {
            required
                .iter()
                .filter(|m| m.source == source)
                .map(|m| m.soname)
                .collect()
        };
        let mut parts = Vec::new();
        let bundled = names(Source::Bundled);
        if !bundled.is_empty() {
            parts.push(format!(
                "{} (bundled with the plugin; not in {}: rerun `bash scripts/setup-trt-rtx-ep.sh`)",
                bundled.join(", "),
                dir.display()
            ));
        }
        let driver = names(Source::Driver);
        if !driver.is_empty() {
            parts.push(format!(
                "{} (the NVIDIA driver's; not on this system's library path: install the NVIDIA driver)",
                driver.join(", ")
            ));
        }
        Some(format!("missing {}", parts.join("; ")))
    }
}

/// Loads [`LIBRARIES`] for the plugin in `dir` with `RTLD_NOW |
/// RTLD_GLOBAL`, keeping each loaded for the life of the process, and
/// reports what loaded and what is missing.
pub fn preload(dir: &Path) -> Preload {
    use libloading::os::unix::{Library as Lib, RTLD_GLOBAL, RTLD_NOW};
    let mut out = Preload::default();
    for lib in &LIBRARIES {
        let failed = |s: &&str| out.missing.iter().any(|m| m.soname == *s) || out.skipped.contains(s);
        if lib.needs.iter().any(failed) {
            out.skipped.push(lib.soname);
            continue;
        }
        let mut reason = format!("not found in {}", dir.display());
        let mut done = false;
        for candidate in candidates(lib, dir) {
            // SAFETY: NVIDIA's libraries (the plugin's bundle, the driver, the
            // CUDA toolkit); loading runs only their initialisers.
            match unsafe { Lib::open(Some(candidate.as_os_str()), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(handle) => {
                    std::mem::forget(handle);
                    out.loaded.push((lib.soname, candidate));
                    done = true;
                    break;
                }
                Err(e) => reason = crate::driver::loader_message(&e),
            }
        }
        if !done {
            out.missing.push(Missing {
                soname: lib.soname,
                source: lib.source,
                required: lib.required,
                reason,
            });
        }
    }
    out
}
