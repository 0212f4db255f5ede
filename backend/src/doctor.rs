//! What this machine can run and what to do about each gap (`heart-run
//! doctor`): CPU features, ONNX Runtime, the NVIDIA driver and GPU (probed
//! without panicking), ONNX Runtime's NvTensorRTRTX plugin, the classic
//! CUDA/TensorRT providers, optionally whether an engine folder runs here,
//! and the backend `heart-run --backend auto` would pick.
//!
//! [`diagnose`] returns a typed [`Report`] (serializable as JSON); the CLI
//! only prints it.

use std::path::{Path, PathBuf};

use heart::manifest::{Manifest, Target, Verify};
use serde::Serialize;

use crate::device::{GpuInfo, Probe};
use crate::plan::{Backend, BackendChoice};
use crate::trt_rtx::{self, PluginStatus};
use crate::{driver, library, rtx_libs};

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The CPU.
    pub cpu: CpuReport,
    /// ONNX Runtime.
    pub onnx_runtime: OrtReport,
    /// The NVIDIA driver.
    pub driver: DriverReport,
    /// The GPU, when the driver reports one.
    pub gpu: Option<GpuReport>,
    /// ONNX Runtime's NvTensorRTRTX plugin.
    pub tensorrt_rtx: RtxReport,
    /// ONNX Runtime's classic CUDA and TensorRT providers.
    pub classic: ClassicReport,
    /// The engine folder asked about (`--engines`).
    pub engines: Option<EnginesReport>,
    /// What `--backend auto` picks.
    pub backend: BackendPick,
    /// Everything missing, each with what to do about it.
    pub gaps: Vec<Gap>,
}

/// The CPU.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// `model name` of `/proc/cpuinfo`, when readable.
    pub model: Option<String>,
    /// Cores this process may use.
    pub cores: usize,
    /// SIMD features ONNX Runtime's CPU kernels use, as detected at run time.
    pub features: Vec<String>,
}

/// ONNX Runtime.
#[derive(Debug, Clone, Serialize)]
pub struct OrtReport {
    /// The library loaded.
    pub path: Option<PathBuf>,
    /// Its `GetVersionString`.
    pub version: Option<String>,
    /// Why it did not load.
    pub error: Option<String>,
}

/// The NVIDIA driver.
#[derive(Debug, Clone, Serialize)]
pub struct DriverReport {
    /// Whether `libcuda.so.1` loaded and answered.
    pub found: bool,
    /// Newest CUDA version it supports (`13.0`), when known.
    pub cuda_version: Option<String>,
    /// What the probe found, one line.
    pub status: String,
}

/// The GPU.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    /// `cuDeviceGetName`.
    pub name: String,
    /// `major.minor`.
    pub compute_capability: String,
    /// Device memory in bytes.
    pub memory_bytes: usize,
    /// Whether TensorRT-RTX supports it.
    pub tensorrt_rtx_supported: bool,
}

/// ONNX Runtime's NvTensorRTRTX plugin.
#[derive(Debug, Clone, Serialize)]
pub struct RtxReport {
    /// The plugin library, when found.
    pub plugin: Option<PathBuf>,
    /// The TensorRT-RTX release it bundles.
    pub tensorrt_rtx_version: Option<String>,
    /// Whether ONNX Runtime registered it.
    pub loads: bool,
    /// Devices it reports (ONNX Runtime hardware-device ids).
    pub devices: Vec<u32>,
    /// Libraries of its closure that did not load ([`rtx_libs::preload`]),
    /// as `soname (required|optional): loader message`.
    pub missing_libraries: Vec<String>,
    /// What registration found, one line.
    pub status: String,
}

