//! Fuzzing the readers of untrusted files with `proptest`: mutated engine
//! manifests, HeartMuLa / HeartCodec / generation configs, safetensors headers
//! and checkpoint indexes, tokenizer files and ONNX graph bytes. Every reader
//! must answer `Ok` or a clear `Err` — no panic, and no hang (each case runs
//! under a time limit).
//!
//! CI runs [`DEFAULT_CASES`] cases per reader; by hand, set
//! `HEART_FUZZ_CASES` (e.g. `HEART_FUZZ_CASES=5000 cargo test -p heart --test
//! fuzz_readers --release -- --nocapture`) for a longer run.

use heart_test_support::checkpoints as common;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use heart::checkpoint::Checkpoint;
use heart::config::{CodecConfig, GenConfig, MulaConfig};
use heart::layout::{CodecCheckpoint, MulaCheckpoint};
use heart::manifest::{EngineKind, Manifest, Verify, describe_file};
use heart::precision::Precision;
use heart::prompt::TextTokenizer;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

/// Cases per reader when `HEART_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;
/// Longest a single case may take before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(30);

/// Values that break naive readers: huge, negative, fractional, non-numbers,
/// paths leaving the folder, quoting and nesting characters.
const TOKENS: &[&str] = &[
    "0",
    "-1",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "4294967296",
    "1e308",
    "1e309",
    "-0.0",
    "NaN",
    "nan",
    "inf",
    "\"\"",
    "\"../secret.txt\"",
    "\"/etc/passwd\"",
    "\"a/../../b\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[",
    "{\"a\":",
    "null",
    "true",
    "\"",
    "\\u0000",
    "\u{0}",
    "\n",
];

fn cases() -> u32 {
    match std::env::var("HEART_FUZZ_CASES") {
        Ok(v) => v.parse().expect("HEART_FUZZ_CASES is a case count"),
        Err(_) => DEFAULT_CASES,
    }
}

use common::fixture;

/// One edit of a text or byte buffer.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bits of one byte.
    Flip(Index, u8),
    /// Insert a byte.
    Insert(Index, u8),
    /// Delete up to 16 bytes.
    Delete(Index, u8),
    /// Insert one of [`TOKENS`].
    Token(Index, Index),
    /// Replace the value of one `key = value` / `"key": value` line with a token.
    Value(Index, Index),
    /// Cut the buffer short.
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Value(i, t)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let p = at(i, bytes.len());
            bytes[p] ^= b;
        }
        Mutation::Insert(i, b) => {
            let p = at(i, bytes.len() + 1);
            bytes.insert(p, *b);
        }
        Mutation::Delete(i, n) if !bytes.is_empty() => {
            let p = at(i, bytes.len());
            let end = (p + usize::from(*n)).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Token(i, t) => {
            let p = at(i, bytes.len() + 1);
            let token = TOKENS[t.index(TOKENS.len())].as_bytes();
            bytes.splice(p..p, token.iter().copied());
        }
        Mutation::Value(i, t) => {
            let token = TOKENS[t.index(TOKENS.len())].as_bytes();
            let lines: Vec<(usize, usize)> = line_spans(bytes)
                .into_iter()
                .filter_map(|(s, e)| {
                    let sep = bytes[s..e].iter().position(|&c| c == b'=' || c == b':')?;
                    Some((s + sep + 1, e))
                })
                .collect();
            if !lines.is_empty() {
                let (s, e) = lines[at(i, lines.len())];
                let keep_comma = bytes[s..e].ends_with(b",");
                let end = if keep_comma { e - 1 } else { e };
                bytes.splice(s..end, b" ".iter().chain(token).copied());
            }
        }
        Mutation::Truncate(i) => {
            let p = at(i, bytes.len() + 1);
            bytes.truncate(p);
        }
        Mutation::Flip(..) | Mutation::Delete(..) => {}
    }
}

fn line_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            spans.push((start, i));
            start = i + 1;
        }
    }
    spans.push((start, bytes.len()));
    spans
}

fn mutate(base: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for m in ms {
        apply(&mut bytes, m);
    }
    bytes
}

/// Runs `f` on its own thread: a panic or a run past [`CASE_LIMIT`] fails
/// the case with a message naming `what`.
fn bounded(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the reader panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: the reader hung for {CASE_LIMIT:?}"),
    }
}

