//! Helpers shared by heart's test suites (a dev-dependency only): where the
//! committed tiny-a fixture is, how to find and run the workspace's binaries,
//! engine folders exported once per test process and the manifest of a
//! hand-written one; plus the helpers of
//! particular suites: rewritten checkpoints ([`checkpoints`]), seeded codes
//! for the quantizer tests ([`codes`]), ONNX Runtime sessions under the option
//! sets QDQ graphs must agree under ([`ort_graphs`]), LM graph runs
//! ([`lm_graphs`]), draft engines for speculative decoding ([`drafts`]) and
//! the fixture's generation cases ([`generate_cases`]).

pub mod checkpoints;
pub mod codes;
pub mod drafts;
pub mod generate_cases;
pub mod lm_graphs;
pub mod ort_graphs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use heart::config::{GenConfig, MulaConfig};
use heart::manifest::{FORMAT_VERSION, FileEntry, Manifest, Target};
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::HeartMula;

/// The workspace root (this crate sits at `tests/support`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed fixture set `tests/fixtures/tiny-a`.
pub fn fixture() -> PathBuf {
    workspace_root().join("tests/fixtures/tiny-a")
}

/// The fixture's HeartMuLa checkpoint folder.
pub fn fixture_mula() -> PathBuf {
    fixture().join("heartmula")
}

/// The fixture set, opened.
pub fn fixture_set() -> heart::fixture::Fixture {
    heart::fixture::Fixture::open(&fixture()).expect("open the committed fixture")
}

/// The fixture's HeartMuLa model and generation configs.
pub fn mula_configs() -> (MulaConfig, GenConfig) {
    let dir = fixture_mula();
    (
        MulaConfig::from_file(&dir.join("config.json")).expect("fixture config.json"),
        GenConfig::from_file(&dir.join("gen_config.json")).expect("fixture gen_config.json"),
    )
}

/// The generation config of the released checkpoints (Llama-3 text ids,
/// audio EOS 8193).
pub fn gen_config_3b() -> GenConfig {
    GenConfig {
        text_bos_id: 128000,
        text_eos_id: 128001,
        audio_eos_id: 8193,
        empty_id: 0,
    }
}

/// The manifest of a test's hand-written engine folder: ONNX target, LM at
/// `precision`, no codec, build profile, calibration or recorded build
/// inputs, and `files` as listed. Tests set other fields by struct update.
pub fn manifest(model: MulaConfig, gen_config: GenConfig, precision: Precision, files: Vec<FileEntry>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        heart_version: "test".into(),
        target: Target::Onnx,
        precision,
        codec_precision: None,
        model,
        gen_config,
        codec: None,
        build_profile: None,
        calibration: None,
        inputs: vec![],
        files,
    }
}

/// The workspace binary `name` (`heart-build`, `heart-run`, `heart-eval`,
/// `heart-conform`, `heart-bench`), next to the running test's own target
/// folder. `cargo test --workspace` builds them all; a missing one fails the
/// test with that hint.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not built: run the suite with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs the workspace binary `name` with `args` and collects its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name)).args(args).output().expect("binary runs")
}

