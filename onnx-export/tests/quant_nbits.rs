//! The `MatMulNBits` lowering of blockwise int4 / int8 weights on ONNX Runtime
//! CPU: the node and its initializers are exactly the reference quantizer's
//! parts; at accuracy level 0 `x · Wᵀ` matches an f64 product with the
//! reference's dequantized weight within the f32 accumulation bound
//! `(k+1) · 2⁻²⁴ · Σ|x·w|` (every option set; a rank-3 input; `K` not a
//! multiple of 32; odd `N`); at level 4 (int8 activations per 32-element
//! block) within that bound plus half an activation step per block,
//! `Σ_blocks amax_b(x) / 254 · Σ_b |w|`; errors name the weight.

use heart_test_support::ort_graphs as quant_support;

use heart::profile::Int4Kernel;
use heart::quant::blockwise::{BlockwiseTensor, IntBits, quantize_blockwise};
use onnx_export::proto::ModelProto;
use onnx_export::quant::{Accuracy, ActQuant, NBits, QuantEmitter, WeightScheme};
use onnx_export::{DType, Dim, GraphBuilder};
use prost::Message;
use quant_support::{ALL_OPTS, Opts, assert_within, matmul_f64, rng, run, session, transpose};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Output features (odd: nothing pairs rows).
const OUT: usize = 45;
/// Input features: 2 whole blocks and one of 16.
const IN: usize = 80;
/// Rows of x: `[2, 3, IN]`.
const LEAD: [usize; 2] = [2, 3];
const ROWS: usize = 6;

/// `[OUT, IN]` weights whose blocks span 2⁻¹⁰…2³ in scale and are offset from
/// zero by up to their own size, with one all-zero block, one constant block,
/// one all-negative row and one all-zero row.
fn weights(seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut w = vec![0f32; OUT * IN];
    for row in 0..OUT {
        for block in w[row * IN..(row + 1) * IN].chunks_mut(32) {
            let scale = 2f32.powi(r.random_range(-10..=3));
            let offset = r.random_range(-1.0f32..1.0) * scale;
            for v in block.iter_mut() {
                *v = normal.sample(&mut r) * scale + offset;
            }
        }
    }
    w[3 * IN + 32..3 * IN + 64].fill(0.0);
    w[4 * IN..4 * IN + 32].fill(0.37);
    for v in &mut w[6 * IN..7 * IN] {
        *v = -v.abs() - 0.01;
    }
    w[8 * IN..9 * IN].fill(0.0);
    w
}

fn x_values(seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    (0..ROWS * IN)
        .map(|_| normal.sample(&mut r) * if r.random_bool(0.05) { 8.0 } else { 1.0 })
        .collect()
}

/// `MatMulNBits` of `q`'s width at `accuracy`.
fn ort_kernel(q: &BlockwiseTensor, accuracy: Accuracy) -> NBits {
    NBits {
        bits: q.bits(),
        accuracy,
        int4_kernel: Int4Kernel::Onnxruntime,
    }
}

/// Writes `y = MatMulNBits(x [2, 3, IN], q)` (or the operator `nb` picks);
/// returns the graph path.
fn build(dir: &std::path::Path, q: &BlockwiseTensor, nb: NBits) -> std::path::PathBuf {
    let path = dir.join("nbits.onnx");
    let mut g = GraphBuilder::create(&path, "nbits").unwrap();
    let mut em = QuantEmitter::new();
    let x = g.input("x", DType::F32, &[Dim::from("batch"), "seq".into(), IN.into()]);
    let y = em.matmul_nbits(&mut g, &x, "lin.weight", q, nb, DType::F32).unwrap();
    g.output(&y, "y", DType::F32, &[Dim::from("batch"), "seq".into(), OUT.into()]);
    em.finish(g).unwrap();
    path
}

fn quantized(bits: IntBits) -> BlockwiseTensor {
    let q = quantize_blockwise(&weights(1), OUT, IN, bits).unwrap();
    assert_eq!(q.scales()[3 * 3 + 1], 0.0, "the zero block");
    assert!(q.zero_points().contains(&0) && q.zero_points().contains(&bits.max_code()));
    q
}

/// The output of one run of `path` on `x` with `opts`.
fn run_y(path: &std::path::Path, opts: Opts, x: &[f32]) -> Vec<f32> {
    let mut s = session(path, opts);
    let dims = [LEAD[0], LEAD[1], IN];
    run::<f32, f32>(&mut s, &[("x", &dims, x)], &["y"]).remove(0)
}