/// Runs `cases()` cases of `strategy` through `test`, printing the count and time.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value)) {
    let n = cases();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let start = Instant::now();
    runner
        .run(&strategy, |value| {
            test(value);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "fuzz {name}: {n} cases in {:.2} s, no panic, no hang",
        start.elapsed().as_secs_f64()
    );
}

/// An engine folder with a graph referencing external data, the fixture's
/// tokenizer and configs; returns its manifest text.
fn engine_folder(dir: &Path) -> Vec<u8> {
    std::fs::write(
        dir.join("backbone.onnx"),
        common::graph_with_external("backbone.onnx.data", 0, 64),
    )
    .unwrap();
    std::fs::write(dir.join("backbone.onnx.data"), [1u8; 64]).unwrap();
    let f = fixture();
    std::fs::copy(f.join("heartmula/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let manifest = Manifest {
        codec_precision: Some(Precision::Fp32),
        codec: Some(CodecConfig::from_file(&f.join("heartcodec/config.json")).unwrap()),
        ..heart_test_support::manifest(
            MulaConfig::from_file(&f.join("heartmula/config.json")).unwrap(),
            GenConfig::from_file(&f.join("heartmula/gen_config.json")).unwrap(),
            Precision::Fp32,
            vec![
                describe_file(dir, "backbone.onnx", EngineKind::Backbone, Some(Precision::Fp32)).unwrap(),
                describe_file(dir, "backbone.onnx.data", EngineKind::GraphData, None).unwrap(),
                describe_file(dir, "tokenizer.json", EngineKind::Tokenizer, None).unwrap(),
            ],
        )
    };
    manifest.write(dir).unwrap();
    Manifest::load(dir, Verify::Full).expect("the unmutated folder loads");
    std::fs::read(dir.join("manifest.toml")).unwrap()
}

#[test]
fn mutated_manifests_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let base = engine_folder(dir.path());
    let dir = dir.path().to_path_buf();
    fuzz("manifest.toml", mutations(), |ms| {
        std::fs::write(dir.join("manifest.toml"), mutate(&base, &ms)).unwrap();
        let dir = dir.clone();
        bounded("manifest", move || {
            if let Ok(m) = Manifest::load(&dir, Verify::Full) {
                for kind in [EngineKind::Tokenizer, EngineKind::Backbone] {
                    let _ = m.path_of(&dir, kind);
                }
                let _ = m.require_files(&dir, &heart::engine::runtime_files(m.codec.is_some(), true));
            }
        });
    });
}

