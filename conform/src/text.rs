//! Conformance kinds `tokenizer` and `prompt`: text ids and prompt tensors,
//! compared exactly against the reference.

use heart::fixture::{Case, Tolerance};
use heart::prompt::{process_lyrics, process_tags};
use serde::Deserialize;

use super::{CaseResult, Checker, ConformContext};

/// One entry of a tokenizer case's `info.probes`.
#[derive(Debug, Deserialize)]
struct Probe {
    text: String,
    ids: Vec<i64>,
}

/// `tokenizer`: every probe's `encode(text)` ids (special tokens added).
pub fn run_tokenizer(ctx: &mut ConformContext, case: &Case) -> CaseResult {
    let probes: Vec<Probe> = serde_json::from_value(case.info("probes")?.clone())?;
    let tokenizer = &ctx.mula()?.tokenizer;
    let mut check = Checker::new(Tolerance::EXACT);
    for (i, probe) in probes.iter().enumerate() {
        let ids = tokenizer.encode(&probe.text)?;
        check.ints(
            &format!("probe {i} {:?}", probe.text),
            (&ids, &[ids.len()]),
            (&probe.ids, &[probe.ids.len()]),
        );
    }
    Ok(check.finish())
}

/// `prompt`: processed strings, segment ids, and the `[B, P, 9]` tokens / mask,
/// positions, MuQ index and (zero) MuQ embedding built from `info.tags`,
/// `info.lyrics` and `info.cfg_scale`.
pub fn run_prompt(ctx: &mut ConformContext, case: &Case) -> CaseResult {
    let tags = case.info_str("tags")?;
    let lyrics = case.info_str("lyrics")?;
    let cfg_scale = case.info_f64("cfg_scale")? as f32;
    let expected = ctx.fixture.load(case)?;
    let mula = ctx.mula()?;
    let prompt = mula.prompt_builder().build(tags, lyrics, cfg_scale)?;

    let mut check = Checker::new(Tolerance::EXACT);
    check.equal(
        "tags_processed",
        &process_tags(tags).as_str(),
        &case.info_str("tags_processed")?,
    );
    check.equal(
        "lyrics_processed",
        &process_lyrics(lyrics).as_str(),
        &case.info_str("lyrics_processed")?,
    );
    check.equal("prompt_len", &prompt.prompt_len(), &case.info_usize("prompt_len")?);
    check.equal("muq_idx", &prompt.muq_idx(), &case.info_usize("muq_idx")?);
    check.equal("batch", &prompt.batch, &case.info_usize("batch")?);

    let (b, p, c) = (prompt.batch, prompt.prompt_len(), prompt.columns());
    check.tensor_i64(&expected, "tags_ids", &prompt.tags_ids, &[prompt.tags_ids.len()])?;
    check.tensor_i64(&expected, "lyrics_ids", &prompt.lyrics_ids, &[prompt.lyrics_ids.len()])?;
    check.tensor_i64(&expected, "prompt_tokens", &prompt.tokens(), &[b, p, c])?;
    check.tensor_i64(&expected, "prompt_tokens_mask", &prompt.tokens_mask(), &[b, p, c])?;
    check.tensor_i64(&expected, "prompt_pos", &prompt.positions(), &[b, p])?;
    check.tensor_i64(&expected, "prompt_muq_idx", &prompt.muq_indices(), &[b])?;
    let muq_dim = mula.config.muq_dim;
    check.tensor_f32(&expected, "prompt_muq_embed", &vec![0.0; b * muq_dim], &[b, muq_dim])?;
    Ok(check.finish())
}
