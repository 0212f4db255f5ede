//! [`HeartMula`]: the backbone and decoder sessions plus the embedding tables
//! of an engine folder, and the two operations a frame is made of
//! (spec §2.6): a backbone step and the decoder's per-codebook walk.

use std::path::Path;

use heart::config::{GenConfig, MulaConfig};
use heart::engine::{self, io};

use super::LmError;
use super::embed::{Embedder, Prompt};
use super::kv_cache::KvCache;
use super::session::{SessionConfig, StackGraph};
use crate::ort_env::OrtRuntime;

/// Sizes and ids the frame loop needs, from the model and generation configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmDims {
    /// Audio vocabulary per codebook (`V`).
    pub audio_vocab: usize,
    /// Audio codebooks per frame (8).
    pub codebooks: usize,
    /// Real codec codes per codebook (`V - 5`).
    pub codebook_size: usize,
    /// End-of-audio id; any id `>=` it ends generation.
    pub audio_eos_id: i64,
    /// Filler of the masked text column of audio rows.
    pub empty_id: i64,
    /// Backbone positions available (RoPE table and cache limit).
    pub max_seq_len: usize,
}

/// Chooses codebook `k`'s code per batch row from its raw decoder logits `[B, V]`.
pub type RowPicker<'a> = dyn FnMut(usize, &[f32]) -> Result<Vec<i64>, LmError> + 'a;

/// Output of one backbone step at its last position.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneOut {
    /// Final-norm hidden state, `[B, D]`.
    pub hidden: Vec<f32>,
    /// `codebook0_head(hidden)`, `[B, V]`.
    pub c0_logits: Vec<f32>,
}

/// Caches of one generation.
#[derive(Debug, Clone)]
pub struct LmState {
    /// Backbone cache (grows with the song).
    pub backbone: KvCache,
    /// Decoder cache (one frame's positions, reset every frame).
    pub decoder: KvCache,
}

impl LmState {
    /// Batch rows.
    pub fn batch(&self) -> usize {
        self.backbone.shape().batch
    }
}

/// An opened HeartMuLa engine.
pub struct HeartMula {
    backbone: StackGraph,
    decoder: StackGraph,
    embedder: Embedder,
    dims: LmDims,
}

impl HeartMula {
    /// Opens `backbone.onnx`, `decoder.onnx` and `lm_tables.safetensors` from
    /// `engine_dir`.
    pub fn open(
        rt: &OrtRuntime,
        engine_dir: &Path,
        cfg: &MulaConfig,
        gen_cfg: &GenConfig,
        sessions: &SessionConfig,
    ) -> Result<Self, LmError> {
        let backbone = StackGraph::open(rt, &engine_dir.join(engine::BACKBONE_GRAPH), sessions)?;
        let decoder = StackGraph::open(rt, &engine_dir.join(engine::DECODER_GRAPH), sessions)?;
        let tables = engine_dir.join(engine::LM_TABLES);
        let embedder = Embedder::open(&tables, cfg.audio_vocab_size)?;
        let d = cfg.backbone.embed_dim;
        if embedder.dim() != d || backbone.embed_dim() != d || decoder.embed_dim() != d {
            return Err(LmError::Engine {
                path: engine_dir.to_path_buf(),
                message: format!(
                    "embedding widths disagree: config {d}, tables {}, backbone {}, decoder {}",
                    embedder.dim(),
                    backbone.embed_dim(),
                    decoder.embed_dim()
                ),
            });
        }
        if embedder.codebooks() != cfg.audio_num_codebooks {
            return Err(LmError::Engine {
                path: tables,
                message: format!(
                    "audio table holds {} codebooks, config says {}",
                    embedder.codebooks(),
                    cfg.audio_num_codebooks
                ),
            });
        }
        Ok(Self {
            backbone,
            decoder,
            embedder,
            dims: LmDims {
                audio_vocab: cfg.audio_vocab_size,
                codebooks: cfg.audio_num_codebooks,
                codebook_size: cfg.codebook_size(),
                audio_eos_id: gen_cfg.audio_eos_id,
                empty_id: gen_cfg.empty_id,
                max_seq_len: cfg.backbone.max_seq_len,
            },
        })
    }

    /// Sizes and ids.
    pub fn dims(&self) -> LmDims {
        self.dims
    }

