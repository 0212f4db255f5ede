//! Sampled speculative decoding has the target's distribution, on tiny-a over
//! many fixed seeds (deterministic), in the first three frames:
//!
//! - **Against the target's exact conditionals.** For every run and compared
//!   position, the target (and the draft) are teacher-forced with that run's
//!   earlier codes to get the distribution `p` the code should have been drawn
//!   from (and the draft's `q`). A code outside `p`'s top-k support fails at
//!   once; otherwise codes are binned by their rank in `p` crossed with
//!   `q ≥ p`, and a chi-square compares the bin counts with their expectations
//!   (with non-identical trials this statistic is conservative). Drawing a
//!   rejected code from `p` instead of the residual fails it (checked by hand:
//!   chi-square 30 against a bound of 16.6 at frame 0, codebook 0).
//! - **Against plain sampling.** A two-sample chi-square on each compared
//!   position's codes.
//!
//! Both with a far draft (early exit: rejected frames are mostly finished by
//! the target) and a close one (perturbed weights: mostly by the draft).
//! Controls: plain sampling passes the first test, and plain sampling from the
//! far draft fails it.

use heart_test_support::drafts as spec_support;

use std::collections::BTreeMap;

use heart_runtime::lm::sampler::top_k_probs;
use heart_runtime::lm::{
    GenParams, HeartMula, Prompt, SamplerParams, Sampling, SeededNoise, SpecParams, generate, generate_speculative,
};
use spec_support::{Draft, draft, prompt, target};

/// Runs per sampler.
const RUNS: u64 = 600;
/// (frame, codebook) positions compared, in the first three frames (all
/// speculated; frame 0's codebook 0 has a fixed context, the prompt).
const POSITIONS: [(usize, usize); 6] = [(0, 0), (0, 5), (1, 0), (1, 1), (1, 7), (2, 4)];
/// Upper 0.1% point of the standard normal (for chi-square critical values).
const Z_999: f64 = 3.0902;

const SAMPLER: SamplerParams = SamplerParams {
    temperature: 1.0,
    top_k: 4,
};

const PARAMS: GenParams = GenParams {
    cfg_scale: 1.5,
    max_audio_length_ms: 160,
};

/// Every frame of one run, the end-of-audio frame included.
type Frames = Vec<Vec<i64>>;

/// Plain sampling from `lm`.
fn plain_runs(lm: &mut HeartMula, p: &Prompt, seed0: u64, runs: u64) -> Vec<Frames> {
    (0..runs)
        .map(|i| {
            let mut noise = SeededNoise::new(seed0 + i);
            let mut picker = Sampling {
                params: SAMPLER,
                noise: &mut noise,
            };
            let mut frames = Vec::new();
            generate(lm, p, &PARAMS, &mut picker, &mut |e| frames.push(e.codes[0].clone())).unwrap();
            frames
        })
        .collect()
}

/// Speculative sampling; also returns the overall acceptance rate and how many
/// rejected frames the draft finished.
fn spec_runs(t: &mut HeartMula, d: &mut HeartMula, p: &Prompt, seed0: u64) -> (Vec<Frames>, f64, usize) {
    let spec = SpecParams {
        generation: PARAMS,
        sampler: SAMPLER,
        draft_frames: 2,
    };
    let (mut judged, mut accepted, mut finishes) = (0, 0, 0);
    let runs = (0..RUNS)
        .map(|i| {
            let mut noise = SeededNoise::new(seed0 + i);
            let mut frames = Vec::new();
            let out = generate_speculative(t, d, p, &spec, &mut noise, &mut |e| frames.push(e.codes.to_vec())).unwrap();
            judged += out.stats.judged.iter().sum::<usize>();
            accepted += out.stats.accepted.iter().sum::<usize>();
            finishes += out.stats.draft_finishes;
            frames
        })
        .collect();
    (runs, accepted as f64 / judged as f64, finishes)
}

