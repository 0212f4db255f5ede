//! Blockwise asymmetric integer weights (int4 / int8), laid out exactly as ONNX
//! Runtime's `com.microsoft.MatMulNBits` reads them.
//!
//! A row-major `[rows, cols]` weight (`rows` = the operator's `N` output
//! features, `cols` = its `K` inputs, PyTorch's `nn.Linear` layout) is cut into
//! blocks of [`BLOCK`] = 32 consecutive elements along each row. Per block, with
//! `qmax = 2^bits − 1` (15 or 255) and only the block's real elements:
//!
//! 1. `lo = min(min(block), 0)`, `hi = max(max(block), 0)` — the range always
//!    contains 0, so 0 is representable and an all-zero row stays zero;
//! 2. `scale = (hi − lo) / qmax` (one f32 division);
//! 3. `zero_point = clamp(round(−lo / scale), 0, qmax)`, or 0 when `scale` is 0;
//! 4. each element's code is `clamp(round(x · (1 / scale) + zero_point), 0,
//!    qmax)` (the reciprocal is one f32 division, then one product and one sum,
//!    each rounded; 0 replaces `1 / scale` when `scale` is 0);
//! 5. dequantized: `(code − zero_point) · scale` — the `MatMulNBits`
//!    definition; `code − zero_point` is an exact small integer, so this is one
//!    f32 rounding.
//!
//! `round` is half away from zero ([`f32::round`]). These are the steps of ONNX
//! Runtime's own asymmetric quantizer (`quantize_matmul_4bits` /
//! `quantize_matmul_8bits` in its Python package, which MLAS implements):
//! measured with ORT 1.31.1 on random and hand-made blocks (ties included),
//! its scales, zero points and codes equal these bit for bit, except for the
//! padding below.
//!
//! Edge cases:
//! - **All-zero block:** `scale` 0, zero point 0, codes 0; nothing is divided
//!   by zero. A constant block `c` gets the range `[min(c, 0), max(c, 0)]`, so
//!   `c` itself is the top (or bottom) code and dequantizes to within one f32
//!   rounding of `c`.
//! - **`cols` not a multiple of 32:** the last block of each row is partial. Its
//!   scale and zero point come from its real elements only, and its padding
//!   codes are the block's zero point, so the padded weight dequantizes to
//!   exactly 0 (ORT's quantizer writes code 0 there instead; neither is ever
//!   multiplied by anything, since `MatMulNBits` reads only `K` inputs). The
//!   operator supports such a `K` (`k_blocks = ceil(K / 32)`), so rows are not
//!   rejected: the tiny models' 48-wide decoder has them.
//! - **NaN / ±inf** anywhere: [`QuantError::NonFinite`] naming the element.
//!   **Range overflow** (`hi − lo` beyond f32, e.g. ±3e38 in one block):
//!   [`QuantError::BadScale`] naming the row and block.
//!
//! Layout (what [`BlockwiseTensor`] stores, and the operator's inputs):
//! - `B`: u8 `[rows, k_blocks, blob]` with `k_blocks = ceil(cols / 32)` and
//!   `blob = 32 · bits / 8` (16 bytes for int4, 32 for int8); int4 codes are
//!   packed two per byte along the row, the even element in the low nibble.
//! - `scales`: f32 `[rows · k_blocks]`, row-major `[rows, k_blocks]`.
//! - zero points: one per block ([`BlockwiseTensor::zero_points`]); the
//!   operator's packed form ([`BlockwiseTensor::packed_zero_points`]) is u8
//!   `[rows, ceil(k_blocks · bits / 8)]`, int4 two per byte per row (low nibble
//!   first), a row's unused high nibble set to 8 (the operator's default zero
//!   point, as ORT's quantizer writes it).

use super::{QuantError, check_finite, check_shape};

/// Elements per block along the input dimension.
pub const BLOCK: usize = 32;

/// The integer width of a blockwise tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntBits {
    /// 4-bit codes 0..=15, two per byte.
    Int4,
    /// 8-bit codes 0..=255, one per byte.
    Int8,
}

impl IntBits {
    /// Bits per code (the operator's `bits` attribute).
    pub fn bits(self) -> usize {
        match self {
            Self::Int4 => 4,
            Self::Int8 => 8,
        }
    }

