//! Lowering quantized linear layers into ONNX graphs, in two forms.
//!
//! One logical quantized weight — an [`Nvfp4Tensor`] or an [`Fp8Tensor`] from
//! the bit-exact reference quantizers in [`heart::quant`] — is emitted as
//! initializers plus the nodes that turn them back into the dense matrix a
//! `MatMul` consumes. Every such lowering returns the weight in MatMul layout
//! `[in, out]` (the PyTorch `[out, in]` weight transposed), as f32, f16 or bf16.
//! The blockwise integer weights ([`BlockwiseTensor`]) are the exception: ONNX
//! Runtime multiplies them by the activations in one contrib operator, so
//! [`QuantEmitter::linear`] emits the product itself ([`nbits`]).
//!
//! | scheme | runs on | stored per parameter | what the graph does each run |
//! |---|---|---|---|
//! | [`WeightScheme::Nvfp4Portable`] | ONNX Runtime CPU | 0.5 B codes + 1/16 B block scale + 4 B global per tensor | `Cast`, `Gather` (byte → two E2M1 values), `DequantizeLinear` of the FP8 block scales by the global scale, `Mul` |
//! | [`WeightScheme::Fp8Portable`] | ONNX Runtime CPU | 1 B code + 4 B scale per output channel | `DequantizeLinear` (axis 1) |
//! | [`WeightScheme::Nvfp4TensorRt`] | TensorRT ≥ 10.8 (not ONNX Runtime CPU) | as NVFP4 above | two-level `DequantizeLinear`, `Transpose` |
//! | [`WeightScheme::Fp8TensorRt`] | TensorRT; ONNX Runtime CPU too | 1 B code + a compute-dtype scale per output channel | `DequantizeLinear` (axis 1) straight to the compute dtype |
//! | [`WeightScheme::MatMulNBits`] | ONNX Runtime (contrib operator) | int4: 0.5 B + 4 B scale + ½ B zero point per 32; int8: 1 B + 5 B per 32 | one `com.microsoft.MatMulNBits` (dequantizes inside the kernel) |
//!
//! Bytes read per frame for the weights are what is stored: 0.5 + 1/16 =
//! 0.5625 byte per parameter for NVFP4 (plus 4 bytes per tensor), 1 byte (plus
//! 4 bytes per output channel) for FP8, against 2 for f16. That saving is the
//! roofline point on a GPU, where TensorRT fuses the dequantization into the
//! GEMM. The portable forms dequantize on the fly with ordinary ONNX operators
//! every run: on a CPU they shrink the engine files but cost compute (and, as
//! below, ONNX Runtime's constant folding may undo the RAM saving).
//!
//! # Exactness
//!
//! The portable lowerings are bit-exact against the Rust reference:
//! [`Nvfp4Tensor::dequantize`] computes `E2M1_VALUES[code] * (e4m3(scale) *
//! global)` in f32 and the graph evaluates the same two f32 products in the same
//! order (`DequantizeLinear` is `decode(code) * scale`, one rounding; the table
//! lookup is exact); FP8 is one `DequantizeLinear`, `decode(code) * scale`, as
//! [`Fp8Tensor::dequantize`]. The activation fake-quantization
//! ([`QuantEmitter::nvfp4_activation_portable`]) reproduces
//! `quantize_nvfp4_with_global(..).dequantize()` bit for bit, signed zeros
//! included; see [`portable`] for the rounding construction. A `Cast` to f16 or
//! bf16 at the end rounds to nearest even, as `half` does.
//!
//! # ONNX Runtime settings (measured on ORT 1.31.1 CPU)
//!
//! - The portable forms are bit-exact at every optimisation level, with QDQ
//!   fusion on or off and with constant folding off (`tests/quant_*.rs` run all
//!   four option sets). They hold no activation Q→DQ pair feeding a `MatMul`, so
//!   the FP8 `MatMulIntegerToFloat` fusion bug (dependencies.md §3 case B) has
//!   nothing to fuse, and no blocked integer DQ, so the `MatMulNBits` rewrite
//!   does not apply. The runtime does not need `with_quant_qdq(false)` (config
//!   `session.disable_quant_qdq=1`) for these graphs.
//! - Constant folding (from `Level1` on) evaluates once, at session creation,
//!   every node whose inputs are all initializers; the results are the same
//!   (the same CPU kernels run once instead of every run), the memory is not.
//!   Measured on the saved optimised graphs: with the defaults ORT keeps
//!   `DequantizeLinear` out of folding, so FP8 stays 1 byte per parameter and
//!   dequantizes every run, but NVFP4's `Cast` + `Gather` fold into an f32
//!   constant (4 bytes per parameter in RAM; the per-run work left is the scale
//!   `DequantizeLinear` and the `Mul`). With `with_quant_qdq(false)`,
//!   `DequantizeLinear` folds too and both schemes become a plain f32 weight at
//!   load. [`KEEP_PACKED_SESSION_CONFIG`] (constant folding off for the whole
//!   graph) keeps every initializer packed and runs the full dequantization
//!   each call.
//!
//! # Layout summary
//!
//! - Portable NVFP4 (`name` = the checkpoint weight name):
//!   `name.nvfp4_codes` u8 `[in, out/2]`, byte `[i, j]` = code of `(row 2j,
//!   column i)` in the low nibble and of `(2j+1, i)` in the high nibble;
//!   `name.nvfp4_block_scales` FLOAT8E4M3FN `[in/16, 1, out]`;
//!   `name.nvfp4_global` f32 scalar; one shared 256×2 f32 table
//!   `nvfp4.e2m1_byte_pairs` per graph.
//! - Portable FP8: `name.fp8_codes` FLOAT8E4M3FN `[in, out]`, `name.fp8_scales`
//!   f32 `[out]` (per row) or scalar (per tensor).
//! - TensorRT NVFP4: `name.nvfp4_codes` FLOAT4E2M1 `[out, in]` (packed two per
//!   byte along each row, first element in the low nibble — exactly
//!   [`Nvfp4Tensor::packed`]), `name.nvfp4_block_scales` FLOAT8E4M3FN
//!   `[out, in/16]`, `name.nvfp4_global` f32 scalar. See [`tensorrt`].

