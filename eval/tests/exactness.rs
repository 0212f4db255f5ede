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
use heart_test_support::checkpoints::copy_dir;
use onnx_export::proto::{ModelProto, TensorProto};
use prost::Message;

fn repo(rel: &str) -> PathBuf {
    heart_test_support::workspace_root().join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn heart_build(args: &[&str]) {
    heart_test_support::build(&[args, &["--quiet"]].concat());
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

/// Builds `profile` of `ck` into `engine` (with the codec at `codec`, if
/// given) and its simulation into `sim`.
fn build_pair(ck: &Ckpt, profile: &str, codec: Option<&str>, engine: &Path, sim: &Path) {
    let calibration = repo("calibration");
    let quick = matches!(profile, "fp8" | "fp4-w4a4").then(|| quick_calibration(engine, profile));
    let profile = quick.as_deref().map_or(profile, s);
    let mut args = vec![
        "--mula",
        s(&ck.mula),
        "--profile",
        profile,
        "--layer-taps",
        "--out",
        s(engine),
    ];
    let mut sim_args = vec![
        "simulate",
        "--engine",
        s(engine),
        "--mula",
        s(&ck.mula),
        "--out",
        s(sim),
    ];
    if let Some(precision) = codec {
        args.extend(["--codec", s(&ck.codec), "--codec-precision", precision]);
        sim_args.extend(["--codec", s(&ck.codec)]);
    }
    if quick.is_some() {
        args.extend(["--calibration", s(&calibration)]);
    }
    heart_build(&args);
    heart_build(&sim_args);
}

/// The shipped profile `name` (one that calibrates activations) with a short
/// calibration run, written beside `engine` under its own name: how good the
/// scales are does not matter to exactness, and the full run is most of a
/// build's time.
fn quick_calibration(engine: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo(&format!("configs/build/{name}.toml"))).unwrap();
    let quick = text
        .replace("max_prompts = 0", "max_prompts = 4")
        .replace("frames_per_prompt = 8", "frames_per_prompt = 4");
    assert!(quick.contains("max_prompts = 4") && quick.contains("frames_per_prompt = 4"));
    let dir = engine.with_extension("profile");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, quick).unwrap();
    path
}

