//! Lossless speculative decoding over frames: a cheaper draft engine of the
//! same model proposes up to `K` frames, the target scores all of them with one
//! backbone call and one decoder call, and standard speculative sampling keeps
//! a prefix. The frames have the target's distribution exactly (in exact
//! arithmetic; see "Floats").
//!
//! # A round
//! Frames `0..n` are final; frame `n` is *pending*, with codes `0..j` already
//! fixed (`j = 0` unless a previous round rejected a code in it). Each model
//! has fed some of the final frames into its backbone cache and, if it has fed
//! all of them, holds its outputs predicting frame `n`.
//! 1. **Draft**: feed the final frames it has not seen (one call), complete the
//!    pending frame (codes `j..8`: code 0 from its backbone output, the others
//!    from its decoder walk with the fixed codes forced), then draft frames
//!    `n+1..n+K` one at a time, recording every drafted code's sampling
//!    distribution `q`.
//! 2. **Target backbone**: one call over the final frames it has not fed and
//!    the drafted frames ([`HeartMula::score_positions`]); the outputs at each
//!    position predict the next frame given the drafted ones before it.
//! 3. **Target decoder**: one call over the drafted frames folded into the
//!    batch ([`HeartMula::score_frames`]): codebooks 1..7 of each drafted frame
//!    given its earlier codes.
//! 4. **Acceptance**, in generation order (frame by frame, codebook 0 to 7, from
//!    code `j` in the pending frame), on the distributions the plain sampler
//!    draws from (CFG mix, temperature, top-k with ties, softmax:
//!    [`GenParams::sampler_logits`], [`top_k_probs`]): keep the drafted code `x`
//!    with probability `min(1, p(x)/q(x))`; on the first rejection draw the code
//!    from `normalize(max(0, p − q))` and end the round. That frame becomes the
//!    pending frame with its codes up to the redrawn one fixed (or final, if it
//!    was code 7).
//! 5. **Roll back**: both backbone caches are truncated to the final frames
//!    ([`super::KvCache::truncate`]); their outputs predicting the new pending
//!    frame are kept from the round (the target's from step 2, the draft's from
//!    step 1), so the next round feeds nothing twice.
//!
//! # Why the result is exact: the conditioning chain
//! Generation is one chain of tokens in the order (frame, codebook), and each
//! token's target distribution depends on every earlier token: codebook `k` of
//! frame `f` on codes `0..k` of `f` (the decoder walk) and on all earlier frames
//! (through the backbone state). Steps 2 and 3 compute the target's
//! conditionals given the *drafted* prefix, so a score is valid exactly while
//! every earlier token is the drafted one, i.e. while everything before it was
//! accepted. Acceptance stops at the first rejection, so every decision uses a
//! valid score, and the per-token lemma (keeping `x ~ q` with probability
//! `min(1, p/q)`, else drawing from the normalized residual, yields `x ~ p`)
//! applies token by token: every code is a draw from the target's conditional
//! given all earlier codes, which is the plain loop's joint distribution.
//!
//! After a rejection at codebook `k` of frame `f`, the scores of codebooks
//! `k+1..` of `f` are stale (they condition on the drafted code `k`), and so are
//! all later frames (their backbone inputs include the drafted frame `f`).
//! The simplest policy lets the target's decoder walk finish frame `f` at once.
//! Here, when the acceptance rate so far says the draft will probably (≥ 1/2)
//! get the remaining codes accepted, the draft finishes the frame in the next
//! round, given the fixed codes, and the target scores it together with the
//! next frames; otherwise, or if the frame is rejected a second time, the
//! target's walk samples the remaining codes (exact too: each is drawn from
//! the target's conditional). With a good draft the target thus runs one
//! backbone and one decoder call per round and rarely its sequential 7-call
//! walk, which is most of a plain frame's cost on CPUs (~75% on the small
//! synthesized size) and 7 latency-bound launches on GPUs; with a poor draft
//! it falls back to that walk, and a frame never takes more than two
//! rounds.
//! Nothing is sampled without a draft proposal first: frame 0 is drafted like
//! any other (its context, the prompt, is fixed), and a fully accepted round
//! ends without a target-sampled extra frame (that would cost a walk).
//!
//! The end-of-audio and length rules are the plain loop's
//! ([`ends_generation`], [`GenParams::max_extra_frames`]), applied to each frame
//! when it becomes final. The draft stops drafting after a frame that would end
//! generation or is the last allowed; how many frames are drafted depends only
//! on drafted tokens, so the argument above is unaffected.
//!
//! # Floats
//! The target's scores come from calls of other shapes than the plain loop's
//! (several backbone positions, `F·B` decoder rows, 8 positions at once), so
//! they differ from the plain loop's logits in the last bits (≤ 1e-5 on tiny-a).
//! With top-k 1 the output equals plain decoding whenever the top-2 margins
//! exceed that (tested); sampled output matches in distribution (chi-square
//! tests). A residual that rounds to all zeros falls back to `p`.

