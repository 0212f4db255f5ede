//! `heart-build` as a library: checkpoints in, engine folder out. The binary
//! parses [`cli::Cli`] and calls [`pipeline::run`] or [`synthesize`]; tests and
//! tools call the same functions instead of re-assembling engine folders.

pub mod atomic;
pub mod calibrate;
pub mod cli;
pub mod draft;
pub mod error;
pub mod pipeline;
pub mod profile;
pub mod realistic;
pub mod safetensors_out;
pub mod scales;
pub mod seeded;
pub mod simulate;
pub mod synth;
pub mod tensorrt;
pub mod trt_rtx;

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::atomic::AtomicDir;
use crate::cli::{SimulateArgs, SynthArgs};
pub use crate::error::{BuildError, Result};

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

/// `heart-build synth`: writes a random checkpoint with the real layout.
pub fn synthesize(args: &SynthArgs, quiet: bool) -> Result<()> {
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

/// `heart-build simulate`: builds the fp32 simulation of `args.engine` into `args.out`.
pub fn simulate_engine(args: &SimulateArgs, quiet: bool) -> Result<()> {
    let sim = simulate::plan(&args.engine)?;
    let build = cli::BuildArgs {
        input: args.input.clone(),
        layer_taps: true,
        force: args.force,
        ..cli::BuildArgs::new(&args.input.mula, &args.out)
    };
    crate::pipeline::build(&build, &sim.profile, Some(&sim), quiet)
}
