//! Where sessions run (the execution plan): the CPU, or an NVIDIA GPU through ONNX Runtime's CUDA or
//! TensorRT execution provider (cargo feature `gpu`; see `docs/gpu.md`).
//!
//! - `--backend auto` (heart-run's default) uses the GPU only when this build
//!   has the `gpu` feature **and** the CUDA driver loads and reports a device;
//!   otherwise it runs on the CPU and says why in one line. `cuda` and
//!   `tensorrt` without a GPU are errors, never panics: cudarc panics when
//!   `libcuda` is missing, so the probe checks for the library before any
//!   driver call.
//! - On a GPU, `auto` picks TensorRT for folders built with `heart-build
//!   --target tensorrt` and the CUDA provider for portable (`onnx`) folders.
//!   TensorRT folders load the EP-context models under `trt/` (no engine
//!   rebuild) and are refused on a GPU of another name or compute capability.
//!   `--backend tensorrt` on a portable folder builds engines on first use
//!   and caches them in `<engines>/trt/` (minutes for the 3B backbone).
//! - The library default ([`ExecutionPlan::default`]) is the CPU with no
//!   probing and no notice, so tests and other callers behave as before.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use heart::config::{CodecConfig, MulaConfig};
use heart::engine::{self, TENSORRT_DIR};
use heart::manifest::Target;
use heart::precision::Precision;

use crate::device::{GpuInfo, Probe};
use crate::profiles::{self, GraphProfile, ProfileLimits};
use crate::user_cache;

/// What the user asked for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// The GPU when this build and machine have one, else the CPU.
    Auto,
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA provider.
    Cuda,
    /// ONNX Runtime's TensorRT provider (CUDA for the nodes TensorRT leaves).
    Tensorrt,
    /// ONNX Runtime's NvTensorRTRTX plugin provider with the TensorRT-RTX
    /// engines of `heart-build --target tensorrt-rtx` (no `gpu` feature needed).
    TensorrtRtx,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
            Self::TensorrtRtx => "tensorrt-rtx",
        })
    }
}

/// The provider sessions are created with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on one device.
    Cuda {
        /// CUDA device ordinal.
        device: i32,
    },
    /// The TensorRT provider on one device, engines cached in `cache_dir`.
    TensorRt {
        /// CUDA device ordinal.
        device: i32,
        /// `<engine folder>/trt`.
        cache_dir: PathBuf,
    },
    /// The NvTensorRTRTX plugin on one of its devices.
    TensorRtRtx {
        /// Position among the plugin's devices ([`crate::trt_rtx::RtxDevice::index`]).
        device: usize,
        /// TensorRT-RTX's runtime cache, outside the engine folder
        /// ([`crate::trt_rtx::runtime_cache_dir`]).
        cache_dir: PathBuf,
    },
}

/// Looks for CUDA device `ordinal`. Never panics; without the `gpu` feature
/// it touches no library.
pub fn probe(ordinal: i32) -> Probe {
    #[cfg(feature = "gpu")]
    {
        crate::driver::probe(ordinal)
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = ordinal;
        Probe::NoGpuSupport
    }
}

