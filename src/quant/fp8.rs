//! FP8 E4M3FN: the OCP 8-bit float with 4 exponent bits (bias 7), 3 mantissa
//! bits, no infinities and one NaN pattern per sign (`0x7F`, `0xFF`).
//!
//! Code layout `s eeee mmm`: exponent 0 is subnormal (`m · 2⁻⁹`, smallest
//! 2⁻⁹ ≈ 0.00195), otherwise `(8 + m) · 2^(e − 10)`; the largest finite value is
//! `0x7E` = 448. Encoding rounds to nearest, ties to even (the code with an even
//! low bit), and saturates: every finite |x| ≥ 448 — and ±inf — becomes ±448, as
//! NVIDIA's `satfinite` conversions and ONNX `QuantizeLinear(saturate=1)` do.
//! NaN encodes to the NaN code of its sign. The tensor quantizers never get that
//! far: they reject NaN/inf inputs with [`QuantError::NonFinite`].
//!
//! Scaled tensors ([`Fp8Tensor`]) use `scale = amax / 448` per tensor or per row
//! (per output channel of an `[out, in]` weight); `code = E4M3(x / scale)` and
//! the dequantized value is `decode(code) * scale`, the f32 product ONNX
//! `DequantizeLinear` computes.

use super::{QuantError, amax, check_finite, check_scale, check_shape};

/// Largest finite E4M3FN value.
pub const E4M3_MAX: f32 = 448.0;
/// Code of +448 (the sign bit gives −448, `0xFE`).
pub const E4M3_MAX_CODE: u8 = 0x7E;
/// Code of +NaN (`0xFF` is −NaN).
pub const E4M3_NAN: u8 = 0x7F;
/// Smallest positive normal value, 2⁻⁶.
pub const E4M3_MIN_NORMAL: f32 = 0.015625;
/// Smallest positive subnormal value, 2⁻⁹.
pub const E4M3_MIN_SUBNORMAL: f32 = 0.001953125;

/// `2^k` for `k` within the f32 normal exponent range.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k) as u32) << 23)
}

/// The value of an E4M3FN code (NaN for `0x7F` / `0xFF`; `0x80` is −0).
pub fn e4m3_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((code >> 3) & 0x0F);
    let man = code & 0x07;
    let magnitude = match (exp, man) {
        (15, 7) => return f32::NAN.copysign(sign),
        (0, _) => f32::from(man) * E4M3_MIN_SUBNORMAL,
        _ => f32::from(8 + man) * pow2(exp - 10),
    };
    sign * magnitude
}

/// The E4M3FN code nearest to `x` (ties to even), saturating at ±448; ±inf
/// saturates too and NaN gives the NaN code of its sign.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | E4M3_NAN;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | E4M3_MAX_CODE;
    }
    sign | magnitude_code(a)
}

/// Code of a magnitude `0 ≤ a < 448`. Scaling by powers of two is exact, so
/// each branch rounds exactly once.
fn magnitude_code(a: f32) -> u8 {
    if a < E4M3_MIN_NORMAL {
        // Subnormal quantum 2⁻⁹: the code is the rounded multiple; 8 is the
        // smallest normal, whose code is also 8.
        return (a * 512.0).round_ties_even() as u8;
    }
    // a ∈ [2^e, 2^(e+1)) with e ∈ [−6, 8]; 8 + mantissa ∈ [8, 16], where 16
    // carries into the next exponent through the addition below.
    let e = ((a.to_bits() >> 23) & 0xFF) as i32 - 127;
    let q = (a * pow2(3 - e)).round_ties_even() as u8;
    (((e + 7) as u8) << 3) + (q - 8)
}

/// The per-tensor / per-row scale for a group with largest magnitude `amax`:
/// `amax / 448`, so that the largest element maps to ±448.
pub fn fp8_scale(amax: f32) -> f32 {
    amax / E4M3_MAX
}

/// The code of `x` under `scale`: `E4M3(x / scale)`, or 0 when `scale` is 0
/// (a group of zeros, or one too small to scale).
pub fn encode_scaled(x: f32, scale: f32) -> u8 {
    if scale == 0.0 { 0 } else { f32_to_e4m3(x / scale) }
}

