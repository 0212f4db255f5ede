//! TensorRT optimization profiles: the min / opt / max shape of every dynamic
//! input of heart's graphs, in the syntax of ONNX Runtime's TensorRT provider
//! options (`trt_profile_{min,opt,max}_shapes = "name:d0xd1x…,name2:…"`).
//!
//! The provider builds an engine at session creation only when every dynamic
//! input has an explicit profile, and refuses (does not rebuild) a shape outside
//! it when the engine comes from an EP-context model, so these ranges are the
//! contract between `heart-build --target tensorrt` and `heart-run`:
//!
//! | graph | dimension | min | opt | max |
//! |---|---|---|---|---|
//! | LM graphs | batch (2 rows with CFG) | 1 | 2 | 2 |
//! | backbone | new positions (prompt prefill, then 1 per frame) | 1 | 1 | [`PREFILL_MAX`] (capped at `max_seq_len`) |
//! | backbone | cache capacity | 1 | min(2048, max) | `max_seq_len` (8192) |
//! | decoder | batch (the speculative scorer folds `F` drafted frames into it: `F·B` rows, with a draft) | 1 | 2 | 2, with a draft 2 × [`SPECULATE_MAX_FRAMES`] |
//! | decoder | new positions (2, then 1; speculation may use more) | 1 | 1 | [`DECODER_NEW_MAX`] |
//! | decoder | cache capacity | 1 | codebooks | 2 × codebooks |
//! | flow estimator | batch (2 rows with guidance) | 1 | 2 | 2 |
//! | flow estimator, scalar decoder | latent frames | 1 | 744 | 744 (one codec window) |
//! | scalar decoder | audio channels | 1 | 2 | 2 |
//!
//! `attn_bias` is `[new, capacity + new]`; its ranges are the sums.

use heart::config::{CodecConfig, MulaConfig};
use heart::engine::{self, io};

use heart::engine::codec_io::{DECODER_INPUT, ESTIMATOR_INPUT, ESTIMATOR_TIMESTEP};
use heart::geometry::WINDOW_LATENTS;

/// Most backbone positions one prefill may feed (tags + lyrics + separators).
/// Longer prompts need engines built with a larger profile.
pub const PREFILL_MAX: usize = 1024;
/// Most decoder positions one step may feed.
pub const DECODER_NEW_MAX: usize = 9;
/// Most frames a speculative round may draft (`heart-run --speculate K`) with
/// engines built for a draft: the target decoder scores `K·B` rows at once.
pub const SPECULATE_MAX_FRAMES: usize = 8;

/// Minimum, optimum and maximum of one dynamic dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimRange {
    /// Smallest size the engine accepts.
    pub min: usize,
    /// Size TensorRT tunes its kernels for.
    pub opt: usize,
    /// Largest size the engine accepts.
    pub max: usize,
}

impl DimRange {
    /// `min..=max`, tuned for `opt` (clamped into the range).
    pub fn new(min: usize, opt: usize, max: usize) -> Self {
        let max = max.max(min);
        Self {
            min,
            opt: opt.clamp(min, max),
            max,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            min: self.min + other.min,
            opt: self.opt + other.opt,
            max: self.max + other.max,
        }
    }
}

/// The dynamic-dimension ranges engines are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileLimits {
    /// LM batch rows.
    pub batch: DimRange,
    /// Backbone positions per step.
    pub prefill: DimRange,
    /// Backbone cache capacity.
    pub backbone_cache: DimRange,
    /// Decoder batch rows.
    pub decoder_batch: DimRange,
    /// Decoder positions per step.
    pub decoder_new: DimRange,
    /// Decoder cache capacity.
    pub decoder_cache: DimRange,
    /// Flow-estimator batch rows.
    pub codec_batch: DimRange,
    /// Latent frames per codec call.
    pub codec_frames: DimRange,
    /// Scalar-decoder rows (audio channels).
    pub audio_channels: DimRange,
}

impl ProfileLimits {
    /// The table in the module docs, for `model`.
    pub fn for_model(model: &MulaConfig) -> Self {
        let max_seq = model.backbone.max_seq_len.max(1);
        let codebooks = model.audio_num_codebooks.max(1);
        Self {
            batch: DimRange::new(1, 2, 2),
            prefill: DimRange::new(1, 1, PREFILL_MAX.min(max_seq)),
            backbone_cache: DimRange::new(1, 2048, max_seq),
            decoder_batch: DimRange::new(1, 2, 2),
            decoder_new: DimRange::new(1, 1, DECODER_NEW_MAX),
            decoder_cache: DimRange::new(1, codebooks, 2 * codebooks),
            codec_batch: DimRange::new(1, 2, 2),
            codec_frames: DimRange::new(1, WINDOW_LATENTS, WINDOW_LATENTS),
            audio_channels: DimRange::new(1, 2, 2),
        }
    }

    /// The limits of a target whose decoder also scores speculative rounds
    /// of up to [`SPECULATE_MAX_FRAMES`] drafted frames (`F·B` rows).
    pub fn with_speculation(self) -> Self {
        Self {
            decoder_batch: DimRange::new(1, 2, 2 * SPECULATE_MAX_FRAMES),
            ..self
        }
    }
}

