//! The reference ("simulation") lowering of quantized weights: the weight is
//! quantized by the reference quantizer of its format ([`heart::quant`]),
//! dequantized by the same reference (in f32), and stored as a dense `[in,
//! out]` initializer of the graph's compute dtype for a plain `MatMul`.
//!
//! A graph exported this way computes exactly what the format stores:
//! it is what `heart-eval exact` compares a quantized engine against. It shares
//! none of the engine's storage code (packing, scale layout, in-graph
//! dequantization), so a wrong nibble order, block scale or global scale in an
//! engine shows up as a difference. Activation quantization (W4A4, W8A8) is
//! emitted by the portable quantizers, which are bit-exact against the same
//! reference (see the parent module's *Exactness*). `MatMulNBits` at accuracy
//! level 4 quantizes its activations inside the kernel; the simulation does
//! the same in the graph ([`int8_block_activation`]).

use heart::quant::blockwise::quantize_blockwise;
use heart::quant::fp8::{Fp8Granularity, quantize_fp8};
use heart::quant::nvfp4::quantize_nvfp4;

use super::QuantFormat;
use crate::error::{ExportError, Result};
use crate::graph::{Attr, DType, GraphBuilder, Value};

/// Row-major `[out, inp]` weight `values` (called `name`) quantized to
/// `format` by the reference quantizer and dequantized again: the values the
/// format stores, in f32, row-major `[out, inp]`. NVFP4 gets its own global
/// scale, FP8 one scale per output row, integers 32-element blocks along `inp`
/// (the engine's choices).
pub fn dequantized(format: QuantFormat, name: &str, values: &[f32], out: usize, inp: usize) -> Result<Vec<f32>> {
    let named = |e: heart::quant::QuantError| ExportError::from(e.in_tensor(name));
    Ok(match format {
        QuantFormat::Nvfp4 => quantize_nvfp4(values, out, inp).map_err(named)?.dequantize(),
        QuantFormat::Fp8 => quantize_fp8(values, out, inp, Fp8Granularity::PerRow)
            .map_err(named)?
            .dequantize(),
        QuantFormat::Int(nb) => quantize_blockwise(values, out, inp, nb.bits)
            .map_err(named)?
            .dequantize(),
    })
}

/// Emits [`dequantized`] as the `[inp, out]` initializer `{name}.reference`
/// of `dtype` (f16 rounds to nearest even, as the engines' final `Cast` does).
pub fn dense_weight(
    g: &mut GraphBuilder,
    format: QuantFormat,
    name: &str,
    values: &[f32],
    (out, inp): (usize, usize),
    dtype: DType,
) -> Result<Value> {
    let w = dequantized(format, name, values, out, inp)?;
    let transposed: Vec<f32> = (0..inp)
        .flat_map(|i| w.iter().skip(i).step_by(inp).copied().collect::<Vec<_>>())
        .collect();
    g.init_f32(&format!("{name}.reference"), dtype, &[inp, out], &transposed)
}

/// Block length of `MatMulNBits`' int8 activation quantization (its weight block).
pub const INT8_ACT_BLOCK: usize = 32;

/// The activation quantizer of `MatMulNBits` at accuracy level 4 on f32 `x`
/// (`[..., features]`), as ONNX Runtime's MLAS kernels compute it: per block of
/// [`INT8_ACT_BLOCK`] elements along the last axis (a last, shorter block as
/// is), `amax = max |x|`, `q = round_half_even(x · (127 / amax))`, and the
/// value the integer product stands for, `q · (amax / 127)` (0 where `amax`
/// is 0).
pub fn int8_block_activation(g: &mut GraphBuilder, x: &Value, features: usize, name: &str) -> Value {
    g.with_scope(&format!("{name}.int8_act"), |g| {
        let shape = g.shape(x);
        let full = features / INT8_ACT_BLOCK * INT8_ACT_BLOCK;
        let mut parts = Vec::new();
        for (start, end, block) in [(0, full, INT8_ACT_BLOCK), (full, features, features - full)] {
            if end == start {
                continue;
            }
            let part = g.slice(x, &[start as i64], &[end as i64], &[-1]);
            let blocks = ((end - start) / block) as i64;
            let xb = g.reshape(&part, &[-1, blocks, block as i64]);
            let q = int8_blocks(g, &xb);
            parts.push(g.reshape(&q, &[-1, (end - start) as i64]));
        }
        let refs: Vec<&Value> = parts.iter().collect();
        let flat = if refs.len() == 1 {
            parts[0].clone()
        } else {
            g.concat(&refs, -1)
        };
        // `allowzero`: `x` may have no rows (the decoder's heads multiply zero
        // rows on most calls), and a 0 in the shape must stay 0.
        g.node("Reshape", &[&flat, &shape], vec![Attr::int("allowzero", 1)])
    })
}

/// Fake-quantizes `xb` `[rows, blocks, block]` to int8 per block (last axis).
fn int8_blocks(g: &mut GraphBuilder, xb: &Value) -> Value {
    let abs = g.node("Abs", &[xb], vec![]);
    let axes = g.const_i64(&[-1]);
    let amax = g.node("ReduceMax", &[&abs, &axes], vec![Attr::int("keepdims", 1)]);
    let levels = g.scalar_f(127.0, DType::F32);
    let inverse = g.div(&levels, &amax);
    let y = g.mul(xb, &inverse);
    let q = g.node("Round", &[&y], vec![]);
    let scale = g.div(&amax, &levels);
    let deq = g.mul(&q, &scale);
    let zero = g.scalar_f(0.0, DType::F32);
    let is_zero = g.node("Equal", &[&amax, &zero], vec![]);
    g.where_(&is_zero, &zero, &deq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::NBits;
    use heart::quant::blockwise::IntBits;

    /// Every format's simulation equals the reference round trip, and differs
    /// from the input by the format's own error (not zero, not more).
    #[test]
    fn dequantized_is_the_reference_round_trip() {
        let (out, inp) = (4, 64);
        let values: Vec<f32> = (0..out * inp).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let nb = NBits::new(IntBits::Int4);
        for (format, worst) in [
            (QuantFormat::Nvfp4, 0.35),
            (QuantFormat::Fp8, 0.07),
            (QuantFormat::Int(nb), 0.25),
        ] {
            let d = dequantized(format, "w", &values, out, inp).unwrap();
            let err = values
                .iter()
                .zip(&d)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(err > 0.0 && err < worst, "{format:?}: worst relative error {err}");
        }
        let nv = quantize_nvfp4(&values, out, inp).unwrap().dequantize();
        assert_eq!(dequantized(QuantFormat::Nvfp4, "w", &values, out, inp).unwrap(), nv);
    }
}
