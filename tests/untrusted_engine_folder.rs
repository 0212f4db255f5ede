//! Engine folders are untrusted input: `Manifest::load` refuses manifests whose
//! paths, graphs or configs would make heart read outside the folder or
//! allocate absurd amounts, before any engine file is opened — even when the
//! recorded sizes and hashes match, as an attacker would make them.

use heart_test_support::checkpoints as common;

use std::path::Path;

use heart::config::MulaConfig;
use heart::manifest::{EngineKind, FileEntry, Manifest, Verify, sha256_bytes};
use heart::precision::Precision;

use common::graph_with_external;

fn entry(dir: &Path, path: &str, kind: EngineKind) -> FileEntry {
    let bytes = std::fs::read(dir.join(path)).unwrap();
    FileEntry {
        path: path.into(),
        kind,
        precision: None,
        size: bytes.len() as u64,
        sha256: sha256_bytes(&bytes),
    }
}

fn manifest(files: Vec<FileEntry>) -> Manifest {
    heart_test_support::manifest(
        MulaConfig::heartmula_oss_3b(),
        heart_test_support::gen_config_3b(),
        Precision::Fp32,
        files,
    )
}

/// `root/secret.txt` outside the engine folder `root/engine`.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("engine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("secret.txt"), b"secret!").unwrap();
    (root, dir)
}

fn load_err(dir: &Path, m: &Manifest) -> String {
    m.write(dir).unwrap();
    Manifest::load(dir, Verify::Full).unwrap_err().to_string()
}

#[test]
fn manifest_paths_outside_the_folder_are_refused_even_with_matching_hashes() {
    let (root, dir) = setup();
    let secret = entry(&dir.join(".."), "secret.txt", EngineKind::Tokenizer);
    for path in [
        "../secret.txt",
        "/x/../secret.txt",
        "sub/../../secret.txt",
        "./tokenizer.json",
    ] {
        let mut e = secret.clone();
        e.path = if path.starts_with('/') {
            root.path().join("secret.txt").display().to_string()
        } else {
            path.into()
        };
        let err = load_err(&dir, &manifest(vec![e.clone()]));
        assert!(
            err.contains("manifest.toml") && err.contains(&format!("path `{}`", e.path)),
            "{path}: {err}"
        );
        assert!(
            err.contains("refusing an engine folder whose files may lie outside it"),
            "{err}"
        );
    }

    std::os::unix::fs::symlink(root.path().join("secret.txt"), dir.join("tokenizer.json")).unwrap();
    let mut e = secret.clone();
    e.path = "tokenizer.json".into();
    let err = load_err(&dir, &manifest(vec![e]));
    assert!(
        err.contains("symlink") && err.contains("leads out of the folder"),
        "{err}"
    );
}

#[test]
fn graphs_whose_external_data_leaves_the_folder_are_refused() {
    let (_root, dir) = setup();
    std::fs::write(dir.join("backbone.onnx.data"), [0u8; 64]).unwrap();
    let data = entry(&dir, "backbone.onnx.data", EngineKind::GraphData);
    for (location, offset, length, expected) in [
        ("../secret.txt", 0, 7, "path `../secret.txt` has a `..` component"),
        ("/etc/passwd", 0, 7, "path `/etc/passwd` is absolute"),
        ("other.data", 0, 7, "`other.data`, which is not a file of the manifest"),
        (
            "backbone.onnx.data",
            60,
            8,
            "ends past the 64 bytes of `backbone.onnx.data`",
        ),
        ("backbone.onnx.data", u64::MAX, 2, "ends past the 64 bytes"),
    ] {
        std::fs::write(dir.join("backbone.onnx"), graph_with_external(location, offset, length)).unwrap();
        let graph = entry(&dir, "backbone.onnx", EngineKind::Backbone);
        let err = load_err(&dir, &manifest(vec![graph, data.clone()]));
        assert!(
            err.contains("backbone.onnx") && err.contains("tensor `w`") && err.contains(expected),
            "{location}: {err}"
        );
    }
    std::fs::write(
        dir.join("backbone.onnx"),
        graph_with_external("backbone.onnx.data", 0, 64),
    )
    .unwrap();
    let graph = entry(&dir, "backbone.onnx", EngineKind::Backbone);
    let m = manifest(vec![graph, data]);
    m.write(&dir).unwrap();
    assert_eq!(
        Manifest::load(&dir, Verify::Full).unwrap(),
        m,
        "a graph inside its folder loads"
    );

    std::fs::write(dir.join("backbone.onnx"), b"\x0a\xff\xff\xff\xff\x0f").unwrap();
    let graph = entry(&dir, "backbone.onnx", EngineKind::Backbone);
    let err = load_err(&dir, &manifest(vec![graph]));
    assert!(err.contains("not an ONNX model: malformed protobuf"), "{err}");
}

#[test]
fn absurd_configs_in_a_manifest_are_refused_before_allocation() {
    let (_root, dir) = setup();
    let mut m = manifest(vec![]);
    m.model.text_vocab_size = 1 << 40;
    assert!(load_err(&dir, &m).contains("[model]: text_vocab_size 1099511627776 is above the limit"));
    let mut m = manifest(vec![]);
    m.model.backbone.num_layers = 1_000_000;
    assert!(load_err(&dir, &m).contains("[model]: backbone: num_layers 1000000 is outside 1..=1024"));
    let mut m = manifest(vec![]);
    m.model.backbone.max_seq_len = 1 << 20;
    m.model.backbone.num_layers = 1024;
    let err = load_err(&dir, &m);
    assert!(
        err.contains("GB for the KV caches, above the limit of 1099 GB"),
        "{err}"
    );
    let mut m = manifest(vec![]);
    m.model.backbone.norm_eps = f64::NAN;
    assert!(load_err(&dir, &m).contains("norm_eps NaN must be a positive finite number"));
    let mut m = manifest(vec![]);
    m.gen_config.text_bos_id = -1;
    assert!(load_err(&dir, &m).contains("[gen_config]: text_bos_id -1 is outside the text vocabulary"));
    let mut m = manifest(vec![]);
    let mut codec = heart::config::CodecConfig::heartcodec_oss();
    codec.upsample_factors = vec![1024; 16];
    codec.upsample_kernel_sizes = vec![8; 16];
    m.codec = Some(codec);
    let err = load_err(&dir, &m);
    assert!(
        err.contains("[codec]: init_channel 64 x 2^16 stages exceeds the width limit"),
        "{err}"
    );

    std::fs::write(dir.join("manifest.toml"), vec![b'#'; 5 << 20]).unwrap();
    let err = Manifest::load(&dir, Verify::Quick).unwrap_err().to_string();
    assert!(
        err.contains("5242880 bytes; a manifest is at most 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn a_missing_engine_folder_says_how_to_build_one() {
    let (root, dir) = setup();
    let missing = root.path().join("nope");
    let err = Manifest::load(&missing, Verify::Quick).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "engine folder {0} does not exist: build one with `heart-build --mula DIR --codec DIR --out {0}` (or try \
             `heart-build synth --size tiny --out ckpt` first)",
            missing.display()
        )
    );
    let err = Manifest::load(&dir, Verify::Quick).unwrap_err().to_string();
    assert!(
        err.contains("has no manifest.toml, so it is not an engine folder: build one with"),
        "{err}"
    );
    let err = Manifest::load(&root.path().join("secret.txt"), Verify::Quick)
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret.txt is not a folder: build one"), "{err}");
}
