//! Portable NVFP4 activation fake-quantization on ONNX Runtime CPU, bit for bit
//! (signed zeros included) against `quantize_nvfp4_with_global(..).dequantize()`:
//! every E2M1 tie and its neighbours at every E4M3 block scale, every E4M3
//! tie of the block scale, saturation, zero and underflowing blocks, an
//! overflowing scale, rank 3, f16, and the W4A4 linear end to end.

use heart_test_support::ort_graphs as quant_support;

use half::f16;
use heart::quant::fp8::e4m3_to_f32;
use heart::quant::nvfp4::{nvfp4_global_scale, quantize_nvfp4, quantize_nvfp4_with_global};
use onnx_export::quant::{ActQuant, QuantEmitter, WeightScheme};
use onnx_export::{DType, Dim, GraphBuilder};
use quant_support::{ALL_OPTS, Opts, assert_within, first_bit_difference, matmul_f64, rng, run, session};
use rand::Rng;
use rand_distr::{Distribution, Normal};

const K: usize = 64;
const BLOCK: usize = 16;

/// Positive finite E4M3 values, codes 0x01..=0x7E.
fn e4m3_values() -> Vec<f32> {
    (1..=0x7Eu8).map(e4m3_to_f32).collect()
}

/// Blocks whose scale is exactly `m` for every E4M3 value `m` (amax = 6·m·g),
/// filled with every E2M1 grid value and midpoint times `d = m·g`, and the f32
/// neighbours of each midpoint.
fn e2m1_tie_blocks(g: f32) -> Vec<f32> {
    let grid = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let mids = [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let mut out = Vec::new();
    for m in e4m3_values() {
        let d = m * g;
        let mut special: Vec<f32> = Vec::new();
        for s in [1.0f32, -1.0] {
            special.extend(grid.iter().map(|t| s * t * d));
            for t in mids {
                let x = s * t * d;
                special.extend([x, x.next_up(), x.next_down()]);
            }
        }
        for chunk in special.chunks(BLOCK - 1) {
            out.push(6.0 * d);
            out.extend_from_slice(chunk);
            out.extend(std::iter::repeat_n(0.0, BLOCK - 1 - chunk.len()));
        }
    }
    out
}

/// Blocks whose `amax / 6 / g` lies exactly halfway between consecutive E4M3
/// values (and past the largest), with random contents below the amax.
fn e4m3_tie_blocks(g: f32, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let mut values = vec![0.0f32];
    values.extend(e4m3_values());
    let mut mids: Vec<f32> = values.windows(2).map(|p| (p[0] + p[1]) / 2.0).collect();
    mids.extend([464.0, 1000.0, 1e30]);
    let mut out = Vec::new();
    for mid in mids {
        let amax = 6.0 * mid * g;
        out.push(if r.random() { amax } else { -amax });
        out.extend((1..BLOCK).map(|_| amax * r.random_range(-1.0f32..=1.0)));
    }
    out
}

/// Zero blocks with signed zeros, a block too small for a non-zero scale, a
/// normal block with −0 and tiny negatives, and random blocks over 2⁻²⁰…2¹².
fn special_and_random_blocks(g: f32, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0f32; BLOCK];
    out.extend((0..BLOCK).map(|i| if i % 2 == 0 { -0.0 } else { 0.0 }));
    out.extend((0..BLOCK).map(|i| if i % 3 == 0 { -g * 1e-4 } else { g * 1e-4 }));
    out.extend([1.0f32, -0.0, 0.0, -1e-7, 1e-7, -0.03, 0.03]);
    out.extend(std::iter::repeat_n(0.5, BLOCK - 7));
    let mut r = rng(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    for _ in 0..400 {
        let scale = 2f32.powi(r.random_range(-20..=12));
        out.extend((0..BLOCK).map(|_| normal.sample(&mut r) * scale));
    }
    out
}

/// Pads whole blocks of `values` with zero blocks to whole rows of `K`.
fn rows(mut values: Vec<f32>) -> (Vec<f32>, usize) {
    while !values.len().is_multiple_of(K) {
        values.push(0.0);
    }
    let n = values.len() / K;
    (values, n)
}

/// A graph `xq = fake_quant(x)` with `x` of rank `rank` and dtype `dtype`.
fn build(dir: &std::path::Path, g: f32, rank: usize, dtype: DType) -> std::path::PathBuf {
    let path = dir.join("act.onnx");
    let mut b = GraphBuilder::create(&path, "act").unwrap();
    let mut em = QuantEmitter::new();
    let mut dims: Vec<Dim> = (0..rank - 1).map(|i| Dim::from(format!("d{i}").as_str())).collect();
    dims.push(K.into());
    let x = b.input("x", dtype, &dims);
    let act = ActQuant {
        name: "layer.input",
        features: K,
        global: g,
    };
    let xq = em
        .activation(&mut b, &x, act, WeightScheme::Nvfp4Portable, dtype)
        .unwrap();
    b.output(&xq, "xq", dtype, &dims);
    em.finish(b).unwrap();
    path
}

/// Runs `values` through the graph under every option set and compares bits.
fn check(values: Vec<f32>, g: f32, what: &str) {
    let (x, n) = rows(values);
    let want = quantize_nvfp4_with_global(&x, n, K, g).unwrap().dequantize();
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), g, 2, DType::F32);
    for opts in ALL_OPTS {
        let mut s = session(&path, opts);
        let got = run::<f32, f32>(&mut s, &[("x", &[n, K], &x)], &["xq"]).remove(0);
        if let Some((i, gv, wv)) = first_bit_difference(&got, &want) {
            panic!("{what} {opts:?}: element {i} (x = {:e}): got {gv:e}, want {wv:e}", x[i]);
        }
    }
    let zeros = want.iter().filter(|v| **v == 0.0).count();
    println!(
        "{what}: {} values in {n} rows bit-exact ({zeros} zeros) under {} option sets",
        x.len(),
        ALL_OPTS.len()
    );
}

