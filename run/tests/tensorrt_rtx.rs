//! `--backend tensorrt-rtx` and `heart-run doctor` on this machine (no NVIDIA
//! driver, the real NvTensorRTRTX plugin installed by
//! scripts/setup-trt-rtx-ep.sh), and the TensorRT-RTX engine-folder rules with
//! a GPU and plugin supplied (pure resolution).
//!
//! The engine folder is the tiny-a fixture built for the CPU with its
//! manifest target rewritten to `tensorrt_rtx` as `heart-build --target
//! tensorrt-rtx` writes it: what matters here is what heart decides from the
//! manifest, before any engine is deserialized.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use heart::manifest::{InputRange, Manifest, Target, TrtEngineEntry, Verify};
use heart::precision::Precision;
use heart_backend::trt_rtx::{self, Plugin, PluginStatus, RtxDevice};
use heart_backend::{Backend, BackendChoice, GpuInfo, Probe};
use heart_test_support::{bin, fixture};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_driver() -> bool {
    matches!(heart_backend::driver::probe(0), Probe::NoDriver(_))
}

fn rtx_target(version: &str) -> Target {
    Target::TensorRtRtx {
        tensorrt_rtx_version: version.into(),
        gpu_arch: "sm121".into(),
        compute_capability: "12.1".into(),
        execution_provider: trt_rtx::EP_NAME.into(),
        engines: vec![TrtEngineEntry {
            graph: "backbone.onnx".into(),
            context_model: "trt/backbone_ctx.onnx".into(),
            engine: "trt/backbone.engine".into(),
            profile: vec![InputRange {
                name: "embeds".into(),
                min: vec![1, 1, 64],
                opt: vec![2, 1, 64],
                max: vec![2, 512, 64],
            }],
        }],
    }
}

/// The fixture's engine folder (CPU build), once per test process.
fn cpu_engines() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let o = Command::new(bin("heart-build"))
            .arg("-q")
            .arg("--mula")
            .arg(f.join("heartmula"))
            .arg("--codec")
            .arg(f.join("heartcodec"))
            .arg("--out")
            .arg(dir.path().join("e"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        dir
    })
    .path()
    .join("e")
}