pub mod nbits;
pub mod portable;
pub mod reference;
pub mod tensorrt;

use heart::checkpoint::TensorRef;
use heart::quant::blockwise::{BlockwiseTensor, quantize_blockwise};
use heart::quant::fp8::{Fp8Granularity, Fp8Tensor, quantize_fp8};
use heart::quant::nvfp4::{Nvfp4Tensor, quantize_nvfp4};

use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{DType, GraphBuilder, Value};
pub use nbits::{Accuracy, NBits, NBitsWeight};

/// Storage format of quantized weights and of quantized activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// NVFP4: E2M1 values, E4M3 scale per 16-element block, f32 global scale.
    Nvfp4,
    /// FP8 E4M3FN: per output channel for weights, per tensor for activations.
    Fp8,
    /// Blockwise int4 / int8 weights run by ONNX Runtime's `MatMulNBits`
    /// (weights only: the operator's accuracy level decides the activations).
    Int(NBits),
}

/// Session config entries (`SessionBuilder::with_config_entry`) that keep
/// portable quantized weights packed in RAM: constant folding would otherwise
/// store their dequantized f32 form at session creation (see the module doc).
pub const KEEP_PACKED_SESSION_CONFIG: &[(&str, &str)] =
    &[("optimization.disable_specified_optimizers", "ConstantFolding")];

/// How a linear weight is stored and dequantized in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightScheme {
    /// NVFP4 lowered to standard operators ONNX Runtime CPU runs (opset ≥ 21).
    Nvfp4Portable,
    /// FP8 E4M3FN with one f32 scale per output channel, one `DequantizeLinear`.
    Fp8Portable,
    /// NVFP4 as NVIDIA ModelOpt exports it for TensorRT (FLOAT4E2M1, opset ≥ 23).
    Nvfp4TensorRt,
    /// FP8 E4M3FN per output channel with scales in the compute dtype, so the
    /// `DequantizeLinear` feeds the `MatMul` directly (TensorRT's FP8 GEMM pattern).
    Fp8TensorRt,
    /// Blockwise int4 / int8 run by ONNX Runtime's `MatMulNBits` ([`nbits`]).
    MatMulNBits(NBits),
}

