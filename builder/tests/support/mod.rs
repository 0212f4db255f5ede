//! Helpers shared by the end-to-end tests: running the two binaries.

// Each test crate includes this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `heart-run` is a binary of the runtime package; `cargo test --workspace`
/// builds it next to `heart-build`.
pub fn heart_run_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_heart-build")).with_file_name("heart-run");
    assert!(
        bin.is_file(),
        "{} not built: run the suite with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs `bin` with `args` and collects its output.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("binary runs")
}

/// Runs `heart-build` and fails the test with its stderr if it fails.
pub fn build(args: &[&str]) {
    let o = run(Path::new(env!("CARGO_BIN_EXE_heart-build")), args);
    assert!(
        o.status.success(),
        "heart-build {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Flags that keep `heart-run bench`'s machine measurements short (tiny
/// bandwidth arrays and FLOP loop) and make it print JSON.
const QUICK_BENCH_JSON: [&str; 5] = ["--stream-mib", "8", "--peak-rounds", "1000", "--json"];

/// Runs `heart-run bench` with `args` plus [`QUICK_BENCH_JSON`] and parses its record.
pub fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&QUICK_BENCH_JSON);
    let o = run(&heart_run_bin(), &all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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

/// The bundled golden fixture.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a")
}

/// `heart-build` arguments that build fp32 engines with a codec from the
/// bundled fixture into `out`.
pub fn fixture_build_args(out: &Path) -> Vec<String> {
    let f = fixture();
    [
        "-q",
        "--mula",
        f.join("heartmula").to_str().unwrap(),
        "--codec",
        f.join("heartcodec").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// Engines built once per test binary from the bundled fixture, for tests
/// that only read them.
pub fn fixture_engines() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("engines");
        let args = fixture_build_args(&out);
        build(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (root, out)
    })
    .1
}
