//! Sampling, as pure functions over logits (spec §3.2–3.3, upstream
//! `sample_topk`): CFG mix → temperature → top-k with ties at the threshold
//! kept → softmax → exponential race `argmax_i p_i / q_i` with `q_i ~ Exp(1)`.
//!
//! The race is exact categorical sampling, so any noise source gives the
//! reference distribution; conformance injects the reference's recorded `q`
//! through [`RecordedNoise`] and reproduces its codes exactly. The streams
//! themselves are [`crate::noise`]'s, shared with the codec. The same
//! probabilities ([`top_k_probs`]) serve speculative acceptance tests.

use rand_distr::Exp1;

use super::LmError;
use crate::noise::{Recorded, Seeded};

/// Sampling knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// Logits are divided by this (> 0).
    pub temperature: f32,
    /// Candidates kept (ties at the k-th value are kept too); >= 1.
    pub top_k: usize,
}

impl SamplerParams {
    /// Checks the knobs; upstream would produce NaNs or an empty support.
    pub fn validate(&self) -> Result<(), LmError> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(LmError::Input(format!(
                "temperature must be a positive finite number, got {}",
                self.temperature
            )));
        }
        if self.top_k == 0 {
            return Err(LmError::Input("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

/// Where the exponential race's `q ~ Exp(1)` comes from.
pub trait NoiseSource {
    /// Fills `q` with i.i.d. Exp(1) draws for one sampling decision.
    fn fill_exponential(&mut self, q: &mut [f32]) -> Result<(), LmError>;
}

/// Seeded ChaCha20 stream of Exp(1) draws (reproducible across platforms):
/// `SeededNoise::new(seed)`.
pub type SeededNoise = Seeded<Exp1>;

/// Replays recorded noise: one vocab-sized row per sampling decision, in order.
pub type RecordedNoise = Recorded;

impl NoiseSource for Seeded<Exp1> {
    fn fill_exponential(&mut self, q: &mut [f32]) -> Result<(), LmError> {
        self.draw_into(q);
        Ok(())
    }
}

impl NoiseSource for Recorded {
    fn fill_exponential(&mut self, q: &mut [f32]) -> Result<(), LmError> {
        self.replay_into(q).map_err(|e| LmError::Input(e.to_string()))
    }
}

/// Classifier-free guidance `u + (c − u)·scale`.
pub fn cfg_mix(cond: &[f32], uncond: &[f32], scale: f32) -> Vec<f32> {
    cond.iter().zip(uncond).map(|(&c, &u)| u + (c - u) * scale).collect()
}

/// Probabilities after temperature and top-k: entries below the k-th largest
/// scaled logit get probability 0 (ties with it are kept); the rest are a
/// softmax (computed in f32 like the reference's `softmax(log_softmax(x))`).
pub fn top_k_probs(logits: &[f32], params: SamplerParams) -> Vec<f32> {
    let x: Vec<f32> = logits.iter().map(|&l| l / params.temperature).collect();
    let threshold = kth_largest(&x, params.top_k);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = x
        .iter()
        .map(|&v| if v < threshold { 0.0 } else { (v - max).exp() })
        .collect();
    let sum: f32 = p.iter().sum();
    for v in &mut p {
        *v /= sum;
    }
    p
}

/// The exponential race: `argmax_i p_i / q_i`, the first index winning ties.
pub fn race(probs: &[f32], q: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, (&p, &q)) in probs.iter().zip(q).enumerate() {
        let r = p / q;
        if r > best.1 {
            best = (i, r);
        }
    }
    best.0
}

/// Samples one token from `logits` with `params`, drawing noise from `noise`.
pub fn sample(logits: &[f32], params: SamplerParams, noise: &mut dyn NoiseSource) -> Result<usize, LmError> {
    let probs = top_k_probs(logits, params);
    let mut q = vec![0f32; probs.len()];
    noise.fill_exponential(&mut q)?;
    Ok(race(&probs, &q))
}

/// The k-th largest value (k clamped to the length; NaNs sort last).
fn kth_largest(x: &[f32], k: usize) -> f32 {
    let mut sorted = x.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    sorted[k.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SamplerParams = SamplerParams {
        temperature: 1.0,
        top_k: 2,
    };

    #[test]
    fn ties_at_the_threshold_are_kept() {
        let p = top_k_probs(&[1.0, 3.0, 1.0, 0.5, 3.0, 1.0], SamplerParams { top_k: 3, ..P });
        // threshold = 3rd largest = 1.0: all three 1.0s stay, 0.5 goes.
        assert_eq!(p.iter().filter(|&&v| v > 0.0).count(), 5);
        assert_eq!(p[3], 0.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[0], p[2]);
    }

    #[test]
    fn temperature_sharpens_before_softmax() {
        let hot = top_k_probs(&[0.0, 1.0], SamplerParams { temperature: 2.0, ..P });
        let cold = top_k_probs(&[0.0, 1.0], SamplerParams { temperature: 0.5, ..P });
        assert!((hot[1] - 1.0 / (1.0 + (-0.5f32).exp())).abs() < 1e-6);
        assert!((cold[1] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn race_picks_argmax_of_p_over_q_first_index_on_ties() {
        assert_eq!(race(&[0.5, 0.3, 0.2], &[1.0, 0.1, 1.0]), 1);
        assert_eq!(race(&[0.5, 0.5], &[1.0, 1.0]), 0);
        assert_eq!(race(&[0.0, 0.0, 1.0], &[1e-9, 1.0, 5.0]), 2);
    }

    #[test]
    fn top_1_is_greedy_whatever_the_noise() {
        let mut noise = SeededNoise::new(7);
        for _ in 0..50 {
            let t = sample(&[0.1, 2.0, -1.0, 1.9], SamplerParams { top_k: 1, ..P }, &mut noise).unwrap();
            assert_eq!(t, 1);
        }
    }

    #[test]
    fn cfg_mix_extrapolates_from_uncond() {
        assert_eq!(cfg_mix(&[2.0, 0.0], &[1.0, 1.0], 1.5), vec![2.5, -0.5]);
    }

    #[test]
    fn seeded_noise_is_reproducible_and_exponential() {
        let (mut a, mut b) = (SeededNoise::new(1), SeededNoise::new(1));
        let (mut x, mut y) = (vec![0f32; 20000], vec![0f32; 20000]);
        a.fill_exponential(&mut x).unwrap();
        b.fill_exponential(&mut y).unwrap();
        assert_eq!(x, y);
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        assert!(x.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn recorded_noise_replays_in_order_then_errors() {
        let mut n = RecordedNoise::new(vec![1.0, 2.0, 3.0, 4.0]);
        let mut q = [0f32; 2];
        n.fill_exponential(&mut q).unwrap();
        assert_eq!(q, [1.0, 2.0]);
        n.fill_exponential(&mut q).unwrap();
        assert_eq!(q, [3.0, 4.0]);
        assert!(
            n.fill_exponential(&mut q)
                .unwrap_err()
                .to_string()
                .contains("exhausted")
        );
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(SamplerParams { temperature: 0.0, ..P }.validate().is_err());
        assert!(SamplerParams { top_k: 0, ..P }.validate().is_err());
        assert!(P.validate().is_ok());
    }
}
