//! Blockwise int4 / int8 linear layers as ONNX Runtime's contrib operator
//! `com.microsoft.MatMulNBits`, or (int4 at accuracy level 4, by default)
//! heart's own `ai.heart.MatMulInt4x16`: `y = x · dequant(B)ᵀ` in one node,
//! the weight never materialised as floats in the graph.
//!
//! # heart's int4 kernel
//!
//! [`NBits::runs_heart_kernel`] layers are one `MatMulInt4x16` node whose
//! initializers `{name}.int4x16_packed` / `_scales` / `_zero_points` are
//! [`Int4x16`]'s parts (the reference quantizer's codes, scales and zero
//! points, interleaved 16 outputs at a time; layout and numerics in
//! [`heart::quant::int4x16`]), with attributes `K` and `N`. It quantizes the
//! activations exactly as level 4 below and sums the same integer block
//! products, so it computes level 4 up to f32 summation order
//! (`tests/quant_nbits.rs`: within 0.03 of one f32 accumulation bound of
//! `MatMulNBits` itself). Why it exists: at the frame loop's 2 rows
//! `MatMulNBits` is compute-bound (16.6 GB/s of int4 weights on 2 cores of a
//! Xeon that streams 25–30); this one streams 24.5 GB/s there
//! (`cargo bench --bench ort_kernels`). `heart-backend` registers it in every
//! session; the parts are read in place, not repacked.
//!
//! # The node
//!
//! ```text
//! x f32 [..., K] ─┐
//! name.nbits_b      u8  [N, k_blocks, blob] ─┤
//! name.nbits_scales f32 [N, k_blocks]        ─┼─ MatMulNBits(K, N, bits, block_size = 32,
//! name.nbits_zero_points u8 [N, zp_bytes]    ─┘              accuracy_level) ─▶ y f32 [..., N]
//! ```
//!
//! with `name` the checkpoint weight name (`…q_proj.weight`), `k_blocks =
//! ceil(K / 32)`, `blob` 16 (int4) or 32 (int8) bytes and `zp_bytes =
//! ceil(k_blocks · bits / 8)`. The three initializers are exactly
//! [`BlockwiseTensor::packed`], [`BlockwiseTensor::scales`] and
//! [`BlockwiseTensor::packed_zero_points`] of the reference quantizer
//! ([`heart::quant::blockwise`], whose module doc gives the layout and the
//! dequantization `(code − zero_point) · scale`). `x` keeps any leading axes
//! (`[B, S, K]` in the stacks); the operator folds them into rows. Scales share
//! `x`'s type, so this lowering takes f32 activations only (the int profiles
//! compute in f32: ONNX Runtime's CPU kernels for these are f32).
//!
//! # Accuracy level
//!
//! [`Accuracy::Float`] (attribute 0) multiplies f32 activations by the
//! dequantized weight; [`Accuracy::Int8`] (attribute 4) lets the kernel quantize
//! each 32-element block of the activations to int8 on the fly and use integer
//! dot products. Measured on ONNX Runtime 1.31.1 CPU (2-core AMD EPYC with
//! AVX-512 VNNI; `tests/quant_nbits.rs` for the errors):
//!
//! | | int4, level 0 | int4, level 4 | int8, level 0 | int8, level 4 |
//! |---|---|---|---|---|
//! | rms error vs `x · dequant(W)`, relative | 6e-7 | 5e-3 | 2e-7 | 5e-3 |
//! | rms weight-quantization error of the product (for scale) | 8e-2 | 8e-2 | 5e-3 | 5e-3 |
//! | six small-model layers at batch 2, ms (f32 `MatMul`: 23–33) | 15–41 | 1.5–4.2 | 119–310 | 2.6–16 |
//!
//! Level 0 reproduces the reference to f32 accumulation error but is no
//! faster than f32 `MatMul` for int4 and far slower for int8 (ORT has no fast
//! f32-activation int8 kernel on x86 and dequantizes the whole weight every
//! call). Level 4 is 5–10× faster than f32 and its activation rounding adds a
//! 0.5% error, small beside int4's own 8% weight error and comparable to
//! int8's. [`Accuracy::Int8`] is therefore the default of both profiles.
//!
//! # ONNX Runtime behaviours (1.31.1 CPU)
//!
//! - The operator prepacks `B`, the scales and zero points into its own layout
//!   at session creation and the initializers' own bytes are not kept: on the
//!   small synthesized model the resident (anonymous) memory a session adds is
//!   its stored weights plus the packing overhead (int4 backbone: 74 MiB
//!   stored, +85 MiB resident; fp32: 291 MiB, +294 MiB), with no second
//!   full-size copy. An initializer read by two `MatMulNBits` nodes is packed
//!   once per node, so each quantized `audio_head` slice is read by exactly
//!   one node (`lm::heads_once`; two per head cost 35 MiB more at that size).
//! - Prepacking happens only for nodes at most one subgraph level below the
//!   initializer. Deeper (an `If` inside an `If`), the operator takes an
//!   unpacked path 400× slower (41–55 ms instead of 0.09 ms for a `[2, 1024] ×
//!   [1024, 8197]` int4 product; a dense `MatMul` repacks every call,
//!   5.5–9 ms instead of 0.9–1.3): the decoder's heads sit in no `If` for
//!   this reason (`lm::heads_once`).
//! - The graph holds no `DequantizeLinear`, so the optimizer's DQ + `MatMul` →
//!   `MatMulNBits` rewrite (and its session option
//!   `session.qdq_matmulnbits_accuracy_level`, which silently switches that
//!   rewrite to level 4) plays no part: the level is the node's attribute.
//! - Nothing here constant-folds (the node has a graph input), so no session
//!   option is needed to keep the weights packed.

