//! A frame loop that also returns extra graph outputs ("taps") of every step:
//! the calibration run reads the `probe.*` inputs of the linear layers, the A/B
//! the `tap.layer_*` residual streams.
//!
//! [`TappedLm::run`] follows [`crate::lm::generate`] step for step (prefill,
//! then per frame: c0 from the backbone's guided logits, the decoder walk over
//! codebooks 1.., feeding the frame back; a frame after the first with a row-0
//! code `>= audio_eos_id` ends the run and is dropped), but drives the
//! [`StackGraph`]s itself so it can ask each step for more outputs. The
//! `tapped_run_matches_generate` test keeps the two loops in agreement.

use std::path::Path;

use heart::config::{GenConfig, MulaConfig};
use heart::engine::{self, io};

use crate::lm::kv_cache::KvCache;
use crate::lm::sampler::cfg_mix;
use crate::lm::session::StackGraph;
use crate::lm::{CodePicker, Embedder, GenParams, Generation, LmDims, LmError, Prompt, SessionConfig, StopReason};
use crate::ort_env::OrtRuntime;

/// Which graph a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    /// `backbone.onnx`.
    Backbone,
    /// `decoder.onnx`.
    Decoder,
}

/// The tapped outputs of one graph step.
#[derive(Debug)]
pub struct TapStep<'a> {
    /// The graph that ran.
    pub graph: GraphKind,
    /// Frame index (0 = the prompt's frame).
    pub frame: usize,
    /// Decoder: the codebook whose logits the step produced (1..); backbone: 0.
    pub codebook: usize,
    /// Batch rows × new positions of the step.
    pub rows: usize,
    /// The tap names asked for this graph, in order.
    pub names: &'a [String],
    /// Their values, flattened f32, in the same order.
    pub values: &'a [Vec<f32>],
}

/// What a run produced for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TappedFrame {
    /// Frame index.
    pub index: usize,
    /// Row 0's codes (column 0 = c0).
    pub codes: Vec<i64>,
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
    /// Backbone final-norm hidden state, `[B, D]`.
    pub hidden: Vec<f32>,
    /// The (CFG-guided) logits each code was picked from, `[codebooks][V]`.
    pub logits: Vec<Vec<f32>>,
}

/// Observer of a tapped run: every graph step's taps, then every frame.
pub trait TapObserver {
    /// Called after each graph step with the taps asked for.
    fn step(&mut self, _step: &TapStep<'_>) -> Result<(), LmError> {
        Ok(())
    }
    /// Called once per frame, after its decoder walk.
    fn frame(&mut self, _frame: &TappedFrame) -> Result<(), LmError> {
        Ok(())
    }
}

/// The LM graphs of an engine folder, run with extra outputs.
pub struct TappedLm {
    backbone: StackGraph,
    decoder: StackGraph,
    embedder: Embedder,
    dims: LmDims,
    backbone_taps: Vec<String>,
    decoder_taps: Vec<String>,
}

