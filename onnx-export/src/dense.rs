//! Dense numerics shared by the building blocks and the linear-layer emitter:
//! a graph's storage and compute dtypes ([`Numerics`]) and casts between them
//! (the dense linear layer is [`crate::linears::Linears::linear`]).

use crate::graph::{DType, GraphBuilder, Value};

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
