//! The embedder reproduces the reference's summed backbone inputs: the prompt
//! (conditional and unconditional rows, MuQ slot replaced) and fed-back frames.

use heart::fixture::Fixture;
use heart::precision::Precision;
use heart_runtime::lm::Row;

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn prompt_and_frame_embeddings_match_the_reference() {
    let lm = heart_test_support::open_lm(Precision::Fp32);
    let (cfg, gen_cfg) = heart_test_support::mula_configs();
    let fixture = Fixture::open(&heart_test_support::fixture()).unwrap();
    let t = fixture.load(fixture.case("teacher_forced_cfg1p5").unwrap()).unwrap();
    let prompt = heart_runtime::lm::Prompt::from_fixture(&t).unwrap();
    let e = lm.embedder();
    let (expected, _) = t.f32("prefill_backbone_input").unwrap();
    assert!(max_err(&e.prompt(&prompt, 2).unwrap(), &expected) < 1e-6);

    let (tokens, shape) = t.i64("step_tokens").unwrap();
    let (expected, _) = t.f32("step_backbone_input").unwrap();
    let d = cfg.backbone.embed_dim;
    for step in 0..shape[0] {
        let codes: Vec<i64> = tokens[step * 2 * 9..step * 2 * 9 + 8].to_vec();
        assert_eq!(tokens[step * 2 * 9 + 8], gen_cfg.empty_id);
        let got = e.frame(&[codes.clone(), codes], gen_cfg.empty_id).unwrap();
        assert!(max_err(&got, &expected[step * 2 * d..(step + 1) * 2 * d]) < 1e-6);
    }
}

#[test]
fn masked_columns_contribute_nothing_and_bad_ids_are_errors() {
    let lm = heart_test_support::open_lm(Precision::Fp32);
    let e = lm.embedder();
    let mut only_text = vec![0f32; e.dim()];
    e.add_row(&Row::text(5), false, &mut only_text).unwrap();
    assert_eq!(only_text, e.text(5).unwrap());
    let mut uncond = vec![0f32; e.dim()];
    e.add_row(&Row::text(5), true, &mut uncond).unwrap();
    assert_eq!(uncond, e.unconditional());
    let mut row = Row::audio(&[1, 2, 3, 4, 5, 6, 7, 8], 999_999);
    let mut out = vec![0f32; e.dim()];
    e.add_row(&row, false, &mut out).unwrap();
    row.mask[8] = true;
    assert!(
        e.add_row(&row, false, &mut out)
            .unwrap_err()
            .to_string()
            .contains("999999")
    );
    assert!(e.audio(0, 69).is_err() && e.audio(8, 0).is_err() && e.audio(7, 68).is_ok());
}