/// ONNX Runtime's classic CUDA and TensorRT providers.
#[derive(Debug, Clone, Serialize)]
pub struct ClassicReport {
    /// Whether this build has the `gpu` feature (the providers' bindings).
    pub gpu_feature: bool,
    /// Whether `libonnxruntime_providers_cuda.so` is next to the ONNX Runtime library (`onnxruntime-gpu`).
    pub cuda_provider: bool,
    /// Whether `libonnxruntime_providers_tensorrt.so` is.
    pub tensorrt_provider: bool,
    /// Version of `libnvinfer.so.10` (`major.minor.patch.build`), when it loads.
    pub tensorrt_version: Option<String>,
}

/// Whether an engine folder runs here.
#[derive(Debug, Clone, Serialize)]
pub struct EnginesReport {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest target (`onnx`, `tensorrt`, `tensorrt_rtx`), when it loaded.
    pub target: Option<String>,
    /// LM precision.
    pub precision: Option<String>,
    /// TensorRT-RTX release of its engines.
    pub tensorrt_rtx_version: Option<String>,
    /// GPU architecture of its engines.
    pub gpu_arch: Option<String>,
    /// The backend `auto` picks for it here.
    pub backend: Option<String>,
    /// Why it cannot run on its GPU backend here (or why it does not load).
    pub problem: Option<String>,
}

/// What `--backend auto` picks.
#[derive(Debug, Clone, Serialize)]
pub struct BackendPick {
    /// `cpu`, `cuda`, `tensorrt` or `tensorrt-rtx`.
    pub backend: String,
    /// Why, one line.
    pub reason: String,
}

/// A gap and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// What it concerns (`driver`, `tensorrt-rtx`, ...).
    pub topic: String,
    /// What is missing.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// Where to look for things; `None`s search the usual places.
#[derive(Debug, Clone, Copy, Default)]
pub struct DoctorArgs<'a> {
    /// `--ort-lib`.
    pub ort_lib: Option<&'a Path>,
    /// `--trt-rtx-ep`.
    pub rtx_plugin: Option<&'a Path>,
    /// `--engines`.
    pub engines: Option<&'a Path>,
}