    /// The largest code, `2^bits − 1`.
    pub fn max_code(self) -> u8 {
        match self {
            Self::Int4 => 15,
            Self::Int8 => 255,
        }
    }

    /// The operator's default zero point, `2^(bits − 1)` (fills unused
    /// zero-point nibbles).
    pub fn default_zero_point(self) -> u8 {
        match self {
            Self::Int4 => 8,
            Self::Int8 => 128,
        }
    }

    /// Bytes of one packed block, `32 · bits / 8`.
    pub fn blob_bytes(self) -> usize {
        BLOCK * self.bits() / 8
    }

    /// Bytes of one row's packed zero points, `ceil(k_blocks · bits / 8)`.
    pub fn zero_point_row_bytes(self, k_blocks: usize) -> usize {
        (k_blocks * self.bits()).div_ceil(8)
    }
}

/// Blocks per row of `cols` elements, `ceil(cols / 32)`.
pub fn k_blocks(cols: usize) -> usize {
    cols.div_ceil(BLOCK)
}

/// Steps 1–3 of the module doc for one block of finite values: its `(scale,
/// zero_point)`. The scale is infinite when the range overflows f32.
pub fn block_params(block: &[f32], bits: IntBits) -> (f32, u8) {
    let (lo, hi) = block
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let qmax = f32::from(bits.max_code());
    let scale = (hi - lo) / qmax;
    if scale == 0.0 {
        return (0.0, 0);
    }
    let zero_point = (-lo / scale).round().clamp(0.0, qmax) as u8;
    (scale, zero_point)
}

/// Step 4 of the module doc: the code of `x` in a block with `scale` and
/// `zero_point`.
pub fn encode(x: f32, scale: f32, zero_point: u8, bits: IntBits) -> u8 {
    let reciprocal = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    (x * reciprocal + f32::from(zero_point))
        .round()
        .clamp(0.0, f32::from(bits.max_code())) as u8
}

/// Step 5: `(code − zero_point) · scale`.
pub fn decode(code: u8, scale: f32, zero_point: u8) -> f32 {
    (f32::from(code) - f32::from(zero_point)) * scale
}

/// Packs codes (each ≤ the width's maximum) into bytes: int8 one per byte,
/// int4 two per byte with the even-index code in the low nibble (an odd count
/// leaves the last high nibble 0).
pub fn pack_codes(codes: &[u8], bits: IntBits) -> Vec<u8> {
    match bits {
        IntBits::Int8 => codes.to_vec(),
        IntBits::Int4 => codes
            .chunks(2)
            .map(|pair| (pair[0] & 0x0F) | (pair.get(1).copied().unwrap_or(0) << 4))
            .collect(),
    }
}

/// The first `count` codes of [`pack_codes`] output.
pub fn unpack_codes(packed: &[u8], count: usize, bits: IntBits) -> Vec<u8> {
    match bits {
        IntBits::Int8 => packed.iter().copied().take(count).collect(),
        IntBits::Int4 => packed.iter().flat_map(|&b| [b & 0x0F, b >> 4]).take(count).collect(),
    }
}

/// A row-major `[rows, cols]` weight quantized blockwise; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockwiseTensor {
    bits: IntBits,
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<u8>,
}

/// Quantizes a row-major `[rows, cols]` tensor (`cols` = the input dimension)
/// to `bits` in blocks of 32 along each row.
pub fn quantize_blockwise(
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: IntBits,
) -> Result<BlockwiseTensor, QuantError> {
    check_shape(values, rows, cols)?;
    check_finite(values, cols)?;
    let blocks = k_blocks(cols);
    let mut codes = vec![0u8; BLOCK * blocks];
    let mut packed = Vec::with_capacity(rows * blocks * bits.blob_bytes());
    let mut scales = Vec::with_capacity(rows * blocks);
    let mut zero_points = Vec::with_capacity(rows * blocks);
    for (row, values) in values.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (b, block) in values.chunks(BLOCK).enumerate() {
            let (scale, zero_point) = block_params(block, bits);
            if !scale.is_finite() {
                return Err(QuantError::BadScale {
                    what: format!("{bits:?} block {b} of row {row}: (max − min) / {}", bits.max_code()),
                    value: scale,
                });
            }
            let dest = &mut codes[b * BLOCK..(b + 1) * BLOCK];
            for (i, code) in dest.iter_mut().enumerate() {
                *code = block.get(i).map_or(zero_point, |&x| encode(x, scale, zero_point, bits));
            }
            scales.push(scale);
            zero_points.push(zero_point);
        }
        packed.extend(pack_codes(&codes, bits));
    }
    Ok(BlockwiseTensor {
        bits,
        rows,
        cols,
        packed,
        scales,
        zero_points,
    })
}