/// How many scales an [`Fp8Tensor`] has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per row: per output channel of an `[out, in]` weight, i.e.
    /// `DequantizeLinear` axis 1 of the transposed `[in, out]` ONNX initializer.
    PerRow,
}

/// A row-major `[rows, cols]` tensor of E4M3FN codes with f32 scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Tensor {
    rows: usize,
    cols: usize,
    granularity: Fp8Granularity,
    codes: Vec<u8>,
    scales: Vec<f32>,
}

/// Quantizes a row-major `[rows, cols]` tensor to FP8 E4M3FN with
/// `scale = amax / 448` per tensor or per row.
///
/// A group (tensor or row) whose amax is 0 — or so small that `amax / 448`
/// underflows to 0 — gets scale 0 and all-zero codes. NaN/inf inputs are an
/// error naming the first such element.
pub fn quantize_fp8(
    values: &[f32],
    rows: usize,
    cols: usize,
    granularity: Fp8Granularity,
) -> Result<Fp8Tensor, QuantError> {
    check_shape(values, rows, cols)?;
    check_finite(values, cols)?;
    let group = group_len(granularity, rows, cols);
    let scales: Vec<f32> = (0..scale_count(granularity, rows))
        .map(|g| fp8_scale(amax(&values[g * group..(g + 1) * group])))
        .collect();
    let codes = values
        .iter()
        .enumerate()
        .map(|(i, &x)| encode_scaled(x, scales[i / group]))
        .collect();
    Ok(Fp8Tensor {
        rows,
        cols,
        granularity,
        codes,
        scales,
    })
}

/// Elements sharing one scale.
fn group_len(granularity: Fp8Granularity, rows: usize, cols: usize) -> usize {
    match granularity {
        Fp8Granularity::PerTensor => rows * cols,
        Fp8Granularity::PerRow => cols,
    }
}

/// How an error names scale `i`.
fn scale_name(granularity: Fp8Granularity, i: usize) -> String {
    match granularity {
        Fp8Granularity::PerTensor => "FP8 tensor".to_string(),
        Fp8Granularity::PerRow => format!("FP8 row {i}"),
    }
}

/// Scales a tensor of `rows` rows carries.
fn scale_count(granularity: Fp8Granularity, rows: usize) -> usize {
    match granularity {
        Fp8Granularity::PerTensor => 1,
        Fp8Granularity::PerRow => rows,
    }
}

impl Fp8Tensor {
    /// Reassembles a tensor from stored parts, checking every length and scale.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        granularity: Fp8Granularity,
        codes: Vec<u8>,
        scales: Vec<f32>,
    ) -> Result<Self, QuantError> {
        let parts = |what, expected, found| QuantError::Parts {
            what,
            rows,
            cols,
            expected,
            found,
        };
        let n = rows.saturating_mul(cols);
        if codes.len() != n {
            return Err(parts("codes", n, codes.len()));
        }
        let want = scale_count(granularity, rows);
        if scales.len() != want {
            return Err(parts("scales", want, scales.len()));
        }
        for (i, &s) in scales.iter().enumerate() {
            check_scale(|| scale_name(granularity, i), s)?;
        }
        Ok(Self {
            rows,
            cols,
            granularity,
            codes,
            scales,
        })
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Per tensor or per row.
    pub fn granularity(&self) -> Fp8Granularity {
        self.granularity
    }

    /// E4M3FN codes, row-major `[rows, cols]`.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Scales: one, or one per row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The scale of row `row` (`row < rows`).
    fn row_scale(&self, row: usize) -> f32 {
        match self.granularity {
            Fp8Granularity::PerTensor => self.scales[0],
            Fp8Granularity::PerRow => self.scales[row],
        }
    }

    /// `decode(code) * scale` for every element, row-major — the f32 product
    /// ONNX `DequantizeLinear` computes.
    pub fn dequantize(&self) -> Vec<f32> {
        let cols = self.cols.max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| e4m3_to_f32(c) * self.row_scale(i / cols))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_codes() {
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(E4M3_MAX_CODE), E4M3_MAX);
        assert_eq!(e4m3_to_f32(0x01), E4M3_MIN_SUBNORMAL);
        assert_eq!(e4m3_to_f32(0x08), E4M3_MIN_NORMAL);
        assert!(e4m3_to_f32(E4M3_NAN).is_nan());
    }
}
