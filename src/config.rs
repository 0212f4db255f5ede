//! Model configurations: HeartMuLa (`config.json` + flavor table), generation ids
//! (`gen_config.json`) and HeartCodec (`config.json`).
//!
//! Two layers, as in candle: `Raw*` structs mirror the JSON files exactly (serde),
//! and are resolved once into plain configs with no `Option`s that the rest of the
//! code uses. Flavor names select hyper-parameters from a built-in table (spec §2.1);
//! the fixtures' extra `tiny_flavors` key supplies parameters for other names.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of one torchtune Llama-3.2 decoder stack (backbone or decoder).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlavorParams {
    /// Transformer layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// Model width.
    pub embed_dim: usize,
    /// RoPE table length and KV-cache capacity.
    pub max_seq_len: usize,
    /// SwiGLU hidden width.
    pub intermediate_dim: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// RoPE base.
    pub rope_base: f64,
    /// Llama-3 RoPE scale factor.
    pub scale_factor: f64,
}

impl FlavorParams {
    /// Per-head width (`embed_dim / num_heads`).
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Built-in flavors of upstream `heartmula/modeling_heartmula.py`.
    pub fn builtin(name: &str) -> Option<Self> {
        let base = |num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len, intermediate_dim| Self {
            num_layers,
            num_heads,
            num_kv_heads,
            embed_dim,
            max_seq_len,
            intermediate_dim,
            norm_eps: 1e-5,
            rope_base: 500_000.0,
            scale_factor: 32.0,
        };
        match name {
            "llama-3B" => Some(base(28, 24, 8, 3072, 8192, 8192)),
            "llama-300M" => Some(base(3, 8, 4, 3072, 2048, 8192)),
            "llama-400M" => Some(base(4, 8, 4, 3072, 2048, 8192)),
            "llama-7B" => Some(base(32, 32, 8, 4096, 8192, 14336)),
            _ => None,
        }
    }

