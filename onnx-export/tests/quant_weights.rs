//! Portable NVFP4 and FP8 weight lowerings on ONNX Runtime CPU: the dequantized
//! weight is bit-identical to the Rust reference (exposed as a graph output),
//! and `X · W` matches an f64 product of the reference within the f32
//! accumulation bound `(k+1) · 2⁻²⁴ · Σ|x·w|` — every option set.

use heart_test_support::ort_graphs as quant_support;

use half::f16;
use heart::quant::fp8::{Fp8Granularity, Fp8Tensor, quantize_fp8};
use heart::quant::nvfp4::{Nvfp4Tensor, quantize_nvfp4};
use onnx_export::quant::{QuantEmitter, WeightScheme};
use onnx_export::{DType, Dim, ExportError, GraphBuilder};
use quant_support::{ALL_OPTS, assert_within, first_bit_difference, matmul_f64, rng, run, session, transpose};
use rand::Rng;
use rand_distr::{Distribution, Normal};

const OUT: usize = 48;
const IN: usize = 64;
const BATCH: usize = 5;

/// `[OUT, IN]` weights whose blocks span 2⁻¹²…2⁴ in scale, with one all-zero
/// block, one block too small for its scale to survive E4M3 (scale code 0),
/// one outlier that sets the global scale (its block saturates at 448 / ±6),
/// and one all-zero row.
fn weights(seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut w = vec![0f32; OUT * IN];
    for row in 0..OUT {
        for block in 0..IN / 16 {
            let scale = 2f32.powi(r.random_range(-12..=4));
            for c in 0..16 {
                w[row * IN + block * 16 + c] = normal.sample(&mut r) * scale;
            }
        }
    }
    w[3 * IN + 16..3 * IN + 32].fill(0.0);
    for (c, v) in w[5 * IN + 32..5 * IN + 48].iter_mut().enumerate() {
        *v = if c % 2 == 0 { 1e-9 } else { -3e-9 };
    }
    w[7 * IN + 13] = -1000.0;
    w[9 * IN..10 * IN].fill(0.0);
    w
}

fn x_values(seed: u64, n: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    (0..n).map(|_| normal.sample(&mut r)).collect()
}

/// Builds `y = x · w_deq` with `w_deq` also an output; returns the graph path.
fn build(
    dir: &std::path::Path,
    dtype: DType,
    emit: impl FnOnce(&mut QuantEmitter, &mut GraphBuilder) -> onnx_export::Result<onnx_export::Value>,
) -> std::path::PathBuf {
    let path = dir.join("q.onnx");
    let mut g = GraphBuilder::create(&path, "q").unwrap();
    let mut em = QuantEmitter::new();
    let x = g.input("x", dtype, &[Dim::from("batch"), IN.into()]);
    let w = emit(&mut em, &mut g).unwrap();
    let y = g.matmul(&x, &w);
    g.output(&w, "w", dtype, &[IN.into(), OUT.into()]);
    g.output(&y, "y", dtype, &[Dim::from("batch"), OUT.into()]);
    em.finish(g).unwrap();
    path
}

/// Runs the f32 graph under every option set and checks both outputs.
fn check_f32(path: &std::path::Path, reference: &[f32], what: &str) {
    let want_w = transpose(reference, OUT, IN);
    let x = x_values(11, BATCH * IN);
    let (want_y, bound) = matmul_f64(&x, &want_w, BATCH, IN, OUT);
    for opts in ALL_OPTS {
        let mut s = session(path, opts);
        let out = run::<f32, f32>(&mut s, &[("x", &[BATCH, IN], &x)], &["w", "y"]);
        assert_eq!(
            first_bit_difference(&out[0], &want_w),
            None,
            "{what} {opts:?}: dequantized weight"
        );
        let (err, ratio) = assert_within(&format!("{what} {opts:?} y"), &out[1], &want_y, &bound);
        println!("{what} {opts:?}: weight bit-exact; y max|err| {err:e}, max err/bound {ratio:.3}");
    }
}

fn nvfp4() -> Nvfp4Tensor {
    let q = quantize_nvfp4(&weights(1), OUT, IN).unwrap();
    // The data must exercise what the lowering decodes: every code, a zero
    // scale in a non-zero block, and the saturated scale.
    let codes = q.codes();
    for c in 0..16u8 {
        assert!(codes.contains(&c), "test data lacks E2M1 code {c}");
    }
    assert_eq!(q.block_scales()[5 * (IN / 16) + 2], 0, "underflowing block");
    assert!(q.block_scales().contains(&0x7E), "saturated block scale");
    q
}