#[test]
fn accuracy_level_0_is_the_reference_product() {
    for bits in [IntBits::Int4, IntBits::Int8] {
        let q = quantized(bits);
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), &q, ort_kernel(&q, Accuracy::Float));
        let x = x_values(11);
        let (want, bound) = matmul_f64(&x, &transpose(&q.dequantize(), OUT, IN), ROWS, IN, OUT);
        for opts in ALL_OPTS {
            let y = run_y(&path, opts, &x);
            let (err, ratio) = assert_within(&format!("{bits:?} level 0 {opts:?}"), &y, &want, &bound);
            println!("{bits:?} level 0 {opts:?}: max|err| {err:e}, max err/bound {ratio:.3}");
        }
    }
}

/// Half an int8 step of each 32-element activation block times that block's
/// |w|: `Σ_b amax_b(x) / 254 · Σ_{i∈b} |w_i|`, per output.
fn activation_bound(x: &[f32], w_in_out: &[f32]) -> Vec<f64> {
    let mut out = vec![0f64; ROWS * OUT];
    for r in 0..ROWS {
        let row = &x[r * IN..(r + 1) * IN];
        for c in 0..OUT {
            out[r * OUT + c] = row
                .chunks(32)
                .enumerate()
                .map(|(b, block)| {
                    let amax = block.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                    let wsum: f64 = (0..block.len())
                        .map(|i| f64::from(w_in_out[(b * 32 + i) * OUT + c].abs()))
                        .sum();
                    amax / 254.0 * wsum
                })
                .sum();
        }
    }
    out
}

#[test]
fn accuracy_level_4_is_within_half_an_activation_step() {
    for bits in [IntBits::Int4, IntBits::Int8] {
        let q = quantized(bits);
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), &q, ort_kernel(&q, Accuracy::Int8));
        let x = x_values(12);
        let w = transpose(&q.dequantize(), OUT, IN);
        let (want, f32_bound) = matmul_f64(&x, &w, ROWS, IN, OUT);
        let act = activation_bound(&x, &w);
        let bound: Vec<f64> = act.iter().zip(&f32_bound).map(|(a, f)| a * 1.001 + 2.0 * f).collect();
        let y = run_y(&path, Opts::Default, &x);
        let (err, ratio) = assert_within(&format!("{bits:?} level 4"), &y, &want, &bound);
        let rms = |v: &mut dyn Iterator<Item = f64>| {
            let (s, n) = v.fold((0.0, 0usize), |(s, n), e| (s + e * e, n + 1));
            (s / n as f64).sqrt()
        };
        let rel = rms(&mut y.iter().zip(&want).map(|(&g, w)| f64::from(g) - w)) / rms(&mut want.iter().copied());
        println!("{bits:?} level 4: max|err| {err:e}, max err/bound {ratio:.3}, relative rms error {rel:.2e}");
        assert!(
            rel > 1e-5,
            "level 4 must quantize the activations (relative rms error {rel:e})"
        );
    }
}

/// heart's int4 kernel (`ai.heart.MatMulInt4x16`) computes what level 4
/// does: the same int8 activation blocks and integer block products, so it is
/// within level 4's bound of the reference and within two f32 accumulation
/// bounds of `MatMulNBits` itself; one node, `K` and `N` attributes, the
/// interleaved parts as initializers.
#[test]
fn heart_int4_kernel_computes_level_4() {
    let q = quantized(IntBits::Int4);
    let (d_heart, d_ort) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let heart = build(d_heart.path(), &q, NBits::new(IntBits::Int4));
    let ort = build(d_ort.path(), &q, ort_kernel(&q, Accuracy::Int8));
    let m = ModelProto::decode(std::fs::read(&heart).unwrap().as_slice()).unwrap();
    let g = m.graph.unwrap();
    let nodes: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulInt4x16"))
        .collect();
    assert_eq!(nodes.len(), 1);
    assert!(g.node.iter().all(|n| n.op_type.as_deref() != Some("MatMulNBits")));
    let node = nodes[0];
    assert_eq!(node.domain.as_deref(), Some("ai.heart"));
    let attr = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.i)
    };
    assert_eq!((attr("K"), attr("N")), (Some(IN as i64), Some(OUT as i64)));
    let packed = heart::quant::int4x16::Int4x16::from_blockwise(&q).unwrap();
    let dims: Vec<(String, Vec<i64>)> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap_or_default(), t.dims.clone()))
        .collect();
    for (part, len) in [
        ("packed", packed.packed().len()),
        ("scales", packed.scales().len()),
        ("zero_points", packed.zero_points().len()),
    ] {
        let name = format!("lin.weight.int4x16_{part}");
        assert!(
            dims.contains(&(name.clone(), vec![len as i64])),
            "{name} [{len}] in {dims:?}"
        );
    }

    let x = x_values(12);
    let w = transpose(&q.dequantize(), OUT, IN);
    let (want, f32_bound) = matmul_f64(&x, &w, ROWS, IN, OUT);
    let act = activation_bound(&x, &w);
    let bound: Vec<f64> = act.iter().zip(&f32_bound).map(|(a, f)| a * 1.001 + 2.0 * f).collect();
    let y = run_y(&heart, Opts::Default, &x);
    let (err, ratio) = assert_within("heart int4", &y, &want, &bound);
    println!("heart int4: max|err| {err:e}, max err/bound {ratio:.3}");
    let y_ort: Vec<f64> = run_y(&ort, Opts::Default, &x).into_iter().map(f64::from).collect();
    let twice: Vec<f64> = f32_bound.iter().map(|f| 2.0 * f).collect();
    let (err, ratio) = assert_within("heart int4 vs MatMulNBits level 4", &y, &y_ort, &twice);
    println!("heart int4 vs MatMulNBits level 4: max|diff| {err:e}, max diff/bound {ratio:.3}");
}

