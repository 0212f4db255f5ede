//! Every codec case of the `tiny-a` fixture passes at the README's tolerances from
//! an engine folder exported from the fixture's HeartCodec checkpoint.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use heart::checkpoint::Checkpoint;
use heart::config::CodecConfig;
use heart::precision::Precision;
use heart_runtime::codec::Codec;
use heart_runtime::conform::codec::{self as conform, CaseTensors, Check};

const FIXTURE: &str = "/work/shared/fixtures/tiny-a";

/// One exported engine folder per test binary (and precision).
fn engine(precision: Precision) -> PathBuf {
    static FP32: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FP16: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = if precision == Precision::Fp16 { &FP16 } else { &FP32 };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(FIXTURE).join("heartcodec");
        let ckpt = Checkpoint::open(&src).unwrap();
        let cfg = CodecConfig::from_file(&src.join("config.json")).unwrap();
        onnx_export::codec::export_codec(&ckpt, &cfg, precision, dir.path()).unwrap();
        dir
    })
    .path()
    .to_path_buf()
}

fn open(precision: Precision) -> Codec {
    let rt = heart_runtime::ort_env::init(None).expect("run scripts/setup-ort.sh first");
    Codec::open(&rt, &engine(precision)).unwrap()
}

fn case(name: &str) -> CaseTensors {
    CaseTensors::load(&Path::new(FIXTURE).join("cases").join(format!("{name}.safetensors"))).unwrap()
}

fn info(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("cases/cases.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = all["cases"].as_array().unwrap();
    cases.iter().find(|c| c["name"] == name).unwrap()["info"].clone()
}

fn assert_all_pass(checks: &[Check]) {
    for c in checks {
        println!(
            "{:<55} max_abs_err {:.3e}  (atol {:.0e}, rtol {:.0e})  {}",
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
    let checks = conform::check_rvq(&open(Precision::Fp32), &case("codec_rvq")).unwrap();
    assert_eq!(checks.len(), 3);
    assert_all_pass(&checks);
}

#[test]
fn estimator_matches() {
    let checks = conform::check_estimator(&mut open(Precision::Fp32), &case("codec_estimator")).unwrap();
    assert_all_pass(&checks);
}

#[test]
fn scalar_decoder_matches() {
    let checks = conform::check_scalar_decode(&mut open(Precision::Fp32), &case("codec_scalar_decode")).unwrap();
    assert_all_pass(&checks);
}

fn detokenize_case(name: &str) {
    let c = case(name);
    let params = conform::detokenize_params_from_info(&info(name), Path::new(name)).unwrap();
    let checks = conform::check_detokenize(&mut open(Precision::Fp32), &c, params).unwrap();
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
