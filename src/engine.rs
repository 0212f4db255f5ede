//! Names inside an engine folder that the exporter (`onnx-export`), the builder
//! and the runtime must agree on: file names, their [`EngineKind`]s, and the
//! input/output names of the LM graphs.

use crate::manifest::EngineKind;

/// The text tokenizer, copied from the checkpoint.
pub const TOKENIZER: &str = "tokenizer.json";
/// The flow-matching estimator graph of the codec.
pub const FLOW_ESTIMATOR_GRAPH: &str = "flow_estimator.onnx";
/// The scalar-model CNN decoder graph of the codec.
pub const SCALAR_DECODER_GRAPH: &str = "scalar_decoder.onnx";
/// RVQ codebooks and conditioning weights used by the runtime.
pub const CODEC_TABLES: &str = "codec_tables.safetensors";
/// The HeartCodec `config.json`, copied for the codec runtime.
pub const CODEC_CONFIG: &str = "codec_config.json";
/// Suffix of a graph's external weight file (`<graph>.onnx.data`).
pub const GRAPH_DATA_SUFFIX: &str = ".onnx.data";
/// Calibration statistics behind an engine's activation scales.
pub const CALIBRATION: &str = "calibration.json";

/// Folder of TensorRT artefacts inside an engine folder (`heart-build --target tensorrt`).
pub const TENSORRT_DIR: &str = "trt";
/// Serialized engines (and their `.profile` files) inside [`TENSORRT_DIR`],
/// relative to it: the EP-context models refer to them by this relative path.
pub const TENSORRT_ENGINE_SUBDIR: &str = "engines";
/// The builder's timing cache inside [`TENSORRT_DIR`].
pub const TENSORRT_TIMING_SUBDIR: &str = "timing";

/// Path, relative to the engine folder, of the EP-context model built for
/// `graph` (e.g. `backbone.onnx` → `trt/backbone_ctx.onnx`).
pub fn context_model(graph: &str) -> String {
    let stem = graph.strip_suffix(".onnx").unwrap_or(graph);
    format!("{TENSORRT_DIR}/{stem}_ctx.onnx")
}

/// Path, relative to the engine folder, of the serialized engine a
/// TensorRT-RTX build makes of `graph`, next to its [`context_model`]
/// (`backbone.onnx` → `trt/backbone.engine`, `draft/decoder.onnx` →
/// `trt/draft/decoder.engine`).
pub fn tensorrt_engine(graph: &str) -> String {
    let stem = graph.strip_suffix(".onnx").unwrap_or(graph);
    format!("{TENSORRT_DIR}/{stem}.engine")
}

/// Folder of the optional speculative-decoding draft graphs (`draft/backbone.onnx`,
/// `draft/decoder.onnx`); the draft reads the engine's own [`LM_TABLES`].
pub const DRAFT_DIR: &str = "draft";

/// Every file the runtime opens by its fixed name from an engine folder (the
/// LM, plus the codec and the speculative draft when they are used). Each must
/// be a file of the manifest (`Manifest::require_files`), so that it was
/// checked for size, hash, location and external data before it is opened.
pub fn runtime_files(codec: bool, draft: bool) -> Vec<String> {
    let mut files: Vec<String> = [BACKBONE_GRAPH, DECODER_GRAPH, LM_TABLES, TOKENIZER]
        .map(String::from)
        .to_vec();
    if codec {
        files.extend([FLOW_ESTIMATOR_GRAPH, SCALAR_DECODER_GRAPH, CODEC_TABLES].map(String::from));
    }
    if draft {
        files.extend([BACKBONE_GRAPH, DECODER_GRAPH].map(|g| format!("{DRAFT_DIR}/{g}")));
    }
    files
}

/// The kind of an engine file, from its path relative to the engine folder;
/// `None` for names heart does not write.
pub fn kind_of_file(name: &str) -> Option<EngineKind> {
    if name.starts_with(&format!("{TENSORRT_DIR}/")) {
        return Some(EngineKind::TensorRt);
    }
    if name.ends_with(GRAPH_DATA_SUFFIX) {
        return Some(EngineKind::GraphData);
    }
    if let Some(draft) = name.strip_prefix(DRAFT_DIR).and_then(|n| n.strip_prefix('/')) {
        return match draft {
            BACKBONE_GRAPH => Some(EngineKind::DraftBackbone),
            DECODER_GRAPH => Some(EngineKind::DraftDecoder),
            _ => None,
        };
    }
    Some(match name {
        BACKBONE_GRAPH => EngineKind::Backbone,
        DECODER_GRAPH => EngineKind::Decoder,
        FRAME_GRAPH => EngineKind::Frame,
        LM_TABLES => EngineKind::LmTables,
        FLOW_ESTIMATOR_GRAPH => EngineKind::FlowEstimator,
        SCALAR_DECODER_GRAPH => EngineKind::ScalarDecoder,
        CODEC_TABLES => EngineKind::CodecTables,
        CODEC_CONFIG => EngineKind::CodecConfig,
        TOKENIZER => EngineKind::Tokenizer,
        CALIBRATION => EngineKind::Calibration,
        _ => return None,
    })
}