impl TappedLm {
    /// Opens the LM graphs and tables of `dir` (as [`crate::lm::HeartMula::open`]).
    pub fn open(
        rt: &OrtRuntime,
        dir: &Path,
        cfg: &MulaConfig,
        gen_cfg: &GenConfig,
        sessions: &SessionConfig,
    ) -> Result<Self, LmError> {
        let backbone = StackGraph::open(rt, &dir.join(engine::BACKBONE_GRAPH), sessions)?;
        let decoder = StackGraph::open(rt, &dir.join(engine::DECODER_GRAPH), sessions)?;
        let embedder = Embedder::open(&dir.join(engine::LM_TABLES), cfg.audio_vocab_size)?;
        if embedder.dim() != backbone.embed_dim() || decoder.embed_dim() != backbone.embed_dim() {
            return Err(LmError::Engine {
                path: dir.to_path_buf(),
                message: format!(
                    "embedding widths disagree: tables {}, backbone {}, decoder {}",
                    embedder.dim(),
                    backbone.embed_dim(),
                    decoder.embed_dim()
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
            backbone_taps: Vec::new(),
            decoder_taps: Vec::new(),
        })
    }

    /// Sizes and ids.
    pub fn dims(&self) -> LmDims {
        self.dims
    }

    /// Every output name of the graph `kind`.
    pub fn outputs(&self, kind: GraphKind) -> Vec<String> {
        self.graph(kind).output_names()
    }

    /// Asks every step of graph `kind` for the outputs `names` too; an error
    /// names the first one the graph does not have.
    pub fn set_taps(&mut self, kind: GraphKind, names: Vec<String>) -> Result<(), LmError> {
        let have = self.outputs(kind);
        if let Some(missing) = names.iter().find(|n| !have.contains(n)) {
            return Err(LmError::Engine {
                path: kind.file().into(),
                message: format!("graph has no output `{missing}` to tap"),
            });
        }
        match kind {
            GraphKind::Backbone => self.backbone_taps = names,
            GraphKind::Decoder => self.decoder_taps = names,
        }
        Ok(())
    }

    /// Runs the frame loop on `prompt` with codes from `picker`, reporting every
    /// step's taps and every frame to `observer`.
    pub fn run(
        &mut self,
        prompt: &Prompt,
        params: &GenParams,
        picker: &mut dyn CodePicker,
        observer: &mut dyn TapObserver,
    ) -> Result<Generation, LmError> {
        if prompt.is_empty() {
            return Err(LmError::Input("the prompt has no rows".into()));
        }
        let batch = params.batch();
        let max_extra = params.max_extra_frames();
        let positions = prompt.len() + max_extra;
        if positions > self.dims.max_seq_len {
            return Err(LmError::CacheFull {
                needed: positions,
                max: self.dims.max_seq_len,
            });
        }
        let n = self.dims.codebooks;
        let mut bb_cache = KvCache::new(
            self.backbone.cache_shape(batch),
            self.backbone.cache_dtype(),
            0,
            positions,
        )?;
        let mut dec_cache = KvCache::new(self.decoder.cache_shape(batch), self.decoder.cache_dtype(), n, n)?;
        let mut frames = Vec::new();
        let mut embeds = self.embedder.prompt(prompt, batch)?;
        let mut s = prompt.len();
        for index in 0..=max_extra {
            let mut out = self.step(GraphKind::Backbone, &mut bb_cache, &embeds, s, (index, 0), observer)?;
            let c0_logits = out.remove(1);
            let hidden = out.remove(0);
            let mut frame =
                self.decode_frame(&mut dec_cache, (&hidden, &c0_logits), params, index, picker, observer)?;
            frame.kept = index == 0 || frame.codes.iter().all(|&c| c < self.dims.audio_eos_id);
            observer.frame(&frame)?;
            if !frame.kept {
                return Ok(Generation {
                    frames,
                    stop: StopReason::EndOfAudio,
                });
            }
            embeds = self
                .embedder
                .frame(&vec![frame.codes.clone(); batch], self.dims.empty_id)?;
            s = 1;
            frames.push(frame.codes);
        }
        Ok(Generation {
            frames,
            stop: StopReason::MaxLength,
        })
    }

    /// Picks c0 from the backbone logits, then walks the decoder.
    fn decode_frame(
        &mut self,
        cache: &mut KvCache,
        (hidden, c0_logits): (&[f32], &[f32]),
        params: &GenParams,
        index: usize,
        picker: &mut dyn CodePicker,
        observer: &mut dyn TapObserver,
    ) -> Result<TappedFrame, LmError> {
        let (v, d) = (self.dims.audio_vocab, self.embedder.dim());
        let batch = params.batch();
        let mut logits = Vec::with_capacity(self.dims.codebooks);
        let mut codes = Vec::with_capacity(self.dims.codebooks);
        let mut choose = |k: usize, raw: &[f32]| -> Result<i64, LmError> {
            let rows: Vec<&[f32]> = raw.chunks_exact(v).collect();
            let guided = if params.guided() {
                cfg_mix(rows[0], rows[1], params.cfg_scale)
            } else {
                rows[0].to_vec()
            };
            let code = picker.pick(index, k, &guided)?;
            logits.push(guided);
            codes.push(code);
            Ok(code)
        };
        let c0 = choose(0, c0_logits)?;
        cache.reset();
        let mut embeds = Vec::with_capacity(batch * 2 * d);
        for h in hidden.chunks_exact(d) {
            embeds.extend_from_slice(h);
            embeds.extend_from_slice(self.embedder.audio(0, c0)?);
        }
        let mut s = 2;
        for k in 1..self.dims.codebooks {
            let out = self.step(GraphKind::Decoder, cache, &embeds, s, (index, k), observer)?;
            let code = choose(k, &out[0])?;
            embeds.clear();
            // The last codebook's embedding is never consumed (spec §2.6).
            if k + 1 < self.dims.codebooks {
                let e = self.embedder.audio(k, code)?;
                for _ in 0..batch {
                    embeds.extend_from_slice(e);
                }
            }
            s = 1;
        }
        Ok(TappedFrame {
            index,
            codes,
            kept: true,
            hidden: hidden.to_vec(),
            logits,
        })
    }

    /// One step of graph `kind`; reports its taps and returns the main outputs
    /// (backbone: hidden, c0 logits; decoder: logits).
    fn step(
        &mut self,
        kind: GraphKind,
        cache: &mut KvCache,
        embeds: &[f32],
        s: usize,
        (frame, codebook): (usize, usize),
        observer: &mut dyn TapObserver,
    ) -> Result<Vec<Vec<f32>>, LmError> {
        let (main, codebook_input): (&[&str], _) = match kind {
            GraphKind::Backbone => (&[io::HIDDEN, io::C0_LOGITS], None),
            GraphKind::Decoder => (&[io::LOGITS], Some(codebook as i64)),
        };
        let taps = match kind {
            GraphKind::Backbone => &self.backbone_taps,
            GraphKind::Decoder => &self.decoder_taps,
        };
        let names: Vec<&str> = main.iter().copied().chain(taps.iter().map(String::as_str)).collect();
        let rows = cache.shape().batch * s;
        let graph = match kind {
            GraphKind::Backbone => &mut self.backbone,
            GraphKind::Decoder => &mut self.decoder,
        };
        let mut out = graph.step(cache, embeds, s, codebook_input, &names)?;
        let tapped = out.split_off(main.len());
        observer.step(&TapStep {
            graph: kind,
            frame,
            codebook,
            rows,
            names: taps,
            values: &tapped,
        })?;
        Ok(out)
    }

    fn graph(&self, kind: GraphKind) -> &StackGraph {
        match kind {
            GraphKind::Backbone => &self.backbone,
            GraphKind::Decoder => &self.decoder,
        }
    }
}

impl GraphKind {
    /// The graph's file name in an engine folder.
    pub fn file(self) -> &'static str {
        match self {
            Self::Backbone => engine::BACKBONE_GRAPH,
            Self::Decoder => engine::DECODER_GRAPH,
        }
    }
}

/// A [`CodePicker`] that replays recorded frames (`frames[frame][codebook]`).
#[derive(Debug, Clone)]
pub struct ForcedCodes<'a> {
    /// The frames to replay.
    pub frames: &'a [Vec<i64>],
}

impl CodePicker for ForcedCodes<'_> {
    fn pick(&mut self, frame: usize, codebook: usize, _logits: &[f32]) -> Result<i64, LmError> {
        self.frames
            .get(frame)
            .and_then(|f| f.get(codebook))
            .copied()
            .ok_or_else(|| {
                LmError::Input(format!(
                    "forced codes end before frame {frame}, codebook {codebook} ({} frames recorded)",
                    self.frames.len()
                ))
            })
    }
}
