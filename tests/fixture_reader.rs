//! The fixture-folder reader: case index, declared-vs-stored tensor checks,
//! tolerances and file hashes.

use heart_test_support::checkpoints as common;

use common::{Stored, copy_dir, fixture, read_tensors, write_tensors};
use heart::fixture::{Fixture, Tolerance};

#[test]
fn reads_index_cases_and_tolerances() {
    let f = Fixture::open(&fixture()).unwrap();
    assert_eq!(f.set_name(), "tiny-a");
    assert_eq!(f.format_version(), 1);
    assert_eq!(f.cases().len(), 23);
    assert_eq!(f.mula_dir(), fixture().join("heartmula"));
    let tokenizer = f.case("tokenizer_probes").unwrap();
    assert_eq!(
        (tokenizer.kind.as_str(), tokenizer.file.as_deref()),
        ("tokenizer", None)
    );
    assert_eq!(
        f.tolerance("token_ids_prompts_and_generated_codes").unwrap(),
        Tolerance::EXACT
    );
    assert_eq!(
        f.tolerance("mula_logits").unwrap(),
        Tolerance { atol: 5e-4, rtol: 1e-4 }
    );
    // `rtol` absent: 0.
    assert_eq!(
        f.tolerance("codec_waveform_end_to_end").unwrap(),
        Tolerance { atol: 5e-2, rtol: 0.0 }
    );
    let err = f.tolerance("nope").unwrap_err().to_string();
    assert!(err.contains("cases.json") && err.contains("`nope`: missing"), "{err}");
    f.verify_files().unwrap();
}

#[test]
fn loads_case_tensors_with_shapes() {
    let f = Fixture::open(&fixture()).unwrap();
    let case = f.case("codec_rvq").unwrap();
    let t = f.load(case).unwrap();
    let (codes, shape) = t.i64("codes").unwrap();
    assert_eq!(shape, [8, 40]);
    assert!(codes.iter().all(|&c| (0..64).contains(&c)));
    let (mu, shape) = t.f32("mu").unwrap();
    let (cond, _) = t.f32("cond").unwrap();
    assert_eq!(shape, [80, 32]);
    // mu repeats every cond frame twice.
    assert_eq!(&mu[32..64], &cond[..32]);
    let err = t.f32("codes").unwrap_err().to_string();
    assert!(
        err.contains("codec_rvq.safetensors") && err.contains("`codes`: dtype I64, expected F32"),
        "{err}"
    );
    let err = f.load(f.case("tokenizer_probes").unwrap()).unwrap_err().to_string();
    assert!(err.contains("case `tokenizer_probes`: has no tensor file"), "{err}");
}

#[test]
fn declared_shape_mismatch_and_hash_mismatch_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let file = dir.path().join("cases/codec_rvq.safetensors");
    let mut tensors = read_tensors(&file);
    tensors.insert("mu".into(), Stored::zeros_f32(&[79, 32]));
    write_tensors(&file, &tensors);
    let f = Fixture::open(dir.path()).unwrap();
    let err = f.load(f.case("codec_rvq").unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("`mu`: stored as F32 [79, 32], but cases.json declares float32 [80, 32]"),
        "{err}"
    );

    std::fs::write(dir.path().join("heartmula/gen_config.json"), "{}").unwrap();
    let err = f.verify_files().unwrap_err().to_string();
    assert!(
        err.contains("gen_config.json: sha256") && err.contains("but cases/cases.json lists"),
        "{err}"
    );
}
