//! The A/B's measures, as pure functions over logits, hidden states and
//! waveforms, plus a running summary. Everything is accumulated in f64.

use serde::Serialize;

use heart_runtime::lm::SamplerParams;
use heart_runtime::lm::sampler::top_k_probs;

/// Cosine similarity of two vectors (1 when both are zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)
    }
}

/// `KL(p ‖ q)` in nats of the sampling distributions: `p` is what A samples
/// from (temperature, then top-k with ties kept) and `q` is B's softmax after
/// temperature, renormalised over `p`'s candidates. When B's top-k set is A's
/// (the usual case) `q` is exactly B's sampling distribution; when the sets
/// differ, the divergence stays finite and measures how B ranks A's
/// candidates. Zero for identical logits.
pub fn sampling_kl(a_logits: &[f32], b_logits: &[f32], params: SamplerParams) -> f64 {
    let p = top_k_probs(a_logits, params);
    let log_q = log_softmax(b_logits, params.temperature);
    let support = || p.iter().zip(&log_q).filter(|&(&p, _)| p > 0.0);
    let max = support().map(|(_, &lq)| lq).fold(f64::NEG_INFINITY, f64::max);
    let log_mass = support().map(|(_, &lq)| (lq - max).exp()).sum::<f64>().ln() + max;
    let p_sum: f64 = support().map(|(&p, _)| f64::from(p)).sum();
    support()
        .map(|(&p, &lq)| {
            let p = f64::from(p) / p_sum;
            p * (p.ln() - (lq - log_mass))
        })
        .sum::<f64>()
        .max(0.0)
}

/// `log softmax(x / temperature)` in f64.
pub fn log_softmax(x: &[f32], temperature: f32) -> Vec<f64> {
    let t = f64::from(temperature);
    let max = x.iter().map(|&v| f64::from(v) / t).fold(f64::NEG_INFINITY, f64::max);
    let lse = x.iter().map(|&v| (f64::from(v) / t - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| f64::from(v) / t - lse).collect()
}

/// Index of the largest value (the first on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// `‖a − b‖ / ‖a‖` (0 when both are zero; `a` is the reference).
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (f64::from(x) - f64::from(y)).powi(2);
        norm += f64::from(x).powi(2);
    }
    if diff == 0.0 {
        0.0
    } else {
        (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// Signal-to-noise ratio of `test` against `reference` in dB, or `None` when
/// they are identical (infinite SNR).
pub fn snr_db(reference: &[f32], test: &[f32]) -> Option<f64> {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        signal += f64::from(r).powi(2);
        noise += (f64::from(r) - f64::from(t)).powi(2);
    }
    (noise > 0.0).then(|| 10.0 * (signal / noise).log10())
}

/// Mean, minimum and maximum of a stream of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Values seen.
    pub count: usize,
    /// Their mean (0 when none).
    pub mean: f64,
    /// Smallest value (0 when none).
    pub min: f64,
    /// Largest value (0 when none).
    pub max: f64,
}

/// Accumulates a [`Summary`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Running {
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
}

impl Running {
    /// Adds one value.
    pub fn push(&mut self, v: f64) {
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum / self.count as f64
            },
            min: self.min,
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SamplerParams = SamplerParams {
        temperature: 1.0,
        top_k: 3,
    };

    #[test]
    fn identical_logits_agree_perfectly() {
        let l = [0.5f32, -1.0, 2.0, 0.1, 1.5];
        assert!((cosine(&l, &l) - 1.0).abs() < 1e-12);
        assert_eq!(relative_error(&l, &l), 0.0);
        assert_eq!(snr_db(&l, &l), None);
        assert!(sampling_kl(&l, &l, P) < 1e-12, "identical: {}", sampling_kl(&l, &l, P));
        // B agrees on the top-3 order but not the mass: KL of the two top-3 softmaxes.
        let b = [0.5f32, -1.0, 2.0, 0.1, 1.0];
        let (pa, pb) = (log_softmax(&[0.5, 2.0, 1.5], 1.0), log_softmax(&[0.5, 2.0, 1.0], 1.0));
        let want: f64 = pa.iter().zip(&pb).map(|(&x, &y)| x.exp() * (x - y)).sum();
        assert!(
            (sampling_kl(&l, &b, P) - want).abs() < 1e-7,
            "{} vs {want}",
            sampling_kl(&l, &b, P)
        );
    }

    #[test]
    fn measures_match_hand_worked_values() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((relative_error(&[3.0, 4.0], &[3.0, 1.0]) - 0.6).abs() < 1e-12);
        let snr = snr_db(&[1.0, 1.0], &[1.1, 0.9]).unwrap();
        assert!((snr - 20.0).abs() < 1e-5, "{snr}");
        assert_eq!(argmax(&[0.0, 3.0, 3.0, f32::NAN]), 1);
        let full = SamplerParams { top_k: 2, ..P };
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let kl = sampling_kl(&[0.0, 0.0], &[0.0, 3f32.ln()], full);
        assert!(
            (kl - (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln())).abs() < 1e-7,
            "{kl}"
        );
    }

    #[test]
    fn running_summary() {
        let mut r = Running::default();
        assert_eq!(r.summary().count, 0);
        for v in [2.0, -1.0, 5.0] {
            r.push(v);
        }
        let s = r.summary();
        assert_eq!((s.count, s.mean, s.min, s.max), (3, 2.0, -1.0, 5.0));
    }
}