use std::time::Instant;

use super::LmError;
use super::embed::Prompt;
use super::frame_loop::{GenParams, Generation, StopReason, ends_generation};
use super::model::{BackboneOut, HeartMula, LmState, ScoredFrames};
use super::sampler::{NoiseSource, SamplerParams};
use super::spec_sampling::Sampler;
pub use super::spec_sampling::residual;
pub use super::spec_stats::SpecStats;

/// Knobs of a speculative generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpecParams {
    /// Guidance scale and length limit (as for [`super::generate`]).
    pub generation: GenParams,
    /// Temperature and top-k of every sampled code.
    pub sampler: SamplerParams,
    /// Frames the draft proposes per round (`K ≥ 1`).
    pub draft_frames: usize,
}

/// How a final frame was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// Every code drafted and accepted.
    Drafted,
    /// Code `codebook` (the first such) was rejected and redrawn by the target.
    Corrected {
        /// The first redrawn codebook.
        codebook: usize,
    },
}

/// One final frame, reported to the observer.
#[derive(Debug)]
pub struct SpecEvent<'a> {
    /// Frame index (0 = the first frame after the prompt).
    pub index: usize,
    /// The most frames that can be kept.
    pub max_frames: usize,
    /// Row 0's codes.
    pub codes: &'a [i64],
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
    /// How the frame was produced.
    pub origin: FrameOrigin,
    /// Round (from 1) in which it became final.
    pub round: usize,
}

/// A finished speculative generation.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecGeneration {
    /// Kept frames and why generation stopped (as the plain loop reports them).
    pub generation: Generation,
    /// Counters and timings.
    pub stats: SpecStats,
}

