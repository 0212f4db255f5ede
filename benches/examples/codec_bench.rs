//! Codec benchmark on a synthesized checkpoint with the released HeartCodec shapes
//! (spec §1: dim 512, 24 + 6 estimator blocks at 1536 / 3072, scalar decoder
//! 2048 → 64 channels, 48 kHz) and random weights.
//!
//! Prints the export time, the estimator time per Euler step (one batched
//! `[uncond, cond]` call at T = 744), the Euler solve of one window for each step
//! count, and the scalar-decoder time per second of audio, chunked (the CPU
//! default) and whole-window, with the resident memory after each phase, the
//! process peak, and the largest difference between the two decodes. Timings
//! only; nothing is asserted (`runtime/tests/codec_chunked.rs` tests equality).
//!
//! ```text
//! cargo run --release -p heart-bench --example codec_bench -- --steps 10,4
//! # smaller machine: full widths, fewer blocks (4 + 1 keeps the released 4 : 1 mix)
//! cargo run --release -p heart-bench --example codec_bench -- --layers 4 --layers2 1 --estimator-only
//! # the int8 codec (`heart-build --codec-precision int8`) at the same shapes
//! cargo run --release -p heart-bench --example codec_bench -- --layers 4 --layers2 1 --precision int8
//! # an engine folder built before (e.g. `--work W` of an earlier run: W/engine)
//! cargo run --release -p heart-bench --example codec_bench -- --engine W/engine --steps 1
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use heart::checkpoint::Checkpoint;
use heart::config::CodecConfig;
use heart::geometry::WINDOW_LATENTS;
use heart::precision::Precision;
use heart::tensors::{TensorSpec, codec_tensor_specs};
use heart_runtime::codec::{
    CODEC_CONFIG_FILE, Codec, FlowParams, NoiseSource, SeededNoise, WindowInputs, solve_window,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
struct Args {
    /// Work folder for the synthesized checkpoint and engine (default: a temp dir).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Stage-1 estimator blocks (released: 24).
    #[arg(long, default_value_t = 24)]
    layers: usize,
    /// Stage-2 estimator blocks (released: 6).
    #[arg(long, default_value_t = 6)]
    layers2: usize,
    /// Euler step counts to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,4")]
    steps: Vec<usize>,
    /// Codec precision (fp32, fp16 or int8).
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// An existing engine folder to time instead of synthesizing one (its codec
    /// config is used; --layers, --layers2, --precision and --work are ignored).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Time the estimator only (skip the scalar-decoder measurements).
    #[arg(long)]
    estimator_only: bool,
    /// Latent frames per scalar-decoder call of the chunked decode.
    #[arg(long, default_value_t = heart_runtime::codec::chunks::DEFAULT_CHUNK_LATENTS)]
    decode_chunk: NonZeroUsize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let (engine_dir, cfg) = match &args.engine {
        Some(dir) => (dir.clone(), CodecConfig::from_file(&dir.join(CODEC_CONFIG_FILE))?),
        None => build_engine(&args, args.work.as_deref().unwrap_or(tmp.path()))?,
    };

    let rt = heart_backend::init(None)?;
    let t0 = Instant::now();
    let mut codec = Codec::open_with_config(&rt, &engine_dir, cfg.clone())?;
    println!("sessions opened in {:.1} s, RSS {}", t0.elapsed().as_secs_f64(), rss());

    let latent = cfg.out_channels;
    let mut noise = SeededNoise::new(0);
    let mut x0 = vec![0f32; WINDOW_LATENTS * latent];
    noise.fill(&mut x0)?;
    let mut mu = Array2::<f32>::zeros((WINDOW_LATENTS, cfg.dim));
    let mut mu_noise = vec![0f32; mu.len()];
    noise.fill(&mut mu_noise)?;
    mu.iter_mut().zip(&mu_noise).for_each(|(m, &v)| *m = v);

    // Warm-up (first runs include allocator and prepacking work).
    let input = vec![0.1f32; 2 * WINDOW_LATENTS * cfg.in_channels];
    codec.estimator().velocity(&input, WINDOW_LATENTS, &[0.5, 0.5])?;
    let t0 = Instant::now();
    codec.estimator().velocity(&input, WINDOW_LATENTS, &[0.5, 0.5])?;
    println!(
        "estimator, one Euler step (batch 2 × {WINDOW_LATENTS} frames): {:.3} s",
        t0.elapsed().as_secs_f64()
    );

    for &steps in &args.steps {
        let flow = FlowParams {
            num_steps: steps,
            guidance: 1.25,
        };
        let inputs = WindowInputs {
            mu: mu.view(),
            context: &[],
            noise: &x0,
        };
        let t0 = Instant::now();
        solve_window(codec.estimator(), latent, inputs, flow)?;
        let s = t0.elapsed().as_secs_f64();
        println!(
            "window solve, {steps:>2} steps: {s:.2} s ({:.3} s/step), RSS {}, peak {}",
            s / steps as f64,
            rss(),
            peak()
        );
    }

    if args.estimator_only {
        return Ok(());
    }
    let mut latents = vec![0f32; WINDOW_LATENTS * latent];
    noise.fill(&mut latents)?;
    let audio_s = (WINDOW_LATENTS * cfg.samples_per_latent()) as f64 / f64::from(cfg.sample_rate);
    // Chunked first: the process peak printed after it is the chunked decode's.
    let chunked = time_decode(&mut codec, Some(args.decode_chunk), &latents, audio_s)?;
    let whole = time_decode(&mut codec, None, &latents, audio_s)?;
    let diff = chunked
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let peak = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("chunked vs whole-window audio: max |diff| {diff:e} (max |audio| {peak:.3})");
    Ok(())
}

/// Synthesizes the checkpoint of `args` under `work` and exports its engine;
/// returns the engine folder and the codec config.
fn build_engine(args: &Args, work: &Path) -> anyhow::Result<(PathBuf, CodecConfig)> {
    let mut cfg = CodecConfig::heartcodec_oss();
    cfg.num_layers = args.layers;
    cfg.num_layers_2 = args.layers2;
    let (ckpt_dir, engine_dir) = (work.join("checkpoint"), work.join("engine"));
    std::fs::create_dir_all(&ckpt_dir)?;
    std::fs::create_dir_all(&engine_dir)?;

    let t0 = Instant::now();
    let params = synthesize(&cfg, &ckpt_dir.join("model.safetensors"))?;
    println!(
        "synthesized {:.1} M parameters in {:.1} s",
        params as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(&ckpt_dir)?;
    let files = onnx_export::codec::export_codec(&ckpt, &cfg, args.precision, &engine_dir)?;
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    println!(
        "exported {} in {:.1} s ({:.2} GB)",
        args.precision,
        t0.elapsed().as_secs_f64(),
        bytes as f64 / 1e9
    );
    Ok((engine_dir, cfg))
}

/// Decodes one window twice (warm-up, then timed) with decoder chunk `chunk`
/// and prints the time per audio second and the memory after it.
fn time_decode(
    codec: &mut Codec,
    chunk: Option<NonZeroUsize>,
    latents: &[f32],
    audio_s: f64,
) -> anyhow::Result<Vec<f32>> {
    codec.set_decode_chunk(chunk);
    codec.decode_latents(latents)?;
    let t0 = Instant::now();
    let audio = codec.decode_latents(latents)?;
    let s = t0.elapsed().as_secs_f64();
    let label = chunk.map_or("whole window".to_string(), |c| format!("chunks of {c}"));
    println!(
        "scalar decode, {label} ({audio_s:.2} s stereo audio): {s:.2} s = {:.3} s per audio second; RSS {}, peak {}",
        s / audio_s,
        rss(),
        peak()
    );
    Ok(audio)
}

/// Peak resident memory of the process so far, formatted.
fn peak() -> String {
    format!(
        "{:.2} GB",
        heart_runtime::mem::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
    )
}

/// Current resident memory, formatted.
fn rss() -> String {
    format!(
        "{:.2} GB",
        heart_runtime::mem::current_rss_bytes().unwrap_or(0) as f64 / 1e9
    )
}

/// Writes a safetensors checkpoint with every tensor `detokenize` reads, filled
/// with small uniform noise (norm gains and weight-norm `g` 1, PReLU slopes 0.25),
/// streaming one tensor at a time. Returns the parameter count.
fn synthesize(cfg: &CodecConfig, path: &Path) -> anyhow::Result<usize> {
    let specs = codec_tensor_specs(cfg);
    let mut entries = Vec::new();
    let mut offset = 0usize;
    for s in &specs {
        let shape = s.shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let end = offset + 4 * s.numel();
        entries.push(format!(
            r#""{}":{{"dtype":"F32","shape":[{shape}],"data_offsets":[{offset},{end}]}}"#,
            s.name
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = BufWriter::with_capacity(1 << 22, File::create(path)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut chunk = Vec::with_capacity(1 << 20);
    for s in &specs {
        let fill = fill_value(s);
        let mut left = s.numel();
        while left > 0 {
            let n = left.min(1 << 20);
            chunk.clear();
            chunk.extend((0..n).map(|_| fill.unwrap_or_else(|| rng.random_range(-0.02f32..0.02))));
            out.write_all(bytemuck::cast_slice(&chunk))?;
            left -= n;
        }
    }
    out.flush()?;
    Ok(specs.iter().map(TensorSpec::numel).sum())
}

/// Constant fill for tensors whose scale matters for stable activations.
fn fill_value(s: &TensorSpec) -> Option<f32> {
    let n = &s.name;
    if n.ends_with("norm.weight") || n.ends_with("original0") {
        Some(1.0)
    } else if n.contains("activation") {
        Some(0.25)
    } else {
        None
    }
}
