//! Portable FP8 activation fake-quantization (W8A8 inputs) on ONNX Runtime CPU,
//! bit for bit against `e4m3_to_f32(encode_scaled(x, s)) * s`: every E4M3
//! value, every tie between neighbours and the f32 values around it,
//! subnormals, saturation, signed zeros, random data at an arbitrary scale, f16
//! in and out, under every session option set. The TensorRT lowering
//! (`QuantizeLinear`/`DequantizeLinear` pair, scale in the compute dtype) is
//! the same bits at f32.

use heart_test_support::ort_graphs as quant_support;

use half::f16;
use heart::quant::fp8::{e4m3_to_f32, encode_scaled};
use onnx_export::quant::QuantEmitter;
use onnx_export::{DType, Dim, GraphBuilder};
use quant_support::{ALL_OPTS, first_bit_difference, rng, run, session};
use rand_distr::{Distribution, Normal};

fn reference(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter()
        .map(|&v| e4m3_to_f32(encode_scaled(v, scale)) * scale)
        .collect()
}

/// A graph `y = fake_quant_fp8(x)` with `x` `[N]` of `dtype`, in the portable
/// lowering or the TensorRT one.
fn graph(dir: &std::path::Path, scale: f32, dtype: DType) -> std::path::PathBuf {
    graph_in(dir, scale, dtype, false)
}

fn graph_in(dir: &std::path::Path, scale: f32, dtype: DType, tensorrt: bool) -> std::path::PathBuf {
    let path = dir.join("fp8_act.onnx");
    let mut g = GraphBuilder::create(&path, "fp8_act").unwrap();
    let x = g.input("x", dtype, &[Dim::from("n")]);
    let mut q = QuantEmitter::new();
    let y = if tensorrt {
        q.fp8_activation_tensorrt(&mut g, &x, "layer.input", scale, dtype)
    } else {
        q.fp8_activation_portable(&mut g, &x, "layer.input", scale, dtype)
    }
    .unwrap();
    g.output(&y, "y", dtype, &[Dim::from("n")]);
    q.finish(g).unwrap();
    path
}

/// Every positive E4M3 value, the midpoints between neighbours with their f32
/// neighbours, values past 448, zeros and both signs, all times `scale`.
fn special_values(scale: f32) -> Vec<f32> {
    let values: Vec<f32> = (0..=0x7Eu8).map(e4m3_to_f32).collect();
    let mut out = Vec::new();
    for w in values.windows(2) {
        let mid = (w[0] + w[1]) / 2.0;
        out.extend([w[0], mid, mid.next_up(), mid.next_down()]);
    }
    out.extend([448.0, 464.0, 464.0f32.next_down(), 1e6, f32::MAX, 0.0]);
    let mut signed: Vec<f32> = out.iter().flat_map(|&v| [v, -v]).collect();
    signed.retain(|v| v.is_finite());
    signed.iter().map(|&v| v * scale).collect()
}

/// Asserts the f32 graph of either lowering equals the reference bit for bit
/// on the special values and on seeded random data, under every option set.
fn assert_bit_exact(tensorrt: bool, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let normal = Normal::new(0.0f32, 3.0).unwrap();
    let mut r = rng(seed);
    let random: Vec<f32> = (0..4096).map(|_| normal.sample(&mut r)).collect();
    for (scale, x) in [(0.25f32, special_values(0.25)), (0.037, random)] {
        let path = graph_in(dir.path(), scale, DType::F32, tensorrt);
        let want = reference(&x, scale);
        for opts in ALL_OPTS {
            let mut s = session(&path, opts);
            let got: Vec<f32> = run::<f32, f32>(&mut s, &[("x", &[x.len()], &x)], &["y"]).remove(0);
            assert_eq!(
                first_bit_difference(&got, &want),
                None,
                "scale {scale}, {opts:?}: (index, got, want)"
            );
        }
    }
}

#[test]
fn fp8_activation_is_bit_exact() {
    assert_bit_exact(false, 11);
}

#[test]
fn tensorrt_qdq_pair_is_the_same_bits_at_f32() {
    assert_bit_exact(true, 13);
    let dir = tempfile::tempdir().unwrap();
    let err = graph_err(dir.path(), 1e-9, DType::F16);
    assert!(
        err.contains("as F16") && err.contains("must be finite and > 0"),
        "{err}"
    );
}

/// The export error of a TensorRT FP8 quantizer whose scale `dtype` cannot hold.
fn graph_err(dir: &std::path::Path, scale: f32, dtype: DType) -> String {
    let mut g = GraphBuilder::create(&dir.join("bad.onnx"), "bad").unwrap();
    let x = g.input("x", dtype, &[Dim::from("n")]);
    QuantEmitter::new()
        .fp8_activation_tensorrt(&mut g, &x, "layer.input", scale, dtype)
        .unwrap_err()
        .to_string()
}

#[test]
fn fp8_activation_in_f16_rounds_the_f32_result() {
    let dir = tempfile::tempdir().unwrap();
    let scale = 0.011f32;
    let path = graph(dir.path(), scale, DType::F16);
    let normal = Normal::new(0.0f32, 2.0).unwrap();
    let mut r = rng(12);
    let x: Vec<f16> = (0..1024).map(|_| f16::from_f32(normal.sample(&mut r))).collect();
    let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let want: Vec<f16> = reference(&x32, scale).into_iter().map(f16::from_f32).collect();
    let mut s = session(&path, quant_support::Opts::Default);
    let got: Vec<f16> = run::<f16, f16>(&mut s, &[("x", &[x.len()], &x)], &["y"]).remove(0);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn fp8_activation_rejects_a_zero_scale() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GraphBuilder::create(&dir.path().join("z.onnx"), "z").unwrap();
    let x = g.input("x", DType::F32, &[Dim::from("n")]);
    let err = QuantEmitter::new()
        .fp8_activation_portable(&mut g, &x, "layer.input", 0.0, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`layer.input`") && err.contains("FP8 scale 0"), "{err}");
}
