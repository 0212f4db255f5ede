//! The exported LM graphs load in ONNX Runtime with the documented input and
//! output names, element types and shapes (`heart::engine::io`), at fp32 and fp16.

use heart::engine::{self, io};
use heart::precision::Precision;
use heart_backend::SessionConfig;
use ort::value::{TensorElementType, ValueType};

/// (name, element type, shape with -1 for symbolic dims).
fn signature(outlets: &[ort::value::Outlet]) -> Vec<(String, TensorElementType, Vec<i64>)> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => (o.name().to_string(), *ty, shape.to_vec()),
            other => panic!("{} is {other:?}", o.name()),
        })
        .collect()
}

fn check(precision: Precision, cache: TensorElementType) {
    use TensorElementType::{Float32 as F32, Int64 as I64};
    let rt = heart_backend::init(None).unwrap();
    let dir = heart_test_support::lm_engine(precision);
    let (cfg, _) = heart_test_support::mula_configs();
    let v = cfg.audio_vocab_size as i64;
    let (d, dd) = (cfg.backbone.embed_dim as i64, cfg.decoder.embed_dim as i64);
    assert_ne!(
        d, dd,
        "tiny-a has different backbone/decoder widths; the test relies on it"
    );

    let s = rt
        .open_session(&dir.join(engine::BACKBONE_GRAPH), &SessionConfig::default())
        .unwrap();
    let (inputs, outputs) = (signature(s.inputs()), signature(s.outputs()));
    let (kv, hd) = (cfg.backbone.num_kv_heads as i64, cfg.backbone.head_dim() as i64);
    assert_eq!(inputs.len(), 3 + 2 * cfg.backbone.num_layers);
    assert_eq!(inputs[0], (io::EMBEDS.into(), F32, vec![-1, -1, d]));
    assert_eq!(inputs[1], (io::POSITIONS.into(), I64, vec![-1]));
    assert_eq!(inputs[2], (io::ATTN_BIAS.into(), F32, vec![-1, -1]));
    assert_eq!(inputs[3], (io::past_key(0), cache, vec![-1, kv, hd, -1]));
    assert_eq!(inputs[4], (io::past_value(0), cache, vec![-1, kv, -1, hd]));
    assert_eq!(outputs[0], (io::HIDDEN.into(), F32, vec![-1, d]));
    assert_eq!(outputs[1], (io::C0_LOGITS.into(), F32, vec![-1, v]));
    assert_eq!(outputs[2], (io::new_key(0), cache, vec![-1, kv, hd, -1]));
    assert_eq!(outputs[3], (io::new_value(0), cache, vec![-1, kv, -1, hd]));
    let n = 2 + 2 * cfg.backbone.num_layers;
    assert_eq!(outputs[n], (io::HIDDEN_ALL.into(), F32, vec![-1, -1, d]));
    assert_eq!(outputs[n + 1], (io::C0_LOGITS_ALL.into(), F32, vec![-1, -1, v]));
    assert_eq!(outputs.len(), n + 2);

    let s = rt
        .open_session(&dir.join(engine::DECODER_GRAPH), &SessionConfig::default())
        .unwrap();
    let (inputs, outputs) = (signature(s.inputs()), signature(s.outputs()));
    let (kv, hd) = (cfg.decoder.num_kv_heads as i64, cfg.decoder.head_dim() as i64);
    assert_eq!(inputs.len(), 4 + 2 * cfg.decoder.num_layers);
    assert_eq!(
        inputs[0],
        (io::EMBEDS.into(), F32, vec![-1, -1, d]),
        "decoder takes backbone-width embeddings"
    );
    assert_eq!(inputs[1], (io::CODEBOOK.into(), I64, vec![]));
    assert_eq!(inputs[4], (io::past_key(0), cache, vec![-1, kv, hd, -1]));
    assert_eq!(outputs[0], (io::LOGITS.into(), F32, vec![-1, v]));
    assert_eq!(outputs[1], (io::new_key(0), cache, vec![-1, kv, hd, -1]));
    let n = 1 + 2 * cfg.decoder.num_layers;
    assert_eq!(outputs[n], (io::LOGITS_ALL.into(), F32, vec![-1, -1, v]));
    assert_eq!(outputs.len(), n + 1);
}

#[test]
fn fp32_graphs_load_with_documented_io() {
    check(Precision::Fp32, TensorElementType::Float32);
}

#[test]
fn fp16_graphs_load_with_f16_caches() {
    check(Precision::Fp16, TensorElementType::Float16);
}

#[test]
fn missing_graph_is_an_error_naming_the_file() {
    let rt = heart_backend::init(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, gen_cfg) = heart_test_support::mula_configs();
    let err =
        heart_runtime::lm::HeartMula::open(&rt, dir.path(), &cfg, &gen_cfg, &SessionConfig::default()).unwrap_err();
    assert!(err.to_string().contains("backbone.onnx"), "{err}");
}