/// The backbone graph (one frame step of the 3B transformer plus `codebook0_head`).
pub const BACKBONE_GRAPH: &str = "backbone.onnx";
/// The depth decoder graph (projection, decoder stack, `audio_head[k-1]`).
pub const DECODER_GRAPH: &str = "decoder.onnx";
/// The frame graph: a backbone step, the sampling of codebook 0 and the
/// decoder's walk over codebooks 1.. with their sampling, in one call
/// ([`frame_io`]).
pub const FRAME_GRAPH: &str = "frame.onnx";
/// Embedding tables the runtime sums per frame (f32 safetensors).
pub const LM_TABLES: &str = "lm_tables.safetensors";

/// Tensor names inside [`LM_TABLES`].
pub mod tables {
    /// `[text_vocab_size, D]`.
    pub const TEXT_EMBEDDINGS: &str = "text_embeddings";
    /// `[audio_vocab_size * n_codebooks, D]`, row = code + k * audio_vocab_size.
    pub const AUDIO_EMBEDDINGS: &str = "audio_embeddings";
    /// `[1, D]`: replaces every text embedding in the unconditional CFG row.
    pub const UNCONDITIONAL_TEXT_EMBEDDING: &str = "unconditional_text_embedding";
    /// `[D]`: `muq_linear(zeros)`, the conditional row's MuQ slot.
    pub const MUQ_BIAS: &str = "muq_linear.bias";
}

/// Input/output names of [`BACKBONE_GRAPH`] and [`DECODER_GRAPH`].
///
/// Shapes (`B` batch, `S` new positions, `C` cache capacity, `KV` kv heads,
/// `hd` head dim): `embeds` f32 `[B, S, D_backbone]`; `positions` int64 `[S]`;
/// `attn_bias` f32 `[S, C + S]` (0 = attend, -inf = masked); `past_key_{i}`
/// `[B, KV, hd, C]` and `past_value_{i}` `[B, KV, C, hd]` (cache dtype);
/// outputs `new_key_{i}` `[B, KV, hd, S]`, `new_value_{i}` `[B, KV, S, hd]`.
/// Backbone outputs `hidden` f32 `[B, D]` and `c0_logits` f32 `[B, V]` (plus
/// their per-position forms `hidden_all`, `c0_logits_all`); the decoder takes
/// `codebook` int64 scalar `k` (1..n_codebooks-1) and outputs `logits` f32
/// `[B, V]` (plus `logits_all` on a whole-frame call).
pub mod io {
    /// Summed frame embeddings.
    pub const EMBEDS: &str = "embeds";
    /// Absolute positions of the new rows.
    pub const POSITIONS: &str = "positions";
    /// Additive attention mask over `[cache capacity | new rows]`.
    pub const ATTN_BIAS: &str = "attn_bias";
    /// Decoder: which audio head to apply.
    pub const CODEBOOK: &str = "codebook";
    /// Backbone: final-norm output at the last position.
    pub const HIDDEN: &str = "hidden";
    /// Backbone: `codebook0_head(hidden)`.
    pub const C0_LOGITS: &str = "c0_logits";
    /// Decoder: `norm(h_last) @ audio_head[codebook - 1]`.
    pub const LOGITS: &str = "logits";
    /// Backbone: final-norm output at every new position, `[B, S, D]`.
    pub const HIDDEN_ALL: &str = "hidden_all";
    /// Backbone: `codebook0_head` at every new position, `[B, S, V]`.
    pub const C0_LOGITS_ALL: &str = "c0_logits_all";
    /// Decoder, whole-frame call (`S = n_codebooks` rows from position 0):
    /// logits of codebooks `1..n_codebooks`, `[B, n_codebooks - 1, V]`; empty
    /// `[B, 0, V]` on other calls.
    pub const LOGITS_ALL: &str = "logits_all";

    /// Cached keys of layer `i`.
    pub fn past_key(i: usize) -> String {
        format!("past_key_{i}")
    }

    /// Cached values of layer `i`.
    pub fn past_value(i: usize) -> String {
        format!("past_value_{i}")
    }

    /// Keys of the new positions of layer `i`.
    pub fn new_key(i: usize) -> String {
        format!("new_key_{i}")
    }

    /// Values of the new positions of layer `i`.
    pub fn new_value(i: usize) -> String {
        format!("new_value_{i}")
    }

    /// Optional output (engines built with layer taps): layer `i`'s residual
    /// stream at the last position, f32 `[B, D]`.
    pub fn layer_tap(i: usize) -> String {
        format!("tap.layer_{i}")
    }

    /// Output of calibration graphs only: the input of linear `linear`
    /// (checkpoint name without `.weight`), f32 `[B, S, K]` (`[B, K]` for heads).
    pub fn probe(linear: &str) -> String {
        format!("probe.{linear}")
    }
}

