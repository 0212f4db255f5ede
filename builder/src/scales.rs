//! Choosing a static activation amax from calibration data: percentiles of
//! per-token amax values, and the MSE-optimal amax on a sample of rows.
//!
//! # The row sample
//! The MSE search needs whole input rows, but a real model produces tens of
//! thousands per linear. [`RowSample`] keeps a stratified sample: the `n/4`
//! rows with the largest amax exactly (they decide what clipping costs, and a
//! uniform sample would almost never hold them) plus a uniform reservoir of
//! `n` rows for the rest, weighted by how many rows each stands for. The
//! weighted squared error is then an unbiased estimate of the error over every
//! row seen (quantization error is a sum over rows: NVFP4 blocks and FP8
//! elements never span two rows).
//!
//! # The search
//! Candidates are fractions `f` of the max on a geometric grid from 1/16 to 1;
//! each is scored by fake-quantizing the sample with the Rust reference
//! quantizer in the activation format (NVFP4 global scale `amax / (6·448)`
//! with data-driven block scales, or FP8 scale `amax / 448`); ties go to the
//! larger amax.

use crate::error::{BuildError, Result};
use heart::quant::fp8::{e4m3_to_f32, encode_scaled, fp8_scale};
use heart::quant::nvfp4::{nvfp4_global_scale, quantize_nvfp4_with_global};
use onnx_export::lm::QuantFormat;
use rand::Rng;

/// A stratified sample of rows; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct RowSample {
    size: usize,
    seen: u64,
    top: Vec<(f32, u64, Vec<f32>)>,
    reservoir: Vec<(u64, Vec<f32>)>,
}

impl RowSample {
    /// A sample of `size` uniform rows plus the `size / 4` (at least 1) largest.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }

    /// Offers one row with its amax.
    pub fn push(&mut self, row: &[f32], amax: f32, rng: &mut impl Rng) {
        let seq = self.seen;
        self.seen += 1;
        let keep_top = (self.size / 4).max(1);
        if self.top.len() < keep_top {
            self.top.push((amax, seq, row.to_vec()));
        } else if let Some(min) = self.top.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0))
            && amax > min.0
        {
            *min = (amax, seq, row.to_vec());
        }
        if self.reservoir.len() < self.size {
            self.reservoir.push((seq, row.to_vec()));
        } else {
            let j = rng.random_range(0..self.seen) as usize;
            if let Some(slot) = self.reservoir.get_mut(j) {
                *slot = (seq, row.to_vec());
            }
        }
    }

    /// The sampled rows with the number of rows each stands for.
    pub fn weighted(&self) -> Vec<(f64, &[f32])> {
        let top_seq: Vec<u64> = self.top.iter().map(|t| t.1).collect();
        let rest: Vec<&[f32]> = self
            .reservoir
            .iter()
            .filter(|(seq, _)| !top_seq.contains(seq))
            .map(|(_, r)| r.as_slice())
            .collect();
        let others = self.seen.saturating_sub(self.top.len() as u64) as f64;
        let weight = if rest.is_empty() {
            0.0
        } else {
            others / rest.len() as f64
        };
        let top = self.top.iter().map(|(_, _, r)| (1.0, r.as_slice()));
        top.chain(rest.into_iter().map(|r| (weight, r))).collect()
    }
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[f32], p: f64) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(0.0)
}

/// The MSE-optimal amax of `sample` among `candidates` fractions of `max`.
pub fn mse_amax(sample: &RowSample, features: usize, max: f32, format: QuantFormat, candidates: usize) -> Result<f32> {
    let rows = sample.weighted();
    let mut best = (f64::INFINITY, max);
    for i in (0..candidates).rev() {
        let fraction = (1.0f64 / 16.0).powf(i as f64 / (candidates.max(2) - 1) as f64);
        let amax = (f64::from(max) * fraction) as f32;
        let mut err = 0.0;
        for (w, row) in &rows {
            err += w * quantization_error(row, features, amax, format)?;
        }
        if err < best.0 {
            best = (err, amax);
        }
    }
    Ok(best.1)
}

/// `Σ (x − fakequant(x))²` of rows `[n, features]` with static amax `amax`.
pub fn quantization_error(x: &[f32], features: usize, amax: f32, format: QuantFormat) -> Result<f64> {
    let deq: Vec<f32> = match format {
        QuantFormat::Nvfp4 => {
            quantize_nvfp4_with_global(x, x.len() / features, features, nvfp4_global_scale(amax))?.dequantize()
        }
        QuantFormat::Fp8 => {
            let s = fp8_scale(amax);
            x.iter().map(|&v| e4m3_to_f32(encode_scaled(v, s)) * s).collect()
        }
        QuantFormat::Int(_) => {
            return Err(BuildError::Request(
                "int4/int8 activations are not statically quantized (MatMulNBits does it)".into(),
            ));
        }
    };
    Ok(x.iter()
        .zip(&deq)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sample_of(rows: &[Vec<f32>], size: usize) -> RowSample {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut s = RowSample::new(size);
        for r in rows {
            s.push(r, r.iter().fold(0f32, |m, v| m.max(v.abs())), &mut rng);
        }
        s
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 99.5), 100.0);
        assert_eq!(percentile(&v, 0.1), 1.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
    }

    #[test]
    fn the_sample_keeps_the_largest_rows_and_weighs_the_rest() {
        let rows: Vec<Vec<f32>> = (0..1000).map(|i| vec![(i % 97) as f32; 16]).collect();
        let s = sample_of(&rows, 8);
        let w = s.weighted();
        let top: Vec<f32> = w.iter().filter(|(w, _)| *w == 1.0).map(|(_, r)| r[0]).collect();
        assert_eq!(top.len(), 2);
        assert!(top.iter().all(|&v| v == 96.0), "{top:?}");
        let total: f64 = w.iter().map(|(w, _)| w).sum();
        assert!((total - 1000.0).abs() < 1e-9, "weights stand for every row: {total}");
    }

    #[test]
    fn mse_never_loses_to_the_max_and_keeps_an_exact_max() {
        let rows: Vec<Vec<f32>> = (0..32)
            .map(|r| {
                (0..16)
                    .map(|c| ((r * 16 + c) as f32 * 0.37).sin() * (1.0 + (r % 5) as f32))
                    .collect()
            })
            .collect();
        let max = rows.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        let s = sample_of(&rows, 64);
        for format in [QuantFormat::Nvfp4, QuantFormat::Fp8] {
            let chosen = mse_amax(&s, 16, max, format, 48).unwrap();
            assert!(chosen > 0.0 && chosen <= max, "{format:?}: {chosen}");
            let e_chosen = quantization_error(&rows.concat(), 16, chosen, format).unwrap();
            let e_max = quantization_error(&rows.concat(), 16, max, format).unwrap();
            assert!(e_chosen <= e_max, "{format:?}: {e_chosen} > {e_max}");
        }
        // ±0.65625 = 6·448·2⁻¹² is exact in both formats at amax 0.65625 and clipped below it.
        let ones: Vec<Vec<f32>> = (0..4)
            .map(|r| {
                (0..16)
                    .map(|c| if (r + c) % 2 == 0 { 0.65625 } else { -0.65625 })
                    .collect()
            })
            .collect();
        let s = sample_of(&ones, 8);
        for format in [QuantFormat::Nvfp4, QuantFormat::Fp8] {
            assert_eq!(quantization_error(&ones.concat(), 16, 0.65625, format).unwrap(), 0.0);
            assert_eq!(mse_amax(&s, 16, 0.65625, format, 8).unwrap(), 0.65625, "{format:?}");
        }
    }
}