/// Examines this machine (and `args.engines`).
pub fn diagnose(args: DoctorArgs<'_>) -> Report {
    let mut gaps = Vec::new();
    let cpu = cpu_report();
    if cpu.arch == "x86_64" && !cpu.features.iter().any(|f| f == "avx2") {
        gaps.push(gap(
            "cpu",
            "no AVX2: ONNX Runtime's CPU kernels fall back to SSE (several times slower)",
            "use a machine with AVX2 (and AVX512-VNNI or AVX-VNNI for the int8 codec) or a GPU backend",
        ));
    }
    if !heart::quant::int4x16::has_fast_path() {
        gaps.push(gap(
            "cpu",
            "no AVX-512 VNNI: int4 engines built with heart's int4 kernel (the int4 profiles' default) run its portable path, many times slower",
            crate::int4_op::SLOW_PATH_FIX,
        ));
    }
    let probe = driver::probe(0);
    let driver_report = DriverReport {
        found: matches!(probe, Probe::Found(_) | Probe::NoDevice),
        cuda_version: match &probe {
            Probe::Found(g) => Some(g.cuda_driver_version_string()),
            Probe::DriverTooOld { cuda } => Some(crate::device::cuda_version_string(*cuda)),
            _ => None,
        },
        status: match &probe {
            Probe::Found(g) => format!("CUDA {} driver", g.cuda_driver_version_string()),
            other => other.reason(),
        },
    };
    let gpu = match &probe {
        Probe::Found(g) => Some(g.clone()),
        _ => None,
    };
    match &probe {
        Probe::Found(_) => {}
        Probe::NoDriver(_) => gaps.push(gap(
            "driver",
            &probe.reason(),
            "to use an NVIDIA GPU, install its driver (580 or newer, CUDA 13); heart runs on the CPU without one",
        )),
        other => gaps.push(gap(
            "driver",
            &other.reason(),
            "update the NVIDIA driver (580 or newer, CUDA 13)",
        )),
    }
    let rt = library::init(args.ort_lib).map(|rt| rt.with_rtx_plugin(args.rtx_plugin.map(Path::to_path_buf)));
    let onnx_runtime = match &rt {
        Ok(rt) => OrtReport {
            path: Some(rt.library.clone()),
            version: ort_version(&rt.library),
            error: None,
        },
        Err(e) => {
            gaps.push(gap(
                "onnx-runtime",
                &one_line(&e.to_string()),
                "run `bash scripts/setup-ort.sh` in the heart source tree, or pass --ort-lib / set ORT_DYLIB_PATH",
            ));
            OrtReport {
                path: None,
                version: None,
                error: Some(one_line(&e.to_string())),
            }
        }
    };
    let status = match &rt {
        Ok(rt) => rt.tensorrt_rtx(),
        Err(_) => match trt_rtx::locate(args.rtx_plugin) {
            Ok(plugin) => PluginStatus::LoadFailed {
                plugin,
                message: "ONNX Runtime did not load, so the plugin was not registered".into(),
            },
            Err(searched) => PluginStatus::NotInstalled { searched },
        },
    };
    let tensorrt_rtx = rtx_report(&status, &mut gaps);
    let classic = classic_report(onnx_runtime.path.as_deref());
    if gpu.is_some() && !(classic.gpu_feature && classic.cuda_provider) {
        gaps.push(gap(
            "classic-providers",
            "ONNX Runtime's CUDA/TensorRT providers are not usable by this build",
            "build with `cargo build --release --features gpu` and use the onnxruntime-gpu 1.31.1 library \
             (docs/gpu.md); TensorRT-RTX engines need neither",
        ));
    }
    let engines = args.engines.map(|dir| engines_report(dir, &status, &probe, &mut gaps));
    let backend = pick(&status, gpu.as_ref(), &probe, engines.as_ref());
    Report {
        cpu,
        onnx_runtime,
        driver: driver_report,
        gpu: gpu.map(|g| GpuReport {
            tensorrt_rtx_supported: trt_rtx::supports_compute_capability(g.compute_capability),
            compute_capability: g.compute_capability_string(),
            memory_bytes: g.total_memory,
            name: g.name,
        }),
        tensorrt_rtx,
        classic,
        engines,
        backend,
        gaps,
    }
}

fn gap(topic: &str, problem: &str, fix: &str) -> Gap {
    Gap {
        topic: topic.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cpu_report() -> CpuReport {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    CpuReport {
        arch: std::env::consts::ARCH.into(),
        model,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        features: cpu_features(),
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! detect {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                out.push($f.to_string());
            }
        )*};
    }
    detect!(
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "avx512bf16",
        "avxvnni"
    );
    out
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! detect {
        ($($f:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($f) {
                out.push($f.to_string());
            }
        )*};
    }
    detect!("neon", "dotprod", "i8mm", "bf16", "fp16", "sve", "sve2");
    out
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_features() -> Vec<String> {
    Vec::new()
}

/// `GetVersionString` of the ONNX Runtime library at `path` (already loaded
/// by [`library::init`], so this only looks the handle up again).
fn ort_version(path: &Path) -> Option<String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: the library is ONNX Runtime (it initialised); `OrtGetApiBase`
    // and `GetVersionString` are its documented C entry points, returning a
    // static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(path.as_os_str()).ok()?;
        let base: libloading::Symbol<'_, GetApiBase> = lib.get(b"OrtGetApiBase\0").ok()?;
        let base = base();
        if base.is_null() {
            return None;
        }
        let version = ((*base).GetVersionString)();
        (!version.is_null()).then(|| std::ffi::CStr::from_ptr(version).to_string_lossy().into_owned())
    }
}