    fn check(&self, what: &str) -> std::result::Result<(), String> {
        let fail = |m: String| Err(format!("{what}: {m}"));
        for (field, value, max) in [
            ("num_layers", self.num_layers, limits::LAYERS),
            ("num_heads", self.num_heads, limits::HEADS),
            ("num_kv_heads", self.num_kv_heads, limits::HEADS),
            ("embed_dim", self.embed_dim, limits::WIDTH),
            ("intermediate_dim", self.intermediate_dim, limits::WIDTH),
            ("max_seq_len", self.max_seq_len, limits::SEQ_LEN),
        ] {
            if value == 0 || value > max {
                return fail(format!("{field} {value} is outside 1..={max}"));
            }
        }
        for (field, value) in [
            ("norm_eps", self.norm_eps),
            ("rope_base", self.rope_base),
            ("scale_factor", self.scale_factor),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return fail(format!("{field} {value} must be a positive finite number"));
            }
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return fail(format!(
                "embed_dim {} is not a multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return fail(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!("head_dim {} must be even for RoPE", self.head_dim()));
        }
        Ok(())
    }

    /// Weights of one stack (attention + SwiGLU per layer), in parameters.
    fn parameters(&self) -> u128 {
        let (d, i) = (self.embed_dim as u128, self.intermediate_dim as u128);
        let kv = (self.num_kv_heads * self.head_dim()) as u128;
        self.num_layers as u128 * (2 * d * d + 2 * d * kv + 3 * d * i)
    }

    /// Bytes of an f32 KV cache at full capacity for a CFG pair (batch 2).
    fn kv_cache_bytes(&self) -> u128 {
        2 * self.num_layers as u128 * 2 * (self.num_kv_heads * self.head_dim()) as u128 * self.max_seq_len as u128 * 4
    }
}

/// Upper bounds on configuration values read from files (checkpoint
/// `config.json`, an engine's manifest). Each is far above any HeartMuLa /
/// HeartCodec release (the largest flavor, `llama-7B`, has 32 layers of width
/// 4096) and far below a value that would make a reader allocate terabytes:
/// a hostile file is refused with a message naming the field instead.
pub mod limits {
    /// Transformer layers of one stack, codec blocks.
    pub const LAYERS: usize = 1024;
    /// Attention heads.
    pub const HEADS: usize = 1024;
    /// Model, hidden, SwiGLU and codec widths.
    pub const WIDTH: usize = 1 << 17;
    /// RoPE table length / KV-cache capacity.
    pub const SEQ_LEN: usize = 1 << 20;
    /// Text or audio vocabulary size, codebook size.
    pub const VOCAB: usize = 1 << 22;
    /// Audio codebooks / RVQ quantizers.
    pub const CODEBOOKS: usize = 64;
    /// Upsampling stages of the scalar decoder.
    pub const UPSAMPLE_STAGES: usize = 16;
    /// One upsampling factor, kernel size, samples per latent.
    pub const KERNEL: usize = 1024;
    /// Whole LM weights at f32, and its CFG KV cache at full capacity, in bytes
    /// (1 TiB; HeartMuLa-oss-3B needs 16 GB and 3.7 GB).
    pub const MODEL_BYTES: u128 = 1 << 40;
}

/// `config.json` of a HeartMuLa checkpoint, as written by upstream.
#[derive(Debug, Clone, Deserialize)]
pub struct RawMulaConfig {
    /// Backbone flavor name, e.g. `llama-3B`.
    pub backbone_flavor: String,
    /// Decoder flavor name, e.g. `llama-300M`.
    pub decoder_flavor: String,
    /// Text vocabulary size (rows of `text_embeddings`).
    pub text_vocab_size: usize,
    /// Audio vocabulary per codebook (codes + specials).
    pub audio_vocab_size: usize,
    /// Number of audio codebooks (8).
    pub audio_num_codebooks: usize,
    /// MuQ embedding width.
    pub muq_dim: usize,
    /// Older transformers write `torch_dtype`.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Newer transformers write `dtype`.
    #[serde(default)]
    pub dtype: Option<String>,
    /// Extra flavors (fixture sets) keyed by flavor name.
    #[serde(default)]
    pub tiny_flavors: BTreeMap<String, FlavorParams>,
}

/// Resolved HeartMuLa configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulaConfig {
    /// Backbone flavor name.
    pub backbone_flavor: String,
    /// Decoder flavor name.
    pub decoder_flavor: String,
    /// Backbone hyper-parameters.
    pub backbone: FlavorParams,
    /// Decoder hyper-parameters.
    pub decoder: FlavorParams,
    /// Text vocabulary size.
    pub text_vocab_size: usize,
    /// Audio vocabulary per codebook.
    pub audio_vocab_size: usize,
    /// Number of audio codebooks.
    pub audio_num_codebooks: usize,
    /// MuQ embedding width.
    pub muq_dim: usize,
    /// Stored weight dtype as declared by the config (`float32`, `bfloat16`, ...).
    pub dtype: String,
}

impl MulaConfig {
    /// The released HeartMuLa-oss-3B configuration (spec §1): the built-in
    /// `llama-3B` backbone and `llama-300M` decoder, 128,256 text tokens, 8
    /// codebooks of 8197 audio tokens.
    pub fn heartmula_oss_3b() -> Self {
        let raw = RawMulaConfig {
            backbone_flavor: "llama-3B".into(),
            decoder_flavor: "llama-300M".into(),
            text_vocab_size: 128_256,
            audio_vocab_size: 8197,
            audio_num_codebooks: 8,
            muq_dim: 512,
            torch_dtype: None,
            dtype: None,
            tiny_flavors: BTreeMap::new(),
        };
        Self::resolve(raw).expect("the built-in flavors resolve (tested)")
    }

