//! Injectable Gaussian noise for the flow-matching solver.
//!
//! Upstream draws each window's initial Euler state `x₀ ~ N(0, 1)` from torch's
//! device RNG, which no port can reproduce. Production uses a seeded ChaCha stream
//! ([`SeededNoise`]); conformance replays the fixture's recorded tensors
//! ([`RecordedNoise`]). Both streams are [`crate::noise`]'s, shared with the sampler.

use rand_distr::StandardNormal;

pub use crate::noise::Exhausted as NoiseExhausted;
use crate::noise::{Recorded, Seeded};

/// A source of standard-normal values, consumed window by window.
pub trait NoiseSource {
    /// Fills `out` with the next `out.len()` standard-normal values.
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted>;
}

/// Deterministic Gaussian noise from a seed (ChaCha20, `StandardNormal`):
/// `SeededNoise::new(seed)`.
pub type SeededNoise = Seeded<StandardNormal>;

/// Replays a recorded tensor (e.g. the fixture's `noise` `[S, 744, 256]`) in order.
pub type RecordedNoise = Recorded;

impl NoiseSource for Seeded<StandardNormal> {
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted> {
        self.draw_into(out);
        Ok(())
    }
}

impl NoiseSource for Recorded {
    fn fill(&mut self, out: &mut [f32]) -> Result<(), NoiseExhausted> {
        self.replay_into(out)
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
}
