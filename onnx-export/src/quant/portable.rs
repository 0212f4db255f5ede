//! The portable lowerings: standard ONNX operators that ONNX Runtime's CPU
//! provider runs (opset 21), bit-exact against [`heart::quant`].
//!
//! # NVFP4 weight (`[out, in]` → `[in, out]`)
//!
//! ```text
//! codes u8 [in, out/2] ─Cast(int32)─Gather(byte_pairs f32 [256, 2])─▶ [in, out/2, 2]
//!                                      ─Reshape─▶ [in/16, 16, out]
//! block_scales f8e4m3fn [in/16, 1, out] ─DequantizeLinear(global f32)─▶ d [in/16, 1, out]
//! Mul ─▶ [in/16, 16, out] ─Reshape─▶ [in, out] (─Cast─▶ f16/bf16)
//! ```
//!
//! Why these operators:
//! - **Byte → pair table, not nibble arithmetic.** `Gather` needs int32/int64
//!   indices, so the packed bytes are cast once whatever happens next. A
//!   256-entry table of `[E2M1(low nibble), E2M1(high nibble)]` then decodes a
//!   byte into its two values with one lookup — exact (the entries are the
//!   reference's [`E2M1_VALUES`]) and cheaper than `BitwiseAnd` + `BitShift` +
//!   `Concat` + a second cast, which each write a full intermediate tensor.
//! - **Pairs along the output axis.** `Gather` appends the pair as the last
//!   axis, so the two codes of a byte are made neighbours in the final
//!   `[in, out]` layout: rows `2j` and `2j+1` of the same input column. The
//!   result is already in MatMul layout and the graph needs no `Transpose` (a
//!   full pass over an f32 copy of the weight). The repacking happens once, in
//!   Rust, at export.
//! - **Block scales as `DequantizeLinear(e4m3 codes, global)`.** ONNX Runtime
//!   decodes E4M3FN exactly and multiplies once in f32: `e4m3(s) * global`, the
//!   reference's block divisor. They are stored `[in/16, 1, out]` so the
//!   product broadcasts over the 16 rows of a block without an `Unsqueeze`.
//!
//! # FP8 weight
//!
//! Codes stored transposed, `[in, out]`, with the per-output-channel scales on
//! axis 1 of that layout: one `DequantizeLinear`, `decode(code) * scale`.
//!
//! # NVFP4 activation fake-quantization (`[..., K]`, blocks along the last axis)
//!
//! With `x` viewed as `[-1, K/16, 16]`, per block, exactly as
//! [`heart::quant::nvfp4`] evaluates it:
//! 1. `s = (amax / 6) / global` (`ReduceMax(Abs)`, two `Div`s in that order);
//! 2. `code = QuantizeLinear(s, 1, zero_point: f8e4m3fn, saturate=1)`: round to
//!    nearest even onto E4M3, ±inf/overflow saturating at 448 (dividing by the
//!    scale 1 is exact); `d = DequantizeLinear(code, global) = e4m3 * global`;
//! 3. `y = x / d`, then rounding onto the E2M1 grid with ties to even. Within a
//!    binade the grid is uniform: step 0.5 below 2, 1 in [2, 4), 2 from 4 on.
//!    So `q = Round(y / step) * step` with `step` picked by `|y|` (`Where`), then
//!    `Clip(q, -6, 6)`. `Round` is round-half-to-even, and on every binade the
//!    even multiples of the step are exactly the even E2M1 codes (0, 1, 2, 3, 4
//!    at step 0.5 are codes 0–4; 2, 3, 4 at step 1 are codes 4–6; 4, 6 at step
//!    2 are codes 6, 7), so each tie — 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 —
//!    goes where the reference sends it; a tie at a binade's top (1.75 → 2,
//!    3.5 → 4) rounds up into the next binade's first grid point, also right.
//!    Dividing and multiplying by a power of two is exact here, and `Round`
//!    keeps the sign, so small negative values give −0 like the reference's
//!    sign-magnitude code `1000`. This needs 9 elementwise operators; the
//!    alternative, comparing `|y|` against the 7 midpoints, needs 7 compares, 7
//!    casts and 7 adds plus a sign fix.
//! 4. `out = q * d`, and `0` where `d == 0` (the reference gives +0 for every
//!    element of a block whose scale is 0, never dividing by it).
//!
//! A global scale of 0 is rejected at export: ONNX would divide by it.
//!
//! [`E2M1_VALUES`]: heart::quant::e2m1::E2M1_VALUES