    /// Reads and resolves a HeartMuLa `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawMulaConfig = read_json(path)?;
        Self::resolve(raw).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Resolves flavor names to hyper-parameters and checks consistency.
    pub fn resolve(raw: RawMulaConfig) -> std::result::Result<Self, String> {
        let flavor = |name: &str, field: &str| {
            raw.tiny_flavors
                .get(name)
                .copied()
                .or_else(|| FlavorParams::builtin(name))
                .ok_or_else(|| {
                    format!(
                        "{field} `{name}` is unknown (built-in: llama-3B, llama-300M, llama-400M, llama-7B; \
                         others need an entry in `tiny_flavors`)"
                    )
                })
        };
        let backbone = flavor(&raw.backbone_flavor, "backbone_flavor")?;
        let decoder = flavor(&raw.decoder_flavor, "decoder_flavor")?;
        let dtype = raw.dtype.or(raw.torch_dtype).unwrap_or_else(|| "float32".to_string());
        let cfg = Self {
            backbone_flavor: raw.backbone_flavor,
            decoder_flavor: raw.decoder_flavor,
            backbone,
            decoder,
            text_vocab_size: raw.text_vocab_size,
            audio_vocab_size: raw.audio_vocab_size,
            audio_num_codebooks: raw.audio_num_codebooks,
            muq_dim: raw.muq_dim,
            dtype,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks consistency and [`limits`]: every value a reader sizes an
    /// allocation by is bounded, so a hostile `config.json` or manifest is
    /// refused before anything is allocated.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.backbone.check("backbone")?;
        self.decoder.check("decoder")?;
        if self.audio_num_codebooks < 2 || self.audio_num_codebooks > limits::CODEBOOKS {
            return Err(format!(
                "audio_num_codebooks {} is outside 2..={}",
                self.audio_num_codebooks,
                limits::CODEBOOKS
            ));
        }
        if self.text_vocab_size == 0 || self.muq_dim == 0 {
            return Err(format!(
                "text_vocab_size ({}) and muq_dim ({}) must be > 0",
                self.text_vocab_size, self.muq_dim
            ));
        }
        if self.audio_vocab_size < 6 {
            return Err(format!(
                "audio_vocab_size {} leaves no room for the 5 special ids",
                self.audio_vocab_size
            ));
        }
        for (field, value) in [
            ("text_vocab_size", self.text_vocab_size),
            ("audio_vocab_size", self.audio_vocab_size),
        ] {
            if value > limits::VOCAB {
                return Err(format!("{field} {value} is above the limit {}", limits::VOCAB));
            }
        }
        if self.muq_dim > limits::WIDTH {
            return Err(format!("muq_dim {} is above the limit {}", self.muq_dim, limits::WIDTH));
        }
        let d = self.backbone.embed_dim as u128;
        let tables = (self.text_vocab_size as u128 + (self.audio_vocab_size * self.audio_num_codebooks) as u128) * d;
        let parameters = self.backbone.parameters() + self.decoder.parameters() + 2 * tables;
        let kv = self.backbone.kv_cache_bytes() + self.decoder.kv_cache_bytes();
        for (what, bytes) in [("the f32 weights", parameters * 4), ("the KV caches", kv)] {
            if bytes > limits::MODEL_BYTES {
                return Err(format!(
                    "this configuration would need {} GB for {what}, above the limit of {} GB",
                    bytes / 1_000_000_000,
                    limits::MODEL_BYTES / 1_000_000_000
                ));
            }
        }
        Ok(())
    }

    /// Number of real codec codes per codebook (`audio_vocab_size - 5`, upstream 8192).
    pub fn codebook_size(&self) -> usize {
        self.audio_vocab_size - 5
    }
}

/// `gen_config.json`: special token ids used by prompt building and the frame loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenConfig {
    /// Text begin-of-sequence id (Llama-3: 128000).
    pub text_bos_id: i64,
    /// Text end-of-sequence id (Llama-3: 128001).
    pub text_eos_id: i64,
    /// Audio end-of-audio id (8193).
    pub audio_eos_id: i64,
    /// Filler id of the masked text column in audio rows (0).
    pub empty_id: i64,
}

