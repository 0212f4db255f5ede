//! `heart-eval exact`: the exactness gate's command line (see [`super::exact`]).

use std::path::PathBuf;

use clap::Args;

use super::EvalError;
use super::ab::AbOptions;
use super::exact::run_exact;
use heart_backend::{OrtRuntime, SessionConfig};
use heart_runtime::lm::SamplerParams;
use heart_runtime::settings::defaults;

/// Arguments of `heart-eval exact`.
#[derive(Debug, Args)]
pub struct ExactArgs {
    /// The quantized engine folder under test.
    #[arg(long, value_name = "DIR")]
    pub engine: PathBuf,
    /// Its simulation: `heart-build simulate --engine DIR --mula CHECKPOINT [--codec CODEC] --out SIM`.
    #[arg(long, value_name = "DIR")]
    pub simulation: PathBuf,
    /// Prompt set: a folder with prompts.toml, or the file itself.
    #[arg(long, value_name = "PATH", default_value = "calibration")]
    pub prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long, value_name = "N")]
    pub max_prompts: Option<usize>,
    /// Frames the simulation generates per prompt after the first.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub frames: usize,
    /// Base seed of the sampling and of the codec noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// LM classifier-free guidance scale.
    #[arg(long, value_name = "X", default_value_t = defaults::CFG_SCALE)]
    pub cfg_scale: f32,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Intra-op threads per session (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// Runs `heart-eval exact`; `Ok(false)` when a quantity exceeds its tolerance.
pub fn run(rt: &OrtRuntime, args: &ExactArgs) -> Result<bool, EvalError> {
    let opts = AbOptions {
        a: args.simulation.clone(),
        b: args.engine.clone(),
        prompts: args.prompts.clone(),
        max_prompts: args.max_prompts,
        frames: args.frames,
        cfg_scale: args.cfg_scale,
        sampler: SamplerParams {
            temperature: defaults::TEMPERATURE,
            top_k: defaults::TOPK,
        },
        seed: args.seed,
        sessions: SessionConfig {
            intra_threads: args.threads,
            ..SessionConfig::default()
        },
        flow_steps: defaults::FLOW_STEPS,
        b_flow_steps: None,
    };
    let report = run_exact(rt, &opts)?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| EvalError::Input(e.to_string()))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.markdown());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &json).map_err(|source| EvalError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report.pass)
}