#[test]
fn every_e2m1_tie_at_every_block_scale_is_bit_exact() {
    check(e2m1_tie_blocks(2f32.powi(-8)), 2f32.powi(-8), "E2M1 ties");
}

#[test]
fn every_e4m3_scale_tie_and_saturation_is_bit_exact() {
    check(e4m3_tie_blocks(2f32.powi(-8), 1), 2f32.powi(-8), "E4M3 ties");
}

#[test]
fn special_and_random_blocks_are_bit_exact() {
    // A calibrated-looking global well below the data's amax: many blocks
    // saturate their scale at 448 and their elements at ±6·d.
    let g = nvfp4_global_scale(37.5);
    check(special_and_random_blocks(g, 2), g, "special+random");
}

#[test]
fn an_overflowing_block_scale_saturates_like_the_reference() {
    // amax / 6 / g overflows f32 to +inf: E4M3 saturates it to 448, and the
    // divisor is subnormal.
    let g = 1e-44;
    let mut v: Vec<f32> = (0..BLOCK).map(|i| i as f32 - 7.5).collect();
    v[3] = 100.0;
    v.extend(special_and_random_blocks(g, 3).into_iter().take(8 * BLOCK));
    check(v, g, "overflowing scale");
}

#[test]
fn rank_three_and_f16_inputs() {
    let g = nvfp4_global_scale(4.0);
    let (x, n) = rows(special_and_random_blocks(g, 4).into_iter().take(64 * BLOCK).collect());
    let dir = tempfile::tempdir().unwrap();

    let want = quantize_nvfp4_with_global(&x, n, K, g).unwrap().dequantize();
    let path = build(dir.path(), g, 3, DType::F32);
    let mut s = session(&path, Opts::Default);
    let got = run::<f32, f32>(&mut s, &[("x", &[2, n / 2, K], &x)], &["xq"]).remove(0);
    assert_eq!(first_bit_difference(&got, &want), None, "rank 3");

    let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let widened: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let want16: Vec<u16> = quantize_nvfp4_with_global(&widened, n, K, g)
        .unwrap()
        .dequantize()
        .iter()
        .map(|&v| f16::from_f32(v).to_bits())
        .collect();
    let path = build(dir.path(), g, 2, DType::F16);
    let mut s = session(&path, Opts::Default);
    let got = run::<f16, f16>(&mut s, &[("x", &[n, K], &x16)], &["xq"]).remove(0);
    let got: Vec<u16> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want16, "f16");
}

