//! `heart-run --speculate K` and `heart-run bench --speculate K` end to end: an
//! engine folder with a draft makes the same greedy song with and without
//! speculation, reports its acceptance figures, and an engine without a draft
//! is refused with a clear error and no output.

use std::path::Path;

use heart_test_support::{bench_json, build, row_names, run};

/// Synthesizes a tiny checkpoint under `root` and builds `with-draft` (fp16
/// draft) and `plain` (no draft) engine folders from it, both with the codec.
fn engines(root: &Path) {
    let ckpt = root.join("ckpt");
    build(&[
        "synth",
        "--size",
        "tiny",
        "--seed",
        "11",
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    let mula = ckpt.join("HeartMuLa-oss-3B");
    let codec = ckpt.join("HeartCodec-oss");
    for (name, extra) in [("with-draft", &["--draft-precision", "fp16"][..]), ("plain", &[][..])] {
        let out = root.join(name);
        let mut args = vec![
            "-q",
            "--mula",
            mula.to_str().unwrap(),
            "--codec",
            codec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        build(&args);
    }
}

/// Runs `heart-run` greedily on `engines` with `extra` flags; returns the exit
/// status, the WAV bytes (if written), the parsed `--json` summary and stderr.
fn song(root: &Path, engines: &str, name: &str, extra: &[&str]) -> (bool, Option<Vec<u8>>, serde_json::Value, String) {
    let out = root.join(name);
    let engines = root.join(engines);
    let mut args = vec![
        "--engines",
        engines.to_str().unwrap(),
        "--tags",
        "piano,happy",
        "--lyrics",
        "[verse]\nla la la",
        "--duration",
        "1.6",
        "--topk",
        "1",
        "--seed",
        "7",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = heart_test_support::run("heart-run", &args);
    let summary = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.success(),
        std::fs::read(&out).ok(),
        summary,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn speculation_makes_the_greedy_song_of_plain_decoding_and_reports_acceptance() {
    let root = tempfile::tempdir().unwrap();
    engines(root.path());

    let (ok, plain_wav, plain, err) = song(root.path(), "with-draft", "plain.wav", &[]);
    assert!(ok, "{err}");
    assert!(plain["speculation"].is_null(), "no speculation unless asked: {plain}");
    for k in ["1", "3"] {
        let (ok, spec_wav, spec, err) = song(root.path(), "with-draft", &format!("spec{k}.wav"), &["--speculate", k]);
        assert!(ok, "K={k}: {err}");
        assert_eq!(spec_wav, plain_wav, "K={k}: greedy speculation changed the song");
        assert_eq!(spec["frames"], plain["frames"]);
        let sp = &spec["speculation"];
        assert_eq!(sp["draft_frames"].as_u64(), Some(k.parse().unwrap()), "{spec}");
        assert!(sp["rounds"].as_u64().unwrap() >= 1);
        assert_eq!(sp["acceptance_per_codebook"].as_array().unwrap().len(), 8);
        let backbone_calls = sp["target_backbone_calls_per_frame"].as_f64().unwrap();
        assert!(backbone_calls > 0.0 && backbone_calls <= 2.0, "{sp}");
    }
}

#[test]
fn speculation_without_a_draft_is_refused_before_any_output() {
    let root = tempfile::tempdir().unwrap();
    engines(root.path());
    let (ok, wav, _, err) = song(root.path(), "plain", "none.wav", &["--speculate"]);
    assert!(!ok);
    assert!(wav.is_none(), "no output file on failure");
    assert!(
        err.contains("has no speculative draft") && err.contains("--draft-precision"),
        "{err}"
    );

    let bench = run(
        "heart-run",
        &[
            "bench",
            "--engines",
            root.path().join("plain").to_str().unwrap(),
            "--speculate",
            "2",
            "--no-codec",
        ],
    );
    assert_eq!(bench.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bench.stderr);
    assert!(
        err.contains("has no speculative draft") && err.contains("--draft-precision"),
        "{err}"
    );
}

#[test]
fn bench_compares_speculation_with_plain_decoding_in_one_run() {
    let root = tempfile::tempdir().unwrap();
    engines(root.path());
    let engines = root.path().join("with-draft");
    let record = bench_json(&[
        "--engines",
        engines.to_str().unwrap(),
        "--no-lm",
        "--no-codec",
        "--speculate",
        "2,4",
        "--spec-frames",
        "6",
        "--prompt-tokens",
        "8",
    ]);
    let spec = &record["speculation"];
    assert!(spec["plain"]["frames"].as_u64().unwrap() >= 1, "{spec}");
    assert!(spec["draft_alone"]["frames"].as_u64().unwrap() >= 1);
    let runs = spec["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, k) in runs.iter().zip([2, 4]) {
        assert_eq!(run["draft_frames"], k);
        assert!(run["speedup"].as_f64().unwrap() > 0.0);
        assert!(run["run"]["frames"].as_u64().unwrap() >= 1);
    }
    let names = row_names(&record);
    for expected in ["plain decoding (target)", "draft alone", "speculate K=4 speed-up"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("lm frame")),
        "--no-lm skips the frame rows: {names:?}"
    );
}
