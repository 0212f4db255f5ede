//! Roofline of one HeartMuLa frame: the bytes a frame must read from memory,
//! and the time floor those bytes impose at a given memory bandwidth.
//!
//! Generating one frame at batch `B` (2 with CFG) runs the backbone once at the
//! current position and the depth decoder `n_codebooks − 1` times (7). A
//! matrix–vector product reads every weight once per call whatever `B` is, so
//! at the small batches of generation the weights dominate the traffic:
//!
//! - backbone: every linear layer and norm of the stack, plus `codebook0_head`;
//! - decoder, per call: its layers and norms, `projection`, and the one
//!   `audio_head` slice `[D, V]` the call applies;
//! - embedding rows gathered by the runtime (`n_codebooks` rows for the fed-back
//!   frame, `n_codebooks − 1` decoder inputs; f32 tables, negligible);
//! - the KV cache: `2 · layers · kv_heads · head_dim · positions · bytes · B`
//!   per stack, at the positions the graph attends over (the backbone's cache
//!   capacity at position `p`; at most `n_codebooks` positions per decoder call).
//!
//! `floor ms/frame = bytes / bandwidth`. Weight bytes follow one rule per
//! precision, [`matrix_bytes`]; norms and biases stay f32 at every precision
//! (the exporter stores them so). Every matrix is counted at the engine
//! precision but the two heads, which [`LmRoofline::from_manifest`] counts at
//! the precision the build profile stores them ([`head_precision`]): the fp4,
//! int4 and int8 profiles keep them dense, a small share of the bytes at the
//! real size but most of int4's at the synthesized small size (f32 heads: 0.27
//! of 0.41 GB a frame).
//! The codec's costs live in [`super::codec`] and use the same byte rule.

use crate::config::{FlavorParams, MulaConfig};
use crate::manifest::{Manifest, ProfileEntry};
use crate::precision::Precision;
use crate::profile::BuildProfile;
use serde::{Deserialize, Serialize};

/// Bytes per element of f32 vectors (norm scales, biases) and embedding tables.
pub const F32_BYTES: u64 = 4;

/// Elements per NVFP4 block along the reduction dimension (one E4M3 scale each).
pub const FP4_BLOCK: u64 = 16;

/// Elements per int8/int4 (`MatMulNBits`) block along the reduction dimension
/// (one f32 scale and one zero point each).
pub const INT_BLOCK: u64 = 32;

/// A weight matrix as a matmul reads it: `out` output features, each a dot
/// product over `inner` elements (`[out, inner]` in checkpoint layout; a conv
/// of kernel `k` over `c` channels has `inner = c · k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    /// Output features (rows of the checkpoint tensor).
    pub out: u64,
    /// Reduction length.
    pub inner: u64,
}

impl Matrix {
    /// An `[out, inner]` matrix.
    pub fn new(out: usize, inner: usize) -> Self {
        Self {
            out: out as u64,
            inner: inner as u64,
        }
    }

    /// Parameter count `out · inner`.
    pub fn params(&self) -> u64 {
        self.out * self.inner
    }
}