use heart::profile::Int4Kernel;
use heart::quant::blockwise::{BLOCK, BlockwiseTensor, IntBits};
use heart::quant::int4x16::{self, Int4x16};

use crate::error::{ExportError, Result};
use crate::graph::{Attr, DType, GraphBuilder, MS_DOMAIN, Value};

/// The operator's `accuracy_level`: how the activations are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accuracy {
    /// Level 0: f32 activations times the dequantized weight.
    Float,
    /// Level 4: activations quantized to int8 per 32-element block inside the
    /// kernel (the fast path on CPU; the default).
    Int8,
}

impl Accuracy {
    /// The attribute value (0 or 4).
    pub fn level(self) -> i64 {
        match self {
            Self::Float => 0,
            Self::Int8 => 4,
        }
    }

    /// The accuracy of attribute value `level` (0 or 4; the CPU kernels treat
    /// 1 like 0 and have no 2 or 3, so those are not offered).
    pub fn from_level(level: i64) -> Option<Self> {
        match level {
            0 => Some(Self::Float),
            4 => Some(Self::Int8),
            _ => None,
        }
    }
}

/// How a linear layer is stored and run: `MatMulNBits`, or heart's own int4
/// kernel where [`NBits::runs_heart_kernel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NBits {
    /// Weight width.
    pub bits: IntBits,
    /// The node's accuracy level.
    pub accuracy: Accuracy,
    /// The kernel of int4 weights at [`Accuracy::Int8`] (ignored otherwise).
    pub int4_kernel: Int4Kernel,
}

impl NBits {
    /// `bits` at the default accuracy ([`Accuracy::Int8`], see the module doc)
    /// and kernel: an int4 profile's default there
    /// ([`Int4Kernel::default_at`], heart's), `MatMulNBits` for int8 (heart
    /// has no int8 kernel).
    pub fn new(bits: IntBits) -> Self {
        Self {
            bits,
            accuracy: Accuracy::Int8,
            int4_kernel: match bits {
                IntBits::Int4 => Int4Kernel::default_at(Accuracy::Int8.level()),
                IntBits::Int8 => Int4Kernel::Onnxruntime,
            },
        }
    }

    /// Whether the layer is one `ai.heart.MatMulInt4x16` node: int4 weights,
    /// int8 activations and [`Int4Kernel::Heart`].
    pub fn runs_heart_kernel(&self) -> bool {
        self.bits == IntBits::Int4 && self.accuracy == Accuracy::Int8 && self.int4_kernel == Int4Kernel::Heart
    }
}

/// A blockwise weight emitted into a graph, ready to be applied (possibly
/// several times, or inside `If` branches, whose nodes may read the outer
/// graph's initializers).
#[derive(Debug, Clone)]
pub struct NBitsWeight {
    b: Value,
    scales: Value,
    zero_points: Value,
    op: (&'static str, &'static str),
    attrs: Vec<Attr>,
    scope: String,
}

