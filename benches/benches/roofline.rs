//! Measures this machine (memory bandwidth, peak f32 FLOP/s) and prints the
//! floors it puts under HeartMuLa frames and HeartCodec windows at every
//! precision, next to the same floors on an NVIDIA GB10 (273 GB/s).
//!
//! ```text
//! cargo bench -p heart-runtime --bench roofline
//! cargo bench -p heart-runtime --bench roofline -- --stream-mib 256 --mula-config ckpt/HeartMuLa-oss-3B/config.json
//! ```
//!
//! Without config files the released 3B HeartMuLa and HeartCodec-oss shapes are
//! used (spec §1). No engine is run: that is `heart-run bench`.
//!
//! `cargo bench` passes `--bench`; without it (as under `cargo test
//! --all-targets`) the program only checks that it runs: tiny in-cache arrays,
//! a short FMA loop, and a note that the machine figures mean nothing.

use std::path::PathBuf;

use clap::Parser;
use heart::config::{CodecConfig, MulaConfig};
use heart::cost::codec::{
    ESTIMATOR_BATCH, EstimatorWeights, latent_frames_per_second, scalar_decoder_weights, scalar_decoder_window_flops,
};
use heart::cost::lm::{compute_floor_ms, memory_floor_ms};
use heart::geometry::WINDOW_LATENTS;
use heart::precision::Precision;
use heart_bench::report::{format_value, render_markdown};
use heart_bench::{BenchRecord, LmRoofline, MachineInfo, StreamConfig, peak, stream};

/// NVIDIA GB10 (DGX Spark) LPDDR5X bandwidth, GB/s, for comparison.
const GB10_GB_S: f64 = 273.0;

/// Machine roofline and per-precision floors.
#[derive(Parser)]
struct Args {
    /// Total size of the three STREAM arrays, MiB.
    #[arg(long, default_value_t = 512)]
    stream_mib: usize,
    /// Repeats of each STREAM kernel and of the FMA loop (best kept).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Threads [default: available cores].
    #[arg(long)]
    threads: Option<usize>,
    /// CFG batch rows of the LM (2 with guidance, 1 without).
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Backbone position for the KV-cache term.
    #[arg(long, default_value_t = 0)]
    position: usize,
    /// A HeartMuLa `config.json` [default: the released 3B shapes].
    #[arg(long)]
    mula_config: Option<PathBuf>,
    /// A HeartCodec `config.json` [default: the HeartCodec-oss shapes].
    #[arg(long)]
    codec_config: Option<PathBuf>,
    /// Passed by `cargo bench`; without it only a quick smoke run is made.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let defaults = StreamConfig::default();
    let threads = args.threads.unwrap_or(defaults.threads);
    let mula = match &args.mula_config {
        Some(path) => MulaConfig::from_file(path)?,
        None => MulaConfig::heartmula_oss_3b(),
    };
    let codec = match &args.codec_config {
        Some(path) => CodecConfig::from_file(path)?,
        None => CodecConfig::heartcodec_oss(),
    };

    // Smoke run: 3 MiB of arrays (in cache), one repeat, 1000 FMA rounds.
    let (stream_mib, repeats, fma_rounds) = if args.bench {
        (args.stream_mib, args.repeats, 20_000_000)
    } else {
        (3, 1, 1000)
    };
    let mut record = BenchRecord::new(MachineInfo::detect());
    let bw = stream::measure(StreamConfig {
        total_bytes: stream_mib << 20,
        threads,
        repeats,
    })?;
    let fma = peak::measure(threads, fma_rounds, repeats)?;
    let (read, gflop_s) = (bw.read_gb_s, fma.gflop_s);
    record.bandwidth = Some(bw);
    record.peak = Some(fma);
    println!("{}", record.render_table());
    if !args.bench {
        println!("smoke run (no --bench): bandwidth and peak above are not measurements; use `cargo bench`\n");
    }

    println!(
        "HeartMuLa {} + {}, batch {}, backbone position {}: bytes read per frame and floors\n",
        mula.backbone_flavor, mula.decoder_flavor, args.batch, args.position
    );
    println!("{}", lm_table(&mula, args.batch, args.position, read));
    println!("HeartCodec: one Euler step (estimator, batch 2 x 744 latent frames) and one window decode\n");
    println!("{}", codec_table(&codec, read, gflop_s));
    Ok(())
}

fn lm_table(mula: &MulaConfig, batch: usize, position: usize, read_gb_s: f64) -> String {
    let rows: Vec<Vec<String>> = Precision::ALL
        .iter()
        .map(|&p| {
            let bytes = LmRoofline::new(mula, p, batch).frame_bytes(position);
            let here = memory_floor_ms(bytes.total(), read_gb_s);
            vec![
                p.to_string(),
                gb(bytes.backbone()),
                gb(bytes.decoder()),
                gb(bytes.total()),
                format_value(memory_floor_ms(bytes.total(), GB10_GB_S)),
                format_value(here),
                format_value(80.0 / here),
            ]
        })
        .collect();
    let here = format!("floor ms @ {read_gb_s:.1} GB/s (here)");
    let headers = [
        "precision",
        "backbone GB",
        "decoder GB (all calls)",
        "frame GB",
        "floor ms @ 273 GB/s (GB10)",
        here.as_str(),
        "max real-time factor here",
    ];
    render_markdown(&headers, &rows, 1)
}

fn codec_table(codec: &CodecConfig, read_gb_s: f64, gflop_s: f64) -> String {
    let est = EstimatorWeights::new(codec);
    let step_flops = est.call_flops(WINDOW_LATENTS, ESTIMATOR_BATCH);
    let decode_flops = scalar_decoder_window_flops(codec, WINDOW_LATENTS);
    let window_s = WINDOW_LATENTS as f64 / latent_frames_per_second(codec);
    let rows: Vec<Vec<String>> = [Precision::Fp32, Precision::Fp16]
        .iter()
        .flat_map(|&p| {
            let step_bytes = est.all().bytes(p);
            let decode_bytes = scalar_decoder_weights(codec).bytes(p);
            [
                ("estimator step", step_bytes, step_flops),
                ("decode window", decode_bytes, decode_flops),
            ]
            .map(|(what, bytes, flops)| {
                let mem = memory_floor_ms(bytes, read_gb_s);
                let compute = compute_floor_ms(flops, gflop_s);
                vec![
                    format!("{what} ({p})"),
                    gb(bytes),
                    format_value(flops as f64 / 1e12),
                    format_value(mem),
                    format_value(compute),
                    format_value(memory_floor_ms(bytes, GB10_GB_S)),
                ]
            })
        })
        .collect();
    let (mem, compute) = (
        format!("memory floor ms @ {read_gb_s:.1} GB/s"),
        format!("compute floor ms @ {gflop_s:.0} GFLOP/s"),
    );
    let headers = [
        "stage",
        "weights GB",
        "TFLOP",
        &mem,
        &compute,
        "memory floor ms @ 273 GB/s",
    ];
    format!(
        "{}\nA window is {window_s:.2} s of audio; scalar decoding costs {} GFLOP per second of audio.\n",
        render_markdown(&headers, &rows, 1),
        format_value(decode_flops as f64 / window_s / 1e9)
    )
}

fn gb(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / 1e9)
}