use heart::quant::e2m1::{E2M1_MAX, E2M1_VALUES};
use heart::quant::fp8::{Fp8Granularity, Fp8Tensor};
use heart::quant::nvfp4::{NVFP4_BLOCK, Nvfp4Tensor};

use super::{ActQuant, cast_from_f32, check_features, check_float, check_global};
use crate::error::{ExportError, Result};
use crate::graph::{Attr, DType, GraphBuilder, Value};

/// Name of the per-graph byte → E2M1 pair table.
pub const BYTE_PAIRS: &str = "nvfp4.e2m1_byte_pairs";

/// The 256×2 table: row `b` is `[E2M1(b & 15), E2M1(b >> 4)]`.
pub fn byte_pair_values() -> Vec<f32> {
    (0..=255u8)
        .flat_map(|b| [E2M1_VALUES[usize::from(b & 0x0F)], E2M1_VALUES[usize::from(b >> 4)]])
        .collect()
}

/// Adds the byte → pair table to `g` (once per graph).
pub(super) fn byte_pair_table(g: &mut GraphBuilder) -> Result<Value> {
    g.init_f32(BYTE_PAIRS, DType::F32, &[256, 2], &byte_pair_values())
}

/// The codes of a `[out, in]` NVFP4 tensor repacked for the portable layout:
/// `[in, out/2]`, byte `[i, j]` = code `(2j, i)` low, code `(2j+1, i)` high.
pub fn portable_codes(w: &Nvfp4Tensor) -> Vec<u8> {
    let (out, inp) = (w.rows(), w.cols());
    let codes = w.codes();
    let mut packed = Vec::with_capacity(out / 2 * inp);
    for i in 0..inp {
        for j in 0..out / 2 {
            let lo = codes[2 * j * inp + i];
            let hi = codes[(2 * j + 1) * inp + i];
            packed.push(lo | (hi << 4));
        }
    }
    packed
}

/// The block scales of a `[out, in]` NVFP4 tensor transposed to
/// `[in/16, out]` (stored with shape `[in/16, 1, out]`).
pub fn portable_block_scales(w: &Nvfp4Tensor) -> Vec<u8> {
    let (out, blocks) = (w.rows(), w.cols() / NVFP4_BLOCK);
    let scales = w.block_scales();
    (0..blocks)
        .flat_map(|b| (0..out).map(move |o| scales[o * blocks + b]))
        .collect()
}

/// Emits a portable NVFP4 weight; see the module doc.
pub(super) fn nvfp4_weight(
    g: &mut GraphBuilder,
    name: &str,
    w: &Nvfp4Tensor,
    table: &Value,
    dtype: DType,
) -> Result<Value> {
    check_float(name, dtype)?;
    let (out, inp) = (w.rows(), w.cols());
    if out == 0 || !out.is_multiple_of(2) || inp == 0 {
        return Err(ExportError::Shape {
            tensor: name.to_string(),
            expected: "a non-empty weight with an even number of output rows \
                       (portable NVFP4 packs two rows per byte)"
                .into(),
            got: format!("[{out}, {inp}]"),
        });
    }
    let blocks = inp / NVFP4_BLOCK;
    let codes = g.init_stream(&format!("{name}.nvfp4_codes"), DType::U8, &[inp, out / 2], |s| {
        s.push_bytes(&portable_codes(w))
    })?;
    let scales = g.init_stream(
        &format!("{name}.nvfp4_block_scales"),
        DType::F8E4M3FN,
        &[blocks, 1, out],
        |s| s.push_bytes(&portable_block_scales(w)),
    )?;
    let global = g.init_f32(&format!("{name}.nvfp4_global"), DType::F32, &[], &[w.global_scale()])?;
    let scope = format!("{}.nvfp4", name.trim_end_matches(".weight"));
    Ok(g.with_scope(&scope, |g| {
        let idx = g.cast(&codes, DType::I32);
        let pairs = g.gather(table, &idx, 0);
        let values = g.reshape(&pairs, &[blocks as i64, NVFP4_BLOCK as i64, out as i64]);
        let d = g.node("DequantizeLinear", &[&scales, &global], vec![]);
        let w = g.mul(&values, &d);
        let w = g.reshape(&w, &[inp as i64, out as i64]);
        cast_from_f32(g, w, dtype)
    }))
}

