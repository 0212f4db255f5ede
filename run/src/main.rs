//! `heart-run`: tags + lyrics in, a WAV file out; `heart-run bench` measures an
//! engine folder. See `heart-run --help`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use heart::manifest::Verify;
use heart::prompt::read_text_arg;
use heart_backend::BackendChoice;
use heart_runtime::lm::SpecStats;
use heart_runtime::settings::{Settings, SettingsArgs};
use heart_runtime::song::{Pipeline, Progress, Song, SongRequest};
use heart_runtime::wav::{WavFormat, write_wav};
use heart_runtime::wav_stream::WavStream;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

mod doctor;
mod serve;

/// Generates a song from tags and lyrics with engines built by heart-build.
///
/// The language model writes audio codes frame by frame (12.5 frames per second of
/// audio, classifier-free guidance batched, top-k sampling); the codec turns them
/// into 48 kHz stereo (flow matching + CNN decoder). Same inputs and seed give a
/// byte-identical WAV.
#[derive(Debug, Parser)]
#[command(
    name = "heart-run",
    version,
    args_conflicts_with_subcommands = true,
    // `--duration -1` must reach the settings validator, not be taken for a flag.
    allow_negative_numbers = true,
    after_help = "No engines yet? Build them from a checkpoint with `heart-build --mula DIR --codec DIR --out \
                  engines/NAME`, or try the pipeline on random weights: `heart-build synth --size tiny --out ckpt` \
                  then `heart-build --mula ckpt/HeartMuLa-oss-3B --codec ckpt/HeartCodec-oss --out engines/tiny`."
)]
struct Cli {
    /// Other commands.
    #[command(subcommand)]
    command: Option<Command>,
    /// Engine folder written by heart-build.
    #[arg(long, value_name = "DIR")]
    engines: Option<PathBuf>,
    #[command(flatten)]
    text: TextArgs,
    /// Output WAV file, written when the song is done (temp file + rename: a
    /// failure leaves nothing); `-` streams the WAV to stdout as the codec
    /// finishes each window (header sizes 0xFFFFFFFF: "until the end of the
    /// stream"), e.g. `--out - | ffplay -`.
    #[arg(long, value_name = "FILE.wav|-", default_value = "song.wav")]
    out: PathBuf,
    /// Seed of every random draw (LM sampling and codec noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Preset: a name from configs/ (speed, quality) or a TOML file; flags override it.
    #[arg(long, value_name = "NAME|FILE")]
    preset: Option<String>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Write 32-bit float samples instead of 16-bit PCM.
    #[arg(long)]
    float: bool,
    /// Check the SHA-256 of every engine file, not only the small ones.
    #[arg(long)]
    verify: bool,
    /// Where to run: the GPU when this build and machine have one (auto), or
    /// cpu, cuda, tensorrt (these two need `--features gpu`), tensorrt-rtx
    /// (engines of `heart-build --target tensorrt-rtx` on ONNX Runtime's
    /// NvTensorRTRTX plugin); see docs/gpu.md and `heart-run doctor`.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// CUDA-graph capture in a GPU backend's device-resident LM loop (each
    /// repeating step shape captured once and replayed); `off` for A/B checks.
    #[arg(long, value_enum, default_value_t = heart_backend::CudaGraphs::On)]
    cuda_graphs: heart_backend::CudaGraphs,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then .ort/).
    #[arg(long, value_name = "FILE", global = true)]
    ort_lib: Option<PathBuf>,
    /// ONNX Runtime's NvTensorRTRTX plugin library or its folder (default:
    /// HEART_TRT_RTX_EP, then .trt-rtx-ep/ from scripts/setup-trt-rtx-ep.sh).
    #[arg(long, value_name = "FILE|DIR", global = true)]
    trt_rtx_ep: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Print a machine-readable summary (JSON) on stdout (stderr with `--out -`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure an engine folder: prefill, backbone and decoder steps at several
    /// positions, codec step and decode, against the memory/compute roofline.
    Bench(heart_bench::cli::BenchArgs),
    /// What this machine can run (CPU, ONNX Runtime, NVIDIA driver and GPU,
    /// TensorRT-RTX plugin, classic GPU providers, an engine folder) and what
    /// to do about each gap.
    Doctor(doctor::DoctorArgs),
    /// Serve songs over HTTP: a web page at / and a JSON API, one engine
    /// folder loaded once, one song generated at a time.
    ///
    /// Songs wait in a bounded queue (--max-queue; one more is answered 429)
    /// and run one at a time on one worker, since the GPU or the CPU's cores
    /// are one resource. Settings are checked with heart-run's rules and
    /// messages (400), the duration against the engine's context.
    ///
    /// API: POST /v1/songs {tags, lyrics, duration, seed?, preset?, cfg_scale?,
    /// temperature?, topk?, flow_steps?, codec_guidance?, speculate?} -> 202
    /// {id, position}; GET /v1/songs/ID (state, settings, seed, timings,
    /// ttfa_s); GET /v1/songs/ID/events (server-sent events: queued, started,
    /// frames, windows, then done, failed or cancelled); GET
    /// /v1/songs/ID/audio (the WAV, streamed while it is made, the same bytes
    /// as `heart-run --out FILE` once done); DELETE /v1/songs/ID (cancel,
    /// within one frame); GET /v1/songs (the last songs); GET /v1/health.
    /// Finished songs stay in memory, bounded by --keep-songs and --keep-mb.
    ///
    /// It listens on 127.0.0.1:8080 (this machine only) unless --addr says
    /// otherwise. Ctrl-C stops it: waiting songs are cancelled, the running
    /// one stops within a frame, and nothing partial is served or written.
    Serve(serve::ServeArgs),
}