/// A weight quantized by the reference quantizers.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizedWeight {
    /// NVFP4 (both NVFP4 schemes).
    Nvfp4(Nvfp4Tensor),
    /// FP8 E4M3FN.
    Fp8(Fp8Tensor),
    /// Blockwise int4 / int8.
    Blockwise(BlockwiseTensor),
}

impl WeightScheme {
    /// Quantizes a row-major `[out, inp]` weight called `name` for this scheme
    /// (NVFP4 with its own global scale; FP8 per output channel; integers in
    /// 32-element blocks along `inp`).
    pub fn quantize(self, name: &str, values: &[f32], out: usize, inp: usize) -> Result<QuantizedWeight> {
        let named = |e: heart::quant::QuantError| ExportError::from(e.in_tensor(name));
        Ok(match self {
            Self::Nvfp4Portable | Self::Nvfp4TensorRt => {
                QuantizedWeight::Nvfp4(quantize_nvfp4(values, out, inp).map_err(named)?)
            }
            Self::Fp8Portable | Self::Fp8TensorRt => {
                QuantizedWeight::Fp8(quantize_fp8(values, out, inp, Fp8Granularity::PerRow).map_err(named)?)
            }
            Self::MatMulNBits(nb) => {
                QuantizedWeight::Blockwise(quantize_blockwise(values, out, inp, nb.bits).map_err(named)?)
            }
        })
    }
}

/// A calibrated NVFP4 activation quantizer for one linear layer's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant<'a> {
    /// Prefix of the initializers it adds, e.g. `layers.0.attn.q_proj.input`.
    pub name: &'a str,
    /// Size of the last (feature) axis, a multiple of 16.
    pub features: usize,
    /// The calibrated global scale, `amax / (6 · 448)`; finite and > 0.
    pub global: f32,
}

/// Emits quantized weights and activation quantizers into graphs. Holds what
/// is shared per graph (the E2M1 lookup table) and what must be fixed up when
/// the graph is written (FLOAT4E2M1 initializers, see [`tensorrt`]); use one
/// emitter per [`GraphBuilder`] and finish the graph with [`Self::finish`].
#[derive(Debug, Default)]
pub struct QuantEmitter {
    byte_pairs: Option<Value>,
    fp4: tensorrt::Fp4Initializers,
}

impl QuantEmitter {
    /// A fresh emitter for one graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// `x · Wᵀ` for the checkpoint Linear weight `t` (`[out, in]`) quantized
    /// with `scheme`, the weight dequantized to `dtype` (x's dtype), or one
    /// `MatMulNBits` node for [`WeightScheme::MatMulNBits`]. With
    /// `act_global`, the activations are first NVFP4-quantized with that
    /// calibrated global scale (W4A4; NVFP4 schemes only).
    ///
    /// The whole weight is read into RAM as f32 once (the global scale needs
    /// every element before the first block is encoded).
    pub fn linear(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        t: &TensorRef<'_>,
        scheme: WeightScheme,
        act_global: Option<f32>,
        dtype: DType,
    ) -> Result<Value> {
        if let WeightScheme::MatMulNBits(nb) = scheme {
            if act_global.is_some() {
                return Err(nbits_activations(t.name));
            }
            let &[out, inp] = t.shape else {
                return Err(not_2d(t));
            };
            let w = quantize_blockwise(&t.to_f32()?, out, inp, nb.bits)
                .map_err(|e| ExportError::from(e.in_tensor(t.name)))?;
            return self.matmul_nbits(g, x, t.name, &w, nb, dtype);
        }
        let w = self.linear_weight(g, t, scheme, dtype)?;
        let name = t.name.trim_end_matches(".weight");
        let x = match act_global {
            None => x.clone(),
            Some(global) => {
                let &[_, inp] = t.shape else {
                    return Err(not_2d(t));
                };
                let act_name = format!("{name}.input");
                let act = ActQuant {
                    name: &act_name,
                    features: inp,
                    global,
                };
                self.activation(g, x, act, scheme, dtype)?
            }
        };
        Ok(g.with_scope(name, |g| g.matmul(&x, &w)))
    }

