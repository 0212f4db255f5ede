//! The exactness gate CI runs: every quantized precision is built by the real
//! `heart-build`, simulated (`heart-build simulate`) and checked with
//! `heart-eval exact` (its `status` entry point, in-process) on the tiny-a
//! fixture, the synthesized tiny model and a realistic synthesized model of
//! another seed that no threshold was ever set on. Deliberately broken
//! engines, made by patching a correct engine's bytes on disk (the real
//! artifact; the manifest re-hashed as a builder writing those bytes would),
//! must fail it.

use std::path::{Path, PathBuf};

use heart::manifest::{Manifest, Verify, sha256_file};
use onnx_export::proto::{ModelProto, TensorProto};
use prost::Message;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn heart_build(args: &[&str]) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_heart-build"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("heart-build runs");
    assert!(
        o.status.success(),
        "heart-build {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A checkpoint: its LM and codec folders.
struct Ckpt {
    mula: PathBuf,
    codec: PathBuf,
}

fn synth(root: &Path, name: &str, extra: &[&str]) -> Ckpt {
    let out = root.join(name);
    let mut args = vec!["synth", "--size", "tiny", "--out", s(&out)];
    args.extend(extra);
    heart_build(&args);
    Ckpt {
        mula: out.join("HeartMuLa-oss-3B"),
        codec: out.join("HeartCodec-oss"),
    }
}

/// Builds `profile` of `ck` into `engine` (codec at `codec_precision`) and its simulation into `sim`.
fn build_pair(ck: &Ckpt, profile: &str, codec_precision: &str, engine: &Path, sim: &Path) {
    let calibration = repo("calibration");
    let mut args = vec![
        "--mula",
        s(&ck.mula),
        "--codec",
        s(&ck.codec),
        "--profile",
        profile,
        "--codec-precision",
        codec_precision,
        "--layer-taps",
        "--out",
        s(engine),
    ];
    if matches!(profile, "fp8" | "fp4-w4a4") {
        args.extend(["--calibration", s(&calibration)]);
    }
    heart_build(&args);
    heart_build(&[
        "simulate",
        "--engine",
        s(engine),
        "--mula",
        s(&ck.mula),
        "--codec",
        s(&ck.codec),
        "--out",
        s(sim),
    ]);
}

/// `heart-eval exact` in-process on 4 prompts × 6 frames; the exit status and report.
fn exact(engine: &Path, sim: &Path, report: &Path) -> (u8, serde_json::Value) {
    let prompts = repo("calibration");
    let status = heart_runtime::eval::cli::status([
        "heart-eval",
        "exact",
        "--engine",
        s(engine),
        "--simulation",
        s(sim),
        "--prompts",
        s(&prompts),
        "--max-prompts",
        "4",
        "--frames",
        "6",
        "--report",
        s(report),
    ]);
    let json = std::fs::read(report).expect("exact report written");
    (status, serde_json::from_slice(&json).unwrap())
}

/// The quantities over their tolerance, or the worst ratio when none is.
fn summary(r: &serde_json::Value) -> String {
    let qs = r["quantities"].as_array().unwrap();
    let ratio = |q: &serde_json::Value| q["rel_error"]["max"].as_f64().unwrap() / q["tolerance"].as_f64().unwrap();
    let worst = qs.iter().max_by(|a, b| ratio(a).total_cmp(&ratio(b))).unwrap();
    let failed: Vec<String> = qs
        .iter()
        .filter(|q| q["pass"] == false)
        .map(|q| format!("{} {:.3e} > {:.3e}", q["name"], q["rel_error"]["max"], q["tolerance"]))
        .collect();
    format!(
        "worst {} at {:.3} of its tolerance ({:.3e} / {:.3e}); failed: [{}]",
        worst["name"],
        ratio(worst),
        worst["rel_error"]["max"],
        worst["tolerance"],
        failed.join(", ")
    )
}

const PROFILES: [&str; 6] = ["fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"];

fn every_precision_passes(ck: &Ckpt, model: &str) {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    for profile in PROFILES {
        // fp4 also carries the fp16 codec, so the codec precision is gated too.
        let codec = if profile == "fp4" { "fp16" } else { "fp32" };
        build_pair(ck, profile, codec, &p(profile), &p(&format!("{profile}.sim")));
        let (status, r) = exact(
            &p(profile),
            &p(&format!("{profile}.sim")),
            &p(&format!("{profile}.json")),
        );
        println!("{model} {profile} (codec {codec}): {}", summary(&r));
        assert_eq!(status, 0, "{model} {profile} fails the exactness gate: {}", summary(&r));
        let names: Vec<&str> = r["quantities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        for name in [
            "logits.c0",
            "logits.c7",
            "hidden",
            "backbone.layer_0",
            "decoder.layer_1",
            "audio",
        ] {
            assert!(
                names.contains(&name),
                "{model} {profile}: no `{name}` compared ({names:?})"
            );
        }
    }
}

#[test]
fn every_precision_passes_exactness_on_the_synthesized_model() {
    let root = tempfile::tempdir().unwrap();
    every_precision_passes(&synth(root.path(), "ckpt", &["--seed", "0"]), "synth");
}

#[test]
fn every_precision_passes_exactness_on_an_unseen_realistic_model() {
    let root = tempfile::tempdir().unwrap();
    let ck = synth(root.path(), "ckpt", &["--seed", "7", "--realistic"]);
    every_precision_passes(&ck, "realistic seed 7");
}

#[test]
fn every_precision_passes_exactness_on_the_fixture() {
    let ck = Ckpt {
        mula: repo("tests/fixtures/tiny-a/heartmula"),
        codec: repo("tests/fixtures/tiny-a/heartcodec"),
    };
    every_precision_passes(&ck, "tiny-a");
}

/// Calls `patch` on the bytes of initializer `name` of graph `onnx` (stored
/// inline or in its external data file), writes them back and re-hashes the
/// engine's manifest.
fn patch_initializer(engine: &Path, onnx: &str, name: &str, patch: impl FnOnce(&mut [u8])) {
    let path = engine.join(onnx);
    let mut model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let t: &mut TensorProto = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{onnx} has no initializer `{name}`"));
    if t.external_data.is_empty() {
        patch(t.raw_data.as_mut().expect("inline raw_data"));
        std::fs::write(&path, model.encode_to_vec()).unwrap();
    } else {
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(key))
                .and_then(|e| e.value.clone())
                .unwrap()
        };
        let (location, offset, length): (String, usize, usize) = (
            entry("location"),
            entry("offset").parse().unwrap(),
            entry("length").parse().unwrap(),
        );
        let data_path = engine.join(location);
        let mut data = std::fs::read(&data_path).unwrap();
        patch(&mut data[offset..offset + length]);
        std::fs::write(&data_path, data).unwrap();
    }
    let mut m = Manifest::load(engine, Verify::None).unwrap();
    for f in &mut m.files {
        let p = engine.join(&f.path);
        f.sha256 = sha256_file(&p).unwrap();
        f.size = std::fs::metadata(&p).unwrap().len();
    }
    m.write(engine).unwrap();
    Manifest::load(engine, Verify::Full).expect("the patched engine is a consistent folder");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn deliberately_broken_engines_fail_exactness() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let ck = synth(root.path(), "ckpt", &["--seed", "0"]);
    build_pair(&ck, "fp4", "fp32", &p("fp4"), &p("fp4.sim"));
    build_pair(&ck, "int4", "fp32", &p("int4"), &p("int4.sim"));
    let (status, r) = exact(&p("fp4"), &p("fp4.sim"), &p("ok.json"));
    assert_eq!(status, 0, "the correct engine passes: {}", summary(&r));

    let w = "backbone.layers.1.mlp.w2.weight";
    let swap = |b: &mut [u8]| b.iter_mut().for_each(|x| *x = x.rotate_left(4));
    type Break = (&'static str, &'static str, String, Box<dyn Fn(&mut [u8])>);
    let breaks: Vec<Break> = vec![
        // A packer that writes the two E2M1 codes of a byte the other way round.
        ("nibbles", "fp4", format!("{w}.nvfp4_codes"), Box::new(swap)),
        // One E4M3 block scale one exponent step off (×2): byte + 8.
        (
            "block-scale",
            "fp4",
            format!("{w}.nvfp4_block_scales"),
            Box::new(|b: &mut [u8]| b[0] += 8),
        ),
        // The per-tensor f32 global scale off by 25%.
        (
            "global-scale",
            "fp4",
            format!("{w}.nvfp4_global"),
            Box::new(|b: &mut [u8]| {
                let v = f32::from_le_bytes(b[..4].try_into().unwrap()) * 1.25;
                b[..4].copy_from_slice(&v.to_le_bytes());
            }),
        ),
        // MatMulNBits int4 codes with the nibbles of each byte swapped.
        ("int4-nibbles", "int4", format!("{w}.nbits_b"), Box::new(swap)),
    ];
    for (what, base, name, patch) in breaks {
        let broken = p(&format!("broken-{what}"));
        copy_dir(&p(base), &broken);
        patch_initializer(&broken, "backbone.onnx", &name, patch);
        let (status, r) = exact(&broken, &p(&format!("{base}.sim")), &p(&format!("{what}.json")));
        println!("broken {what}: {}", summary(&r));
        assert_eq!(status, 1, "the engine with a broken {what} must fail: {}", summary(&r));
    }
}