/// Generates with `target`'s distribution, drafting with `draft` (an engine of
/// the same model: same vocabulary, codebooks and embedding width). All
/// randomness (draft samples, acceptance draws, residual draws) comes from
/// `noise`. `observer` sees every final frame in order.
pub fn generate_speculative(
    target: &mut HeartMula,
    draft: &mut HeartMula,
    prompt: &Prompt,
    params: &SpecParams,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn FnMut(&SpecEvent<'_>),
) -> Result<SpecGeneration, LmError> {
    try_generate_speculative(target, draft, prompt, params, noise, &mut |event| {
        observer(event);
        Ok(())
    })
}

/// [`generate_speculative`] with an observer that may fail: its first error
/// ends generation and is returned.
pub fn try_generate_speculative(
    target: &mut HeartMula,
    draft: &mut HeartMula,
    prompt: &Prompt,
    params: &SpecParams,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn FnMut(&SpecEvent<'_>) -> Result<(), LmError>,
) -> Result<SpecGeneration, LmError> {
    let start = Instant::now();
    check(target, draft, params)?;
    let max_positions = prompt.len() + params.generation.max_extra_frames();
    let batch = params.generation.batch();
    let dims = target.dims();
    let mut run = Run {
        t: Side::new(target.new_state(batch, max_positions)?),
        d: Side::new(draft.new_state(batch, max_positions)?),
        target,
        draft,
        sampler: Sampler {
            generation: params.generation,
            params: params.sampler,
            vocab: dims.audio_vocab,
            noise,
        },
        draft_frames: params.draft_frames,
        prompt_len: prompt.len(),
        frames: Vec::new(),
        pending: Pending::default(),
        stats: SpecStats::new(dims.codebooks),
        round: 0,
        observer,
    };
    let stop = run.generate(prompt)?;
    let mut stats = run.stats;
    stats.total_time = start.elapsed();
    Ok(SpecGeneration {
        generation: Generation {
            frames: run.frames,
            stop,
        },
        stats,
    })
}

/// Refuses parameters and engine pairs speculation cannot work with.
fn check(target: &HeartMula, draft: &HeartMula, params: &SpecParams) -> Result<(), LmError> {
    params.generation.validate()?;
    params.sampler.validate()?;
    if params.draft_frames == 0 {
        return Err(LmError::Input(
            "draft_frames must be at least 1 (use the plain frame loop for no speculation)".into(),
        ));
    }
    let (t, d) = (target.dims(), draft.dims());
    if t != d || target.embedder().dim() != draft.embedder().dim() {
        return Err(LmError::Input(format!(
            "the draft is not an engine of the target's model: target {t:?}, draft {d:?}"
        )));
    }
    target.check_scoring()
}

/// One model's caches, how many final frames it has fed, and, when it has fed
/// all of them, its outputs predicting the pending frame.
struct Side {
    state: LmState,
    fed: usize,
    next: Option<BackboneOut>,
}

impl Side {
    fn new(state: LmState) -> Self {
        Self {
            state,
            fed: 0,
            next: None,
        }
    }

    /// Keeps frames `..fed` (the cache holds the prompt first) and the outputs
    /// predicting frame `fed`, if known.
    fn keep(&mut self, prompt_len: usize, fed: usize, next: Option<BackboneOut>) {
        self.state.backbone.truncate(prompt_len + fed);
        self.fed = fed;
        self.next = next;
    }
}

/// The pending frame's fixed codes.
#[derive(Debug, Default)]
struct Pending {
    codes: Vec<i64>,
    /// The first codebook the target redrew in it.
    corrected: Option<usize>,
}

/// Frames drafted in one round.
struct Drafted {
    /// Row-0 codes per drafted frame (the first starts with the pending codes).
    codes: Vec<Vec<i64>>,
    /// `q` per drafted frame and codebook (empty for the pending frame's fixed codes).
    probs: Vec<Vec<Vec<f32>>>,
    /// The draft's outputs predicting each drafted frame.
    outs: Vec<BackboneOut>,
}

/// One speculative generation in progress.
struct Run<'a, 'n> {
    target: &'a mut HeartMula,
    draft: &'a mut HeartMula,
    t: Side,
    d: Side,
    sampler: Sampler<'n>,
    draft_frames: usize,
    prompt_len: usize,
    /// Final kept frames (row 0).
    frames: Vec<Vec<i64>>,
    pending: Pending,
    stats: SpecStats,
    round: usize,
    observer: &'a mut dyn FnMut(&SpecEvent<'_>) -> Result<(), LmError>,
}

impl Run<'_, '_> {
    fn generate(&mut self, prompt: &Prompt) -> Result<StopReason, LmError> {
        let t = Instant::now();
        self.t.next = Some(self.target.prefill(&mut self.t.state, prompt)?);
        self.stats.target_backbone_calls += 1;
        self.stats.target_time += t.elapsed();
        let t = Instant::now();
        self.d.next = Some(self.draft.prefill(&mut self.d.state, prompt)?);
        self.stats.draft_backbone_calls += 1;
        self.stats.draft_time += t.elapsed();
        loop {
            self.round += 1;
            self.stats.rounds += 1;
            if let Some(stop) = self.round()? {
                return Ok(stop);
            }
        }
    }

    /// One round; `Some` when generation ended in it.
    fn round(&mut self) -> Result<Option<StopReason>, LmError> {
        let n = self.frames.len();
        let t = Instant::now();
        let drafted = self.draft(n)?;
        self.stats.draft_time += t.elapsed();
        let t = Instant::now();
        let stop = self.verify(n, &drafted);
        self.stats.target_time += t.elapsed();
        stop
    }

    /// Completes the pending frame `n` and drafts frames after it, up to
    /// `draft_frames` in all.
    fn draft(&mut self, n: usize) -> Result<Drafted, LmError> {
        let max_extra = self.sampler.generation.max_extra_frames();
        if self.d.fed < n || self.d.next.is_none() {
            let out = self.draft.feed_frames(&mut self.d.state, &self.frames[self.d.fed..n])?;
            self.stats.draft_backbone_calls += 1;
            self.d.fed = n;
            self.d.next = Some(out);
        }
        let mut out = self.d.next.clone().ok_or_else(|| {
            LmError::Input(format!(
                "the draft has no outputs predicting frame {n} after catching up"
            ))
        })?;
        let eos = self.draft.dims().audio_eos_id;
        let mut drafted = Drafted {
            codes: Vec::new(),
            probs: Vec::new(),
            outs: Vec::new(),
        };
        for i in 0..self.draft_frames {
            let fixed = if i == 0 { self.pending.codes.as_slice() } else { &[] };
            let calls = &mut self.stats.draft_decoder_calls;
            let (codes, probs) = sample_frame(self.draft, &mut self.d.state, &out, fixed, &mut self.sampler, calls)?;
            let last = ends_generation(n + i, &codes, eos) || n + i == max_extra || i + 1 == self.draft_frames;
            drafted.outs.push(out);
            drafted.codes.push(codes);
            drafted.probs.push(probs);
            if last {
                break;
            }
            out = self.draft.feed_frames(&mut self.d.state, &drafted.codes[i..=i])?;
            self.stats.draft_backbone_calls += 1;
        }
        self.stats.drafted_frames += drafted.codes.len();
        Ok(drafted)
    }

    /// Scores the drafted frames with the target and accepts a prefix.
    fn verify(&mut self, n: usize, drafted: &Drafted) -> Result<Option<StopReason>, LmError> {
        let m = drafted.codes.len();
        let dims = self.target.dims();
        let Some(last) = drafted.codes.last() else {
            return Err(LmError::Input(format!("nothing drafted after frame {n}")));
        };
        // Feed the final frames the target has not seen and every drafted frame
        // that could be followed by another one.
        let followed = !ends_generation(n + m - 1, last, dims.audio_eos_id)
            && n + m - 1 < self.sampler.generation.max_extra_frames();
        let mut feed = self.frames[self.t.fed..n].to_vec();
        let unseen = feed.len();
        feed.extend(drafted.codes[..m - usize::from(!followed)].iter().cloned());
        let all = if feed.is_empty() {
            None
        } else {
            self.stats.target_backbone_calls += 1;
            Some(self.target.score_positions(&mut self.t.state, &feed)?)
        };
        // Position `unseen + i - 1` predicts drafted frame `i`; before the first
        // fed position, the held outputs do.
        let predicting = |i: usize| match (unseen + i).checked_sub(1) {
            Some(pos) => all.as_ref().map(|a| a.at(pos)),
            None => self.t.next.clone(),
        };
        let after = if followed { predicting(m) } else { None };
        let outs: Vec<BackboneOut> = (0..m).map(&predicting).collect::<Option<_>>().ok_or_else(|| {
            LmError::Input(format!(
                "no target outputs predicting frame {n} (it has fed {} frames)",
                self.t.fed
            ))
        })?;
        let hidden: Vec<Vec<f32>> = outs.iter().map(|o| o.hidden.clone()).collect();
        let scored = self
            .target
            .score_frames(&hidden, &drafted.codes, self.t.state.batch())?;
        self.stats.target_decoder_calls += 1;

        for (i, out) in outs.iter().enumerate() {
            let first = if i == 0 { self.pending.codes.len() } else { 0 };
            match self.judge(drafted, i, first, out, &scored)? {
                None => {
                    self.stats.accepted_frames += 1;
                    let origin = match (i, self.pending.corrected) {
                        (0, Some(codebook)) => {
                            self.stats.draft_finishes += 1;
                            FrameOrigin::Corrected { codebook }
                        }
                        _ => FrameOrigin::Drafted,
                    };
                    self.pending = Pending::default();
                    if let Some(stop) = self.finish(drafted.codes[i].clone(), origin)? {
                        return Ok(Some(stop));
                    }
                }
                Some((codebook, code)) => return self.reject(n + i, drafted, i, (codebook, code), out),
            }
        }
        // Every drafted frame accepted: the target has fed them all, the draft
        // all but the last.
        self.t.fed = n + m;
        self.t.next = after;
        self.d.keep(self.prompt_len, n + m - 1, None);
        Ok(None)
    }

    /// Judges drafted frame `i` from codebook `first` on; `Some((k, code))` at
    /// the first rejection.
    fn judge(
        &mut self,
        d: &Drafted,
        i: usize,
        first: usize,
        out: &BackboneOut,
        scored: &ScoredFrames,
    ) -> Result<Option<(usize, i64)>, LmError> {
        for k in first..scored.codebooks {
            let p = if k == 0 {
                self.sampler.probs(&out.c0_logits)
            } else {
                self.sampler.probs(&scored.logits_of(i, k))
            };
            self.stats.judged[k] += 1;
            match self.sampler.settle(&p, &d.probs[i][k], d.codes[i][k])? {
                None => self.stats.accepted[k] += 1,
                Some(code) => return Ok(Some((k, code))),
            }
        }
        Ok(None)
    }

    /// Frame `f` (drafted frame `i`) had code `codebook` redrawn as `code`:
    /// it becomes the pending frame with codes up to that one fixed, or final
    /// if that was its last code, its second rejection, or the draft is
    /// unlikely to finish it (the target's decoder walk then samples the
    /// rest); both models keep frames `..f`.
    fn reject(
        &mut self,
        f: usize,
        drafted: &Drafted,
        i: usize,
        (codebook, code): (usize, i64),
        target_out: &BackboneOut,
    ) -> Result<Option<StopReason>, LmError> {
        let mut codes = drafted.codes[i][..codebook].to_vec();
        codes.push(code);
        // Accepting frame 0 cleared the pending record, so only a frame
        // rejected a second time has one.
        let again = i == 0 && self.pending.corrected.is_some();
        if codes.len() < self.target.dims().codebooks && (again || !self.draft_likely_to_finish(codebook)) {
            let calls = &mut self.stats.target_decoder_calls;
            codes = sample_frame(
                self.target,
                &mut self.t.state,
                target_out,
                &codes,
                &mut self.sampler,
                calls,
            )?
            .0;
            self.stats.target_walks += 1;
        }
        let corrected = self.pending.corrected.or(Some(codebook));
        self.pending = Pending { codes, corrected };
        self.t.keep(self.prompt_len, f, Some(target_out.clone()));
        self.d.keep(self.prompt_len, f, Some(drafted.outs[i].clone()));
        if self.pending.codes.len() < self.target.dims().codebooks {
            return Ok(None);
        }
        // A complete frame: final now, fed by the next round.
        let Pending { codes, corrected } = std::mem::take(&mut self.pending);
        self.t.next = None;
        self.d.next = None;
        let origin = FrameOrigin::Corrected {
            codebook: corrected.unwrap_or(codebook),
        };
        self.finish(codes, origin)
    }

    /// Whether the draft will likely (probability ≥ 1/2, from the acceptance
    /// rate so far) get every code after `codebook` of a frame accepted; if not,
    /// a rejected frame is finished by the target's walk at once.
    fn draft_likely_to_finish(&self, codebook: usize) -> bool {
        let judged: usize = self.stats.judged.iter().sum();
        let accepted: usize = self.stats.accepted.iter().sum();
        let rate = (accepted as f64 + 1.0) / (judged as f64 + 2.0);
        let remaining = self.stats.judged.len().saturating_sub(codebook + 1);
        rate.powi(remaining as i32) >= 0.5
    }

    /// Applies the end and length rules to the next frame; `Some` when
    /// generation ends.
    fn finish(&mut self, codes: Vec<i64>, origin: FrameOrigin) -> Result<Option<StopReason>, LmError> {
        let index = self.frames.len();
        let max_extra = self.sampler.generation.max_extra_frames();
        let end = ends_generation(index, &codes, self.target.dims().audio_eos_id);
        self.stats.frames += 1;
        (self.observer)(&SpecEvent {
            index,
            max_frames: max_extra + 1,
            codes: &codes,
            kept: !end,
            origin,
            round: self.round,
        })?;
        if end {
            return Ok(Some(StopReason::EndOfAudio));
        }
        self.frames.push(codes);
        Ok((index == max_extra).then_some(StopReason::MaxLength))
    }
}

/// Samples a frame from one-position backbone outputs `out`, with codes
/// `0..fixed.len()` forced to `fixed`: code 0 from `c0_logits`, then the
/// decoder walk. Returns row 0's codes and each sampled codebook's
/// distribution (empty for forced codes); counts decoder calls in `calls`.
fn sample_frame(
    lm: &mut HeartMula,
    st: &mut LmState,
    out: &BackboneOut,
    fixed: &[i64],
    sampler: &mut Sampler<'_>,
    calls: &mut usize,
) -> Result<(Vec<i64>, Vec<Vec<f32>>), LmError> {
    let v = sampler.vocab;
    let mut probs = Vec::new();
    let c0 = match fixed.first() {
        Some(&c) => {
            probs.push(Vec::new());
            c
        }
        None => {
            let p = sampler.probs(&out.c0_logits);
            let c = sampler.draw(&p)?;
            probs.push(p);
            c
        }
    };
    let rows = lm.decode_frame(st, &out.hidden, &vec![c0; st.batch()], &mut |k, logits| {
        *calls += 1;
        let c = match fixed.get(k) {
            Some(&c) => {
                probs.push(Vec::new());
                c
            }
            None => {
                let p = sampler.probs(logits);
                let c = sampler.draw(&p)?;
                probs.push(p);
                c
            }
        };
        Ok(vec![c; logits.len() / v])
    })?;
    Ok((rows.into_iter().next().unwrap_or_default(), probs))
}
