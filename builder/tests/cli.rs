//! `heart-build` end to end through the real binary: synthesize, build, verify
//! the engine folder on disk, and the error paths users hit.

use std::path::Path;
use std::process::Output;

use heart_test_support::stderr;

use heart::manifest::{EngineKind, Manifest, Verify};

fn heart_build(args: &[&str]) -> Output {
    heart_test_support::run("heart-build", args)
}

fn synth(dir: &Path, seed: &str) {
    let o = heart_build(&[
        "synth",
        "--size",
        "tiny",
        "--seed",
        seed,
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn synth_is_deterministic_per_seed() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (root.path().join("a"), root.path().join("b"), root.path().join("c"));
    synth(&a, "7");
    synth(&b, "7");
    synth(&c, "8");
    let weights = |d: &Path| std::fs::read(d.join("HeartMuLa-oss-3B/model.safetensors")).unwrap();
    assert_eq!(weights(&a), weights(&b));
    assert_ne!(weights(&a), weights(&c));
    for f in [
        "tokenizer.json",
        "gen_config.json",
        "HeartCodec-oss/config.json",
        "HeartCodec-oss/model.safetensors",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn builds_a_verified_engine_folder_from_a_synthesized_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let ckpt = root.path().join("ckpt");
    synth(&ckpt, "0");
    let out = root.path().join("engines/tiny");
    let o = heart_build(&[
        "--mula",
        ckpt.join("HeartMuLa-oss-3B").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = Manifest::load(&out, Verify::Full).expect("manifest matches the files");
    for kind in [
        EngineKind::Backbone,
        EngineKind::Decoder,
        EngineKind::LmTables,
        EngineKind::Tokenizer,
    ] {
        assert!(m.file(kind).is_some(), "{kind:?} missing from the manifest");
    }
    let roles: Vec<&str> = m.inputs.iter().map(|i| i.role.as_str()).collect();
    assert_eq!(roles, ["mula_config", "tokenizer", "gen_config", "mula_weights"]);
    let weights = &m.inputs[3];
    assert_eq!(
        weights.sha256,
        heart::manifest::sha256_file(&ckpt.join("HeartMuLa-oss-3B/model.safetensors")).unwrap()
    );

    let again = heart_build(&[
        "--mula",
        ckpt.join("HeartMuLa-oss-3B").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists (pass --force to replace it)"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let o = heart_build(&[
        "--mula",
        root.path().join("nope").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "no temp folder left behind"
    );

    let ckpt = root.path().join("ckpt");
    synth(&ckpt, "0");
    let mula = ckpt.join("HeartMuLa-oss-3B");
    std::fs::write(mula.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let o = heart_build(&["--mula", mula.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
    assert!(!out.exists());

    let o = heart_build(&[
        "--mula",
        mula.to_str().unwrap(),
        "--precision",
        "fp4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "fp4 builds, but not from broken weights");
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
    let o = heart_build(&[
        "--mula",
        mula.to_str().unwrap(),
        "--precision",
        "bf16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown precision `bf16`"), "{}", stderr(&o));
}

#[test]
fn no_arguments_prints_help_that_mentions_synth() {
    let o = heart_build(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("heart-build synth --size tiny --out ckpt"),
        "{}",
        stderr(&o)
    );
}
