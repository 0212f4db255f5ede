//! Blockwise int4 weights interleaved for a row-times-weight kernel that
//! streams them once per call, and that kernel: `y = x · dequant(W)ᵀ` for a
//! few f32 rows `x` (the frame loop's 2 CFG rows), with the activations
//! quantized to int8 per 32-element block as `MatMulNBits` does at accuracy
//! level 4.
//!
//! # Why
//!
//! At 2 rows the product is a matrix–vector product: every weight byte is used
//! twice, so it should run at memory speed. ONNX Runtime 1.31.1's
//! `MatMulNBits` (MLAS, int4, block 32, level 4) is compute-bound there: 8.0
//! GB/s of weights on one core and 14.8 GB/s on two of a machine that streams
//! 24–25 GB/s (`cargo bench --bench ort_kernels`). This layout lets one
//! AVX-512 VNNI instruction multiply 64 weight nibbles of 16 outputs by 4
//! activation bytes with no shuffles, so the loop is a load, two masks and
//! `vpdpbusd`s.
//!
//! # Layout ([`Int4x16`])
//!
//! The `[n, k]` weight (`n` outputs, `k` inputs; [`super::blockwise`]'s
//! codes, scales and zero points, unchanged) is cut into `groups = ceil(n /
//! 16)` groups of [`LANES`] = 16 consecutive outputs and `k_blocks = ceil(k /
//! 32)` blocks of 32 inputs. Outputs past `n` are padding (code, scale and
//! zero point 0); inputs past `k` are padding (their activations are 0).
//!
//! - `packed`: u8 `[groups, k_blocks, 4, 16, 4]`. Byte `j` of lane `l` in
//!   chunk `c` of block `b` of group `g` holds, for output `o = 16g + l`, the
//!   code of input `32b + 8c + j` in its low nibble and that of input `32b +
//!   8c + 4 + j` in its high nibble.
//! - `scales`: f32 `[groups, k_blocks, 16]`, the block scale of output `16g +
//!   l`, block `b`.
//! - `zero_points`: u8 `[groups, k_blocks, 16]`, likewise.
//!
//! 5.25 bits per weight (`MatMulNBits`' layout: 5.125).
//!
//! # Numerics
//!
//! Each row's activations are quantized per block as
//! [`quantize_rows`] states (the quantizer `MatMulNBits` level 4 uses, which
//! the exporter's simulation graph reproduces). Then, per row and output,
//! with `qᵢ` the row's int8 codes, `s_b` its block scale, `cᵢ`, `z_b`, `w_b`
//! the weight's codes, zero point and scale:
//!
//! ```text
//! d_b = Σ_{i ∈ b} cᵢ · qᵢ − z_b · Σ_{i ∈ b} qᵢ      (exact, i32)
//! y   = fma(d_{B−1}, w_{B−1} · s_{B−1}, … fma(d_0, w_0 · s_0, 0))   (f32, block order)
//! ```
//!
//! so `y` equals `Σ (qᵢ s_b)(cᵢ − z_b) w_b` up to f32 rounding, and the value
//! does not depend on how many rows a call has or how outputs are split
//! between threads. The AVX-512 and the portable paths evaluate exactly these
//! f32 operations in this order: they agree bit for bit (tested).

use std::ops::Range;

use super::QuantError;
use super::blockwise::{BLOCK, BlockwiseTensor, IntBits};

/// The ONNX domain of the operator that runs this layout (`heart-backend`
/// registers it in every session).
pub const OP_DOMAIN: &str = "ai.heart";
/// Its name: inputs `x`, `packed`, `scales`, `zero_points`, attributes `K`, `N`.
pub const OP_NAME: &str = "MatMulInt4x16";

/// Outputs per group (one AVX-512 vector of i32 / f32 lanes).
pub const LANES: usize = 16;
/// Packed bytes per group and block: 16 outputs × 32 inputs at 4 bits.
pub const GROUP_BLOCK_BYTES: usize = LANES * BLOCK / 2;

/// An int4 weight in the interleaved layout of the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Int4x16 {
    n: usize,
    k: usize,
    packed: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<u8>,
}

