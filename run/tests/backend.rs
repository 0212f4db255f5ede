//! Backend choice through the real binaries on a machine without a GPU (with
//! or without the `gpu` feature): `auto` falls back to the CPU with a one-line
//! notice, GPU choices fail with a clear message and no panic, and TensorRT
//! folders built for another GPU are refused.

use heart::manifest::{Manifest, Target, Verify};
use heart_backend::plan::resolve;
use heart_backend::{BackendChoice, GpuInfo, Probe, probe};

use heart_test_support::{build_fixture, short_song, stderr};

fn has_gpu() -> bool {
    matches!(probe(0), Probe::Found(_))
}

#[test]
fn without_a_gpu_heart_run_falls_back_with_one_notice_and_gpu_choices_fail_cleanly() {
    if has_gpu() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let engines = root.path().join("engines");
    let o = build_fixture(&engines, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let wav = root.path().join("auto.wav");
    let o = short_song(&engines, &wav, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let notices: Vec<_> = err.lines().filter(|l| l.contains("running on the CPU: ")).collect();
    assert_eq!(notices.len(), 1, "exactly one notice line:\n{err}");
    assert!(wav.is_file());

    let quiet = root.path().join("quiet.wav");
    let o = short_song(&engines, &quiet, &["--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "--quiet silences the notice");
    let cpu = root.path().join("cpu.wav");
    let o = short_song(&engines, &cpu, &["--backend", "cpu"]);
    assert!(
        !stderr(&o).contains("running on the CPU"),
        "an explicit choice needs no notice"
    );
    assert_eq!(
        std::fs::read(&wav).unwrap(),
        std::fs::read(&cpu).unwrap(),
        "auto is the CPU here"
    );

    for backend in ["tensorrt", "cuda"] {
        let out = root.path().join(format!("{backend}.wav"));
        let o = short_song(&engines, &out, &["--backend", backend]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "--backend {backend} needs a build with `--features gpu` and an NVIDIA driver; "
            )),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn heart_build_target_tensorrt_without_a_gpu_fails_before_exporting() {
    if has_gpu() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("trt");
    let o = build_fixture(&out, &["--target", "tensorrt"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("--target tensorrt needs a build with `--features gpu` and an NVIDIA driver; "),
        "{err}"
    );
    let reason = if cfg!(feature = "gpu") {
        "this machine has no NVIDIA driver"
    } else {
        "this build has no GPU support"
    };
    assert!(err.contains(reason), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "nothing is left behind");
}

#[test]
fn a_folder_built_for_another_gpu_is_refused_and_runs_portably_on_the_cpu() {
    let root = tempfile::tempdir().unwrap();
    let engines = root.path().join("engines");
    let o = build_fixture(&engines, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut manifest = Manifest::load(&engines, Verify::Quick).unwrap();
    let h100 = GpuInfo {
        ordinal: 0,
        name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: (9, 0),
        cuda_driver_version: 13000,
        total_memory: 80 << 30,
        tensorrt_version: Some("10.13.3".into()),
    };
    manifest.target = h100.target();
    manifest.write(&engines).unwrap();

    let here = Manifest::load(&engines, Verify::Quick).unwrap();
    let gb10 = GpuInfo {
        name: "NVIDIA GB10".into(),
        compute_capability: (12, 1),
        ..h100.clone()
    };
    let err = resolve(BackendChoice::Auto, &here.target, &engines, Probe::Found(gb10))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was built for NVIDIA H100 80GB HBM3 (compute capability 9.0) but GPU 0 here is NVIDIA GB10"),
        "{err}"
    );
    assert!(matches!(here.target, Target::TensorRt { .. }));
    assert!(resolve(BackendChoice::Auto, &here.target, &engines, Probe::Found(h100)).is_ok());

    if has_gpu() {
        return;
    }
    let wav = root.path().join("song.wav");
    let o = short_song(&engines, &wav, &[]);
    assert!(o.status.success(), "the portable graphs run on the CPU: {}", stderr(&o));
    assert!(wav.is_file());
}