/// Runs the workspace binary `name` and fails the test with its stderr unless it succeeds.
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let o = run(name, args);
    assert!(
        o.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `o`'s standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `heart-build` on the bundled fixture ([`fixture_build_args`]) into
/// `out` with `extra` flags appended.
pub fn build_fixture(out: &Path, extra: &[&str]) -> Output {
    let mut args = fixture_build_args(out);
    args.extend(extra.iter().map(|a| a.to_string()));
    run("heart-build", &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `heart-run` on `engines` for a one-second song (tags `piano`, lyrics
/// `[verse] la`) written to `out`, with `extra` flags appended, as from a
/// fresh shell: without `LD_LIBRARY_PATH` (heart-run finds its libraries itself).
pub fn short_song(engines: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(bin("heart-run"))
        .env_remove("LD_LIBRARY_PATH")
        .arg("--engines")
        .arg(engines)
        .args(["--tags", "piano", "--lyrics", "[verse] la", "--duration", "1", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("heart-run runs")
}

/// Runs `heart-build` and fails the test with its stderr if it fails.
pub fn build(args: &[&str]) {
    run_ok("heart-build", args);
}

/// `heart-build` arguments that build fp32 engines with a codec from the
/// bundled fixture into `out`.
pub fn fixture_build_args(out: &Path) -> Vec<String> {
    let f = fixture();
    [
        "-q",
        "--mula",
        f.join("heartmula").to_str().expect("UTF-8 path"),
        "--codec",
        f.join("heartcodec").to_str().expect("UTF-8 path"),
        "--out",
        out.to_str().expect("UTF-8 path"),
    ]
    .map(String::from)
    .to_vec()
}

/// Engines built once per test process from the bundled fixture (fp32, with
/// codec), for tests that only read them.
pub fn fixture_engines() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = tempfile::tempdir().expect("temp folder");
        let out = root.path().join("engines");
        let args = fixture_build_args(&out);
        build(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (root, out)
    })
    .1
}

/// Synthesizes a tiny checkpoint under `root/ckpt` and builds its engine
/// folder (LM and codec, fp32) at `root/engines`, which it returns.
pub fn synth_tiny_engines(root: &Path) -> PathBuf {
    let ckpt = root.join("ckpt");
    build(&["synth", "--size", "tiny", "--out", ckpt.to_str().unwrap()]);
    let engines = root.join("engines");
    build(&[
        "-q",
        "--mula",
        ckpt.join("HeartMuLa-oss-3B").to_str().unwrap(),
        "--codec",
        ckpt.join("HeartCodec-oss").to_str().unwrap(),
        "--out",
        engines.to_str().unwrap(),
    ]);
    engines
}

/// Flags that keep `heart-run bench`'s machine measurements short (tiny
/// bandwidth arrays and FLOP loop) and make it print JSON.
const QUICK_BENCH_JSON: [&str; 5] = ["--stream-mib", "8", "--peak-rounds", "1000", "--json"];

/// Runs `heart-run bench` with `args` plus quick-measurement flags and parses its record.
pub fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&QUICK_BENCH_JSON);
    let o = run_ok("heart-run", &all);
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// The `name` of every row of a bench record.
pub fn row_names(record: &serde_json::Value) -> Vec<&str> {
    record["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("row name"))
        .collect()
}

/// The LM graphs (per-step and frame graph) and tables exported from the
/// fixture's HeartMuLa checkpoint at `precision` (fp32 or fp16), as heart-build
/// writes them, once per test process.
pub fn lm_engine(precision: Precision) -> &'static Path {
    static FP32: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FP16: OnceLock<tempfile::TempDir> = OnceLock::new();
    static INT4: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = match precision {
        Precision::Fp16 => &FP16,
        Precision::Fp32 => &FP32,
        Precision::Int4 => &INT4,
        other => panic!("lm_engine exports fp32, fp16 or int4, not {other}"),
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp folder");
        let ckpt = heart::checkpoint::Checkpoint::open(&fixture_mula()).expect("fixture checkpoint");
        let (cfg, _) = mula_configs();
        onnx_export::lm::export_lm(&ckpt, &cfg, precision, dir.path()).expect("export the fixture LM");
        let opts = onnx_export::lm::LmOptions::for_precision(precision);
        let frame = dir.path().join(heart::engine::FRAME_GRAPH);
        onnx_export::frame::export_frame(&ckpt, &cfg, &opts, &frame).expect("export the fixture frame graph");
        dir
    })
    .path()
}

/// The fixture LM at `precision` ([`lm_engine`]) opened on ONNX Runtime's CPU provider.
pub fn open_lm(precision: Precision) -> HeartMula {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = mula_configs();
    HeartMula::open(&rt, lm_engine(precision), &cfg, &gen_cfg, &SessionConfig::default()).expect("open the fixture LM")
}
