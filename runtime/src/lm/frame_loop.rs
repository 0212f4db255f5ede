//! The autoregressive frame loop (spec §3.4) as a small state machine:
//! `Prefill → Frame(n) → Done(reason)`.
//!
//! - Frame 0 comes from the prompt prefill and is kept without an end check.
//! - Frame `n ≥ 1` feeds frame `n−1` back at position `P + n − 1`; if any of row
//!   0's codes is `>= audio_eos_id` generation stops and that frame is dropped.
//! - At most `max_audio_length_ms / 80` frames follow frame 0.
//!
//! Batch and guidance: `cfg_scale == 1` runs batch 1; `cfg_scale > 1` runs batch
//! 2 (row 0 conditional, row 1 unconditional) and samples the guided logits
//! `u + (c − u)·cfg` once, feeding the code to both rows. Upstream runs
//! `cfg_scale < 1` at batch 2 without guidance and keeps only row 0, which does
//! not depend on row 1; it is run here at batch 1, which gives row 0 the same
//! distribution at half the cost.
//!
//! Codes in `[codebook_size, audio_eos_id)` (8192 for the real model) are not an
//! end of audio upstream and stay in the frames, as the fixtures require; they
//! are not valid codec indices, so the codec stage must clamp or reject them.
//!
//! Who picks a code is a [`CodePicker`]: [`Sampling`] for generation, a forced
//! sequence for teacher-forced conformance. Every `generate_frame` result,
//! including a dropped end frame, is reported to an observer with the logits
//! behind it and the taps of its steps (progress bars, conformance traces,
//! calibration and A/B measurements); [`try_generate`]'s observer may fail
//! and so stop the loop.

use super::LmError;
use super::embed::Prompt;
use super::model::{BackboneOut, HeartMula, TapValues, Taps};
use super::sampler::{NoiseSource, SamplerParams, cfg_mix, sample};

/// Loop knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenParams {
    /// Classifier-free guidance scale (upstream default 1.5).
    pub cfg_scale: f32,
    /// Longest audio to generate; `/ 80` frames may follow the first.
    pub max_audio_length_ms: u64,
}

impl GenParams {
    /// Frames that may follow frame 0.
    pub fn max_extra_frames(&self) -> usize {
        heart::geometry::frames_in_ms(self.max_audio_length_ms)
    }

    /// Batch rows this guidance scale runs at.
    pub fn batch(&self) -> usize {
        if self.guided() { 2 } else { 1 }
    }

    /// Whether guidance is applied.
    pub fn guided(&self) -> bool {
        self.cfg_scale > 1.0
    }

    /// Checks the knobs.
    pub fn validate(&self) -> Result<(), LmError> {
        if !self.cfg_scale.is_finite() {
            return Err(LmError::Input(format!(
                "cfg_scale must be finite, got {}",
                self.cfg_scale
            )));
        }
        Ok(())
    }

    /// The logits the sampler sees for one codebook, from its raw logits
    /// `[B, V]`: the guided mix of rows 0 and 1 with CFG, else row 0's.
    pub fn sampler_logits(&self, logits: &[f32], vocab: usize) -> Vec<f32> {
        let mut rows = logits.chunks_exact(vocab);
        let cond = rows.next().unwrap_or_default();
        match rows.next() {
            Some(uncond) if self.guided() => cfg_mix(cond, uncond, self.cfg_scale),
            _ => cond.to_vec(),
        }
    }
}

/// Whether frame `index` (row 0's codes `row0`) ends generation: never frame 0
/// (upstream keeps it unchecked), else when any code is `>= audio_eos_id`.
pub fn ends_generation(index: usize, row0: &[i64], audio_eos_id: i64) -> bool {
    index > 0 && row0.iter().any(|&c| c >= audio_eos_id)
}

/// Chooses the code of one codebook from the logits the sampler would see.
pub trait CodePicker {
    /// `logits` are the (guided) logits of `codebook` in `frame`.
    fn pick(&mut self, frame: usize, codebook: usize, logits: &[f32]) -> Result<i64, LmError>;
}

/// Top-k sampling with noise from a [`NoiseSource`].
pub struct Sampling<'a> {
    /// Temperature and top-k.
    pub params: SamplerParams,
    /// Exponential-race noise.
    pub noise: &'a mut dyn NoiseSource,
}

impl CodePicker for Sampling<'_> {
    fn pick(&mut self, _frame: usize, _codebook: usize, logits: &[f32]) -> Result<i64, LmError> {
        Ok(sample(logits, self.params, self.noise)? as i64)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A frame contained an id `>= audio_eos_id` (that frame was dropped).
    EndOfAudio,
    /// The length limit was reached.
    MaxLength,
}

