//! Plain decoding through the engine's frame graph (`frame.onnx`,
//! `onnx_export::frame`): one session call per frame instead of one per
//! codebook, with the guided top-k sampling inside the graph.
//!
//! The loop is [`super::frame_loop`]'s (prefill's frame kept unchecked, then
//! one fed-back frame per call until an end-of-audio code or the length
//! limit), and so is the noise: each call takes the frame's `n_codebooks`
//! vocab-sized rows of Exp(1) draws from the [`NoiseSource`], in the order the
//! per-step path draws them (codebook 0, then 1..), so a seed or a recording
//! gives the same codes on both paths (the graph's `Exp` and sum may differ
//! from Rust's by an ulp; see `onnx_export::frame`).

use heart::engine::frame_io;
use ort::session::SessionInputValue;
use ort::value::TensorRef;

use super::LmError;
use super::embed::Prompt;
use super::frame_loop::{GenParams, Generation, StopReason, ends_generation};
use super::model::{FrameSampling, HeartMula, LmState};
use super::sampler::{NoiseSource, SamplerParams};
use super::session::extract;

/// One decoded frame, as the frame-graph loop reports it.
#[derive(Debug, Clone, Copy)]
pub struct WholeFrame<'a> {
    /// Call index (0 = the prefill's frame).
    pub index: usize,
    /// The most frames that can be kept (`max_extra_frames + 1`).
    pub max_frames: usize,
    /// The frame's codes (the same in every batch row).
    pub codes: &'a [i64],
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
}

/// Whether a frame graph of a model with `audio_vocab` codes per codebook
/// samples with `sampler`: its `top_k` (at most the vocabulary, as the
/// sampler reads it) is at most [`frame_io::TOP_K_MAX`], the most candidates
/// the TensorRT form sorts. Otherwise plain decoding runs per step (same codes).
pub fn takes(sampler: SamplerParams, audio_vocab: usize) -> bool {
    sampler.top_k.min(audio_vocab) <= frame_io::TOP_K_MAX
}

/// Runs the frame loop on `prompt` through `lm`'s frame graph; an engine
/// without one, or a `top_k` it does not take ([`takes`]), is an
/// [`LmError::Input`]. `observer` sees every frame; its
/// first error ends the loop and is returned.
pub fn generate_frames(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    sampler: SamplerParams,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn FnMut(&WholeFrame<'_>) -> Result<(), LmError>,
) -> Result<Generation, LmError> {
    params.validate()?;
    sampler.validate()?;
    if prompt.is_empty() {
        return Err(LmError::Input("the prompt has no rows".into()));
    }
    let dims = lm.dims();
    let max_extra = params.max_extra_frames();
    let batch = params.batch();
    let mut st = lm.new_state(batch, prompt.len() + max_extra)?;
    let mut frames: Vec<Vec<i64>> = Vec::new();
    let mut q = vec![0f32; dims.codebooks * dims.audio_vocab];
    for index in 0..=max_extra {
        let (embeds, s) = match frames.last() {
            None => (lm.embedder().prompt(prompt, batch)?, prompt.len()),
            Some(prev) => (lm.embedder().frame(&vec![prev.clone(); batch], dims.empty_id)?, 1),
        };
        for row in q.chunks_exact_mut(dims.audio_vocab) {
            noise.fill_exponential(row)?;
        }
        let codes = frame_step(lm, &mut st, (&embeds, s), &q, params, sampler)?;
        let end = ends_generation(index, &codes, dims.audio_eos_id);
        observer(&WholeFrame {
            index,
            max_frames: max_extra + 1,
            codes: &codes,
            kept: !end,
        })?;
        if end {
            return Ok(Generation {
                frames,
                stop: StopReason::EndOfAudio,
            });
        }
        frames.push(codes);
    }
    Ok(Generation {
        frames,
        stop: StopReason::MaxLength,
    })
}

/// One call of the frame graph: `s` rows of summed embeddings `[B, s, D]` at
/// the backbone cache's next positions, the frame's noise rows `q`
/// `[n_codebooks, V]`; returns the frame's codes.
pub fn frame_step(
    lm: &mut HeartMula,
    st: &mut LmState,
    (embeds, s): (&[f32], usize),
    q: &[f32],
    params: &GenParams,
    sampler: SamplerParams,
) -> Result<Vec<i64>, LmError> {
    let dims = lm.dims();
    if !takes(sampler, dims.audio_vocab) {
        return Err(LmError::Input(format!(
            "top_k {}: the frame graph samples from at most {} candidates",
            sampler.top_k,
            frame_io::TOP_K_MAX
        )));
    }
    let sampling = FrameSampling {
        temperature: sampler.temperature,
        top_k: sampler.top_k.min(dims.audio_vocab) as i64,
        cfg_scale: params.cfg_scale,
    };
    if let Some(codes) = lm.device_frame_step(st, (embeds, s), q, sampling)? {
        return checked_codes(codes, dims.codebooks, lm.frame_graph().map(|g| g.path().to_path_buf()));
    }
    let Some(graph) = lm.frame_graph() else {
        return Err(LmError::Input(
            "the engine has no frame graph (rebuild it with this version of heart-build)".into(),
        ));
    };
    let path = graph.path().to_path_buf();
    let ort_err = |e: ort::Error| LmError::Ort {
        path: path.clone(),
        message: e.to_string(),
    };
    let top_k = [sampling.top_k];
    let temperature = [sampling.temperature];
    let cfg_scale = [sampling.cfg_scale];
    fn scalar(v: &[f32; 1]) -> ort::Result<SessionInputValue<'_>> {
        Ok(TensorRef::from_array_view(((), &v[..]))?.into())
    }
    let extra: Vec<(String, SessionInputValue<'_>)> = vec![
        (
            frame_io::NOISE.into(),
            TensorRef::from_array_view(([dims.codebooks, dims.audio_vocab], q))
                .map_err(ort_err)?
                .into(),
        ),
        (frame_io::TEMPERATURE.into(), scalar(&temperature).map_err(ort_err)?),
        (
            frame_io::TOP_K.into(),
            TensorRef::from_array_view(([1usize], &top_k[..]))
                .map_err(ort_err)?
                .into(),
        ),
        (frame_io::CFG_SCALE.into(), scalar(&cfg_scale).map_err(ort_err)?),
    ];
    let codes = graph.run(st.backbone.host_mut()?, embeds, s, extra, |out| {
        Ok(extract::<i64>(out, frame_io::CODES, &path)?.to_vec())
    })?;
    checked_codes(codes, dims.codebooks, Some(path))
}

/// `codes` if it holds one code per codebook, else an engine error naming the graph.
fn checked_codes(codes: Vec<i64>, codebooks: usize, path: Option<std::path::PathBuf>) -> Result<Vec<i64>, LmError> {
    if codes.len() != codebooks {
        return Err(LmError::Engine {
            path: path.unwrap_or_default(),
            message: format!("`{}` has {} codes; expected {codebooks}", frame_io::CODES, codes.len(),),
        });
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_k_over_the_tensorrt_limit_decodes_per_step_unless_the_vocabulary_caps_it() {
        let p = |top_k| SamplerParams {
            temperature: 1.0,
            top_k,
        };
        assert!(takes(p(frame_io::TOP_K_MAX), 8197));
        assert!(!takes(p(frame_io::TOP_K_MAX + 1), 8197));
        assert!(
            takes(p(100_000), 69),
            "a top-k over the vocabulary is the whole vocabulary"
        );
    }
}