#[test]
fn mutated_configs_never_panic_or_hang() {
    let f = fixture();
    let files = [
        std::fs::read(f.join("heartmula/config.json")).unwrap(),
        std::fs::read(f.join("heartmula/gen_config.json")).unwrap(),
        std::fs::read(f.join("heartcodec/config.json")).unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    fuzz("config.json", (0..files.len(), mutations()), |(which, ms)| {
        std::fs::write(&path, mutate(&files[which], &ms)).unwrap();
        let path = path.clone();
        bounded("config", move || match which {
            0 => {
                if let Ok(cfg) = MulaConfig::from_file(&path) {
                    let specs = heart::tensors::mula_tensor_specs(&cfg);
                    let _ = specs.iter().map(|s| s.numel()).max();
                    let _ = cfg.codebook_size();
                }
            }
            1 => {
                let cfg = MulaConfig::from_file(&fixture().join("heartmula/config.json")).unwrap();
                if let Ok(gen_cfg) = GenConfig::from_file(&path) {
                    let _ = gen_cfg.check_against(&cfg);
                }
            }
            _ => {
                if let Ok(cfg) = CodecConfig::from_file(&path) {
                    let _ = (cfg.samples_per_latent(), cfg.scalar_channels(), cfg.inner_dim_2());
                    let specs = heart::tensors::codec_tensor_specs(&cfg);
                    let _ = specs.iter().map(|s| s.numel()).max();
                    let _ = heart::tensors::codec_optional_specs(&cfg);
                }
            }
        });
    });
}

/// Offset of the data section of a safetensors file (8 + header length).
fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn mutated_checkpoints_never_panic_or_hang() {
    let f = fixture();
    let weights = std::fs::read(f.join("heartmula/model.safetensors")).unwrap();
    let header_end = data_start(&weights);
    let root = tempfile::tempdir().unwrap();
    let mula = root.path().join("heartmula");
    std::fs::create_dir(&mula).unwrap();
    for name in ["config.json", "gen_config.json", "tokenizer.json"] {
        std::fs::copy(f.join("heartmula").join(name), mula.join(name)).unwrap();
    }
    let shard = "model-00001-of-00001.safetensors";
    let index = {
        let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
        let map: serde_json::Map<String, serde_json::Value> =
            st.names().into_iter().map(|n| (n.to_string(), shard.into())).collect();
        serde_json::to_vec_pretty(&serde_json::json!({ "metadata": {}, "weight_map": map })).unwrap()
    };
    assert!(
        MulaCheckpoint::discover_and_open(&mula, None, None).is_err(),
        "no weights yet"
    );
    let write_checkpoint = |dir: &Path, sharded: bool, header: &[u8], declared: u64, index: &[u8], data: &[u8]| {
        for name in ["model.safetensors", "model.safetensors.index.json", shard] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let mut file = declared.to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(data);
        if sharded {
            std::fs::write(dir.join(shard), &file).unwrap();
            std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
        } else {
            std::fs::write(dir.join("model.safetensors"), &file).unwrap();
        }
    };
    // Which file each case mutates: the header (pretty-printed so values sit
    // on their own lines) of a single-file checkpoint, or the index of a
    // sharded one.
    // (Tensor offsets count from the end of the header, so a longer header
    // moves nothing.)
    let pretty_header = {
        let v: serde_json::Value = serde_json::from_slice(&weights[8..header_end]).unwrap();
        serde_json::to_vec_pretty(&v).unwrap()
    };
    let data = weights[header_end..].to_vec();
    for sharded in [false, true] {
        write_checkpoint(
            &mula,
            sharded,
            &pretty_header,
            pretty_header.len() as u64,
            &index,
            &data,
        );
        MulaCheckpoint::discover_and_open(&mula, None, None).expect("the unmutated checkpoint opens");
    }
    let mula_dir = mula.clone();
    fuzz(
        "checkpoint",
        (any::<bool>(), any::<bool>(), mutations()),
        move |(sharded, lie_about_length, ms)| {
            let (header, index_text) = if sharded {
                (pretty_header.clone(), mutate(&index, &ms))
            } else {
                (mutate(&pretty_header, &ms), index.clone())
            };
            let declared = if lie_about_length {
                header.len() as u64 + 17
            } else {
                header.len() as u64
            };
            write_checkpoint(&mula_dir, sharded, &header, declared, &index_text, &data);
            let dir = mula_dir.clone();
            bounded("checkpoint", move || {
                if let Ok(ckpt) = Checkpoint::open(&dir) {
                    let names: Vec<String> = ckpt.names().map(String::from).collect();
                    for name in names {
                        let _ = ckpt.f32(&name);
                        ckpt.release(&name);
                    }
                }
                let _ = MulaCheckpoint::discover_and_open(&dir, None, None);
            });
        },
    );
    let codec = f.join("heartcodec");
    assert!(
        CodecCheckpoint::discover_and_open(&codec).is_ok(),
        "the codec fixture opens"
    );
}

#[test]
fn mutated_tokenizers_never_panic_or_hang() {
    let base = std::fs::read(fixture().join("heartmula/tokenizer.json")).unwrap();
    TextTokenizer::from_file(&fixture().join("heartmula/tokenizer.json")).expect("the unmutated tokenizer loads");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    fuzz("tokenizer.json", mutations(), |ms| {
        std::fs::write(&path, mutate(&base, &ms)).unwrap();
        let path = path.clone();
        bounded("tokenizer", move || {
            if let Ok(t) = TextTokenizer::from_file(&path) {
                let _ = t.encode("<tag>piano,happy</tag> [verse] la la ünïcode 🎹");
                let _ = t.vocab_size();
            }
        });
    });
}

#[test]
fn mutated_onnx_graphs_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    engine_folder(dir.path());
    let base = std::fs::read(dir.path().join("backbone.onnx")).unwrap();
    assert_eq!(heart::onnx_refs::external_refs(&base).unwrap().len(), 1);
    fuzz(
        "onnx external data",
        (mutations(), prop::collection::vec(any::<u8>(), 0..256)),
        |(ms, noise)| {
            let mut bytes = mutate(&base, &ms);
            bounded("onnx", move || {
                let _ = heart::onnx_refs::external_refs(&bytes);
                bytes.extend(noise);
                let _ = heart::onnx_refs::external_refs(&bytes);
            });
        },
    );
}
