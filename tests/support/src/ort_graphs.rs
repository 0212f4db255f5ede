//! Shared helpers of the quantization lowering tests: ONNX Runtime sessions
//! under the option sets that matter for QDQ graphs, running a graph, seeded
//! data, and the f64 reference product with its error bound.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{PrimitiveTensorElementType, TensorRef};

use onnx_export::quant::KEEP_PACKED_SESSION_CONFIG;

/// Session option sets every portable graph must give identical results under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opts {
    /// ORT defaults: all optimisations, QDQ fusion on, constant folding on.
    Default,
    /// `with_quant_qdq(false)` (dependencies.md pitfall: FP8 QDQ fusion).
    NoQdqFusion,
    /// All optimisations with constant folding off ([`KEEP_PACKED_SESSION_CONFIG`]).
    KeepPacked,
    /// No graph optimisation at all: the operators as written.
    Disabled,
}

/// Every option set.
pub const ALL_OPTS: [Opts; 4] = [Opts::Default, Opts::NoQdqFusion, Opts::KeepPacked, Opts::Disabled];

/// Opens `path` on ONNX Runtime CPU with `opts`; optionally saves the
/// optimised graph to `optimized`.
pub fn session_with(path: &Path, opts: Opts, optimized: Option<&Path>) -> Session {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let mut b = Session::builder(&rt.env)
        .unwrap()
        .with_operators(heart_backend::int4_op::domain().unwrap())
        .unwrap()
        .with_intra_threads(2)
        .unwrap();
    b = match opts {
        Opts::Default => b,
        Opts::NoQdqFusion => b.with_quant_qdq(false).unwrap(),
        Opts::KeepPacked => KEEP_PACKED_SESSION_CONFIG
            .iter()
            .fold(b, |b, (k, v)| b.with_config_entry(*k, *v).unwrap()),
        Opts::Disabled => b.with_optimization_level(GraphOptimizationLevel::Disable).unwrap(),
    };
    if let Some(p) = optimized {
        b = b.with_optimized_model_path(p).unwrap();
    }
    heart_backend::int4_op::creating_session(|| b.commit_from_file(path)).unwrap_or_else(|e| panic!("{opts:?}: {e}"))
}

/// Opens `path` with `opts`.
pub fn session(path: &Path, opts: Opts) -> Session {
    session_with(path, opts, None)
}

/// Runs one graph with inputs of element type `I` and returns the named
/// outputs of element type `O`, flattened.
pub fn run<I, O>(s: &mut Session, inputs: &[(&str, &[usize], &[I])], outputs: &[&str]) -> Vec<Vec<O>>
where
    I: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
    O: PrimitiveTensorElementType + Clone + 'static,
{
    let feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = inputs
        .iter()
        .map(|(name, dims, data)| {
            let t = TensorRef::from_array_view((dims.to_vec(), *data)).unwrap();
            (name.to_string(), t.into())
        })
        .collect();
    let out = s.run(feeds).unwrap();
    outputs
        .iter()
        .map(|name| {
            let (_, data) = out[*name].try_extract_tensor::<O>().unwrap();
            data.to_vec()
        })
        .collect()
}

/// A seeded generator.
pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed)
}

/// `[rows, k] · [k, cols]` in f64 with the bound on |f32 result − exact|
/// that any summation order (with or without FMA) satisfies:
/// `k · 2⁻²⁴ · Σ|x·w|` per output, plus the final rounding to f32.
pub fn matmul_f64(x: &[f32], w: &[f32], rows: usize, k: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; rows * cols];
    let mut bound = vec![0f64; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let (mut s, mut a) = (0f64, 0f64);
            for i in 0..k {
                let p = f64::from(x[r * k + i]) * f64::from(w[i * cols + c]);
                s += p;
                a += p.abs();
            }
            y[r * cols + c] = s;
            bound[r * cols + c] = (k as f64 + 1.0) * 2f64.powi(-24) * a + f64::from(f32::MIN_POSITIVE);
        }
    }
    (y, bound)
}

/// Asserts `got` (f32 from ORT) is within `bound` of `want` everywhere; returns
/// the largest |error| and the largest error / bound ratio.
pub fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: output length");
    let (mut max_err, mut max_ratio) = (0f64, 0f64);
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(err <= b, "{what}[{i}]: got {g}, want {w}, |err| {err:e} > bound {b:e}");
        max_err = max_err.max(err);
        max_ratio = max_ratio.max(err / b);
    }
    (max_err, max_ratio)
}

/// Index of the first element whose bits differ (`-0` ≠ `+0`), if any.
pub fn first_bit_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits())
        .map(|i| (i, got[i], want[i]))
}

/// `[rows, cols]` row-major → `[cols, rows]`.
pub fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}
