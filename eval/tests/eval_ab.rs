//! `heart-eval ab` on engines heart-build's library builds from the tiny-a fixture: an engine
//! against itself is perfect in every measure; with codecs, the audio of
//! identical codes is compared (bit-identical for one codec, a finite SNR for
//! an fp16 codec against fp32); the real binary's exit status
//! follows the gate (0 pass, 1 a check failed, 2 an error) and a deliberately
//! broken engine (activation scales clipped to 1/50 of their range) fails; an
//! int8 codec passes the `codec-int8` gate, which the fp32 codec at fewer
//! Euler steps fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_build::cli::BuildArgs;
use heart_build::profile::Profile;
use heart_eval::ab::{AbOptions, run_ab};
use heart_runtime::lm::SamplerParams;
use onnx_export::linears::Activations;
use onnx_export::lm::QuantFormat;

fn calibration() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../calibration")
}

/// Builds the fixture's LM with `profile` (and layer taps) into `dir` through
/// heart-build's library.
fn engine(dir: &Path, profile: &Profile) {
    engine_with_codec(dir, profile, None);
}

/// [`engine`], plus the fixture's codec at `codec` when given.
fn engine_with_codec(dir: &Path, profile: &Profile, codec: Option<Precision>) {
    let mut args = BuildArgs::new(heart_test_support::fixture_mula(), dir);
    args.layer_taps = true;
    if let Some(precision) = codec {
        args.input.codec = Some(heart_test_support::fixture().join("heartcodec"));
        args.codec_precision = precision;
    }
    heart_build::pipeline::build(&args, profile, None, true).unwrap();
}

/// The A/B of `b` against `a` on the first `prompts` calibration prompts,
/// `frames` frames each, seed 0, top-k 5, both codecs at 10 Euler steps.
fn ab_options(a: PathBuf, b: PathBuf, prompts: usize, frames: usize) -> AbOptions {
    AbOptions {
        a,
        b,
        prompts: calibration(),
        max_prompts: Some(prompts),
        frames,
        cfg_scale: 1.5,
        sampler: SamplerParams {
            temperature: 1.0,
            top_k: 5,
        },
        seed: 0,
        sessions: SessionConfig::default(),
        flow_steps: 10,
        b_flow_steps: None,
    }
}

/// The built-in profile of `precision`.
fn dense(precision: Precision) -> Profile {
    Profile::resolve(None, Some(precision)).unwrap()
}

/// The fp4 profile with every activation quantized at amax `amax` (no
/// calibration run); recorded as profile `fp4`, so gated as fp4.
fn w4a4(amax: f32) -> Profile {
    let (cfg, _) = heart_test_support::mula_configs();
    let mut names = vec!["projection".to_string()];
    for (stack, n) in [
        ("backbone", cfg.backbone.num_layers),
        ("decoder", cfg.decoder.num_layers),
    ] {
        for i in 0..n {
            for l in [
                "attn.q_proj",
                "attn.k_proj",
                "attn.v_proj",
                "attn.output_proj",
                "mlp.w1",
                "mlp.w2",
                "mlp.w3",
            ] {
                names.push(format!("{stack}.layers.{i}.{l}"));
            }
        }
    }
    let mut profile = dense(Precision::Fp4);
    let plan = profile.options.quant.as_mut().expect("fp4 quantizes weights");
    plan.activations = Some(Activations {
        format: QuantFormat::Nvfp4,
        amax: names.into_iter().map(|n| (n, amax)).collect(),
    });
    profile
}

#[test]
fn an_engine_against_itself_is_perfect() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    engine(&a, &dense(Precision::Fp32));
    engine(&b, &dense(Precision::Fp32));
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let opts = ab_options(a, b, 4, 4);
    let r = run_ab(&rt, &opts).unwrap();
    assert_eq!(r.prompts, 3);
    assert_eq!(
        r.skipped.len(),
        1,
        "the first prompt is longer than tiny-a's 512 positions"
    );
    assert!(r.skipped[0].reason.contains("max_seq_len 512"), "{:?}", r.skipped);
    assert!(r.frames >= 3, "{} frames", r.frames);
    assert_eq!(r.codebooks.len(), 8);
    for c in &r.codebooks {
        assert_eq!(c.top1_agreement, 1.0);
        assert!(c.kl.max < 1e-9, "codebook {}: KL {}", c.codebook, c.kl.max);
        assert!(c.cosine.min > 1.0 - 1e-12);
    }
    assert_eq!(r.hidden_rel_error.max, 0.0);
    let layers = r.layers.as_ref().expect("both engines have layer taps");
    assert_eq!((layers.backbone.len(), layers.decoder.len()), (3, 2));
    assert!(
        layers
            .backbone
            .iter()
            .chain(&layers.decoder)
            .all(|l| l.max == 0.0 && l.count > 0)
    );
    assert_eq!((r.greedy.agreement, r.greedy.identical_prompts), (1.0, 3));
    assert!(r.same_checkpoint);
}

