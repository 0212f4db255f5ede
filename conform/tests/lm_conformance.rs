//! Every `mula_teacher_forced` and `mula_generate` case of tiny-a passes at fp32
//! with the fixture's tolerances; fp16 engines pass the teacher-forced cases
//! within `MulaTolerances::FP16`.

use heart::fixture::Fixture;
use heart::precision::Precision;
use heart_conform::Verdict;
use heart_conform::mula::{MulaTolerances, check_generate, check_teacher_forced};

fn run(precision: Precision, kinds: &[&str], tol: Option<MulaTolerances>) -> usize {
    let fixture = Fixture::open(&heart_test_support::fixture()).unwrap();
    let tol = tol.unwrap_or_else(|| MulaTolerances::from_fixture(&fixture).unwrap());
    let mut lm = heart_test_support::open_lm(precision);
    let mut ran = 0;
    for case in fixture.cases().iter().filter(|c| kinds.contains(&c.kind.as_str())) {
        let t = fixture.load(case).unwrap();
        let outcome = match case.kind.as_str() {
            "mula_teacher_forced" => check_teacher_forced(&mut lm, case, &t, tol),
            _ => check_generate(&mut lm, case, &t, tol),
        }
        .unwrap();
        println!(
            "{precision} {} {:?} max_abs_err={:?} {}",
            case.name, outcome.verdict, outcome.max_abs_err, outcome.detail
        );
        assert_eq!(outcome.verdict, Verdict::Pass, "{}: {}", case.name, outcome.detail);
        ran += 1;
    }
    ran
}

#[test]
fn fp32_teacher_forced_and_generate_cases_pass() {
    assert_eq!(run(Precision::Fp32, &["mula_teacher_forced", "mula_generate"], None), 6);
}

#[test]
fn fp16_teacher_forced_cases_pass_within_the_fp16_bound() {
    assert_eq!(
        run(Precision::Fp16, &["mula_teacher_forced"], Some(MulaTolerances::FP16)),
        2
    );
}