fn rtx_report(status: &PluginStatus, gaps: &mut Vec<Gap>) -> RtxReport {
    let plugin = status.plugin();
    let missing = plugin.map(|p| rtx_libs::preload(p.dir()).missing).unwrap_or_default();
    match status {
        PluginStatus::NotInstalled { .. } => gaps.push(gap(
            "tensorrt-rtx",
            "ONNX Runtime's NvTensorRTRTX plugin is not installed",
            "run `bash scripts/setup-trt-rtx-ep.sh` (pip wheel onnxruntime-ep-nv-tensorrt-rtx-cu13 0.5.0), or pass \
             --trt-rtx-ep / set HEART_TRT_RTX_EP",
        )),
        PluginStatus::LoadFailed { message, .. } if message.contains("libcuda.so.1") => gaps.push(gap(
            "tensorrt-rtx",
            &status.reason(),
            "the plugin needs the NVIDIA driver (libcuda.so.1, libnvidia-ml.so.1): install it on a machine with an \
             NVIDIA GPU",
        )),
        PluginStatus::LoadFailed { .. } => gaps.push(gap(
            "tensorrt-rtx",
            &status.reason(),
            "reinstall the plugin with `bash scripts/setup-trt-rtx-ep.sh` and check the NVIDIA driver",
        )),
        PluginStatus::NoDevice { .. } => gaps.push(gap(
            "tensorrt-rtx",
            &status.reason(),
            "TensorRT-RTX runs on compute capability 8.6, 8.9 and 12.0 or newer (RTX 30/40/50, GB10)",
        )),
        PluginStatus::Ready { .. } => {
            for m in &missing {
                gaps.push(gap(
                    "tensorrt-rtx",
                    &format!("optional library {} did not load: {}", m.soname, m.reason),
                    "TensorRT-RTX uses NVRTC for kernels it compiles at run time and the plugin library for plugin \
                     layers; install the CUDA 13 toolkit's NVRTC (libnvrtc.so.13) if a session reports it",
                ));
            }
        }
    }
    RtxReport {
        plugin: plugin.map(|p| p.path.clone()),
        tensorrt_rtx_version: plugin.and_then(|p| p.tensorrt_rtx_version.clone()),
        loads: matches!(status, PluginStatus::Ready { .. } | PluginStatus::NoDevice { .. }),
        devices: match status {
            PluginStatus::Ready { devices, .. } => devices.iter().map(|d| d.hardware_id).collect(),
            _ => Vec::new(),
        },
        missing_libraries: missing
            .iter()
            .map(|m| {
                let need = if m.required { "required" } else { "optional" };
                format!("{} ({need}): {}", m.soname, m.reason)
            })
            .collect(),
        status: match status {
            PluginStatus::Ready { devices, .. } => format!("registered, {} device(s)", devices.len()),
            other => other.reason(),
        },
    }
}

fn classic_report(ort_library: Option<&Path>) -> ClassicReport {
    let next_to_ort = |name: &str| {
        ort_library
            .and_then(Path::parent)
            .is_some_and(|d| d.join(name).is_file())
    };
    ClassicReport {
        gpu_feature: cfg!(feature = "gpu"),
        cuda_provider: next_to_ort("libonnxruntime_providers_cuda.so"),
        tensorrt_provider: next_to_ort("libonnxruntime_providers_tensorrt.so"),
        tensorrt_version: driver::tensorrt_version(Path::new(driver::NVINFER)),
    }
}

fn target_name(target: &Target) -> &'static str {
    match target {
        Target::Onnx => "onnx",
        Target::TensorRt { .. } => "tensorrt",
        Target::TensorRtRtx { .. } => "tensorrt_rtx",
    }
}

fn backend_name(b: &Backend) -> &'static str {
    match b {
        Backend::Cpu => "cpu",
        Backend::Cuda { .. } => "cuda",
        Backend::TensorRt { .. } => "tensorrt",
        Backend::TensorRtRtx { .. } => "tensorrt-rtx",
    }
}

