//! `heart-build` with a speculative-decoding draft, end to end: synthesize a
//! checkpoint, build an fp32 engine with an fp16 or early-exit draft in
//! `draft/`, check the manifest, then decode greedily with and without
//! speculation through the runtime and compare.

use std::path::Path;
use std::process::Output;

use heart_test_support::stderr;

use heart::manifest::{EngineKind, Manifest, Verify};
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::{
    GenParams, HeartMula, Prompt, SamplerParams, Sampling, SeededNoise, SpecParams, generate, generate_speculative,
};

fn heart_build(args: &[&str]) -> Output {
    heart_test_support::run("heart-build", args)
}

/// Builds `<root>/<name>` from the synthesized checkpoint with extra flags.
fn build(root: &Path, name: &str, extra: &[&str]) -> Output {
    let mula = root.join("ckpt/HeartMuLa-oss-3B");
    let out = root.join(name);
    let mut args = vec!["--mula", mula.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    heart_build(&args)
}

/// Greedy frames with and without speculation on the engine at `dir`.
fn greedy_both(dir: &Path, m: &Manifest, seed: u64) -> (Vec<Vec<i64>>, Vec<Vec<i64>>, f64) {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let sessions = SessionConfig::default();
    let mut target = HeartMula::open(&rt, dir, &m.model, &m.gen_config, &sessions).unwrap();
    let mut draft = HeartMula::open_draft(&rt, dir, &m.model, &m.gen_config, &sessions).unwrap();
    let prompt = Prompt::from_text(&[320, 60, 61, 62, 321, 0, 320, 70, 71, 72, 73, 321], 5);
    let sampler = SamplerParams {
        temperature: 1.0,
        top_k: 1,
    };
    let params = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: 20 * 80,
    };
    let mut noise = SeededNoise::new(seed);
    let mut picker = Sampling {
        params: sampler,
        noise: &mut noise,
    };
    let plain = generate(&mut target, &prompt, &params, &mut picker, &mut |_| {}).unwrap();
    let spec = SpecParams {
        generation: params,
        sampler,
        draft_frames: 3,
    };
    let out = generate_speculative(&mut target, &mut draft, &prompt, &spec, &mut noise, &mut |_| {}).unwrap();
    let rates = out.stats.acceptance_rates();
    (plain.frames, out.generation.frames, rates[0])
}

#[test]
fn drafts_are_built_into_draft_and_decode_like_the_target() {
    let root = tempfile::tempdir().unwrap();
    let ckpt = root.path().join("ckpt");
    let o = heart_build(&[
        "synth",
        "--size",
        "tiny",
        "--seed",
        "3",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    for (name, flags, precision) in [
        ("fp16", vec!["--draft-precision", "fp16"], Precision::Fp16),
        (
            "early",
            vec!["--draft-backbone-layers", "1", "--draft-decoder-layers", "1"],
            Precision::Fp32,
        ),
    ] {
        let o = build(root.path(), name, &flags);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("speculative-decoding draft in draft/"));
        let dir = root.path().join(name);
        let m = Manifest::load(&dir, Verify::Full).unwrap();
        for kind in [EngineKind::DraftBackbone, EngineKind::DraftDecoder] {
            let f = m.file(kind).unwrap_or_else(|| panic!("{name}: no {kind:?}"));
            assert!(f.path.starts_with("draft/"), "{}", f.path);
            assert_eq!(f.precision, Some(precision), "{name} {kind:?}");
        }
        assert_eq!(m.file(EngineKind::Backbone).unwrap().path, "backbone.onnx");
        assert_eq!(m.precision, Precision::Fp32);

        let (plain, spec, c0_rate) = greedy_both(&dir, &m, 5);
        assert_eq!(plain, spec, "{name}: speculation changed greedy output");
        assert_eq!(plain.len(), 21);
        if name == "fp16" {
            assert!(c0_rate > 0.9, "fp16 draft of fp32: c0 acceptance {c0_rate}");
        }
    }
}

#[test]
fn pointless_drafts_are_refused_before_writing() {
    let root = tempfile::tempdir().unwrap();
    let ckpt = root.path().join("ckpt");
    let o = heart_build(&["synth", "--size", "tiny", "--out", ckpt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build(root.path(), "same", &["--draft-precision", "fp32"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the target itself"), "{}", stderr(&o));
    let o = build(root.path(), "deep", &["--draft-backbone-layers", "99"]);
    assert!(stderr(&o).contains("--draft-backbone-layers 99"), "{}", stderr(&o));
    assert!(!root.path().join("same").exists() && !root.path().join("deep").exists());
}