/// Emits a portable FP8 weight: codes `[in, out]`, `DequantizeLinear` axis 1.
pub(super) fn fp8_weight(g: &mut GraphBuilder, name: &str, w: &Fp8Tensor, dtype: DType) -> Result<Value> {
    check_float(name, dtype)?;
    let w = fp8_dequantized(g, name, w, DType::F32)?;
    Ok(cast_from_f32(g, w, dtype))
}

/// The E4M3FN codes of `w` (`[out, in]`) stored `[in, out]` with their scales
/// as `scale_dtype`, and the `DequantizeLinear` (axis 1) that gives the
/// `[in, out]` weight in `scale_dtype` (the output type is the scale's).
pub(super) fn fp8_dequantized(g: &mut GraphBuilder, name: &str, w: &Fp8Tensor, scale_dtype: DType) -> Result<Value> {
    let (out, inp) = (w.rows(), w.cols());
    let src = w.codes();
    let transposed: Vec<u8> = (0..inp).flat_map(|i| (0..out).map(move |o| src[o * inp + i])).collect();
    let codes = g.init_stream(&format!("{name}.fp8_codes"), DType::F8E4M3FN, &[inp, out], |s| {
        s.push_bytes(&transposed)
    })?;
    let scale_dims: &[usize] = match w.granularity() {
        Fp8Granularity::PerRow => &[out],
        Fp8Granularity::PerTensor => &[],
    };
    let scales = g.init_f32(&format!("{name}.fp8_scales"), scale_dtype, scale_dims, w.scales())?;
    let scope = format!("{}.fp8", name.trim_end_matches(".weight"));
    Ok(g.with_scope(&scope, |g| {
        g.node("DequantizeLinear", &[&codes, &scales], vec![Attr::int("axis", 1)])
    }))
}

/// Emits the NVFP4 fake-quantization of `x`; see the module doc.
pub(super) fn nvfp4_activation(g: &mut GraphBuilder, x: &Value, act: ActQuant<'_>, dtype: DType) -> Result<Value> {
    let ActQuant { name, features, global } = act;
    check_float(name, dtype)?;
    check_features(name, features)?;
    check_global(name, global)?;
    let zero_point = g.init_stream(&format!("{name}.nvfp4_fp8_zero"), DType::F8E4M3FN, &[], |s| {
        s.push_bytes(&[0])
    })?;
    let global = g.init_f32(&format!("{name}.nvfp4_global"), DType::F32, &[], &[global])?;
    let scope = format!("{name}.nvfp4");
    Ok(g.with_scope(&scope, |g| {
        let xf = if dtype == DType::F32 {
            x.clone()
        } else {
            g.cast(x, DType::F32)
        };
        let shape = g.shape(&xf);
        let blocks = (features / NVFP4_BLOCK) as i64;
        let xb = g.reshape(&xf, &[-1, blocks, NVFP4_BLOCK as i64]);
        let d = block_divisor(g, &xb, &global, &zero_point);
        let y = g.div(&xb, &d);
        let q = round_to_e2m1(g, &y);
        let deq = g.mul(&q, &d);
        let zero = g.scalar_f(0.0, DType::F32);
        let is_zero = g.node("Equal", &[&d, &zero], vec![]);
        let out = g.where_(&is_zero, &zero, &deq);
        let out = g.node("Reshape", &[&out, &shape], vec![]);
        cast_from_f32(g, out, dtype)
    }))
}

