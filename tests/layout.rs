//! Checkpoint discovery and validated opening on the layouts users have: the
//! fixture layout, the release layout (tokenizer and gen config one level up),
//! sharded weights, explicit paths.

use heart_test_support::checkpoints as common;

use std::collections::BTreeMap;

use common::{Scratch, copy_dir, fixture, read_tensors, write_tensors};
use heart::checkpoint::Checkpoint;
use heart::layout::{CodecCheckpoint, CodecPaths, MulaCheckpoint, MulaPaths, Weights};
use heart::tensors::{CODEC_ENCODER_PREFIX, codec_optional_specs, codec_tensor_specs, mula_tensor_specs};

#[test]
fn fixture_checkpoints_validate_and_every_stored_name_is_covered() {
    let mula = MulaCheckpoint::discover_and_open(&fixture().join("heartmula"), None, None).unwrap();
    assert_eq!(
        mula.paths.weights,
        Weights::Single(fixture().join("heartmula/model.safetensors"))
    );
    assert_eq!(mula.paths.tokenizer, fixture().join("heartmula/tokenizer.json"));
    let expected = mula_tensor_specs(&mula.config);
    assert_eq!(expected.len(), mula.checkpoint.names().count());
    assert_eq!(expected.len(), 55);

    let codec = CodecCheckpoint::discover_and_open(&fixture().join("heartcodec")).unwrap();
    let decode = codec_tensor_specs(&codec.config);
    let optional = codec_optional_specs(&codec.config);
    let encoder = codec
        .checkpoint
        .names()
        .filter(|n| n.starts_with(CODEC_ENCODER_PREFIX))
        .count();
    // Every stored tensor is a decode-path, optional or encoder tensor, and all
    // of the optional ones are present in this fixture.
    assert_eq!(
        decode.len() + optional.len() + encoder,
        codec.checkpoint.names().count()
    );
    assert!(optional.iter().all(|s| codec.checkpoint.contains(&s.name)));
    assert_eq!(codec.checkpoint.names().count(), 287);
}

#[test]
fn release_layout_finds_tokenizer_and_gen_config_one_level_up() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path();
    let mula_dir = ckpt.join("HeartMuLa-oss-3B");
    copy_dir(&fixture().join("heartmula"), &mula_dir);
    copy_dir(&fixture().join("heartcodec"), &ckpt.join("HeartCodec-oss"));
    for shared in ["tokenizer.json", "gen_config.json"] {
        std::fs::rename(mula_dir.join(shared), ckpt.join(shared)).unwrap();
    }
    let paths = MulaPaths::discover(&mula_dir, None, None).unwrap();
    assert_eq!(paths.tokenizer, ckpt.join("tokenizer.json"));
    assert_eq!(paths.gen_config, ckpt.join("gen_config.json"));
    let mula = MulaCheckpoint::open(paths).unwrap();
    assert_eq!(mula.gen_config.text_bos_id, 320);
    CodecCheckpoint::open(CodecPaths::discover(&ckpt.join("HeartCodec-oss")).unwrap()).unwrap();

    // A copy inside the model folder wins over the shared one.
    std::fs::copy(ckpt.join("gen_config.json"), mula_dir.join("gen_config.json")).unwrap();
    let paths = MulaPaths::discover(&mula_dir, None, None).unwrap();
    assert_eq!(paths.gen_config, mula_dir.join("gen_config.json"));
    assert_eq!(paths.tokenizer, ckpt.join("tokenizer.json"));
}

#[test]
fn explicit_paths_win_over_discovery() {
    let s = Scratch::new();
    let elsewhere = s.root.join("my-tokenizer.json");
    std::fs::copy(s.mula().join("tokenizer.json"), &elsewhere).unwrap();
    let gen_config = s.root.join("ids.json");
    std::fs::copy(s.mula().join("gen_config.json"), &gen_config).unwrap();
    let paths = MulaPaths::discover(&s.mula(), Some(&elsewhere), Some(&gen_config)).unwrap();
    assert_eq!(paths.tokenizer, elsewhere);
    assert_eq!(paths.gen_config, gen_config);
    let mula = MulaCheckpoint::open(paths).unwrap();
    assert_eq!(mula.tokenizer.path(), elsewhere);
}

#[test]
fn sharded_checkpoint_loads_identically() {
    let s = Scratch::new();
    let dir = s.mula();
    let all = read_tensors(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (mut first, mut second) = (BTreeMap::new(), BTreeMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        let (file, part) = if i % 2 == 0 {
            ("model-00001-of-00002.safetensors", &mut first)
        } else {
            ("model-00002-of-00002.safetensors", &mut second)
        };
        weight_map.insert(name.clone(), file.into());
        part.insert(name, t);
    }
    write_tensors(&dir.join("model-00001-of-00002.safetensors"), &first);
    write_tensors(&dir.join("model-00002-of-00002.safetensors"), &second);
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let sharded = MulaCheckpoint::discover_and_open(&dir, None, None).unwrap();
    assert_eq!(
        sharded.paths.weights,
        Weights::Sharded(dir.join("model.safetensors.index.json"))
    );
    assert_eq!(sharded.checkpoint.files().count(), 2);
    let single = Checkpoint::open(&fixture().join("heartmula")).unwrap();
    let names: Vec<&str> = single.names().collect();
    assert_eq!(names, sharded.checkpoint.names().collect::<Vec<_>>());
    for name in names {
        let (a, b) = (single.tensor(name).unwrap(), sharded.checkpoint.tensor(name).unwrap());
        assert_eq!((a.dtype, a.shape, a.data), (b.dtype, b.shape, b.data), "{name}");
    }
}

#[test]
fn released_tensors_read_back_identically() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a/heartmula");
    let ckpt = heart::checkpoint::Checkpoint::open(&dir).unwrap();
    let name = "audio_embeddings.weight";
    let before = ckpt.f32(name).unwrap();
    ckpt.release(name);
    ckpt.release("no.such.tensor");
    assert_eq!(ckpt.f32(name).unwrap(), before);

    let layer: Vec<String> = ckpt
        .names()
        .filter(|n| n.starts_with("backbone.layers.0."))
        .map(str::to_owned)
        .collect();
    assert!(layer.len() > 3, "{layer:?}");
    let before: Vec<Vec<f32>> = layer.iter().map(|n| ckpt.f32(n).unwrap()).collect();
    ckpt.release_prefix("backbone.layers.0.");
    let after: Vec<Vec<f32>> = layer.iter().map(|n| ckpt.f32(n).unwrap()).collect();
    assert_eq!(after, before);
}
