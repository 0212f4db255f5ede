//! `heart-build synth`: writes a HeartMuLa + HeartCodec checkpoint with the real
//! upstream layout and tensor names and random weights, so the whole pipeline can
//! be built, run and benchmarked without downloading anything.
//!
//! Layout written (the real release layout, tokenizer and gen config one level up):
//! ```text
//! <out>/HeartMuLa-oss-3B/{config.json, model*.safetensors[, index]}
//! <out>/HeartCodec-oss/{config.json, model*.safetensors[, index]}
//! <out>/tokenizer.json  <out>/gen_config.json
//! ```
//! Weights are streamed to disk tensor by tensor (`full` is ~22 GB and is never
//! held in memory). Every tensor is filled from its own ChaCha stream seeded by
//! `(seed, tensor name)`, so a given seed always gives the same bytes.
//!
//! Random weights produce noise, not music. Two choices keep the pipeline's
//! behaviour representative: linear layers are scaled by `1/sqrt(fan_in)` so
//! activations stay O(1) through the stack, and the head rows of the special
//! audio ids (>= codebook size: end-of-audio and friends) are zero, so a random
//! model does not stop after a few frames by sampling end-of-audio (with top-k 50
//! a zero logit is never among the candidates). Real checkpoints are unaffected.

use std::path::Path;

use crate::error::{BuildError, Context, Result};
use heart::config::{CodecConfig, FlavorParams, GenConfig, MulaConfig, RawMulaConfig};
use heart::tensors::{codec_tensor_specs, mula_tensor_specs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::seeded::rng_for;

use crate::safetensors_out::{OutTensor, write_checkpoint};

/// The tokenizer shipped with synthesized checkpoints: the fixture set's small
/// byte-level BPE (320 merges-vocab entries + Llama-3 style specials at 320/321).
const TOKENIZER_JSON: &[u8] = include_bytes!("../../tests/fixtures/tiny-a/heartmula/tokenizer.json");

/// Shards of synthesized checkpoints are at most this large (like HF's 5 GB).
const MAX_SHARD_BYTES: u64 = 4_000_000_000;

/// Sizes `heart-build synth` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthSize {
    /// Fixture-sized (kB): seconds to build and run; what the tests use.
    Tiny,
    /// Mid-sized (~0.9 GB LM, real vocabularies and 48 kHz codec): quick benchmarks.
    Small,
    /// The real 3B HeartMuLa + HeartCodec shapes (~16 GB + ~6 GB).
    Full,
}

impl SynthSize {
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Full => "full",
        }
    }
}

/// Directory names of the real release.
pub const MULA_DIR: &str = "HeartMuLa-oss-3B";
/// Codec directory name of the real release.
pub const CODEC_DIR: &str = "HeartCodec-oss";

fn flavor(layers: usize, heads: usize, kv: usize, dim: usize, max_seq: usize, ffn: usize) -> FlavorParams {
    FlavorParams {
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        embed_dim: dim,
        max_seq_len: max_seq,
        intermediate_dim: ffn,
        norm_eps: 1e-5,
        rope_base: 500_000.0,
        scale_factor: 32.0,
    }
}

/// The HeartMuLa `config.json` of a size, as JSON (upstream field names).
pub fn mula_config_json(size: SynthSize) -> serde_json::Value {
    let common = |bb: &str, dec: &str, text_vocab: usize| {
        serde_json::json!({
            "architectures": ["HeartMuLa"], "model_type": "heartmula", "dtype": "float32",
            "backbone_flavor": bb, "decoder_flavor": dec, "text_vocab_size": text_vocab,
            "audio_vocab_size": 8197, "audio_num_codebooks": 8, "muq_dim": 512,
        })
    };
    match size {
        SynthSize::Full => common("llama-3B", "llama-300M", 128_256),
        SynthSize::Small | SynthSize::Tiny => {
            let (bb, dec, audio_vocab) = if size == SynthSize::Small {
                (
                    flavor(6, 16, 4, 1024, 2048, 2816),
                    flavor(2, 8, 4, 1024, 64, 2816),
                    8197,
                )
            } else {
                (flavor(3, 4, 2, 64, 512, 160), flavor(2, 4, 2, 48, 64, 96), 69)
            };
            let name = if size == SynthSize::Small {
                "synth-small"
            } else {
                "synth-tiny"
            };
            let mut v = common(&format!("{name}-backbone"), &format!("{name}-decoder"), 352);
            v["audio_vocab_size"] = audio_vocab.into();
            v["tiny_flavors"] = serde_json::json!({
                format!("{name}-backbone"): bb,
                format!("{name}-decoder"): dec,
            });
            v
        }
    }
}

