//! A codec linear layer's weight as the graph builders take it, whatever
//! precision it is emitted at (float `MatMul` or a dynamic int8 product).

/// A linear layer's weight, transposed for `x · W`.
#[derive(Debug, Clone, Copy)]
pub struct DenseWeight<'a> {
    /// Initializer name.
    pub name: &'a str,
    /// Input features.
    pub in_dim: usize,
    /// Output features.
    pub out_dim: usize,
    /// The weight `[in_dim, out_dim]`, row-major.
    pub w_t: &'a [f32],
}
