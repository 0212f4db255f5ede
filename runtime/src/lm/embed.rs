//! Frame embeddings (spec §2.5), summed in Rust over the memory-mapped
//! `lm_tables.safetensors` of an engine.
//!
//! A backbone row has 9 columns (8 audio codebooks, then text) and a mask;
//! its embedding is `Σ mask_c · e_c` with `e_k = audio_embeddings[tok_k + k·V]`
//! and `e_text = text_embeddings[tok_8]`, or `unconditional_text_embedding[0]`
//! in the unconditional CFG row. The prompt's MuQ row is then replaced by
//! `muq_linear.bias` (conditional; `muq_embed` is always zeros) or the
//! unconditional embedding. Sums are f32 in column order.

use std::fs::File;
use std::path::{Path, PathBuf};

use heart::engine::tables;
use heart::fixture::CaseTensors;
use memmap2::Mmap;
use safetensors::SafeTensors;

use super::LmError;

/// Columns of a backbone row: the audio codebooks, then the text column.
pub const ROW_COLUMNS: usize = 9;

/// One backbone input row: 9 tokens and which of them are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Audio codes (columns 0..8) and the text id (column 8).
    pub tokens: [i64; ROW_COLUMNS],
    /// Which columns contribute.
    pub mask: [bool; ROW_COLUMNS],
}

impl Row {
    /// A prompt row: only the text column.
    pub fn text(id: i64) -> Self {
        let mut mask = [false; ROW_COLUMNS];
        mask[ROW_COLUMNS - 1] = true;
        let mut tokens = [0; ROW_COLUMNS];
        tokens[ROW_COLUMNS - 1] = id;
        Self { tokens, mask }
    }

    /// A fed-back frame: the 8 audio codes, text column `empty_id` masked out.
    pub fn audio(codes: &[i64], empty_id: i64) -> Self {
        let mut tokens = [empty_id; ROW_COLUMNS];
        let mut mask = [false; ROW_COLUMNS];
        for (k, &c) in codes.iter().take(ROW_COLUMNS - 1).enumerate() {
            tokens[k] = c;
            mask[k] = true;
        }
        Self { tokens, mask }
    }
}

/// A prompt: its rows and the index of the MuQ row (whose summed embedding is
/// replaced), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Backbone rows at positions `0..len`.
    pub rows: Vec<Row>,
    /// The row replaced by the MuQ embedding.
    pub muq_idx: Option<usize>,
}

impl From<&heart::prompt::Prompt> for Prompt {
    /// The rows of a prompt built from tags and lyrics (`heart::prompt`).
    fn from(p: &heart::prompt::Prompt) -> Self {
        Self::from_text(&p.text_ids(), p.muq_idx())
    }
}

impl Prompt {
    /// A golden-fixture case's prompt: row 0 of `prompt_tokens` `[B, P, 9]`,
    /// its mask `prompt_tokens_mask` and `prompt_muq_idx`.
    pub fn from_fixture(t: &CaseTensors) -> Result<Self, LmError> {
        let bad = |e: heart::Error| LmError::Input(e.to_string());
        let (tokens, shape) = t.i64("prompt_tokens").map_err(bad)?;
        let (mask, mask_shape) = t.i64("prompt_tokens_mask").map_err(bad)?;
        let (muq, _) = t.i64("prompt_muq_idx").map_err(bad)?;
        let &[_, p, cols] = shape.as_slice() else {
            return Err(LmError::Input(format!(
                "prompt_tokens has shape {shape:?}, expected [B, P, 9]"
            )));
        };
        if mask_shape != shape || cols != ROW_COLUMNS {
            return Err(LmError::Input(format!(
                "prompt mask {mask_shape:?} / tokens {shape:?} are not [B, P, 9]"
            )));
        }
        let rows = (0..p)
            .map(|r| {
                let mut row = Row {
                    tokens: [0; ROW_COLUMNS],
                    mask: [false; ROW_COLUMNS],
                };
                for c in 0..cols {
                    row.tokens[c] = tokens[r * cols + c];
                    row.mask[c] = mask[r * cols + c] != 0;
                }
                row
            })
            .collect();
        let muq_idx = muq
            .first()
            .map(|&m| usize::try_from(m))
            .transpose()
            .map_err(|_| LmError::Input(format!("prompt_muq_idx {muq:?} is negative")))?;
        Ok(Self { rows, muq_idx })
    }

