//! Dynamic int8 linears for the flow estimator on CPUs (`--codec-precision int8`).
//!
//! `y = x · W` becomes
//!
//! ```text
//! x f32 [.., K] ─ DynamicQuantizeLinear ─ xq u8, x_scale, x_zero ─┐
//! W int8 [K, N] (symmetric, per output channel) ───────────────── MatMulInteger ─ i32 [.., N]
//! Cast f32 · (x_scale · w_scale[N]) ─ y f32 [.., N]
//! ```
//!
//! Why: the estimator is compute-bound (≈4.4 TFLOP per Euler step per window
//! at the released shapes), and ONNX Runtime's u8 × s8 `MatMulInteger` runs on
//! the CPU's int8 dot-product units: 702 against 220 GFLOP/s of fp32 sgemm on
//! an estimator-sized product on the 2-core project machine
//! (`/work/shared/notes/dependencies.md`, "CPU GEMM for the codec
//! estimator"); `MatMulNBits` is a GEMV kernel and gains nothing at the
//! estimator's 1,488 rows. Activations get one scale per call (the whole
//! tensor, both CFG rows), computed at run time; weights one scale per output
//! column, `max |w| / 127`, so a column of small weights keeps its resolution.

use super::weight::DenseWeight;
use crate::error::Result;
use crate::graph::{DType, GraphBuilder, Value};

/// Weight `[in, out]` (row-major) as symmetric int8 with one scale per output
/// column: `q = round(w / s)`, `s = max |w| / 127` (1 for an all-zero column).
pub fn quantize_columns(w_t: &[f32], in_dim: usize, out_dim: usize) -> (Vec<i8>, Vec<f32>) {
    let mut max = vec![0f32; out_dim];
    for row in w_t.chunks_exact(out_dim).take(in_dim) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = w_t
        .chunks_exact(out_dim)
        .flat_map(|row| {
            row.iter()
                .zip(&scales)
                .map(|(&v, &s)| (v / s).round().clamp(-127.0, 127.0) as i8)
        })
        .collect();
    (q, scales)
}

/// `x · W` as a dynamic int8 product; stores `w.name` (int8 `[in, out]`) and
/// `w.name.scale` (f32 `[out]`).
pub fn dynamic_int8_matmul(g: &mut GraphBuilder, x: &Value, w: &DenseWeight<'_>) -> Result<Value> {
    let (name, in_dim, out_dim) = (w.name, w.in_dim, w.out_dim);
    let (q, scales) = quantize_columns(w.w_t, in_dim, out_dim);
    let wq = g.init_stream(name, DType::I8, &[in_dim, out_dim], |sink| {
        sink.push_bytes(bytemuck::cast_slice(&q))
    })?;
    let ws = g.init_f32(&format!("{name}.scale"), DType::F32, &[out_dim], &scales)?;
    let scope = name.trim_end_matches(".weight");
    Ok(g.with_scope(scope, |g| {
        let xq = g.node_ext("", "DynamicQuantizeLinear", &[Some(x)], 3, Vec::new());
        let acc = g.node_ext(
            "",
            "MatMulInteger",
            &[Some(&xq[0]), Some(&wq), Some(&xq[2])],
            1,
            Vec::new(),
        );
        let acc = g.cast(&acc[0], DType::F32);
        let scale = g.mul(&xq[1], &ws);
        g.mul(&acc, &scale)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_get_their_own_scale() {
        // [in = 2, out = 3]: column 0 max 1.27, column 1 max 0.5, column 2 zero.
        let w = [1.27, -0.5, 0.0, -0.635, 0.25, 0.0];
        let (q, s) = quantize_columns(&w, 2, 3);
        assert_eq!(q, [127, -127, 0, -64, 64, 0]);
        assert!((s[0] - 0.01).abs() < 1e-9 && (s[1] - 0.5 / 127.0).abs() < 1e-9);
        assert_eq!(s[2], 1.0);
        // Dequantized error is at most half a step per column.
        for (i, (&wq, &wv)) in q.iter().zip(&w).enumerate() {
            let step = s[i % 3];
            assert!((f32::from(wq) * step - wv).abs() <= step / 2.0 + 1e-7, "{i}");
        }
    }
}