#[derive(Debug, Args)]
struct TextArgs {
    /// Tags, e.g. "piano,happy,wedding".
    #[arg(long, value_name = "TEXT", conflicts_with = "tags_file")]
    tags: Option<String>,
    /// Read the tags from a file.
    #[arg(long, value_name = "FILE")]
    tags_file: Option<PathBuf>,
    /// Lyrics, with section markers such as [verse] and [chorus].
    #[arg(long, value_name = "TEXT", conflicts_with = "lyrics_file")]
    lyrics: Option<String>,
    /// Read the lyrics from a file.
    #[arg(long, value_name = "FILE")]
    lyrics_file: Option<PathBuf>,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    output: &'a Path,
    engines: &'a Path,
    seed: u64,
    settings: Settings,
    prompt_positions: usize,
    frames: usize,
    /// First 16 hex digits of the SHA-256 of the codes (int64 little-endian,
    /// frame by frame): equal on two backends exactly when every code is.
    codes_sha256: String,
    /// The LM's frame loop: `device` (caches on the GPU) or `host`.
    lm_loop: &'static str,
    stop: &'static str,
    audio_seconds: f64,
    sample_rate: u32,
    channels: u16,
    times_s: heart_runtime::song::StageTimes,
    /// From the start of the command to the first audio written.
    ttfa_s: f64,
    total_s: f64,
    lm_frames_per_s: f64,
    real_time_factor: f64,
    peak_rss_bytes: Option<u64>,
    speculation: Option<SpecSummary>,
}

/// Speculative-decoding figures of the `--json` summary.
#[derive(Debug, Serialize)]
struct SpecSummary {
    draft_frames: usize,
    rounds: usize,
    acceptance_per_codebook: Vec<f64>,
    accepted_frames_per_round: f64,
    frames_per_round: f64,
    target_backbone_calls_per_frame: f64,
    target_decoder_calls_per_frame: f64,
    draft_s: f64,
    target_s: f64,
}

