//! NVFP4: E2M1 values in 16-element blocks along the last (input) dimension,
//! one FP8 E4M3 scale per block and one FP32 global scale per tensor.
//!
//! For a row-major `[rows, cols]` tensor with `cols` a multiple of 16:
//!
//! 1. `global = amax / (6 · 448)` over the whole tensor (f32 division by 2688),
//!    so that the largest block scale lands at the E4M3 maximum.
//! 2. Per block: `scale_code = E4M3((block_amax / 6) / global)`, round to
//!    nearest even, saturating at 448 (two f32 divisions in that order, as
//!    NVIDIA ModelOpt computes it).
//! 3. The block's divisor is `d = decode(scale_code) * global` (f32 product) and
//!    each element's code is `E2M1(x / d)`, ties to even, saturating at ±6.
//! 4. Dequantized: `E2M1_VALUES[code] * d` — exactly what the portable ONNX
//!    lowering evaluates (`DequantizeLinear(scale_codes, global)` then `Gather`
//!    from [`E2M1_VALUES`] then `Mul`).
//!
//! Zeros: when `d` is 0 — a block of zeros, a block too small next to the
//! tensor's amax for its scale to be representable (`E4M3` rounds it to 0), or
//! a tensor of zeros (`global` 0) — the block's codes are all 0, its scale code
//! is 0, and nothing is divided by zero. Rows whose length is not a multiple of
//! 16 are an error ([`QuantError::RaggedBlocks`]): every linear layer of the
//! model has such rows, and padding belongs to the caller, who knows the layout.
//! NaN/inf elements are an error naming the first one.
//!
//! Packed codes: `rows · cols / 2` bytes, two per byte along each row, the
//! even-index element in the low nibble. Block scales: `rows · cols / 16` E4M3
//! codes, row-major `[rows, cols / 16]`.

use super::e2m1::{E2M1_MAX, e2m1_to_f32, f32_to_e2m1, pack_codes, unpack_codes};
use super::fp8::{E4M3_MAX, e4m3_to_f32, f32_to_e4m3};
use super::{QuantError, amax, check_finite, check_scale, check_shape};

pub use super::e2m1::E2M1_VALUES;

/// Elements per NVFP4 block.
pub const NVFP4_BLOCK: usize = 16;

/// The global scale for a tensor whose largest magnitude is `amax`:
/// `amax / (6 · 448)`.
pub fn nvfp4_global_scale(amax: f32) -> f32 {
    amax / (E2M1_MAX * E4M3_MAX)
}

/// The E4M3 code of a block's scale: `E4M3((block_amax / 6) / global)`, or 0
/// when `global` is 0.
pub fn nvfp4_block_scale(block_amax: f32, global: f32) -> u8 {
    if global == 0.0 {
        0
    } else {
        f32_to_e4m3(block_amax / E2M1_MAX / global)
    }
}

/// A row-major `[rows, cols]` tensor in NVFP4.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvfp4Tensor {
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    block_scales: Vec<u8>,
    global_scale: f32,
}

/// Quantizes a row-major `[rows, cols]` tensor to NVFP4, with the global scale
/// taken from the tensor's own amax (weights).
pub fn quantize_nvfp4(values: &[f32], rows: usize, cols: usize) -> Result<Nvfp4Tensor, QuantError> {
    check_input(values, rows, cols)?;
    Ok(quantize_blocks(values, rows, cols, nvfp4_global_scale(amax(values))))
}

/// Quantizes with a given global scale (activations: the global scale comes
/// from calibration, the block scales from the data). Blocks whose scale
/// exceeds 448 saturate there, and their elements saturate at ±6 · d. A global
/// scale of 0 gives an all-zero tensor.
pub fn quantize_nvfp4_with_global(
    values: &[f32],
    rows: usize,
    cols: usize,
    global_scale: f32,
) -> Result<Nvfp4Tensor, QuantError> {
    check_input(values, rows, cols)?;
    check_scale(|| "NVFP4 global".to_string(), global_scale)?;
    Ok(quantize_blocks(values, rows, cols, global_scale))
}

