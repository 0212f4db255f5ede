//! Lossless speculative decoding over frames: a cheaper draft engine of the
//! same model proposes up to `K` frames, the target scores all of them with one
//! backbone call and one decoder call, and standard speculative sampling keeps
//! a prefix. The frames have the target's distribution exactly (in exact
//! arithmetic; see "Floats").
//!
//! # A round
//! At the start of a round frames `0..n` are final, the target's backbone
//! cache holds the prompt and frames `0..n−1` (the last frame is fed by the
//! round) and the draft's holds at least as much as the target's, minus one
//! frame.
//! 1. **Draft**: feed the frames it has not seen yet (one or two positions in
//!    one call), then up to `K` times: sample a frame (code 0 from its backbone,
//!    codes 1..7 from its decoder walk), recording each codebook's sampling
//!    distribution `q`, and feed it back (all but the last).
//! 2. **Target backbone**: one call over `K + 1` positions, the last final frame
//!    then the `K` drafted ones ([`HeartMula::score_positions`]); position `i`'s
//!    outputs condition frame `n + i` on the drafted frames before it.
//! 3. **Target decoder**: one call over the `K` drafted frames folded into the
//!    batch ([`HeartMula::score_frames`]): the logits of codebooks 1..7 of each
//!    drafted frame given its drafted earlier codes.
//! 4. **Acceptance**, in generation order (frame by frame, codebook 0 to 7), on
//!    the distributions the plain sampler draws from (CFG mix, temperature,
//!    top-k with ties, softmax: [`GenParams::sampler_logits`], [`top_k_probs`]):
//!    keep the drafted code `x` with probability `min(1, p(x)/q(x))`; on the
//!    first rejection draw the code from `normalize(max(0, p − q))`, finish that
//!    frame with the target and drop the rest of the round.
//! 5. If every drafted frame was kept, position `K` of step 2 gives one more
//!    frame sampled by the target (code 0, then its decoder walk).
//! 6. Roll back: both backbone caches are truncated to the kept positions
//!    ([`super::KvCache::truncate`]); rejected positions are simply overwritten
//!    later.
//!
//! # Why the result is exact: the conditioning chain
//! Generation is one chain of tokens in the order (frame, codebook), and each
//! token's target distribution depends on every earlier token: codebook `k` of
//! frame `f` on codes `0..k` of `f` (the decoder walk) and on all earlier frames
//! (through the backbone state). The scores of steps 2 and 3 are the target's
//! conditionals given the *drafted* prefix, so a score is valid exactly while
//! every earlier token is the drafted one, i.e. while everything before it was
//! accepted. Acceptance stops at the first rejection, so every accept/reject
//! decision uses a valid score, and the per-token speculative sampling lemma
//! (keeping `x ~ q` with probability `min(1, p/q)`, else drawing from the
//! normalized residual, yields `x ~ p`) applies token by token.
//!
//! After a rejection at codebook `k` of frame `f`, the scores of codebooks
//! `k+1..` of `f` are stale (they condition on the drafted code `k`), and so are
//! all later frames (their backbone inputs include the drafted frame `f`). The
//! target therefore samples codebooks `k+1..` itself: for `k ≥ 1` it continues
//! from the scored decoder call's cache rows of frame `f`, whose positions
//! `0..=k` (the hidden state and the accepted codes `0..k`) are still valid
//! ([`HeartMula::continue_frame`]); for `k = 0` it walks the decoder from frame
//! `f`'s hidden state (valid: frames before `f` were accepted). Frame 0 (from the
//! prefill) and the extra frame of step 5 are sampled by the target plainly.
//!
//! The end-of-audio and length rules are the plain loop's
//! ([`ends_generation`], [`GenParams::max_extra_frames`]), applied to each frame
//! when it becomes final. The draft never drafts past the length limit and
//! stops drafting after a frame that would end generation; how many frames are
//! drafted depends only on drafted tokens, and the token after the last drafted
//! one is the target's own, so the argument above is unaffected.
//!
//! # Floats
//! The target's scores come from calls of other shapes than the plain loop's
//! (`K + 1` backbone positions, `K·B` decoder rows, 8 positions at once), so
//! they differ from the plain loop's logits in the last bits. With top-k 1 the
//! output is identical to plain decoding whenever the top-2 margins exceed that
//! noise (tested on tiny-a, margins ≥ 0.02); sampled output matches in
//! distribution (chi-square test). A residual that rounds to all zeros (`p`
//! and `q` equal to float precision) falls back to `p`.
//!
//! # Cost per round
//! Draft: `K` backbone steps and `K` decoder walks of 7 calls. Target: one
//! backbone call over `K + 1` positions, one decoder call over `K·B` rows and
//! 8 positions, and at most one walk of up to 7 calls (the extra frame or a
//! completion). Plain decoding costs one backbone step and 7 decoder calls per
//! frame, so speculation pays when the draft is much cheaper than the target
//! and the target's multi-position calls cost little more than one-position
//! calls (memory-bound weights reads: GPUs, and CPUs on large models).

