//! `heart-conform`: runs a golden-fixture folder's cases against this
//! implementation. Prints `PASS|FAIL|SKIP <case> <kind> max_abs_err=… tol=… [detail]`
//! per case and `N passed, M failed, K skipped`; exits non-zero if any case failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use heart_conform::ConformContext;

/// Conformance harness over a fixture folder.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Fixture folder: `cases/cases.json`, `heartmula/`, `heartcodec/`.
    fixture: PathBuf,
    /// Run only the case with this name.
    #[arg(long)]
    case: Option<String>,
    /// Engine folder built by heart-build from the fixture's checkpoints; the
    /// model and codec kinds run on it (skipped without it).
    #[arg(long, value_name = "DIR")]
    engines: Option<PathBuf>,
    /// Where the engine folder's sessions run (as `heart-run --backend`);
    /// the tolerances are the fixture's either way.
    #[arg(long, value_enum, default_value_t = heart_backend::BackendChoice::Cpu)]
    backend: heart_backend::BackendChoice,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut ctx = ConformContext::open(&args.fixture)
        .with_context(|| format!("opening fixture folder {}", args.fixture.display()))?;
    if let Some(dir) = &args.engines {
        ctx = ctx
            .with_engines_on(dir, args.backend)
            .with_context(|| format!("opening engine folder {}", dir.display()))?;
    }
    let report = heart_conform::run(&mut ctx, args.case.as_deref(), &mut std::io::stdout().lock())?;
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
