//! The TensorRT lowering of NVFP4 and FP8: the graphs NVIDIA ModelOpt exports
//! for TensorRT's strongly typed FP4 / FP8 GEMMs (the quantization of the
//! LM's TensorRT graph form, `GraphForm::TensorRt`). ONNX Runtime's CPU provider cannot run
//! it (no FLOAT4E2M1 `DequantizeLinear`, no `trt` domain), so it is only checked
//! structurally here.
//!
//! # What it follows
//!
//! - Weights: ModelOpt `modelopt/onnx/export/nvfp4_exporter.py`
//!   (`_replace_fp4qdq_with_2dq`, earlier `qdq_utils.py` `replace_fp4qdq_with_2dq`):
//!   a FLOAT4E2M1 initializer with the weight's own dims `[out, in]`, packed two
//!   per byte in flat row-major order, first element in the low nibble (their
//!   `_cast_fp4`: `f4[::2] | f4[1::2] << 4`); a FLOAT8E4M3FN block-scale
//!   initializer `[out, in/16]`; an f32 per-tensor scale. Then
//!   `DequantizeLinear(scales_f8, global_f32)` (no attributes) gives the f32
//!   block scales and `DequantizeLinear(w_f4, block_scales, axis=-1,
//!   block_size=16)` the f32 weight `[out, in]`, which reaches the MatMul
//!   through `Transpose` and a `Cast` to the 16-bit compute type (their
//!   `_cast_input_dtypes`).
//! - Activations: ModelOpt `modelopt/torch/quantization/export_onnx.py`
//!   (`export_fp4`, dynamic quantizer): `trt::TRT_FP4DynamicQuantize(x,
//!   global_f32)` with attributes `axis=-1`, `block_size=16`,
//!   `scale_type=17` (FLOAT8E4M3FN) and two outputs `(x_f4, scales_f8)`; then
//!   `DequantizeLinear(scales_f8, global_f32)` and `DequantizeLinear(x_f4,
//!   that, axis=-1, block_size=16)`. The TensorRT dynamic-quantize layer doc
//!   (as summarised in `shared/notes/dependencies.md` §3): block size 16,
//!   blocked axis last or second to last and static, input fp16/bf16/fp32.
//!   ModelOpt substitutes a global scale of 1 for an amax of 0; here a global
//!   scale of 0 is an error, as in the portable form.
//! - ONNX: FLOAT4E2M1 (`TensorProto.DataType` 23) and `DequantizeLinear` on it
//!   need opset 23, hence IR version 11 (`onnx.proto` in this crate). TensorRT
//!   needs ≥ 10.8 for FP4 constants (Torch-TensorRT docs, per the same notes).
//!   The written test graph passes `onnx.checker.check_model(full_check=True)`
//!   (onnx 1.23.2), and `onnx.reference` evaluates its weight path to the same
//!   values as the portable lowering (checked by hand, not in the test suite:
//!   the project's tests do not run Python).
//! - FP8 (W8A8), as ModelOpt's FP8 ONNX export: weights are an E4M3FN
//!   initializer `[in, out]` and a per-output-channel scale `[out]` in the
//!   compute dtype, `DequantizeLinear(codes, scales, axis=1)` straight into the
//!   `MatMul` (the scale's dtype is the output's from opset 19 on, so no `Cast`
//!   sits between the dequantization and the GEMM); activations are a
//!   `QuantizeLinear(x, scale, zero_point = E4M3FN 0)` → `DequantizeLinear`
//!   pair with one static scale (calibrated `amax / 448`) in the compute
//!   dtype. TensorRT-RTX 1.7 builds both strongly typed (tested in
//!   `builder/tests/trt_rtx.rs`). The scales are rounded to the compute dtype,
//!   so at f16 compute the graph is not bit-exact against the reference
//!   quantizer (it is at f32, where both pairs are standard operators ONNX
//!   Runtime CPU runs).
//!
//! # FLOAT4E2M1 initializers
//!
//! The graph builder's dtypes are whole bytes, so the FP4 codes go in as u8
//! `[out, in/2]` (the same bytes) and [`QuantEmitter::finish`] rewrites their
//! `TensorProto` to FLOAT4E2M1 `[out, in]` after the graph is written,
//! checking each one's name, type, dims and byte length, and raises the
//! default-domain opset to [`TENSORRT_MIN_OPSET`] (IR 11). The external data
//! file is untouched. A graph written with `GraphBuilder::finish` instead keeps
//! u8 `[out, in/2]` codes whose blocked `DequantizeLinear` no longer matches the
//! `[out, in/16]` scales: it fails to run rather than dequantize bytes as
//! integers (tested).
//!
//! [`QuantEmitter::finish`]: super::QuantEmitter::finish