use std::time::Instant;

use super::LmError;
use super::embed::Prompt;
use super::frame_loop::{GenParams, Generation, StopReason, ends_generation};
use super::model::{BackboneOut, HeartMula, LmState, ScoredFrames};
use super::sampler::{NoiseSource, SamplerParams, race, top_k_probs};
pub use super::spec_stats::SpecStats;

/// Frames drafted per round when the caller has no preference.
pub const DEFAULT_DRAFT_FRAMES: usize = 4;

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

/// Where a final frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// Sampled by the target alone (frame 0, or the frame after a fully
    /// accepted round).
    Target,
    /// Drafted and accepted whole.
    Drafted,
    /// Drafted, rejected at `codebook` and finished by the target.
    Corrected {
        /// The first rejected codebook.
        codebook: usize,
    },
}

/// One final frame, reported to the observer.
#[derive(Debug)]
pub struct SpecEvent<'a> {
    /// Frame index (0 = the prefill's frame).
    pub index: usize,
    /// The most frames that can be kept.
    pub max_frames: usize,
    /// Row 0's codes.
    pub codes: &'a [i64],
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
    /// How the frame was produced.
    pub origin: FrameOrigin,
    /// Round number (0 = the prefill).
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
/// randomness (draft samples, acceptance draws, residual and target samples)
/// comes from `noise`. `observer` sees every final frame in order.
pub fn generate_speculative(
    target: &mut HeartMula,
    draft: &mut HeartMula,
    prompt: &Prompt,
    params: &SpecParams,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn FnMut(&SpecEvent<'_>),
) -> Result<SpecGeneration, LmError> {
    let start = Instant::now();
    check(target, draft, params)?;
    let max_positions = prompt.len() + params.generation.max_extra_frames();
    let batch = params.generation.batch();
    let dims = target.dims();
    let mut run = Run {
        t_state: target.new_state(batch, max_positions)?,
        d_state: draft.new_state(batch, max_positions)?,
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

/// The sampling side: distributions, draws and acceptance tests.
struct Sampler<'a> {
    generation: GenParams,
    params: SamplerParams,
    vocab: usize,
    noise: &'a mut dyn NoiseSource,
}

impl Sampler<'_> {
    /// The distribution sampled from, given raw logits `[B, V]`.
    fn probs(&self, logits: &[f32]) -> Vec<f32> {
        top_k_probs(&self.generation.sampler_logits(logits, self.vocab), self.params)
    }

    /// One draw from (possibly unnormalized) `weights`.
    fn draw(&mut self, weights: &[f32]) -> Result<i64, LmError> {
        let mut q = vec![0f32; weights.len()];
        self.noise.fill_exponential(&mut q)?;
        Ok(race(weights, &q) as i64)
    }

    /// Speculative sampling of one token: keeps the drafted code `x ~ q` with
    /// probability `min(1, p(x)/q(x))` (`None`), else returns a code drawn from
    /// the residual `max(0, p − q)`. Either way the code is distributed as `p`.
    fn settle(&mut self, p: &[f32], q: &[f32], x: i64) -> Result<Option<i64>, LmError> {
        let i = usize::try_from(x)
            .ok()
            .filter(|&i| i < p.len().min(q.len()))
            .ok_or_else(|| LmError::Input(format!("drafted code {x} is outside the vocabulary of {}", p.len())))?;
        if self.accept(p[i], q[i])? {
            return Ok(None);
        }
        self.draw(&residual(p, q)).map(Some)
    }

    /// Keeps a drafted code with probability `min(1, p / q)`: with
    /// `u = exp(−e) ~ U(0, 1]` from an Exp(1) draw, accept iff `u·q ≤ p`.
    fn accept(&mut self, p: f32, q: f32) -> Result<bool, LmError> {
        let mut e = [0f32];
        self.noise.fill_exponential(&mut e)?;
        Ok((-e[0]).exp() * q <= p)
    }
}

/// `max(0, p − q)` (unnormalized: the race does not need it), or `p` if that
/// is all zeros through rounding.
pub fn residual(p: &[f32], q: &[f32]) -> Vec<f32> {
    let r: Vec<f32> = p.iter().zip(q).map(|(&p, &q)| (p - q).max(0.0)).collect();
    if r.iter().any(|&v| v > 0.0) { r } else { p.to_vec() }
}

/// Codebook `k ≥ 1` logits `[B, V]` of frame `f` in a whole-frame scoring call.
fn scored_logits(s: &ScoredFrames, f: usize, k: usize, codebooks: usize, vocab: usize) -> Vec<f32> {
    (0..s.batch)
        .flat_map(|b| {
            let start = (((f * s.batch + b) * (codebooks - 1)) + k - 1) * vocab;
            &s.logits[start..start + vocab]
        })
        .copied()
        .collect()
}

/// Frames drafted in one round with their sampling distributions.
struct Drafted {
    /// Row-0 codes per drafted frame.
    codes: Vec<Vec<i64>>,
    /// `q` per drafted frame and codebook.
    probs: Vec<Vec<Vec<f32>>>,
}

/// The outcome of judging one drafted frame.
enum Verdict {
    /// Every code kept.
    Accepted,
    /// Code `codebook` rejected and redrawn as `code`.
    Rejected { codebook: usize, code: i64 },
}

/// One speculative generation in progress.
struct Run<'a, 'n> {
    target: &'a mut HeartMula,
    draft: &'a mut HeartMula,
    t_state: LmState,
    d_state: LmState,
    sampler: Sampler<'n>,
    draft_frames: usize,
    prompt_len: usize,
    /// Final kept frames (row 0).
    frames: Vec<Vec<i64>>,
    stats: SpecStats,
    round: usize,
    observer: &'a mut dyn FnMut(&SpecEvent<'_>),
}