impl GenConfig {
    /// Reads `gen_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Checks that every id indexes the model's tables: text ids below
    /// `text_vocab_size`, the audio EOS below `audio_vocab_size`.
    pub fn check_against(&self, cfg: &MulaConfig) -> std::result::Result<(), String> {
        let text = [
            ("text_bos_id", self.text_bos_id),
            ("text_eos_id", self.text_eos_id),
            ("empty_id", self.empty_id),
        ];
        for (field, id) in text {
            if !(0..cfg.text_vocab_size as i64).contains(&id) {
                return Err(format!(
                    "{field} {id} is outside the text vocabulary 0..{} of config.json",
                    cfg.text_vocab_size
                ));
            }
        }
        if !(0..cfg.audio_vocab_size as i64).contains(&self.audio_eos_id) {
            return Err(format!(
                "audio_eos_id {} is outside the audio vocabulary 0..{} of config.json",
                self.audio_eos_id, cfg.audio_vocab_size
            ));
        }
        Ok(())
    }
}

/// `config.json` of a HeartCodec checkpoint (upstream field names; every field the
/// decode path needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodecConfig {
    /// RVQ / conditioning width (512).
    pub dim: usize,
    /// Codes per quantizer (8192).
    pub codebook_size: usize,
    /// Codebook vector width (32).
    pub codebook_dim: usize,
    /// Number of RVQ quantizers (8).
    pub num_quantizers: usize,
    /// Estimator head width (64).
    pub attention_head_dim: usize,
    /// Estimator input channels (`256 + 256 + dim`).
    pub in_channels: usize,
    /// Estimator heads (24).
    pub num_attention_heads: usize,
    /// Stage-1 blocks (24).
    pub num_layers: usize,
    /// Stage-2 blocks (6).
    pub num_layers_2: usize,
    /// Latent channels (256).
    pub out_channels: usize,
    /// Output sample rate (48000).
    pub sample_rate: u32,
    /// Samples per latent frame of the scalar model's post-processor (2).
    pub num_samples: usize,
    /// ConvTranspose strides of the scalar decoder.
    pub upsample_factors: Vec<usize>,
    /// ConvTranspose kernels of the scalar decoder.
    pub upsample_kernel_sizes: Vec<usize>,
    /// Latent width per audio channel (128).
    pub latent_hidden_dim: usize,
    /// Kernel of the post-processor and the last conv (7).
    pub default_kernel_size: usize,
    /// Kernel of `decoder.0` (5).
    pub delay_kernel_size: usize,
    /// Width of the last scalar-decoder block (64).
    pub init_channel: usize,
    /// Kernel of the residual units' first conv (7).
    pub res_kernel_size: usize,
}

impl CodecConfig {
    /// The released HeartCodec-oss `config.json` (spec §1).
    pub fn heartcodec_oss() -> Self {
        Self {
            dim: 512,
            codebook_size: 8192,
            codebook_dim: 32,
            num_quantizers: 8,
            attention_head_dim: 64,
            in_channels: 1024,
            num_attention_heads: 24,
            num_layers: 24,
            num_layers_2: 6,
            out_channels: 256,
            sample_rate: 48_000,
            num_samples: 2,
            upsample_factors: vec![5, 4, 4, 4, 3],
            upsample_kernel_sizes: vec![10, 8, 8, 8, 6],
            latent_hidden_dim: 128,
            default_kernel_size: 7,
            delay_kernel_size: 5,
            init_channel: 64,
            res_kernel_size: 7,
        }
    }
}

