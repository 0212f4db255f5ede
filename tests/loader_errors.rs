//! Every way a checkpoint can be broken yields an error that names the file, the
//! tensor or field, and what was expected. Each test breaks a copy of the tiny
//! fixture in one way and asserts the message.

mod common;

use std::path::Path;

use common::{Scratch, Stored};
use heart::Error;
use heart::layout::{CodecCheckpoint, MulaCheckpoint, MulaPaths};
use safetensors::Dtype;

fn open_mula(dir: &Path) -> Result<MulaCheckpoint, Error> {
    MulaCheckpoint::discover_and_open(dir, None, None)
}

/// The error message, asserting it mentions every fragment.
fn assert_err(result: Result<impl std::fmt::Debug, Error>, fragments: &[&str]) -> Error {
    let err = result.expect_err("expected a loader error");
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
    }
    err
}

#[test]
fn missing_config_json() {
    let s = Scratch::new();
    std::fs::remove_file(s.mula().join("config.json")).unwrap();
    let err = assert_err(
        open_mula(&s.mula()),
        &["heartmula", "no `config.json`", "HeartMuLa config"],
    );
    assert!(matches!(err, Error::Layout { .. }));
}

#[test]
fn missing_weights() {
    let s = Scratch::new();
    std::fs::remove_file(s.codec().join("model.safetensors")).unwrap();
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &["heartcodec", "no HeartCodec weights", "model.safetensors.index.json"],
    );
}

#[test]
fn malformed_config_field_is_quoted() {
    let s = Scratch::new();
    let cfg = s.mula().join("config.json");
    s.edit_json(&cfg, |v| v["text_vocab_size"] = "many".into());
    let err = assert_err(
        open_mula(&s.mula()),
        &[
            "config.json",
            "invalid type: string \"many\"",
            "\"text_vocab_size\": \"many\"",
        ],
    );
    assert!(matches!(err, Error::Config { .. }));
}

#[test]
fn missing_config_field_is_named() {
    let s = Scratch::new();
    let cfg = s.codec().join("config.json");
    s.edit_json(&cfg, |v| {
        v.as_object_mut().unwrap().remove("init_channel");
    });
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &["config.json", "missing field `init_channel`"],
    );
}

#[test]
fn unknown_flavor() {
    let s = Scratch::new();
    let cfg = s.mula().join("config.json");
    s.edit_json(&cfg, |v| v["decoder_flavor"] = "llama-1B".into());
    assert_err(
        open_mula(&s.mula()),
        &["config.json", "decoder_flavor `llama-1B` is unknown", "tiny_flavors"],
    );
}

#[test]
fn inconsistent_codec_config() {
    let s = Scratch::new();
    let cfg = s.codec().join("config.json");
    s.edit_json(&cfg, |v| v["in_channels"] = 512.into());
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &["config.json", "in_channels 512 must equal"],
    );
}

#[test]
fn missing_tensor() {
    let s = Scratch::new();
    s.edit_weights(&s.mula(), |t| {
        t.remove("backbone.layers.1.mlp.w2.weight");
    });
    let err = assert_err(
        open_mula(&s.mula()),
        &[
            "model.safetensors",
            "`backbone.layers.1.mlp.w2.weight`",
            "missing (expected shape [64, 160])",
        ],
    );
    assert!(matches!(err, Error::Tensor { .. }));
}

#[test]
fn unexpected_tensor() {
    let s = Scratch::new();
    s.edit_weights(&s.mula(), |t| {
        t.insert("backbone.layers.3.sa_norm.scale".into(), Stored::zeros_f32(&[64]));
    });
    assert_err(
        open_mula(&s.mula()),
        &[
            "model.safetensors",
            "`backbone.layers.3.sa_norm.scale`",
            "unexpected tensor",
            "HeartMuLa",
        ],
    );
}

#[test]
fn wrong_shape_counts_further_problems() {
    let s = Scratch::new();
    s.edit_weights(&s.mula(), |t| {
        t.insert("text_embeddings.weight".into(), Stored::zeros_f32(&[351, 64]));
        t.insert("projection.weight".into(), Stored::zeros_f32(&[64, 64]));
    });
    assert_err(
        open_mula(&s.mula()),
        &[
            "`text_embeddings.weight`",
            "shape [351, 64], expected [352, 64]",
            "1 more tensor problem",
        ],
    );
}

#[test]
fn wrong_dtype() {
    let s = Scratch::new();
    s.edit_weights(&s.mula(), |t| {
        let bias = t.get_mut("muq_linear.bias").unwrap();
        bias.dtype = Dtype::I32;
    });
    assert_err(
        open_mula(&s.mula()),
        &[
            "`muq_linear.bias`",
            "dtype I32, expected a float dtype (F32, F16 or BF16)",
        ],
    );
}