#[test]
fn nvfp4_portable_weight_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let q = nvfp4();
    let path = build(dir.path(), DType::F32, |em, g| {
        em.nvfp4_portable(g, "lin.weight", &q, DType::F32)
    });
    check_f32(&path, &q.dequantize(), "nvfp4");
}

#[test]
fn fp8_portable_weight_is_bit_exact_per_row_and_per_tensor() {
    let mut w = weights(2);
    // A row spanning the whole E4M3 range, subnormals included.
    for (c, v) in w[11 * IN..12 * IN].iter_mut().enumerate() {
        *v = 2f32.powi(c as i32 / 4 - 12) * if c % 3 == 0 { -1.0 } else { 1.0 };
    }
    for granularity in [Fp8Granularity::PerRow, Fp8Granularity::PerTensor] {
        let q = quantize_fp8(&w, OUT, IN, granularity).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), DType::F32, |em, g| {
            em.fp8_portable(g, "lin.weight", &q, DType::F32)
        });
        check_f32(&path, &q.dequantize(), &format!("fp8 {granularity:?}"));
    }
}

#[test]
fn f16_outputs_round_like_half() {
    let nv = nvfp4();
    let f8: Fp8Tensor = quantize_fp8(&weights(3), OUT, IN, Fp8Granularity::PerRow).unwrap();
    let cases: [(&str, Vec<f32>); 2] = [("nvfp4", nv.dequantize()), ("fp8", f8.dequantize())];
    for (what, reference) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), DType::F16, |em, g| match what {
            "nvfp4" => em.nvfp4_portable(g, "lin.weight", &nv, DType::F16),
            _ => em.fp8_portable(g, "lin.weight", &f8, DType::F16),
        });
        let want: Vec<u16> = transpose(&reference, OUT, IN)
            .iter()
            .map(|&v| f16::from_f32(v).to_bits())
            .collect();
        let x = vec![f16::ONE; BATCH * IN];
        let mut s = session(&path, quant_support::Opts::Default);
        let out = run::<f16, f16>(&mut s, &[("x", &[BATCH, IN], &x)], &["w"]);
        let got: Vec<u16> = out[0].iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{what}: f16 weight");
    }
}

#[test]
fn linear_weight_quantizes_checkpoint_tensors() {
    let w = weights(4);
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = heart::checkpoint::TensorRef {
        name: "layers.0.mlp.w1.weight",
        dtype: safetensors::Dtype::F32,
        shape: &[OUT, IN],
        data: &bytes,
        path: std::path::Path::new("mem"),
    };
    let schemes = [
        (
            WeightScheme::Nvfp4Portable,
            quantize_nvfp4(&w, OUT, IN).unwrap().dequantize(),
        ),
        (
            WeightScheme::Fp8Portable,
            quantize_fp8(&w, OUT, IN, Fp8Granularity::PerRow).unwrap().dequantize(),
        ),
    ];
    for (scheme, reference) in schemes {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), DType::F32, |em, g| {
            em.linear_weight(g, &t, scheme, DType::F32)
        });
        check_f32(&path, &reference, &format!("{scheme:?}"));
    }
}

#[test]
fn bad_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GraphBuilder::create(&dir.path().join("e.onnx"), "e").unwrap();
    let mut em = QuantEmitter::new();

    let mut w = weights(5);
    w[2 * IN + 7] = f32::NAN;
    let err = WeightScheme::Nvfp4Portable
        .quantize("layers.1.attn.q_proj.weight", &w, OUT, IN)
        .unwrap_err();
    assert!(matches!(err, ExportError::Quant(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("layers.1.attn.q_proj.weight") && msg.contains("[2, 7]"),
        "{msg}"
    );

    let err = WeightScheme::Nvfp4TensorRt
        .quantize("w40", &weights(5)[..OUT * 40], OUT, 40)
        .unwrap_err();
    assert!(err.to_string().contains("multiple of the NVFP4 block size"), "{err}");

    let odd = quantize_nvfp4(&weights(6)[..(OUT - 1) * IN], OUT - 1, IN).unwrap();
    let err = em.nvfp4_portable(&mut g, "odd.weight", &odd, DType::F32).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("odd.weight") && msg.contains("even number of output rows"),
        "{msg}"
    );

    let q = nvfp4();
    let err = em.nvfp4_portable(&mut g, "i.weight", &q, DType::I64).unwrap_err();
    assert!(err.to_string().contains("f32, f16 or bf16"), "{err}");
}
