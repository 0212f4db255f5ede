//! Tokenizer and prompt builder against the fixture's reference outputs: every
//! probe's ids and every prompt case's tensors must match exactly.

use heart_test_support::checkpoints as common;

use heart::fixture::{Case, Fixture};
use heart::layout::MulaCheckpoint;
use heart::prompt::{process_lyrics, process_tags};

fn setup() -> (Fixture, MulaCheckpoint) {
    let fixture = Fixture::open(&common::fixture()).unwrap();
    let mula = MulaCheckpoint::discover_and_open(&fixture.mula_dir(), None, None).unwrap();
    (fixture, mula)
}

fn cases<'a>(fixture: &'a Fixture, kind: &str) -> Vec<&'a Case> {
    let cases: Vec<_> = fixture.cases().iter().filter(|c| c.kind == kind).collect();
    assert!(!cases.is_empty(), "fixture has no `{kind}` cases");
    cases
}

#[test]
fn tokenizer_probes_match() {
    let (fixture, mula) = setup();
    for case in cases(&fixture, "tokenizer") {
        let probes = case.info("probes").unwrap().as_array().unwrap();
        assert!(probes.len() >= 5);
        for probe in probes {
            let text = probe["text"].as_str().unwrap();
            let want: Vec<i64> = serde_json::from_value(probe["ids"].clone()).unwrap();
            assert_eq!(mula.tokenizer.encode(text).unwrap(), want, "probe {text:?}");
        }
    }
}

#[test]
fn prompt_cases_match_exactly() {
    let (fixture, mula) = setup();
    let builder = mula.prompt_builder();
    for case in cases(&fixture, "prompt") {
        let name = &case.name;
        let tags = case.info_str("tags").unwrap();
        let lyrics = case.info_str("lyrics").unwrap();
        assert_eq!(process_tags(tags), case.info_str("tags_processed").unwrap(), "{name}");
        assert_eq!(
            process_lyrics(lyrics),
            case.info_str("lyrics_processed").unwrap(),
            "{name}"
        );

        let prompt = builder
            .build(tags, lyrics, case.info_f64("cfg_scale").unwrap() as f32)
            .unwrap();
        assert_eq!(prompt.prompt_len(), case.info_usize("prompt_len").unwrap(), "{name}");
        assert_eq!(prompt.muq_idx(), case.info_usize("muq_idx").unwrap(), "{name}");
        assert_eq!(prompt.batch, case.info_usize("batch").unwrap(), "{name}");

        let t = fixture.load(case).unwrap();
        let (b, p, c) = (prompt.batch, prompt.prompt_len(), prompt.columns());
        let expect = |tensor: &str, actual: Vec<i64>, shape: Vec<usize>| {
            assert_eq!(t.i64(tensor).unwrap(), (actual, shape), "{name}: {tensor}");
        };
        expect("tags_ids", prompt.tags_ids.clone(), vec![prompt.tags_ids.len()]);
        expect("lyrics_ids", prompt.lyrics_ids.clone(), vec![prompt.lyrics_ids.len()]);
        expect("prompt_tokens", prompt.tokens(), vec![b, p, c]);
        expect("prompt_tokens_mask", prompt.tokens_mask(), vec![b, p, c]);
        expect("prompt_pos", prompt.positions(), vec![b, p]);
        expect("prompt_muq_idx", prompt.muq_indices(), vec![b]);
        let (muq, shape) = t.f32("prompt_muq_embed").unwrap();
        assert_eq!(shape, [b, mula.config.muq_dim]);
        assert!(muq.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn unicode_probe_lowercases_like_python() {
    let (fixture, _) = setup();
    let case = fixture.case("prompt_prewrapped_unicode_cfg1").unwrap();
    let processed = case.info_str("lyrics_processed").unwrap();
    assert!(processed.ends_with("i\u{307}stanbul"));
    assert_eq!(process_lyrics(case.info_str("lyrics").unwrap()), processed);
}