/// Bytes a weight matrix occupies, and a matmul reads, at `precision`:
///
/// - fp32: 4 per parameter; fp16: 2;
/// - fp8 (E4M3FN, per-output-channel scales): 1 per parameter + one f32 scale per output feature;
/// - fp4 (NVFP4): ½ per parameter + one E4M3 byte per block of 16 along `inner`
///   (rows padded to whole blocks) + one f32 global scale per tensor;
/// - int8 (`MatMulNBits`): per block of 32 along `inner` (rows padded to whole
///   blocks), 32 code bytes + a 4-byte f32 scale + a 1-byte zero point: 37/32
///   ≈ 1.16 byte per parameter;
/// - int4: per block of 32, 16 code bytes + a 4-byte scale, and the row's
///   zero points packed two per byte (`ceil(blocks / 2)` per row): ≈ 20.5/32
///   ≈ 0.64 byte per parameter.
///
/// This is what a `MatMulNBits` engine stores. ONNX Runtime repacks int
/// weights at load (and may keep per-block sums beside them for its
/// int8-activation kernels), so the bytes its kernels stream can differ by a
/// few percent. heart's int4 kernel (`quant::int4x16`) streams one zero-point
/// byte per block instead of half of one and pads outputs to 16: 21/32 byte
/// per parameter, 2.4 % above this figure, so its % of floor is understated
/// by that much.
pub fn matrix_bytes(precision: Precision, m: Matrix) -> u64 {
    match precision {
        Precision::Fp32 => 4 * m.params(),
        Precision::Fp16 => 2 * m.params(),
        Precision::Fp8 => m.params() + F32_BYTES * m.out,
        Precision::Fp4 => {
            let blocks_per_row = m.inner.div_ceil(FP4_BLOCK);
            m.out * blocks_per_row * (FP4_BLOCK / 2 + 1) + F32_BYTES
        }
        Precision::Int8 => {
            let blocks_per_row = m.inner.div_ceil(INT_BLOCK);
            m.out * blocks_per_row * (INT_BLOCK + F32_BYTES + 1)
        }
        Precision::Int4 => {
            let blocks_per_row = m.inner.div_ceil(INT_BLOCK);
            m.out * (blocks_per_row * (INT_BLOCK / 2 + F32_BYTES) + blocks_per_row.div_ceil(2))
        }
    }
}

/// A group of weights read together: matrices (stored at the engine precision)
/// and f32 vectors (norm scales, biases, modulation tables).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Every weight matrix.
    pub matrices: Vec<Matrix>,
    /// Elements of f32 vectors.
    pub vector_params: u64,
}

impl Weights {
    /// Parameter count (matrices and vectors).
    pub fn params(&self) -> u64 {
        self.matrix_params() + self.vector_params
    }

    /// Parameters in matrices only.
    pub fn matrix_params(&self) -> u64 {
        self.matrices.iter().map(Matrix::params).sum()
    }

    /// Bytes read when every weight is read once, at `precision`.
    pub fn bytes(&self, precision: Precision) -> u64 {
        let matrices: u64 = self.matrices.iter().map(|&m| matrix_bytes(precision, m)).sum();
        matrices + F32_BYTES * self.vector_params
    }

    /// Adds `count` copies of `other`.
    pub fn add(&mut self, other: &Weights, count: usize) {
        for _ in 0..count {
            self.matrices.extend_from_slice(&other.matrices);
        }
        self.vector_params += other.vector_params * count as u64;
    }

    /// These weights plus the given matrices.
    pub fn with(mut self, matrices: &[Matrix]) -> Self {
        self.matrices.extend_from_slice(matrices);
        self
    }
}

/// One torchtune Llama layer: q/k/v/output projections, SwiGLU w1/w3/w2, and
/// the two RMSNorm scales.
pub fn llama_layer(p: &FlavorParams) -> Weights {
    let (d, kv, h) = (p.embed_dim, p.num_kv_heads * p.head_dim(), p.intermediate_dim);
    Weights {
        matrices: vec![
            Matrix::new(d, d),
            Matrix::new(kv, d),
            Matrix::new(kv, d),
            Matrix::new(d, d),
            Matrix::new(h, d),
            Matrix::new(h, d),
            Matrix::new(d, h),
        ],
        vector_params: 2 * d as u64,
    }
}

/// A whole stack: its layers and the final norm.
pub fn llama_stack(p: &FlavorParams) -> Weights {
    let mut stack = Weights {
        matrices: Vec::new(),
        vector_params: p.embed_dim as u64,
    };
    stack.add(&llama_layer(p), p.num_layers);
    stack
}