    /// A text-only prompt (tags, MuQ slot, lyrics); the id at `muq_idx` is ignored.
    pub fn from_text(ids: &[i64], muq_idx: usize) -> Self {
        Self {
            rows: ids.iter().map(|&id| Row::text(id)).collect(),
            muq_idx: Some(muq_idx),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the prompt has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Embedding tables mapped from an engine's `lm_tables.safetensors`.
pub struct Embedder {
    path: PathBuf,
    map: Mmap,
    dim: usize,
    text: TableRef,
    audio: TableRef,
    uncond: TableRef,
    muq: TableRef,
    audio_vocab: usize,
}

/// Where one f32 table lives in the map.
#[derive(Debug, Clone, Copy)]
struct TableRef {
    start: usize,
    rows: usize,
}

impl Embedder {
    /// Maps `path`; `audio_vocab` is the per-codebook audio vocabulary.
    pub fn open(path: &Path, audio_vocab: usize) -> Result<Self, LmError> {
        let err = |message: String| LmError::Engine {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        // SAFETY: engine files are read-only while a runtime uses them.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(e.to_string()))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let base = map.as_ptr() as usize;
        let mut dim = None;
        let mut table = |name: &str, rank: usize| -> Result<TableRef, LmError> {
            let t = st.tensor(name).map_err(|_| err(format!("missing table `{name}`")))?;
            let shape = t.shape().to_vec();
            let d = *shape.last().unwrap_or(&0);
            if t.dtype() != safetensors::Dtype::F32 || shape.len() != rank || *dim.get_or_insert(d) != d {
                return Err(err(format!(
                    "table `{name}` is {:?} {shape:?}; expected F32 of rank {rank} with the common width",
                    t.dtype()
                )));
            }
            let start = t.data().as_ptr() as usize - base;
            if !start.is_multiple_of(4) {
                return Err(err(format!("table `{name}` is not 4-byte aligned")));
            }
            Ok(TableRef {
                start,
                rows: if rank == 2 { shape[0] } else { 1 },
            })
        };
        let text = table(tables::TEXT_EMBEDDINGS, 2)?;
        let audio = table(tables::AUDIO_EMBEDDINGS, 2)?;
        let uncond = table(tables::UNCONDITIONAL_TEXT_EMBEDDING, 2)?;
        let muq = table(tables::MUQ_BIAS, 1)?;
        let dim = dim.unwrap_or(0);
        if audio.rows % audio_vocab != 0 || uncond.rows != 1 {
            return Err(err(format!(
                "audio table has {} rows (not a multiple of the audio vocabulary {audio_vocab}) or the \
                 unconditional table has {} rows (expected 1)",
                audio.rows, uncond.rows
            )));
        }
        drop(st);
        Ok(Self {
            path: path.to_path_buf(),
            map,
            dim,
            text,
            audio,
            uncond,
            muq,
            audio_vocab,
        })
    }

    /// Embedding width (the backbone's `D`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of audio codebooks in the table.
    pub fn codebooks(&self) -> usize {
        self.audio.rows / self.audio_vocab
    }

    /// `audio_embeddings[code + k·V]`.
    pub fn audio(&self, k: usize, code: i64) -> Result<&[f32], LmError> {
        let v = self.audio_vocab as i64;
        if k >= self.codebooks() || !(0..v).contains(&code) {
            return Err(LmError::Input(format!(
                "audio code {code} of codebook {k} is outside 0..{v} (or no such codebook)"
            )));
        }
        Ok(self.row(self.audio, k * self.audio_vocab + code as usize))
    }

    /// `text_embeddings[id]`.
    pub fn text(&self, id: i64) -> Result<&[f32], LmError> {
        if !(0..self.text.rows as i64).contains(&id) {
            return Err(LmError::Input(format!("text id {id} is outside 0..{}", self.text.rows)));
        }
        Ok(self.row(self.text, id as usize))
    }

    /// `unconditional_text_embedding[0]`.
    pub fn unconditional(&self) -> &[f32] {
        self.row(self.uncond, 0)
    }

    /// The conditional MuQ slot, `muq_linear.bias`.
    pub fn muq(&self) -> &[f32] {
        self.row(self.muq, 0)
    }

    /// Adds the embedding of `row` to `out` (`dim` values); `uncond` selects the
    /// unconditional text embedding.
    pub fn add_row(&self, row: &Row, uncond: bool, out: &mut [f32]) -> Result<(), LmError> {
        for (c, (&tok, &on)) in row.tokens.iter().zip(&row.mask).enumerate() {
            if !on {
                continue;
            }
            let e = if c == ROW_COLUMNS - 1 {
                if uncond { self.unconditional() } else { self.text(tok)? }
            } else {
                self.audio(c, tok)?
            };
            for (o, &x) in out.iter_mut().zip(e) {
                *o += x;
            }
        }
        Ok(())
    }

    /// Backbone input `[batch, P, D]` of a prompt: row 0 conditional, row 1 (if
    /// `batch == 2`) unconditional; the MuQ row replaced in each.
    pub fn prompt(&self, prompt: &Prompt, batch: usize) -> Result<Vec<f32>, LmError> {
        let (p, d) = (prompt.len(), self.dim);
        if prompt.muq_idx.is_some_and(|m| m >= p) {
            return Err(LmError::Input(format!(
                "muq_idx {:?} is outside the {p}-row prompt",
                prompt.muq_idx
            )));
        }
        let mut out = vec![0f32; batch * p * d];
        for (b, rows) in out.chunks_exact_mut(p * d).enumerate() {
            let uncond = b == 1;
            for (row, o) in prompt.rows.iter().zip(rows.chunks_exact_mut(d)) {
                self.add_row(row, uncond, o)?;
            }
            if let Some(m) = prompt.muq_idx {
                let slot = if uncond { self.unconditional() } else { self.muq() };
                rows[m * d..(m + 1) * d].copy_from_slice(slot);
            }
        }
        Ok(out)
    }

    /// Backbone input `[batch, 1, D]` feeding back one frame per batch row
    /// (`frames[b]` = row b's codes).
    pub fn frame(&self, frames: &[Vec<i64>], empty_id: i64) -> Result<Vec<f32>, LmError> {
        let d = self.dim;
        let mut out = vec![0f32; frames.len() * d];
        for (codes, o) in frames.iter().zip(out.chunks_exact_mut(d)) {
            self.add_row(&Row::audio(codes, empty_id), false, o)?;
        }
        Ok(out)
    }

    fn row(&self, t: TableRef, i: usize) -> &[f32] {
        let start = t.start + i * self.dim * 4;
        bytemuck::cast_slice(&self.map[start..start + self.dim * 4])
    }
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("path", &self.path)
            .field("dim", &self.dim)
            .finish()
    }
}
