//! The codec export writes the files it reports, with the documented graph I/O,
//! standard-domain operators only, f16 matrices at Fp16, and refuses Fp8/Fp4.

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::CodecConfig;
use heart::precision::Precision;
use onnx_export::codec::{self, estimator, scalar_decoder};
use onnx_export::proto::tensor_shape_proto::dimension::Value as DimValue;
use onnx_export::proto::{ModelProto, ValueInfoProto, tensor_proto::DataType};
use prost::Message;

const FIXTURE_CODEC: &str = "/work/shared/fixtures/tiny-a/heartcodec";

fn load() -> (Checkpoint, CodecConfig) {
    let dir = Path::new(FIXTURE_CODEC);
    (
        Checkpoint::open(dir).unwrap(),
        CodecConfig::from_file(&dir.join("config.json")).unwrap(),
    )
}

fn model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// `(name, elem_type, dims)` with symbolic dims as their names.
fn io(v: &ValueInfoProto) -> (String, i32, Vec<String>) {
    let Some(onnx_export::proto::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{v:?} is not a tensor");
    };
    let dims = t
        .shape
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.clone().unwrap() {
            DimValue::DimValue(n) => n.to_string(),
            DimValue::DimParam(s) => s,
        })
        .collect();
    (v.name.clone().unwrap(), t.elem_type.unwrap(), dims)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn fp32_export_writes_graphs_tables_and_config() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let files = codec::export_codec(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into())
        .collect();
    for expected in [
        codec::FLOW_ESTIMATOR_FILE,
        "flow_estimator.onnx.data",
        codec::SCALAR_DECODER_FILE,
        codec::TABLES_FILE,
        codec::CODEC_CONFIG_FILE,
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for f in &files {
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().len(),
            f.bytes,
            "{}",
            f.path.display()
        );
    }
    let f32_ty = DataType::Float as i32;

    let est = model(&dir.path().join(codec::FLOW_ESTIMATOR_FILE));
    let g = est.graph.as_ref().unwrap();
    assert_eq!(
        g.input.iter().map(io).collect::<Vec<_>>(),
        vec![
            (estimator::INPUT.into(), f32_ty, strs(&["batch", "frames", "544"])),
            (estimator::TIMESTEP.into(), f32_ty, strs(&["batch"])),
        ]
    );
    assert_eq!(
        io(&g.output[0]),
        (estimator::OUTPUT.into(), f32_ty, strs(&["batch", "frames", "256"]))
    );

    let dec = model(&dir.path().join(codec::SCALAR_DECODER_FILE));
    let g = dec.graph.as_ref().unwrap();
    assert_eq!(
        io(&g.input[0]),
        (scalar_decoder::INPUT.into(), f32_ty, strs(&["n", "128", "frames"]))
    );
    assert_eq!(
        io(&g.output[0]),
        (scalar_decoder::OUTPUT.into(), f32_ty, strs(&["n", "1", "samples"]))
    );

    // Standard operators only (portable to TensorRT), default domain at opset 21.
    for m in [&est, &dec] {
        assert!(
            m.opset_import
                .iter()
                .all(|o| o.domain.as_deref().unwrap_or("").is_empty())
        );
        let g = m.graph.as_ref().unwrap();
        assert!(g.node.iter().all(|n| n.domain.as_deref().unwrap_or("").is_empty()));
    }
    // Weight norm is folded: no `original0/1` parameters survive.
    assert!(
        dec.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .all(|i| !i.name.as_deref().unwrap().contains("original"))
    );

    let cfg_back = CodecConfig::from_file(&dir.path().join(codec::CODEC_CONFIG_FILE)).unwrap();
    assert_eq!(cfg_back, cfg);
    let tables = std::fs::read(dir.path().join(codec::TABLES_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&tables).unwrap();
    for q in 0..8 {
        assert_eq!(st.tensor(&codec::table_codebook(q)).unwrap().shape(), &[64, 8]);
    }
    assert_eq!(st.tensor(codec::TABLE_PROJECT_OUT_WEIGHT).unwrap().shape(), &[32, 8]);
    assert_eq!(st.tensor(codec::TABLE_COND_WEIGHT).unwrap().shape(), &[32, 32]);
    // Codebook 3, entry 5 is the checkpoint's.
    let cb = ckpt.f32("flow_matching.vq_embed.layers.3._codebook.embed").unwrap();
    let stored: Vec<f32> = st.tensor(&codec::table_codebook(3)).unwrap().data()[5 * 32..6 * 32]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(stored, cb[5 * 8..6 * 8]);
}

#[test]
fn fp16_stores_matrices_as_half() {
    let (ckpt, cfg) = load();
    let d32 = tempfile::tempdir().unwrap();
    let d16 = tempfile::tempdir().unwrap();
    codec::export_codec(&ckpt, &cfg, Precision::Fp32, d32.path()).unwrap();
    codec::export_codec(&ckpt, &cfg, Precision::Fp16, d16.path()).unwrap();
    let est = model(&d16.path().join(codec::FLOW_ESTIMATOR_FILE));
    let inits = &est.graph.as_ref().unwrap().initializer;
    let dtype_of = |suffix: &str| {
        inits
            .iter()
            .find(|i| i.name.as_deref().unwrap().ends_with(suffix))
            .unwrap()
            .data_type
            .unwrap()
    };
    assert_eq!(
        dtype_of("transformer_blocks.0.attn.qkv.weight"),
        DataType::Float16 as i32
    );
    assert_eq!(
        dtype_of("transformer_blocks.0.attn_norm.weight"),
        DataType::Float as i32
    );
    let size = |d: &Path| std::fs::metadata(d.join("flow_estimator.onnx.data")).unwrap().len();
    assert!(
        size(d16.path()) * 10 < size(d32.path()) * 6,
        "{} vs {}",
        size(d16.path()),
        size(d32.path())
    );
}

#[test]
fn quantized_codec_precisions_are_refused() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    for p in [Precision::Fp8, Precision::Fp4] {
        let err = codec::export_codec(&ckpt, &cfg, p, dir.path()).unwrap_err();
        assert!(err.to_string().contains(&format!("HeartCodec at {p}")), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn mismatched_checkpoint_shapes_are_named() {
    let (ckpt, mut cfg) = load();
    cfg.num_layers_2 = 2;
    let dir = tempfile::tempdir().unwrap();
    let err = codec::export_codec(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap_err();
    assert!(err.to_string().contains("transformer_blocks_2.1"), "{err}");
    cfg.num_layers_2 = 1;
    cfg.attention_head_dim = 8;
    let err = codec::export_codec(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap_err();
    assert!(err.to_string().contains("proj_in.ffn_1.weight"), "{err}");
}