impl Run<'_, '_> {
    fn generate(&mut self, prompt: &Prompt) -> Result<StopReason, LmError> {
        let t = Instant::now();
        let out = self.target.prefill(&mut self.t_state, prompt)?;
        self.stats.target_backbone_calls += 1;
        let frame0 = self.sample_target(&out)?;
        self.stats.target_time += t.elapsed();
        let t = Instant::now();
        self.draft.prefill(&mut self.d_state, prompt)?;
        self.stats.draft_backbone_calls += 1;
        self.stats.draft_time += t.elapsed();
        if let Some(stop) = self.finish(frame0, FrameOrigin::Target)? {
            return Ok(stop);
        }
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
        let n0 = self.frames.len();
        let room = self.sampler.generation.max_extra_frames().saturating_sub(n0);
        let t = Instant::now();
        let drafted = self.draft(n0, self.draft_frames.min(room))?;
        self.stats.draft_time += t.elapsed();

        let t = Instant::now();
        let m = drafted.codes.len();
        self.stats.drafted_frames += m;
        let mut feed = vec![self.frames[n0 - 1].clone()];
        feed.extend(drafted.codes.iter().cloned());
        let all = self.target.score_positions(&mut self.t_state, &feed)?;
        self.stats.target_backbone_calls += 1;
        let scored = if m > 0 {
            let hidden: Vec<Vec<f32>> = (0..m).map(|i| all.at(i).hidden).collect();
            self.stats.target_decoder_calls += 1;
            Some(
                self.target
                    .score_frames(&hidden, &drafted.codes, self.t_state.batch())?,
            )
        } else {
            None
        };
        for (i, scored) in scored.iter().flat_map(|s| (0..m).map(move |i| (i, s))) {
            let out = all.at(i);
            let (frame, origin) = match self.judge(&drafted, i, &out, scored)? {
                Verdict::Accepted => {
                    self.stats.accepted_frames += 1;
                    (drafted.codes[i].clone(), FrameOrigin::Drafted)
                }
                Verdict::Rejected { codebook, code } => {
                    let frame = self.complete(&drafted.codes[i], codebook, code, &out, scored, i)?;
                    (frame, FrameOrigin::Corrected { codebook })
                }
            };
            if origin != FrameOrigin::Drafted {
                self.roll_back(n0 + i);
            }
            let stop = self.finish(frame, origin)?;
            if stop.is_some() || origin != FrameOrigin::Drafted {
                self.stats.target_time += t.elapsed();
                return Ok(stop);
            }
        }
        let frame = self.sample_target(&all.at(m))?;
        self.stats.target_time += t.elapsed();
        self.finish(frame, FrameOrigin::Target)
    }