/// Shape, whole blocks, all finite.
fn check_input(values: &[f32], rows: usize, cols: usize) -> Result<(), QuantError> {
    check_shape(values, rows, cols)?;
    check_blocks(cols)?;
    check_finite(values, cols)
}

/// Steps 2–3 of the module doc on validated input.
fn quantize_blocks(values: &[f32], rows: usize, cols: usize, global_scale: f32) -> Nvfp4Tensor {
    let mut codes = Vec::with_capacity(values.len());
    let mut block_scales = Vec::with_capacity(values.len() / NVFP4_BLOCK);
    for block in values.chunks_exact(NVFP4_BLOCK) {
        let scale = nvfp4_block_scale(amax(block), global_scale);
        let d = e4m3_to_f32(scale) * global_scale;
        block_scales.push(scale);
        codes.extend(block.iter().map(|&x| if d == 0.0 { 0 } else { f32_to_e2m1(x / d) }));
    }
    Nvfp4Tensor {
        rows,
        cols,
        packed: pack_codes(&codes),
        block_scales,
        global_scale,
    }
}

/// Rows must hold whole blocks.
fn check_blocks(cols: usize) -> Result<(), QuantError> {
    if cols.is_multiple_of(NVFP4_BLOCK) {
        Ok(())
    } else {
        Err(QuantError::RaggedBlocks {
            cols,
            block: NVFP4_BLOCK,
        })
    }
}

impl Nvfp4Tensor {
    /// Reassembles a tensor from stored parts, checking the shape, every length,
    /// the global scale and that no block scale is negative or NaN.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        packed: Vec<u8>,
        block_scales: Vec<u8>,
        global_scale: f32,
    ) -> Result<Self, QuantError> {
        check_blocks(cols)?;
        let n = rows.saturating_mul(cols);
        let parts = |what, expected, found| QuantError::Parts {
            what,
            rows,
            cols,
            expected,
            found,
        };
        if packed.len() != n / 2 {
            return Err(parts("packed codes", n / 2, packed.len()));
        }
        if block_scales.len() != n / NVFP4_BLOCK {
            return Err(parts("block scales", n / NVFP4_BLOCK, block_scales.len()));
        }
        check_scale(|| "NVFP4 global".to_string(), global_scale)?;
        for (i, &code) in block_scales.iter().enumerate() {
            check_scale(|| format!("NVFP4 block {i} (code {code:#04x})"), e4m3_to_f32(code))?;
        }
        Ok(Self {
            rows,
            cols,
            packed,
            block_scales,
            global_scale,
        })
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input dimension, a multiple of 16).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Packed E2M1 codes, `rows · cols / 2` bytes, even element in the low nibble.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// E4M3 block-scale codes, row-major `[rows, cols / 16]`.
    pub fn block_scales(&self) -> &[u8] {
        &self.block_scales
    }

    /// The FP32 global scale.
    pub fn global_scale(&self) -> f32 {
        self.global_scale
    }

    /// Unpacked E2M1 codes, one per element, row-major.
    pub fn codes(&self) -> Vec<u8> {
        unpack_codes(&self.packed, self.rows * self.cols)
    }

    /// Each block's divisor `decode(scale_code) * global`, row-major
    /// `[rows, cols / 16]`: the output of the lowering's scale `DequantizeLinear`.
    pub fn block_divisors(&self) -> Vec<f32> {
        self.block_scales
            .iter()
            .map(|&s| e4m3_to_f32(s) * self.global_scale)
            .collect()
    }

    /// `E2M1_VALUES[code] * divisor` for every element, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let divisors = self.block_divisors();
        self.codes()
            .iter()
            .enumerate()
            .map(|(i, &c)| e2m1_to_f32(c) * divisors[i / NVFP4_BLOCK])
            .collect()
    }
}
