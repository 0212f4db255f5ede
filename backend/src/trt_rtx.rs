//! ONNX Runtime's NvTensorRTRTX plugin execution provider (`--backend
//! tensorrt-rtx`): TensorRT-RTX engines built ahead of time by `heart-build
//! --target tensorrt-rtx`, loaded through their EP-context models.
//!
//! The plugin (PyPI `onnxruntime-ep-nv-tensorrt-rtx-cu13` 0.5.0, an "EP ABI"
//! library for ONNX Runtime ≥ 1.24, bundling TensorRT-RTX 1.7.1 and
//! `libcudart.so.13`) is located like ONNX Runtime is: an explicit path
//! (`--trt-rtx-ep`), `HEART_TRT_RTX_EP`, then `.trt-rtx-ep/` in the current
//! directory, above the executable, or in this source tree (filled by
//! `scripts/setup-trt-rtx-ep.sh`). It needs no `gpu` cargo feature: it is
//! loaded at run time like ONNX Runtime itself.
//!
//! Registration ([`register`]) first loads the plugin's library closure by
//! absolute path ([`rtx_libs::preload`]: no `LD_LIBRARY_PATH` needed) and
//! refuses, naming exactly the missing libraries, when a required one is
//! absent; then hands the plugin to `Environment::register_ep_library` and
//! lists the devices it reports. Every failure is a [`PluginStatus`] with its
//! reason, never a panic. Measured on a machine without an NVIDIA driver: the
//! bundled libraries load, the driver's `libcuda.so.1` and
//! `libnvidia-ml.so.1` are named as missing.
//!
//! Engines deserialize only in the identical TensorRT-RTX release (build
//! number included) and for the architecture they were built for; both are
//! checked against the engine folder's manifest before any session opens
//! ([`check_engines`]). TensorRT-RTX specializes engines for the local GPU at
//! load; that runtime cache goes to a per-folder directory outside the engine
//! folder ([`runtime_cache_dir`]), so engine folders may be read-only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use heart::manifest::{MANIFEST_FILE, Manifest, Target};
use heart::precision::Precision;
use sha2::{Digest, Sha256};

use crate::device::{GpuInfo, Probe};
use crate::plan::{Backend, BackendChoice, BackendError, Resolved};
use crate::{driver, rtx_libs};

/// The execution provider's name (EP-context `source`, option prefix).
pub const EP_NAME: &str = "NvTensorRTRTXExecutionProvider";
/// The plugin library's file name.
pub const PLUGIN_FILE: &str = "libonnxruntime_providers_nv_tensorrt_rtx.so";
/// The install folder's name in a source tree (`scripts/setup-trt-rtx-ep.sh`).
pub const LOCAL_DIR: &str = ".trt-rtx-ep";
/// Environment variable naming the plugin library or its folder.
pub const ENV_VAR: &str = "HEART_TRT_RTX_EP";
/// The name the plugin is registered under in ONNX Runtime's environment.
const REGISTRATION: &str = "heart_nv_tensorrt_rtx";
/// The TensorRT-RTX runtime library bundled with the plugin.
pub const TENSORRT_RTX_LIBRARY: &str = "libtensorrt_rtx.so.1";

/// The plugin library found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The plugin library.
    pub path: PathBuf,
    /// `major.minor.patch.build` of the TensorRT-RTX it bundles, read from
    /// the bundled library (works without a GPU); `None` if that failed.
    pub tensorrt_rtx_version: Option<String>,
}

impl Plugin {
    /// The folder holding the plugin and its bundled libraries.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// One device the plugin reports (`Environment::devices()` entries of [`EP_NAME`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtxDevice {
    /// Position among the plugin's devices: what [`Backend::TensorRtRtx`] names.
    pub index: usize,
    /// ONNX Runtime's hardware-device id.
    pub hardware_id: u32,
    /// The device's vendor as ONNX Runtime reports it.
    pub vendor: String,
}