fn heart_eval(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_heart-eval"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exit_status_follows_the_gate_and_a_broken_engine_fails() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    engine(&p("fp32"), &dense(Precision::Fp32));
    engine(&p("fp16"), &dense(Precision::Fp16));
    engine(&p("broken"), &w4a4(0.05));
    let thresholds = p("thresholds.toml");
    std::fs::write(
        &thresholds,
        "[gate.fp16]\nmin_top1_agreement = 0.9\nmax_kl = 0.01\nmin_cosine = 0.999\nmax_hidden_rel_error = 0.01\n\
         [gate.fp4]\nmin_top1_agreement = 0.5\nmax_kl = 0.2\nmin_cosine = 0.9\n",
    )
    .unwrap();
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let args = |b: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["ab", "--a", &s(&p("fp32")), "--b", &s(&p(b))]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(
            [
                "--prompts",
                &s(&calibration()),
                "--max-prompts",
                "2",
                "--frames",
                "4",
                "--topk",
                "5",
                "--thresholds",
                &s(&thresholds),
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |b: &str, extra: &[&str]| {
        let a = args(b, extra);
        heart_eval(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let (code, out, err) = run("fp16", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("gate `fp16`: PASS"), "{out}");

    let report = p("report");
    let (code, out, _) = run("broken", &["--report", &s(&report)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gate `fp4`: FAIL"), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["pass"], false);
    assert!(
        json["checks"].as_array().unwrap().iter().any(|c| c["pass"] == false),
        "a failing check is recorded"
    );
    assert_report_plots(&report, &json);

    let (code, _, err) = run("fp16", &["--gate", "fp9"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no [gate.fp9]") && err.contains("thresholds.toml"),
        "{err}"
    );
    let (code, _, err) = run("nowhere", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nowhere does not exist: build one with `heart-build"),
        "{err}"
    );
}

/// Width and height from a PNG's signature and IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The report folder has the plots, each a whole PNG of the plots' size
/// that is not blank, named by `report.json` and shown by `report.md`.
fn assert_report_plots(dir: &Path, json: &serde_json::Value) {
    use heart_eval::plots::{CODEBOOK_AGREEMENT, GREEDY_AGREEMENT, PER_LAYER_ERROR, SIZE};
    let want = [PER_LAYER_ERROR, CODEBOOK_AGREEMENT, GREEDY_AGREEMENT];
    assert_eq!(json["plots"], serde_json::json!(want), "report.json lists the plots");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for file in want {
        assert!(md.contains(&format!("]({file})")), "report.md shows {file}:\n{md}");
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(png_size(&bytes), SIZE, "{file}");
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!(
            (info.width, info.height, info.color_type),
            (SIZE.0, SIZE.1, png::ColorType::Rgb)
        );
        let dark = rgb.chunks(3).filter(|p| p.iter().all(|&c| c < 100)).count();
        assert!(dark > 1000, "{file}: {dark} dark pixels (text and axes)");
    }
}

#[test]
fn audio_of_identical_codes_is_compared_when_both_have_a_codec() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let lm = dense(Precision::Fp32);
    engine_with_codec(&p("a"), &lm, Some(Precision::Fp32));
    engine_with_codec(&p("same"), &lm, Some(Precision::Fp32));
    engine_with_codec(&p("fp16-codec"), &lm, Some(Precision::Fp16));
    engine(&p("no-codec"), &lm);
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let opts = |b: &str| ab_options(p("a"), p(b), 3, 3);
    let same = run_ab(&rt, &opts("same")).unwrap();
    assert_eq!(
        same.audio_identical, same.prompts,
        "one codec, one noise: identical audio"
    );
    assert_eq!(same.measured().snr_db, Some(f64::INFINITY));
    let fp16 = run_ab(&rt, &opts("fp16-codec")).unwrap();
    let snr = fp16.audio_snr_db.expect("both folders have a codec");
    println!("fp16 codec vs fp32: SNR mean {:.2} dB, min {:.2} dB", snr.mean, snr.min);
    assert_eq!(snr.count, fp16.prompts);
    assert!(snr.min > 10.0 && snr.min.is_finite(), "{snr:?}");
    assert_eq!(fp16.codebooks[0].top1_agreement, 1.0, "the LM graphs are identical");
    let none = run_ab(&rt, &opts("no-codec")).unwrap();
    assert_eq!(none.audio_snr_db, None);
    assert_eq!(none.measured().snr_db, None, "an SNR gate fails without codecs");
}

#[test]
fn an_int8_codec_passes_its_gate_and_fewer_euler_steps_are_measured() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let lm = dense(Precision::Fp32);
    engine_with_codec(&p("a"), &lm, Some(Precision::Fp32));
    engine_with_codec(&p("int8"), &lm, Some(Precision::Int8));
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let opts = |b: &str, b_steps: usize| AbOptions {
        b_flow_steps: Some(b_steps),
        ..ab_options(p("a"), p(b), 4, 8)
    };
    let thresholds = heart_test_support::workspace_root().join("configs/ab-thresholds.toml");
    let weights = heart::manifest::sha256_file(&heart_test_support::fixture_mula().join("model.safetensors")).unwrap();
    let heart_eval::budget::Budget::Gate { gate, .. } = heart_eval::budget::Budgets::load(&thresholds)
        .unwrap()
        .lookup(&[weights.as_str()], "codec-int8", true)
        .unwrap()
    else {
        panic!("the tiny-a model has a codec-int8 budget in {}", thresholds.display());
    };
    let mut verdicts = Vec::new();
    for (b, steps) in [("int8", 10), ("a", 6), ("a", 4), ("a", 1)] {
        let r = run_ab(&rt, &opts(b, steps)).unwrap();
        let m = r.measured();
        println!(
            "codec {b} at {steps} steps vs fp32 at 10: SNR min {:.2} dB, log-mel max {:.3} dB, MR-STFT max {:.4}",
            m.snr_db.unwrap(),
            m.log_mel_db.unwrap(),
            m.mr_stft.unwrap()
        );
        assert!(
            m.log_mel_db.unwrap() > 0.0 && m.mr_stft.unwrap() > 0.0,
            "{b} {steps}: audio differs"
        );
        verdicts.push(gate.check(&m).iter().all(|c| c.pass));
    }
    assert_eq!(
        verdicts,
        [true, false, false, false],
        "the int8 codec passes its gate; the fp32 codec at 6, 4 or 1 steps does not"
    );
}