/// Errors choosing or using a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A GPU backend was asked for where there is none.
    #[error("--{flag} {choice} needs a build with `--features gpu` and an NVIDIA driver; {reason}")]
    Unavailable {
        /// The flag (`backend` or `target`).
        flag: &'static str,
        /// What was asked for.
        choice: String,
        /// [`Probe::reason`].
        reason: String,
    },
    /// The engine folder holds TensorRT engines of another GPU model.
    #[error(
        "engine folder {} was built for {built_name} (compute capability {built_cc}) but GPU {ordinal} here is \
         {name} (compute capability {cc}); TensorRT engines run only on the GPU model they were built for. \
         Rebuild them on this machine with `heart-build --target tensorrt`, or run the portable graphs with \
         `--backend cuda` or `--backend cpu`",
        dir.display()
    )]
    OtherGpu {
        /// The engine folder.
        dir: PathBuf,
        /// GPU name in the manifest.
        built_name: String,
        /// Compute capability in the manifest.
        built_cc: String,
        /// The device here.
        ordinal: i32,
        /// Its name.
        name: String,
        /// Its compute capability.
        cc: String,
    },
    /// The engine folder's TensorRT engines were built with another TensorRT
    /// (versions compared with their build numbers).
    #[error(
        "engine folder {} was built with TensorRT {built}{} but this machine has TensorRT {here}; serialized \
         engines load only in the identical TensorRT build. Rebuild them here with `heart-build --target tensorrt`",
        dir.display(),
        if built.split('.').count() < 4 { " (recorded without its build number)" } else { "" }
    )]
    OtherTensorRt {
        /// The engine folder.
        dir: PathBuf,
        /// Version in the manifest.
        built: String,
        /// Version found here.
        here: String,
    },
    /// `--backend tensorrt-rtx` where the plugin cannot run.
    #[error("--backend tensorrt-rtx cannot run here: {reason}")]
    RtxUnavailable {
        /// [`crate::trt_rtx::PluginStatus::reason`] (and the driver's, when it is the cause).
        reason: String,
    },
    /// `--backend tensorrt-rtx` on a folder without TensorRT-RTX engines.
    #[error(
        "engine folder {} has no TensorRT-RTX engines; build them with `heart-build --target tensorrt-rtx \
         --gpu-arch <this GPU>` (any machine, no GPU needed), or run it with --backend cpu",
        dir.display()
    )]
    NoRtxEngines {
        /// The engine folder.
        dir: PathBuf,
    },
    /// The folder's engines were built by another TensorRT-RTX release than the plugin's.
    #[error(
        "engine folder {} was built with TensorRT-RTX {built} but the NvTensorRTRTX plugin here ({}) bundles \
         TensorRT-RTX {here}; engines load only in the identical release. Rebuild them with `heart-build \
         --target tensorrt-rtx` using TensorRT-RTX {here}, or install the plugin release that bundles {built}",
        dir.display(),
        plugin.display()
    )]
    OtherTensorRtRtx {
        /// The engine folder.
        dir: PathBuf,
        /// Version in the manifest.
        built: String,
        /// Version the plugin bundles.
        here: String,
        /// The plugin library.
        plugin: PathBuf,
    },
    /// The folder's engines were built for another GPU architecture.
    #[error(
        "engine folder {} was built for {built_arch} (compute capability {built_cc}) but this GPU is {name} \
         (compute capability {cc}); rebuild it with `heart-build --target tensorrt-rtx --gpu-arch sm{}`",
        dir.display(),
        cc.replace('.', "")
    )]
    OtherArch {
        /// The engine folder.
        dir: PathBuf,
        /// `--gpu-arch` of the build, e.g. `sm121`.
        built_arch: String,
        /// Its compute capability.
        built_cc: String,
        /// The GPU here.
        name: String,
        /// Its compute capability.
        cc: String,
    },
    /// The folder's precision needs more than this GPU has.
    #[error("engine folder {} cannot run on this GPU: {gap}", dir.display())]
    Precision {
        /// The engine folder.
        dir: PathBuf,
        /// [`crate::trt_rtx::precision_gap`].
        gap: String,
    },
    /// A file of the engine folder could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
}

/// The outcome of resolving a [`BackendChoice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The provider to use.
    pub backend: Backend,
    /// The GPU, when one was found.
    pub gpu: Option<GpuInfo>,
    /// A one-line notice for the user (e.g. why `auto` chose the CPU).
    pub notice: Option<String>,
}

impl Backend {
    /// Resolves `auto` on this machine for an engine folder of `target` at `engine_dir`.
    pub fn auto(target: &Target, engine_dir: &Path) -> Result<Resolved, BackendError> {
        resolve(BackendChoice::Auto, target, engine_dir, probe(0))
    }

    /// Resolves `choice` on this machine (probes the GPU unless `cpu` was asked for).
    pub fn resolve(choice: BackendChoice, target: &Target, engine_dir: &Path) -> Result<Resolved, BackendError> {
        let found = match choice {
            BackendChoice::Cpu => Probe::NoGpuSupport,
            _ => probe(0),
        };
        resolve(choice, target, engine_dir, found)
    }

