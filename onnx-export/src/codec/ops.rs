//! Building blocks shared by the codec graphs: parameter loading with the
//! storage precision, weight-norm folding, norms, convolutions and activations.
//!
//! Free functions over [`GraphBuilder`] (not inherent methods) so they cannot
//! collide with helpers the LM graphs add to the builder.

use super::weight::DenseWeight;
use heart::checkpoint::{Checkpoint, TensorRef};

use crate::error::{ExportError, Result};
use crate::graph::{Attr, DType, GraphBuilder, Value};

/// Reads checkpoint tensors under a prefix and stores graph parameters.
///
/// Matrices and kernels are stored as `matrix_dtype` (F32, or F16 followed by a
/// `Cast` to f32 so compute stays f32); vectors (biases, norm weights, tables)
/// always as F32. With int8 linears, [`Params::dense`] runs per-token linears
/// as dynamic int8 products ([`super::int8`]).
#[derive(Clone, Copy)]
pub struct Params<'a> {
    ckpt: &'a Checkpoint,
    matrix_dtype: DType,
    int8_linears: bool,
}

impl<'a> Params<'a> {
    /// Parameters from `ckpt` with matrices stored as `matrix_dtype` (F32 or F16).
    pub fn new(ckpt: &'a Checkpoint, matrix_dtype: DType) -> Self {
        Self {
            ckpt,
            matrix_dtype,
            int8_linears: false,
        }
    }

    /// These parameters with [`Params::dense`] as dynamic int8 products.
    pub fn with_int8_linears(self, on: bool) -> Self {
        Self {
            int8_linears: on,
            ..self
        }
    }

    /// `x · W + b`: a float MatMul of the stored matrix, or with int8 linears
    /// a dynamic int8 product with per-output-channel weight scales.
    pub fn dense(&self, g: &mut GraphBuilder, x: &Value, w: &DenseWeight<'_>, b: Option<&Value>) -> Result<Value> {
        let y = if self.int8_linears {
            super::int8::dynamic_int8_matmul(g, x, w)?
        } else {
            let m = self.matrix(g, w.name, &[w.in_dim, w.out_dim], w.w_t)?;
            g.matmul(x, &m)
        };
        Ok(match b {
            Some(b) => g.add(&y, b),
            None => y,
        })
    }

    /// Checkpoint tensor `name`, checked to have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<TensorRef<'a>> {
        let t = self.ckpt.tensor(name)?;
        if t.shape != shape {
            return Err(ExportError::Shape {
                tensor: name.to_string(),
                expected: format!("shape {shape:?}"),
                got: format!("shape {:?} in {}", t.shape, t.path.display()),
            });
        }
        Ok(t)
    }

    /// Checkpoint tensor `name` with the given shape, decoded to f32.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.tensor(name, shape)?.to_f32()?)
    }

    /// The shape of checkpoint tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.ckpt.tensor(name)?.shape.to_vec())
    }

    /// Stores a matrix / kernel (as `matrix_dtype`, cast back to f32 in the graph).
    pub fn matrix(&self, g: &mut GraphBuilder, name: &str, dims: &[usize], data: &[f32]) -> Result<Value> {
        let w = g.init_f32(name, self.matrix_dtype, dims, data)?;
        Ok(match self.matrix_dtype {
            DType::F32 => w,
            _ => g.cast(&w, DType::F32),
        })
    }

    /// Stores an f32 vector or small table.
    pub fn vector(&self, g: &mut GraphBuilder, name: &str, dims: &[usize], data: &[f32]) -> Result<Value> {
        g.init_f32(name, DType::F32, dims, data)
    }

    /// Checkpoint vector `name` of length `n`, stored f32.
    pub fn ckpt_vector(&self, g: &mut GraphBuilder, name: &str, n: usize) -> Result<Value> {
        let data = self.f32(name, &[n])?;
        self.vector(g, name, &[n], &data)
    }
}

