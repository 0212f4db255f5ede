//! LM export on the tiny-a fixture checkpoint: files, graph I/O names and shapes,
//! table contents, precision handling and the RoPE frequency rule.

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::{FlavorParams, MulaConfig};
use heart::engine;
use heart::precision::Precision;
use onnx_export::proto::{ModelProto, ValueInfoProto, tensor_shape_proto::dimension, type_proto};
use prost::Message;

fn load() -> (Checkpoint, MulaConfig) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartmula");
    let dir = dir.as_path();
    (
        Checkpoint::open(dir).unwrap(),
        MulaConfig::from_file(&dir.join("config.json")).unwrap(),
    )
}

fn dims(v: &ValueInfoProto) -> (i32, Vec<String>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone()) else {
        panic!("not a tensor")
    };
    let d = t
        .shape
        .unwrap()
        .dim
        .into_iter()
        .map(|d| match d.value.unwrap() {
            dimension::Value::DimValue(n) => n.to_string(),
            dimension::Value::DimParam(s) => s,
        })
        .collect();
    (t.elem_type.unwrap(), d)
}

/// (name, ONNX element type, dims) of each graph input or output.
type Io = Vec<(String, i32, Vec<String>)>;

fn io(path: &Path) -> (Io, Io) {
    let m = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    assert_eq!(m.ir_version, Some(10));
    let g = m.graph.unwrap();
    let f = |v: &ValueInfoProto| {
        let (t, d) = dims(v);
        (v.name.clone().unwrap(), t, d)
    };
    (g.input.iter().map(f).collect(), g.output.iter().map(f).collect())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn exports_graphs_with_documented_io() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let files = onnx_export::lm::export_lm(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        s(&[
            "backbone.onnx",
            "backbone.onnx.data",
            "decoder.onnx",
            "decoder.onnx.data",
            engine::LM_TABLES
        ])
    );
    for f in &files {
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().len(),
            f.bytes,
            "{}",
            f.path.display()
        );
    }

    const F32: i32 = 1;
    const I64: i32 = 7;
    let (inputs, outputs) = io(&dir.path().join(engine::BACKBONE_GRAPH));
    assert_eq!(inputs.len(), 3 + 2 * 3);
    assert_eq!(inputs[0], ("embeds".into(), F32, s(&["batch", "seq", "64"])));
    assert_eq!(inputs[1], ("positions".into(), I64, s(&["seq"])));
    assert_eq!(inputs[2], ("attn_bias".into(), F32, s(&["seq", "total"])));
    assert_eq!(
        inputs[3],
        ("past_key_0".into(), F32, s(&["batch", "2", "16", "capacity"]))
    );
    assert_eq!(
        inputs[8],
        ("past_value_2".into(), F32, s(&["batch", "2", "capacity", "16"]))
    );
    assert_eq!(outputs[0], ("hidden".into(), F32, s(&["batch", "64"])));
    assert_eq!(outputs[1], ("c0_logits".into(), F32, s(&["batch", "69"])));
    assert_eq!(outputs[2], ("new_key_0".into(), F32, s(&["batch", "2", "16", "seq"])));
    assert_eq!(outputs[7], ("new_value_2".into(), F32, s(&["batch", "2", "seq", "16"])));
    assert_eq!(outputs[8], ("hidden_all".into(), F32, s(&["batch", "seq", "64"])));
    assert_eq!(outputs[9], ("c0_logits_all".into(), F32, s(&["batch", "seq", "69"])));
    assert_eq!(outputs.len(), 10);

    let (inputs, outputs) = io(&dir.path().join(engine::DECODER_GRAPH));
    assert_eq!(inputs.len(), 4 + 2 * 2);
    assert_eq!(inputs[0], ("embeds".into(), F32, s(&["batch", "seq", "64"])));
    assert_eq!(inputs[1], ("codebook".into(), I64, vec![]));
    assert_eq!(
        inputs[4],
        ("past_key_0".into(), F32, s(&["batch", "2", "12", "capacity"]))
    );
    assert_eq!(outputs[0], ("logits".into(), F32, s(&["batch", "69"])));
    let m = ModelProto::decode(
        std::fs::read(dir.path().join(engine::DECODER_GRAPH))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let g = m.graph.unwrap();
    for i in 0..7 {
        let name = format!("audio_head.{i}");
        let head = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name.as_str()))
            .unwrap();
        assert_eq!(
            head.dims,
            [48, 69],
            "{name}: one [Dd, V] head per codebook, selected by If"
        );
    }
    assert_eq!(outputs[5], ("logits_all".into(), F32, s(&["batch", "codebooks", "69"])));
    assert_eq!(outputs.len(), 1 + 2 * 2 + 1);
}