fn engines_report(dir: &Path, status: &PluginStatus, probe: &Probe, gaps: &mut Vec<Gap>) -> EnginesReport {
    let mut report = EnginesReport {
        dir: dir.to_path_buf(),
        target: None,
        precision: None,
        tensorrt_rtx_version: None,
        gpu_arch: None,
        backend: None,
        problem: None,
    };
    let manifest = match Manifest::load(dir, Verify::Quick) {
        Ok(m) => m,
        Err(e) => {
            let problem = one_line(&e.to_string());
            gaps.push(gap("engines", &problem, "rebuild the folder with heart-build"));
            report.problem = Some(problem);
            return report;
        }
    };
    report.target = Some(target_name(&manifest.target).into());
    report.precision = Some(manifest.precision.as_str().into());
    if let Target::TensorRtRtx {
        tensorrt_rtx_version,
        gpu_arch,
        ..
    } = &manifest.target
    {
        report.tensorrt_rtx_version = Some(tensorrt_rtx_version.clone());
        report.gpu_arch = Some(gpu_arch.clone());
    }
    // What `--backend auto` does with this folder, and separately whether its
    // own GPU backend would accept it (auto's CPU fallback hides that).
    let resolved = match &manifest.target {
        Target::TensorRtRtx { .. } => {
            let cache = trt_rtx::runtime_cache_dir(dir).unwrap_or_default();
            let own = trt_rtx::resolve(BackendChoice::TensorrtRtx, &manifest, dir, status, probe, cache.clone());
            if let Err(e) = &own {
                report.problem = Some(one_line(&e.to_string()));
            }
            trt_rtx::resolve(BackendChoice::Auto, &manifest, dir, status, probe, cache)
        }
        target => {
            let own = crate::plan::resolve(BackendChoice::Auto, target, dir, probe.clone());
            if let (Target::TensorRt { .. }, Ok(r)) = (target, &own)
                && r.backend == Backend::Cpu
            {
                report.problem = r.notice.clone();
            }
            own
        }
    };
    match resolved {
        Ok(r) => report.backend = Some(backend_name(&r.backend).into()),
        Err(e) => report.problem = Some(one_line(&e.to_string())),
    }
    if let Some(problem) = &report.problem {
        let fix = match &manifest.target {
            Target::TensorRtRtx { .. } => {
                "run it on a GPU its engines were built for (the message says which), or rebuild with \
                 `heart-build --target tensorrt-rtx --gpu-arch <this GPU>`; fp32/fp16/fp8 TensorRT forms also run \
                 on the CPU"
            }
            _ => "rebuild the folder on this machine, or run it with --backend cpu",
        };
        gaps.push(gap("engines", problem, fix));
    }
    report
}

fn pick(status: &PluginStatus, gpu: Option<&GpuInfo>, probe: &Probe, engines: Option<&EnginesReport>) -> BackendPick {
    if let Some(backend) = engines.and_then(|e| e.backend.clone()) {
        let dir = engines.map(|e| e.dir.display().to_string()).unwrap_or_default();
        return BackendPick {
            reason: format!("for {dir}"),
            backend,
        };
    }
    let rtx_ready = matches!(status, PluginStatus::Ready { .. });
    match (gpu, rtx_ready, cfg!(feature = "gpu")) {
        (Some(_), true, _) => BackendPick {
            backend: "tensorrt-rtx".into(),
            reason: "for folders built with `heart-build --target tensorrt-rtx`; other folders: cuda with the gpu \
                     feature, else cpu"
                .into(),
        },
        (Some(_), false, true) => BackendPick {
            backend: "cuda".into(),
            reason: "ONNX Runtime's CUDA provider (tensorrt for folders built with --target tensorrt)".into(),
        },
        _ => BackendPick {
            backend: "cpu".into(),
            reason: match gpu {
                None => probe.reason(),
                Some(_) => status.reason(),
            },
        },
    }
}
