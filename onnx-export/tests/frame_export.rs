//! The frame graph export on the tiny-a fixture: its inputs and outputs, one
//! copy of every weight although the decoder runs 7 times, the decoder's
//! audio table, and standard ONNX operators only at fp32 / fp16 (so TensorRT
//! can build it); int4 keeps the per-step graphs' products (heart's
//! `MatMulInt4x16`).

use std::collections::BTreeSet;

use heart::checkpoint::Checkpoint;
use heart::config::MulaConfig;
use heart::engine::{FRAME_GRAPH, frame_io, io};
use heart::precision::Precision;
use heart_test_support::fixture_mula;
use onnx_export::frame::export_frame;
use onnx_export::lm::LmOptions;
use onnx_export::proto::{GraphProto, ModelProto};
use prost::Message;

fn export(precision: Precision) -> (GraphProto, MulaConfig, tempfile::TempDir) {
    let dir = fixture_mula();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let cfg = MulaConfig::from_file(&dir.join("config.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join(FRAME_GRAPH);
    let files = export_frame(&ckpt, &cfg, &LmOptions::for_precision(precision), &path).unwrap();
    assert_eq!(files.len(), 2, "the graph and its data file");
    let m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    (m.graph.unwrap(), cfg, out)
}

fn names<'a>(v: impl IntoIterator<Item = &'a Option<String>>) -> Vec<String> {
    v.into_iter().map(|n| n.clone().unwrap()).collect()
}

#[test]
fn frame_graph_io_is_the_backbone_step_plus_sampling() {
    let (g, cfg, _dir) = export(Precision::Fp32);
    let layers = cfg.backbone.num_layers;
    let mut inputs = vec![io::EMBEDS.to_string(), io::POSITIONS.into(), io::ATTN_BIAS.into()];
    for i in 0..layers {
        inputs.extend([io::past_key(i), io::past_value(i)]);
    }
    inputs.extend(
        [
            frame_io::NOISE,
            frame_io::TEMPERATURE,
            frame_io::TOP_K,
            frame_io::CFG_SCALE,
        ]
        .map(String::from),
    );
    assert_eq!(names(g.input.iter().map(|v| &v.name)), inputs);
    let mut outputs = vec![frame_io::CODES.to_string()];
    for i in 0..layers {
        outputs.extend([io::new_key(i), io::new_value(i)]);
    }
    assert_eq!(names(g.output.iter().map(|v| &v.name)), outputs);
}

#[test]
fn weights_are_stored_once_and_the_table_holds_the_decoder_codebooks() {
    let (g, cfg, _dir) = export(Precision::Fp32);
    let inits = names(g.initializer.iter().map(|t| &t.name));
    let unique: BTreeSet<&String> = inits.iter().collect();
    assert_eq!(unique.len(), inits.len(), "no initializer twice");
    for w in [
        "decoder.layers.0.attn.q_proj.weight",
        "decoder.layers.0.sa_norm.scale",
        "decoder.norm.scale",
        "projection.weight",
    ] {
        assert_eq!(inits.iter().filter(|n| *n == w).count(), 1, "{w}");
    }
    let q_proj = g
        .node
        .iter()
        .filter(|n| {
            n.op_type.as_deref() == Some("MatMul") && n.input.iter().any(|i| i == "decoder.layers.0.attn.q_proj.weight")
        })
        .count();
    assert_eq!(q_proj, cfg.audio_num_codebooks - 1, "one product per decoder step");
    let table = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("decoder.audio_embeddings"))
        .unwrap();
    let (n, v, d) = (cfg.audio_num_codebooks, cfg.audio_vocab_size, cfg.backbone.embed_dim);
    assert_eq!(table.dims, vec![((n - 1) * v) as i64, d as i64]);
}

#[test]
fn dense_frame_graphs_use_standard_operators_only() {
    for precision in [Precision::Fp32, Precision::Fp16] {
        let (g, _, _dir) = export(precision);
        let foreign: Vec<_> = g
            .node
            .iter()
            .filter(|n| n.domain.as_deref().is_some_and(|d| !d.is_empty()))
            .map(|n| n.op_type.clone().unwrap())
            .collect();
        assert!(foreign.is_empty(), "{precision}: {foreign:?}");
        let ops: BTreeSet<_> = g.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        for op in ["TopK", "ReduceMin", "ArgMax", "Gather", "Expand"] {
            assert!(ops.contains(op), "{precision}: no {op}");
        }
        assert!(
            !ops.contains("If") && !ops.contains("Loop"),
            "{precision}: no control flow"
        );
    }
    let (g, cfg, _dir) = export(Precision::Int4);
    let int4 = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulInt4x16"))
        .count();
    assert!(
        int4 > cfg.audio_num_codebooks,
        "int4 products run heart's int4 kernel ({int4})"
    );
}
