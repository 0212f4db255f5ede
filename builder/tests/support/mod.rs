//! Helpers shared by the end-to-end tests: running the two binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