#[test]
fn fp16_caches_are_f16() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    onnx_export::lm::export_lm(&ckpt, &cfg, Precision::Fp16, dir.path()).unwrap();
    let (inputs, outputs) = io(&dir.path().join(engine::BACKBONE_GRAPH));
    const F16: i32 = 10;
    assert_eq!(inputs[0].1, 1, "embeds stay f32");
    assert_eq!(inputs[3].1, F16);
    assert_eq!(outputs[1].1, 1, "logits stay f32");
    assert_eq!(outputs[2].1, F16);
}

#[test]
fn tables_hold_the_checkpoint_rows_as_f32() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(engine::LM_TABLES);
    onnx_export::lm::export_tables(&ckpt, &cfg, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, src, shape) in [
        (engine::tables::TEXT_EMBEDDINGS, "text_embeddings.weight", vec![352, 64]),
        (
            engine::tables::AUDIO_EMBEDDINGS,
            "audio_embeddings.weight",
            vec![69 * 8, 64],
        ),
        (
            engine::tables::UNCONDITIONAL_TEXT_EMBEDDING,
            "unconditional_text_embedding.weight",
            vec![1, 64],
        ),
        (engine::tables::MUQ_BIAS, "muq_linear.bias", vec![64]),
    ] {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(t.shape(), shape.as_slice());
        assert_eq!(t.data(), ckpt.tensor(src).unwrap().data, "{name}");
    }
}

#[test]
fn missing_tensor_names_the_tensor() {
    let (ckpt, mut cfg) = load();
    cfg.backbone.num_layers += 1;
    let dir = tempfile::tempdir().unwrap();
    let err = onnx_export::lm::export_lm(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap_err();
    assert!(err.to_string().contains("backbone.layers.3.sa_norm.scale"), "{err}");
}

#[test]
fn llama3_rope_scaling_splits_frequencies_as_the_spec_says() {
    // Spec §2.4: hd=128 keeps 29, divides 29, smooths 6; hd=384: 85/87/20.
    for (name, kept, divided) in [("llama-3B", 29, 29), ("llama-300M", 85, 87)] {
        let p = FlavorParams::builtin(name).unwrap();
        let hd = p.head_dim();
        let base: Vec<f32> = (0..hd / 2)
            .map(|j| 1.0 / 500_000f32.powf((2 * j) as f32 / hd as f32))
            .collect();
        let scaled = onnx_export::blocks::rope_freqs(&p);
        let k = base.iter().zip(&scaled).filter(|(b, s)| b == s).count();
        let d = base.iter().zip(&scaled).filter(|(b, s)| **s == **b / 32.0).count();
        assert_eq!((k, d), (kept, divided), "{name}");
    }
    let p = FlavorParams::builtin("llama-3B").unwrap();
    let (cos, sin) = onnx_export::blocks::rope_tables(&FlavorParams { max_seq_len: 3, ..p });
    assert_eq!(cos.len(), 3 * 64);
    assert_eq!((cos[0], sin[0]), (1.0, 0.0));
    assert!((cos[64] - 1f32.cos()).abs() < 1e-7 && (sin[64] - 1f32.sin()).abs() < 1e-7);
}