/// The HeartCodec `config.json` of a size (upstream field names).
pub fn codec_config_json(size: SynthSize) -> serde_json::Value {
    let (dim, cb_size, cb_dim, head_dim, heads, layers, layers2, up, kernels, init, rate) = match size {
        SynthSize::Full => (
            512,
            8192,
            32,
            64,
            24,
            24,
            6,
            vec![5, 4, 4, 4, 3],
            vec![10, 8, 8, 8, 6],
            64,
            48_000,
        ),
        SynthSize::Small => (
            512,
            8192,
            32,
            64,
            8,
            4,
            2,
            vec![5, 4, 4, 4, 3],
            vec![10, 8, 8, 8, 6],
            16,
            48_000,
        ),
        SynthSize::Tiny => (32, 64, 8, 16, 2, 2, 1, vec![3, 2], vec![6, 4], 4, 300),
    };
    serde_json::json!({
        "architectures": ["HeartCodec"], "model_type": "heartcodec", "dtype": "float32",
        "dim": dim, "codebook_size": cb_size, "codebook_dim": cb_dim, "num_quantizers": 8,
        "decay": 0.9, "commitment_weight": 1.0, "threshold_ema_dead_code": 2, "use_cosine_sim": false,
        "attention_head_dim": head_dim, "in_channels": 512 + dim, "norm_type": "ada_norm_single",
        "num_attention_heads": heads, "num_layers": layers, "num_layers_2": layers2, "out_channels": 256,
        "num_bands": 1, "sample_rate": rate, "causal": true, "num_samples": 2,
        "downsample_factors": up.iter().rev().collect::<Vec<_>>(),
        "downsample_kernel_sizes": kernels.iter().rev().collect::<Vec<_>>(),
        "upsample_factors": up, "upsample_kernel_sizes": kernels,
        "latent_hidden_dim": 128, "default_kernel_size": 7, "delay_kernel_size": 5,
        "init_channel": init, "res_kernel_size": 7,
    })
}

/// `gen_config.json` for the bundled tokenizer.
pub fn gen_config(size: SynthSize) -> GenConfig {
    let audio_vocab = if size == SynthSize::Tiny { 69 } else { 8197 };
    GenConfig {
        text_bos_id: 320,
        text_eos_id: 321,
        audio_eos_id: audio_vocab - 4,
        empty_id: 0,
    }
}

