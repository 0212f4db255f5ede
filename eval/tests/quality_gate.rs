//! The FP8/FP4/int quality gate CI runs: `heart-build` (the real binary) builds
//! fp16, fp8 (W8A8, calibrated), fp4 (W4A16), fp4-w4a4 (W4A4, calibrated),
//! int8 (`MatMulNBits`), int4 and int4-heads (heart's int4 kernel; f32 compute) engines from a
//! synthesized tiny checkpoint, its `--realistic` variant and the tiny-a
//! fixture;
//! `heart-eval ab` (its `status` entry point, in-process) compares each with
//! the fp16 engine under the budgets `configs/ab-thresholds.toml` records for
//! these two models and must pass; an engine judged by a stricter budget
//! (int4-heads by fp8's) must fail; an fp4 engine of a different-seed
//! checkpoint has no budget there and must get no verdict. The quantized
//! engines also generate through the runtime's frame loop. The measured
//! figures behind the budgets are in that file.

use std::path::{Path, PathBuf};
use std::process::Command;

use heart::manifest::{Manifest, Verify};
use heart_backend::SessionConfig;
use heart_runtime::lm::{GenParams, HeartMula, Prompt, SamplerParams, Sampling, SeededNoise, generate};

fn repo(rel: &str) -> PathBuf {
    heart_test_support::workspace_root().join(rel)
}