    /// Drafts up to `k` frames starting at frame `n0`.
    fn draft(&mut self, n0: usize, k: usize) -> Result<Drafted, LmError> {
        let mut drafted = Drafted {
            codes: Vec::new(),
            probs: Vec::new(),
        };
        if k == 0 {
            return Ok(drafted);
        }
        let seen = self.d_state.backbone.len() - self.prompt_len;
        let mut out = self.draft.feed_frames(&mut self.d_state, &self.frames[seen..])?;
        self.stats.draft_backbone_calls += 1;
        let eos = self.draft.dims().audio_eos_id;
        for i in 0..k {
            let mut probs = Vec::new();
            let calls = &mut self.stats.draft_decoder_calls;
            let codes = sample_frame(
                self.draft,
                &mut self.d_state,
                &out,
                &mut self.sampler,
                &mut probs,
                calls,
            )?;
            let ends = ends_generation(n0 + i, &codes, eos);
            drafted.codes.push(codes);
            drafted.probs.push(probs);
            if ends || i + 1 == k {
                break;
            }
            out = self.draft.feed_frames(&mut self.d_state, &drafted.codes[i..=i])?;
            self.stats.draft_backbone_calls += 1;
        }
        Ok(drafted)
    }

    /// Judges drafted frame `i` codebook by codebook; `out` is the target's
    /// backbone output at its position.
    fn judge(&mut self, d: &Drafted, i: usize, out: &BackboneOut, scored: &ScoredFrames) -> Result<Verdict, LmError> {
        let dims = self.target.dims();
        for k in 0..dims.codebooks {
            let p = if k == 0 {
                self.sampler.probs(&out.c0_logits)
            } else {
                self.sampler
                    .probs(&scored_logits(scored, i, k, dims.codebooks, dims.audio_vocab))
            };
            self.stats.judged[k] += 1;
            match self.sampler.settle(&p, &d.probs[i][k], d.codes[i][k])? {
                None => self.stats.accepted[k] += 1,
                Some(code) => return Ok(Verdict::Rejected { codebook: k, code }),
            }
        }
        Ok(Verdict::Accepted)
    }

    /// Finishes drafted frame `i` rejected at `codebook` (redrawn as `code`)
    /// with the target's decoder.
    fn complete(
        &mut self,
        drafted: &[i64],
        codebook: usize,
        code: i64,
        out: &BackboneOut,
        scored: &ScoredFrames,
        i: usize,
    ) -> Result<Vec<i64>, LmError> {
        let (v, batch) = (self.sampler.vocab, self.t_state.batch());
        let calls = &mut self.stats.target_decoder_calls;
        let sampler = &mut self.sampler;
        let mut pick = |_k: usize, logits: &[f32]| -> Result<Vec<i64>, LmError> {
            *calls += 1;
            let c = sampler.draw(&sampler.probs(logits))?;
            Ok(vec![c; logits.len() / v])
        };
        let rows = if codebook == 0 {
            self.target
                .decode_frame(&mut self.t_state, &out.hidden, &vec![code; batch], &mut pick)?
        } else {
            let mut codes = drafted[..codebook].to_vec();
            codes.push(code);
            self.target
                .continue_frame(&mut self.t_state, scored, i, &codes, &mut pick)?
        };
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// A frame sampled by the target from its backbone output `out`.
    fn sample_target(&mut self, out: &BackboneOut) -> Result<Vec<i64>, LmError> {
        let calls = &mut self.stats.target_decoder_calls;
        sample_frame(
            self.target,
            &mut self.t_state,
            out,
            &mut self.sampler,
            &mut Vec::new(),
            calls,
        )
    }

    /// Keeps the positions of frames `..n` (the prompt, then frames fed so far)
    /// in both backbone caches.
    fn roll_back(&mut self, n: usize) {
        self.t_state.backbone.truncate(self.prompt_len + n);
        self.d_state.backbone.truncate(self.prompt_len + n);
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
        });
        if end {
            return Ok(Some(StopReason::EndOfAudio));
        }
        self.frames.push(codes);
        Ok((index == max_extra).then_some(StopReason::MaxLength))
    }
}