/// The weights one LM frame reads, by part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmWeights {
    /// Backbone stack plus `codebook0_head` (read once per frame).
    pub backbone: Weights,
    /// Decoder stack, `projection` and one `audio_head` slice (read once per decoder call).
    pub decoder_call: Weights,
    /// `codebook0_head` (also counted in `backbone`).
    pub backbone_head: Matrix,
    /// One `audio_head` slice (also counted in `decoder_call`).
    pub audio_head: Matrix,
    /// Decoder calls per frame (`n_codebooks − 1`).
    pub decoder_calls: usize,
    /// Embedding rows gathered per frame (f32 rows of `embed_dim`).
    pub embedding_rows: u64,
    /// Width of an embedding row.
    pub embed_dim: u64,
}

impl LmWeights {
    /// The per-frame weights of a HeartMuLa model (spec §2.2, §2.6).
    pub fn new(model: &MulaConfig) -> Self {
        let (d, v, n_cb) = (
            model.backbone.embed_dim,
            model.audio_vocab_size,
            model.audio_num_codebooks,
        );
        let backbone_head = Matrix::new(v, d);
        let audio_head = Matrix::new(v, model.decoder.embed_dim);
        let backbone = llama_stack(&model.backbone).with(&[backbone_head]);
        let decoder_call = llama_stack(&model.decoder).with(&[Matrix::new(model.decoder.embed_dim, d), audio_head]);
        Self {
            backbone,
            decoder_call,
            backbone_head,
            audio_head,
            decoder_calls: n_cb - 1,
            embedding_rows: (2 * n_cb - 1) as u64,
            embed_dim: d as u64,
        }
    }
}

/// KV-cache bytes one call of a stack reads when attending over `positions`
/// cached positions: `2 · layers · kv_heads · head_dim · positions · elem_bytes · batch`.
pub fn kv_read_bytes(p: &FlavorParams, positions: usize, batch: usize, elem_bytes: u64) -> u64 {
    2 * (p.num_layers * p.num_kv_heads * p.head_dim() * positions * batch) as u64 * elem_bytes
}

/// Bytes per KV-cache element of an LM engine: the graphs keep the cache in
/// their compute dtype: f32 for fp32, int8 and int4 engines (`MatMulNBits`
/// takes f32 activations on CPU), f16 for fp16, fp8 and fp4 (the built-in
/// profiles compute in fp16).
pub fn kv_elem_bytes(precision: Precision) -> u64 {
    precision.default_compute().compute_bytes().unwrap_or(4)
}

/// Bytes one LM frame reads, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameBytes {
    /// Backbone weights and `codebook0_head`.
    pub backbone_weights: u64,
    /// Decoder weights over all calls of the frame.
    pub decoder_weights: u64,
    /// Embedding rows gathered.
    pub embeddings: u64,
    /// Backbone KV cache.
    pub backbone_kv: u64,
    /// Decoder KV cache over all calls of the frame.
    pub decoder_kv: u64,
}

impl FrameBytes {
    /// Everything the backbone step reads (weights and its cache).
    pub fn backbone(&self) -> u64 {
        self.backbone_weights + self.backbone_kv
    }

    /// Everything the decoder calls of one frame read.
    pub fn decoder(&self) -> u64 {
        self.decoder_weights + self.decoder_kv
    }

    /// The whole frame.
    pub fn total(&self) -> u64 {
        self.backbone() + self.decoder() + self.embeddings
    }
}

/// The memory roofline of an LM engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmRoofline {
    /// Weights read per frame.
    pub weights: LmWeights,
    /// Precision the weights are stored at.
    pub precision: Precision,
    /// Precision of the two heads: `precision`, or the compute dtype when the
    /// build profile keeps them dense (fp4, int4, int8 profiles do).
    pub head_precision: Precision,
    /// Bytes per KV-cache element ([`kv_elem_bytes`] by default).
    pub kv_elem_bytes: u64,
    /// Batch rows (2 with CFG, 1 without).
    pub batch: usize,
    /// Backbone hyper-parameters (for its cache).
    pub backbone: FlavorParams,
    /// Decoder hyper-parameters.
    pub decoder: FlavorParams,
}

