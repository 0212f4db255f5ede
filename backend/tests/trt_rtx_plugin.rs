//! The real NvTensorRTRTX plugin (installed by `scripts/setup-trt-rtx-ep.sh`,
//! which `scripts/test.sh` runs) registered with ONNX Runtime on this machine.
//! Without an NVIDIA driver registration must fail with one clear line (the
//! plugin NEEDS `libcuda.so.1`), never panic; with a driver and a supported
//! GPU it must report a device.

use heart_backend::Probe;
use heart_backend::driver;
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
