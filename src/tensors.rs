//! Expected tensor tables of HeartMuLa and HeartCodec, derived from their configs,
//! and validation of a [`Checkpoint`] against them.
//!
//! The tables are pure functions of the config (spec §2.2 and §4.2), so the same
//! list serves three purposes: validating a user's checkpoint before anything is
//! built from it, synthesizing full-size checkpoints for tests and benchmarks, and
//! naming graph initializers. Shapes are PyTorch's (`[out, in]` for Linear,
//! `[out, in, k]` for Conv1d, `[in, out, k]` for ConvTranspose1d).
//!
//! Validation reports the first problem with the file, the tensor and expected vs
//! found, plus how many further problems there are. HeartMuLa checkpoints must
//! contain exactly the expected tensors. HeartCodec checkpoints may also carry the
//! encoder and training-only state upstream saves ([`codec_optional_specs`] and
//! everything under [`CODEC_ENCODER_PREFIX`]); those are accepted unread.

use std::collections::BTreeSet;

use safetensors::Dtype;

use crate::checkpoint::Checkpoint;
use crate::config::{CodecConfig, FlavorParams, MulaConfig};
use crate::error::{Error, Result};

/// Element type a tensor must be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemKind {
    /// F32, F16 or BF16 (read through [`crate::checkpoint::TensorRef::read_f32_into`]).
    Float,
    /// BOOL (only the codec's `_codebook.initted` flags, never read).
    Bool,
}

impl ElemKind {
    fn accepts(self, dtype: Dtype) -> bool {
        match self {
            Self::Float => matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16),
            Self::Bool => dtype == Dtype::BOOL,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Float => "a float dtype (F32, F16 or BF16)",
            Self::Bool => "BOOL",
        }
    }
}

/// One expected tensor: its checkpoint name, shape and element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Checkpoint name (upstream state-dict key).
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Accepted storage.
    pub kind: ElemKind,
}