impl NBitsWeight {
    /// Adds the initializers of the quantized `[N, K]` weight `w` named
    /// `name` to `g`, in the layout of the operator `nb` chooses
    /// (`MatMulNBits`' or [`heart::quant::int4x16`]'s); the product is f32
    /// only (`dtype` must be F32).
    pub fn emit(g: &mut GraphBuilder, name: &str, w: &BlockwiseTensor, nb: NBits, dtype: DType) -> Result<Self> {
        if dtype != DType::F32 {
            return Err(ExportError::Unsupported {
                what: format!("`{name}` as MatMulNBits with {dtype:?} activations (f32 only: its scales are f32)"),
            });
        }
        let (n, k, bits) = (w.rows(), w.cols(), w.bits());
        if n == 0 || k == 0 {
            return Err(ExportError::Shape {
                tensor: name.to_string(),
                expected: "a non-empty weight [N, K]".into(),
                got: format!("[{n}, {k}]"),
            });
        }
        if bits != nb.bits {
            return Err(ExportError::Unsupported {
                what: format!("`{name}`: {bits:?} codes for a {:?} layer", nb.bits),
            });
        }
        if nb.runs_heart_kernel() {
            return Self::emit_int4x16(g, name, w);
        }
        let blocks = w.k_blocks();
        let b = g.init_stream(
            &format!("{name}.nbits_b"),
            DType::U8,
            &[n, blocks, bits.blob_bytes()],
            |s| s.push_bytes(w.packed()),
        )?;
        let scales = g.init_f32(&format!("{name}.nbits_scales"), DType::F32, &[n, blocks], w.scales())?;
        let zero_points = g.init_stream(
            &format!("{name}.nbits_zero_points"),
            DType::U8,
            &[n, bits.zero_point_row_bytes(blocks)],
            |s| s.push_bytes(&w.packed_zero_points()),
        )?;
        Ok(Self {
            b,
            scales,
            zero_points,
            op: (MS_DOMAIN, "MatMulNBits"),
            attrs: vec![
                Attr::int("K", k as i64),
                Attr::int("N", n as i64),
                Attr::int("bits", bits.bits() as i64),
                Attr::int("block_size", BLOCK as i64),
                Attr::int("accuracy_level", nb.accuracy.level()),
            ],
            scope: format!("{}.nbits", name.trim_end_matches(".weight")),
        })
    }

    /// The `ai.heart.MatMulInt4x16` form: the three parts of
    /// [`Int4x16`], flat, and attributes `K`, `N`.
    fn emit_int4x16(g: &mut GraphBuilder, name: &str, w: &BlockwiseTensor) -> Result<Self> {
        let packed = Int4x16::from_blockwise(w).map_err(|e| ExportError::from(e.in_tensor(name)))?;
        let bytes = |g: &mut GraphBuilder, part: &str, data: &[u8]| {
            g.init_stream(&format!("{name}.int4x16_{part}"), DType::U8, &[data.len()], |s| {
                s.push_bytes(data)
            })
        };
        let b = bytes(g, "packed", packed.packed())?;
        let zero_points = bytes(g, "zero_points", packed.zero_points())?;
        let scales = g.init_f32(
            &format!("{name}.int4x16_scales"),
            DType::F32,
            &[packed.scales().len()],
            packed.scales(),
        )?;
        Ok(Self {
            b,
            scales,
            zero_points,
            op: (int4x16::OP_DOMAIN, int4x16::OP_NAME),
            attrs: vec![Attr::int("K", w.cols() as i64), Attr::int("N", w.rows() as i64)],
            scope: format!("{}.int4x16", name.trim_end_matches(".weight")),
        })
    }

    /// `x · Wᵀ`: one node on f32 `x` `[..., K]`, giving `[..., N]`.
    pub fn apply(&self, g: &mut GraphBuilder, x: &Value) -> Value {
        g.with_scope(&self.scope, |g| {
            let inputs = [Some(x), Some(&self.b), Some(&self.scales), Some(&self.zero_points)];
            g.node_ext(self.op.0, self.op.1, &inputs, 1, self.attrs.clone())
                .remove(0)
        })
    }
}

/// Emits `x · Wᵀ` for the quantized `[N, K]` weight `w` named `name` as one
/// node of the operator `nb` chooses; `x` is f32 `[..., K]`. Returns `y` f32
/// `[..., N]`.
pub fn matmul_nbits(
    g: &mut GraphBuilder,
    x: &Value,
    name: &str,
    w: &BlockwiseTensor,
    nb: NBits,
    dtype: DType,
) -> Result<Value> {
    Ok(NBitsWeight::emit(g, name, w, nb, dtype)?.apply(g, x))
}
