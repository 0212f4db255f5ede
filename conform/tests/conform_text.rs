//! The conformance harness on the committed tiny fixture: tokenizer and prompt
//! cases pass, a corrupted expectation fails with a precise detail, and the
//! binary's output format and exit codes hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use heart_conform::{ConformContext, Verdict};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use heart_test_support::checkpoints::copy_dir;
use heart_test_support::fixture;

/// Adds `delta` to element `index` of an int64 tensor in a case file.
fn bump_i64(path: &Path, tensor: &str, index: usize, delta: i64) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    let data = &mut owned.get_mut(tensor).unwrap().2;
    let at = &mut data[index * 8..index * 8 + 8];
    let value = i64::from_le_bytes(at.try_into().unwrap()) + delta;
    at.copy_from_slice(&value.to_le_bytes());
    let views: Vec<_> = owned
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn tokenizer_and_prompt_cases_pass() {
    let mut ctx = ConformContext::open(&fixture()).unwrap();
    let mut out = Vec::new();
    let report = heart_conform::run(&mut ctx, None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let text_cases: Vec<_> = report
        .cases
        .iter()
        .filter(|c| c.kind == "tokenizer" || c.kind == "prompt")
        .collect();
    assert_eq!(text_cases.len(), 9);
    for case in &text_cases {
        assert_eq!(case.outcome.verdict, Verdict::Pass, "{case}");
        assert_eq!(case.outcome.max_abs_err, Some(0.0));
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), report.cases.len() + 1);
    assert!(
        lines.contains(&"PASS prompt_basic_cfg1p5 prompt max_abs_err=0 tol=exact"),
        "{text}"
    );
    assert_eq!(*lines.last().unwrap(), report.summary());
}

#[test]
fn corrupted_expectations_fail_with_location() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    // Row 5 of batch 0, text column: flat index 5 * 9 + 8.
    bump_i64(
        &dir.path().join("cases/prompt_basic_cfg1.safetensors"),
        "prompt_tokens",
        53,
        7,
    );
    let mut ctx = ConformContext::open(dir.path()).unwrap();
    let report = heart_conform::run(&mut ctx, Some("prompt_basic_cfg1"), &mut Vec::new()).unwrap();
    let case = &report.cases[0];
    assert_eq!(case.outcome.verdict, Verdict::Fail);
    assert_eq!(case.outcome.max_abs_err, Some(7.0));
    assert!(
        case.outcome
            .detail
            .starts_with("prompt_tokens: 1 of 972 elements off, worst at [0, 5, 8]: got "),
        "{case}"
    );
    assert!(!report.success());
    assert_eq!(report.summary(), "0 passed, 1 failed, 0 skipped");
}

#[test]
fn binary_reports_one_case_and_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_heart-conform");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let dir = fixture();
    let dir = dir.to_str().unwrap();

    let ok = run(&[dir, "--case", "tokenizer_probes"]);
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8(ok.stdout).unwrap(),
        "PASS tokenizer_probes tokenizer max_abs_err=0 tol=exact\n1 passed, 0 failed, 0 skipped\n"
    );

    let skipped = run(&[dir, "--case", "codec_rvq"]);
    assert!(skipped.status.success());
    assert!(
        String::from_utf8(skipped.stdout)
            .unwrap()
            .starts_with("SKIP codec_rvq codec_rvq max_abs_err=- tol=- ")
    );

    let unknown = run(&[dir, "--case", "nope"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8(unknown.stderr).unwrap();
    assert!(
        stderr.contains("no case named `nope`") && stderr.contains("tokenizer_probes"),
        "{stderr}"
    );

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    bump_i64(
        &tmp.path().join("cases/prompt_whitespace_cfg1p5.safetensors"),
        "prompt_pos",
        3,
        1,
    );
    let failed = run(&[tmp.path().to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1));
    let stdout = String::from_utf8(failed.stdout).unwrap();
    assert!(
        stdout.contains("FAIL prompt_whitespace_cfg1p5 prompt max_abs_err=1 tol=exact prompt_pos:"),
        "{stdout}"
    );
}