impl TensorSpec {
    fn float(name: impl Into<String>, shape: &[usize]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            kind: ElemKind::Float,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Prefix of the SQ-codec encoder tensors: stored in HeartCodec checkpoints but
/// unused when decoding codes, so they are accepted without checks.
pub const CODEC_ENCODER_PREFIX: &str = "scalar_model.encoder.";

/// Every tensor of a HeartMuLa checkpoint (289 for the released 3B model).
pub fn mula_tensor_specs(cfg: &MulaConfig) -> Vec<TensorSpec> {
    let d = cfg.backbone.embed_dim;
    let dd = cfg.decoder.embed_dim;
    let v = cfg.audio_vocab_size;
    let mut specs = vec![
        TensorSpec::float("text_embeddings.weight", &[cfg.text_vocab_size, d]),
        TensorSpec::float("audio_embeddings.weight", &[v * cfg.audio_num_codebooks, d]),
        TensorSpec::float("unconditional_text_embedding.weight", &[1, d]),
        TensorSpec::float("muq_linear.weight", &[d, cfg.muq_dim]),
        TensorSpec::float("muq_linear.bias", &[d]),
        TensorSpec::float("projection.weight", &[dd, d]),
        TensorSpec::float("codebook0_head.weight", &[v, d]),
        TensorSpec::float("audio_head", &[cfg.audio_num_codebooks - 1, dd, v]),
    ];
    llama_stack_specs("backbone", &cfg.backbone, &mut specs);
    llama_stack_specs("decoder", &cfg.decoder, &mut specs);
    specs
}

/// A torchtune Llama stack: `layers.{i}` blocks plus the final `norm`.
fn llama_stack_specs(prefix: &str, p: &FlavorParams, specs: &mut Vec<TensorSpec>) {
    let (d, f) = (p.embed_dim, p.intermediate_dim);
    let q = p.num_heads * p.head_dim();
    let kv = p.num_kv_heads * p.head_dim();
    for i in 0..p.num_layers {
        let l = format!("{prefix}.layers.{i}");
        specs.extend([
            TensorSpec::float(format!("{l}.sa_norm.scale"), &[d]),
            TensorSpec::float(format!("{l}.attn.q_proj.weight"), &[q, d]),
            TensorSpec::float(format!("{l}.attn.k_proj.weight"), &[kv, d]),
            TensorSpec::float(format!("{l}.attn.v_proj.weight"), &[kv, d]),
            TensorSpec::float(format!("{l}.attn.output_proj.weight"), &[d, q]),
            TensorSpec::float(format!("{l}.mlp_norm.scale"), &[d]),
            TensorSpec::float(format!("{l}.mlp.w1.weight"), &[f, d]),
            TensorSpec::float(format!("{l}.mlp.w3.weight"), &[f, d]),
            TensorSpec::float(format!("{l}.mlp.w2.weight"), &[d, f]),
        ]);
    }
    specs.push(TensorSpec::float(format!("{prefix}.norm.scale"), &[d]));
}

/// The HeartCodec tensors `detokenize` reads (563 stored tensors for the released
/// codec; 506 once weight norm is folded).
pub fn codec_tensor_specs(cfg: &CodecConfig) -> Vec<TensorSpec> {
    let mut specs = Vec::new();
    flow_matching_specs(cfg, &mut specs);
    estimator_specs(cfg, &mut specs);
    scalar_decoder_specs(cfg, &mut specs);
    specs
}

/// Tensors upstream stores but decoding never reads: the RVQ input projection
/// and the codebooks' EMA training state.
pub fn codec_optional_specs(cfg: &CodecConfig) -> Vec<TensorSpec> {
    let (cs, cd) = (cfg.codebook_size, cfg.codebook_dim);
    let mut specs = vec![
        TensorSpec::float("flow_matching.vq_embed.project_in.weight", &[cd, cfg.dim]),
        TensorSpec::float("flow_matching.vq_embed.project_in.bias", &[cd]),
    ];
    for q in 0..cfg.num_quantizers {
        let c = format!("flow_matching.vq_embed.layers.{q}._codebook");
        specs.extend([
            TensorSpec::float(format!("{c}.embed_avg"), &[1, cs, cd]),
            TensorSpec::float(format!("{c}.cluster_size"), &[1, cs]),
            TensorSpec {
                name: format!("{c}.initted"),
                shape: Vec::new(),
                kind: ElemKind::Bool,
            },
        ]);
    }
    specs
}

/// RVQ codebooks + output projection, conditioning projection.
fn flow_matching_specs(cfg: &CodecConfig, specs: &mut Vec<TensorSpec>) {
    let fm = "flow_matching";
    for q in 0..cfg.num_quantizers {
        specs.push(TensorSpec::float(
            format!("{fm}.vq_embed.layers.{q}._codebook.embed"),
            &[1, cfg.codebook_size, cfg.codebook_dim],
        ));
    }
    specs.extend([
        TensorSpec::float(
            format!("{fm}.vq_embed.project_out.weight"),
            &[cfg.dim, cfg.codebook_dim],
        ),
        TensorSpec::float(format!("{fm}.vq_embed.project_out.bias"), &[cfg.dim]),
        TensorSpec::float(format!("{fm}.cond_feature_emb.weight"), &[cfg.dim, cfg.dim]),
        TensorSpec::float(format!("{fm}.cond_feature_emb.bias"), &[cfg.dim]),
        TensorSpec::float(format!("{fm}.zero_cond_embedding1"), &[cfg.dim]),
    ]);
}

/// The flow-matching estimator (`LlamaTransformer`): two block stacks with their
/// adaLN tables and the three `ProjectLayer`s.
fn estimator_specs(cfg: &CodecConfig, specs: &mut Vec<TensorSpec>) {
    let e = "flow_matching.estimator";
    let (c1, c2) = (cfg.inner_dim(), cfg.inner_dim_2());
    project_layer_specs(&format!("{e}.proj_in"), cfg.in_channels, c1, specs);
    adaln_specs(&format!("{e}.adaln_single"), c1, specs);
    for i in 0..cfg.num_layers {
        block_specs(&format!("{e}.transformer_blocks.{i}"), c1, specs);
    }
    specs.push(TensorSpec::float(format!("{e}.scale_shift_table"), &[2, c1]));
    project_layer_specs(&format!("{e}.connection_proj"), cfg.in_channels + c1, c2, specs);
    adaln_specs(&format!("{e}.adaln_single_2"), c2, specs);
    for i in 0..cfg.num_layers_2 {
        block_specs(&format!("{e}.transformer_blocks_2.{i}"), c2, specs);
    }
    specs.push(TensorSpec::float(format!("{e}.scale_shift_table_2"), &[2, c2]));
    project_layer_specs(&format!("{e}.proj_out"), c2, cfg.out_channels, specs);
}

/// `ProjectLayer`: Conv1d(k=3) `ffn_1` then Linear `ffn_2`, both with bias.
fn project_layer_specs(prefix: &str, cin: usize, cout: usize, specs: &mut Vec<TensorSpec>) {
    specs.extend([
        TensorSpec::float(format!("{prefix}.ffn_1.weight"), &[cout, cin, 3]),
        TensorSpec::float(format!("{prefix}.ffn_1.bias"), &[cout]),
        TensorSpec::float(format!("{prefix}.ffn_2.weight"), &[cout, cout]),
        TensorSpec::float(format!("{prefix}.ffn_2.bias"), &[cout]),
    ]);
}

/// `AdaLayerNormSingle`: timestep MLP (512 → C → C) and the 6·C modulation.
fn adaln_specs(prefix: &str, c: usize, specs: &mut Vec<TensorSpec>) {
    let t = format!("{prefix}.emb.timestep_embedder");
    specs.extend([
        TensorSpec::float(format!("{t}.linear_1.weight"), &[c, CodecConfig::TIMESTEP_FEATURES]),
        TensorSpec::float(format!("{t}.linear_1.bias"), &[c]),
        TensorSpec::float(format!("{t}.linear_2.weight"), &[c, c]),
        TensorSpec::float(format!("{t}.linear_2.bias"), &[c]),
        TensorSpec::float(format!("{prefix}.linear.weight"), &[6 * c, c]),
        TensorSpec::float(format!("{prefix}.linear.bias"), &[6 * c]),
    ]);
}

/// One estimator transformer block of width `c` (no biases).
fn block_specs(prefix: &str, c: usize, specs: &mut Vec<TensorSpec>) {
    let h = CodecConfig::mlp_hidden(c);
    specs.extend([
        TensorSpec::float(format!("{prefix}.scale_shift_table"), &[6, c]),
        TensorSpec::float(format!("{prefix}.attn_norm.weight"), &[c]),
        TensorSpec::float(format!("{prefix}.attn.q_proj.weight"), &[c, c]),
        TensorSpec::float(format!("{prefix}.attn.k_proj.weight"), &[c, c]),
        TensorSpec::float(format!("{prefix}.attn.v_proj.weight"), &[c, c]),
        TensorSpec::float(format!("{prefix}.attn.o_proj.weight"), &[c, c]),
        TensorSpec::float(format!("{prefix}.mlp_norm.weight"), &[c]),
        TensorSpec::float(format!("{prefix}.mlp.gate.weight"), &[h, c]),
        TensorSpec::float(format!("{prefix}.mlp.up.weight"), &[h, c]),
        TensorSpec::float(format!("{prefix}.mlp.down.weight"), &[c, h]),
    ]);
}

/// Output channels of the scalar decoder's last conv: upstream's `num_bands`,
/// which is 1 (mono per latent half) in every released codec.
const NUM_BANDS: usize = 1;

/// `scalar_model.decoder.{j}`: input conv, one block per upsample factor, the
/// post-processor (when `num_samples > 1`), the output conv.
fn scalar_decoder_specs(cfg: &CodecConfig, specs: &mut Vec<TensorSpec>) {
    let p = "scalar_model.decoder";
    let widths = cfg.scalar_channels();
    weight_norm_specs(
        &format!("{p}.0"),
        &[widths[0], cfg.latent_hidden_dim, cfg.delay_kernel_size],
        widths[0],
        specs,
    );
    let kernels = cfg.upsample_factors.iter().zip(&cfg.upsample_kernel_sizes);
    for (j, (_, &kernel)) in kernels.enumerate() {
        let (cin, cout) = (widths[j], widths[j + 1]);
        let b = format!("{p}.{}", j + 1);
        // ConvTranspose1d stores [in, out, k]; weight norm is over dim 0 = in.
        weight_norm_specs(&format!("{b}.up_conv.layer"), &[cin, cout, kernel], cout, specs);
        for u in 0..CodecConfig::RES_DILATIONS.len() {
            let r = format!("{b}.convs.{u}");
            weight_norm_specs(&format!("{r}.conv1"), &[cout, cout, cfg.res_kernel_size], cout, specs);
            weight_norm_specs(&format!("{r}.conv2"), &[cout, cout, 1], cout, specs);
            specs.push(TensorSpec::float(format!("{r}.activation1.weight"), &[1]));
            specs.push(TensorSpec::float(format!("{r}.activation2.weight"), &[1]));
        }
    }
    let mut next = cfg.upsample_factors.len() + 1;
    let c = cfg.init_channel;
    if cfg.has_post_processor() {
        let pp = format!("{p}.{next}");
        specs.extend([
            TensorSpec::float(format!("{pp}.conv.weight"), &[c, c, cfg.default_kernel_size]),
            TensorSpec::float(format!("{pp}.conv.bias"), &[c]),
            TensorSpec::float(format!("{pp}.activation.weight"), &[1]),
        ]);
        next += 1;
    }
    weight_norm_specs(
        &format!("{p}.{next}"),
        &[NUM_BANDS, c, cfg.default_kernel_size],
        NUM_BANDS,
        specs,
    );
}

/// A weight-normed conv: `g` `[v0, 1, 1]`, `v` (the direction), and the bias.
fn weight_norm_specs(prefix: &str, v: &[usize], bias: usize, specs: &mut Vec<TensorSpec>) {
    let w = format!("{prefix}.parametrizations.weight");
    specs.extend([
        TensorSpec::float(format!("{w}.original0"), &[v[0], 1, 1]),
        TensorSpec::float(format!("{w}.original1"), v),
        TensorSpec::float(format!("{prefix}.bias"), &[bias]),
    ]);
}

/// Checks a HeartMuLa checkpoint: every tensor of [`mula_tensor_specs`] with its
/// shape and a float dtype, and nothing else.
pub fn validate_mula(ckpt: &Checkpoint, cfg: &MulaConfig) -> Result<()> {
    validate(ckpt, &mula_tensor_specs(cfg), "HeartMuLa", |_| false)
}

/// Checks a HeartCodec checkpoint: every tensor of [`codec_tensor_specs`]; the
/// encoder and [`codec_optional_specs`] names are tolerated, anything else is an error.
pub fn validate_codec(ckpt: &Checkpoint, cfg: &CodecConfig) -> Result<()> {
    let optional: BTreeSet<String> = codec_optional_specs(cfg).into_iter().map(|s| s.name).collect();
    validate(ckpt, &codec_tensor_specs(cfg), "HeartCodec", |name| {
        name.starts_with(CODEC_ENCODER_PREFIX) || optional.contains(name)
    })
}

/// Checks `ckpt` against `expected`; `tolerated` names extra tensors that may be
/// present. Returns the first problem (in table order: missing, shape, dtype,
/// then unexpected names) and counts the rest in its message.
pub fn validate(
    ckpt: &Checkpoint,
    expected: &[TensorSpec],
    model: &str,
    tolerated: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut problems = Vec::new();
    for spec in expected {
        if let Some(problem) = check_one(ckpt, spec) {
            problems.push(problem);
        }
    }
    let known: BTreeSet<&str> = expected.iter().map(|s| s.name.as_str()).collect();
    for name in ckpt.names() {
        if known.contains(name) || tolerated(name) {
            continue;
        }
        let path = ckpt.tensor(name).map(|t| t.path.to_path_buf())?;
        problems.push(Error::Tensor {
            path,
            name: name.to_string(),
            message: format!(
                "unexpected tensor: not part of {model} for this config.json (wrong checkpoint, or a config whose \
                 layer counts or sizes do not match the weights)"
            ),
        });
    }
    let more = problems.len().saturating_sub(1);
    match problems.into_iter().next() {
        None => Ok(()),
        Some(first) if more == 0 => Err(first),
        Some(Error::Tensor { path, name, message }) => Err(Error::Tensor {
            path,
            name,
            message: format!("{message} ({more} more tensor problem(s) not shown)"),
        }),
        Some(other) => Err(other),
    }
}

fn check_one(ckpt: &Checkpoint, spec: &TensorSpec) -> Option<Error> {
    let Ok(t) = ckpt.tensor(&spec.name) else {
        return Some(Error::Tensor {
            path: ckpt.source().to_path_buf(),
            name: spec.name.clone(),
            message: format!("missing (expected shape {:?})", spec.shape),
        });
    };
    let message = if t.shape != spec.shape.as_slice() {
        format!("shape {:?}, expected {:?}", t.shape, spec.shape)
    } else if !spec.kind.accepts(t.dtype) {
        format!("dtype {:?}, expected {}", t.dtype, spec.kind.describe())
    } else {
        return None;
    };
    Some(Error::Tensor {
        path: t.path.to_path_buf(),
        name: spec.name.clone(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(specs: &[TensorSpec]) -> usize {
        specs.iter().map(TensorSpec::numel).sum()
    }

    #[test]
    fn released_mula_has_289_tensors_and_spec_parameter_count() {
        let specs = mula_tensor_specs(&MulaConfig::heartmula_oss_3b());
        assert_eq!(specs.len(), 289);
        assert_eq!(params(&specs), 3_938_113_536);
        let head = specs.iter().find(|s| s.name == "audio_head").unwrap();
        assert_eq!(head.shape, [7, 3072, 8197]);
    }

    #[test]
    fn released_codec_counts_match_spec() {
        let cfg = CodecConfig::heartcodec_oss();
        let decode = codec_tensor_specs(&cfg);
        let stored_weight_norm = decode.iter().filter(|s| s.name.ends_with(".original0")).count();
        // 506 after folding each (g, v) pair into one weight.
        assert_eq!(decode.len() - stored_weight_norm, 506);
        assert_eq!(params(&decode), 1_573_082_229);
        let scalar: Vec<_> = decode
            .iter()
            .filter(|s| s.name.starts_with("scalar_model.decoder."))
            .collect();
        assert_eq!(scalar.len(), 224);
        assert_eq!(scalar.iter().map(|s| s.numel()).sum::<usize>(), 83_784_821);
        // 818 stored tensors in total, 229 of them in the encoder.
        assert_eq!(decode.len() + codec_optional_specs(&cfg).len() + 229, 818);
    }

    #[test]
    fn scalar_decoder_shapes_follow_init_channel_and_upsampling() {
        let decode = codec_tensor_specs(&CodecConfig::heartcodec_oss());
        let shape = |n: &str| decode.iter().find(|s| s.name == n).unwrap().shape.clone();
        let p = "scalar_model.decoder";
        assert_eq!(
            shape(&format!("{p}.0.parametrizations.weight.original1")),
            [2048, 128, 5]
        );
        assert_eq!(
            shape(&format!("{p}.1.up_conv.layer.parametrizations.weight.original1")),
            [2048, 1024, 10]
        );
        assert_eq!(
            shape(&format!("{p}.1.up_conv.layer.parametrizations.weight.original0")),
            [2048, 1, 1]
        );
        assert_eq!(
            shape(&format!("{p}.5.convs.4.conv1.parametrizations.weight.original1")),
            [64, 64, 7]
        );
        assert_eq!(shape(&format!("{p}.6.conv.weight")), [64, 64, 7]);
        assert_eq!(shape(&format!("{p}.7.parametrizations.weight.original1")), [1, 64, 7]);
    }

    #[test]
    fn no_post_processor_when_num_samples_is_one() {
        let cfg = CodecConfig {
            num_samples: 1,
            ..CodecConfig::heartcodec_oss()
        };
        let decode = codec_tensor_specs(&cfg);
        assert!(!decode.iter().any(|s| s.name.contains(".conv.weight")));
        assert!(
            decode
                .iter()
                .any(|s| s.name == "scalar_model.decoder.6.parametrizations.weight.original1")
        );
    }
}
