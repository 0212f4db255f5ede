//! int8 / int4 LM export on the tiny-a fixture: every linear of the quantized
//! groups becomes one node (no dense copy, heads dense): `MatMulNBits`, or
//! heart's `MatMulInt4x16` for int4 at level 4 (the default); at accuracy
//! level 0 the backbone and decoder outputs equal those of
//! a dense fp32 export of the checkpoint with those weights replaced by the
//! reference quantizer's dequantization (f32 rounding apart), with and without
//! the heads (`codebook0_head`, and `audio_head` in the decoder's `If`
//! per-codebook and whole-frame, with either int4 kernel); at level 4 (the
//! default) they stay close to fp32.

use heart_test_support::lm_graphs as lm_support;
use heart_test_support::ort_graphs as quant_support;

use std::collections::BTreeMap;
use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::MulaConfig;
use heart::engine::{self, io};
use heart::precision::Precision;
use heart::profile::Int4Kernel;
use heart::quant::blockwise::{IntBits, quantize_blockwise};
use lm_support::{FRAME_ROWS, OUTPUTS, outputs, relative_max_diff, run_stack};
use onnx_export::linears::Lowering;
use onnx_export::lm::{self, DEFAULT_QUANTIZED, GraphForm, LinearGroup, LmOptions, QuantFormat, QuantPlan};
use onnx_export::proto::ModelProto;
use onnx_export::quant::{Accuracy, NBits};
use prost::Message;
use quant_support::transpose;
use safetensors::tensor::{Dtype, TensorView};

use heart_test_support::fixture_mula as fixture;

fn load() -> (Checkpoint, MulaConfig) {
    let dir = fixture();
    (
        Checkpoint::open(&dir).unwrap(),
        MulaConfig::from_file(&dir.join("config.json")).unwrap(),
    )
}

fn int_options(bits: IntBits, accuracy: Accuracy, groups: &[LinearGroup]) -> LmOptions {
    kernel_options(bits, accuracy, Int4Kernel::Onnxruntime, groups)
}

fn kernel_options(bits: IntBits, accuracy: Accuracy, int4_kernel: Int4Kernel, groups: &[LinearGroup]) -> LmOptions {
    LmOptions {
        numerics: lm::numerics(Precision::Fp32),
        quant: Some(QuantPlan {
            weights: QuantFormat::Int(NBits {
                bits,
                accuracy,
                int4_kernel,
            }),
            lowering: Lowering::Portable,
            groups: groups.iter().copied().collect(),
            activations: None,
        }),
        probes: Default::default(),
        layer_taps: false,
        form: GraphForm::Cpu,
    }
}

/// Whether checkpoint tensor `name` is a linear weight of [`DEFAULT_QUANTIZED`].
fn quantized_by_default(name: &str) -> bool {
    name == "projection.weight" || (name.ends_with(".weight") && (name.contains(".attn.") || name.contains(".mlp.")))
}

/// The reference dequantization of checkpoint tensor `t` at `bits`: a linear
/// `[out, in]`, or the stacked `audio_head` `[heads, in, out]` head by head.
fn dequantize(t: &heart::checkpoint::TensorRef<'_>, bits: IntBits) -> Vec<f32> {
    let v = t.to_f32().unwrap();
    match *t.shape {
        [out, inp] => quantize_blockwise(&v, out, inp, bits).unwrap().dequantize(),
        [_, inp, out] => v
            .chunks(inp * out)
            .flat_map(|head| {
                let out_in = transpose(head, inp, out);
                let deq = quantize_blockwise(&out_in, out, inp, bits).unwrap().dequantize();
                transpose(&deq, out, inp)
            })
            .collect(),
        _ => panic!("{}: not a linear", t.name),
    }
}

/// Writes a copy of `ckpt` into `dir` with every default-quantized linear (and
/// with `heads`, both heads) replaced by its reference dequantization at `bits`.
fn dequantized_checkpoint(ckpt: &Checkpoint, bits: IntBits, heads: bool, dir: &Path) -> Checkpoint {
    let mut data: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut replaced = 0;
    for name in ckpt.names() {
        let t = ckpt.tensor(name).unwrap();
        let is_head = matches!(name, "codebook0_head.weight" | "audio_head");
        let v = if quantized_by_default(name) || (heads && is_head) {
            replaced += 1;
            dequantize(&t, bits)
        } else {
            t.to_f32().unwrap()
        };
        data.insert(name.to_string(), (t.shape.to_vec(), bytemuck::cast_slice(&v).to_vec()));
    }
    let linears = 7 * (3 + 2) + 1 + if heads { 2 } else { 0 };
    assert_eq!(replaced, linears, "both stacks, the projection (and the heads)");
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, (shape, bytes))| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    Checkpoint::open(dir).unwrap()
}

