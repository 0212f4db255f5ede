//! End to end through the real binaries: engines built by `heart-build` from the
//! bundled fixture pass every conformance case, and `heart-run` turns tags +
//! lyrics into a deterministic WAV.

use std::path::Path;

use heart_test_support::{bench_json, build, row_names, run, synth_tiny_engines};

use heart_conform::{ConformContext, Verdict};

use heart_test_support::fixture;

fn build_fixture_engines(out: &Path, precision: &str) {
    let f = fixture();
    build(&[
        "-q",
        "--mula",
        f.join("heartmula").to_str().unwrap(),
        "--codec",
        f.join("heartcodec").to_str().unwrap(),
        "--precision",
        precision,
        "--out",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn every_fixture_case_passes_on_built_engines_at_fp32_and_fp16() {
    let root = tempfile::tempdir().unwrap();
    for precision in ["fp32", "fp16"] {
        let engines = root.path().join(precision);
        build_fixture_engines(&engines, precision);
        let mut ctx = ConformContext::open(&fixture())
            .unwrap()
            .with_engines(&engines)
            .unwrap();
        let mut log = Vec::new();
        let report = heart_conform::run(&mut ctx, None, &mut log).unwrap();
        let log = String::from_utf8(log).unwrap();
        let n = ctx.fixture.cases().len();
        assert!(n >= 23, "the fixture has all kinds");
        assert!(
            report.cases.iter().all(|c| c.outcome.verdict == Verdict::Pass),
            "{precision}:\n{log}"
        );
        assert!(log.ends_with(&format!("{n} passed, 0 failed, 0 skipped\n")), "{log}");
    }
}

#[test]
fn engines_from_another_checkpoint_are_refused_by_conformance() {
    let root = tempfile::tempdir().unwrap();
    let ckpt = root.path().join("ckpt");
    build(&["synth", "--size", "tiny", "--out", ckpt.to_str().unwrap()]);
    let engines = root.path().join("engines");
    build(&[
        "-q",
        "--mula",
        ckpt.join("HeartMuLa-oss-3B").to_str().unwrap(),
        "--out",
        engines.to_str().unwrap(),
    ]);
    let mut ctx = ConformContext::open(&fixture())
        .unwrap()
        .with_engines(&engines)
        .unwrap();
    let mut log = Vec::new();
    let report = heart_conform::run(&mut ctx, Some("teacher_forced_cfg1"), &mut log).unwrap();
    assert!(!report.success());
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("was not built from this fixture's checkpoint"), "{log}");
}

#[test]
fn heart_run_makes_a_deterministic_song_from_tags_and_lyrics() {
    let root = tempfile::tempdir().unwrap();
    let engines = synth_tiny_engines(root.path());
    let lyrics = root.path().join("lyrics.txt");
    std::fs::write(&lyrics, "[verse]\nla la la\n[chorus]\noh oh\n").unwrap();
    let song = |name: &str, seed: &str| {
        let out = root.path().join(name);
        let o = run(
            "heart-run",
            &[
                "--engines",
                engines.to_str().unwrap(),
                "--tags",
                "Piano, Happy",
                "--lyrics-file",
                lyrics.to_str().unwrap(),
                "--duration",
                "2",
                "--topk",
                "5",
                "--seed",
                seed,
                "--json",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
        (std::fs::read(&out).unwrap(), summary, out)
    };
    let (a, summary, path) = song("a.wav", "42");
    let (b, summary_b, _) = song("b.wav", "42");
    let (c, summary_c, _) = song("c.wav", "43");
    assert_eq!(a, b, "same inputs and seed give a byte-identical WAV");
    assert_ne!(a, c, "another seed gives another song");
    let digest = summary["codes_sha256"].as_str().unwrap();
    assert!(
        digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(summary_b["codes_sha256"], summary["codes_sha256"]);
    assert_ne!(summary_c["codes_sha256"], summary["codes_sha256"]);
    assert_eq!(
        summary["lm_loop"], "host",
        "the CPU backend keeps the caches on the host"
    );

    let reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 300, 16));
    let frames = summary["frames"].as_u64().unwrap();
    assert!(
        (1..=26).contains(&frames),
        "at most 2 s / 80 ms + 1 frames, got {frames}"
    );
    let expected = (frames as f64 / 12.5 * 300.0) as u32;
    assert_eq!(reader.duration(), expected, "exact duration for {frames} frames");
    assert_eq!(summary["seed"], 42);
    assert_eq!(summary["sample_rate"], 300);
}

#[test]
fn heart_run_explains_missing_or_broken_engines() {
    let o = heart_test_support::run("heart-run", &["--tags", "x", "--lyrics", "y"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no --engines folder given") && err.contains("heart-build synth"),
        "{err}"
    );

    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("x.wav");
    let o = run(
        "heart-run",
        &[
            "--engines",
            root.path().to_str().unwrap(),
            "--tags",
            "x",
            "--lyrics",
            "y",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("manifest.toml"), "{err}");
    assert!(!out.exists(), "no output on failure");

    let engines = root.path().join("engines");
    build_fixture_engines(&engines, "fp32");
    let graph = engines.join("decoder.onnx");
    let mut bytes = std::fs::read(&graph).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&graph, bytes).unwrap();
    let o = run(
        "heart-run",
        &[
            "--engines",
            engines.to_str().unwrap(),
            "--tags",
            "x",
            "--lyrics",
            "y",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`decoder.onnx` has SHA-256"), "{err}");
    assert!(!out.exists());

    let o = run(
        "heart-run",
        &["--engines", "x", "--tags", "x", "--lyrics", "y", "--out", "song.mp3"],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a .wav file name"));
}

#[test]
fn heart_run_bench_reports_every_figure() {
    let root = tempfile::tempdir().unwrap();
    let engines = root.path().join("engines");
    build_fixture_engines(&engines, "fp32");
    let record = bench_json(&[
        "--engines",
        engines.to_str().unwrap(),
        "--frames",
        "2",
        "--repeat",
        "1",
        "--prompt-tokens",
        "8",
        "--positions",
        "0,100",
    ]);
    let names = row_names(&record);
    for expected in [
        "prefill 8 tokens",
        "lm backbone step @ pos 0",
        "lm decoder frame @ pos 100",
        "lm frames/s @ pos 100",
        "codec estimator step",
        "codec decode window",
        "codec real-time factor",
        "peak resident memory",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert_eq!(record["engine"]["precision"], "fp32");
    assert!(record["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(record["bandwidth"]["read_gb_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn heart_run_bad_inputs_fail_with_one_clear_line_and_no_output() {
    let root = tempfile::tempdir().unwrap();
    let engines = root.path().join("engines");
    build_fixture_engines(&engines, "fp32");
    let e = engines.to_str().unwrap();
    let out = root.path().join("song.wav");
    let o = out.to_str().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = root.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = file("empty.txt", b"");
    let latin1 = file("latin1.txt", b"caf\xe9");
    let long = file("long.txt", "la ".repeat(400).as_bytes());
    let missing = root.path().join("nope.txt").to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tags", "x", "--lyrics-file", &empty], "the file is empty"),
        (vec!["--tags", "x", "--lyrics-file", &latin1], "not UTF-8 text"),
        (vec!["--tags-file", &missing, "--lyrics", "y"], "nope.txt"),
        (vec!["--tags", "x", "--lyrics", "y", "--preset", "nope"], "nope.toml"),
        (
            vec!["--tags", "x", "--lyrics", "y", "--duration", "0"],
            "--duration 0: expected a positive number",
        ),
        (vec!["--tags", "x", "--lyrics", "y", "--duration", "60"], "at most"),
        (vec!["--tags", "x", "--lyrics-file", &long], "shorten them by at least"),
        (
            vec!["--tags", "x", "--lyrics", "y", "--topk", "0"],
            "--topk 0: expected at least 1",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--engines", e, "--out", o];
        all.extend(args.iter().copied());
        let r = heart_test_support::run("heart-run", &all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: expected `{expected}` in: {err}");
        assert!(!out.exists(), "{args:?} left an output file");
    }

    let r = run(
        "heart-run",
        &[
            "--engines",
            e,
            "--tags",
            "x",
            "--lyrics",
            "y",
            "--out",
            "/proc/nope/song.wav",
        ],
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot write there"));

    let manifest = engines.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("format_version = 1", "format_version = 99")).unwrap();
    let r = run(
        "heart-run",
        &["--engines", e, "--tags", "x", "--lyrics", "y", "--out", o],
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("engine format version 99 is not supported"));
    std::fs::write(&manifest, text).unwrap();
    std::fs::remove_file(engines.join("lm_tables.safetensors")).unwrap();
    let r = run(
        "heart-run",
        &["--engines", e, "--tags", "x", "--lyrics", "y", "--out", o],
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("lm_tables.safetensors"));
    assert!(!out.exists());
}