#[test]
fn half_precision_weights_are_accepted() {
    let s = Scratch::new();
    s.edit_weights(&s.mula(), |t| {
        for stored in t.values_mut() {
            let floats: Vec<f32> = bytemuck_f32(&stored.data);
            stored.dtype = Dtype::BF16;
            stored.data = floats
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect();
        }
    });
    let ckpt = open_mula(&s.mula()).unwrap();
    let original = heart::checkpoint::Checkpoint::open(&common::fixture().join("heartmula")).unwrap();
    let a = ckpt.checkpoint.f32("muq_linear.bias").unwrap();
    let b = original.f32("muq_linear.bias").unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= y.abs() / 128.0));
}

fn bytemuck_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::new();
    let path = s.mula().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 100).unwrap();
    let err = assert_err(
        open_mula(&s.mula()),
        &["model.safetensors", "not a valid safetensors file", "truncated"],
    );
    assert!(matches!(err, Error::Safetensors { .. }));
}

#[test]
fn truncated_header() {
    let s = Scratch::new();
    std::fs::write(s.codec().join("model.safetensors"), [1u8, 2, 3]).unwrap();
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &["model.safetensors", "truncated"],
    );
}

#[test]
fn index_pointing_at_missing_shard() {
    let s = Scratch::new();
    let dir = s.mula();
    std::fs::rename(
        dir.join("model.safetensors"),
        dir.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let names = common::read_tensors(&dir.join("model-00001-of-00002.safetensors"));
    let mut map = serde_json::Map::new();
    for (i, name) in names.keys().enumerate() {
        let shard = if i == 0 { 2 } else { 1 };
        map.insert(name.clone(), format!("model-0000{shard}-of-00002.safetensors").into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_err(
        open_mula(&dir),
        &[
            "model.safetensors.index.json",
            "`model-00002-of-00002.safetensors`",
            "does not exist",
        ],
    );
}

#[test]
fn missing_tokenizer() {
    let s = Scratch::new();
    std::fs::remove_file(s.mula().join("tokenizer.json")).unwrap();
    let err = assert_err(
        open_mula(&s.mula()),
        &["heartmula", "no `tokenizer.json` in this folder or its parent"],
    );
    assert!(matches!(err, Error::Layout { .. }));
}

#[test]
fn missing_gen_config() {
    let s = Scratch::new();
    std::fs::remove_file(s.mula().join("gen_config.json")).unwrap();
    assert_err(
        open_mula(&s.mula()),
        &["heartmula", "no `gen_config.json` in this folder or its parent"],
    );
}

#[test]
fn explicit_tokenizer_path_that_does_not_exist() {
    let s = Scratch::new();
    let wrong = s.root.join("elsewhere/tokenizer.json");
    assert_err(
        MulaPaths::discover(&s.mula(), Some(&wrong), None),
        &["elsewhere/tokenizer.json", "the given `tokenizer.json` does not exist"],
    );
}

#[test]
fn malformed_tokenizer() {
    let s = Scratch::new();
    std::fs::write(s.mula().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let err = assert_err(open_mula(&s.mula()), &["tokenizer.json", "tokenizer: cannot load"]);
    assert!(matches!(err, Error::Tokenizer { .. }));
}

#[test]
fn tokenizer_larger_than_text_vocab() {
    let s = Scratch::new();
    let cfg = s.mula().join("config.json");
    s.edit_json(&cfg, |v| v["text_vocab_size"] = 330.into());
    s.edit_weights(&s.mula(), |t| {
        t.insert("text_embeddings.weight".into(), Stored::zeros_f32(&[330, 64]));
    });
    assert_err(
        open_mula(&s.mula()),
        &["tokenizer.json", "336 tokens", "text_vocab_size 330"],
    );
}

#[test]
fn gen_config_id_outside_vocab() {
    let s = Scratch::new();
    let gen_config = s.mula().join("gen_config.json");
    s.edit_json(&gen_config, |v| v["audio_eos_id"] = 69.into());
    assert_err(
        open_mula(&s.mula()),
        &[
            "gen_config.json",
            "audio_eos_id 69 is outside the audio vocabulary 0..69",
        ],
    );
}

#[test]
fn codec_rejects_unknown_tensor_but_tolerates_encoder_and_ema_state() {
    let s = Scratch::new();
    s.edit_weights(&s.codec(), |t| {
        t.retain(|n, _| !n.contains("_codebook.embed_avg") && !n.contains("project_in"));
        t.insert("scalar_model.encoder.99.weight".into(), Stored::zeros_f32(&[3]));
    });
    CodecCheckpoint::discover_and_open(&s.codec()).expect("extras are optional and tolerated");
    s.edit_weights(&s.codec(), |t| {
        t.insert("flow_matching.estimator.extra.weight".into(), Stored::zeros_f32(&[3]));
    });
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &[
            "`flow_matching.estimator.extra.weight`",
            "unexpected tensor",
            "HeartCodec",
        ],
    );
}

#[test]
fn codec_wrong_decoder_shape() {
    let s = Scratch::new();
    let name = "scalar_model.decoder.2.up_conv.layer.parametrizations.weight.original1";
    s.edit_weights(&s.codec(), |t| {
        t.insert(name.into(), Stored::zeros_f32(&[4, 8, 4]));
    });
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &[name, "shape [4, 8, 4], expected [8, 4, 4]"],
    );
}