    /// The embedding tables.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Fresh caches for `batch` rows and at most `max_positions` backbone
    /// positions (prompt + fed-back frames).
    pub fn new_state(&self, batch: usize, max_positions: usize) -> Result<LmState, LmError> {
        if max_positions > self.dims.max_seq_len {
            return Err(LmError::CacheFull {
                needed: max_positions,
                max: self.dims.max_seq_len,
            });
        }
        let n = self.dims.codebooks;
        Ok(LmState {
            backbone: KvCache::new(
                self.backbone.cache_shape(batch),
                self.backbone.cache_dtype(),
                0,
                max_positions,
            )?,
            decoder: KvCache::new(self.decoder.cache_shape(batch), self.decoder.cache_dtype(), n, n)?,
        })
    }

    /// Runs the prompt through the backbone (positions `0..P`).
    pub fn prefill(&mut self, st: &mut LmState, prompt: &Prompt) -> Result<BackboneOut, LmError> {
        if prompt.is_empty() {
            return Err(LmError::Input("the prompt has no rows".into()));
        }
        let embeds = self.embedder.prompt(prompt, st.batch())?;
        self.backbone_step(st, &embeds, prompt.len())
    }

    /// Feeds back one frame per batch row (`frames[b]`: that row's codes) at
    /// the next position.
    pub fn feed_frame(&mut self, st: &mut LmState, frames: &[Vec<i64>]) -> Result<BackboneOut, LmError> {
        let embeds = self.embedder.frame(frames, self.dims.empty_id)?;
        self.backbone_step(st, &embeds, 1)
    }

    /// A backbone step over `s` rows of summed embeddings `[B, s, D]`.
    pub fn backbone_step(&mut self, st: &mut LmState, embeds: &[f32], s: usize) -> Result<BackboneOut, LmError> {
        let mut out = self
            .backbone
            .step(&mut st.backbone, embeds, s, None, &[io::HIDDEN, io::C0_LOGITS])?;
        let c0_logits = out.pop().unwrap_or_default();
        let hidden = out.pop().unwrap_or_default();
        Ok(BackboneOut { hidden, c0_logits })
    }

    /// Walks the decoder for one frame: resets its cache, feeds
    /// `[hidden, audio_embeddings[c0]]`, then each chosen code. `pick(k, logits)`
    /// gets codebook `k`'s raw logits `[B, V]` and returns one code per row.
    /// Returns the codes `[B][codebooks]` (column 0 = `c0`).
    pub fn decode_frame(
        &mut self,
        st: &mut LmState,
        hidden: &[f32],
        c0: &[i64],
        pick: &mut RowPicker<'_>,
    ) -> Result<Vec<Vec<i64>>, LmError> {
        let (batch, d) = (st.batch(), self.embedder.dim());
        if hidden.len() != batch * d || c0.len() != batch {
            return Err(LmError::Shape {
                what: "decoder frame input".into(),
                expected: format!("{batch} rows of {d} hidden values and {batch} c0 codes"),
                got: format!("{} values and {} codes", hidden.len(), c0.len()),
            });
        }
        st.decoder.reset();
        let mut codes: Vec<Vec<i64>> = c0.iter().map(|&c| vec![c]).collect();
        let mut embeds = Vec::with_capacity(batch * 2 * d);
        for (b, h) in hidden.chunks_exact(d).enumerate() {
            embeds.extend_from_slice(h);
            embeds.extend_from_slice(self.embedder.audio(0, c0[b])?);
        }
        let mut s = 2;
        for k in 1..self.dims.codebooks {
            let mut out = self
                .decoder
                .step(&mut st.decoder, &embeds, s, Some(k as i64), &[io::LOGITS])?;
            let logits = out.pop().unwrap_or_default();
            let chosen = pick(k, &logits)?;
            if chosen.len() != batch {
                return Err(LmError::Input(format!(
                    "picker returned {} codes for {batch} rows",
                    chosen.len()
                )));
            }
            embeds.clear();
            for (row, &c) in codes.iter_mut().zip(&chosen) {
                row.push(c);
                // The last codebook's embedding is never consumed (spec §2.6).
                if k + 1 < self.dims.codebooks {
                    embeds.extend_from_slice(self.embedder.audio(k, c)?);
                }
            }
            s = 1;
        }
        Ok(codes)
    }
}

impl std::fmt::Debug for HeartMula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartMula")
            .field("dims", &self.dims)
            .field("embedder", &self.embedder)
            .finish()
    }
}
