//! The `heart-eval` command line. [`main`] is the whole program (the binary
//! only forwards its arguments), so tests can run it in-process.
//!
//! Exit status: 0 when the gate passes (or none was applied), 1 when a check
//! fails, 2 on any error (bad arguments, unreadable engines or thresholds).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use heart::manifest::{Manifest, Verify};

use super::EvalError;
use super::ab::{AbOptions, run_ab};
use super::budget::{Budget, Budgets};
use super::report::{AbReport, RelativeCost};
use heart_backend::SessionConfig;
use heart_runtime::lm::SamplerParams;
use heart_runtime::settings::defaults;

/// Quality evaluation of heart engine folders.
#[derive(Debug, Parser)]
#[command(name = "heart-eval", version)]
pub struct Cli {
    /// What to evaluate.
    #[command(subcommand)]
    pub command: Command,
    /// ONNX Runtime library (default: ORT_DYLIB_PATH, then `.ort/`).
    #[arg(long, global = true, value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare engine folder B against A (same checkpoint, two builds) and gate the result.
    Ab(AbArgs),
    /// Check a quantized engine against its simulation (`heart-build simulate`): every difference must
    /// be within its arithmetic's rounding.
    Exact(super::exact_cli::ExactArgs),
}

/// Arguments of `heart-eval ab`.
#[derive(Debug, Args)]
pub struct AbArgs {
    /// Reference engine folder (e.g. the fp16 build).
    #[arg(long, value_name = "DIR")]
    pub a: PathBuf,
    /// Engine folder under test (e.g. the fp4 build).
    #[arg(long, value_name = "DIR")]
    pub b: PathBuf,
    /// Prompt set: a folder with prompts.toml, or the file itself.
    #[arg(long, value_name = "PATH", default_value = "calibration")]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long, value_name = "N")]
    pub max_prompts: Option<usize>,
    /// Frames A generates per prompt after the first.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub frames: usize,
    /// Base seed of A's sampling and of the codec noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Euler steps of A's codec.
    #[arg(long, value_name = "N", default_value_t = defaults::FLOW_STEPS)]
    pub flow_steps: usize,
    /// Euler steps of B's codec [default: --flow-steps] (B = A's folder at
    /// fewer steps measures what the steps cost).
    #[arg(long, value_name = "N")]
    pub b_flow_steps: Option<usize>,
    /// LM classifier-free guidance scale.
    #[arg(long, value_name = "X", default_value_t = defaults::CFG_SCALE)]
    pub cfg_scale: f32,
    /// Sampling temperature (also of the distributions the KL compares).
    #[arg(long, value_name = "X", default_value_t = defaults::TEMPERATURE)]
    pub temperature: f32,
    /// Top-k of A's sampling and of the KL's reference distribution.
    #[arg(long, value_name = "K", default_value_t = defaults::TOPK)]
    pub topk: usize,
    /// Quality budget file: [model.NAME] tables keyed by the checkpoint's weights SHA-256, or your own
    /// [gate.PROFILE] tables for your model (the default holds the CI's models only).
    #[arg(
        long,
        alias = "thresholds",
        value_name = "FILE",
        default_value = "configs/ab-thresholds.toml"
    )]
    pub budget: PathBuf,
    /// Gate of the budget to apply (default: B's build profile name, else its precision).
    #[arg(long, value_name = "NAME")]
    pub gate: Option<String>,
    /// An fp8 engine of the same model: also report B's cost relative to it (KL, top-1 loss, hidden error).
    #[arg(long, value_name = "DIR")]
    pub fp8: Option<PathBuf>,
    /// Only report; apply no gate.
    #[arg(long, conflicts_with = "gate")]
    pub no_gate: bool,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write report.json, report.md and the PNG plots into this folder.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Intra-op threads per session (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// Runs `heart-eval` with `args` (the first is the program name).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(status(args))
}

/// [`main`]'s exit status: 0 pass (or no gate), 1 a check failed, 2 an error.
pub fn status<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(&cli) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("heart-eval: error: {e}");
            2
        }
    }
}

/// Runs a parsed command; `Ok(false)` when a gate failed.
fn run(cli: &Cli) -> Result<bool, EvalError> {
    let rt = heart_backend::init(cli.ort_lib.as_deref()).map_err(|e| EvalError::Input(e.to_string()))?;
    let args = match &cli.command {
        Command::Ab(args) => args,
        Command::Exact(args) => return super::exact_cli::run(&rt, args),
    };
    let opts = AbOptions {
        a: args.a.clone(),
        b: args.b.clone(),
        prompts: args.prompts.clone(),
        max_prompts: args.max_prompts,
        frames: args.frames,
        cfg_scale: args.cfg_scale,
        sampler: SamplerParams {
            temperature: args.temperature,
            top_k: args.topk,
        },
        seed: args.seed,
        sessions: SessionConfig {
            intra_threads: args.threads,
            ..SessionConfig::default()
        },
        flow_steps: args.flow_steps,
        b_flow_steps: args.b_flow_steps,
    };
    let budget = if args.no_gate {
        None
    } else {
        let m = Manifest::load(&args.b, Verify::Quick)?;
        let name = match &args.gate {
            Some(name) => name.clone(),
            None => m.build_profile.map_or_else(|| m.precision.to_string(), |p| p.name),
        };
        let weights: Vec<&str> = m
            .inputs
            .iter()
            .filter(|i| i.role == "mula_weights")
            .map(|i| i.sha256.as_str())
            .collect();
        Some(Budgets::load(&args.budget)?.lookup(&weights, &name, args.gate.is_some())?)
    };
    let mut report = run_ab(&rt, &opts)?;
    match budget {
        Some(Budget::Gate { name, gate }) => report.apply_gate(&name, &gate),
        Some(Budget::None(why)) => report.budget = Some(why),
        None => {}
    }
    if let Some(fp8) = &args.fp8 {
        let fp8_report = run_ab(
            &rt,
            &AbOptions {
                b: fp8.clone(),
                ..opts.clone()
            },
        )?;
        report.relative_to_fp8 = Some(RelativeCost::of(&report, &fp8_report));
    }
    emit(&report, args)?;
    Ok(report.pass)
}

/// Prints the report and writes the report files.
fn emit(report: &AbReport, args: &AbArgs) -> Result<(), EvalError> {
    if args.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| EvalError::Input(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.markdown());
    }
    if let Some(dir) = &args.report {
        crate::output::write_report(report, dir)?;
    }
    Ok(())
}
