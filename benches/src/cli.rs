//! The benchmark's command line (`heart-run bench`, `heart-bench`): measures an
//! engine folder against the machine's roofline (see `benches/README.md` for
//! every figure).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use heart::cost::LmRoofline;
use heart::manifest::Verify;
use heart_backend::SessionConfig;
use heart_runtime::engine::EngineFolder;
use heart_runtime::lm::{GenParams, SamplerParams};
use heart_runtime::settings::defaults;

use crate::BenchError;
use crate::drive::{CodecFloor, CodecPlan, LmFloor, LmPlan, bench_codec, bench_lm};
use crate::machine::MachineInfo;
use crate::report::{BenchRecord, EngineIdentity};
use crate::song::{SongPlan, bench_song};
use crate::speculative::{SpecBench, SpecPlan, bench_speculation};
use crate::stats::{Repeats, Row, Stats};
use crate::steppers::{CodecBench, LmStepper};
use crate::{peak, stream};

/// Arguments of `heart-run bench` / `heart-bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Engine folder written by heart-build.
    #[arg(long, value_name = "DIR")]
    pub engines: PathBuf,
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
    /// Also generate one song of this many seconds end to end (0 = skip):
    /// time to first audio and total, with the LM and codec both loaded.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    song_seconds: f32,
    /// ONNX Runtime intra-op threads of the LM sessions (0 = one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Print the record as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the engine's sessions run (as `heart-run --backend`); the
    /// machine figures (bandwidth, FLOP/s) are the CPU's either way.
    #[arg(long, value_enum, default_value_t = heart_backend::BackendChoice::Cpu)]
    backend: heart_backend::BackendChoice,
    /// CUDA-graph capture in a GPU backend's device-resident LM loop (`off`
    /// launches every kernel each step: the A/B figure for the capture).
    #[arg(long, value_enum, default_value_t = heart_backend::CudaGraphs::On)]
    cuda_graphs: heart_backend::CudaGraphs,
}

/// Runs the benchmark on the ONNX Runtime at `ort_lib` (or the default search
/// path) and prints the record.
pub fn run(args: &BenchArgs, ort_lib: Option<&Path>) -> Result<(), BenchError> {
    let rt = heart_backend::init(ort_lib)
        .map_err(|e| BenchError::engine("loading ONNX Runtime", e))?
        .with_backend(args.backend)
        .with_cuda_graphs(args.cuda_graphs);
    let folder = EngineFolder::open(&rt, &args.engines, Verify::Quick)
        .map_err(|e| BenchError::engine("opening the engine folder", e))?;
    let manifest = folder.manifest();
    let mut record = BenchRecord::new(MachineInfo::detect());
    record.engine = Some(EngineIdentity::from_manifest(manifest));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bandwidth = stream::measure(stream::StreamConfig {
        total_bytes: args.stream_mib << 20,
        ..Default::default()
    })?;
    let peak = peak::measure(threads, args.peak_rounds, 3)?;
    record.bandwidth = Some(bandwidth);
    record.peak = Some(peak.clone());

    if !args.no_lm {
        record.rows.extend(bench_lm_engine(args, &folder, bandwidth.read_gb_s)?);
    }
    if !args.speculate.is_empty() {
        let spec = bench_spec(args, &folder)?;
        record.rows.extend(spec.rows()?);
        record.speculation = Some(spec);
    }
    if let (Some(cfg), false) = (&manifest.codec, args.no_codec) {
        let mut codec = folder.codec().map_err(|e| BenchError::engine("opening the codec", e))?;
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
    if args.song_seconds > 0.0 {
        let plan = SongPlan {
            seconds: args.song_seconds,
            flow_steps: args.flow_steps,
            cfg_scale: args.cfg_scale,
            seed: args.seed,
        };
        record.rows.extend(bench_song(&rt, &args.engines, plan)?);
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

/// The sampling every LM measurement uses: upstream's defaults.
fn sampler() -> SamplerParams {
    SamplerParams {
        temperature: defaults::TEMPERATURE,
        top_k: defaults::TOPK,
    }
}

/// Plain target, draft alone and speculative decoding per K, in one run.
fn bench_spec(args: &BenchArgs, folder: &EngineFolder) -> Result<SpecBench, BenchError> {
    let sessions = sessions(args);
    let open = |what: &'static str, e| BenchError::engine(format!("--speculate: opening the {what}"), e);
    let mut target = folder.lm(&sessions).map_err(|e| open("target", e))?;
    let mut draft = folder.draft(&sessions).map_err(|e| open("draft", e))?;
    let plan = SpecPlan {
        draft_frames: args.speculate.clone(),
        frames: args.spec_frames,
        prompt_len: args.prompt_tokens.max(1),
        text_vocab: folder.manifest().model.text_vocab_size,
        cfg_scale: args.cfg_scale,
        sampler: sampler(),
        seed: args.seed,
    };
    bench_speculation(&mut target, &mut draft, &plan)
}

fn sessions(args: &BenchArgs) -> SessionConfig {
    SessionConfig {
        intra_threads: args.threads,
        ..SessionConfig::default()
    }
}

/// Load time and the frame rows of the LM.
fn bench_lm_engine(args: &BenchArgs, folder: &EngineFolder, bandwidth_gb_s: f64) -> Result<Vec<Row>, BenchError> {
    let started = Instant::now();
    let mut lm = folder
        .lm(&sessions(args))
        .map_err(|e| BenchError::engine("opening the LM", e))?;
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
    let generation = GenParams {
        cfg_scale: args.cfg_scale,
        max_audio_length_ms: 0,
    };
    let plan = LmPlan {
        positions,
        repeats: Repeats::new(1, args.frames),
        prefill_tokens: (args.prompt_tokens > 0).then_some(args.prompt_tokens),
    };
    let floor = LmFloor {
        roofline: LmRoofline::from_manifest(folder.manifest(), generation.batch()),
        bandwidth_gb_s,
    };
    let mut stepper = LmStepper::new(&mut lm, generation, sampler(), capacity.min(max), 0);
    Ok(rows
        .into_iter()
        .chain(bench_lm(&mut stepper, &plan, Some(&floor))?)
        .collect())
}