/// Emits the FP8 fake-quantization of `x` with a static per-tensor `scale`:
/// `Cast(x / scale → E4M3FN, saturate)` (round to nearest even, ±448 on
/// overflow, as [`heart::quant::fp8::f32_to_e4m3`]) then `Cast` back and `Mul`.
/// Casts, not a `QuantizeLinear`/`DequantizeLinear` pair: a Q→DQ pair on an
/// activation feeding a `MatMul` is what ONNX Runtime's FP8 QDQ fusion
/// mishandles (dependencies.md §3 case B).
pub(super) fn fp8_activation(g: &mut GraphBuilder, x: &Value, name: &str, scale: f32, dtype: DType) -> Result<Value> {
    check_float(name, dtype)?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(ExportError::Unsupported {
            what: format!(
                "activation `{name}`: FP8 scale {scale} (must be finite and > 0; \
                 a calibrated amax of 0 means the input never carries signal)"
            ),
        });
    }
    let s = g.init_f32(&format!("{name}.fp8_scale"), DType::F32, &[], &[scale])?;
    Ok(g.with_scope(&format!("{name}.fp8"), |g| {
        let xf = if dtype == DType::F32 {
            x.clone()
        } else {
            g.cast(x, DType::F32)
        };
        let y = g.div(&xf, &s);
        let code = g.node(
            "Cast",
            &[&y],
            vec![
                Attr::int("to", i64::from(DType::F8E4M3FN.onnx())),
                Attr::int("saturate", 1),
            ],
        );
        let back = g.cast(&code, DType::F32);
        let out = g.mul(&back, &s);
        cast_from_f32(g, out, dtype)
    }))
}

/// Per block of `xb` (`[N, B, 16]`): `E4M3((amax / 6) / global) * global`,
/// shape `[N, B, 1]`.
fn block_divisor(g: &mut GraphBuilder, xb: &Value, global: &Value, zero_point: &Value) -> Value {
    let abs = g.node("Abs", &[xb], vec![]);
    let axes = g.const_i64(&[-1]);
    let amax = g.node("ReduceMax", &[&abs, &axes], vec![Attr::int("keepdims", 1)]);
    let six = g.scalar_f(E2M1_MAX, DType::F32);
    let s = g.div(&amax, &six);
    let s = g.div(&s, global);
    let one = g.scalar_f(1.0, DType::F32);
    let code = g.node(
        "QuantizeLinear",
        &[&s, &one, zero_point],
        vec![Attr::int("saturate", 1)],
    );
    g.node("DequantizeLinear", &[&code, global], vec![])
}

/// `y` rounded to the nearest E2M1 value, ties to even, saturating at ±6.
fn round_to_e2m1(g: &mut GraphBuilder, y: &Value) -> Value {
    let a = g.node("Abs", &[y], vec![]);
    let two = g.scalar_f(2.0, DType::F32);
    let four = g.scalar_f(4.0, DType::F32);
    let below_two = g.node("Less", &[&a, &two], vec![]);
    let below_four = g.node("Less", &[&a, &four], vec![]);
    let half = g.scalar_f(0.5, DType::F32);
    let one = g.scalar_f(1.0, DType::F32);
    let upper = g.where_(&below_four, &one, &two);
    let step = g.where_(&below_two, &half, &upper);
    let units = g.div(y, &step);
    let units = g.node("Round", &[&units], vec![]);
    let q = g.mul(&units, &step);
    let lo = g.scalar_f(-E2M1_MAX, DType::F32);
    let hi = g.scalar_f(E2M1_MAX, DType::F32);
    g.node("Clip", &[&q, &lo, &hi], vec![])
}
