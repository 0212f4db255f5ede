//! `heart-build`: checkpoints in, engine folder out. See `heart-build --help`.

use clap::Parser;
use heart_build::cli::{Cli, Command};
use heart_build::{atomic, pipeline, simulate_engine, synthesize};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    if let Err(e) = atomic::clean_up_on_interrupt() {
        eprintln!("heart-build: warning: {:#}", anyhow::Error::from(e));
    }
    let result: anyhow::Result<()> = match (cli.command, cli.build) {
        (Some(Command::Synth(args)), _) => synthesize(&args, cli.quiet).map_err(Into::into),
        (Some(Command::Simulate(args)), _) => simulate_engine(&args, cli.quiet).map_err(Into::into),
        (None, Some(args)) => pipeline::run(&args, cli.quiet).map_err(Into::into),
        (None, None) => Err(anyhow::anyhow!("nothing to do; see `heart-build --help`")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heart-build: error: {e:#}");
            if e.chain().any(heart::error::is_disk_full) {
                eprintln!(
                    "heart-build: the disk is full; nothing was written: free some space or choose another --out"
                );
            }
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
