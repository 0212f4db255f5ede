//! The real NvTensorRTRTX plugin (installed by `scripts/setup-trt-rtx-ep.sh`,
//! which `scripts/test.sh` runs) registered with ONNX Runtime on this machine.
//! Without an NVIDIA driver registration must fail with one clear line (the
//! plugin NEEDS `libcuda.so.1`), never panic; with a driver and a supported
//! GPU it must report a device.

use heart_backend::Probe;
use heart_backend::driver;
use heart_backend::rtx_libs::{self, LIBRARIES, Source};
use heart_backend::trt_rtx::{self, PluginStatus};

#[test]
fn the_real_plugin_registers_or_says_why_in_one_line() {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let status = rt.tensorrt_rtx();
    let plugin = status.plugin().unwrap_or_else(|| {
        panic!(
            "the NvTensorRTRTX plugin is not installed: run `bash scripts/setup-trt-rtx-ep.sh` ({})",
            status.reason()
        )
    });
    assert!(plugin.path.ends_with(trt_rtx::PLUGIN_FILE), "{plugin:?}");
    // The bundled TensorRT-RTX reports its release without a GPU.
    assert_eq!(plugin.tensorrt_rtx_version.as_deref(), Some("1.7.1.116"));
    match driver::probe(0) {
        Probe::NoDriver(why) => {
            assert!(why.contains("libcuda.so.1"), "{why}");
            let PluginStatus::LoadFailed { message, .. } = &status else {
                panic!("without a driver the plugin cannot register: {status:?}");
            };
            assert!(message.contains("libcuda.so.1"), "{message}");
            let reason = status.reason();
            assert!(!reason.contains('\n'), "one line: {reason}");
            assert!(
                reason.starts_with(&format!(
                    "the NvTensorRTRTX plugin {} did not load: ",
                    plugin.path.display()
                )),
                "{reason}"
            );
        }
        Probe::Found(gpu) if trt_rtx::supports_compute_capability(gpu.compute_capability) => {
            let PluginStatus::Ready { devices, .. } = &status else {
                panic!(
                    "{} (compute capability {:?}) but the plugin says: {status:?}",
                    gpu.name, gpu.compute_capability
                );
            };
            assert!(!devices.is_empty());
        }
        other => assert!(
            !matches!(status, PluginStatus::Ready { .. }),
            "driver {other:?} yet the plugin is ready"
        ),
    }
    // Registration happens once per process; a second call reports the same.
    assert_eq!(rt.tensorrt_rtx(), status);
}

#[test]
fn plugin_candidates_follow_the_onnx_runtime_order() {
    let explicit = trt_rtx::candidates(Some(std::path::Path::new("/opt/ep/libx.so")));
    assert_eq!(explicit, vec![std::path::PathBuf::from("/opt/ep/libx.so")]);
    let dir = tempfile::tempdir().unwrap();
    // A folder names the plugin inside it.
    assert_eq!(
        trt_rtx::candidates(Some(dir.path())),
        vec![dir.path().join(trt_rtx::PLUGIN_FILE)]
    );
    let searched = trt_rtx::locate(Some(dir.path())).unwrap_err();
    let reason = PluginStatus::NotInstalled { searched }.reason();
    assert!(reason.contains("scripts/setup-trt-rtx-ep.sh"), "{reason}");
    assert!(reason.contains(&dir.path().display().to_string()), "{reason}");
    let all = trt_rtx::candidates(None);
    let local = std::env::current_dir()
        .unwrap()
        .join(".trt-rtx-ep")
        .join(trt_rtx::PLUGIN_FILE);
    assert!(all.contains(&local), "{all:?}");
    assert!(
        all.last()
            .is_some_and(|p| p.ends_with(format!(".trt-rtx-ep/{}", trt_rtx::PLUGIN_FILE))),
        "{all:?}"
    );
}

#[test]
fn the_plugins_libraries_load_by_path_and_only_the_missing_driver_is_named() {
    let plugin = trt_rtx::locate(None).expect("run `bash scripts/setup-trt-rtx-ep.sh` first");
    let dir = plugin.dir();
    let pre = rtx_libs::preload(dir);
    let loaded: Vec<&str> = pre.loaded.iter().map(|(s, _)| *s).collect();
    for (soname, path) in &pre.loaded {
        let lib = LIBRARIES.iter().find(|l| l.soname == *soname).unwrap();
        if lib.source == Source::Bundled {
            assert!(
                path.starts_with(dir),
                "{soname} from the plugin's folder, not a search path: {path:?}"
            );
        }
    }
    assert!(
        [
            "libcudart.so.13",
            "libtensorrt_rtx.so.1",
            "libtensorrt_onnxparser_rtx.so.1"
        ]
        .iter()
        .all(|s| loaded.contains(s)),
        "{pre:?}"
    );
    match driver::probe(0) {
        Probe::NoDriver(_) => {
            let required: Vec<&str> = pre.missing.iter().filter(|m| m.required).map(|m| m.soname).collect();
            assert_eq!(required, ["libcuda.so.1", "libnvidia-ml.so.1"], "{pre:?}");
            assert_eq!(pre.skipped, ["libtensorrt_plugins.so"], "it NEEDS libcuda.so.1");
            let refusal = pre.refusal(dir).unwrap();
            assert_eq!(
                refusal,
                "missing libcuda.so.1, libnvidia-ml.so.1 (the NVIDIA driver's; not on this system's library \
                 path: install the NVIDIA driver)"
            );
        }
        _ => {
            assert_eq!(pre.refusal(dir), None, "{pre:?}");
            assert!(loaded.contains(&"libtensorrt_plugins.so"), "{pre:?}");
        }
    }
}

#[test]
fn bundled_libraries_are_found_by_soname_link_or_newest_versioned_file() {
    let dir = tempfile::tempdir().unwrap();
    let rtx = LIBRARIES.iter().find(|l| l.soname == "libtensorrt_rtx.so.1").unwrap();
    assert_eq!(rtx_libs::candidates(rtx, dir.path()), Vec::<std::path::PathBuf>::new());
    for name in [
        "libtensorrt_rtx.so.1.7.1",
        "libtensorrt_rtx.so.1.10.0",
        "libtensorrt_rtx.so.1.x",
        "libtensorrt_rtx.so",
    ] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    assert_eq!(
        rtx_libs::candidates(rtx, dir.path()),
        [dir.path().join("libtensorrt_rtx.so.1.10.0")],
        "the wheel's versioned files, newest first, without links"
    );
    std::os::unix::fs::symlink("libtensorrt_rtx.so.1.7.1", dir.path().join("libtensorrt_rtx.so.1")).unwrap();
    assert_eq!(
        rtx_libs::candidates(rtx, dir.path()),
        [dir.path().join("libtensorrt_rtx.so.1")]
    );
    let cuda = LIBRARIES.iter().find(|l| l.soname == "libcuda.so.1").unwrap();
    assert_eq!(
        rtx_libs::candidates(cuda, dir.path()),
        [std::path::PathBuf::from("libcuda.so.1")]
    );
    // A folder missing a bundled library is named with the fix.
    let empty = tempfile::tempdir().unwrap();
    let refusal = rtx_libs::preload(empty.path()).refusal(empty.path()).unwrap();
    assert!(
        refusal.starts_with(&format!(
            "missing libcudart.so.13, libtensorrt_rtx.so.1 (bundled with the plugin; not in {}: rerun",
            empty.path().display()
        )),
        "{refusal}"
    );
    assert!(
        !refusal.contains("onnxparser"),
        "skipped: it needs libtensorrt_rtx.so.1: {refusal}"
    );
}