impl LmRoofline {
    /// The roofline of `model` stored at `precision`, generating `batch` rows.
    pub fn new(model: &MulaConfig, precision: Precision, batch: usize) -> Self {
        Self {
            weights: LmWeights::new(model),
            precision,
            head_precision: precision,
            kv_elem_bytes: kv_elem_bytes(precision),
            batch,
            backbone: model.backbone,
            decoder: model.decoder,
        }
    }

    /// The roofline of an engine folder's LM, from its manifest.
    /// Heads are counted at the precision the engine's build profile stores
    /// them (see [`head_precision`]).
    pub fn from_manifest(manifest: &Manifest, batch: usize) -> Self {
        Self {
            head_precision: head_precision(manifest),
            ..Self::new(&manifest.model, manifest.precision, batch)
        }
    }

    /// Bytes of one frame whose backbone attends over `backbone_positions`
    /// cached positions (pass the cache capacity the graph is given). Each
    /// decoder call is counted at its full `decoder_calls + 1` positions, an
    /// upper bound (call `k` attends over `k + 1`).
    pub fn frame_bytes(&self, backbone_positions: usize) -> FrameBytes {
        let w = &self.weights;
        let calls = w.decoder_calls;
        // The heads are inside `backbone` / `decoder_call` at `precision`;
        // swap their bytes for the bytes at `head_precision`.
        let head = |m: Matrix| matrix_bytes(self.head_precision, m) as i64 - matrix_bytes(self.precision, m) as i64;
        let backbone = w.backbone.bytes(self.precision) as i64 + head(w.backbone_head);
        let decoder_call = w.decoder_call.bytes(self.precision) as i64 + head(w.audio_head);
        FrameBytes {
            backbone_weights: backbone as u64,
            decoder_weights: calls as u64 * decoder_call as u64,
            embeddings: w.embedding_rows * w.embed_dim * F32_BYTES,
            backbone_kv: kv_read_bytes(&self.backbone, backbone_positions, self.batch, self.kv_elem_bytes),
            decoder_kv: calls as u64 * kv_read_bytes(&self.decoder, calls + 1, self.batch, self.kv_elem_bytes),
        }
    }
}

/// The precision an engine stores its heads at: its recorded build profile's
/// [`BuildProfile::head_precision`], or the engine precision when it records
/// none (or one this version cannot parse).
pub fn head_precision(manifest: &Manifest) -> Precision {
    recorded_head_precision(manifest.build_profile.as_ref(), manifest.precision)
}

/// [`head_precision`] from a recorded profile and the engine precision.
pub fn recorded_head_precision(profile: Option<&ProfileEntry>, precision: Precision) -> Precision {
    profile
        .and_then(|p| BuildProfile::parse(&p.name, &p.source, &p.text).ok())
        .map_or(precision, |p| p.head_precision())
}

/// Time in milliseconds to move `bytes` at `gb_per_s` (decimal GB/s, 10⁹ B/s).
pub fn memory_floor_ms(bytes: u64, gb_per_s: f64) -> f64 {
    bytes as f64 / (gb_per_s * 1e9) * 1e3
}

/// Time in milliseconds to execute `flops` at `gflop_per_s` (10⁹ FLOP/s).
pub fn compute_floor_ms(flops: u64, gflop_per_s: f64) -> f64 {
    flops as f64 / (gflop_per_s * 1e9) * 1e3
}

