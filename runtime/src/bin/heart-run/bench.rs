//! `heart-run bench`: measures an engine folder against the machine's roofline
//! (see `bench/README.md` for every figure).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use heart::manifest::{EngineKind, Verify};
use heart_runtime::bench::drive::{CodecFloor, CodecPlan, LmFloor, LmPlan, bench_codec, bench_lm};
use heart_runtime::bench::machine::MachineInfo;
use heart_runtime::bench::report::{BenchRecord, EngineIdentity, Row};
use heart_runtime::bench::roofline::LmRoofline;
use heart_runtime::bench::spec::{SpecBench, SpecPlan, bench_speculation};
use heart_runtime::bench::stats::{Repeats, Stats};
use heart_runtime::bench::steppers::{CodecBench, LmStepper};
use heart_runtime::bench::{peak, stream};
use heart_runtime::codec::Codec;
use heart_runtime::lm::{HeartMula, SamplerParams, SessionConfig};
use heart_runtime::settings::defaults;

/// Arguments of `heart-run bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Engine folder written by heart-build.
    #[arg(long, value_name = "DIR")]
    engines: PathBuf,
    /// Timed LM frames per position (after one warm-up frame).
    #[arg(long, default_value_t = 5, value_name = "N")]
    frames: usize,
    /// Backbone positions to measure frames at (clipped to the model's context).
    #[arg(long, value_delimiter = ',', default_values_t = [0usize, 1024, 2048], value_name = "P,P,..")]
    positions: Vec<usize>,
    /// Prompt length of the prefill measurement (0 = skip).
    #[arg(long, default_value_t = 256, value_name = "N")]
    prompt_tokens: usize,
    /// Euler steps per codec window (for the codec's real-time factor).
    #[arg(long, default_value_t = defaults::FLOW_STEPS, value_name = "N")]
    flow_steps: usize,
    /// Timed repeats of the prefill and of each codec measurement (after one warm-up).
    #[arg(long, default_value_t = 3, value_name = "R")]
    repeat: usize,
    /// LM guidance scale (> 1 runs batch 2, as generation does by default).
    #[arg(long, default_value_t = defaults::CFG_SCALE, value_name = "X")]
    cfg_scale: f32,
    /// Skip the codec measurements.
    #[arg(long)]
    no_codec: bool,
    /// Skip the LM frame measurements (the speculative comparison still runs when asked for).
    #[arg(long)]
    no_lm: bool,
    /// Total MiB of the bandwidth kernel's arrays.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    stream_mib: usize,
    /// Rounds of the peak-FLOP/s kernel per thread (each 384 FMAs with AVX-512).
    #[arg(long, default_value_t = 20_000_000, value_name = "N")]
    peak_rounds: usize,
    /// Also compare speculative decoding (the engine's draft, `heart-build
    /// --draft-precision`) with plain decoding, one run per K.
    #[arg(long, value_delimiter = ',', value_name = "K,K,..")]
    speculate: Vec<usize>,
    /// Frame budget of each speculative-comparison generation.
    #[arg(long, default_value_t = 64, value_name = "N")]
    spec_frames: usize,
    /// Seed of the speculative comparison's sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ONNX Runtime intra-op threads of the LM sessions (0 = one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Print the record as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark and prints the record.