use heart::quant::fp8::Fp8Tensor;
use heart::quant::nvfp4::{NVFP4_BLOCK, Nvfp4Tensor};
use prost::Message;

use super::{ActQuant, cast_from_f32, check_features, check_float, check_global};
use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{Attr, DType, GraphBuilder, Value, ir_version_for};
use crate::proto::ModelProto;
use crate::proto::tensor_proto::DataType;

/// Domain of the TensorRT custom operators.
pub const TRT_DOMAIN: &str = "trt";
/// The dynamic FP4 activation quantizer.
pub const FP4_DYNAMIC_QUANTIZE: &str = "TRT_FP4DynamicQuantize";
/// The lowest default-domain opset with FLOAT4E2M1 `DequantizeLinear`.
pub const TENSORRT_MIN_OPSET: i64 = 23;

/// FP4 initializers written as u8 that [`Fp4Initializers::apply`] retypes.
#[derive(Debug, Default)]
pub(super) struct Fp4Initializers {
    pending: Vec<(String, [usize; 2])>,
}

/// Emits a TensorRT NVFP4 weight: `[in, out]` as `dtype`.
pub(super) fn nvfp4_weight(
    g: &mut GraphBuilder,
    fp4: &mut Fp4Initializers,
    name: &str,
    w: &Nvfp4Tensor,
    dtype: DType,
) -> Result<Value> {
    check_float(name, dtype)?;
    let (out, inp) = (w.rows(), w.cols());
    let codes_name = format!("{name}.nvfp4_codes");
    let codes = g.init_stream(&codes_name, DType::U8, &[out, inp / 2], |s| s.push_bytes(w.packed()))?;
    fp4.pending.push((codes_name, [out, inp]));
    let scales = g.init_stream(
        &format!("{name}.nvfp4_block_scales"),
        DType::F8E4M3FN,
        &[out, inp / NVFP4_BLOCK],
        |s| s.push_bytes(w.block_scales()),
    )?;
    let global = g.init_f32(&format!("{name}.nvfp4_global"), DType::F32, &[], &[w.global_scale()])?;
    let scope = format!("{}.nvfp4", name.trim_end_matches(".weight"));
    Ok(g.with_scope(&scope, |g| {
        let block_scales = g.node("DequantizeLinear", &[&scales, &global], vec![]);
        let w = g.node("DequantizeLinear", &[&codes, &block_scales], blocked());
        let wt = g.transpose(&w, &[1, 0]);
        cast_from_f32(g, wt, dtype)
    }))
}

/// Emits TensorRT's dynamic NVFP4 quantization of `x` (`[..., features]`,
/// dtype `dtype`) followed by its two-level dequantization, as `dtype`.
pub(super) fn nvfp4_activation(g: &mut GraphBuilder, x: &Value, act: ActQuant<'_>, dtype: DType) -> Result<Value> {
    let ActQuant { name, features, global } = act;
    check_float(name, dtype)?;
    check_features(name, features)?;
    check_global(name, global)?;
    let global = g.init_f32(&format!("{name}.nvfp4_global"), DType::F32, &[], &[global])?;
    let scope = format!("{name}.nvfp4");
    Ok(g.with_scope(&scope, |g| {
        let mut attrs = blocked();
        attrs.push(Attr::int("scale_type", i64::from(DataType::Float8e4m3fn as i32)));
        let q = g.node_ext(TRT_DOMAIN, FP4_DYNAMIC_QUANTIZE, &[Some(x), Some(&global)], 2, attrs);
        let block_scales = g.node("DequantizeLinear", &[&q[1], &global], vec![]);
        let xq = g.node("DequantizeLinear", &[&q[0], &block_scales], blocked());
        cast_from_f32(g, xq, dtype)
    }))
}

/// Emits a TensorRT FP8 weight: `[in, out]` as `dtype`, dequantized by one
/// `DequantizeLinear` whose scale is already `dtype`.
pub(super) fn fp8_weight(g: &mut GraphBuilder, name: &str, w: &Fp8Tensor, dtype: DType) -> Result<Value> {
    check_float(name, dtype)?;
    super::portable::fp8_dequantized(g, name, w, dtype)
}

