//! LM step benchmark on an engine folder: backbone-step and decoder-frame times
//! and the resulting frames/s at backbone positions 0, 1k and 2k.
//!
//! ```text
//! cargo run --release -p heart-runtime --example lm_bench -- ENGINE_DIR [--batch 2] [--threads 0] [--iters 10]
//! ```
//! The engine folder needs its `manifest.toml` (model and generation configs).
//! Each measurement feeds one frame at the given position, then rolls the cache
//! back (`KvCache::truncate`) so every iteration sees the same position; the
//! context up to it is filled by one prefill of placeholder text rows.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use heart::manifest::{Manifest, Verify};
use heart_runtime::lm::{HeartMula, LmError, Prompt, SessionConfig};

/// Benchmark arguments.
#[derive(Debug, Parser)]
struct Args {
    /// Engine folder (backbone.onnx, decoder.onnx, lm_tables.safetensors, manifest.toml).
    engine: PathBuf,
    /// Batch rows: 2 = CFG (the default generation setting), 1 = no guidance.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Intra-op threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed iterations per position (after one warm-up).
    #[arg(long, default_value_t = 10)]
    iters: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let manifest = Manifest::load(&args.engine, Verify::Quick).context("reading the engine manifest")?;
    let rt = heart_runtime::ort_env::init(None)?;
    let sessions = SessionConfig {
        intra_threads: args.threads,
        ..SessionConfig::default()
    };
    let t = Instant::now();
    let mut lm = HeartMula::open(&rt, &args.engine, &manifest.model, &manifest.gen_config, &sessions)?;
    println!(
        "engine {} ({}), batch {}, opened in {:.2} s",
        args.engine.display(),
        manifest.precision,
        args.batch,
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:>9} {:>14} {:>17} {:>9}",
        "position", "backbone ms", "decoder frame ms", "frames/s"
    );
    let max = lm.dims().max_seq_len;
    for pos in [0, 1000, 2000] {
        if pos + 1 > max {
            println!("{pos:>9} skipped: max_seq_len is {max}");
            continue;
        }
        let (backbone, decoder) = measure(&mut lm, args.batch, pos, args.iters)?;
        println!(
            "{pos:>9} {backbone:>14.2} {decoder:>17.2} {:>9.2}",
            1000.0 / (backbone + decoder)
        );
    }
    Ok(())
}

/// Mean backbone-step and decoder-frame milliseconds at `pos`.
fn measure(lm: &mut HeartMula, batch: usize, pos: usize, iters: usize) -> Result<(f64, f64), LmError> {
    let mut st = lm.new_state(batch, pos + 1)?;
    if pos > 0 {
        lm.prefill(&mut st, &Prompt::from_text(&vec![1; pos], 0))?;
    }
    let n = lm.dims().codebooks;
    let frame: Vec<Vec<i64>> = (0..batch)
        .map(|b| (0..n as i64).map(|k| (k * 31 + b as i64) % 1000).collect())
        .collect();
    let (mut backbone, mut decoder) = (0.0, 0.0);
    for it in 0..=iters {
        let t = Instant::now();
        let out = lm.feed_frame(&mut st, &frame)?;
        let b = t.elapsed().as_secs_f64();
        st.backbone.truncate(pos);
        let t = Instant::now();
        lm.decode_frame(&mut st, &out.hidden, &vec![7; batch], &mut |k, _| {
            Ok(vec![k as i64; batch])
        })?;
        let d = t.elapsed().as_secs_f64();
        if it > 0 {
            backbone += b;
            decoder += d;
        }
    }
    let per = 1000.0 / iters.max(1) as f64;
    Ok((backbone * per, decoder * per))
}