/// Samples a frame from one-position backbone outputs `out`: code 0 from
/// `c0_logits`, then the decoder walk. Pushes each codebook's distribution to
/// `probs` and counts decoder calls in `calls`. Returns row 0's codes.
fn sample_frame(
    lm: &mut HeartMula,
    st: &mut LmState,
    out: &BackboneOut,
    sampler: &mut Sampler<'_>,
    probs: &mut Vec<Vec<f32>>,
    calls: &mut usize,
) -> Result<Vec<i64>, LmError> {
    let v = sampler.vocab;
    let p0 = sampler.probs(&out.c0_logits);
    let c0 = sampler.draw(&p0)?;
    probs.push(p0);
    let rows = lm.decode_frame(st, &out.hidden, &vec![c0; st.batch()], &mut |_k, logits| {
        *calls += 1;
        let p = sampler.probs(logits);
        let c = sampler.draw(&p)?;
        probs.push(p);
        Ok(vec![c; logits.len() / v])
    })?;
    Ok(rows.into_iter().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_keeps_the_excess_of_p_over_q() {
        assert_eq!(residual(&[0.5, 0.3, 0.2], &[0.2, 0.6, 0.2]), vec![0.3, 0.0, 0.0]);
        assert_eq!(
            residual(&[0.5, 0.5], &[0.5, 0.5]),
            vec![0.5, 0.5],
            "p = q: falls back to p"
        );
    }

    #[test]
    fn scored_logits_pick_frame_row_and_codebook() {
        // 2 frames, batch 2, 3 codebooks (2 scored), vocab 2: value = index.
        let s = ScoredFrames {
            logits: (0..16).map(|i| i as f32).collect(),
            frames: 2,
            batch: 2,
            cache: crate::lm::KvCache::new(
                crate::lm::CacheShape {
                    layers: 1,
                    batch: 4,
                    kv_heads: 1,
                    head_dim: 1,
                },
                crate::lm::CacheDtype::F32,
                0,
                0,
            )
            .unwrap(),
        };
        // Frame 1, codebook 2: rows 2 and 3, second slot: [2·2+1]·2 = 10 and [3·2+1]·2 = 14.
        assert_eq!(scored_logits(&s, 1, 2, 3, 2), vec![10.0, 11.0, 14.0, 15.0]);
        assert_eq!(scored_logits(&s, 0, 1, 3, 2), vec![0.0, 1.0, 4.0, 5.0]);
    }

    fn sampler(noise: &mut dyn NoiseSource) -> Sampler<'_> {
        Sampler {
            generation: GenParams {
                cfg_scale: 1.0,
                max_audio_length_ms: 0,
            },
            params: SamplerParams {
                temperature: 1.0,
                top_k: 1,
            },
            vocab: 1,
            noise,
        }
    }

    #[test]
    fn settled_tokens_follow_p_whatever_q() {
        // Partly overlapping supports, as with a draft that ranks codes differently.
        let p = [0.5, 0.3, 0.2, 0.0, 0.0];
        let q = [0.1, 0.1, 0.3, 0.5, 0.0];
        let mut noise = super::super::SeededNoise::new(11);
        let mut s = sampler(&mut noise);
        let n = 40000;
        let (mut counts, mut kept) = ([0f64; 5], 0);
        for _ in 0..n {
            let x = s.draw(&q).unwrap();
            let code = match s.settle(&p, &q, x).unwrap() {
                None => {
                    kept += 1;
                    x
                }
                Some(y) => y,
            };
            counts[code as usize] += 1.0;
        }
        // Expected acceptance: sum of min(p, q) = 0.4.
        assert!((kept as f64 / n as f64 - 0.4).abs() < 0.015, "kept {kept}");
        assert_eq!(counts[3] + counts[4], 0.0, "codes outside p's support");
        let chi2: f64 = (0..3)
            .map(|i| {
                let e = p[i] as f64 * n as f64;
                (counts[i] - e).powi(2) / e
            })
            .sum();
        // Upper 0.1% point of chi-square with 2 df is 13.8. Drawing the
        // replacement from p instead of the residual gives ~(0.40, 0.28, 0.32):
        // a chi-square in the thousands.
        assert!(chi2 < 13.8, "chi-square {chi2:.1}, counts {counts:?}");
        assert!(s.settle(&p, &q, 5).is_err(), "code outside the vocabulary");
    }

    #[test]
    fn acceptance_probability_is_min_1_p_over_q() {
        let mut noise = super::super::SeededNoise::new(3);
        let mut s = sampler(&mut noise);
        let n = 20000;
        let mut kept = 0;
        for _ in 0..n {
            kept += s.accept(0.3, 0.4).unwrap() as usize;
        }
        let rate = kept as f64 / n as f64;
        // Binomial sd at 0.75 and n = 20000 is 0.003; 5 sd.
        assert!((rate - 0.75).abs() < 0.015, "rate {rate}");
        assert!((0..100).all(|_| s.accept(0.5, 0.4).unwrap()), "p >= q always keeps");
        assert!((0..100).all(|_| !s.accept(0.0, 0.4).unwrap()), "p = 0 never keeps");
    }
}
