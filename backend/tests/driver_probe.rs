//! The driver probe never panics: fake `libcuda` libraries, compiled here
//! with the system C compiler, stand in for a driver older than CUDA 13, one
//! missing entry points, one without devices, and a CUDA 13 driver with a
//! GB10 (cudarc's `is_culib_present()` panics on the first two).

use std::path::{Path, PathBuf};
use std::process::Command;

use heart_backend::Probe;
use heart_backend::driver::probe_library;

/// Compiles `source` into the shared library `<dir>/<name>.so`.
fn fake_driver(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .output()
        .expect("a C compiler (cc) builds the fake driver libraries");
    assert!(o.status.success(), "cc: {}", String::from_utf8_lossy(&o.stderr));
    so
}

/// A driver of CUDA `version` whose `cuInit` returns `init` and which has
/// `count` devices, all a GB10 (compute capability 12.1, 128 GiB).
fn driver_source(version: i32, init: i32, count: i32) -> String {
    format!(
        r#"
#include <string.h>
#include <stddef.h>
int cuDriverGetVersion(int *v) {{ *v = {version}; return 0; }}
int cuInit(unsigned f) {{ return {init}; }}
int cuDeviceGetCount(int *n) {{ *n = {count}; return 0; }}
int cuDeviceGet(int *d, int i) {{ *d = i; return 0; }}
int cuDeviceGetName(char *s, int len, int d) {{ strncpy(s, "NVIDIA GB10", len); return 0; }}
int cuDeviceGetAttribute(int *v, int a, int d) {{ *v = a == 75 ? 12 : a == 76 ? 1 : 0; return 0; }}
int cuDeviceTotalMem_v2(size_t *b, int d) {{ *b = (size_t)128 << 30; return 0; }}
"#
    )
}

#[test]
fn a_cuda_13_driver_reports_its_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_driver(dir.path(), "cuda13", &driver_source(13000, 0, 1));
    let Probe::Found(gpu) = probe_library(&lib, 0) else {
        panic!("{:?}", probe_library(&lib, 0));
    };
    assert_eq!(gpu.name, "NVIDIA GB10");
    assert_eq!(gpu.compute_capability, (12, 1));
    assert_eq!(gpu.cuda_driver_version, 13000);
    assert_eq!(gpu.total_memory, 128 << 30);
    assert_eq!(gpu.cuda_driver_version_string(), "13.0");
    assert_eq!(probe_library(&lib, 1), Probe::NoDevice, "ordinal past the count");
}

#[test]
fn a_cuda_12_driver_is_refused_before_any_cuda_13_call() {
    let dir = tempfile::tempdir().unwrap();
    // Only the two entry points a CUDA 12 probe may touch: anything else
    // resolved first would be a missing symbol, not "too old".
    let lib = fake_driver(
        dir.path(),
        "cuda12",
        "int cuDriverGetVersion(int *v) { *v = 12020; return 0; }\nint cuInit(unsigned f) { return 0; }\n",
    );
    let p = probe_library(&lib, 0);
    assert_eq!(p, Probe::DriverTooOld { cuda: 12020 });
    let reason = p.reason();
    assert!(
        reason.contains("supports CUDA 12.2 but heart's GPU paths need CUDA 13.0"),
        "{reason}"
    );
    assert!(reason.contains("update the NVIDIA driver"), "{reason}");
}

#[test]
fn missing_entry_points_are_named_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_driver(dir.path(), "bare", "int cuInit(unsigned f) { return 0; }\n");
    assert_eq!(
        probe_library(&lib, 0),
        Probe::MissingSymbol("cuDriverGetVersion".into())
    );
    // A CUDA 13 version but no device queries.
    let lib = fake_driver(
        dir.path(),
        "partial",
        "int cuDriverGetVersion(int *v) { *v = 13000; return 0; }\nint cuInit(unsigned f) { return 0; }\n",
    );
    let p = probe_library(&lib, 0);
    assert_eq!(p, Probe::MissingSymbol("cuDeviceGetCount".into()));
    assert!(p.reason().contains("lacks cuDeviceGetCount"), "{}", p.reason());
}

#[test]
fn no_device_and_failing_calls_are_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let none = fake_driver(dir.path(), "none", &driver_source(13000, 0, 0));
    assert_eq!(probe_library(&none, 0), Probe::NoDevice);
    // cuInit's CUDA_ERROR_NO_DEVICE (100), as on a machine whose GPU is hidden.
    let hidden = fake_driver(dir.path(), "hidden", &driver_source(13000, 100, 1));
    assert_eq!(probe_library(&hidden, 0), Probe::NoDevice);
    let broken = fake_driver(dir.path(), "broken", &driver_source(13000, 999, 1));
    assert_eq!(
        probe_library(&broken, 0),
        Probe::DriverError("cuInit returned CUDA error 999".into())
    );
}

#[test]
fn a_missing_library_is_no_driver_with_the_loader_message() {
    let p = probe_library(Path::new("/nonexistent/libcuda.so.1"), 0);
    let Probe::NoDriver(message) = &p else {
        panic!("{p:?}");
    };
    assert!(message.contains("/nonexistent/libcuda.so.1"), "{message}");
    assert!(!message.contains('\n'));
    assert!(
        p.reason().starts_with("this machine has no NVIDIA driver ("),
        "{}",
        p.reason()
    );
}
