//! Command-line interface of `heart-build`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use heart::precision::Precision;

use crate::synth::SynthSize;

/// Builds HeartMuLa + HeartCodec engines from checkpoints.
///
/// Reads a HeartMuLa checkpoint (Hugging Face layout, safetensors) and optionally a
/// HeartCodec checkpoint, validates every tensor, exports ONNX graphs at the chosen
/// precision and writes a self-contained engine folder with a manifest.toml
/// (files, precisions, SHA-256 of every file and build input). The folder is
/// written under a temporary name and renamed when complete.
#[derive(Debug, Parser)]
#[command(
    name = "heart-build",
    version,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true,
    after_help = "No weights at hand? `heart-build synth --size tiny --out ckpt` writes a random checkpoint \
                  with the real layout; then `heart-build --mula ckpt/HeartMuLa-oss-3B --codec ckpt/HeartCodec-oss \
                  --out engines/tiny`."
)]
pub struct Cli {
    /// Engine build (the default command).
    #[command(flatten)]
    pub build: Option<BuildArgs>,
    /// Other commands.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a checkpoint with the real upstream layout and random weights.
    Synth(SynthArgs),
    /// Build the simulation of a quantized engine (reference-dequantized weights, the engine's
    /// activation scales) for `heart-eval exact`.
    Simulate(SimulateArgs),
}

/// The checkpoints a build reads (`--mula`, `--codec`, `--tokenizer`, `--gen-config`).
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// HeartMuLa checkpoint directory (config.json + model.safetensors or index + shards).
    #[arg(long, value_name = "DIR")]
    pub mula: PathBuf,
    /// HeartCodec checkpoint directory; without it only the LM engines are built.
    #[arg(long, value_name = "DIR")]
    pub codec: Option<PathBuf>,
    /// tokenizer.json (default: next to the model files or one level up).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// gen_config.json (default: next to the model files or one level up).
    #[arg(long, value_name = "FILE")]
    pub gen_config: Option<PathBuf>,
}

/// The argument group whose presence makes [`Cli::build`] `Some`. clap leaves
/// the group of a struct with a flattened member empty, so `--out`, which
/// every build requires, joins it by name.
const BUILD_GROUP: &str = "build";

/// Arguments of an engine build.
#[derive(Debug, Clone, Args)]
#[group(id = BUILD_GROUP)]
pub struct BuildArgs {
    /// The checkpoints to build from.
    #[command(flatten)]
    pub input: InputArgs,
    /// LM precision; selects the build profile of that name unless --profile is given [default: fp32].
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Build profile: a built-in name (fp32, fp16, fp8, fp4, fp4-w4a4, int8, int4, int4-heads) or a .toml file (see configs/build/).
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// Codec precision: fp32, fp16 (f16 storage, f32 compute) or int8 (the flow
    /// estimator's linears as dynamic int8 products: faster on CPUs; `heart-eval
    /// ab` measures what it costs). Upstream warns that below fp32 audio degrades.
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    pub codec_precision: Precision,
    /// Calibration prompt set (folder with prompts.toml) for profiles that quantize activations [default: calibration].
    #[arg(long, value_name = "DIR")]
    pub calibration: Option<PathBuf>,
    /// Also expose every layer's residual stream (`tap.layer_*` outputs) for `heart-eval ab`.
    #[arg(long)]
    pub layer_taps: bool,
    /// Engine target: portable ONNX graphs; those in their TensorRT form plus TensorRT engines for this
    /// machine's GPU (needs a build with `--features gpu`); or plus TensorRT-RTX engines for --gpu-arch, built
    /// ahead of time on any machine (needs `bash scripts/setup-trt-rtx.sh`). See docs/gpu.md.
    #[arg(long, value_enum, default_value = "onnx")]
    pub target: BuildTarget,
    /// GPU architecture of `--target tensorrt-rtx` engines: sm121 (GB10 / DGX Spark), sm120 (RTX 50), sm89
    /// (RTX 40), sm86 (RTX 30).
    #[arg(long, value_enum, default_value = "sm121")]
    pub gpu_arch: crate::trt_rtx::GpuArch,
    /// TensorRT-RTX install of `scripts/setup-trt-rtx.sh` [default: $HEART_TRT_RTX, else `.trt-rtx/` in the
    /// current directory, above the executable or in the source tree].
    #[arg(long, value_name = "DIR")]
    pub trt_rtx: Option<PathBuf>,
    /// Output engine folder.
    #[arg(long, value_name = "DIR", group = BUILD_GROUP)]
    pub out: PathBuf,
    /// Replace an existing engine folder.
    #[arg(long)]
    pub force: bool,
    /// Also build a speculative-decoding draft at this precision into <out>/draft/ (a cheaper build of the
    /// same model for `heart-run --speculate K`).
    #[arg(long, value_name = "PRECISION", value_parser = parse_precision)]
    pub draft_precision: Option<Precision>,
    /// Early-exit draft: keep only the first N backbone layers (implies a draft; precision defaults to --precision).
    #[arg(long, value_name = "N")]
    pub draft_backbone_layers: Option<usize>,
    /// Early-exit draft: keep only the first N decoder layers (implies a draft; precision defaults to --precision).
    #[arg(long, value_name = "N")]
    pub draft_decoder_layers: Option<usize>,
}