#[test]
fn w4a4_linear_matches_the_reference_product() {
    const OUT: usize = 32;
    const BATCH: usize = 7;
    let mut r = rng(5);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let w: Vec<f32> = (0..OUT * K).map(|_| normal.sample(&mut r) * 0.05).collect();
    let x: Vec<f32> = (0..BATCH * K).map(|_| normal.sample(&mut r) * 3.0).collect();
    let act_global = nvfp4_global_scale(8.0);
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = heart::checkpoint::TensorRef {
        name: "layers.0.attn.q_proj.weight",
        dtype: safetensors::Dtype::F32,
        shape: &[OUT, K],
        data: &bytes,
        path: std::path::Path::new("mem"),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lin.onnx");
    let mut g = GraphBuilder::create(&path, "lin").unwrap();
    let mut em = QuantEmitter::new();
    let xin = g.input("x", DType::F32, &[Dim::from("batch"), K.into()]);
    let y = em
        .linear(
            &mut g,
            &xin,
            &t,
            WeightScheme::Nvfp4Portable,
            Some(act_global),
            DType::F32,
        )
        .unwrap();
    g.output(&y, "y", DType::F32, &[Dim::from("batch"), OUT.into()]);
    em.finish(g).unwrap();

    let xq = quantize_nvfp4_with_global(&x, BATCH, K, act_global)
        .unwrap()
        .dequantize();
    let wq = quantize_nvfp4(&w, OUT, K).unwrap().dequantize();
    let wt = quant_support::transpose(&wq, OUT, K);
    let (want, bound) = matmul_f64(&xq, &wt, BATCH, K, OUT);
    for opts in ALL_OPTS {
        let mut s = session(&path, opts);
        let got = run::<f32, f32>(&mut s, &[("x", &[BATCH, K], &x)], &["y"]).remove(0);
        let (err, ratio) = assert_within(&format!("W4A4 {opts:?}"), &got, &want, &bound);
        println!("W4A4 {opts:?}: max|err| {err:e}, max err/bound {ratio:.3}");
    }
}

#[test]
fn bad_activation_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = GraphBuilder::create(&dir.path().join("e.onnx"), "e").unwrap();
    let mut em = QuantEmitter::new();
    let x = b.input("x", DType::F32, &[Dim::from("batch"), K.into()]);
    let nv = WeightScheme::Nvfp4Portable;
    let act = |features, global| ActQuant {
        name: "a",
        features,
        global,
    };
    let err = em.activation(&mut b, &x, act(K, 0.0), nv, DType::F32).unwrap_err();
    assert!(err.to_string().contains("global scale 0"), "{err}");
    let err = em.activation(&mut b, &x, act(K, f32::NAN), nv, DType::F32).unwrap_err();
    assert!(err.to_string().contains("finite and > 0"), "{err}");
    let err = em.activation(&mut b, &x, act(40, 1.0), nv, DType::F32).unwrap_err();
    assert!(err.to_string().contains("multiple of 16"), "{err}");
    let err = em
        .activation(&mut b, &x, act(K, 1.0), WeightScheme::Fp8Portable, DType::F32)
        .unwrap_err();
    assert!(err.to_string().contains("weight-only"), "{err}");
}
