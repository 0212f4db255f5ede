//! FP8 / FP4 / int8 / int4 engine builds through the real `heart-build`: the
//! manifest records the build profile and the calibration (prompt set hash,
//! statistics file and its hash); calibration statistics are reproducible for a
//! seed and change with it; weight-only FP4 needs no calibration; an int4
//! engine with an int8 draft records both precisions, runs heart's int4 kernel
//! (int8: `MatMulNBits`) and
//! `heart-run` makes a WAV from it; profile and flag errors name the file, key
//! or flag.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use heart::manifest::{EngineKind, Manifest, Verify, sha256_bytes, sha256_file};
use heart::quant::calibration::CalibrationSet;

fn repo(rel: &str) -> PathBuf {
    heart_test_support::workspace_root().join(rel)
}

fn heart_build(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heart-build"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("heart-build runs")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

use heart_test_support::fixture_mula as fixture;

/// A profile file: the built-in fp8 with `seed` and only 6 prompts.
fn fp8_profile(dir: &Path, seed: u64) -> PathBuf {
    let text = std::fs::read_to_string(repo("configs/build/fp8.toml")).unwrap();
    let text = text
        .replace("seed = 0", &format!("seed = {seed}"))
        .replace("max_prompts = 0", "max_prompts = 6");
    let path = dir.join(format!("fp8-seed{seed}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_manifest_records_profile_and_calibration_and_stats_are_reproducible() {
    let root = tempfile::tempdir().unwrap();
    let calibration = repo("calibration");
    let build = |profile: &Path, out: &str| {
        let out = root.path().join(out);
        ok(&heart_build(&[
            "--mula",
            s(&fixture()),
            "--profile",
            s(profile),
            "--calibration",
            s(&calibration),
            "--out",
            s(&out),
        ]));
        out
    };
    let p0 = fp8_profile(root.path(), 0);
    let (a, b) = (build(&p0, "a"), build(&p0, "b"));
    let c = build(&fp8_profile(root.path(), 7), "c");

    let m = Manifest::load(&a, Verify::Full).unwrap();
    assert_eq!(m.precision, heart::precision::Precision::Fp8);
    let profile = m.build_profile.as_ref().unwrap();
    assert_eq!(profile.name, "fp8-seed0");
    assert_eq!(profile.text, std::fs::read_to_string(&p0).unwrap());
    assert_eq!(profile.sha256, sha256_bytes(profile.text.as_bytes()));
    let cal = m.calibration.as_ref().expect("W8A8 is calibrated");
    let set = CalibrationSet::load(&calibration).unwrap();
    assert_eq!(cal.prompts_sha256, set.sha256());
    assert_eq!(cal.method, "mse");
    let stats = a.join(&cal.stats);
    assert_eq!(cal.stats_sha256, sha256_file(&stats).unwrap());
    let entry = m
        .file(EngineKind::Calibration)
        .expect("the statistics are an engine file");
    assert_eq!(entry.sha256, cal.stats_sha256);

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let skipped = json["skipped"].as_array().unwrap();
    assert_eq!(
        skipped,
        &[serde_json::json!("en-pop-summer-road")],
        "550 rows > 512 positions"
    );
    assert_eq!(json["prompts_used"], 5);
    let q = &json["linears"]["backbone.layers.0.attn.q_proj"];
    assert_eq!(q["probe"], "probe.backbone.layers.0.attn.q_proj");
    assert_eq!(q["amax"], q["mse"], "method mse exports the MSE choice");
    assert!(q["max"].as_f64().unwrap() >= q["amax"].as_f64().unwrap());
    assert_eq!(
        json["linears"]["backbone.layers.0.attn.k_proj"], *q,
        "q/k/v read one input: one set of statistics"
    );
    assert_eq!(json["linears"].as_object().unwrap().len(), 1 + 7 * (3 + 2));

    let bytes = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        bytes(&a, "calibration.json"),
        bytes(&b, "calibration.json"),
        "same seed, same statistics"
    );
    assert_eq!(bytes(&a, "backbone.onnx.data"), bytes(&b, "backbone.onnx.data"));
    assert_ne!(
        bytes(&a, "calibration.json"),
        bytes(&c, "calibration.json"),
        "the seed matters"
    );
}

#[test]
fn weight_only_fp4_needs_no_calibration() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("fp4");
    ok(&heart_build(&[
        "--mula",
        s(&fixture()),
        "--precision",
        "fp4",
        "--out",
        s(&out),
    ]));
    let m = Manifest::load(&out, Verify::Full).unwrap();
    assert_eq!(m.build_profile.as_ref().unwrap().name, "fp4");
    assert!(m.calibration.is_none());
    assert!(m.file(EngineKind::Calibration).is_none());
    let backbone = m.file(EngineKind::Backbone).unwrap();
    assert_eq!(backbone.precision, Some(heart::precision::Precision::Fp4));
    let fp16 = root.path().join("fp16");
    ok(&heart_build(&[
        "--mula",
        s(&fixture()),
        "--precision",
        "fp16",
        "--out",
        s(&fp16),
    ]));
    let size = |d: &Path| std::fs::metadata(d.join("backbone.onnx.data")).unwrap().len();
    // Linear weights: 0.5625 bytes per parameter against 2; the RoPE tables and
    // the dense codebook-0 head weigh the same in both.
    assert!(
        size(&out) * 2 < size(&fp16),
        "NVFP4 weights: {} vs fp16 {} bytes",
        size(&out),
        size(&fp16)
    );
}

#[test]
fn profile_and_calibration_errors_name_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("e");
    let mula = fixture();
    let run = |extra: &[&str]| {
        let mut args = vec!["--mula", s(&mula), "--out", s(&out)];
        args.extend(extra);
        heart_build(&args)
    };
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[lm]\nprecision = \"fp4\"\ncompute = \"fp16\"\nweights = \"nvfp4\"\nquantize = [\"embeddings\"]\n",
    )
    .unwrap();
    let e = err(&run(&["--profile", s(&bad)]));
    assert!(
        e.contains("bad.toml") && e.contains("`lm.quantize`") && e.contains("`embeddings`"),
        "{e}"
    );
    let e = err(&run(&["--profile", "fp4-w4a4", "--precision", "fp8"]));
    assert!(e.contains("--precision fp8 contradicts profile `fp4-w4a4`"), "{e}");
    let e = err(&run(&["--precision", "fp4", "--calibration", "calibration"]));
    assert!(
        e.contains("--calibration") && e.contains("`fp4` quantizes no activations"),
        "{e}"
    );
    // The tests run in builder/, which has no calibration/ folder.
    let e = err(&run(&["--profile", "fp4-w4a4"]));
    assert!(
        e.contains("needs a calibration prompt set") && e.contains("prompts.toml"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is left behind");
}

#[test]
fn int4_engine_with_an_int8_draft_generates_a_wav_and_int4_drafts_an_fp32_target() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("int4");
    let (mula, codec) = (fixture(), repo("tests/fixtures/tiny-a/heartcodec"));
    let build = |extra: &[&str]| {
        let mut args = vec!["--mula", s(&mula), "--codec", s(&codec), "--out", s(&out)];
        args.extend(extra);
        heart_build(&args)
    };
    let e = err(&build(&["--precision", "int4", "--draft-precision", "int4"]));
    assert!(e.contains("is the target itself"), "{e}");
    ok(&build(&["--precision", "int4", "--draft-precision", "int8"]));

    let m = Manifest::load(&out, Verify::Full).unwrap();
    assert_eq!(m.precision, heart::precision::Precision::Int4);
    assert_eq!(m.build_profile.as_ref().unwrap().name, "int4");
    assert!(m.calibration.is_none(), "weight-only: no calibration");
    let precision = |kind| m.file(kind).unwrap().precision.map(|p| p.as_str());
    assert_eq!(precision(EngineKind::Backbone), Some("int4"));
    assert_eq!(precision(EngineKind::Decoder), Some("int4"));
    assert_eq!(precision(EngineKind::DraftBackbone), Some("int8"));
    assert_eq!(precision(EngineKind::DraftDecoder), Some("int8"));
    // int4 runs heart's int4 kernel, int8 ONNX Runtime's MatMulNBits.
    for (graph, op) in [
        ("backbone.onnx", "MatMulInt4x16"),
        ("decoder.onnx", "MatMulInt4x16"),
        ("draft/decoder.onnx", "MatMulNBits"),
    ] {
        let bytes = std::fs::read(out.join(graph)).unwrap();
        assert!(bytes.windows(op.len()).any(|w| w == op.as_bytes()), "{graph} runs {op}");
    }

    let wav = root.path().join("song.wav");
    let o = Command::new(heart_test_support::bin("heart-run"))
        .args(["--engines", s(&out), "--tags", "piano", "--lyrics", "[verse]\nla la"])
        .args(["--duration", "1", "--seed", "3", "--quiet", "--out", s(&wav)])
        .output()
        .expect("heart-run runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert!(
        !samples.is_empty() && samples.iter().any(|&v| v != 0),
        "audible samples"
    );

    // An int4 draft for an fp32 target (speculative decoding).
    let fp32 = root.path().join("fp32");
    let args = [
        "--mula",
        s(&mula),
        "--precision",
        "fp32",
        "--draft-precision",
        "int4",
        "--out",
        s(&fp32),
    ];
    ok(&heart_build(&args));
    let m = Manifest::load(&fp32, Verify::Full).unwrap();
    assert_eq!(m.precision, heart::precision::Precision::Fp32);
    let draft = m.file(EngineKind::DraftDecoder).unwrap();
    assert_eq!(draft.precision, Some(heart::precision::Precision::Int4));
}

#[test]
fn int_profiles_refuse_fp16_compute_and_static_activations() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("e");
    let bad = root.path().join("int4-fp16.toml");
    let text = std::fs::read_to_string(repo("configs/build/int4.toml")).unwrap();
    std::fs::write(&bad, text.replace("compute = \"fp32\"", "compute = \"fp16\"")).unwrap();
    let e = err(&heart_build(&[
        "--mula",
        s(&fixture()),
        "--profile",
        s(&bad),
        "--out",
        s(&out),
    ]));
    assert!(
        e.contains("int4-fp16.toml") && e.contains("`lm.compute`") && e.contains("MatMulNBits"),
        "{e}"
    );
    std::fs::write(
        &bad,
        text.replace("weights = \"int4\"", "weights = \"int4\"\nactivations = \"fp8\""),
    )
    .unwrap();
    let e = err(&heart_build(&[
        "--mula",
        s(&fixture()),
        "--profile",
        s(&bad),
        "--out",
        s(&out),
    ]));
    assert!(e.contains("`lm.activations`"), "{e}");
    assert!(!out.exists(), "nothing is left behind");
}