/// A copy of the fixture folder whose manifest says TensorRT-RTX `version`.
fn rtx_engines(root: &Path, version: &str) -> PathBuf {
    let dir = root.join("rtx");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(cpu_engines()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let mut m = Manifest::load(&dir, Verify::Quick).unwrap();
    m.target = rtx_target(version);
    m.write(&dir).unwrap();
    dir
}

/// heart-run as from a fresh shell: no `LD_LIBRARY_PATH`, the plugin's
/// libraries found by heart-run itself.
fn heart_run(engines: &Path, wav: &Path, extra: &[&str]) -> Output {
    Command::new(bin("heart-run"))
        .env_remove("LD_LIBRARY_PATH")
        .arg("--engines")
        .arg(engines)
        .args(["--tags", "piano", "--lyrics", "[verse] la", "--duration", "1", "--out"])
        .arg(wav)
        .args(extra)
        .output()
        .unwrap()
}

fn doctor_json(extra: &[&str]) -> serde_json::Value {
    let o = Command::new(bin("heart-run"))
        .env_remove("LD_LIBRARY_PATH")
        .args(["doctor", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("doctor --json prints JSON")
}

#[test]
fn backend_tensorrt_rtx_refuses_with_the_reason_and_auto_falls_back_to_the_cpu() {
    assert!(
        no_driver(),
        "this test describes a machine without an NVIDIA driver (CI); on a GPU machine run scripts/gpu-check.sh"
    );
    let root = tempfile::tempdir().unwrap();
    let engines = rtx_engines(root.path(), "1.7.1.116");

    let wav = root.path().join("refused.wav");
    let o = heart_run(&engines, &wav, &["--backend", "tensorrt-rtx"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--backend tensorrt-rtx cannot run here: the NvTensorRTRTX plugin "),
        "{err}"
    );
    let missing = "did not load: missing libcuda.so.1, libnvidia-ml.so.1 (the NVIDIA driver's; not on this \
                   system's library path: install the NVIDIA driver)";
    assert!(err.contains(missing), "exactly the driver's libraries: {err}");
    for bundled in [
        "libcudart",
        "libtensorrt_rtx",
        "libtensorrt_onnxparser_rtx",
        "libtensorrt_plugins",
    ] {
        assert!(
            !err.contains(bundled),
            "{bundled} loads from the plugin's folder: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!wav.exists());

    // An explicit plugin path that holds none says where it looked and what to run.
    let o = heart_run(
        &engines,
        &wav,
        &["--backend", "tensorrt-rtx", "--trt-rtx-ep", "/nonexistent/ep"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("plugin is not installed (searched: /nonexistent/ep)"),
        "{err}"
    );
    assert!(err.contains("scripts/setup-trt-rtx-ep.sh"), "{err}");

    let wav = root.path().join("auto.wav");
    let o = heart_run(&engines, &wav, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let notices: Vec<&str> = err.lines().filter(|l| l.contains("running on the CPU: ")).collect();
    assert_eq!(notices.len(), 1, "one notice line: {err}");
    assert!(notices[0].contains("the NvTensorRTRTX plugin"), "{err}");
    assert!(notices[0].contains("libcuda.so.1"), "{err}");
    assert!(wav.is_file(), "the CPU fallback wrote the song");
}

#[test]
fn doctor_reports_this_cpu_only_machine() {
    assert!(
        no_driver(),
        "this test describes a machine without an NVIDIA driver (CI); on a GPU machine run scripts/gpu-check.sh"
    );
    let r = doctor_json(&[]);
    let ort = &r["onnx_runtime"];
    assert_eq!(ort["version"], "1.31.1");
    assert!(
        ort["path"].as_str().unwrap().ends_with("libonnxruntime.so.1.31.1"),
        "{ort}"
    );
    assert_eq!(r["driver"]["found"], false);
    assert!(
        r["driver"]["status"].as_str().unwrap().contains("libcuda.so.1"),
        "{}",
        r["driver"]
    );
    assert!(r["gpu"].is_null());
    let rtx = &r["tensorrt_rtx"];
    assert!(rtx["plugin"].as_str().unwrap().ends_with(trt_rtx::PLUGIN_FILE), "{rtx}");
    assert_eq!(rtx["tensorrt_rtx_version"], "1.7.1.116");
    assert_eq!(rtx["loads"], false);
    assert_eq!(rtx["devices"], serde_json::json!([]));
    let required: Vec<&str> = rtx["missing_libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .filter(|m| m.contains("(required)"))
        .collect();
    assert_eq!(required.len(), 2, "{required:?}");
    assert!(
        required[0].starts_with("libcuda.so.1 (required): libcuda.so.1: cannot open"),
        "{required:?}"
    );
    assert!(
        required[1].starts_with("libnvidia-ml.so.1 (required): "),
        "{required:?}"
    );
    assert_eq!(r["classic"]["gpu_feature"], cfg!(feature = "gpu"));
    assert_eq!(r["backend"]["backend"], "cpu");
    assert!(r["engines"].is_null());
    let gaps = r["gaps"].as_array().unwrap();
    let topics: Vec<&str> = gaps.iter().map(|g| g["topic"].as_str().unwrap()).collect();
    assert!(
        topics.contains(&"driver") && topics.contains(&"tensorrt-rtx"),
        "{topics:?}"
    );
    assert!(gaps.iter().all(|g| !g["fix"].as_str().unwrap().is_empty()));
    // The CPU features are what the standard library detects here.
    let features: Vec<&str> = r["cpu"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(features.contains(&"avx2"), std::arch::is_x86_feature_detected!("avx2"));
        assert_eq!(
            features.contains(&"avx512vnni"),
            std::arch::is_x86_feature_detected!("avx512vnni")
        );
    }
    assert_eq!(r["cpu"]["cores"], std::thread::available_parallelism().unwrap().get());

    let o = Command::new(bin("heart-run")).arg("doctor").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let pick = table
        .lines()
        .find(|l| l.starts_with("backend (auto)"))
        .expect("the pick line");
    assert!(pick.contains(" cpu ("), "{table}");
    assert!(table.contains("fix: "), "{table}");
}

#[test]
fn doctor_checks_an_engine_folder() {
    assert!(
        no_driver(),
        "this test describes a machine without an NVIDIA driver (CI); on a GPU machine run scripts/gpu-check.sh"
    );
    let r = doctor_json(&["--engines", cpu_engines().to_str().unwrap()]);
    let e = &r["engines"];
    assert_eq!(e["target"], "onnx");
    assert_eq!(e["precision"], "fp32");
    assert_eq!(e["backend"], "cpu");
    assert!(e["problem"].is_null(), "{e}");
    assert_eq!(r["backend"]["backend"], "cpu");

    let root = tempfile::tempdir().unwrap();
    let rtx = rtx_engines(root.path(), "1.7.1.116");
    let r = doctor_json(&["--engines", rtx.to_str().unwrap()]);
    let e = &r["engines"];
    assert_eq!(e["target"], "tensorrt_rtx");
    assert_eq!(e["tensorrt_rtx_version"], "1.7.1.116");
    assert_eq!(e["gpu_arch"], "sm121");
    assert_eq!(e["backend"], "cpu", "auto falls back");
    let problem = e["problem"].as_str().unwrap();
    assert!(
        problem.starts_with("--backend tensorrt-rtx cannot run here: "),
        "{problem}"
    );
    assert!(
        r["gaps"].as_array().unwrap().iter().any(|g| g["topic"] == "engines"),
        "{}",
        r["gaps"]
    );

    let r = doctor_json(&["--engines", "/nonexistent/engines"]);
    assert!(
        r["engines"]["problem"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/engines")
    );
}

fn gb10() -> GpuInfo {
    GpuInfo {
        ordinal: 0,
        name: "NVIDIA GB10".into(),
        compute_capability: (12, 1),
        cuda_driver_version: 13000,
        total_memory: 128 << 30,
        tensorrt_version: None,
    }
}

fn ready(version: &str) -> PluginStatus {
    PluginStatus::Ready {
        plugin: Plugin {
            path: PathBuf::from("/ep/libonnxruntime_providers_nv_tensorrt_rtx.so"),
            tensorrt_rtx_version: Some(version.into()),
        },
        devices: vec![RtxDevice {
            index: 0,
            hardware_id: 7,
            vendor: "NVIDIA".into(),
        }],
    }
}

#[test]
fn engines_of_another_release_arch_or_precision_are_refused_naming_both() {
    let root = tempfile::tempdir().unwrap();
    let dir = rtx_engines(root.path(), "1.6.0.31");
    let mut m = Manifest::load(&dir, Verify::Quick).unwrap();
    let cache = PathBuf::from("/cache/x");
    let resolve = |choice, m: &Manifest, status: &PluginStatus, gpu: GpuInfo| {
        trt_rtx::resolve(choice, m, &dir, status, &Probe::Found(gpu), cache.clone()).map_err(|e| e.to_string())
    };
    let plugin = ready("1.7.1.116");
    for choice in [BackendChoice::Auto, BackendChoice::TensorrtRtx] {
        let err = resolve(choice, &m, &plugin, gb10()).unwrap_err().to_string();
        assert!(
            err.contains("was built with TensorRT-RTX 1.6.0.31 but the NvTensorRTRTX plugin here"),
            "{err}"
        );
        assert!(err.contains("bundles TensorRT-RTX 1.7.1.116"), "{err}");
    }
    // Same release, another build number: refused.
    m.target = rtx_target("1.7.1.115");
    assert!(resolve(BackendChoice::TensorrtRtx, &m, &plugin, gb10()).is_err());

    m.target = rtx_target("1.7.1.116");
    let rtx5090 = GpuInfo {
        name: "NVIDIA GeForce RTX 5090".into(),
        compute_capability: (12, 0),
        ..gb10()
    };
    let err = resolve(BackendChoice::TensorrtRtx, &m, &plugin, rtx5090)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "was built for sm121 (compute capability 12.1) but this GPU is NVIDIA GeForce RTX 5090 (compute \
             capability 12.0); rebuild it with `heart-build --target tensorrt-rtx --gpu-arch sm120`"
        ),
        "{err}"
    );

    // A GPU TensorRT-RTX does not support: auto falls back, explicit refuses.
    let v100 = GpuInfo {
        name: "Tesla V100".into(),
        compute_capability: (7, 0),
        ..gb10()
    };
    let r = resolve(BackendChoice::Auto, &m, &plugin, v100.clone()).unwrap();
    assert_eq!(r.backend, Backend::Cpu);
    assert!(r.notice.unwrap().contains("TensorRT-RTX does not run on Tesla V100"));
    assert!(resolve(BackendChoice::TensorrtRtx, &m, &plugin, v100).is_err());

    let r = resolve(BackendChoice::Auto, &m, &plugin, gb10()).unwrap();
    assert_eq!(
        r.backend,
        Backend::TensorRtRtx {
            device: 0,
            cache_dir: cache.clone()
        }
    );
    assert_eq!(r.notice, None);

    // fp4 needs Blackwell (12.0+), fp8 Ada (8.9+).
    assert_eq!(trt_rtx::precision_gap(Precision::Fp4, (12, 1)), None);
    assert!(
        trt_rtx::precision_gap(Precision::Fp4, (8, 9))
            .unwrap()
            .contains("fp4 needs compute capability 12.0 or newer, this GPU has 8.9")
    );
    assert_eq!(trt_rtx::precision_gap(Precision::Fp8, (8, 9)), None);
    assert!(trt_rtx::precision_gap(Precision::Fp8, (8, 6)).is_some());
    assert!(trt_rtx::precision_gap(Precision::Int4, (12, 1)).is_some());

    // Folders without TensorRT-RTX engines are refused by the explicit choice.
    m.target = Target::Onnx;
    let err = resolve(BackendChoice::TensorrtRtx, &m, &plugin, gb10())
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no TensorRT-RTX engines"), "{err}");
}

#[test]
fn sessions_load_the_manifests_context_models_with_a_cache_outside_the_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = rtx_engines(root.path(), "1.7.1.116");
    let m = Manifest::load(&dir, Verify::Quick).unwrap();
    let contexts = trt_rtx::context_models(&m, &dir);
    assert_eq!(
        contexts.get(&dir.join("backbone.onnx")),
        Some(&dir.join("trt/backbone_ctx.onnx"))
    );
    assert_eq!(contexts.len(), 1);

    let bytes = std::fs::read(dir.join("manifest.toml")).unwrap();
    let cache = trt_rtx::cache_dir_in(Path::new("/xdg"), &bytes);
    assert!(cache.starts_with("/xdg/heart/trt-rtx"), "{}", cache.display());
    assert_eq!(cache.file_name().unwrap().len(), 16);
    assert!(!cache.starts_with(&dir));
    // Another manifest (a rebuilt folder) gets another cache.
    let mut other = bytes.clone();
    other.push(b'\n');
    assert_ne!(trt_rtx::cache_dir_in(Path::new("/xdg"), &other), cache);

    let opts = trt_rtx::session_options(&cache, true, None);
    assert_eq!(opts.len(), 2);
    assert!(opts.contains(&(
        "NvTensorRTRTXExecutionProvider.nv_runtime_cache_path".into(),
        cache.display().to_string()
    )));
    assert!(opts.contains(&("NvTensorRTRTXExecutionProvider.enable_cuda_graph".into(), "1".into())));
    let opts = trt_rtx::session_options(&cache, false, Some(0x7f00_1234));
    assert!(opts.contains(&(
        "NvTensorRTRTXExecutionProvider.has_user_compute_stream".into(),
        "1".into()
    )));
    assert!(opts.contains(&(
        "NvTensorRTRTXExecutionProvider.user_compute_stream".into(),
        (0x7f00_1234usize).to_string()
    )));
}