/// One graph's profile, ready for the provider options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphProfile {
    /// `trt_profile_min_shapes`.
    pub min: String,
    /// `trt_profile_opt_shapes`.
    pub opt: String,
    /// `trt_profile_max_shapes`.
    pub max: String,
    /// The same ranges per input, for builders that take shapes
    /// (TensorRT-RTX's Python API).
    pub inputs: Vec<InputShapes>,
}

/// The shapes one input of a [`GraphProfile`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShapes {
    /// Input name.
    pub name: String,
    /// Smallest shape.
    pub min: Vec<usize>,
    /// Shape TensorRT tunes for.
    pub opt: Vec<usize>,
    /// Largest shape.
    pub max: Vec<usize>,
}

/// A dimension of an input: fixed, or dynamic within a range.
#[derive(Debug, Clone, Copy)]
enum Dim {
    Fixed(usize),
    Dynamic(DimRange),
}

impl GraphProfile {
    fn from_inputs(inputs: &[(String, Vec<Dim>)]) -> Self {
        let render = |pick: fn(DimRange) -> usize| {
            inputs
                .iter()
                .map(|(name, dims)| {
                    let dims: Vec<String> = dims
                        .iter()
                        .map(|d| match *d {
                            Dim::Fixed(n) => n.to_string(),
                            Dim::Dynamic(r) => pick(r).to_string(),
                        })
                        .collect();
                    format!("{name}:{}", dims.join("x"))
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let shape = |dims: &[Dim], pick: fn(DimRange) -> usize| {
            dims.iter()
                .map(|d| match *d {
                    Dim::Fixed(n) => n,
                    Dim::Dynamic(r) => pick(r),
                })
                .collect()
        };
        Self {
            min: render(|r| r.min),
            opt: render(|r| r.opt),
            max: render(|r| r.max),
            inputs: inputs
                .iter()
                .map(|(name, dims)| InputShapes {
                    name: name.clone(),
                    min: shape(dims, |r| r.min),
                    opt: shape(dims, |r| r.opt),
                    max: shape(dims, |r| r.max),
                })
                .collect(),
        }
    }
}

/// Profile of a transformer stack graph (`embeds`, `positions`, `attn_bias`
/// and every layer's cache).
fn stack(layers: usize, kv: usize, hd: usize, width: usize, b: DimRange, s: DimRange, c: DimRange) -> GraphProfile {
    let (b, s_dim, c_dim) = (Dim::Dynamic(b), Dim::Dynamic(s), Dim::Dynamic(c));
    let mut inputs = vec![
        (io::EMBEDS.to_string(), vec![b, s_dim, Dim::Fixed(width)]),
        (io::POSITIONS.to_string(), vec![s_dim]),
        (io::ATTN_BIAS.to_string(), vec![s_dim, Dim::Dynamic(c.plus(s))]),
    ];
    for i in 0..layers {
        inputs.push((io::past_key(i), vec![b, Dim::Fixed(kv), Dim::Fixed(hd), c_dim]));
        inputs.push((io::past_value(i), vec![b, Dim::Fixed(kv), c_dim, Dim::Fixed(hd)]));
    }
    GraphProfile::from_inputs(&inputs)
}

/// Profile of `backbone.onnx`.
pub fn backbone(model: &MulaConfig, l: &ProfileLimits) -> GraphProfile {
    let p = &model.backbone;
    stack(
        p.num_layers,
        p.num_kv_heads,
        p.head_dim(),
        p.embed_dim,
        l.batch,
        l.prefill,
        l.backbone_cache,
    )
}

/// Profile of `decoder.onnx` (its `embeds` are backbone-wide; the projection
/// is inside the graph; `codebook` is a scalar and needs no profile).
pub fn decoder(model: &MulaConfig, l: &ProfileLimits) -> GraphProfile {
    let p = &model.decoder;
    stack(
        p.num_layers,
        p.num_kv_heads,
        p.head_dim(),
        model.backbone.embed_dim,
        l.decoder_batch,
        l.decoder_new,
        l.decoder_cache,
    )
}

/// Profile of `flow_estimator.onnx`.
pub fn flow_estimator(codec: &CodecConfig, l: &ProfileLimits) -> GraphProfile {
    let (b, t) = (Dim::Dynamic(l.codec_batch), Dim::Dynamic(l.codec_frames));
    GraphProfile::from_inputs(&[
        (ESTIMATOR_INPUT.to_string(), vec![b, t, Dim::Fixed(codec.in_channels)]),
        (ESTIMATOR_TIMESTEP.to_string(), vec![b]),
    ])
}

/// Profile of `scalar_decoder.onnx`.
pub fn scalar_decoder(codec: &CodecConfig, l: &ProfileLimits) -> GraphProfile {
    GraphProfile::from_inputs(&[(
        DECODER_INPUT.to_string(),
        vec![
            Dim::Dynamic(l.audio_channels),
            Dim::Fixed(codec.latent_hidden_dim),
            Dim::Dynamic(l.codec_frames),
        ],
    )])
}

/// The profile of the graph file `name` (`None` for files that are not graphs,
/// or a codec graph when no codec config is given).
pub fn for_graph(
    name: &str,
    model: &MulaConfig,
    codec: Option<&CodecConfig>,
    limits: &ProfileLimits,
) -> Option<GraphProfile> {
    match name {
        // The frame graph's dynamic inputs are the backbone's; its sampling
        // inputs have fixed shapes.
        engine::BACKBONE_GRAPH | engine::FRAME_GRAPH => Some(backbone(model, limits)),
        engine::DECODER_GRAPH => Some(decoder(model, limits)),
        engine::FLOW_ESTIMATOR_GRAPH => codec.map(|c| flow_estimator(c, limits)),
        engine::SCALAR_DECODER_GRAPH => codec.map(|c| scalar_decoder(c, limits)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heart::config::{FlavorParams, RawMulaConfig};

    fn model(backbone: &str, decoder: &str) -> MulaConfig {
        let raw: RawMulaConfig = serde_json::from_value(serde_json::json!({
            "backbone_flavor": backbone, "decoder_flavor": decoder, "text_vocab_size": 128256,
            "audio_vocab_size": 8197, "audio_num_codebooks": 8, "muq_dim": 512, "torch_dtype": "float32"
        }))
        .unwrap();
        MulaConfig::resolve(raw).unwrap()
    }

    #[test]
    fn backbone_profile_covers_prefill_decode_and_the_full_cache() {
        let m = model("llama-3B", "llama-300M");
        let bb = FlavorParams::builtin("llama-3B").unwrap();
        let l = ProfileLimits::for_model(&m);
        let p = backbone(&m, &l);
        let (kv, hd) = (bb.num_kv_heads, bb.head_dim());
        assert!(
            p.min.starts_with("embeds:1x1x3072,positions:1,attn_bias:1x2,"),
            "{}",
            p.min
        );
        assert!(
            p.opt.starts_with("embeds:2x1x3072,positions:1,attn_bias:1x2049,"),
            "{}",
            p.opt
        );
        assert!(
            p.max
                .starts_with("embeds:2x1024x3072,positions:1024,attn_bias:1024x9216,"),
            "{}",
            p.max
        );
        assert!(
            p.max
                .contains(&format!(",past_key_0:2x{kv}x{hd}x8192,past_value_0:2x{kv}x8192x{hd}"))
        );
        let last = bb.num_layers - 1;
        assert!(
            p.max.ends_with(&format!("past_value_{last}:2x{kv}x8192x{hd}")),
            "{}",
            p.max
        );
        assert_eq!(p.max.matches("past_key_").count(), bb.num_layers);
        assert!(!p.max.contains(&format!("past_key_{}", bb.num_layers)));
    }

    #[test]
    fn decoder_profile_allows_nine_new_positions_and_has_no_codebook_entry() {
        let m = model("llama-3B", "llama-300M");
        let p = decoder(&m, &ProfileLimits::for_model(&m));
        assert!(
            p.max.starts_with("embeds:2x9x3072,positions:9,attn_bias:9x25,"),
            "{}",
            p.max
        );
        assert!(
            p.opt.starts_with("embeds:2x1x3072,positions:1,attn_bias:1x9,"),
            "{}",
            p.opt
        );
        assert!(!p.max.contains(io::CODEBOOK));
    }

    #[test]
    fn small_models_cap_the_prefill_at_their_sequence_length() {
        let mut m = model("llama-3B", "llama-300M");
        m.backbone.max_seq_len = 64;
        let l = ProfileLimits::for_model(&m);
        assert_eq!(
            l.prefill,
            DimRange {
                min: 1,
                opt: 1,
                max: 64
            }
        );
        assert_eq!(
            l.backbone_cache,
            DimRange {
                min: 1,
                opt: 64,
                max: 64
            }
        );
    }

    #[test]
    fn every_graph_file_has_a_profile_and_other_files_none() {
        let m = model("llama-3B", "llama-300M");
        let l = ProfileLimits::for_model(&m);
        let codec = CodecConfig::from_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartcodec/config.json"),
        )
        .unwrap();
        for name in [
            engine::BACKBONE_GRAPH,
            engine::DECODER_GRAPH,
            engine::FLOW_ESTIMATOR_GRAPH,
            engine::SCALAR_DECODER_GRAPH,
        ] {
            assert!(for_graph(name, &m, Some(&codec), &l).is_some(), "{name}");
        }
        assert!(for_graph(engine::FLOW_ESTIMATOR_GRAPH, &m, None, &l).is_none());
        assert!(for_graph(engine::LM_TABLES, &m, Some(&codec), &l).is_none());
        let est = flow_estimator(&codec, &l);
        assert_eq!(
            est.max,
            format!("x:2x{WINDOW_LATENTS}x{},timestep:2", codec.in_channels)
        );
        assert_eq!(
            scalar_decoder(&codec, &l).min,
            format!("latents:1x{}x1", codec.latent_hidden_dim)
        );
    }
}