    /// The CUDA device, for GPU backends.
    pub fn device(&self) -> Option<i32> {
        match self {
            Self::Cpu => None,
            Self::Cuda { device } | Self::TensorRt { device, .. } => Some(*device),
            Self::TensorRtRtx { device, .. } => i32::try_from(*device).ok(),
        }
    }
}

/// Resolves `choice` given what probing found (pure; the probing is separate so
/// tests can supply any GPU).
pub fn resolve(
    choice: BackendChoice,
    target: &Target,
    engine_dir: &Path,
    found: Probe,
) -> Result<Resolved, BackendError> {
    if choice == BackendChoice::TensorrtRtx {
        return Err(BackendError::RtxUnavailable {
            reason: "the NvTensorRTRTX plugin is registered with ONNX Runtime's environment: resolve it \
                     through OrtRuntime::for_engine"
                .into(),
        });
    }
    let gpu = match (choice, found) {
        (BackendChoice::Cpu, found) => {
            return Ok(Resolved {
                backend: Backend::Cpu,
                gpu: match found {
                    Probe::Found(g) => Some(g),
                    _ => None,
                },
                notice: None,
            });
        }
        (_, Probe::Found(g)) => g,
        (BackendChoice::Auto, other) => {
            return Ok(Resolved {
                backend: Backend::Cpu,
                gpu: None,
                notice: Some(format!("running on the CPU: {}", other.reason())),
            });
        }
        (choice, other) => {
            return Err(BackendError::Unavailable {
                flag: "backend",
                choice: choice.to_string(),
                reason: other.reason(),
            });
        }
    };
    // A tensorrt folder carries its engines in `trt/`; engines built at run
    // time for a portable folder go to the user's cache, not into the folder.
    let cache_dir = match target {
        Target::TensorRt { .. } => engine_dir.join(TENSORRT_DIR),
        Target::Onnx | Target::TensorRtRtx { .. } => user_cache::tensorrt_cache_dir(engine_dir),
    };
    let tensorrt = Backend::TensorRt {
        device: gpu.ordinal,
        cache_dir: cache_dir.clone(),
    };
    let (backend, notice) = match (choice, target) {
        (BackendChoice::Cuda, _) => (Backend::Cuda { device: gpu.ordinal }, None),
        (BackendChoice::Tensorrt | BackendChoice::Auto, Target::TensorRt { .. }) => (tensorrt, None),
        (BackendChoice::Tensorrt, Target::Onnx | Target::TensorRtRtx { .. }) => (
            tensorrt,
            Some(format!(
                "{} has no prebuilt TensorRT engines: building them on first use (minutes) into {}",
                engine_dir.display(),
                cache_dir.display()
            )),
        ),
        _ => (Backend::Cuda { device: gpu.ordinal }, None),
    };
    if matches!(backend, Backend::TensorRt { .. }) {
        check_engine_gpu(target, &gpu, engine_dir)?;
    }
    Ok(Resolved {
        backend,
        gpu: Some(gpu),
        notice,
    })
}

/// Refuses TensorRT engines built for another GPU model or TensorRT version
/// (`major.minor.patch.build`: a manifest without the build number is
/// refused too, it cannot prove the build). Portable targets fit every GPU.
pub fn check_engine_gpu(target: &Target, gpu: &GpuInfo, engine_dir: &Path) -> Result<(), BackendError> {
    let Target::TensorRt {
        gpu_name,
        compute_capability,
        tensorrt_version,
        ..
    } = target
    else {
        return Ok(());
    };
    let cc = gpu.compute_capability_string();
    if gpu_name != &gpu.name || compute_capability != &cc {
        return Err(BackendError::OtherGpu {
            dir: engine_dir.to_path_buf(),
            built_name: gpu_name.clone(),
            built_cc: compute_capability.clone(),
            ordinal: gpu.ordinal,
            name: gpu.name.clone(),
            cc,
        });
    }
    if let (Some(built), Some(here)) = (tensorrt_version, &gpu.tensorrt_version)
        && built != here
    {
        return Err(BackendError::OtherTensorRt {
            dir: engine_dir.to_path_buf(),
            built: built.clone(),
            here: here.clone(),
        });
    }
    Ok(())
}