/// Transposes a row-major `[rows, cols]` matrix to `[cols, rows]`.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// PyTorch weight norm (`dim = 0`, no epsilon): `W = g · v / ‖v‖`, the norm taken
/// over all axes but the first, computed in f64. For a Conv1d `[out, in, k]` that
/// is one norm per output channel; for a ConvTranspose1d `[in, out, k]` one per
/// input channel. `g` has one entry per slice of axis 0.
pub fn fold_weight_norm(g: &[f32], v: &[f32]) -> Vec<f32> {
    let per = v.len() / g.len().max(1);
    v.chunks(per.max(1))
        .zip(g)
        .flat_map(|(slice, &gain)| {
            let norm = slice.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            slice
                .iter()
                .map(move |&x| (f64::from(gain) * f64::from(x) / norm) as f32)
        })
        .collect()
}

/// PyTorch `Linear` `prefix.weight` `[out, in]` (+ `prefix.bias`) applied to `x`.
pub fn linear(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<Value> {
    let name = format!("{prefix}.weight");
    let w = p.f32(&name, &[out_dim, in_dim])?;
    let b = if bias {
        Some(p.ckpt_vector(g, &format!("{prefix}.bias"), out_dim)?)
    } else {
        None
    };
    let w_t = transpose(&w, out_dim, in_dim);
    let weight = DenseWeight {
        name: &name,
        in_dim,
        out_dim,
        w_t: &w_t,
    };
    p.dense(g, x, &weight, b.as_ref())
}

/// `x · rsqrt(mean(x²) + eps)` over the last axis (the weight is applied by the caller).
pub fn rms_normalize(g: &mut GraphBuilder, x: &Value, eps: f32) -> Value {
    let sq = g.mul(x, x);
    let ms = g.reduce_mean(&sq, &[-1], true);
    let e = g.scalar_f(eps, DType::F32);
    let ms = g.add(&ms, &e);
    let rms = g.sqrt(&ms);
    g.div(x, &rms)
}

/// LayerNorm over the last axis without affine parameters (`LayerNormalization`
/// with unit scale), `width` = size of that axis.
pub fn layer_norm_plain(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    width: usize,
    eps: f32,
    name: &str,
) -> Result<Value> {
    let ones = p.vector(g, name, &[width], &vec![1.0; width])?;
    Ok(g.node(
        "LayerNormalization",
        &[x, &ones],
        vec![Attr::int("axis", -1), Attr::float("epsilon", eps)],
    ))
}

/// 1-D convolution `[N, C, T]` → `[N, O, T']` with kernel `w` `[O, C, k]`, bias,
/// dilation and explicit (begin, end) zero padding.
pub fn conv1d(g: &mut GraphBuilder, x: &Value, w: &Value, b: &Value, dilation: usize, pads: (usize, usize)) -> Value {
    g.node(
        "Conv",
        &[x, w, b],
        vec![
            Attr::ints("dilations", &[dilation as i64]),
            Attr::ints("pads", &[pads.0 as i64, pads.1 as i64]),
            Attr::ints("strides", &[1]),
        ],
    )
}

/// Transposed 1-D convolution, kernel `w` `[C, O, k]`, stride `s`, no padding:
/// output length `(T − 1)·s + k`.
pub fn conv_transpose1d(g: &mut GraphBuilder, x: &Value, w: &Value, b: &Value, stride: usize) -> Value {
    g.node(
        "ConvTranspose",
        &[x, w, b],
        vec![Attr::ints("strides", &[stride as i64])],
    )
}

/// PReLU with one slope for all channels (`slope` of shape `[1]`).
pub fn prelu(g: &mut GraphBuilder, x: &Value, slope: &Value) -> Value {
    g.node("PRelu", &[x, slope], vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_norm_folds_per_leading_slice() {
        // Conv1d [out=2, in=1, k=2]: each output channel normalised separately.
        let v = [3.0, 4.0, 0.0, 2.0];
        let w = fold_weight_norm(&[10.0, 1.0], &v);
        assert_eq!(w, vec![6.0, 8.0, 0.0, 1.0]);
        // ConvTranspose1d [in=1, out=2, k=2]: one norm over the whole input slice,
        // so both output channels share it (per-input-channel normalisation).
        let w = fold_weight_norm(&[5.0], &v);
        let n = (9.0f64 + 16.0 + 4.0).sqrt();
        let expected: Vec<f32> = v.iter().map(|&x| (5.0 * f64::from(x) / n) as f32).collect();
        assert_eq!(w, expected);
    }

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