impl BlockwiseTensor {
    /// Reassembles a tensor from stored parts (`packed` in the `B` layout,
    /// one scale and one unpacked zero point per block), checking every length,
    /// that each scale is finite and ≥ 0 and each zero point fits the width.
    pub fn from_parts(
        bits: IntBits,
        rows: usize,
        cols: usize,
        packed: Vec<u8>,
        scales: Vec<f32>,
        zero_points: Vec<u8>,
    ) -> Result<Self, QuantError> {
        let blocks = rows.saturating_mul(k_blocks(cols));
        let parts = |what, expected, found| QuantError::Parts {
            what,
            rows,
            cols,
            expected,
            found,
        };
        let packed_len = blocks.saturating_mul(bits.blob_bytes());
        if packed.len() != packed_len {
            return Err(parts("packed codes", packed_len, packed.len()));
        }
        if scales.len() != blocks {
            return Err(parts("block scales", blocks, scales.len()));
        }
        if zero_points.len() != blocks {
            return Err(parts("zero points", blocks, zero_points.len()));
        }
        if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(QuantError::BadScale {
                what: format!("{bits:?} block {i}"),
                value: scales[i],
            });
        }
        if let Some(i) = zero_points.iter().position(|&z| z > bits.max_code()) {
            return Err(QuantError::BadScale {
                what: format!("{bits:?} zero point of block {i} (above {})", bits.max_code()),
                value: f32::from(zero_points[i]),
            });
        }
        Ok(Self {
            bits,
            rows,
            cols,
            packed,
            scales,
            zero_points,
        })
    }

    /// The integer width.
    pub fn bits(&self) -> IntBits {
        self.bits
    }

    /// Rows (output features, the operator's `N`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features, the operator's `K`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks per row, `ceil(cols / 32)`.
    pub fn k_blocks(&self) -> usize {
        k_blocks(self.cols)
    }

    /// The operator's `B`: u8 `[rows, k_blocks, blob]`, flattened.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Block scales, row-major `[rows, k_blocks]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Zero points, one byte per block, row-major `[rows, k_blocks]`.
    pub fn zero_points(&self) -> &[u8] {
        &self.zero_points
    }

    /// The operator's packed `zero_points`: u8 `[rows, ceil(k_blocks · bits /
    /// 8)]`, flattened (see the module doc).
    pub fn packed_zero_points(&self) -> Vec<u8> {
        let blocks = self.k_blocks();
        let fill = self.bits.default_zero_point();
        self.zero_points
            .chunks(blocks.max(1))
            .take(self.rows)
            .flat_map(|row| {
                let mut row = row.to_vec();
                if self.bits == IntBits::Int4 && blocks % 2 == 1 {
                    row.push(fill);
                }
                pack_codes(&row, self.bits)
            })
            .collect()
    }

    /// Unpacked codes, row-major `[rows, k_blocks · 32]` (padding included).
    pub fn codes(&self) -> Vec<u8> {
        let padded = self.k_blocks() * BLOCK;
        unpack_codes(&self.packed, self.rows * padded, self.bits)
    }

    /// `(code − zero_point) · scale` for every element, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let (blocks, padded) = (self.k_blocks(), self.k_blocks() * BLOCK);
        let codes = self.codes();
        (0..self.rows)
            .flat_map(|r| (0..self.cols).map(move |c| (r, c)))
            .map(|(r, c)| {
                let b = r * blocks + c / BLOCK;
                decode(codes[r * padded + c], self.scales[b], self.zero_points[b])
            })
            .collect()
    }
}