fn export(ckpt: &Checkpoint, cfg: &MulaConfig, opts: &LmOptions, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    lm::export_lm_with(ckpt, cfg, opts, dir).unwrap();
}

#[test]
fn level_0_equals_a_dense_export_of_the_dequantized_checkpoint() {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    let fp32 = root.path().join("fp32");
    export(&ckpt, &cfg, &LmOptions::for_precision(Precision::Fp32), &fp32);
    let exact = outputs(&fp32, &cfg);
    let mut with_heads = DEFAULT_QUANTIZED.to_vec();
    with_heads.extend([LinearGroup::Codebook0Head, LinearGroup::AudioHead]);
    for (bits, heads) in [(IntBits::Int4, false), (IntBits::Int8, false), (IntBits::Int4, true)] {
        let name = format!("{bits:?}{}", if heads { "-heads" } else { "" });
        let dir = root.path().join(&name);
        let ckpt_dir = dir.join("ckpt");
        std::fs::create_dir_all(&ckpt_dir).unwrap();
        let deq = dequantized_checkpoint(&ckpt, bits, heads, &ckpt_dir);
        let dense = dir.join("dense");
        export(&deq, &cfg, &LmOptions::for_precision(Precision::Fp32), &dense);
        let int = dir.join("nbits");
        let groups = if heads { &with_heads[..] } else { &DEFAULT_QUANTIZED[..] };
        export(&ckpt, &cfg, &int_options(bits, Accuracy::Float, groups), &int);
        let (want, got) = (outputs(&dense, &cfg), outputs(&int, &cfg));
        for (i, what) in OUTPUTS.iter().enumerate() {
            let diff = relative_max_diff(&got[i], &want[i]);
            let quant = relative_max_diff(&got[i], &exact[i]);
            println!("{name} level 0 {what}: vs dequantized dense {diff:.2e}; vs fp32 {quant:.2e}");
            assert!(diff < 2e-5, "{name} {what}: {diff:e} from the dense reference");
            assert!(
                quant > 10.0 * diff,
                "{name} {what}: the weights must really be quantized"
            );
        }
    }
}

#[test]
fn default_int_engines_are_one_node_per_linear_at_level_4() {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    let fp32 = root.path().join("fp32");
    std::fs::create_dir(&fp32).unwrap();
    lm::export_lm(&ckpt, &cfg, Precision::Fp32, &fp32).unwrap();
    let reference = outputs(&fp32, &cfg);
    // int8 runs ONNX Runtime's MatMulNBits at level 4, int4 heart's own
    // kernel (the same int8 activation blocks).
    for (precision, op, part) in [
        (Precision::Int8, "MatMulNBits", "nbits_b"),
        (Precision::Int4, "MatMulInt4x16", "int4x16_packed"),
    ] {
        let out = root.path().join(precision.as_str());
        std::fs::create_dir(&out).unwrap();
        lm::export_lm(&ckpt, &cfg, precision, &out).unwrap();
        for (graph, layers, extra) in [
            (engine::BACKBONE_GRAPH, cfg.backbone.num_layers, 0),
            (engine::DECODER_GRAPH, cfg.decoder.num_layers, 1),
        ] {
            let m = ModelProto::decode(std::fs::read(out.join(graph)).unwrap().as_slice()).unwrap();
            let g = m.graph.unwrap();
            let nodes: Vec<_> = g.node.iter().filter(|n| n.op_type.as_deref() == Some(op)).collect();
            assert_eq!(nodes.len(), 7 * layers + extra, "{precision} {graph}");
            for n in &nodes {
                let level = n.attribute.iter().find(|a| a.name.as_deref() == Some("accuracy_level"));
                if op == "MatMulNBits" {
                    assert_eq!(level.and_then(|a| a.i), Some(4), "{precision} {graph}");
                } else {
                    assert_eq!(n.domain.as_deref(), Some("ai.heart"), "{precision} {graph}");
                }
            }
            let names: Vec<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
            let stack = graph.trim_end_matches(".onnx");
            let q = format!("{stack}.layers.0.attn.q_proj.weight");
            assert!(names.contains(&format!("{q}.{part}").as_str()), "{precision} {graph}");
            assert!(!names.contains(&q.as_str()), "{precision} {graph}: no dense {q}");
            let head = if stack == "backbone" {
                "codebook0_head.weight"
            } else {
                "audio_head.0"
            };
            assert!(names.contains(&head), "{precision} {graph}: {head} stays dense");
        }
        let got = outputs(&out, &cfg);
        for (i, what) in OUTPUTS.iter().enumerate() {
            let diff = relative_max_diff(&got[i], &reference[i]);
            println!("{precision} (level 4) {what}: max |diff| / max |fp32| = {diff:.3}");
            assert!(got[i].iter().all(|v| v.is_finite()));
            assert!(diff > 0.0 && diff < 0.5, "{precision} {what}: {diff}");
        }
    }
}