impl Int4x16 {
    /// The int4 tensor `w` (`[n, k]`) interleaved; int8 tensors are refused.
    pub fn from_blockwise(w: &BlockwiseTensor) -> Result<Self, QuantError> {
        if w.bits() != IntBits::Int4 {
            return Err(QuantError::BadScale {
                what: format!("{:?} weight for the int4 × 16 layout (int4 only)", w.bits()),
                value: 0.0,
            });
        }
        let (n, k, kb) = (w.rows(), w.cols(), w.k_blocks());
        let groups = n.div_ceil(LANES);
        let codes = w.codes();
        let padded = kb * BLOCK;
        let mut packed = vec![0u8; groups * kb * GROUP_BLOCK_BYTES];
        let mut scales = vec![0f32; groups * kb * LANES];
        let mut zero_points = vec![0u8; groups * kb * LANES];
        for o in 0..n {
            let (g, l) = (o / LANES, o % LANES);
            let row = &codes[o * padded..(o + 1) * padded];
            for b in 0..kb {
                let at = (g * kb + b) * LANES + l;
                scales[at] = w.scales()[o * kb + b];
                zero_points[at] = w.zero_points()[o * kb + b];
                let block = &row[b * BLOCK..(b + 1) * BLOCK];
                let base = (g * kb + b) * GROUP_BLOCK_BYTES;
                for c in 0..4 {
                    for j in 0..4 {
                        let (lo, hi) = (block[8 * c + j], block[8 * c + 4 + j]);
                        packed[base + (c * LANES + l) * 4 + j] = lo | (hi << 4);
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            packed,
            scales,
            zero_points,
        })
    }

    /// `packed` of the module doc, flattened.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// `scales` of the module doc, flattened.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// `zero_points` of the module doc, flattened.
    pub fn zero_points(&self) -> &[u8] {
        &self.zero_points
    }

    /// The borrowed form the kernel reads.
    pub fn view(&self) -> Int4x16Ref<'_> {
        Int4x16Ref {
            n: self.n,
            k: self.k,
            packed: &self.packed,
            scales: &self.scales,
            zero_points: &self.zero_points,
        }
    }
}

/// Borrowed [`Int4x16`] parts whose lengths are checked against `n` and `k`.
#[derive(Debug, Clone, Copy)]
pub struct Int4x16Ref<'a> {
    n: usize,
    k: usize,
    packed: &'a [u8],
    scales: &'a [f32],
    zero_points: &'a [u8],
}

/// A length mismatch of [`Int4x16Ref::new`]: which part, expected and found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("int4 × 16 weight [{n}, {k}]: {what} has {found} elements, expected {expected}")]
pub struct LayoutError {
    /// The part.
    pub what: &'static str,
    /// Outputs.
    pub n: usize,
    /// Inputs.
    pub k: usize,
    /// Expected length.
    pub expected: usize,
    /// Found length.
    pub found: usize,
}

impl<'a> Int4x16Ref<'a> {
    /// Parts of an `[n, k]` weight, checked for their lengths.
    pub fn new(
        n: usize,
        k: usize,
        packed: &'a [u8],
        scales: &'a [f32],
        zero_points: &'a [u8],
    ) -> Result<Self, LayoutError> {
        let blocks = n.div_ceil(LANES) * k.div_ceil(BLOCK);
        let check = |what, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(LayoutError {
                    what,
                    n,
                    k,
                    expected,
                    found,
                })
            }
        };
        check("packed", blocks * GROUP_BLOCK_BYTES, packed.len())?;
        check("scales", blocks * LANES, scales.len())?;
        check("zero_points", blocks * LANES, zero_points.len())?;
        Ok(Self {
            n,
            k,
            packed,
            scales,
            zero_points,
        })
    }

    /// Groups of 16 outputs.
    pub fn groups(&self) -> usize {
        self.n.div_ceil(LANES)
    }

    fn k_blocks(&self) -> usize {
        self.k.div_ceil(BLOCK)
    }
}

/// f32 rows quantized to int8 per 32-element block, as [`quantize_rows`] states.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    rows: usize,
    k_blocks: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl Int8Rows {
    /// Codes, `[rows, k_blocks · 32]` (padding 0).
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// Block scales `amax / 127`, `[rows, k_blocks]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
}

