//! Named helpers for the ONNX operators the model graphs use. Each is a thin
//! wrapper over [`GraphBuilder::node`]: shape/axis arguments that ONNX takes as
//! tensors are turned into inline int64 constants here. Anything not covered is
//! one `g.node("OpType", &[..], vec![Attr::..])` call away.

use crate::graph::{Attr, DType, GraphBuilder, MS_DOMAIN, Value};
use crate::proto::GraphProto;

impl GraphBuilder {
    /// `a + b` (broadcasting).
    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Add", &[a, b], vec![])
    }

    /// `a - b` (broadcasting).
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Sub", &[a, b], vec![])
    }

    /// `a * b` (broadcasting).
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Mul", &[a, b], vec![])
    }

    /// `a / b` (broadcasting).
    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Div", &[a, b], vec![])
    }

    /// `a ^ b` (broadcasting).
    pub fn pow(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Pow", &[a, b], vec![])
    }

    /// Matrix product with NumPy broadcasting over leading axes.
    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("MatMul", &[a, b], vec![])
    }

    /// Element-wise square root.
    pub fn sqrt(&mut self, x: &Value) -> Value {
        self.node("Sqrt", &[x], vec![])
    }

    /// Element-wise `1 / x`.
    pub fn reciprocal(&mut self, x: &Value) -> Value {
        self.node("Reciprocal", &[x], vec![])
    }

    /// Element-wise `-x`.
    pub fn neg(&mut self, x: &Value) -> Value {
        self.node("Neg", &[x], vec![])
    }

    /// Element-wise `e^x`.
    pub fn exp(&mut self, x: &Value) -> Value {
        self.node("Exp", &[x], vec![])
    }

    /// Element-wise logistic sigmoid.
    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.node("Sigmoid", &[x], vec![])
    }

    /// Element-wise `x * sigmoid(x)` (SiLU / swish).
    pub fn silu(&mut self, x: &Value) -> Value {
        let s = self.sigmoid(x);
        self.mul(x, &s)
    }

    /// Element-wise cosine.
    pub fn cos(&mut self, x: &Value) -> Value {
        self.node("Cos", &[x], vec![])
    }

    /// Element-wise sine.
    pub fn sin(&mut self, x: &Value) -> Value {
        self.node("Sin", &[x], vec![])
    }

    /// Converts to `to`.
    pub fn cast(&mut self, x: &Value, to: DType) -> Value {
        self.node("Cast", &[x], vec![Attr::int("to", to.onnx() as i64)])
    }

    /// Reshapes to `shape` (ONNX semantics: `0` copies, `-1` infers).
    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let s = self.const_i64(shape);
        self.node("Reshape", &[x, &s], vec![])
    }

    /// Permutes axes.
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.node("Transpose", &[x], vec![Attr::ints("perm", perm)])
    }

    /// Gathers slices of `data` along `axis` at `indices`.
    pub fn gather(&mut self, data: &Value, indices: &Value, axis: i64) -> Value {
        self.node("Gather", &[data, indices], vec![Attr::int("axis", axis)])
    }

    /// Concatenates along `axis`.
    pub fn concat(&mut self, xs: &[&Value], axis: i64) -> Value {
        self.node("Concat", xs, vec![Attr::int("axis", axis)])
    }

    /// Slices `x[starts..ends]` on `axes` (step 1).
    pub fn slice(&mut self, x: &Value, starts: &[i64], ends: &[i64], axes: &[i64]) -> Value {
        let s = self.const_i64(starts);
        let e = self.const_i64(ends);
        let a = self.const_i64(axes);
        self.node("Slice", &[x, &s, &e, &a], vec![])
    }

    /// Inserts size-1 axes.
    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.node("Unsqueeze", &[x, &a], vec![])
    }

    /// Removes size-1 axes.
    pub fn squeeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let a = self.const_i64(axes);
        self.node("Squeeze", &[x, &a], vec![])
    }

    /// Mean over `axes`.
    pub fn reduce_mean(&mut self, x: &Value, axes: &[i64], keepdims: bool) -> Value {
        let a = self.const_i64(axes);
        self.node("ReduceMean", &[x, &a], vec![Attr::int("keepdims", keepdims as i64)])
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.node("Softmax", &[x], vec![Attr::int("axis", axis)])
    }

    /// The shape of `x` as a 1-D int64 tensor.
    pub fn shape(&mut self, x: &Value) -> Value {
        self.node("Shape", &[x], vec![])
    }

    /// Broadcasts `x` to the shape held by `shape`.
    pub fn expand(&mut self, x: &Value, shape: &Value) -> Value {
        self.node("Expand", &[x, shape], vec![])
    }

    /// `cond ? a : b` element-wise.
    pub fn where_(&mut self, cond: &Value, a: &Value, b: &Value) -> Value {
        self.node("Where", &[cond, a, b], vec![])
    }

    /// `cond ? then : otherwise` over subgraphs (see [`GraphBuilder::subgraph`]),
    /// with `n_outputs` outputs.
    pub fn if_(&mut self, cond: &Value, then: GraphProto, otherwise: GraphProto, n_outputs: usize) -> Vec<Value> {
        let attrs = vec![Attr::graph("then_branch", then), Attr::graph("else_branch", otherwise)];
        self.node_ext("", "If", &[Some(cond)], n_outputs, attrs)
    }

    /// Renames/copies a value (`Identity`).
    pub fn identity(&mut self, x: &Value) -> Value {
        self.node("Identity", &[x], vec![])
    }

    /// A `com.microsoft` contrib operator with optional inputs and several outputs.
    pub fn ms_op(&mut self, op: &str, inputs: &[Option<&Value>], n_outputs: usize, attrs: Vec<Attr>) -> Vec<Value> {
        self.node_ext(MS_DOMAIN, op, inputs, n_outputs, attrs)
    }
}
