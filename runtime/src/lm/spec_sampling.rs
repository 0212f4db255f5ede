//! Token-level speculative sampling (Leviathan et al., Chen et al.): keep a
//! drafted code `x ~ q` with probability `min(1, p(x)/q(x))`, else draw from
//! the normalized residual `max(0, p − q)`; the result is distributed as `p`.
//! `p` and `q` are the distributions the plain sampler draws from (CFG mix,
//! temperature, top-k with ties, softmax), and every random number comes from
//! the run's [`NoiseSource`]: uniforms as `exp(−e)` of Exp(1) draws, categorical
//! draws as exponential races.

use super::LmError;
use super::frame_loop::GenParams;
use super::sampler::{NoiseSource, SamplerParams, race, top_k_probs};

/// The sampling side: distributions, draws and acceptance tests.
pub(crate) struct Sampler<'a> {
    /// Guidance (how raw logits become the sampler's logits).
    pub generation: GenParams,
    /// Temperature and top-k.
    pub params: SamplerParams,
    /// Vocabulary `V`.
    pub vocab: usize,
    /// Every random number of the run.
    pub noise: &'a mut dyn NoiseSource,
}

impl Sampler<'_> {
    /// The distribution sampled from, given raw logits `[B, V]`.
    pub(crate) fn probs(&self, logits: &[f32]) -> Vec<f32> {
        top_k_probs(&self.generation.sampler_logits(logits, self.vocab), self.params)
    }

    /// One draw from (possibly unnormalized) `weights`.
    pub(crate) fn draw(&mut self, weights: &[f32]) -> Result<i64, LmError> {
        let mut q = vec![0f32; weights.len()];
        self.noise.fill_exponential(&mut q)?;
        Ok(race(weights, &q) as i64)
    }

    /// Speculative sampling of one token: keeps the drafted code `x ~ q` with
    /// probability `min(1, p(x)/q(x))` (`None`), else returns a code drawn from
    /// the residual `max(0, p − q)`. Either way the code is distributed as `p`.
    pub(crate) fn settle(&mut self, p: &[f32], q: &[f32], x: i64) -> Result<Option<i64>, LmError> {
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
    pub(crate) fn accept(&mut self, p: f32, q: f32) -> Result<bool, LmError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn residual_keeps_the_excess_of_p_over_q() {
        assert_eq!(residual(&[0.5, 0.3, 0.2], &[0.2, 0.6, 0.2]), vec![0.3, 0.0, 0.0]);
        assert_eq!(
            residual(&[0.5, 0.5], &[0.5, 0.5]),
            vec![0.5, 0.5],
            "p = q: falls back to p"
        );
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