fn heart_build(args: &[&str]) {
    let o = Command::new(heart_test_support::bin("heart-build"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("heart-build runs");
    assert!(
        o.status.success(),
        "heart-build {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds `profile` from checkpoint `mula` into `out` (calibrating when the profile needs it).
fn build(mula: &Path, profile: &str, out: &Path) {
    let mut args = vec!["--mula", s(mula), "--profile", profile, "--out", s(out), "--layer-taps"];
    let calibration = repo("calibration");
    if matches!(profile, "fp8" | "fp4-w4a4") {
        args.extend(["--calibration", s(&calibration)]);
    }
    heart_build(&args);
}

/// Runs `heart-eval ab` in-process with the CI settings; returns the exit
/// status and the report.
fn ab(a: &Path, b: &Path, extra: &[&str], report: &Path) -> (u8, serde_json::Value) {
    let calibration = repo("calibration");
    let thresholds = repo("configs/ab-thresholds.toml");
    let mut args = vec![
        "heart-eval",
        "ab",
        "--a",
        s(a),
        "--b",
        s(b),
        "--prompts",
        s(&calibration),
        "--max-prompts",
        "12",
        "--frames",
        "8",
        "--topk",
        "20",
        "--thresholds",
        s(&thresholds),
        "--report",
        s(report),
    ];
    args.extend(extra);
    let status = heart_eval::cli::status(args);
    let json = std::fs::read(report.join("report.json")).expect("report.json written");
    (status, serde_json::from_slice(&json).unwrap())
}

/// The worst codebook's measures, for failure messages.
fn summary(r: &serde_json::Value) -> String {
    let checks: Vec<String> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}={} (limit {}, pass {})", c["key"], c["value"], c["limit"], c["pass"]))
        .collect();
    checks.join("; ")
}

/// Opens a quantized engine with the runtime and generates a few frames.
fn generates(engine: &Path) {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let m = Manifest::load(engine, Verify::Full).unwrap();
    let mut lm = HeartMula::open(&rt, engine, &m.model, &m.gen_config, &SessionConfig::default()).unwrap();
    let tokenizer = heart::prompt::TextTokenizer::from_file(&engine.join(heart::engine::TOKENIZER)).unwrap();
    let builder = heart::prompt::PromptBuilder::new(&tokenizer, m.gen_config, m.model.audio_num_codebooks);
    let prompt = Prompt::from(&builder.build("pop, piano", "[Verse]\nla la la", 1.5).unwrap());
    let mut noise = SeededNoise::new(0);
    let mut picker = Sampling {
        params: SamplerParams {
            temperature: 1.0,
            top_k: 10,
        },
        noise: &mut noise,
    };
    let params = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: 4 * 80,
    };
    let g = generate(&mut lm, &prompt, &params, &mut picker, &mut |_| {}).unwrap();
    assert!(!g.frames.is_empty(), "{}", engine.display());
    assert!(
        g.frames
            .iter()
            .flatten()
            .all(|&c| (0..m.model.audio_vocab_size as i64).contains(&c))
    );
}

#[test]
fn quantized_engines_of_a_synthesized_checkpoint_pass_the_gate_and_a_broken_one_fails() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    for seed in ["0", "1"] {
        let out = p(&format!("ckpt{seed}"));
        heart_build(&["synth", "--size", "tiny", "--seed", seed, "--out", s(&out)]);
    }
    let mula = |seed: &str| p(&format!("ckpt{seed}")).join("HeartMuLa-oss-3B");
    for profile in ["fp16", "fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        build(&mula("0"), profile, &p(profile));
    }
    build(&mula("1"), "fp4", &p("fp4-other-seed"));

    for profile in ["fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        generates(&p(profile));
        let (status, r) = ab(&p("fp16"), &p(profile), &[], &p(&format!("report-{profile}")));
        println!("synth {profile}: {}", summary(&r));
        let gate = format!("synth-tiny-seed0.{profile}");
        assert_eq!(r["gate"], gate.as_str(), "the model's budget for B's profile");
        assert_eq!(status, 0, "{profile} fails its gate: {}", summary(&r));
        assert_eq!(r["checks"].as_array().unwrap().len(), 4);
    }
    // int4-heads costs more than fp8's budget allows.
    let (status, r) = ab(&p("fp16"), &p("int4-heads"), &["--gate", "fp8"], &p("report-strict"));
    println!("synth int4-heads under the fp8 budget: {}", summary(&r));
    assert_eq!(r["gate"], "synth-tiny-seed0.fp8");
    assert_eq!(status, 1, "a budget must be able to fail: {}", summary(&r));
    // fp4's cost relative to fp8 on the same model.
    let fp8 = p("fp8");
    let (status, r) = ab(&p("fp16"), &p("fp4"), &["--fp8", s(&fp8)], &p("report-relative"));
    assert_eq!(status, 0);
    let rel = &r["relative_to_fp8"];
    println!("synth fp4 relative to fp8: {rel}");
    assert!(
        rel["kl_ratio"].as_f64().unwrap() > 1.0,
        "fp4 costs more KL than fp8: {rel}"
    );
    assert!(rel["top1_loss_ratio"].as_f64().unwrap() > 1.0, "{rel}");
    // A checkpoint the budgets were not measured on: reported, not gated.
    let (status, r) = ab(&p("fp16"), &p("fp4-other-seed"), &[], &p("report-unknown"));
    println!("synth fp4 of another checkpoint: {}", r["budget"]);
    assert_eq!(status, 0, "no budget, no verdict");
    assert_eq!(r["gate"], serde_json::Value::Null);
    assert!(r["checks"].as_array().unwrap().is_empty());
    assert!(
        r["budget"].as_str().unwrap().contains("no budget for this model"),
        "{}",
        r["budget"]
    );
}

#[test]
fn quantized_engines_of_the_fixture_pass_their_gates() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let mula = repo("tests/fixtures/tiny-a/heartmula");
    for profile in ["fp16", "fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        build(&mula, profile, &p(profile));
    }
    for profile in ["fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        let gate = format!("tiny-a.{profile}");
        let (status, r) = ab(&p("fp16"), &p(profile), &[], &p(&format!("report-{profile}")));
        println!("tiny-a {profile}: {}", summary(&r));
        assert_eq!(r["gate"], gate.as_str(), "the fixture's own budget");
        assert_eq!(status, 0, "{profile} fails {gate}: {}", summary(&r));
    }
}

#[test]
fn quantized_engines_of_the_realistic_model_pass_their_budgets() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let out = p("ckpt");
    heart_build(&[
        "synth",
        "--size",
        "tiny",
        "--seed",
        "0",
        "--realistic",
        "--out",
        s(&out),
    ]);
    let mula = out.join("HeartMuLa-oss-3B");
    for profile in ["fp16", "fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        build(&mula, profile, &p(profile));
    }
    for profile in ["fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"] {
        let gate = format!("synth-tiny-realistic-seed0.{profile}");
        let (status, r) = ab(&p("fp16"), &p(profile), &[], &p(&format!("report-{profile}")));
        println!("realistic {profile}: {}", summary(&r));
        assert_eq!(r["gate"], gate.as_str(), "the realistic model's own budget");
        assert_eq!(status, 0, "{profile} fails {gate}: {}", summary(&r));
    }
}