impl BuildArgs {
    /// The build `heart-build --mula MULA --out OUT` asks for: every other
    /// flag at its command-line default (parsed, so the defaults have one home).
    pub fn new(mula: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        let args = [
            "heart-build".into(),
            "--mula".into(),
            mula.into().into_os_string(),
            "--out".into(),
            out.into().into_os_string(),
        ];
        Cli::try_parse_from(args)
            .expect("--mula and --out are the only required flags")
            .build
            .expect("flags without a subcommand are a build")
    }

    /// The draft options.
    pub fn draft(&self) -> crate::draft::DraftArgs {
        crate::draft::DraftArgs {
            precision: self.draft_precision,
            backbone_layers: self.draft_backbone_layers,
            decoder_layers: self.draft_decoder_layers,
        }
    }
}

/// What `--target` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildTarget {
    /// Portable ONNX graphs (any ONNX Runtime provider).
    Onnx,
    /// The ONNX graphs in their TensorRT form plus TensorRT engines for this machine's GPU.
    Tensorrt,
    /// The ONNX graphs in their TensorRT form plus TensorRT-RTX engines for `--gpu-arch`, built without a GPU.
    TensorrtRtx,
}

impl BuildTarget {
    /// The graph form this target exports.
    pub fn form(self) -> onnx_export::lm::GraphForm {
        match self {
            Self::Onnx => onnx_export::lm::GraphForm::Cpu,
            Self::Tensorrt | Self::TensorrtRtx => onnx_export::lm::GraphForm::TensorRt,
        }
    }
}

/// Arguments of `synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Model size: tiny (kB, tests), small (~1 GB, quick benchmarks), full (real 3B shapes, ~22 GB).
    #[arg(long, value_enum, default_value = "tiny")]
    pub size: SynthSize,
    /// Output directory (gets HeartMuLa-oss-3B/, HeartCodec-oss/, tokenizer.json, gen_config.json).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the random weights (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// LM weights with the statistics of trained LLMs that make quantization hard: outlier channels
    /// (RMSNorm gains 10-30x), an attention-sink BOS token, Student-t weights, per-layer scale spread.
    #[arg(long)]
    pub realistic: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}

/// Arguments of `heart-build simulate`.
#[derive(Debug, Args)]
#[command(
    mut_arg("mula", |a| a.help("The HeartMuLa checkpoint the engine was built from")),
    mut_arg("codec", |a| a.help("The HeartCodec checkpoint (simulated at fp32), if the engine has a codec"))
)]
pub struct SimulateArgs {
    /// The quantized engine folder to simulate (built by heart-build).
    #[arg(long, value_name = "DIR")]
    pub engine: PathBuf,
    /// The checkpoints the engine was built from.
    #[command(flatten)]
    pub input: InputArgs,
    /// Output folder of the simulation.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}