#[test]
fn quantized_heads_are_one_node_each() {
    for (kernel, op, part) in [
        (Int4Kernel::Onnxruntime, "MatMulNBits", "nbits_b"),
        (Int4Kernel::Heart, "MatMulInt4x16", "int4x16_packed"),
    ] {
        heads_are_one_node_each(kernel, op, part);
    }
}

fn heads_are_one_node_each(kernel: Int4Kernel, op: &str, part: &str) {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    let heads = [LinearGroup::Codebook0Head, LinearGroup::AudioHead];
    let opts = kernel_options(IntBits::Int4, Accuracy::Int8, kernel, &heads);
    lm::export_backbone(&ckpt, &cfg, &opts, &root.path().join("b.onnx")).unwrap();
    let m = ModelProto::decode(std::fs::read(root.path().join("b.onnx")).unwrap().as_slice()).unwrap();
    let g = m.graph.unwrap();
    let head: Vec<_> = g.node.iter().filter(|n| n.op_type.as_deref() == Some(op)).collect();
    assert_eq!(head.len(), 1);
    let n = head[0]
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some("N"))
        .unwrap();
    assert_eq!(n.i, Some(cfg.audio_vocab_size as i64), "odd N is fine");

    lm::export_decoder(&ckpt, &cfg, &opts, &root.path().join("d.onnx")).unwrap();
    let m = ModelProto::decode(std::fs::read(root.path().join("d.onnx")).unwrap().as_slice()).unwrap();
    let g = m.graph.unwrap();
    let count = cfg.audio_num_codebooks - 1;
    let names: Vec<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    for i in 0..count {
        assert!(names.contains(&format!("audio_head.{i}.{part}").as_str()), "head {i}");
        assert!(
            !names.contains(&format!("audio_head.{i}").as_str()),
            "no dense head {i}"
        );
    }
    // Exactly one node reads each head (ONNX Runtime prepacks an initializer
    // once per node that reads it), none of them inside an `If`.
    assert!(g.node.iter().all(|n| n.op_type.as_deref() != Some("If")), "no If");
    for i in 0..count {
        let packed = format!("audio_head.{i}.{part}");
        let readers: Vec<_> = g.node.iter().filter(|n| n.input.contains(&packed)).collect();
        assert_eq!(readers.len(), 1, "{packed} is read by {} nodes", readers.len());
        assert_eq!(readers[0].op_type.as_deref(), Some(op));
    }
    let nbits = g.node.iter().filter(|n| n.op_type.as_deref() == Some(op));
    assert_eq!(nbits.count(), count, "only the heads are quantized here");
    let dense = g.node.iter().filter(|n| n.op_type.as_deref() == Some("MatMul"));
    assert!(
        dense.flat_map(|n| &n.input).all(|i| !i.starts_with("audio_head")),
        "no dense head product"
    );

    // Each codebook's call picks its own head: its last row's logits are the
    // whole-frame call's row for that codebook (same causal prefix).
    let path = root.path().join("d.onnx");
    let width = cfg.backbone.embed_dim;
    let all = run_stack(&path, &cfg.decoder, width, (FRAME_ROWS, 1), &[io::LOGITS_ALL]).remove(0);
    let v = cfg.audio_vocab_size;
    for k in 1..=count {
        let one = run_stack(&path, &cfg.decoder, width, (k + 1, k as i64), &[io::LOGITS]).remove(0);
        let row = &all[(k - 1) * v..k * v];
        let diff = relative_max_diff(&one, row);
        assert!(diff < 1e-5, "codebook {k}: {diff:e} from logits_all row {}", k - 1);
        if k > 1 {
            let other = &all[(k - 2) * v..(k - 1) * v];
            assert!(
                relative_max_diff(&one, other) > 1e-3,
                "codebook {k} is not head {}",
                k - 2
            );
        }
    }
}