impl SpecSummary {
    fn new(draft_frames: usize, s: &SpecStats) -> Self {
        Self {
            draft_frames,
            rounds: s.rounds,
            acceptance_per_codebook: s.acceptance_rates(),
            accepted_frames_per_round: s.accepted_frames_per_round(),
            frames_per_round: s.frames_per_round(),
            target_backbone_calls_per_frame: s.target_backbone_per_frame(),
            target_decoder_calls_per_frame: s.target_decoder_per_frame(),
            draft_s: s.draft_time.as_secs_f64(),
            target_s: s.target_time.as_secs_f64(),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if cli.quiet { "error" } else { "warn" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Some(Command::Bench(args)) => heart_bench::cli::run(args, cli.ort_lib.as_deref()).map_err(anyhow::Error::from),
        Some(Command::Doctor(args)) => doctor::run(args, cli.ort_lib.as_deref(), cli.trt_rtx_ep.as_deref()),
        Some(Command::Serve(args)) => serve::run(args, cli.ort_lib.as_deref(), cli.trt_rtx_ep.clone(), &configs_dir()),
        None => run(&cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heart-run: error: {e:#}");
            if e.chain().any(heart::error::is_disk_full) {
                eprintln!(
                    "heart-run: the disk is full; no output was written: free some space or choose another --out"
                );
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn text(inline: &Option<String>, file: &Option<PathBuf>, what: &str) -> Result<String> {
    match (inline, file) {
        (Some(t), None) => Ok(t.clone()),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("--{what}-file {}", f.display()))?;
            if bytes.is_empty() {
                bail!(
                    "--{what}-file {}: the file is empty (pass --{what} \"\" for none)",
                    f.display()
                );
            }
            if std::str::from_utf8(&bytes).is_err() {
                bail!("--{what}-file {}: not UTF-8 text", f.display());
            }
            Ok(read_text_arg(&f.to_string_lossy())?)
        }
        _ => bail!("give the {what} with --{what} TEXT or --{what}-file FILE"),
    }
}

/// Fails before any work if `out` cannot be written, removes what a killed
/// earlier run left while writing it, and makes Ctrl-C leave no partial file
/// behind.
fn prepare_output(out: &Path) -> Result<()> {
    heart_runtime::wav::remove_abandoned_parts(out);
    let tmp = heart_runtime::wav::temp_path(out);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("--out {}: cannot write there", out.display()))?;
    std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    ctrlc::set_handler(move || {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("\nheart-run: interrupted; no output written");
        heart_backend::library::exit_now(130);
    })
    .context("installing the Ctrl-C handler")
}

fn run(cli: &Cli) -> Result<()> {
    let Some(engines) = &cli.engines else {
        bail!(
            "no --engines folder given.\n  Build engines from a checkpoint: heart-build --mula DIR --codec DIR --out \
             engines/NAME\n  No weights? Try the pipeline on a random checkpoint:\n    heart-build synth --size tiny \
             --out ckpt\n    heart-build --mula ckpt/HeartMuLa-oss-3B --codec ckpt/HeartCodec-oss --out \
             engines/tiny\n    heart-run --engines engines/tiny --tags \"piano,happy\" --lyrics \"[verse] la la\" \
             --out song.wav"
        );
    };
    let streaming = cli.out.as_os_str() == "-";
    if !streaming
        && cli
            .out
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some("wav")
    {
        bail!("--out {}: expected a .wav file name or - for stdout", cli.out.display());
    }
    let tags = text(&cli.text.tags, &cli.text.tags_file, "tags")?;
    let lyrics = text(&cli.text.lyrics, &cli.text.lyrics_file, "lyrics")?;
    let preset = match &cli.preset {
        Some(p) => SettingsArgs::load_preset(p, &configs_dir())?,
        None => SettingsArgs::default(),
    };
    let settings = cli.settings.resolve(&preset)?;
    if !streaming {
        prepare_output(&cli.out)?;
    }

    let start = Instant::now();
    let rt = heart_backend::init(cli.ort_lib.as_deref())?
        .with_backend(cli.backend)
        .with_cuda_graphs(cli.cuda_graphs)
        .with_rtx_plugin(cli.trt_rtx_ep.clone());
    let verify = if cli.verify { Verify::Full } else { Verify::Quick };
    let mut engine = if settings.speculate > 0 {
        Pipeline::open_speculative(&rt, engines, verify)?
    } else {
        Pipeline::open(&rt, engines, verify)?
    };
    let request = SongRequest {
        tags,
        lyrics,
        settings,
        seed: cli.seed,
    };
    let show = !cli.quiet && !cli.json && std::io::stderr().is_terminal();
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    let format = if cli.float {
        WavFormat::Float32
    } else {
        WavFormat::Pcm16
    };
    let launched = start.elapsed();
    let mut progress = Report::new(bar);
    let song = if streaming {
        let mut wav = WavStream::new(
            std::io::stdout().lock(),
            engine.channels(),
            engine.sample_rate(),
            format,
        )
        .context("writing the WAV header to stdout")?;
        engine.generate_streaming(&request, &mut |p| progress.show(p), &mut |chunk| {
            wav.write_chunk(chunk).map_err(std::io::Error::other)
        })?
    } else {
        engine.generate(&request, &mut |p| progress.show(p))?
    };
    progress.bar.finish_and_clear();
    if !streaming {
        write_wav(&cli.out, &song.audio, format).with_context(|| format!("writing {}", cli.out.display()))?;
    }
    let ttfa = (launched + song.times.first_audio).as_secs_f64();
    let total = start.elapsed().as_secs_f64();
    let lm_loop = match engine.lm_loop() {
        heart_runtime::lm::device::LoopKind::Host => "host",
        heart_runtime::lm::device::LoopKind::Device => "device",
    };
    let summary = summarize(cli, engines, settings, (&song, lm_loop), ttfa, total);
    let mut out: Box<dyn std::io::Write> = if streaming {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if cli.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else if !cli.quiet {
        print_summary(&mut out, &summary)?;
    }
    Ok(())
}

fn configs_dir() -> PathBuf {
    let local = PathBuf::from("configs");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The progress bar: LM frames with the codec windows decoded so far while
/// the LM runs, then the remaining windows.
struct Report {
    bar: ProgressBar,
    windows: usize,
}

impl Report {
    fn new(bar: ProgressBar) -> Self {
        Self { bar, windows: 0 }
    }

    fn show(&mut self, p: Progress) {
        let bar = &self.bar;
        match p {
            Progress::Frame { frames, max_frames } => {
                if bar.length() != Some(max_frames as u64) {
                    bar.set_length(max_frames as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "    LM [{bar:40}] {pos}/{len} frames {per_sec}, codec {msg} ({elapsed} elapsed, eta {eta})",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_message("0 windows");
                }
                bar.set_position(frames as u64);
            }
            Progress::CodecStart { windows, done } => {
                self.windows = windows;
                bar.set_length(windows as u64);
                bar.set_position(done as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>6} [{bar:40}] {pos}/{len} windows ({elapsed} elapsed, eta {eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_message("codec");
            }
            Progress::Window { done } if self.windows == 0 => {
                bar.set_message(format!("{done} window{}", if done == 1 { "" } else { "s" }));
            }
            Progress::Window { done } => bar.set_position(done as u64),
        }
    }
}

fn summarize<'a>(
    cli: &'a Cli,
    engines: &'a Path,
    settings: Settings,
    (song, lm_loop): (&Song, &'static str),
    ttfa: f64,
    total: f64,
) -> Summary<'a> {
    let audio_seconds = song.audio.seconds();
    Summary {
        output: &cli.out,
        engines,
        seed: cli.seed,
        settings,
        prompt_positions: song.prompt_len,
        frames: song.frames,
        codes_sha256: codes_digest(song.codes.iter()),
        lm_loop,
        stop: match song.stop {
            heart_runtime::lm::frame_loop::StopReason::EndOfAudio => "end_of_audio",
            heart_runtime::lm::frame_loop::StopReason::MaxLength => "max_length",
        },
        audio_seconds,
        sample_rate: song.audio.sample_rate,
        channels: song.audio.channels,
        times_s: song.times,
        ttfa_s: ttfa,
        total_s: total,
        lm_frames_per_s: song.frames as f64 / song.times.lm.as_secs_f64().max(1e-9),
        real_time_factor: total / audio_seconds.max(1e-9),
        peak_rss_bytes: heart_runtime::mem::peak_rss_bytes(),
        speculation: song
            .speculation
            .as_ref()
            .map(|st| SpecSummary::new(settings.speculate, st)),
    }
}

/// [`Summary::codes_sha256`] of `codes`.
fn codes_digest<'c>(codes: impl IntoIterator<Item = &'c i64>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for c in codes {
        h.update(c.to_le_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn print_summary(out: &mut dyn std::io::Write, s: &Summary<'_>) -> Result<()> {
    writeln!(
        out,
        "Wrote {} ({:.2} s of audio, {} Hz, {} ch) in {:.2} s, first audio after {:.2} s",
        s.output.display(),
        s.audio_seconds,
        s.sample_rate,
        s.channels,
        s.total_s,
        s.ttfa_s
    )?;
    writeln!(
        out,
        "  prompt {:.3} s ({} positions) | LM {:.2} s, {} frames, {:.1} frames/s, stop: {} | codec {:.2} s",
        s.times_s.prompt.as_secs_f64(),
        s.prompt_positions,
        s.times_s.lm.as_secs_f64(),
        s.frames,
        s.lm_frames_per_s,
        s.stop,
        s.times_s.codec.as_secs_f64()
    )?;
    writeln!(
        out,
        "  real-time factor {:.2} (wall / audio; < 1 is faster than real time), peak memory {}, seed {}",
        s.real_time_factor,
        s.peak_rss_bytes
            .map(|b| format!("{:.0} MB", b as f64 / 1e6))
            .unwrap_or_else(|| "n/a".into()),
        s.seed
    )?;
    if let Some(sp) = &s.speculation {
        let rates: Vec<String> = sp
            .acceptance_per_codebook
            .iter()
            .map(|r| {
                if r.is_nan() {
                    "-".into()
                } else {
                    format!("{:.0}%", r * 100.0)
                }
            })
            .collect();
        writeln!(
            out,
            "  speculation K={}: {} rounds, {:.2} drafted frames accepted per round, {:.2} frames per round; target \
             calls per frame: backbone {:.2}, decoder {:.2}; draft {:.2} s, target {:.2} s",
            sp.draft_frames,
            sp.rounds,
            sp.accepted_frames_per_round,
            sp.frames_per_round,
            sp.target_backbone_calls_per_frame,
            sp.target_decoder_calls_per_frame,
            sp.draft_s,
            sp.target_s
        )?;
        writeln!(out, "  acceptance per codebook: {}", rates.join(" "))?;
    }
    Ok(())
}