/// Emits the FP8 fake-quantization of `x` (dtype `dtype`) with the static
/// per-tensor `scale`: `DequantizeLinear(QuantizeLinear(x))`, as `dtype`.
pub(super) fn fp8_activation(g: &mut GraphBuilder, x: &Value, name: &str, scale: f32, dtype: DType) -> Result<Value> {
    check_float(name, dtype)?;
    let rounded = match dtype {
        DType::F16 => half::f16::from_f32(scale).to_f32(),
        DType::BF16 => half::bf16::from_f32(scale).to_f32(),
        _ => scale,
    };
    if !(rounded.is_finite() && rounded > 0.0) {
        return Err(ExportError::Unsupported {
            what: format!(
                "activation `{name}`: FP8 scale {scale} is {rounded} as {dtype:?} (must be finite and > 0; \
                 a calibrated amax of 0 means the input never carries signal)"
            ),
        });
    }
    let stored = g.init_f32(&format!("{name}.fp8_scale"), dtype, &[], &[scale])?;
    let zero = g.init_stream(&format!("{name}.fp8_zero"), DType::F8E4M3FN, &[], |s| {
        s.push_bytes(&[0])
    })?;
    Ok(g.with_scope(&format!("{name}.fp8"), |g| {
        let q = g.node("QuantizeLinear", &[x, &stored, &zero], vec![]);
        g.node("DequantizeLinear", &[&q, &stored, &zero], vec![])
    }))
}

/// `axis=-1, block_size=16`: NVFP4 blocks along the last (input) axis.
fn blocked() -> Vec<Attr> {
    vec![Attr::int("axis", -1), Attr::int("block_size", NVFP4_BLOCK as i64)]
}

impl Fp4Initializers {
    /// Rewrites the written graph (`files[0]`, the `.onnx`) so the pending
    /// initializers are FLOAT4E2M1 and the opset allows them; a no-op when no
    /// TensorRT weight was emitted.
    pub(super) fn apply(self, mut files: Vec<WrittenFile>) -> Result<Vec<WrittenFile>> {
        if self.pending.is_empty() {
            return Ok(files);
        }
        let Some(onnx) = files.first_mut() else {
            return Err(ExportError::Unsupported {
                what: "retyping FP4 initializers: the graph builder wrote no file".into(),
            });
        };
        let io = |source| ExportError::Io {
            path: onnx.path.clone(),
            source,
        };
        let bytes = std::fs::read(&onnx.path).map_err(io)?;
        let mut model = ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::Shape {
            tensor: onnx.path.display().to_string(),
            expected: "the ONNX model just written".into(),
            got: format!("undecodable protobuf ({e})"),
        })?;
        self.retype(&mut model)?;
        raise_opset(&mut model);
        let encoded = model.encode_to_vec();
        std::fs::write(&onnx.path, &encoded).map_err(io)?;
        onnx.bytes = encoded.len() as u64;
        Ok(files)
    }

    /// Stamps FLOAT4E2M1 `[out, in]` on each pending u8 `[out, in/2]` initializer.
    fn retype(&self, model: &mut ModelProto) -> Result<()> {
        let graph = model.graph.get_or_insert_with(Default::default);
        for (name, [out, inp]) in &self.pending {
            let t = graph
                .initializer
                .iter_mut()
                .find(|t| t.name.as_deref() == Some(name.as_str()))
                .ok_or_else(|| ExportError::Shape {
                    tensor: name.clone(),
                    expected: "an FP4 code initializer in the written graph".into(),
                    got: "no initializer of that name".into(),
                })?;
            let packed_dims = [*out as i64, (*inp / 2) as i64];
            let length = stored_length(t);
            if t.data_type != Some(DataType::Uint8 as i32)
                || t.dims != packed_dims
                || length != Some((out * inp / 2) as u64)
            {
                return Err(ExportError::Shape {
                    tensor: name.clone(),
                    expected: format!("u8 {packed_dims:?} holding {} bytes", out * inp / 2),
                    got: format!("type {:?}, dims {:?}, {length:?} bytes", t.data_type, t.dims),
                });
            }
            t.data_type = Some(DataType::Float4e2m1 as i32);
            t.dims = vec![*out as i64, *inp as i64];
        }
        Ok(())
    }
}

/// Bytes an initializer holds, inline or in the external data file.
fn stored_length(t: &crate::proto::TensorProto) -> Option<u64> {
    if let Some(raw) = &t.raw_data {
        return Some(raw.len() as u64);
    }
    t.external_data
        .iter()
        .find(|e| e.key.as_deref() == Some("length"))
        .and_then(|e| e.value.as_deref()?.parse().ok())
}

/// Default-domain opset raised to at least [`TENSORRT_MIN_OPSET`], IR to match.
fn raise_opset(model: &mut ModelProto) {
    for op in &mut model.opset_import {
        if op.domain.as_deref().unwrap_or("").is_empty() {
            let v = op.version.unwrap_or(0).max(TENSORRT_MIN_OPSET);
            op.version = Some(v);
            let ir = model.ir_version.unwrap_or(0).max(ir_version_for(v));
            model.ir_version = Some(ir);
        }
    }
}
