//! Every codec case of the `tiny-a` fixture passes at the README's tolerances from
//! an engine folder exported from the fixture's HeartCodec checkpoint.

use std::path::PathBuf;
use std::sync::OnceLock;

use heart::layout::CodecCheckpoint;
use heart::precision::Precision;
use heart_conform::Verdict;
use heart_conform::codec::{self as conform, Check};
use heart_runtime::codec::Codec;

use heart_test_support::fixture_set as fixture;

/// One engine folder per test binary, exported from the validated fixture checkpoint.
fn engine() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let codec = CodecCheckpoint::discover_and_open(&fixture().codec_dir()).unwrap();
        onnx_export::codec::export_codec(&codec.checkpoint, &codec.config, Precision::Fp32, dir.path()).unwrap();
        dir
    })
    .path()
    .to_path_buf()
}

fn open() -> Codec {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    Codec::open(&rt, &engine()).unwrap()
}

fn assert_all_pass(checks: &[Check]) {
    for c in checks {
        println!(
            "{:<58} max_abs_err {:.3e}  (atol {:.0e}, rtol {:.0e})  {}",
            c.name,
            c.max_abs_err,
            c.atol,
            c.rtol,
            if c.passed { "ok" } else { "FAIL" }
        );
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

#[test]
fn rvq_conditioning_matches() {
    let f = fixture();
    let checks = conform::check_rvq(&open(), &f, f.case("codec_rvq").unwrap()).unwrap();
    assert_eq!(checks.len(), 3);
    assert_all_pass(&checks);
}

#[test]
fn estimator_matches() {
    let f = fixture();
    assert_all_pass(&conform::check_estimator(&mut open(), &f, f.case("codec_estimator").unwrap()).unwrap());
}

#[test]
fn scalar_decoder_matches() {
    let f = fixture();
    assert_all_pass(&conform::check_scalar_decode(&mut open(), &f, f.case("codec_scalar_decode").unwrap()).unwrap());
}

fn detokenize_case(name: &str) {
    let f = fixture();
    let checks = conform::check_detokenize(&mut open(), &f, f.case(name).unwrap()).unwrap();
    assert_eq!(checks.len(), 10);
    assert_all_pass(&checks);
}

#[test]
fn detokenize_t40_steps10() {
    detokenize_case("codec_detok_T40_steps10");
}

#[test]
fn detokenize_t40_steps4() {
    detokenize_case("codec_detok_T40_steps4");
}

#[test]
fn detokenize_t40_steps10_without_guidance() {
    detokenize_case("codec_detok_T40_steps10_guid1");
}

#[test]
fn detokenize_t25_repeat_padded() {
    detokenize_case("codec_detok_T25_steps10");
}

#[test]
fn detokenize_t400_two_windows() {
    detokenize_case("codec_detok_T400_steps10_2seg");
}

#[test]
fn every_codec_case_passes_through_the_harness_entry() {
    let f = fixture();
    let mut codec = open();
    let codec_cases: Vec<_> = f.cases().iter().filter(|c| c.kind.starts_with("codec_")).collect();
    assert_eq!(codec_cases.len(), 8);
    for case in codec_cases {
        let o = conform::run(&mut codec, &f, case).unwrap();
        assert_eq!(o.verdict, Verdict::Pass, "{}: {}", case.name, o.detail);
    }
    let text_case = f.cases().iter().find(|c| c.kind == "prompt").unwrap();
    let err = conform::run(&mut codec, &f, text_case).unwrap_err();
    assert!(err.to_string().contains("is not a codec kind"), "{err}");
}