/// Quantizes the row-major `[rows, k]` f32 `x` per row and 32-element block
/// (a last, shorter block as is): `amax = max |x|`, codes `round_half_even(x
/// · (127 / amax))` (all 0 where `amax` is 0), scale `amax / 127`. These are
/// the steps of `MatMulNBits`' level-4 quantizer (the exporter's
/// `int8_block_activation` graph). Non-finite inputs give unspecified codes.
pub fn quantize_rows(x: &[f32], rows: usize, k: usize) -> Int8Rows {
    let kb = k.div_ceil(BLOCK);
    let mut codes = vec![0i8; rows * kb * BLOCK];
    let mut scales = vec![0f32; rows * kb];
    let mut sums = vec![0i32; rows * kb];
    for r in 0..rows {
        let row = &x[r * k..(r + 1) * k];
        for (b, block) in row.chunks(BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let at = r * kb + b;
            if amax == 0.0 {
                continue;
            }
            let inv = 127.0 / amax;
            scales[at] = amax / 127.0;
            let dest = &mut codes[at * BLOCK..at * BLOCK + block.len()];
            for (q, &v) in dest.iter_mut().zip(block) {
                *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
            sums[at] = dest.iter().map(|&q| i32::from(q)).sum();
        }
    }
    Int8Rows {
        rows,
        k_blocks: kb,
        codes,
        scales,
        sums,
    }
}

/// Whether this CPU runs the AVX-512 VNNI path (else the portable one, same
/// values, far slower).
pub fn has_fast_path() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y = x · dequant(w)ᵀ` for the output groups `groups` of `w`: writes
/// `out[r · 16·len + 16·(g − start) + l]` for each row `r` of `x`, group `g`
/// and lane `l` (a `[rows, 16 · groups.len()]` block; lanes past `n` get 0).
///
/// # Panics
///
/// When `x` was quantized for another `k`, `groups` exceeds `w`'s groups or
/// `out` is not `rows · 16 · groups.len()` long (caller bugs).
pub fn matmul_groups(w: Int4x16Ref<'_>, x: &Int8Rows, groups: Range<usize>, out: &mut [f32]) {
    assert_eq!(x.k_blocks, w.k_blocks(), "activations quantized for another k");
    assert!(groups.end <= w.groups(), "groups {groups:?} of {}", w.groups());
    let width = LANES * groups.len();
    assert_eq!(out.len(), x.rows * width, "output block length");
    #[cfg(target_arch = "x86_64")]
    if has_fast_path() {
        // SAFETY: the CPU has the features `avx512::group` is compiled for
        // (checked just above); it reads only in-bounds parts (lengths checked
        // by `Int4x16Ref::new` and the asserts above).
        unsafe { avx512::groups(w, x, groups, out, width) };
        return;
    }
    for (i, g) in groups.enumerate() {
        for r in 0..x.rows {
            let lanes = portable_group(w, x, g, r);
            out[r * width + i * LANES..][..LANES].copy_from_slice(&lanes);
        }
    }
}

/// One group's 16 outputs for row `r`, in the module doc's operation order.
fn portable_group(w: Int4x16Ref<'_>, x: &Int8Rows, g: usize, r: usize) -> [f32; LANES] {
    let kb = w.k_blocks();
    let mut acc = [0f32; LANES];
    for b in 0..kb {
        let at = g * kb + b;
        let bytes = &w.packed[at * GROUP_BLOCK_BYTES..(at + 1) * GROUP_BLOCK_BYTES];
        let q = &x.codes[(r * kb + b) * BLOCK..][..BLOCK];
        let (s, sum) = (x.scales[r * kb + b], x.sums[r * kb + b]);
        for (l, a) in acc.iter_mut().enumerate() {
            let mut d = 0i32;
            for c in 0..4 {
                for j in 0..4 {
                    let byte = bytes[(c * LANES + l) * 4 + j];
                    d += i32::from(byte & 0x0F) * i32::from(q[8 * c + j]);
                    d += i32::from(byte >> 4) * i32::from(q[8 * c + 4 + j]);
                }
            }
            d -= i32::from(w.zero_points[at * LANES + l]) * sum;
            *a = (d as f32).mul_add(w.scales[at * LANES + l] * s, *a);
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{BLOCK, GROUP_BLOCK_BYTES, Int4x16Ref, Int8Rows, LANES};

    /// Blocks ahead of the loads that the weight, scale and zero-point
    /// streams are prefetched: +20 % at 2 rows on a 2-core Xeon (13 → 24.5
    /// GB/s with the `vpmaddwd` zero-point product below); 4 to 32 measure
    /// the same.
    const PREFETCH: usize = 8;

    /// [`super::matmul_groups`]' fast path: rows two at a time (one weight
    /// load feeds both), a single row last.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn groups(w: Int4x16Ref<'_>, x: &Int8Rows, groups: Range<usize>, out: &mut [f32], width: usize) {
        for (i, g) in groups.enumerate() {
            let mut r = 0;
            while r < x.rows {
                let two = r + 1 < x.rows;
                // SAFETY: same features; `g` and the rows are in range.
                let [y0, y1] = unsafe { group(w, x, g, r, if two { r + 1 } else { r }) };
                // SAFETY: `out` is `[rows, width]` and `i · 16 + 16 ≤ width`.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr().add(r * width + i * LANES), y0);
                    if two {
                        _mm512_storeu_ps(out.as_mut_ptr().add((r + 1) * width + i * LANES), y1);
                    }
                }
                r += 2;
            }
        }
    }

    /// Rows `r0` and `r1` (possibly equal) times group `g`, in the module
    /// doc's operation order.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group(w: Int4x16Ref<'_>, x: &Int8Rows, g: usize, r0: usize, r1: usize) -> [__m512; 2] {
        let kb = w.k_blocks();
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); 2];
        // In bounds by `Int4x16Ref::new`'s length checks; the prefetches may
        // point past the end (harmless: prefetches do not fault), hence
        // `wrapping_add` for them.
        let wp = w.packed[g * kb * GROUP_BLOCK_BYTES..].as_ptr();
        let sp = w.scales[g * kb * LANES..].as_ptr();
        let zp = w.zero_points[g * kb * LANES..].as_ptr();
        let rows = [r0, r1];
        for b in 0..kb {
            let mut lo = [_mm512_setzero_si512(); 2];
            let mut hi = [_mm512_setzero_si512(); 2];
            let q = rows.map(|r| x.codes[(r * kb + b) * BLOCK..][..BLOCK].as_ptr() as *const i32);
            for c in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((b + PREFETCH) * GROUP_BLOCK_BYTES + c * 64) as *const i8);
                // SAFETY: 64 bytes of block `b`'s 256 (in bounds, above).
                let v = unsafe { _mm512_loadu_si512(wp.add(b * GROUP_BLOCK_BYTES + c * 64) as *const __m512i) };
                let vl = _mm512_and_si512(v, mask);
                let vh = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
                for t in 0..2 {
                    // SAFETY: words 2c and 2c + 1 of the row's 32-byte block.
                    let (a_lo, a_hi) =
                        unsafe { (q[t].add(2 * c).read_unaligned(), q[t].add(2 * c + 1).read_unaligned()) };
                    lo[t] = _mm512_dpbusd_epi32(lo[t], vl, _mm512_set1_epi32(a_lo));
                    hi[t] = _mm512_dpbusd_epi32(hi[t], vh, _mm512_set1_epi32(a_hi));
                }
            }
            _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add((b + PREFETCH) * LANES) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(zp.wrapping_add((b + PREFETCH) * LANES) as *const i8);
            // SAFETY: block `b`'s 16 scales and 16 zero points (in bounds).
            let ws = unsafe { _mm512_loadu_ps(sp.add(b * LANES)) };
            let z = unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(zp.add(b * LANES) as *const __m128i)) };
            for t in 0..2 {
                let at = rows[t] * kb + b;
                // z · sum as one `vpmaddwd`: z < 16 sits in each lane's low
                // i16 with a zero high half, and |sum| ≤ 32 · 127 fits the
                // low i16 of the broadcast sum, so the pair sum is exact.
                let d = _mm512_sub_epi32(
                    _mm512_add_epi32(lo[t], hi[t]),
                    _mm512_madd_epi16(z, _mm512_set1_epi32(x.sums[at])),
                );
                let s = _mm512_mul_ps(ws, _mm512_set1_ps(x.scales[at]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[t]);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blockwise::quantize_blockwise;

    fn lcg(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// `Σ (q s)(c − z) w` in f64 from the unpacked parts.
    fn reference(w: &BlockwiseTensor, x: &Int8Rows, r: usize, o: usize) -> f64 {
        let kb = w.k_blocks();
        let codes = w.codes();
        (0..w.cols())
            .map(|i| {
                let b = i / BLOCK;
                let deq = (f64::from(codes[o * kb * BLOCK + i]) - f64::from(w.zero_points()[o * kb + b]))
                    * f64::from(w.scales()[o * kb + b]);
                f64::from(x.codes[r * kb * BLOCK + i]) * f64::from(x.scales[r * kb + b]) * deq
            })
            .sum()
    }

    #[test]
    fn products_match_the_dequantized_reference_for_ragged_shapes() {
        for (n, k, rows) in [(16, 32, 2), (37, 48, 3), (5, 100, 1), (64, 256, 4)] {
            let w = quantize_blockwise(&lcg(1, n * k), n, k, IntBits::Int4).unwrap();
            let packed = Int4x16::from_blockwise(&w).unwrap();
            let x = quantize_rows(&lcg(2, rows * k), rows, k);
            let groups = packed.view().groups();
            let mut out = vec![f32::NAN; rows * groups * LANES];
            matmul_groups(packed.view(), &x, 0..groups, &mut out);
            for r in 0..rows {
                for o in 0..groups * LANES {
                    let y = f64::from(out[r * groups * LANES + o]);
                    if o >= n {
                        assert_eq!(y, 0.0, "padding lane {o}");
                        continue;
                    }
                    let want = reference(&w, &x, r, o);
                    assert!(
                        (y - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "[{n},{k}] row {r} out {o}: {y} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_and_portable_paths_agree_bit_for_bit_and_split_freely() {
        let (n, k, rows) = (48, 96, 3);
        let w = quantize_blockwise(&lcg(3, n * k), n, k, IntBits::Int4).unwrap();
        let packed = Int4x16::from_blockwise(&w).unwrap();
        let x = quantize_rows(&lcg(4, rows * k), rows, k);
        let mut whole = vec![0f32; rows * 3 * LANES];
        matmul_groups(packed.view(), &x, 0..3, &mut whole);
        for g in 0..3 {
            let mut one = vec![0f32; rows * LANES];
            matmul_groups(packed.view(), &x, g..g + 1, &mut one);
            for r in 0..rows {
                assert_eq!(one[r * LANES..][..LANES], whole[r * 3 * LANES + g * LANES..][..LANES]);
                assert_eq!(portable_group(packed.view(), &x, g, r), one[r * LANES..][..LANES]);
            }
        }
    }

    #[test]
    fn activation_quantizer_rounds_half_to_even_per_block() {
        let mut x = vec![0f32; 40];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = -2.5;
        x[32] = -4.0;
        x[33] = 1.0;
        let q = quantize_rows(&x, 1, 40);
        assert_eq!(q.scales(), &[1.0, 4.0 / 127.0]);
        assert_eq!(&q.codes()[..4], &[127, 0, 2, -2]);
        assert_eq!(&q.codes()[32..35], &[-127, 32, 0]);
        assert_eq!(q.sums, vec![127, -95]);
    }

    #[test]
    fn views_check_lengths_and_int8_is_refused() {
        let w = quantize_blockwise(&lcg(5, 16 * 32), 16, 32, IntBits::Int4).unwrap();
        let p = Int4x16::from_blockwise(&w).unwrap();
        assert!(Int4x16Ref::new(16, 32, p.packed(), p.scales(), p.zero_points()).is_ok());
        let e = Int4x16Ref::new(16, 64, p.packed(), p.scales(), p.zero_points()).unwrap_err();
        assert_eq!((e.what, e.expected, e.found), ("packed", 512, 256));
        let w8 = quantize_blockwise(&lcg(5, 16 * 32), 16, 32, IntBits::Int8).unwrap();
        assert!(Int4x16::from_blockwise(&w8).is_err());
    }
}