/// The target's sampling distribution at each of [`POSITIONS`] given the
/// run's earlier codes (`None` where the run ended before that frame).
fn conditionals(lm: &mut HeartMula, p: &Prompt, frames: &Frames) -> Vec<Option<Vec<f32>>> {
    let v = lm.dims().audio_vocab;
    let probs = |logits: &[f32]| top_k_probs(&PARAMS.sampler_logits(logits, v), SAMPLER);
    let batch = PARAMS.batch();
    let mut st = lm.new_state(batch, p.len() + 2).unwrap();
    let mut out = lm.prefill(&mut st, p).unwrap();
    let mut found = vec![None; POSITIONS.len()];
    for (f, frame) in frames.iter().enumerate().take(3) {
        let mut recorded = BTreeMap::new();
        lm.decode_frame(&mut st, &out.hidden, &vec![frame[0]; batch], &mut |k, logits| {
            recorded.insert(k, probs(logits));
            Ok(vec![frame[k]; batch])
        })
        .unwrap();
        recorded.insert(0, probs(&out.c0_logits));
        for (j, &(pf, pk)) in POSITIONS.iter().enumerate() {
            if pf == f {
                found[j] = recorded.remove(&pk);
            }
        }
        if f < 2 {
            out = lm.feed_frame(&mut st, &vec![frame.clone(); batch]).unwrap();
        }
    }
    found
}

/// Bin counts at one position. A code's bin is its rank in the target's `p`
/// (0, 1, 2, or 3 and lower) crossed with whether the draft's `q` gives it at
/// least `p`: a speculative sampler that leaks the draft's preferences into its
/// output moves mass into the `q ≥ p` bins. `observed[b]` counts runs whose
/// code fell in bin `b`, `expected[b]` sums `p` over each run's codes in `b`;
/// `outside` counts codes the target gives probability 0.
#[derive(Debug, Default, Clone, Copy)]
struct Bins {
    observed: [f64; 8],
    expected: [f64; 8],
    outside: usize,
}

impl Bins {
    fn add(&mut self, p: &[f32], q: &[f32], code: i64) {
        let bin = |i: usize| p.iter().filter(|&&x| x > p[i]).count().min(3) * 2 + (q[i] >= p[i]) as usize;
        let x = code as usize;
        if p[x] == 0.0 {
            self.outside += 1;
            return;
        }
        for (i, &pi) in p.iter().enumerate().filter(|&(_, &pi)| pi > 0.0) {
            self.expected[bin(i)] += pi as f64;
        }
        self.observed[bin(x)] += 1.0;
    }

    /// Pearson statistic over the bins expecting at least 5 codes (the rest
    /// pooled into one), and its df.
    fn chi_square(&self) -> (f64, usize) {
        let mut bins: Vec<(f64, f64)> = Vec::new();
        let mut pooled = (0.0, 0.0);
        for (&o, &e) in self.observed.iter().zip(&self.expected) {
            if e >= 5.0 {
                bins.push((o, e));
            } else {
                pooled = (pooled.0 + o, pooled.1 + e);
            }
        }
        if pooled.1 > 0.0 {
            bins.push(pooled);
        }
        let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
        (stat, bins.len().saturating_sub(1))
    }
}

/// Bin statistics of `runs` at every position, against the target `t` and
/// the draft `d`.
fn bins(t: &mut HeartMula, d: &mut HeartMula, p: &Prompt, runs: &[Frames]) -> Vec<Bins> {
    let mut out = vec![Bins::default(); POSITIONS.len()];
    for frames in runs {
        let target = conditionals(t, p, frames);
        let draft = conditionals(d, p, frames);
        for (j, (tp, dq)) in target.into_iter().zip(draft).enumerate() {
            if let (Some(tp), Some(dq)) = (tp, dq) {
                let (f, k) = POSITIONS[j];
                out[j].add(&tp, &dq, frames[f][k]);
            }
        }
    }
    out
}

