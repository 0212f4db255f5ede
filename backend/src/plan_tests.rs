//! Backend choice, GPU compatibility and cache naming: everything that needs
//! no device.

use super::*;
use crate::device::{GpuInfo, Probe};

fn gb10() -> GpuInfo {
    GpuInfo {
        ordinal: 0,
        name: "NVIDIA GB10".into(),
        compute_capability: (12, 1),
        cuda_driver_version: 13000,
        total_memory: 128 << 30,
        tensorrt_version: Some("10.13.3.9".into()),
    }
}

fn built_on(gpu: &GpuInfo) -> Target {
    gpu.target()
}

#[test]
fn auto_on_this_machine_falls_back_to_the_cpu_with_a_notice() {
    let dir = Path::new("engines/x");
    let r = Backend::auto(&Target::Onnx, dir).expect("auto never fails without a GPU");
    if cfg!(feature = "gpu") && matches!(probe(0), Probe::Found(_)) {
        return; // a GPU machine: nothing to fall back from
    }
    assert_eq!(r.backend, Backend::Cpu);
    assert_eq!(r.gpu, None);
    let notice = r.notice.expect("a notice says why the CPU is used");
    assert!(notice.starts_with("running on the CPU: "), "{notice}");
    assert!(!notice.contains('\n'), "one line: {notice}");
    if cfg!(feature = "gpu") {
        assert!(
            notice.contains("NVIDIA driver") || notice.contains("no GPU"),
            "{notice}"
        );
    } else {
        assert!(notice.contains("--features gpu"), "{notice}");
    }
}