impl CodecConfig {
    /// Reads a HeartCodec `config.json` and checks the constraints upstream's
    /// `detokenize` imposes (spec §4, fixture README).
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_json(path)?;
        cfg.check().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks the constraints upstream's `detokenize` imposes and [`limits`]
    /// on every size the codec runtime allocates by.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (field, value, max) in [
            ("dim", self.dim, limits::WIDTH),
            ("codebook_size", self.codebook_size, limits::VOCAB),
            ("codebook_dim", self.codebook_dim, limits::WIDTH),
            ("num_quantizers", self.num_quantizers, limits::CODEBOOKS),
            ("attention_head_dim", self.attention_head_dim, limits::WIDTH),
            ("num_attention_heads", self.num_attention_heads, limits::HEADS),
            ("num_layers", self.num_layers, limits::LAYERS),
            ("num_layers_2", self.num_layers_2, limits::LAYERS),
            ("latent_hidden_dim", self.latent_hidden_dim, limits::WIDTH),
            ("out_channels", self.out_channels, limits::WIDTH),
            ("in_channels", self.in_channels, 4 * limits::WIDTH),
            ("num_samples", self.num_samples, limits::KERNEL),
            ("default_kernel_size", self.default_kernel_size, limits::KERNEL),
            ("delay_kernel_size", self.delay_kernel_size, limits::KERNEL),
            ("init_channel", self.init_channel, limits::WIDTH),
            ("res_kernel_size", self.res_kernel_size, limits::KERNEL),
            ("sample_rate", self.sample_rate as usize, 1 << 20),
        ] {
            if value == 0 || value > max {
                return Err(format!("{field} {value} is outside 1..={max}"));
            }
        }
        if self.out_channels != 2 * self.latent_hidden_dim {
            return Err(format!(
                "out_channels {} must be 2 x latent_hidden_dim {} (stereo split)",
                self.out_channels, self.latent_hidden_dim
            ));
        }
        if self.in_channels != 2 * self.out_channels + self.dim {
            return Err(format!(
                "in_channels {} must equal 2 x out_channels + dim = {}",
                self.in_channels,
                2 * self.out_channels + self.dim
            ));
        }
        if self.upsample_factors.len() != self.upsample_kernel_sizes.len() || self.upsample_factors.is_empty() {
            return Err("upsample_factors and upsample_kernel_sizes must be non-empty and of equal length".into());
        }
        if self.upsample_factors.len() > limits::UPSAMPLE_STAGES {
            return Err(format!(
                "{} upsample_factors; at most {} stages",
                self.upsample_factors.len(),
                limits::UPSAMPLE_STAGES
            ));
        }
        let stages = self.upsample_factors.iter().chain(&self.upsample_kernel_sizes);
        if let Some(bad) = stages.copied().find(|&v| v == 0 || v > limits::KERNEL) {
            return Err(format!(
                "upsample factor or kernel {bad} is outside 1..={}",
                limits::KERNEL
            ));
        }
        if (self.init_channel as u128) << self.upsample_factors.len() > limits::WIDTH as u128 {
            return Err(format!(
                "init_channel {} x 2^{} stages exceeds the width limit {}",
                self.init_channel,
                self.upsample_factors.len(),
                limits::WIDTH
            ));
        }
        let per_latent: u128 =
            self.upsample_factors.iter().map(|&f| f as u128).product::<u128>() * self.num_samples as u128;
        if per_latent > limits::SEQ_LEN as u128 {
            return Err(format!(
                "{per_latent} audio samples per latent frame (product of upsample_factors x num_samples) exceeds {}",
                limits::SEQ_LEN
            ));
        }
        if !self.attention_head_dim.is_multiple_of(2) {
            return Err("attention_head_dim must be even".into());
        }
        Ok(())
    }

    /// Dilations of the five residual units in every scalar-decoder block
    /// (hard-coded upstream, not in `config.json`).
    pub const RES_DILATIONS: [usize; 5] = [1, 3, 5, 7, 9];

    /// Width of the sinusoidal timestep features fed to `adaln_single*`
    /// (256 cosines + 256 sines, hard-coded upstream).
    pub const TIMESTEP_FEATURES: usize = 512;

    /// Stage-1 estimator width (`heads * head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Stage-2 estimator width (twice the stage-1 width, same head count).
    pub fn inner_dim_2(&self) -> usize {
        2 * self.inner_dim()
    }

    /// Channel widths along the scalar decoder: entry 0 is the output of
    /// `decoder.0` (`init_channel * 2^n_up`), entry `j` the output of upsampling
    /// block `j`; each block halves the width down to `init_channel`.
    pub fn scalar_channels(&self) -> Vec<usize> {
        let n_up = self.upsample_factors.len();
        (0..=n_up).map(|j| self.init_channel << (n_up - j)).collect()
    }

    /// Whether the scalar decoder has the sample-repeating post-processor
    /// (upstream adds it only when `num_samples > 1`).
    pub fn has_post_processor(&self) -> bool {
        self.num_samples > 1
    }

    /// Audio samples per latent frame (`prod(upsample_factors) * num_samples`).
    pub fn samples_per_latent(&self) -> usize {
        self.upsample_factors.iter().product::<usize>() * self.num_samples
    }

    /// SwiGLU hidden width of an estimator block of width `c`
    /// (`256 * ceil(int(8c/3) / 256)`).
    pub fn mlp_hidden(c: usize) -> usize {
        (8 * c / 3).div_ceil(256) * 256
    }
}