/// What registering the plugin found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// No plugin library at any searched place.
    NotInstalled {
        /// The places searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A bundled library or the plugin did not load, or ONNX Runtime refused it.
    LoadFailed {
        /// The plugin.
        plugin: Plugin,
        /// The loader's or ONNX Runtime's message, one line.
        message: String,
    },
    /// The plugin registered but reports no device.
    NoDevice {
        /// The plugin.
        plugin: Plugin,
    },
    /// Registered, with its devices.
    Ready {
        /// The plugin.
        plugin: Plugin,
        /// Its devices, in ONNX Runtime's order.
        devices: Vec<RtxDevice>,
    },
}

impl PluginStatus {
    /// The plugin, when one was found.
    pub fn plugin(&self) -> Option<&Plugin> {
        match self {
            Self::NotInstalled { .. } => None,
            Self::LoadFailed { plugin, .. } | Self::NoDevice { plugin } | Self::Ready { plugin, .. } => Some(plugin),
        }
    }

    /// Why the plugin cannot run sessions (empty when [`PluginStatus::Ready`]), one line.
    pub fn reason(&self) -> String {
        match self {
            Self::NotInstalled { searched } => format!(
                "ONNX Runtime's NvTensorRTRTX plugin is not installed (searched: {}); run `bash \
                 scripts/setup-trt-rtx-ep.sh`, or pass --trt-rtx-ep / set {ENV_VAR} to {PLUGIN_FILE}",
                join(searched)
            ),
            Self::LoadFailed { plugin, message } => format!(
                "the NvTensorRTRTX plugin {} did not load: {message}",
                plugin.path.display()
            ),
            Self::NoDevice { plugin } => format!(
                "the NvTensorRTRTX plugin {} loaded but reports no supported NVIDIA GPU",
                plugin.path.display()
            ),
            Self::Ready { .. } => String::new(),
        }
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plugin library paths to try, in order: `explicit` alone when given (a
/// file, or a folder holding [`PLUGIN_FILE`]), else `$HEART_TRT_RTX_EP`,
/// `.trt-rtx-ep/` in the current directory, in the executable's ancestors,
/// then in this source tree.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let file = |p: PathBuf| if p.is_dir() { p.join(PLUGIN_FILE) } else { p };
    if let Some(p) = explicit {
        return vec![file(p.to_path_buf())];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os(ENV_VAR) {
        out.push(file(PathBuf::from(p)));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(LOCAL_DIR).join(PLUGIN_FILE));
    }
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).map(|d| d.join(LOCAL_DIR).join(PLUGIN_FILE)));
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(LOCAL_DIR)
            .join(PLUGIN_FILE),
    );
    out
}

/// The first plugin among [`candidates`], with the TensorRT-RTX version it
/// bundles; or the searched places.
pub fn locate(explicit: Option<&Path>) -> Result<Plugin, Vec<PathBuf>> {
    let searched = candidates(explicit);
    let Some(path) = searched.iter().find(|p| p.is_file()) else {
        return Err(searched);
    };
    let tensorrt_rtx_version = path
        .parent()
        .and_then(|dir| driver::tensorrt_version(&dir.join(TENSORRT_RTX_LIBRARY)));
    Ok(Plugin {
        path: path.clone(),
        tensorrt_rtx_version,
    })
}

static REGISTERED: OnceLock<PluginStatus> = OnceLock::new();

/// Registers the plugin (located from `explicit`) with `env` once per
/// process and reports what came of it; later calls return the first result
/// (a plugin cannot be swapped in-process).
pub fn register(env: &ort::environment::Environment, explicit: Option<&Path>) -> PluginStatus {
    REGISTERED
        .get_or_init(|| {
            let plugin = match locate(explicit) {
                Ok(p) => p,
                Err(searched) => return PluginStatus::NotInstalled { searched },
            };
            if let Some(message) = rtx_libs::preload(plugin.dir()).refusal(plugin.dir()) {
                return PluginStatus::LoadFailed { plugin, message };
            }
            if let Err(e) = env.register_ep_library(REGISTRATION, &plugin.path) {
                return PluginStatus::LoadFailed {
                    plugin,
                    message: one_line(&e.to_string()),
                };
            }
            let devices = plugin_devices(env);
            if devices.is_empty() {
                PluginStatus::NoDevice { plugin }
            } else {
                PluginStatus::Ready { plugin, devices }
            }
        })
        .clone()
}