#[test]
fn tensorrt_without_a_gpu_is_a_clear_error_not_a_panic() {
    if cfg!(feature = "gpu") && matches!(probe(0), Probe::Found(_)) {
        return;
    }
    for choice in [BackendChoice::Tensorrt, BackendChoice::Cuda] {
        let err = Backend::resolve(choice, &Target::Onnx, Path::new("e"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "--backend {choice} needs a build with `--features gpu` and an NVIDIA driver; "
            )),
            "{err}"
        );
        let expected = if cfg!(feature = "gpu") {
            "this machine has no NVIDIA driver"
        } else {
            "this build has no GPU support"
        };
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn explicit_cpu_never_probes_and_gives_no_notice() {
    let r = Backend::resolve(BackendChoice::Cpu, &built_on(&gb10()), Path::new("e")).unwrap();
    assert_eq!(
        r,
        Resolved {
            backend: Backend::Cpu,
            gpu: None,
            notice: None
        }
    );
}

#[test]
fn each_probe_outcome_has_its_reason() {
    let no_gpu = |p: Probe| resolve(BackendChoice::Auto, &Target::Onnx, Path::new("e"), p).unwrap();
    for (probe, words) in [
        (Probe::NoGpuSupport, "no GPU support"),
        (
            Probe::NoDriver("libcuda.so.1: cannot open shared object file".into()),
            "no NVIDIA driver (libcuda.so.1: cannot open",
        ),
        (
            Probe::DriverTooOld { cuda: 12020 },
            "supports CUDA 12.2 but heart's GPU paths need CUDA 13.0",
        ),
        (Probe::MissingSymbol("cuDeviceGetName".into()), "lacks cuDeviceGetName"),
        (Probe::NoDevice, "reports no GPU"),
        (Probe::DriverError("CUDA_ERROR_UNKNOWN".into()), "CUDA_ERROR_UNKNOWN"),
    ] {
        let r = no_gpu(probe);
        assert_eq!(r.backend, Backend::Cpu);
        assert!(r.notice.as_deref().unwrap_or_default().contains(words), "{r:?}");
    }
}

#[test]
fn auto_on_a_gpu_picks_tensorrt_for_tensorrt_folders_and_cuda_otherwise() {
    let dir = Path::new("/engines/song");
    let gpu = gb10();
    let r = resolve(BackendChoice::Auto, &built_on(&gpu), dir, Probe::Found(gpu.clone())).unwrap();
    assert_eq!(
        r.backend,
        Backend::TensorRt {
            device: 0,
            cache_dir: dir.join("trt")
        }
    );
    assert_eq!(r.notice, None);
    let r = resolve(BackendChoice::Auto, &Target::Onnx, dir, Probe::Found(gpu.clone())).unwrap();
    assert_eq!(r.backend, Backend::Cuda { device: 0 });
    let r = resolve(BackendChoice::Tensorrt, &Target::Onnx, dir, Probe::Found(gpu)).unwrap();
    let Backend::TensorRt { cache_dir, .. } = &r.backend else {
        panic!("{r:?}")
    };
    assert!(
        !cache_dir.starts_with(dir),
        "nothing is written into the engine folder: {cache_dir:?}"
    );
    assert!(r.notice.unwrap().contains("building them on first use"));
}

#[test]
fn engines_of_another_gpu_are_refused_by_name_and_compute_capability() {
    let dir = Path::new("/engines/song");
    let h100 = GpuInfo {
        name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: (9, 0),
        ..gb10()
    };
    let target = built_on(&h100);
    for choice in [BackendChoice::Auto, BackendChoice::Tensorrt] {
        let err = resolve(choice, &target, dir, Probe::Found(gb10()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "was built for NVIDIA H100 80GB HBM3 (compute capability 9.0) but GPU 0 here is NVIDIA GB10 \
                 (compute capability 12.1)"
            ),
            "{err}"
        );
        assert!(err.contains("heart-build --target tensorrt"), "{err}");
        assert!(err.contains("/engines/song"), "{err}");
    }
    // Same name, other compute capability (e.g. a MIG or a renamed board).
    let other_cc = GpuInfo {
        compute_capability: (12, 0),
        ..gb10()
    };
    assert!(check_engine_gpu(&built_on(&other_cc), &gb10(), dir).is_err());
    // The CUDA provider runs the portable graphs on any GPU.
    let r = resolve(BackendChoice::Cuda, &target, dir, Probe::Found(gb10())).unwrap();
    assert_eq!(r.backend, Backend::Cuda { device: 0 });
}

#[test]
fn engines_of_another_tensorrt_version_are_refused_when_both_are_known() {
    let dir = Path::new("e");
    let older = GpuInfo {
        tensorrt_version: Some("10.9.0.34".into()),
        ..gb10()
    };
    let err = check_engine_gpu(&built_on(&older), &gb10(), dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("built with TensorRT 10.9.0.34 but this machine has TensorRT 10.13.3.9"),
        "{err}"
    );
    // The same release with another build number is another TensorRT.
    let other_build = GpuInfo {
        tensorrt_version: Some("10.13.3.7".into()),
        ..gb10()
    };
    let err = check_engine_gpu(&built_on(&other_build), &gb10(), dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TensorRT 10.13.3.7 but this machine has TensorRT 10.13.3.9"),
        "{err}"
    );
    // A manifest that recorded no build number cannot prove the build.
    let no_build = GpuInfo {
        tensorrt_version: Some("10.13.3".into()),
        ..gb10()
    };
    let err = check_engine_gpu(&built_on(&no_build), &gb10(), dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("recorded without its build number"), "{err}");
    let unknown = GpuInfo {
        tensorrt_version: None,
        ..gb10()
    };
    assert!(check_engine_gpu(&built_on(&unknown), &gb10(), dir).is_ok());
    assert!(check_engine_gpu(&Target::Onnx, &gb10(), dir).is_ok());
}

#[test]
fn manifest_target_records_what_the_driver_reported() {
    assert_eq!(
        gb10().target(),
        Target::TensorRt {
            gpu_name: "NVIDIA GB10".into(),
            compute_capability: "12.1".into(),
            tensorrt_version: Some("10.13.3.9".into()),
            cuda_driver_version: "13.0".into(),
        }
    );
    let g = GpuInfo {
        cuda_driver_version: 12080,
        ..gb10()
    };
    assert_eq!(g.cuda_driver_version_string(), "12.8");
}

#[test]
fn engine_cache_prefixes_and_context_models_name_their_graph() {
    assert_eq!(cache_prefix("backbone.onnx"), "backbone");
    assert_eq!(cache_prefix("scalar_decoder.onnx"), "scalar_decoder");
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("backbone.onnx");
    let mut plan = ExecutionPlan {
        backend: Backend::TensorRt {
            device: 0,
            cache_dir: dir.path().join("trt"),
        },
        ..ExecutionPlan::default()
    };
    assert_eq!(context_model_for(&plan, &graph), None, "no context model written yet");
    std::fs::create_dir(dir.path().join("trt")).unwrap();
    std::fs::write(dir.path().join("trt/backbone_ctx.onnx"), b"ctx").unwrap();
    assert_eq!(
        context_model_for(&plan, &graph),
        Some(dir.path().join("trt/backbone_ctx.onnx"))
    );
    plan.mode = TrtMode::Build;
    assert_eq!(
        context_model_for(&plan, &graph),
        None,
        "a build compiles the graph itself"
    );
    plan.mode = TrtMode::Run;
    plan.backend = Backend::Cuda { device: 0 };
    assert_eq!(context_model_for(&plan, &graph), None, "CUDA runs the portable graph");
}
