//! `heart-build`: checkpoints in, engine folder out. See `heart-build --help`.

mod atomic;
mod calibrate;
mod cli;
mod draft;
mod pipeline;
mod profile;
mod realistic;
mod safetensors_out;
mod scales;
mod simulate;
mod synth;
mod tensorrt;

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::atomic::AtomicDir;
use crate::cli::{Cli, Command, SynthArgs};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    if let Err(e) = atomic::clean_up_on_interrupt() {
        eprintln!("heart-build: warning: {e:#}");
    }
    let result = match (cli.command, cli.build) {
        (Some(Command::Synth(args)), _) => run_synth(&args, cli.quiet),
        (Some(Command::Simulate(args)), _) => simulate::run(&args, cli.quiet),
        (None, Some(args)) => pipeline::run(&args, cli.quiet),
        (None, None) => Err(anyhow::anyhow!("nothing to do; see `heart-build --help`")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heart-build: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A byte-counting progress bar (hidden with `--quiet`).
pub fn bytes_bar(total: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A count progress bar (hidden with `--quiet`); its length is set by the caller.
pub fn count_bar(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn run_synth(args: &SynthArgs, quiet: bool) -> Result<()> {
    let start = Instant::now();
    let out = AtomicDir::new(&args.out, args.force)?;
    let bar = bytes_bar(synth::planned_bytes(args.size)?, quiet, "synthesize");
    let weight_bytes = synth::synthesize(out.path(), args.size, args.seed, args.realistic, |n| bar.inc(n))?;
    bar.finish_and_clear();
    let dir = out.commit()?;
    if !quiet {
        println!(
            "Synthesized a {} checkpoint (seed {}) in {:.1} s: {:.1} MB of random weights.",
            args.size.name(),
            args.seed,
            start.elapsed().as_secs_f64(),
            weight_bytes as f64 / 1e6
        );
        println!("  HeartMuLa  {}", dir.join(synth::MULA_DIR).display());
        println!("  HeartCodec {}", dir.join(synth::CODEC_DIR).display());
        println!(
            "Next: heart-build --mula {} --codec {} --out engines/synth-{}",
            dir.join(synth::MULA_DIR).display(),
            dir.join(synth::CODEC_DIR).display(),
            args.size.name()
        );
    }
    Ok(())
}