/// Largest JSON configuration or checkpoint index read (real ones are a few
/// KiB; the 3B index is 30 KB): a hostile file is refused instead of being
/// read whole into memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a configuration-sized text file, refusing one above [`MAX_CONFIG_BYTES`].
pub(crate) fn read_small_text(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(Error::Config {
            path: path.to_path_buf(),
            message: format!("{size} bytes; a configuration file is at most {MAX_CONFIG_BYTES} bytes"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_small_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: describe_json_error(&e, &text),
    })
}

/// serde_json's type errors give a line but not the key; quoting the offending
/// `"key": value` line names the field for the (one key per line) configs users have.
fn describe_json_error(e: &serde_json::Error, text: &str) -> String {
    let near = e
        .line()
        .checked_sub(1)
        .and_then(|i| text.lines().nth(i))
        .map(str::trim)
        .filter(|l| l.contains(':'));
    match near {
        Some(line) => format!("{e} (near `{line}`)"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_configs_match_their_config_json() {
        let raw: RawMulaConfig = serde_json::from_value(serde_json::json!({
            "backbone_flavor": "llama-3B", "decoder_flavor": "llama-300M", "text_vocab_size": 128256,
            "audio_vocab_size": 8197, "audio_num_codebooks": 8, "muq_dim": 512
        }))
        .unwrap();
        assert_eq!(MulaConfig::heartmula_oss_3b(), MulaConfig::resolve(raw).unwrap());
        let codec: CodecConfig = serde_json::from_value(serde_json::json!({
            "dim": 512, "codebook_size": 8192, "codebook_dim": 32, "num_quantizers": 8,
            "attention_head_dim": 64, "in_channels": 1024, "num_attention_heads": 24, "num_layers": 24,
            "num_layers_2": 6, "out_channels": 256, "sample_rate": 48000, "num_samples": 2,
            "upsample_factors": [5, 4, 4, 4, 3], "upsample_kernel_sizes": [10, 8, 8, 8, 6],
            "latent_hidden_dim": 128, "default_kernel_size": 7, "delay_kernel_size": 5,
            "init_channel": 64, "res_kernel_size": 7
        }))
        .unwrap();
        assert_eq!(CodecConfig::heartcodec_oss(), codec);
    }

    #[test]
    fn builtin_flavors_match_spec() {
        let b = FlavorParams::builtin("llama-3B").unwrap();
        assert_eq!((b.num_layers, b.head_dim(), b.num_kv_heads), (28, 128, 8));
        let d = FlavorParams::builtin("llama-300M").unwrap();
        assert_eq!((d.num_layers, d.head_dim(), d.num_kv_heads), (3, 384, 4));
        assert!(FlavorParams::builtin("llama-1B").is_none());
    }

    #[test]
    fn mlp_hidden_matches_upstream() {
        assert_eq!(CodecConfig::mlp_hidden(1536), 4096);
        assert_eq!(CodecConfig::mlp_hidden(3072), 8192);
    }
}