pub fn run(args: &BenchArgs, ort_lib: Option<&std::path::Path>) -> Result<()> {
    let rt = heart_runtime::ort_env::init(ort_lib)?;
    let manifest = heart::manifest::Manifest::load(&args.engines, Verify::Quick)
        .with_context(|| format!("opening engine folder {}", args.engines.display()))?;
    let draft = !args.speculate.is_empty() && manifest.file(heart::manifest::EngineKind::DraftBackbone).is_some();
    manifest.require_files(
        &args.engines,
        &heart::engine::runtime_files(manifest.codec.is_some(), draft),
    )?;
    let mut record = BenchRecord::new(MachineInfo::detect());
    record.engine = Some(EngineIdentity::from_manifest(&manifest));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bandwidth = stream::measure(stream::StreamConfig {
        total_bytes: args.stream_mib << 20,
        ..Default::default()
    })?;
    let peak = peak::measure(threads, args.peak_rounds, 3)?;
    record.bandwidth = Some(bandwidth);
    record.peak = Some(peak.clone());

    if !args.no_lm {
        record
            .rows
            .extend(bench_lm_engine(args, &rt, &manifest, bandwidth.read_gb_s)?);
    }
    if !args.speculate.is_empty() {
        let spec = bench_spec(args, &rt, &manifest)?;
        record.rows.extend(spec.rows()?);
        record.speculation = Some(spec);
    }
    if let (Some(cfg), false) = (&manifest.codec, args.no_codec) {
        let mut codec = Codec::open_with_config(&rt, &args.engines, cfg.clone())?;
        let codec_plan = CodecPlan::new(cfg, Repeats::new(1, args.repeat), args.flow_steps);
        let codec_floor = CodecFloor {
            config: cfg.clone(),
            precision: manifest.codec_precision.unwrap_or(manifest.precision),
            bandwidth_gb_s: bandwidth.read_gb_s,
            peak_gflop_s: peak.gflop_s,
        };
        let mut stepper = CodecBench::new(&mut codec, codec_plan.window_latent_frames);
        record
            .rows
            .extend(bench_codec(&mut stepper, &codec_plan, Some(&codec_floor))?);
    }
    if let Some(peak_rss) = heart_runtime::mem::peak_rss_bytes() {
        record.rows.push(Row::new(
            "peak resident memory",
            "MB",
            Stats::from_samples(&[peak_rss as f64 / 1e6])?,
        ));
    }
    if args.json {
        println!("{}", record.to_json()?);
    } else {
        print!("{}", record.render_table());
    }
    Ok(())
}

/// Plain target, draft alone and speculative decoding per K, in one run.
fn bench_spec(
    args: &BenchArgs,
    rt: &heart_runtime::ort_env::OrtRuntime,
    manifest: &heart::manifest::Manifest,
) -> Result<SpecBench> {
    if manifest.file(EngineKind::DraftBackbone).is_none() {
        bail!(
            "--speculate: engine folder {} has no draft (build it with `heart-build … --draft-precision int4`)",
            args.engines.display()
        );
    }
    let (cfg, gen_cfg) = (&manifest.model, &manifest.gen_config);
    let sessions = sessions(args);
    let mut target = HeartMula::open(rt, &args.engines, cfg, gen_cfg, &sessions)?;
    let mut draft = HeartMula::open_draft(rt, &args.engines, cfg, gen_cfg, &sessions)
        .with_context(|| format!("opening the draft of {}", args.engines.display()))?;
    let plan = SpecPlan {
        draft_frames: args.speculate.clone(),
        frames: args.spec_frames,
        prompt_len: args.prompt_tokens.max(1),
        text_vocab: cfg.text_vocab_size,
        cfg_scale: args.cfg_scale,
        sampler: SamplerParams {
            temperature: defaults::TEMPERATURE,
            top_k: defaults::TOPK,
        },
        seed: args.seed,
    };
    Ok(bench_speculation(&mut target, &mut draft, &plan)?)
}

fn sessions(args: &BenchArgs) -> SessionConfig {
    SessionConfig {
        intra_threads: args.threads,
        ..SessionConfig::default()
    }
}

/// Load time and the frame rows of the LM.
fn bench_lm_engine(
    args: &BenchArgs,
    rt: &heart_runtime::ort_env::OrtRuntime,
    manifest: &heart::manifest::Manifest,
    bandwidth_gb_s: f64,
) -> Result<Vec<Row>> {
    let started = Instant::now();
    let mut lm = HeartMula::open(
        rt,
        &args.engines,
        &manifest.model,
        &manifest.gen_config,
        &sessions(args),
    )?;
    let rows = vec![Row::millis(
        "lm load",
        "ms",
        Stats::from_samples(&[started.elapsed().as_secs_f64()])?,
    )];
    let max = lm.dims().max_seq_len;
    let positions: Vec<usize> = args
        .positions
        .iter()
        .copied()
        .filter(|&p| p + args.frames + 2 <= max)
        .collect();
    let capacity = positions.iter().copied().max().unwrap_or(0).max(args.prompt_tokens) + args.frames + 2;
    let batch = if args.cfg_scale > 1.0 { 2 } else { 1 };
    let plan = LmPlan {
        positions,
        repeats: Repeats::new(1, args.frames),
        prefill_tokens: (args.prompt_tokens > 0).then_some(args.prompt_tokens),
    };
    let floor = LmFloor {
        roofline: LmRoofline::from_manifest(manifest, batch),
        bandwidth_gb_s,
    };
    let mut stepper = LmStepper::new(&mut lm, args.cfg_scale, capacity.min(max));
    Ok(rows
        .into_iter()
        .chain(bench_lm(&mut stepper, &plan, Some(&floor))?)
        .collect())
}