/// Input/output names of [`FRAME_GRAPH`] beyond the backbone's (`embeds`,
/// `positions`, `attn_bias`, `past_*` in, `new_*` out, as in [`io`]).
///
/// Inputs: `noise` f32 `[n_codebooks, V]` (the exponential race's `q ~ Exp(1)`,
/// one row per codebook in sampling order), `temperature` f32 scalar,
/// `top_k` int64 `[1]` (`1..=min(V, TOP_K_MAX)`), `cfg_scale` f32 scalar (row 0 conditional,
/// the last row unconditional; with one row the mix is the row itself).
/// Output: `codes` int64 `[n_codebooks]`, the frame's codes (the same in every
/// batch row).
pub mod frame_io {
    /// Exponential-race noise, one row per codebook.
    pub const NOISE: &str = "noise";
    /// Sampling temperature.
    pub const TEMPERATURE: &str = "temperature";
    /// Candidates kept per codebook (ties at the k-th value too).
    pub const TOP_K: &str = "top_k";
    /// Classifier-free guidance scale.
    pub const CFG_SCALE: &str = "cfg_scale";
    /// The sampled codes of the frame.
    pub const CODES: &str = "codes";
    /// Largest `top_k` a frame graph takes: TensorRT's `TopK` keeps at most
    /// 3840 values, so the TensorRT form sorts that many candidates once and
    /// reads the k-th; a larger `top_k` decodes through the per-step graphs.
    pub const TOP_K_MAX: usize = 3840;
}

/// Input/output names of the two codec graphs.
///
/// `flow_estimator.onnx`: `x` f32 `[B, T, in_channels]` (channel concat of the
/// Euler state, the in-context latents and `mu`), `timestep` f32 `[B]` →
/// `velocity` f32 `[B, T, out_channels]`. `scalar_decoder.onnx`: `latents` f32
/// `[N, latent_hidden_dim, T]` → `audio` f32 `[N, 1, T · samples_per_latent]`
/// (`N` = audio channels).
pub mod codec_io {
    /// Estimator input: channel concat `[B, T, in_channels]`.
    pub const ESTIMATOR_INPUT: &str = "x";
    /// Estimator input: flow time per batch row `[B]`.
    pub const ESTIMATOR_TIMESTEP: &str = "timestep";
    /// Estimator output `[B, T, out_channels]`.
    pub const ESTIMATOR_OUTPUT: &str = "velocity";
    /// Scalar decoder input `[N, latent_hidden_dim, T]`.
    pub const DECODER_INPUT: &str = "latents";
    /// Scalar decoder output `[N, 1, T · samples_per_latent]`.
    pub const DECODER_OUTPUT: &str = "audio";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_file_has_a_kind() {
        for (name, kind) in [
            (BACKBONE_GRAPH, EngineKind::Backbone),
            (DECODER_GRAPH, EngineKind::Decoder),
            (FRAME_GRAPH, EngineKind::Frame),
            (LM_TABLES, EngineKind::LmTables),
            (FLOW_ESTIMATOR_GRAPH, EngineKind::FlowEstimator),
            (SCALAR_DECODER_GRAPH, EngineKind::ScalarDecoder),
            (CODEC_TABLES, EngineKind::CodecTables),
            (CODEC_CONFIG, EngineKind::CodecConfig),
            (TOKENIZER, EngineKind::Tokenizer),
            (CALIBRATION, EngineKind::Calibration),
            ("backbone.onnx.data", EngineKind::GraphData),
            ("trt/backbone_ctx.onnx", EngineKind::TensorRt),
            (
                "trt/engines/TensorrtExecutionProvider_TRTKernel_0.engine",
                EngineKind::TensorRt,
            ),
            ("draft/backbone.onnx", EngineKind::DraftBackbone),
            ("draft/decoder.onnx", EngineKind::DraftDecoder),
            ("draft/decoder.onnx.data", EngineKind::GraphData),
        ] {
            assert_eq!(kind_of_file(name), Some(kind), "{name}");
        }
        assert_eq!(kind_of_file("notes.txt"), None);
        assert_eq!(kind_of_file("draft/lm_tables.safetensors"), None);
    }

    #[test]
    fn context_models_live_in_the_tensorrt_folder() {
        assert_eq!(context_model(BACKBONE_GRAPH), "trt/backbone_ctx.onnx");
        assert_eq!(context_model(FLOW_ESTIMATOR_GRAPH), "trt/flow_estimator_ctx.onnx");
        assert_eq!(tensorrt_engine(BACKBONE_GRAPH), "trt/backbone.engine");
        assert_eq!(context_model("draft/decoder.onnx"), "trt/draft/decoder_ctx.onnx");
        assert_eq!(tensorrt_engine("draft/decoder.onnx"), "trt/draft/decoder.engine");
    }
}