    /// Quantizes checkpoint Linear weight `t` (`[out, in]`) with `scheme` and
    /// emits it; returns the dequantized `[in, out]` weight as `dtype`.
    /// [`WeightScheme::MatMulNBits`] has no dense weight and is an error here
    /// (use [`Self::linear`]).
    pub fn linear_weight(
        &mut self,
        g: &mut GraphBuilder,
        t: &TensorRef<'_>,
        scheme: WeightScheme,
        dtype: DType,
    ) -> Result<Value> {
        let &[out, inp] = t.shape else {
            return Err(not_2d(t));
        };
        let values = t.to_f32()?;
        match scheme.quantize(t.name, &values, out, inp)? {
            QuantizedWeight::Nvfp4(w) if scheme == WeightScheme::Nvfp4TensorRt => {
                self.nvfp4_tensorrt(g, t.name, &w, dtype)
            }
            QuantizedWeight::Nvfp4(w) => self.nvfp4_portable(g, t.name, &w, dtype),
            QuantizedWeight::Fp8(w) if scheme == WeightScheme::Fp8TensorRt => {
                tensorrt::fp8_weight(g, t.name, &w, dtype)
            }
            QuantizedWeight::Fp8(w) => portable::fp8_weight(g, t.name, &w, dtype),
            QuantizedWeight::Blockwise(_) => Err(no_dense_weight(t.name)),
        }
    }

    /// `x · Wᵀ` for the blockwise weight `w` called `name` (`[N, K]`): one
    /// `MatMulNBits` node on f32 `x`. See [`nbits`].
    pub fn matmul_nbits(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        name: &str,
        w: &BlockwiseTensor,
        nb: NBits,
        dtype: DType,
    ) -> Result<Value> {
        nbits::matmul_nbits(g, x, name, w, nb, dtype)
    }

    /// Portable NVFP4 weight `name` (`[out, in]`, `out` even) → dequantized
    /// `[in, out]` as `dtype`. See [`portable`].
    pub fn nvfp4_portable(&mut self, g: &mut GraphBuilder, name: &str, w: &Nvfp4Tensor, dtype: DType) -> Result<Value> {
        let table = match &self.byte_pairs {
            Some(t) => t.clone(),
            None => {
                let t = portable::byte_pair_table(g)?;
                self.byte_pairs = Some(t.clone());
                t
            }
        };
        portable::nvfp4_weight(g, name, w, &table, dtype)
    }

    /// Portable FP8 weight `name` (`[out, in]`) → dequantized `[in, out]` as
    /// `dtype`.
    pub fn fp8_portable(&mut self, g: &mut GraphBuilder, name: &str, w: &Fp8Tensor, dtype: DType) -> Result<Value> {
        portable::fp8_weight(g, name, w, dtype)
    }

    /// TensorRT NVFP4 weight `name` → dequantized `[in, out]` as `dtype`. The
    /// graph must be written with [`Self::finish`]. See [`tensorrt`].
    pub fn nvfp4_tensorrt(&mut self, g: &mut GraphBuilder, name: &str, w: &Nvfp4Tensor, dtype: DType) -> Result<Value> {
        tensorrt::nvfp4_weight(g, &mut self.fp4, name, w, dtype)
    }

    /// TensorRT FP8 weight `name` (`[out, in]`) → dequantized `[in, out]` as
    /// `dtype`. See [`tensorrt`].
    pub fn fp8_tensorrt(&mut self, g: &mut GraphBuilder, name: &str, w: &Fp8Tensor, dtype: DType) -> Result<Value> {
        tensorrt::fp8_weight(g, name, w, dtype)
    }

    /// TensorRT FP8 E4M3FN fake-quantization of `x` with the static
    /// per-tensor `scale`: a `QuantizeLinear`/`DequantizeLinear` pair with the
    /// scale in `dtype`. See [`tensorrt`].
    pub fn fp8_activation_tensorrt(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        name: &str,
        scale: f32,
        dtype: DType,
    ) -> Result<Value> {
        tensorrt::fp8_activation(g, x, name, scale, dtype)
    }

    /// Quantizes activations `x` (`[..., act.features]`, dtype `dtype`) to
    /// NVFP4 along the last axis, in the form `scheme` calls for; returns the
    /// dequantized activations as `dtype`. FP8 is weight-only here.
    pub fn activation(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        act: ActQuant<'_>,
        scheme: WeightScheme,
        dtype: DType,
    ) -> Result<Value> {
        match scheme {
            WeightScheme::Nvfp4Portable => self.nvfp4_activation_portable(g, x, act, dtype),
            WeightScheme::Nvfp4TensorRt => tensorrt::nvfp4_activation(g, x, act, dtype),
            WeightScheme::Fp8Portable | WeightScheme::Fp8TensorRt => Err(ExportError::Unsupported {
                what: format!(
                    "activation quantization for `{}` with FP8 weights (FP8 is weight-only)",
                    act.name
                ),
            }),
            WeightScheme::MatMulNBits(_) => Err(nbits_activations(act.name)),
        }
    }

