//! Injectable Gaussian noise for the flow-matching solver.
//!
//! Upstream draws each window's initial Euler state `x₀ ~ N(0, 1)` from torch's
//! device RNG, which no port can reproduce. Production uses a seeded ChaCha stream
//! ([`SeededNoise`]); conformance replays the fixture's recorded tensors
//! ([`RecordedNoise`]).

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

/// A source of standard-normal values, consumed window by window.
pub trait NoiseSource {
    /// Fills `out` with the next `out.len()` standard-normal values.
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted>;
}

/// A recorded noise stream ran out before the decode finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("recorded noise exhausted: {requested} values requested, {remaining} left")]
pub struct NoiseExhausted {
    /// Values asked for.
    pub requested: usize,
    /// Values that were left.
    pub remaining: usize,
}

/// Deterministic Gaussian noise from a seed (ChaCha20, `StandardNormal`).
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha20Rng,
}

impl SeededNoise {
    /// A stream that depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted> {
        for v in out {
            *v = StandardNormal.sample(&mut self.rng);
        }
        Ok(())
    }
}

/// Replays a recorded tensor (e.g. the fixture's `noise` `[S, 744, 256]`) in order.
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    values: Vec<f32>,
    pos: usize,
}

impl RecordedNoise {
    /// Replays `values` from the start.
    pub fn new(values: Vec<f32>) -> Self {
        Self { values, pos: 0 }
    }
}

impl NoiseSource for RecordedNoise {
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted> {
        let remaining = self.values.len() - self.pos;
        if out.len() > remaining {
            return Err(NoiseExhausted {
                requested: out.len(),
                remaining,
            });
        }
        out.copy_from_slice(&self.values[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let mut a = vec![0f32; 20_000];
        let mut b = vec![0f32; 20_000];
        SeededNoise::new(7).fill(&mut a).unwrap();
        SeededNoise::new(7).fill(&mut b).unwrap();
        assert_eq!(a, b);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        let mut c = vec![0f32; 4];
        SeededNoise::new(8).fill(&mut c).unwrap();
        assert_ne!(&a[..4], &c[..]);
    }

    #[test]
    fn recorded_noise_replays_then_reports_exhaustion() {
        let mut r = RecordedNoise::new(vec![1.0, 2.0, 3.0]);
        let mut two = [0f32; 2];
        r.fill(&mut two).unwrap();
        assert_eq!(two, [1.0, 2.0]);
        let err = r.fill(&mut two).unwrap_err();
        assert_eq!(
            err,
            NoiseExhausted {
                requested: 2,
                remaining: 1
            }
        );
    }
}