/// The status of an earlier [`register`] call in this process, if any.
pub fn registered() -> Option<&'static PluginStatus> {
    REGISTERED.get()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The plugin's devices in `env`, in ONNX Runtime's order.
pub fn plugin_devices(env: &ort::environment::Environment) -> Vec<RtxDevice> {
    env.devices()
        .filter(|d| d.ep().is_ok_and(|ep| ep == EP_NAME))
        .enumerate()
        .map(|(index, d)| {
            let hw = d.hardware_device();
            RtxDevice {
                index,
                hardware_id: hw.id(),
                vendor: hw.vendor().unwrap_or("?").to_string(),
            }
        })
        .collect()
}

/// Whether TensorRT-RTX runs on compute capability `cc`: 8.6, 8.9 and every
/// capability from 12.0 on (the rule of the plugin's
/// `IsComputeCapabilitySupported`).
pub fn supports_compute_capability(cc: (i32, i32)) -> bool {
    let v = cc.0 * 10 + cc.1;
    v >= 120 || v == 86 || v == 89
}

/// Why `precision` cannot run on compute capability `cc` with TensorRT-RTX
/// (`None` when it can): FP8 needs 8.9 (Ada) or newer, FP4 12.0 (Blackwell)
/// or newer; the `MatMulNBits` integer forms are ONNX Runtime CPU forms.
pub fn precision_gap(precision: Precision, cc: (i32, i32)) -> Option<String> {
    let v = cc.0 * 10 + cc.1;
    let need = match precision {
        Precision::Fp32 | Precision::Fp16 => return None,
        Precision::Fp8 => 89,
        Precision::Fp4 => 120,
        Precision::Int8 | Precision::Int4 => {
            return Some(format!(
                "{} engines are ONNX Runtime CPU forms (MatMulNBits); TensorRT-RTX builds fp32, fp16, fp8 and fp4",
                precision.as_str()
            ));
        }
    };
    (v < need).then(|| {
        format!(
            "{} needs compute capability {}.{} or newer, this GPU has {}.{}",
            precision.as_str(),
            need / 10,
            need % 10,
            cc.0,
            cc.1
        )
    })
}

/// Refuses a TensorRT-RTX engine folder that cannot run here: built by
/// another TensorRT-RTX release than the plugin's (build number included),
/// or for another architecture than the GPU's, or at a precision the GPU
/// lacks. Both sides are named. Other targets have no TensorRT-RTX engines
/// and are refused too.
pub fn check_engines(
    manifest: &Manifest,
    dir: &Path,
    plugin: &Plugin,
    gpu: Option<&GpuInfo>,
) -> Result<(), BackendError> {
    let Target::TensorRtRtx {
        tensorrt_rtx_version,
        gpu_arch,
        compute_capability,
        ..
    } = &manifest.target
    else {
        return Err(BackendError::NoRtxEngines { dir: dir.to_path_buf() });
    };
    let here = plugin.tensorrt_rtx_version.as_deref().unwrap_or("unknown");
    if here != tensorrt_rtx_version {
        return Err(BackendError::OtherTensorRtRtx {
            dir: dir.to_path_buf(),
            built: tensorrt_rtx_version.clone(),
            here: here.to_string(),
            plugin: plugin.path.clone(),
        });
    }
    let Some(gpu) = gpu else {
        return Ok(());
    };
    let cc = gpu.compute_capability_string();
    if &cc != compute_capability {
        return Err(BackendError::OtherArch {
            dir: dir.to_path_buf(),
            built_arch: gpu_arch.clone(),
            built_cc: compute_capability.clone(),
            name: gpu.name.clone(),
            cc,
        });
    }
    for precision in [Some(manifest.precision), manifest.codec_precision]
        .into_iter()
        .flatten()
    {
        if let Some(gap) = precision_gap(precision, gpu.compute_capability) {
            return Err(BackendError::Precision {
                dir: dir.to_path_buf(),
                gap,
            });
        }
    }
    Ok(())
}

