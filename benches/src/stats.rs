//! Summary statistics over repeated measurements, a timer that produces them,
//! and the [`Row`] every figure is reported as.
//!
//! Benchmarks report the median (robust to the odd slow run a shared machine
//! produces), the extremes, and the 10th/90th percentiles as the spread.
//! Percentiles interpolate linearly between order statistics (numpy's default
//! `linear` method): for `n` sorted samples the `q`-quantile sits at index
//! `q·(n−1)`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use heart::cost::percent_of_floor;

use super::BenchError;

/// Median, extremes and spread of `n` samples (all in the samples' unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Median (50th percentile).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Stats {
    /// Statistics of `samples`; an error when there are none or one is not finite.
    pub fn from_samples(samples: &[f64]) -> Result<Self, BenchError> {
        if samples.is_empty() {
            return Err(BenchError::Plan("statistics of zero samples".into()));
        }
        if let Some((i, x)) = samples.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(BenchError::Plan(format!("sample {i} is not finite ({x})")));
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Ok(Self {
            n: sorted.len(),
            median: quantile_sorted(&sorted, 0.5),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p10: quantile_sorted(&sorted, 0.1),
            p90: quantile_sorted(&sorted, 0.9),
        })
    }

    /// A single measurement (every statistic equals it, `n` = 1).
    pub fn single(value: f64) -> Self {
        Self {
            n: 1,
            median: value,
            min: value,
            max: value,
            p10: value,
            p90: value,
        }
    }

    /// Every statistic multiplied by `factor` (> 0), e.g. seconds → milliseconds.
    pub fn scaled(&self, factor: f64) -> Self {
        Self {
            n: self.n,
            median: self.median * factor,
            min: self.min * factor,
            max: self.max * factor,
            p10: self.p10 * factor,
            p90: self.p90 * factor,
        }
    }

    /// The statistics of `numerator / x` for a time-like quantity `x > 0`: a
    /// rate. The order flips (the fastest run gives the largest rate), so `min`
    /// comes from `max` and `p10` from `p90`.
    pub fn reciprocal(&self, numerator: f64) -> Self {
        Self {
            n: self.n,
            median: numerator / self.median,
            min: numerator / self.max,
            max: numerator / self.min,
            p10: numerator / self.p90,
            p90: numerator / self.p10,
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of non-empty ascending `sorted`, interpolated
/// linearly between neighbouring samples.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// How many untimed warm-up runs precede how many timed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    /// Untimed runs first (page faults, lazy initialisation, caches, ORT's arena).
    pub warmup: usize,
    /// Timed runs (at least 1).
    pub timed: usize,
}

impl Repeats {
    /// `warmup` untimed then `timed` timed runs.
    pub fn new(warmup: usize, timed: usize) -> Self {
        Self { warmup, timed }
    }

    /// An error unless at least one run is timed.
    pub fn check(&self) -> Result<(), BenchError> {
        if self.timed == 0 {
            return Err(BenchError::Plan("at least one timed repeat is needed".into()));
        }
        Ok(())
    }
}

/// Runs `f` `repeats.warmup` times untimed, then `repeats.timed` times, each
/// timed on its own; returns the statistics of the timed runs in seconds. The
/// first error of `f` ends the measurement and is returned.
pub fn time_repeats(repeats: Repeats, mut f: impl FnMut() -> Result<(), BenchError>) -> Result<Stats, BenchError> {
    repeats.check()?;
    for _ in 0..repeats.warmup {
        f()?;
    }
    let mut seconds = Vec::with_capacity(repeats.timed);
    for _ in 0..repeats.timed {
        let start = Instant::now();
        f()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    Stats::from_samples(&seconds)
}

/// One measured or derived figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, e.g. `lm frame @ pos 1024`.
    pub name: String,
    /// Unit of every statistic and of the floor, e.g. `ms/frame`.
    pub unit: String,
    /// Statistics over the repeats.
    #[serde(flatten)]
    pub stats: Stats,
    /// Roofline floor in `unit` (time rows only).
    pub floor: Option<f64>,
    /// `floor / median · 100`.
    pub percent_of_floor: Option<f64>,
}

impl Row {
    /// A row of statistics already in `unit`.
    pub fn new(name: impl Into<String>, unit: impl Into<String>, stats: Stats) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            stats,
            floor: None,
            percent_of_floor: None,
        }
    }

    /// A time row in milliseconds from statistics in seconds.
    pub fn millis(name: impl Into<String>, unit: impl Into<String>, seconds: Stats) -> Self {
        Self::new(name, unit, seconds.scaled(1e3))
    }

    /// This row with a floor (in its unit) and the achieved percentage of it.
    pub fn with_floor(mut self, floor: f64) -> Self {
        self.floor = Some(floor);
        self.percent_of_floor = Some(percent_of_floor(floor, self.stats.median));
        self
    }

    /// A rate derived from this time row: `numerator / value` for every
    /// statistic (so `min` comes from the slowest repeat).
    pub fn rate(&self, name: impl Into<String>, unit: impl Into<String>, numerator: f64) -> Self {
        Self::new(name, unit, self.stats.reciprocal(numerator))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_hand_worked_samples() {
        // Sorted: 1 2 3 4 10 → median 3; p10 at index 0.4 → 1.4; p90 at 3.6 → 4 + 0.6·6 = 7.6.
        let s = Stats::from_samples(&[4.0, 1.0, 10.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (5, 3.0, 1.0, 10.0));
        assert!((s.p10 - 1.4).abs() < 1e-12, "{}", s.p10);
        assert!((s.p90 - 7.6).abs() < 1e-12, "{}", s.p90);
        // Even count: median between the middle two.
        let s = Stats::from_samples(&[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn rejects_empty_and_non_finite_samples() {
        let err = Stats::from_samples(&[]).unwrap_err().to_string();
        assert!(err.contains("zero samples"), "{err}");
        let err = Stats::from_samples(&[1.0, f64::NAN]).unwrap_err().to_string();
        assert!(err.contains("sample 1 is not finite"), "{err}");
    }

    #[test]
    fn reciprocal_flips_the_order() {
        let s = Stats::from_samples(&[0.1, 0.2, 0.4]).unwrap().reciprocal(1.0);
        assert_eq!((s.median, s.min, s.max), (5.0, 2.5, 10.0));
        assert!(s.p10 <= s.median && s.median <= s.p90);
        let ms = Stats::single(0.25).scaled(1000.0);
        assert_eq!((ms.n, ms.median, ms.p90), (1, 250.0, 250.0));
    }

    #[test]
    fn timer_runs_warmups_then_timed_repeats() {
        let mut calls = 0;
        let stats = time_repeats(Repeats::new(2, 3), || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, stats.n), (5, 3));
        assert!(stats.min >= 0.0 && stats.min <= stats.max);
    }

    #[test]
    fn timer_stops_at_the_first_error_and_refuses_zero_repeats() {
        let mut calls = 0;
        let err = time_repeats(Repeats::new(1, 5), || {
            calls += 1;
            if calls == 3 {
                Err(BenchError::engine("fake step", "boom"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "fake step: boom");
        assert_eq!(calls, 3);
        let err = time_repeats(Repeats::new(0, 0), || Ok(())).unwrap_err();
        assert!(err.to_string().contains("at least one timed repeat"), "{err}");
    }
}
