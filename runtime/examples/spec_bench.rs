//! Speculative-decoding benchmark on an engine folder with a draft
//! (`heart-build --draft-precision fp16` or `--draft-backbone-layers N`): the
//! same prompt and seed decoded plainly and with speculation for each `K`,
//! reporting acceptance per codebook, accepted frames per round, target passes
//! per frame and the wall-clock speed-up over plain decoding.
//!
//! ```text
//! cargo run --release -p heart-runtime --example spec_bench -- ENGINE_DIR [--k 2,4] [--frames 64]
//!     [--top-k 50] [--temperature 1.0] [--cfg 1.5] [--threads 0] [--seed 0]
//! ```
//! The prompt is placeholder text rows (no tokenizer needed). On synthesized
//! (random) weights acceptance is not what a real checkpoint gives: optimistic
//! for lower-precision drafts (no outlier activations, benign weights),
//! pessimistic for early-exit drafts (untrained intermediate layers carry no
//! prediction of the output). "draft alone" is the draft's plain cost per
//! frame relative to the target's: speculation can only pay when it is well
//! below 1.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use heart::manifest::{Manifest, Verify};
use heart_runtime::lm::{
    GenParams, HeartMula, Prompt, SamplerParams, Sampling, SeededNoise, SessionConfig, SpecParams, generate,
    generate_speculative,
};

/// Benchmark arguments.
#[derive(Debug, Parser)]
struct Args {
    /// Engine folder with a draft/ (manifest.toml, backbone.onnx, decoder.onnx, lm_tables, draft/*.onnx).
    engine: PathBuf,
    /// Frames drafted per round, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    k: Vec<usize>,
    /// Frames to generate after the first (max_audio_length_ms = 80 × this).
    #[arg(long, default_value_t = 64)]
    frames: u64,
    /// Top-k of the sampler.
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Temperature of the sampler.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Classifier-free guidance scale (1.5 = upstream default, batch 2).
    #[arg(long, default_value_t = 1.5)]
    cfg: f32,
    /// Prompt rows.
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    /// Intra-op threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Noise seed (the same for both decoders).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let manifest = Manifest::load(&args.engine, Verify::Quick).context("reading the engine manifest")?;
    let rt = heart_runtime::ort_env::init(None)?;
    let sessions = SessionConfig {
        intra_threads: args.threads,
        ..SessionConfig::default()
    };
    let (cfg, gen_cfg) = (&manifest.model, &manifest.gen_config);
    let mut target = HeartMula::open(&rt, &args.engine, cfg, gen_cfg, &sessions)?;
    let mut draft = HeartMula::open_draft(&rt, &args.engine, cfg, gen_cfg, &sessions)
        .context("opening the draft (build the engine with --draft-precision or --draft-backbone-layers)")?;
    let draft_precision = manifest
        .file(heart::manifest::EngineKind::DraftBackbone)
        .and_then(|f| f.precision)
        .map_or("?".to_string(), |p| p.to_string());
    let text = (cfg.text_vocab_size as i64 - 1).max(1);
    let ids: Vec<i64> = (0..args.prompt_len as i64).map(|i| (i * 37 + 5) % text).collect();
    let prompt = Prompt::from_text(&ids, args.prompt_len / 4);
    let sampler = SamplerParams {
        temperature: args.temperature,
        top_k: args.top_k,
    };
    let params = GenParams {
        cfg_scale: args.cfg,
        max_audio_length_ms: args.frames * 80,
    };
    println!(
        "engine {} (target {}, draft {draft_precision}), prompt {} rows, {} frames, top-k {}, cfg {}",
        args.engine.display(),
        manifest.precision,
        prompt.len(),
        args.frames + 1,
        args.top_k,
        args.cfg
    );

    // Warm-up: one short plain run so session start-up is not timed.
    let warm = GenParams {
        max_audio_length_ms: 80,
        ..params
    };
    let mut noise = SeededNoise::new(args.seed);
    let mut picker = Sampling {
        params: sampler,
        noise: &mut noise,
    };
    generate(&mut target, &prompt, &warm, &mut picker, &mut |_| {})?;
    generate(&mut draft, &prompt, &warm, &mut picker, &mut |_| {})?;

    let t = Instant::now();
    let mut noise = SeededNoise::new(args.seed);
    let mut picker = Sampling {
        params: sampler,
        noise: &mut noise,
    };
    let plain = generate(&mut target, &prompt, &params, &mut picker, &mut |_| {})?;
    let plain_s = t.elapsed().as_secs_f64();
    let plain_fps = plain.frames.len() as f64 / plain_s;
    println!(
        "plain:   {} frames in {plain_s:.2} s = {plain_fps:.2} frames/s",
        plain.frames.len()
    );

    let t = Instant::now();
    let mut noise = SeededNoise::new(args.seed);
    let mut picker = Sampling {
        params: sampler,
        noise: &mut noise,
    };
    let alone = generate(&mut draft, &prompt, &params, &mut picker, &mut |_| {})?;
    let draft_s = t.elapsed().as_secs_f64();
    println!(
        "draft alone: {} frames in {draft_s:.2} s = {:.2} frames/s ({:.2}x the target's cost per frame)",
        alone.frames.len(),
        alone.frames.len() as f64 / draft_s,
        draft_s / alone.frames.len() as f64 / (plain_s / plain.frames.len() as f64)
    );

    for &k in &args.k {
        let spec = SpecParams {
            generation: params,
            sampler,
            draft_frames: k,
        };
        let mut noise = SeededNoise::new(args.seed);
        let out = generate_speculative(&mut target, &mut draft, &prompt, &spec, &mut noise, &mut |_| {})?;
        let fps = out.stats.frames_per_second();
        println!("speculate K={k}: speed-up {:.2}x over plain", fps / plain_fps);
        for line in out.stats.to_string().lines() {
            println!("    {line}");
        }
    }
    Ok(())
}