/// One `generate_frame` result, reported to the observer.
#[derive(Debug)]
pub struct FrameEvent<'a> {
    /// Call index (0 = the prefill's frame).
    pub index: usize,
    /// The most frames that can be kept (`max_extra_frames + 1`).
    pub max_frames: usize,
    /// Codes per batch row, `[B][codebooks]`.
    pub codes: &'a [Vec<i64>],
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
    /// Backbone output behind the frame.
    pub backbone: &'a BackboneOut,
    /// Raw decoder logits of codebooks 1.., each `[B, V]`.
    pub decoder_logits: &'a [Vec<f32>],
    /// Logits handed to the picker per codebook (guided with CFG), each `[V]`.
    pub sampler_logits: &'a [Vec<f32>],
    /// The tapped outputs of the frame's steps ([`Taps`]):
    /// the backbone step, then the decoder's; empty without taps.
    pub taps: &'a [TapValues],
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Kept frames, row 0: `[T][codebooks]`.
    pub frames: Vec<Vec<i64>>,
    /// Why the loop stopped.
    pub stop: StopReason,
}

impl Generation {
    /// Codes by codebook, `[codebooks][T]` (the codec's layout).
    pub fn codes_by_codebook(&self) -> Vec<Vec<i64>> {
        let n = self.frames.first().map_or(0, Vec::len);
        (0..n).map(|k| self.frames.iter().map(|f| f[k]).collect()).collect()
    }
}

enum Phase {
    Prefill,
    Frame(usize),
    Done(StopReason),
}

/// Runs the frame loop on `prompt`.
pub fn generate(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    picker: &mut dyn CodePicker,
    observer: &mut dyn FnMut(&FrameEvent<'_>),
) -> Result<Generation, LmError> {
    try_generate(lm, prompt, params, &Taps::default(), picker, &mut |event| {
        observer(event);
        Ok(())
    })
}

/// [`generate`] with `taps` asked of every step and an observer that may
/// fail: its first error ends the loop and is returned.
pub fn try_generate(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    taps: &Taps,
    picker: &mut dyn CodePicker,
    observer: &mut dyn FnMut(&FrameEvent<'_>) -> Result<(), LmError>,
) -> Result<Generation, LmError> {
    params.validate()?;
    let dims = lm.dims();
    let max_extra = params.max_extra_frames();
    let mut st = lm.new_tapped_state(params.batch(), prompt.len() + max_extra, taps.clone())?;
    let mut frames: Vec<Vec<i64>> = Vec::new();
    let mut prev: Vec<Vec<i64>> = Vec::new();
    let mut phase = Phase::Prefill;
    loop {
        let index = match phase {
            Phase::Prefill => 0,
            Phase::Frame(n) => n,
            Phase::Done(stop) => return Ok(Generation { frames, stop }),
        };
        let out = if index == 0 {
            lm.prefill(&mut st, prompt)?
        } else {
            lm.feed_frame(&mut st, &prev)?
        };
        let step = frame_codes(lm, &mut st, &out, params, index, picker)?;
        let end = ends_generation(index, &step.codes[0], dims.audio_eos_id);
        let taps = st.take_taps();
        observer(&FrameEvent {
            index,
            max_frames: max_extra + 1,
            codes: &step.codes,
            kept: !end,
            backbone: &out,
            decoder_logits: &step.decoder_logits,
            sampler_logits: &step.sampler_logits,
            taps: &taps,
        })?;
        phase = if end {
            Phase::Done(StopReason::EndOfAudio)
        } else {
            frames.push(step.codes[0].clone());
            prev = step.codes;
            if index == max_extra {
                Phase::Done(StopReason::MaxLength)
            } else {
                Phase::Frame(index + 1)
            }
        };
    }
}

/// One code for `codebook` of `frame`, chosen by `picker` from the raw
/// logits of every batch row (`[B, V]`, `V = vocab`) guided as generation
/// guides them ([`GenParams::sampler_logits`]), repeated for each row; also
/// returns the guided logits.
pub fn pick_guided(
    params: &GenParams,
    picker: &mut dyn CodePicker,
    frame: usize,
    codebook: usize,
    logits: &[f32],
    vocab: usize,
) -> Result<(Vec<i64>, Vec<f32>), LmError> {
    let guided = params.sampler_logits(logits, vocab);
    let code = picker.pick(frame, codebook, &guided)?;
    Ok((vec![code; logits.len() / vocab], guided))
}

struct FrameCodes {
    codes: Vec<Vec<i64>>,
    decoder_logits: Vec<Vec<f32>>,
    sampler_logits: Vec<Vec<f32>>,
}

/// Picks c0 from the backbone logits, then walks the decoder for c1...
fn frame_codes(
    lm: &mut HeartMula,
    st: &mut super::model::LmState,
    out: &BackboneOut,
    params: &GenParams,
    frame: usize,
    picker: &mut dyn CodePicker,
) -> Result<FrameCodes, LmError> {
    let v = lm.dims().audio_vocab;
    let mut sampler_logits = Vec::new();
    let mut decoder_logits = Vec::new();
    let mut choose = |codebook: usize, logits: &[f32], seen: &mut Vec<Vec<f32>>| -> Result<Vec<i64>, LmError> {
        let (codes, guided) = pick_guided(params, picker, frame, codebook, logits, v)?;
        seen.push(guided);
        Ok(codes)
    };
    let c0 = choose(0, &out.c0_logits, &mut sampler_logits)?;
    let codes = lm.decode_frame(st, &out.hidden, &c0, &mut |k, logits| {
        decoder_logits.push(logits.to_vec());
        choose(k, logits, &mut sampler_logits)
    })?;
    Ok(FrameCodes {
        codes,
        decoder_logits,
        sampler_logits,
    })
}
