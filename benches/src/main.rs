//! `heart-bench`: the benchmark on its own (the same as `heart-run bench`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use heart_bench::cli::{BenchArgs, run};

/// Measures an engine folder against this machine's roofline.
#[derive(Debug, Parser)]
#[command(name = "heart-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
    /// ONNX Runtime shared library (default: ORT_DYLIB_PATH or .ort/).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli.bench, cli.ort_lib.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heart-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