/// Engine-cache file prefix of a graph: its file stem (`backbone.onnx` →
/// `backbone`), so `trt/engines/` says which engine belongs to which graph.
pub fn cache_prefix(graph: &str) -> &str {
    graph.strip_suffix(".onnx").unwrap_or(graph)
}

/// How the TensorRT provider treats a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrtMode {
    /// Load prebuilt engines through the EP-context models under `trt/`, or
    /// build and cache engines on first use when there are none.
    #[default]
    Run,
    /// Build engines and dump EP-context models (`heart-build --target tensorrt`).
    Build,
}

/// TensorRT settings of one graph file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOptions {
    /// Optimization profile of its dynamic inputs.
    pub profile: GraphProfile,
    /// Allow FP16 kernels (every precision below fp32).
    pub fp16: bool,
}

/// CUDA-graph capture in the device-resident LM loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CudaGraphs {
    /// Capture each repeating step shape once and replay it.
    #[default]
    On,
    /// Launch every kernel on every step.
    Off,
}

/// How the sessions of one process are created.
#[derive(Debug, Clone, Default)]
pub struct ExecutionPlan {
    /// What the user asked for (resolved per engine folder by [`for_engine`]).
    pub choice: Option<BackendChoice>,
    /// The resolved provider.
    pub backend: Backend,
    /// TensorRT settings per graph file name.
    pub graphs: BTreeMap<String, GraphOptions>,
    /// Build or run.
    pub mode: TrtMode,
    /// Ask the provider to capture CUDA graphs. ONNX Runtime replays a graph
    /// only for sessions run through an I/O binding whose buffers never move;
    /// the host-bound frame loop must leave it off. The device-resident LM
    /// loop sets it for its own sessions from [`Self::device_cuda_graphs`].
    pub cuda_graph: bool,
    /// Whether the device-resident LM loop captures and replays CUDA graphs
    /// (`--cuda-graphs`; on unless turned off, for A/B timing).
    pub device_cuda_graphs: CudaGraphs,
    /// The NvTensorRTRTX plugin library or folder given explicitly
    /// (`--trt-rtx-ep`); `None` searches the usual places.
    pub rtx_plugin: Option<PathBuf>,
    /// On [`Backend::TensorRtRtx`]: graph file → its EP-context model.
    pub contexts: BTreeMap<PathBuf, PathBuf>,
    /// A `CUstream` (as an address) the GPU providers run on instead of their
    /// own (`user_compute_stream`): the device-resident decode loop issues
    /// its copies on it, ordered with the providers' kernels. The stream
    /// must outlive every session opened with this plan.
    pub compute_stream: Option<usize>,
}

impl ExecutionPlan {
    /// TensorRT settings of every graph of `model` and (when given) `codec`,
    /// built at `lm` and `codec_precision`.
    pub fn graph_options(
        model: &MulaConfig,
        codec: Option<&CodecConfig>,
        lm: Precision,
        codec_precision: Precision,
    ) -> BTreeMap<String, GraphOptions> {
        let limits = ProfileLimits::for_model(model);
        [
            (engine::BACKBONE_GRAPH, lm),
            (engine::DECODER_GRAPH, lm),
            (engine::FRAME_GRAPH, lm),
            (engine::FLOW_ESTIMATOR_GRAPH, codec_precision),
            (engine::SCALAR_DECODER_GRAPH, codec_precision),
        ]
        .into_iter()
        .filter_map(|(name, precision)| {
            let profile = profiles::for_graph(name, model, codec, &limits)?;
            Some((
                name.to_string(),
                GraphOptions {
                    profile,
                    fp16: precision != Precision::Fp32,
                },
            ))
        })
        .collect()
    }
}

/// The EP-context model to load instead of `graph`, when running on TensorRT
/// and `heart-build --target tensorrt` wrote one.
pub fn context_model_for(plan: &ExecutionPlan, graph: &Path) -> Option<PathBuf> {
    if matches!(plan.backend, Backend::TensorRtRtx { .. }) {
        return plan.contexts.get(graph).cloned();
    }
    if !matches!(plan.backend, Backend::TensorRt { .. }) || plan.mode != TrtMode::Run {
        return None;
    }
    let name = graph.file_name()?.to_str()?;
    let ctx = graph.parent()?.join(engine::context_model(name));
    ctx.is_file().then_some(ctx)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
