//! Reproducible random streams shared by the sampler and the codec: a seeded
//! ChaCha20 stream of one distribution's draws ([`Seeded`]) and the replay of
//! recorded values ([`Recorded`]).
//!
//! What the values mean stays with their consumer, each with its own trait:
//! the sampler's exponential race takes Exp(1) draws
//! ([`crate::lm::NoiseSource`], implemented for [`Seeded<Exp1>`]), the
//! codec's flow solver N(0, 1) draws ([`crate::codec::NoiseSource`],
//! implemented for [`Seeded<StandardNormal>`]), so one cannot be handed to
//! the other. A recording is whatever the reference drew and serves either.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};

/// Deterministic draws of distribution `D` from a seed (ChaCha20: the same
/// values on every platform).
#[derive(Debug, Clone)]
pub struct Seeded<D> {
    rng: ChaCha20Rng,
    dist: D,
}

impl<D: Distribution<f32>> Seeded<D> {
    /// A stream of `dist` draws that depends only on `seed`.
    pub fn with_distribution(seed: u64, dist: D) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            dist,
        }
    }

    /// Fills `out` with the next `out.len()` draws.
    pub fn draw_into(&mut self, out: &mut [f32]) {
        for v in out {
            *v = self.dist.sample(&mut self.rng);
        }
    }
}

impl Seeded<Exp1> {
    /// Exp(1) draws from `seed` (the sampler's race noise).
    pub fn new(seed: u64) -> Self {
        Self::with_distribution(seed, Exp1)
    }
}

impl Seeded<StandardNormal> {
    /// N(0, 1) draws from `seed` (the codec's flow noise).
    pub fn new(seed: u64) -> Self {
        Self::with_distribution(seed, StandardNormal)
    }
}

/// A recorded stream ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("recorded noise exhausted: {requested} values requested, {remaining} left")]
pub struct Exhausted {
    /// Values asked for.
    pub requested: usize,
    /// Values that were left.
    pub remaining: usize,
}

/// Replays recorded values (e.g. a fixture's noise tensor) in order.
#[derive(Debug, Clone)]
pub struct Recorded {
    values: Vec<f32>,
    pos: usize,
}

impl Recorded {
    /// Replays `values` from the start.
    pub fn new(values: Vec<f32>) -> Self {
        Self { values, pos: 0 }
    }

    /// Fills `out` with the next `out.len()` values; fails, consuming
    /// nothing, when fewer are left.
    pub fn replay_into(&mut self, out: &mut [f32]) -> Result<(), Exhausted> {
        let remaining = self.values.len() - self.pos;
        if out.len() > remaining {
            return Err(Exhausted {
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
    fn seeded_streams_depend_only_on_seed_and_distribution() {
        let draw = |mut s: Seeded<Exp1>| {
            let mut v = [0f32; 64];
            s.draw_into(&mut v);
            v
        };
        assert_eq!(draw(Seeded::<Exp1>::new(5)), draw(Seeded::<Exp1>::new(5)));
        assert_ne!(draw(Seeded::<Exp1>::new(5)), draw(Seeded::<Exp1>::new(6)));
        let (mut e, mut n) = ([0f32; 64], [0f32; 64]);
        Seeded::<Exp1>::new(5).draw_into(&mut e);
        Seeded::<StandardNormal>::new(5).draw_into(&mut n);
        assert_ne!(e, n);
    }

    #[test]
    fn recorded_replays_in_order_then_reports_exhaustion() {
        let mut r = Recorded::new(vec![1.0, 2.0, 3.0]);
        let mut two = [0f32; 2];
        r.replay_into(&mut two).unwrap();
        assert_eq!(two, [1.0, 2.0]);
        let err = r.replay_into(&mut two).unwrap_err();
        assert_eq!(
            err,
            Exhausted {
                requested: 2,
                remaining: 1
            }
        );
        let mut one = [0f32; 1];
        r.replay_into(&mut one).unwrap();
        assert_eq!(one, [3.0], "a failed fill consumes nothing");
    }
}
