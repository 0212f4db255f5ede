//! Every way a checkpoint can be broken yields an error that names the file, the
//! tensor or field, and what was expected. Each test breaks a copy of the tiny
//! fixture in one way and asserts the message.

use heart_test_support::checkpoints as common;

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

/// Rewrites the header of the safetensors file at `path` (keeping the data).
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn safetensors_header_that_lies_about_offsets() {
    for (what, lie) in [
        ("past the end", [0u64, 1 << 40]),
        ("overflowing", [u64::MAX - 3, u64::MAX]),
        ("backwards", [64, 0]),
    ] {
        let s = Scratch::new();
        let path = s.mula().join("model.safetensors");
        edit_header(&path, |h| {
            h["text_embeddings.weight"]["data_offsets"] = serde_json::json!(lie);
        });
        let err = assert_err(
            open_mula(&s.mula()),
            &["model.safetensors", "not a valid safetensors file"],
        );
        assert!(matches!(err, Error::Safetensors { .. }), "{what}: {err}");
    }
}

#[test]
fn index_naming_a_shard_outside_the_checkpoint() {
    let s = Scratch::new();
    let dir = s.mula();
    std::fs::rename(dir.join("model.safetensors"), s.root.join("outside.safetensors")).unwrap();
    let names = common::read_tensors(&s.root.join("outside.safetensors"));
    let map: serde_json::Map<String, serde_json::Value> = names
        .keys()
        .map(|n| (n.clone(), "../outside.safetensors".into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_err(
        open_mula(&dir),
        &[
            "model.safetensors.index.json",
            "shard path `../outside.safetensors` has a `..` component",
            "shards must lie in the checkpoint directory",
        ],
    );
}

#[test]
fn absurd_config_values_are_refused_before_allocation() {
    for (field, value, expected) in [
        (
            "text_vocab_size",
            serde_json::json!(1u64 << 40),
            "text_vocab_size 1099511627776 is above the limit",
        ),
        (
            "audio_num_codebooks",
            serde_json::json!(100_000),
            "audio_num_codebooks 100000 is outside 2..=64",
        ),
        (
            "muq_dim",
            serde_json::json!(1u64 << 33),
            "muq_dim 8589934592 is above the limit",
        ),
    ] {
        let s = Scratch::new();
        s.edit_json(&s.mula().join("config.json"), |v| v[field] = value);
        assert_err(open_mula(&s.mula()), &["config.json", expected]);
    }
    let s = Scratch::new();
    s.edit_json(&s.mula().join("config.json"), |v| {
        v["tiny_flavors"]["tiny-a-backbone"]["num_layers"] = 100_000_000.into();
    });
    assert_err(
        open_mula(&s.mula()),
        &["config.json", "backbone: num_layers 100000000 is outside 1..=1024"],
    );
    let s = Scratch::new();
    s.edit_json(&s.mula().join("config.json"), |v| {
        v["tiny_flavors"]["tiny-a-backbone"]["max_seq_len"] = (1 << 20).into();
        v["tiny_flavors"]["tiny-a-backbone"]["num_layers"] = 1024.into();
        v["tiny_flavors"]["tiny-a-backbone"]["embed_dim"] = (1 << 16).into();
        v["tiny_flavors"]["tiny-a-backbone"]["num_heads"] = 512.into();
        v["tiny_flavors"]["tiny-a-backbone"]["num_kv_heads"] = 512.into();
    });
    assert_err(
        open_mula(&s.mula()),
        &["config.json", "GB for the f32 weights, above the limit of 1099 GB"],
    );

    let s = Scratch::new();
    s.edit_json(&s.codec().join("config.json"), |v| {
        v["upsample_factors"] = serde_json::json!([1000, 1000, 1000]);
        v["upsample_kernel_sizes"] = serde_json::json!([8, 8, 8]);
    });
    assert_err(
        CodecCheckpoint::discover_and_open(&s.codec()),
        &["config.json", "2000000000 audio samples per latent frame"],
    );
}

#[test]
fn tokenizer_that_makes_the_tokenizers_crate_panic_is_an_error() {
    let s = Scratch::new();
    let path = s.mula().join("tokenizer.json");
    // A syntax error inside the `decoder` object reaches an `expect` in the
    // crate's decoder deserializer.
    s.edit_json(&path, |v| v["decoder"] = "@decoder@".into());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"@decoder@\"", "{\"type\": \"ByteLevel\",}")).unwrap();
    let err = assert_err(
        open_mula(&s.mula()),
        &["tokenizer.json", "cannot load: malformed tokenizer file"],
    );
    assert!(matches!(err, Error::Tokenizer { .. }));
}