/// The runtime-cache folder of the engine folder `dir`: `heart/trt-rtx/<first
/// 16 hex digits of the SHA-256 of its manifest>` under `$XDG_CACHE_HOME`
/// (else `$HOME/.cache`, else the system temporary folder). Outside the
/// engine folder, so read-only folders work; keyed by the manifest, which
/// names every engine file's hash, so a rebuilt folder gets a fresh cache.
pub fn runtime_cache_dir(dir: &Path) -> Result<PathBuf, BackendError> {
    let manifest = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest).map_err(|e| BackendError::Io {
        path: manifest.clone(),
        message: e.to_string(),
    })?;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    Ok(cache_dir_in(&base, &bytes))
}

/// [`runtime_cache_dir`] under `base` for a manifest of `manifest_bytes`.
pub fn cache_dir_in(base: &Path, manifest_bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(manifest_bytes);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    base.join("heart").join("trt-rtx").join(hex)
}

/// Resolves `--backend tensorrt-rtx`, or `auto` for a TensorRT-RTX engine
/// folder, given the plugin's status and the driver probe (pure: tests
/// supply both). `auto` falls back to the CPU with a one-line notice when the
/// plugin cannot run; `tensorrt-rtx` refuses with the reason.
pub fn resolve(
    choice: BackendChoice,
    manifest: &Manifest,
    dir: &Path,
    status: &PluginStatus,
    gpu: &Probe,
    cache_dir: PathBuf,
) -> Result<Resolved, BackendError> {
    let refuse = |reason: String| -> Result<Resolved, BackendError> {
        if choice == BackendChoice::Auto {
            Ok(Resolved {
                backend: Backend::Cpu,
                gpu: None,
                notice: Some(format!("running on the CPU: {reason}")),
            })
        } else {
            Err(BackendError::RtxUnavailable { reason })
        }
    };
    let PluginStatus::Ready { plugin, devices } = status else {
        let mut reason = status.reason();
        // The driver's own reason, unless the plugin's message already names it.
        if let Probe::NoDriver(_) | Probe::DriverTooOld { .. } | Probe::MissingSymbol(_) = gpu
            && !reason.contains(crate::driver::DRIVER_LIBRARY)
        {
            reason = format!("{reason}; {}", gpu.reason());
        }
        return refuse(reason);
    };
    let found = match gpu {
        Probe::Found(g) => Some(g),
        _ => None,
    };
    if let Some(g) = found
        && !supports_compute_capability(g.compute_capability)
    {
        return refuse(format!(
            "TensorRT-RTX does not run on {} (compute capability {}; it needs 8.6, 8.9 or 12.0 and newer)",
            g.name,
            g.compute_capability_string()
        ));
    }
    check_engines(manifest, dir, plugin, found)?;
    Ok(Resolved {
        backend: Backend::TensorRtRtx {
            device: devices[0].index,
            cache_dir,
        },
        gpu: found.cloned(),
        notice: None,
    })
}

/// Session options of the plugin (keys prefixed with [`EP_NAME`], as
/// `SessionBuilder::with_devices` expects): the runtime cache folder,
/// CUDA-graph capture when the caller binds fixed-address buffers, and the
/// caller's `CUstream` when it issues its own copies around the runs.
pub fn session_options(cache_dir: &Path, cuda_graph: bool, stream: Option<usize>) -> Vec<(String, String)> {
    let mut out = vec![
        (
            format!("{EP_NAME}.nv_runtime_cache_path"),
            cache_dir.display().to_string(),
        ),
        (
            format!("{EP_NAME}.enable_cuda_graph"),
            if cuda_graph { "1" } else { "0" }.to_string(),
        ),
    ];
    if let Some(stream) = stream {
        out.push((format!("{EP_NAME}.has_user_compute_stream"), "1".into()));
        out.push((format!("{EP_NAME}.user_compute_stream"), stream.to_string()));
    }
    out
}

/// The EP-context model of every graph of a TensorRT-RTX folder `dir`:
/// absolute graph path → absolute context-model path, from the manifest's
/// engine list (`trt/<graph>_ctx.onnx` as `heart-build --target
/// tensorrt-rtx` writes them). Empty for other targets.
pub fn context_models(manifest: &Manifest, dir: &Path) -> std::collections::BTreeMap<PathBuf, PathBuf> {
    match &manifest.target {
        Target::TensorRtRtx { engines, .. } => engines
            .iter()
            .map(|e| (dir.join(&e.graph), dir.join(&e.context_model)))
            .collect(),
        _ => Default::default(),
    }
}