/// Writes a synthesized checkpoint of `size` under `out`; returns the bytes of
/// weights written.
/// With `realistic`, the LM's weights get outlier channels, an attention-sink
/// token, heavy tails and per-layer scale spread ([`crate::realistic`]).
pub fn synthesize(out: &Path, size: SynthSize, seed: u64, realistic: bool, progress: impl FnMut(u64)) -> Result<u64> {
    let mut progress = progress;
    let mula_json = mula_config_json(size);
    let raw: RawMulaConfig = serde_json::from_value(mula_json.clone())?;
    let mula = MulaConfig::resolve(raw).map_err(BuildError::Request)?;
    let codec_json = codec_config_json(size);
    let codec: CodecConfig = serde_json::from_value(codec_json.clone())?;

    let mula_dir = out.join(MULA_DIR);
    let codec_dir = out.join(CODEC_DIR);
    for d in [&mula_dir, &codec_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_json(&mula_dir.join("config.json"), &mula_json)?;
    write_json(&codec_dir.join("config.json"), &codec_json)?;
    write_json(&out.join("gen_config.json"), &serde_json::to_value(gen_config(size))?)?;
    std::fs::write(out.join("tokenizer.json"), TOKENIZER_JSON).context("writing tokenizer.json")?;

    let specials_from = mula.codebook_size();
    let style = realistic.then_some(gen_config(size).text_bos_id as usize);
    let mula_tensors: Vec<OutTensor> = mula_tensor_specs(&mula)
        .into_iter()
        .map(|s| OutTensor {
            name: s.name,
            shape: s.shape,
        })
        .collect();
    write_checkpoint(
        &mula_dir,
        &mula_tensors,
        MAX_SHARD_BYTES,
        |t, start, buf| fill_mula(seed, t, start, buf, specials_from, style),
        &mut progress,
    )?;
    let codec_tensors: Vec<OutTensor> = codec_tensor_specs(&codec)
        .into_iter()
        .map(|s| OutTensor {
            name: s.name,
            shape: s.shape,
        })
        .collect();
    write_checkpoint(
        &codec_dir,
        &codec_tensors,
        MAX_SHARD_BYTES,
        |t, start, buf| fill_codec(seed, t, start, buf),
        &mut progress,
    )?;
    let weight_bytes = mula_tensors
        .iter()
        .chain(&codec_tensors)
        .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
        .sum();
    Ok(weight_bytes)
}

/// Total weight bytes a size writes (for progress bars).
pub fn planned_bytes(size: SynthSize) -> Result<u64> {
    let raw: RawMulaConfig = serde_json::from_value(mula_config_json(size))?;
    let mula = MulaConfig::resolve(raw).map_err(BuildError::Request)?;
    let codec: CodecConfig = serde_json::from_value(codec_config_json(size))?;
    let numel = |shape: &[usize]| shape.iter().product::<usize>() as u64;
    Ok(
        mula_tensor_specs(&mula).iter().map(|s| numel(&s.shape)).sum::<u64>() * 4
            + codec_tensor_specs(&codec).iter().map(|s| numel(&s.shape)).sum::<u64>() * 4,
    )
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

fn uniform(rng: &mut ChaCha8Rng, buf: &mut [f32], amplitude: f32) {
    for v in buf {
        *v = (rng.random::<f32>() * 2.0 - 1.0) * amplitude;
    }
}

/// Uniform with the variance of N(0, 1/fan_in).
fn fan_in_amplitude(fan_in: usize) -> f32 {
    (3.0 / fan_in as f32).sqrt()
}

/// `realistic`: the BOS token id, for [`crate::realistic`]'s sink token.
fn fill_mula(seed: u64, t: &OutTensor, start: usize, buf: &mut [f32], specials_from: usize, realistic: Option<usize>) {
    let name = t.name.as_str();
    if name.ends_with(".scale") {
        match realistic {
            Some(_) => crate::realistic::norm_gains(seed, name, buf),
            None => buf.fill(1.0),
        }
        return;
    }
    if name == "muq_linear.bias" {
        buf.fill(0.0);
        return;
    }
    let mut rng = rng_for(seed, name, start);
    let fan_in = match name {
        "text_embeddings.weight" | "audio_embeddings.weight" | "unconditional_text_embedding.weight" => 1,
        "audio_head" => t.shape[1],
        _ => *t.shape.last().unwrap_or(&1),
    };
    match realistic {
        Some(bos) => {
            let chunk = crate::realistic::Chunk {
                seed,
                name,
                shape: &t.shape,
                start,
                fan_in,
                bos,
            };
            crate::realistic::weights(&mut rng, chunk, buf);
        }
        None => uniform(&mut rng, buf, fan_in_amplitude(fan_in)),
    }
    // Zero the logits of special audio ids (see the module doc).
    let vocab = *t.shape.last().unwrap_or(&1);
    match name {
        "codebook0_head.weight" => {
            let row_len = t.shape[1];
            for (i, v) in buf.iter_mut().enumerate() {
                if (start + i) / row_len >= specials_from {
                    *v = 0.0;
                }
            }
        }
        "audio_head" => {
            for (i, v) in buf.iter_mut().enumerate() {
                if (start + i) % vocab >= specials_from {
                    *v = 0.0;
                }
            }
        }
        _ => {}
    }
}

fn fill_codec(seed: u64, t: &OutTensor, start: usize, buf: &mut [f32]) {
    let name = t.name.as_str();
    if name.ends_with("norm.weight") || name.ends_with("original0") {
        buf.fill(1.0);
        return;
    }
    if name.ends_with(".bias") {
        buf.fill(0.0);
        return;
    }
    if name.contains("activation") {
        buf.fill(0.25);
        return;
    }
    let mut rng = rng_for(seed, name, start);
    let amplitude = if name.contains("scale_shift_table") {
        0.1
    } else if name.contains("_codebook.embed") || name.ends_with("zero_cond_embedding1") {
        1.0
    } else {
        // Linear [out, in] and conv [out, in, k] / transposed [in, out, k].
        let fan_in = match t.shape.as_slice() {
            [_, i] => *i,
            [a, b, k] if name.contains("up_conv") => a.max(b) * k,
            [_, i, k] => i * k,
            _ => 1,
        };
        fan_in_amplitude(fan_in)
    };
    uniform(&mut rng, buf, amplitude);
}