    /// Portable NVFP4 fake-quantization of `x` (quantize → dequantize),
    /// bit-exact against `quantize_nvfp4_with_global(x, rows, act.features,
    /// act.global).dequantize()`.
    pub fn nvfp4_activation_portable(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        act: ActQuant<'_>,
        dtype: DType,
    ) -> Result<Value> {
        portable::nvfp4_activation(g, x, act, dtype)
    }

    /// Portable FP8 E4M3FN fake-quantization of `x` with the static per-tensor
    /// `scale` (calibrated `amax / 448`): `E4M3(x / scale) · scale`, bit-exact
    /// against [`heart::quant::fp8::encode_scaled`] then
    /// [`heart::quant::fp8::e4m3_to_f32`] times `scale`. `name` prefixes the
    /// scale initializer.
    pub fn fp8_activation_portable(
        &mut self,
        g: &mut GraphBuilder,
        x: &Value,
        name: &str,
        scale: f32,
        dtype: DType,
    ) -> Result<Value> {
        portable::fp8_activation(g, x, name, scale, dtype)
    }

    /// Writes the graph, then stamps the FLOAT4E2M1 type on the TensorRT
    /// initializers and raises the opset to what they need (see [`tensorrt`]).
    pub fn finish(self, g: GraphBuilder) -> Result<Vec<WrittenFile>> {
        let files = g.finish()?;
        self.fp4.apply(files)
    }
}

/// The error for a Linear weight that is not 2-D.
fn not_2d(t: &TensorRef<'_>) -> ExportError {
    ExportError::Shape {
        tensor: t.name.to_string(),
        expected: "a 2-D Linear weight [out, in]".into(),
        got: format!("shape {:?}", t.shape),
    }
}

/// The error for asking a dense weight of a `MatMulNBits` scheme.
pub(crate) fn no_dense_weight(name: &str) -> ExportError {
    ExportError::Unsupported {
        what: format!(
            "`{name}` as a dense weight with int4/int8 MatMulNBits quantization (the operator \
             multiplies by the packed weight itself; only linear layers applied by one MatMul can use it)"
        ),
    }
}

/// The error for static activation quantization with `MatMulNBits` weights.
fn nbits_activations(name: &str) -> ExportError {
    ExportError::Unsupported {
        what: format!(
            "static activation quantization for `{name}` with int4/int8 weights (MatMulNBits \
             quantizes activations itself at accuracy level 4)"
        ),
    }
}

/// Checks that `dtype` is a float type a dequantized tensor can be cast to.
fn check_float(what: &str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        _ => Err(ExportError::Unsupported {
            what: format!("{what} as {dtype:?} (f32, f16 or bf16 only)"),
        }),
    }
}

/// `x` cast to `dtype` unless it already is f32 and `dtype` is f32.
fn cast_from_f32(g: &mut GraphBuilder, x: Value, dtype: DType) -> Value {
    if dtype == DType::F32 { x } else { g.cast(&x, dtype) }
}

/// Checks an activation global scale: finite and > 0.
fn check_global(name: &str, global: f32) -> Result<()> {
    if global.is_finite() && global > 0.0 {
        Ok(())
    } else {
        Err(ExportError::Unsupported {
            what: format!(
                "activation `{name}`: NVFP4 global scale {global} (must be finite and > 0; \
                 a calibrated amax of 0 means the input never carries signal)"
            ),
        })
    }
}

/// Checks that a feature count holds whole 16-element blocks.
fn check_features(name: &str, features: usize) -> Result<()> {
    if features > 0 && features.is_multiple_of(heart::quant::nvfp4::NVFP4_BLOCK) {
        Ok(())
    } else {
        Err(ExportError::Shape {
            tensor: name.to_string(),
            expected: "a feature axis that is a non-zero multiple of 16 (NVFP4 blocks)".into(),
            got: format!("{features} features"),
        })
    }
}