/// Two-sample chi-square over the codes at position `j` (bins with fewer than
/// 10 joint counts pooled): the statistic and its df.
fn two_sample(a: &[Frames], b: &[Frames], j: usize) -> (f64, usize) {
    let (f, k) = POSITIONS[j];
    let code = |frames: &Frames| frames.get(f).map_or(-1, |c| c[k]);
    let mut counts: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    a.iter().for_each(|r| counts.entry(code(r)).or_default().0 += 1.0);
    b.iter().for_each(|r| counts.entry(code(r)).or_default().1 += 1.0);
    let (mut bins, mut pooled) = (Vec::new(), (0.0, 0.0));
    for (x, y) in counts.into_values() {
        if x + y < 10.0 {
            pooled = (pooled.0 + x, pooled.1 + y);
        } else {
            bins.push((x, y));
        }
    }
    if pooled.0 + pooled.1 > 0.0 {
        bins.push(pooled);
    }
    let stat = bins.iter().map(|(x, y)| (x - y) * (x - y) / (x + y)).sum();
    (stat, bins.len().saturating_sub(1))
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson–Hilferty).
fn critical(df: usize) -> f64 {
    let k = df.max(1) as f64;
    let h = 2.0 / (9.0 * k);
    k * (1.0 - h + Z_999 * h.sqrt()).powi(3)
}

/// Asserts every position's bin statistic passes.
fn assert_matches(what: &str, r: &[Bins]) {
    for (pos, b) in POSITIONS.iter().zip(r) {
        let (stat, df) = b.chi_square();
        eprintln!("{what} {pos:?}: {b:?} chi-square {stat:.1} ({df} df)");
        assert_eq!(b.outside, 0, "{what} {pos:?}: codes outside the target's support");
        assert!(df >= 3, "{what} {pos:?}: too few bins");
        assert!(
            stat < critical(df),
            "{what} {pos:?}: chi-square {stat:.1} > {:.1}",
            critical(df)
        );
    }
}

#[test]
fn speculative_sampling_has_the_targets_distribution() {
    let mut t = target();
    let mut d = draft(Draft::EarlyExit);
    let p = prompt("generate_sampled_cfg1p5");

    let (spec, acceptance, _) = spec_runs(&mut t, &mut d, &p, 1_000_000);
    eprintln!("acceptance {acceptance:.3}");
    assert!(
        (0.2..0.9).contains(&acceptance),
        "the draft should be rejected often enough to matter: acceptance {acceptance}"
    );
    assert_matches("speculative", &bins(&mut t, &mut d, &p, &spec));

    let plain = plain_runs(&mut t, &p, 0, RUNS);
    assert_matches("plain", &bins(&mut t, &mut d, &p, &plain));
    for (j, pos) in POSITIONS.iter().enumerate() {
        let (stat, df) = two_sample(&plain, &spec, j);
        assert!(df >= 3, "{pos:?}: too few bins ({df} df)");
        assert!(
            stat < critical(df),
            "{pos:?}: plain vs speculative chi-square {stat:.1} with {df} df"
        );
    }
}

#[test]
fn frames_finished_by_a_close_draft_keep_the_distribution() {
    let mut t = target();
    let mut d = draft(Draft::Perturbed);
    let p = prompt("generate_sampled_cfg1p5");
    let (spec, acceptance, finishes) = spec_runs(&mut t, &mut d, &p, 3_000_000);
    eprintln!("close draft: acceptance {acceptance:.3}, {finishes} rejected frames finished by the draft");
    assert!(finishes > 50, "too few frames finished by the draft: {finishes}");
    assert_matches("close draft", &bins(&mut t, &mut d, &p, &spec));
}

#[test]
fn the_draft_alone_fails_the_conditional_test() {
    let mut t = target();
    let mut d = draft(Draft::EarlyExit);
    let p = prompt("generate_sampled_cfg1p5");
    let runs = plain_runs(&mut d, &p, 2_000_000, 200);
    let b = bins(&mut t, &mut d, &p, &runs);
    let outside: usize = b.iter().map(|b| b.outside).sum();
    let worst = b
        .iter()
        .map(|b| {
            let (stat, df) = b.chi_square();
            stat / critical(df)
        })
        .fold(0.0, f64::max);
    assert!(
        outside > 0 || worst > 1.0,
        "the test cannot tell the draft from the target: {b:?}"
    );
}