/// Achieved fraction of the floor in percent: `floor / measured · 100`
/// (100 % = running at the floor).
pub fn percent_of_floor(floor_ms: f64, measured_ms: f64) -> f64 {
    floor_ms / measured_ms * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_heads_are_counted_at_the_compute_dtype() {
        for (name, precision, heads) in [
            ("int4", Precision::Int4, Precision::Fp32),
            ("int4-heads", Precision::Int4, Precision::Int4),
            ("fp4", Precision::Fp4, Precision::Fp16),
        ] {
            let entry = crate::profile::BuildProfile::built_in(name).unwrap().entry;
            assert_eq!(recorded_head_precision(Some(&entry), precision), heads, "{name}");
        }
        let broken = ProfileEntry {
            name: "x".into(),
            source: "x.toml".into(),
            sha256: String::new(),
            text: "not toml [".into(),
        };
        assert_eq!(recorded_head_precision(Some(&broken), Precision::Fp8), Precision::Fp8);
        assert_eq!(recorded_head_precision(None, Precision::Fp8), Precision::Fp8);

        let model = MulaConfig::heartmula_oss_3b();
        let same = LmRoofline::new(&model, Precision::Int4, 2);
        let dense = LmRoofline {
            head_precision: Precision::Fp32,
            ..same.clone()
        };
        let (a, b) = (same.frame_bytes(0), dense.frame_bytes(0));
        let w = &same.weights;
        let delta = |m: Matrix| matrix_bytes(Precision::Fp32, m) - matrix_bytes(Precision::Int4, m);
        assert_eq!(b.backbone_weights - a.backbone_weights, delta(w.backbone_head));
        assert_eq!(b.decoder_weights - a.decoder_weights, 7 * delta(w.audio_head));
    }

    #[test]
    fn parameter_counts_match_spec_section_8() {
        let b = FlavorParams::builtin("llama-3B").unwrap();
        let d = FlavorParams::builtin("llama-300M").unwrap();
        assert_eq!(llama_layer(&b).params(), 100_669_440);
        assert_eq!(llama_stack(&b).params(), 2_818_747_392);
        assert_eq!(llama_layer(&d).params(), 103_815_168);
        assert_eq!(llama_stack(&d).params(), 311_448_576);
        let w = LmWeights::new(&MulaConfig::heartmula_oss_3b());
        // backbone + codebook0_head; decoder + projection + one of 7 audio_head slices.
        assert_eq!(w.backbone.params(), 2_818_747_392 + 25_181_184);
        assert_eq!(w.decoder_call.params(), 311_448_576 + 9_437_184 + 176_268_288 / 7);
        assert_eq!((w.decoder_calls, w.embedding_rows), (7, 15));
        // 28 layers × 2 norms + final norm, all width 3072.
        assert_eq!(w.backbone.vector_params, 57 * 3072);
    }

    #[test]
    fn byte_rule_per_precision_on_a_hand_worked_matrix() {
        let m = Matrix::new(8197, 3072);
        assert_eq!(matrix_bytes(Precision::Fp32, m), 100_724_736);
        assert_eq!(matrix_bytes(Precision::Fp16, m), 50_362_368);
        // 25,181,184 codes + 8197 f32 scales.
        assert_eq!(matrix_bytes(Precision::Fp8, m), 25_181_184 + 32_788);
        // 192 blocks per row × 9 bytes × 8197 rows + 4.
        assert_eq!(matrix_bytes(Precision::Fp4, m), 14_164_416 + 4);
        // Ragged rows pad to whole blocks: 20 columns = 2 blocks.
        assert_eq!(matrix_bytes(Precision::Fp4, Matrix::new(3, 20)), 3 * 2 * 9 + 4);
        // int8: 96 blocks per row × (32 codes + 4 scale + 1 zero point) × 8197 rows.
        assert_eq!(matrix_bytes(Precision::Int8, m), 8197 * 96 * 37);
        // int4: 96 blocks × (16 codes + 4 scale) + 48 zero-point bytes per row.
        assert_eq!(matrix_bytes(Precision::Int4, m), 8197 * (96 * 20 + 48));
        // 48 columns = 2 blocks (the second half padding); 3 blocks → 2 zero-point bytes.
        assert_eq!(matrix_bytes(Precision::Int8, Matrix::new(3, 48)), 3 * 2 * 37);
        assert_eq!(matrix_bytes(Precision::Int4, Matrix::new(3, 48)), 3 * (2 * 20 + 1));
        assert_eq!(matrix_bytes(Precision::Int4, Matrix::new(1, 65)), 3 * 20 + 2);
    }

    #[test]
    fn frame_bytes_of_the_3b_model() {
        let model = MulaConfig::heartmula_oss_3b();
        let fp32 = LmRoofline::new(&model, Precision::Fp32, 2).frame_bytes(0);
        // Every parameter at 4 bytes: 4 × (2,818,747,392 + 25,181,184).
        assert_eq!(fp32.backbone_weights, 11_375_714_304);
        // 7 × 4 × (311,448,576 + 9,437,184 + 25,181,184).
        assert_eq!(fp32.decoder_weights, 9_689_874_432);
        assert_eq!(fp32.embeddings, 15 * 3072 * 4);
        assert_eq!(fp32.backbone_kv, 0);
        // 7 calls × 2 · 3 layers · 4 kv heads · 384 · 8 positions · 4 B · batch 2.
        assert_eq!(fp32.decoder_kv, 7 * 2 * 3 * 4 * 384 * 8 * 4 * 2);

        // fp16: matrices at 2 bytes, the 57 (backbone) / 7 (decoder) norms stay f32.
        let fp16 = LmRoofline::new(&model, Precision::Fp16, 2).frame_bytes(0);
        assert_eq!(fp16.backbone_weights, 2 * (2_843_928_576 - 57 * 3072) + 4 * 57 * 3072);
        assert_eq!(fp16.decoder_weights, 7 * (2 * (346_066_944 - 7 * 3072) + 4 * 7 * 3072));

        // fp8: codes + one f32 scale per output row (backbone rows: 28 × 27,648 + 8197).
        let fp8 = LmRoofline::new(&model, Precision::Fp8, 2).frame_bytes(0);
        assert_eq!(
            fp8.backbone_weights,
            (2_843_928_576 - 57 * 3072) + 4 * (28 * 27_648 + 8197) + 4 * 57 * 3072
        );
        assert_eq!(fp8.backbone_weights, 2_847_583_252);
        // fp4: 9/16 byte per parameter (inner dims are multiples of 16) + 4 bytes per
        // matrix (28 × 7 + 1 in the backbone) + f32 norms.
        let fp4 = LmRoofline::new(&model, Precision::Fp4, 2).frame_bytes(0);
        assert_eq!(
            fp4.backbone_weights,
            (2_843_928_576 - 57 * 3072) / 16 * 9 + 4 * 197 + 4 * 57 * 3072
        );
        assert_eq!(fp4.total(), 2_965_717_912);

        // int4 and int8: f32 KV cache, as fp32.
        let int4 = LmRoofline::new(&model, Precision::Int4, 2).frame_bytes(0);
        assert_eq!(int4.decoder_kv, fp32.decoder_kv);
        let int8 = LmRoofline::new(&model, Precision::Int8, 2).frame_bytes(0);
        assert!(int4.total() * 3 < int8.total() * 2 && int8.total() * 3 < fp32.total());
    }

    #[test]
    fn backbone_kv_grows_linearly_with_position() {
        let r = LmRoofline::new(&MulaConfig::heartmula_oss_3b(), Precision::Fp32, 2);
        // 2 · 28 layers · 8 kv heads · 128 · 2048 positions · 4 B · 2 rows.
        assert_eq!(r.frame_bytes(2048).backbone_kv, 939_524_096);
        assert_eq!(r.frame_bytes(1024).backbone_kv * 2, r.frame_bytes(2048).backbone_kv);
        let fp16 = LmRoofline::new(&MulaConfig::heartmula_oss_3b(), Precision::Fp16, 1);
        assert_eq!(fp16.frame_bytes(2048).backbone_kv, 939_524_096 / 4);
    }

    #[test]
    fn floors_from_bytes_and_flops() {
        // 21.07 GB at 273 GB/s.
        let bytes = 11_375_714_304 + 9_689_874_432;
        let ms = memory_floor_ms(bytes, 273.0);
        assert!((ms - 77.163).abs() < 1e-3, "{ms}");
        assert_eq!(compute_floor_ms(2_000_000_000, 100.0), 20.0);
        assert_eq!(percent_of_floor(50.0, 200.0), 25.0);
    }
}