#[test]
fn the_node_and_initializers_are_the_reference_parts() {
    for (bits, accuracy) in [(IntBits::Int4, Accuracy::Int8), (IntBits::Int8, Accuracy::Float)] {
        let q = quantized(bits);
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), &q, ort_kernel(&q, accuracy));
        let m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let g = m.graph.as_ref().unwrap();
        let node = g
            .node
            .iter()
            .find(|n| n.op_type.as_deref() == Some("MatMulNBits"))
            .expect("one MatMulNBits node");
        assert_eq!(node.domain.as_deref(), Some("com.microsoft"));
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
                .unwrap()
                .i
        };
        assert_eq!(attr("K"), Some(IN as i64));
        assert_eq!(attr("N"), Some(OUT as i64));
        assert_eq!(attr("bits"), Some(bits.bits() as i64));
        assert_eq!(attr("block_size"), Some(32));
        assert_eq!(attr("accuracy_level"), Some(accuracy.level()));
        assert_eq!(
            node.input,
            [
                "x",
                "lin.weight.nbits_b",
                "lin.weight.nbits_scales",
                "lin.weight.nbits_zero_points"
            ]
        );
        assert!(
            m.opset_import
                .iter()
                .any(|o| o.domain.as_deref() == Some("com.microsoft"))
        );
        let blob = bits.blob_bytes() as i64;
        let zp_bytes = if bits == IntBits::Int4 { 2 } else { 3 };
        let data = std::fs::read(path.with_extension("onnx.data")).unwrap();
        let scales: Vec<u8> = q.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
        let expected: [(&str, Vec<i64>, &[u8]); 3] = [
            ("lin.weight.nbits_b", vec![OUT as i64, 3, blob], q.packed()),
            ("lin.weight.nbits_scales", vec![OUT as i64, 3], &scales),
            (
                "lin.weight.nbits_zero_points",
                vec![OUT as i64, zp_bytes],
                &q.packed_zero_points(),
            ),
        ];
        for (name, dims, bytes) in expected {
            let t = g.initializer.iter().find(|t| t.name.as_deref() == Some(name)).unwrap();
            assert_eq!(t.dims, dims, "{name}");
            assert_eq!(initializer_bytes(t, &data), bytes, "{name}");
        }
    }
}

/// An initializer's bytes: inline `raw_data`, or its extent of the external data file.
fn initializer_bytes<'a>(t: &'a onnx_export::proto::TensorProto, data: &'a [u8]) -> &'a [u8] {
    if let Some(raw) = &t.raw_data {
        return raw;
    }
    let entry = |key: &str| -> usize {
        let e = t.external_data.iter().find(|e| e.key.as_deref() == Some(key)).unwrap();
        e.value.as_deref().unwrap().parse().unwrap()
    };
    let offset = entry("offset");
    &data[offset..offset + entry("length")]
}

#[test]
fn misuse_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GraphBuilder::create(&dir.path().join("e.onnx"), "e").unwrap();
    let mut em = QuantEmitter::new();
    let x = g.input("x", DType::F16, &[Dim::from("batch"), IN.into()]);
    let q = quantized(IntBits::Int4);
    let err = em
        .matmul_nbits(&mut g, &x, "h.weight", &q, ort_kernel(&q, Accuracy::Int8), DType::F16)
        .unwrap_err();
    assert!(
        err.to_string().contains("`h.weight`") && err.to_string().contains("f32 only"),
        "{err}"
    );

    let mut w = weights(2);
    w[5 * IN + 70] = f32::INFINITY;
    let scheme = WeightScheme::MatMulNBits(onnx_export::quant::NBits::new(IntBits::Int8));
    let err = scheme.quantize("layers.0.mlp.w1.weight", &w, OUT, IN).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("layers.0.mlp.w1.weight") && msg.contains("[5, 70]"),
        "{msg}"
    );

    let act = ActQuant {
        name: "lin.input",
        features: IN,
        global: 1.0,
    };
    let err = em.activation(&mut g, &x, act, scheme, DType::F32).unwrap_err();
    assert!(
        err.to_string().contains("MatMulNBits quantizes activations itself"),
        "{err}"
    );
}
