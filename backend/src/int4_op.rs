//! The custom operator `ai.heart.MatMulInt4x16`: heart's int4 linear layer
//! ([`heart::quant::int4x16`]) as an ONNX Runtime CPU kernel, registered in
//! every session [`crate::OrtRuntime`] opens.
//!
//! ```text
//! x           f32 [..., K] ─┐
//! packed      u8  [G·B·256] ─┼─ MatMulInt4x16(K, N) ─▶ y f32 [..., N]
//! scales      f32 [G·B·16]  ─┤
//! zero_points u8  [G·B·16]  ─┘
//! ```
//!
//! with `G = ceil(N / 16)`, `B = ceil(K / 32)` and the parts laid out as
//! [`heart::quant::int4x16`] states. The output groups are split over ONNX
//! Runtime's intra-op threads ([`ComputeContext::par_for`]); a call's result
//! does not depend on the split or on how many rows it has.

use heart::quant::int4x16::{Int4x16Ref, LANES, has_fast_path, matmul_groups, quantize_rows};
pub use heart::quant::int4x16::{OP_DOMAIN, OP_NAME};
use ort::operator::{
    BoxedKernel, ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

/// What to do about an int4 engine on a CPU without AVX-512 VNNI (the
/// one-time warning below and `heart-run doctor` both say it).
pub const SLOW_PATH_FIX: &str = "build int4 engines with `int4_kernel = \"onnxruntime\"` in the build profile's \
     [lm] table (ONNX Runtime's MatMulNBits)";

/// Output groups one parallel task computes (64 outputs: a task streams
/// `64 · K / 2` weight bytes, enough to hide the task hand-off).
const GROUPS_PER_TASK: usize = 4;

/// The operator domain holding `MatMulInt4x16`, for `SessionBuilder::with_operators`.
/// Commit sessions built with it through [`creating_session`].
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(OP_DOMAIN)?.add(MatMulInt4x16)
}

/// Runs `create` (the commit of a session whose builder holds [`domain`])
/// alone until one such commit has succeeded. ONNX Runtime 1.31 adds a custom
/// domain to its process-wide domain-version map on session creation with an
/// unguarded check-then-insert: two first sessions created at once on two
/// threads fail with "the domain is already exist" (seen when the pipeline
/// opens its LM and codec sessions in parallel). Once the domain is in the
/// map, creation only reads it and sessions may be created concurrently.
pub fn creating_session<T, E>(create: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    static REGISTERED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if *registered {
        drop(registered);
        return create();
    }
    let result = create();
    *registered = result.is_ok();
    result
}

struct MatMulInt4x16;

impl Operator for MatMulInt4x16 {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        OP_NAME
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let dim = |name: &str| -> ort::Result<usize> {
            let v: i64 = kctx
                .get(name)
                .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: missing attribute `{name}`")))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: attribute `{name}` = {v}, expected > 0")))
        };
        let (k, n) = (dim("K")?, dim("N")?);
        if !has_fast_path() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "this engine's int4 layers use heart's int4 kernel, which needs AVX-512 VNNI for speed; \
                     this CPU runs its portable path, many times slower: {SLOW_PATH_FIX}"
                )
            });
        }
        Ok(Box::new(Int4Kernel { k, n }))
    }
}

struct Int4Kernel {
    k: usize,
    n: usize,
}

/// The output buffer, written by the parallel tasks at disjoint columns.
struct Out(*mut f32);
// SAFETY: every task writes only the columns of its own output groups, and
// `par_for` returns after all tasks have finished.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

impl Out {
    /// Element `i` of the output.
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

impl Kernel for Int4Kernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| {
            ctx.input(i)?
                .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: input {i} missing")))
        };
        let (x, packed, scales, zero_points) = (input(0)?, input(1)?, input(2)?, input(3)?);
        let (shape, x) = x.try_extract_tensor::<f32>()?;
        let (k, n) = (self.k, self.n);
        if shape.last().copied() != Some(k as i64) {
            return Err(ort::Error::new(format!(
                "{OP_NAME}: x has shape {shape:?}, expected a last axis of K = {k}"
            )));
        }
        let w = Int4x16Ref::new(
            n,
            k,
            packed.try_extract_tensor::<u8>()?.1,
            scales.try_extract_tensor::<f32>()?.1,
            zero_points.try_extract_tensor::<u8>()?.1,
        )
        .map_err(|e| ort::Error::new(format!("{OP_NAME}: {e}")))?;
        let rows = x.len() / k;
        let mut out_shape = shape.to_vec();
        *out_shape.last_mut().expect("x has a last axis") = n as i64;
        let mut y = ctx
            .output(0, out_shape)?
            .ok_or_else(|| ort::Error::new(format!("{OP_NAME}: output missing")))?;
        let y = y.try_extract_tensor_mut::<f32>()?.1;
        if rows == 0 {
            return Ok(());
        }
        let q = quantize_rows(x, rows, k);
        let groups = w.groups();
        let out = Out(y.as_mut_ptr());
        let task = |t: usize| {
            let first = t * GROUPS_PER_TASK;
            let range = first..(first + GROUPS_PER_TASK).min(groups);
            let width = LANES * range.len();
            let mut block = vec![0f32; rows * width];
            matmul_groups(w, &q, range, &mut block);
            let (col, cols) = (first * LANES, (n - first * LANES).min(width));
            for r in 0..rows {
                // SAFETY: row `r`, columns `col..col + cols` of the `[rows, n]`
                // output are in bounds and written by this task only.
                let dest = unsafe { std::slice::from_raw_parts_mut(out.at(r * n + col), cols) };
                dest.copy_from_slice(&block[r * width..][..cols]);
            }
        };
        ctx.par_for(groups.div_ceil(GROUPS_PER_TASK), 0, task)
    }
}