/// `heart-eval exact` in-process on 4 prompts × 6 frames; the exit status and report.
fn exact(engine: &Path, sim: &Path, report: &Path) -> (u8, serde_json::Value) {
    let prompts = repo("calibration");
    let status = heart_eval::cli::status([
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
    // Non-finite errors are JSON null.
    let median = |q: &serde_json::Value| q["rel_error"]["median"].as_f64().unwrap_or(f64::NAN);
    let ratio = |q: &serde_json::Value| median(q) / q["tolerance"].as_f64().unwrap();
    let worst = qs.iter().max_by(|a, b| ratio(a).total_cmp(&ratio(b))).unwrap();
    let failed: Vec<String> = qs
        .iter()
        .filter(|q| q["pass"] == false)
        .map(|q| format!("{} {} > {}", q["name"], q["rel_error"]["median"], q["tolerance"]))
        .collect();
    format!(
        "worst median {} at {:.3} of its tolerance ({:.3e} / {:.3e}); failed: [{}]",
        worst["name"],
        ratio(worst),
        median(worst),
        worst["tolerance"].as_f64().unwrap_or(f64::NAN),
        failed.join(", ")
    )
}

const PROFILES: [&str; 6] = ["fp8", "fp4", "fp4-w4a4", "int8", "int4", "int4-heads"];

fn every_precision_passes(ck: &Ckpt, model: &str) {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    for profile in PROFILES {
        // fp4 carries the fp16 codec, so the codec precision is gated too
        // (an fp32 codec is the simulation's own graph).
        let codec = (profile == "fp4").then_some("fp16");
        build_pair(ck, profile, codec, &p(profile), &p(&format!("{profile}.sim")));
        let (status, r) = exact(
            &p(profile),
            &p(&format!("{profile}.sim")),
            &p(&format!("{profile}.json")),
        );
        println!("{model} {profile} (codec {codec:?}): {}", summary(&r));
        assert_eq!(status, 0, "{model} {profile} fails the exactness gate: {}", summary(&r));
        let names: Vec<&str> = r["quantities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        let audio = codec.map(|_| "audio");
        for name in [
            "logits.c0",
            "logits.c7",
            "hidden",
            "backbone.layer_0",
            "decoder.layer_1",
        ]
        .into_iter()
        .chain(audio)
        {
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

/// Calls `patch` on the bytes and dims of initializer `name` of graph `onnx` (stored
/// inline or in its external data file), writes them back and re-hashes the
/// engine's manifest.
fn patch_initializer(engine: &Path, onnx: &str, name: &str, patch: impl FnOnce(&mut [u8], &[i64])) {
    let mut m = Manifest::load(engine, Verify::Full).unwrap();
    let path = engine.join(onnx);
    let mut model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let t: &mut TensorProto = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{onnx} has no initializer `{name}`"));
    let dims = t.dims.clone();
    if t.external_data.is_empty() {
        patch(t.raw_data.as_mut().expect("inline raw_data"), &dims);
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
        patch(&mut data[offset..offset + length], &dims);
        std::fs::write(&data_path, data).unwrap();
    }
    for f in &mut m.files {
        let p = engine.join(&f.path);
        f.sha256 = sha256_file(&p).unwrap();
        f.size = std::fs::metadata(&p).unwrap().len();
    }
    m.write(engine).unwrap();
    Manifest::load(engine, Verify::Full).expect("the patched engine is a consistent folder");
}

#[test]
fn deliberately_broken_engines_fail_exactness() {
    let root = tempfile::tempdir().unwrap();
    let p = |n: &str| root.path().join(n);
    let ck = synth(root.path(), "ckpt", &["--seed", "0"]);
    // The shipped fp4 profile computes in fp16; `fp4-f32` is the same NVFP4
    // format computed in f32, whose tolerance is 2^13 times tighter.
    let fp4_f32 = p("fp4-f32.toml");
    let text = include_str!("../../configs/build/fp4.toml").replace("compute = \"fp16\"", "compute = \"fp32\"");
    assert!(
        text.contains("compute = \"fp32\""),
        "configs/build/fp4.toml sets lm.compute"
    );
    std::fs::write(&fp4_f32, text).unwrap();
    for (profile, name) in [("fp4", "fp4"), (s(&fp4_f32), "fp4-f32"), ("int4", "int4")] {
        build_pair(&ck, profile, None, &p(name), &p(&format!("{name}.sim")));
        let (status, r) = exact(&p(name), &p(&format!("{name}.sim")), &p(&format!("{name}.json")));
        println!("correct {name}: {}", summary(&r));
        assert_eq!(status, 0, "the correct {name} engine passes: {}", summary(&r));
    }

    let w = "backbone.layers.1.mlp.w2.weight";
    let swap = |b: &mut [u8], _: &[i64]| b.iter_mut().for_each(|x| *x = x.rotate_left(4));
    // Portable block scales are [in/16, 1, out]: moving every column's scales
    // one block along `in` is the off-by-one of a wrong block index.
    let shift = |b: &mut [u8], dims: &[i64]| b.rotate_right(*dims.last().unwrap() as usize);
    // The E4M3 scale byte − 8 is one exponent step down (÷2); the scales of
    // the blocks holding a row's largest weights sit near the top of E4M3, so
    // up would overflow into the sign bit.
    let halve = |b: &mut [u8], _: &[i64]| b[0] -= 8;
    let global = |b: &mut [u8], _: &[i64]| {
        let v = f32::from_le_bytes(b[..4].try_into().unwrap()) * 1.25;
        b[..4].copy_from_slice(&v.to_le_bytes());
    };
    type Break = (&'static str, &'static str, String, Box<dyn Fn(&mut [u8], &[i64])>);
    let breaks: Vec<Break> = vec![
        // A packer that writes the two E2M1 codes of a byte the other way round.
        ("nibbles", "fp4", format!("{w}.nvfp4_codes"), Box::new(swap)),
        (
            "block-index-off-by-one",
            "fp4",
            format!("{w}.nvfp4_block_scales"),
            Box::new(shift),
        ),
        // The per-tensor f32 global scale off by 25%.
        ("global-scale", "fp4", format!("{w}.nvfp4_global"), Box::new(global)),
        // One block scale of one weight off by ×½: below fp16 rounding on a
        // 64-wide model, so checked where the format computes in f32.
        (
            "one-block-scale",
            "fp4-f32",
            format!("{w}.nvfp4_block_scales"),
            Box::new(halve),
        ),
        ("global-scale", "fp4-f32", format!("{w}.nvfp4_global"), Box::new(global)),
        // heart's int4 kernel's codes with the nibbles of each byte swapped
        // (each byte holds inputs 8c + j and 8c + 4 + j of one output).
        ("nibbles", "int4", format!("{w}.int4x16_packed"), Box::new(swap)),
    ];
    let mut missed = Vec::new();
    for (what, base, name, patch) in breaks {
        let broken = p(&format!("broken-{base}-{what}"));
        copy_dir(&p(base), &broken);
        patch_initializer(&broken, "backbone.onnx", &name, patch);
        let (status, r) = exact(&broken, &p(&format!("{base}.sim")), &p(&format!("{base}-{what}.json")));
        println!("broken {base} {what}: exit {status}, {}", summary(&r));
        if status != 1 {
            missed.push(format!("{base} {what}: {}", summary(&r)));
        }
    }
    assert!(missed.is_empty(), "broken engines pass the exactness gate: {missed:#?}");
}
