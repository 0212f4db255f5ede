//! Dense numerics shared by the building blocks and the linear-layer emitter:
//! a graph's storage and compute dtypes ([`Numerics`]), casts between them,
//! and the unquantized linear layer.

use heart::checkpoint::TensorRef;

use crate::error::Result;
use crate::graph::{DType, GraphBuilder, Layout, Value};

/// Storage and compute dtypes of one graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    /// Dtype weights are stored in.
    pub weights: DType,
    /// Dtype of matmul activations and of the KV cache.
    pub compute: DType,
}

/// Casts `x` to `to` unless it already is (`from`).
pub fn cast_if(g: &mut GraphBuilder, x: &Value, from: DType, to: DType) -> Value {
    if from == to { x.clone() } else { g.cast(x, to) }
}

/// `x · Wᵀ` for a PyTorch Linear weight `[out, in]` (stored transposed).
pub fn linear(g: &mut GraphBuilder, x: &Value, w: &TensorRef<'_>, nm: Numerics) -> Result<Value> {
    let wt = g.weight(w, nm.weights, Layout::Transposed)?;
    Ok(g.with_scope(w.name.trim_end_matches(".weight"), |g| g.matmul(x, &wt)))
}
