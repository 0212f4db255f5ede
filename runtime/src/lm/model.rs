//! [`HeartMula`]: the backbone and decoder sessions plus the embedding tables
//! of an engine folder, and the two operations a frame is made of
//! (spec §2.6): a backbone step and the decoder's per-codebook walk.
//!
//! Speculative decoding adds two scoring steps over the same sessions:
//! [`HeartMula::score_positions`] (several fed-back frames in one backbone
//! call, outputs at every position) and [`HeartMula::score_frames`] (every
//! codebook of several whole frames in one decoder call, the frames folded
//! into the batch).
//!
//! Taps: a generation's [`LmState`] may carry a [`Taps`] request, extra graph
//! outputs (calibration probes, per-layer residual streams) that every
//! backbone step and decoder walk step then also returns; their values wait
//! in [`LmState::take_taps`] until the frame loop hands them to its observer.
//! The model itself holds no measurement state.

use std::path::{Path, PathBuf};

use heart::config::{GenConfig, MulaConfig};
use heart::engine::{self, io};

use super::LmError;
use super::device::layout::{Cursor, DeviceKvLayout, Graph};
use super::device::memory::Pending;
use super::device::stack::StepRequest;
use super::device::{DeviceLm, LoopKind, ModelSizes};
use super::embed::{Embedder, Prompt};
use super::kv_cache::{CacheShape, KvCache};
use heart_backend::{OrtRuntime, SessionConfig};
use ort::session::builder::PrepackedWeights;

use super::session::{Geometry, StackGraph};

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

/// Which graph a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    /// `backbone.onnx`.
    Backbone,
    /// `decoder.onnx`.
    Decoder,
}

/// Extra outputs a generation asks of every step, per graph (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taps {
    /// Output names asked of every backbone step.
    pub backbone: Vec<String>,
    /// Output names asked of every decoder step.
    pub decoder: Vec<String>,
}

impl Taps {
    /// The names asked of graph `kind`, in order.
    pub fn names(&self, kind: GraphKind) -> &[String] {
        match kind {
            GraphKind::Backbone => &self.backbone,
            GraphKind::Decoder => &self.decoder,
        }
    }
}

/// The tapped outputs of one graph step ([`Taps`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TapValues {
    /// The graph that ran.
    pub graph: GraphKind,
    /// Decoder: the codebook whose logits the step produced (1..); backbone: 0.
    pub codebook: usize,
    /// Batch rows × new positions of the step.
    pub rows: usize,
    /// The taps' values, flattened f32, in the order they were asked for.
    pub values: Vec<Vec<f32>>,
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

/// Backbone outputs at every position of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneAll {
    /// Final-norm hidden states, `[B, S, D]`.
    pub hidden: Vec<f32>,
    /// `codebook0_head(hidden)`, `[B, S, V]`.
    pub c0_logits: Vec<f32>,
    /// Batch rows `B`.
    pub batch: usize,
    /// Positions `S`.
    pub positions: usize,
}

impl BackboneAll {
    /// The outputs at position `i` as a one-position [`BackboneOut`].
    pub fn at(&self, i: usize) -> BackboneOut {
        BackboneOut {
            hidden: rows_at(&self.hidden, self.batch, self.positions, i),
            c0_logits: rows_at(&self.c0_logits, self.batch, self.positions, i),
        }
    }
}

/// Position `i` of every batch row of `[B, S, N]` data, as `[B, N]`.
fn rows_at(data: &[f32], batch: usize, s: usize, i: usize) -> Vec<f32> {
    let n = data.len() / (batch * s).max(1);
    (0..batch)
        .flat_map(|b| &data[(b * s + i) * n..(b * s + i + 1) * n])
        .copied()
        .collect()
}

/// Decoder logits of whole frames scored in one call ([`HeartMula::score_frames`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFrames {
    /// Codebook `k ≥ 1` logits: `[F·B, codebooks − 1, V]`, batch row `f·B + b`.
    pub logits: Vec<f32>,
    /// Frames `F`.
    pub frames: usize,
    /// Batch rows per frame `B`.
    pub batch: usize,
    /// Codebooks per frame.
    pub codebooks: usize,
    /// Vocabulary `V`.
    pub vocab: usize,
}

impl ScoredFrames {
    /// Codebook `k` (`1..codebooks`) logits of frame `f`, `[B, V]`.
    pub fn logits_of(&self, f: usize, k: usize) -> Vec<f32> {
        let (v, slots) = (self.vocab, self.codebooks - 1);
        (0..self.batch)
            .flat_map(|b| {
                let start = ((f * self.batch + b) * slots + k - 1) * v;
                &self.logits[start..start + v]
            })
            .copied()
            .collect()
    }
}

/// The files an LM is opened from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmFiles {
    /// Backbone graph.
    pub backbone: PathBuf,
    /// Decoder graph.
    pub decoder: PathBuf,
    /// Embedding tables.
    pub tables: PathBuf,
    /// The frame graph plain decoding runs, if the folder has one.
    pub frame: Option<PathBuf>,
}

impl LmFiles {
    /// An engine folder's own graphs and tables.
    pub fn target(engine_dir: &Path) -> Self {
        Self {
            backbone: engine_dir.join(engine::BACKBONE_GRAPH),
            decoder: engine_dir.join(engine::DECODER_GRAPH),
            tables: engine_dir.join(engine::LM_TABLES),
            frame: Some(engine_dir.join(engine::FRAME_GRAPH)).filter(|p| p.is_file()),
        }
    }

    /// The speculative-decoding draft of an engine folder: the graphs under
    /// `draft/` with the engine's own tables (the draft embeds frames the same way).
    pub fn draft(engine_dir: &Path) -> Self {
        let dir = engine_dir.join(engine::DRAFT_DIR);
        Self {
            backbone: dir.join(engine::BACKBONE_GRAPH),
            decoder: dir.join(engine::DECODER_GRAPH),
            tables: engine_dir.join(engine::LM_TABLES),
            frame: None,
        }
    }
}

/// One stack's cache in a generation: held on the host and bound by
/// pointer (the CPU provider), or a [`Cursor`] into the model's device
/// caches ([`LoopKind::Device`]). Both answer the same length questions;
/// rollback and reset move a length on either.
#[derive(Debug, Clone)]
pub enum StackCache {
    /// Host buffers, grown as positions are added.
    Host(KvCache),
    /// A position in the model's fixed device caches.
    Device(Cursor),
}

impl StackCache {
    /// Valid positions.
    pub fn len(&self) -> usize {
        match self {
            Self::Host(c) => c.len(),
            Self::Device(c) => c.len,
        }
    }

    /// Whether no position is valid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the first `len` positions (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        match self {
            Self::Host(c) => c.truncate(len),
            Self::Device(c) => c.truncate(len),
        }
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Dimensions.
    pub fn shape(&self) -> CacheShape {
        match self {
            Self::Host(c) => c.shape(),
            Self::Device(c) => c.layout.shape,
        }
    }

    /// The host cache; an [`LmError::Input`] on the device loop (for
    /// callers that bind host buffers themselves).
    pub fn host_mut(&mut self) -> Result<&mut KvCache, LmError> {
        match self {
            Self::Host(c) => Ok(c),
            Self::Device(_) => Err(LmError::Input(
                "this step binds host caches; the generation's caches are on the device".into(),
            )),
        }
    }
}

/// Caches of one generation.
#[derive(Debug, Clone)]
pub struct LmState {
    /// Backbone cache (grows with the song).
    pub backbone: StackCache,
    /// Decoder cache (one frame's positions, reset every frame).
    pub decoder: StackCache,
    /// Extra outputs asked of every backbone and decoder-walk step.
    taps: Taps,
    /// Their values, per step, until [`LmState::take_taps`].
    tapped: Vec<TapValues>,
}

impl LmState {
    /// Batch rows.
    pub fn batch(&self) -> usize {
        self.backbone.shape().batch
    }

    /// The tapped outputs of the steps run since the last call, in step order.
    pub fn take_taps(&mut self) -> Vec<TapValues> {
        std::mem::take(&mut self.tapped)
    }
}

/// Removes the last of a step's outputs, `name`; a step that returned fewer
/// outputs than it was asked for is an engine error naming the graph.
fn last_output(out: &mut Vec<Vec<f32>>, name: &str, graph: &StackGraph) -> Result<Vec<f32>, LmError> {
    out.pop().ok_or_else(|| LmError::Engine {
        path: graph.path().to_path_buf(),
        message: format!("the step returned no `{name}` output"),
    })
}

/// The frame graph's sampling inputs of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSampling {
    /// Sampling temperature.
    pub temperature: f32,
    /// Candidates kept per codebook (`1..=V`).
    pub top_k: i64,
    /// Classifier-free guidance scale.
    pub cfg_scale: f32,
}

/// An opened HeartMuLa engine.
pub struct HeartMula {
    backbone: StackGraph,
    decoder: StackGraph,
    frame: Option<StackGraph>,
    embedder: Embedder,
    dims: LmDims,
    /// The device-resident caches and bindings ([`LoopKind::Device`]); after
    /// the sessions so its stream outlives them.
    device: Option<DeviceLm>,
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
        Self::open_files(rt, &LmFiles::target(engine_dir), cfg, gen_cfg, sessions)
    }

    /// Opens the speculative-decoding draft of `engine_dir` ([`LmFiles::draft`]).
    pub fn open_draft(
        rt: &OrtRuntime,
        engine_dir: &Path,
        cfg: &MulaConfig,
        gen_cfg: &GenConfig,
        sessions: &SessionConfig,
    ) -> Result<Self, LmError> {
        Self::open_files(rt, &LmFiles::draft(engine_dir), cfg, gen_cfg, sessions)
    }

    /// Opens an LM from explicit files, with the frame loop the runtime's
    /// backend takes ([`LoopKind::for_backend`]).
    pub fn open_files(
        rt: &OrtRuntime,
        files: &LmFiles,
        cfg: &MulaConfig,
        gen_cfg: &GenConfig,
        sessions: &SessionConfig,
    ) -> Result<Self, LmError> {
        let kind = LoopKind::for_backend(&rt.plan.backend);
        Self::open_files_with_loop(rt, files, cfg, gen_cfg, sessions, kind)
    }

    /// Opens an LM from explicit files with frame loop `kind`. On a GPU
    /// backend [`LoopKind::Device`] creates the CUDA stream the providers
    /// run on and turns on CUDA-graph capture for these sessions (unless the
    /// plan turns it off); on the CPU it runs the same loop over fixed ONNX
    /// Runtime CPU buffers (what tests without a GPU exercise).
    pub fn open_files_with_loop(
        rt: &OrtRuntime,
        files: &LmFiles,
        cfg: &MulaConfig,
        gen_cfg: &GenConfig,
        sessions: &SessionConfig,
        kind: LoopKind,
    ) -> Result<Self, LmError> {
        let (rt, memory) = Pending::for_runtime(rt, kind)?;
        let rt = &rt;
        // The frame graph holds the per-step graphs' weights again: with one,
        // they open on first use (speculation, taps, conformance), with the
        // frame graph's backbone cache and the config's decoder, and one
        // container keeps one packed copy of each weight for the sessions.
        let prepacked = PrepackedWeights::new();
        let (backbone, decoder, frame) = match &files.frame {
            Some(path) => {
                let frame = StackGraph::open(rt, path, sessions, &prepacked)?;
                let bb = frame.geometry();
                let p = &cfg.decoder;
                let dec = Geometry {
                    layers: p.num_layers,
                    kv_heads: p.num_kv_heads,
                    head_dim: p.head_dim(),
                    ..bb
                };
                (
                    StackGraph::deferred(rt, &files.backbone, sessions, &prepacked, bb),
                    StackGraph::deferred(rt, &files.decoder, sessions, &prepacked, dec),
                    Some(frame),
                )
            }
            None => (
                StackGraph::open(rt, &files.backbone, sessions, &prepacked)?,
                StackGraph::open(rt, &files.decoder, sessions, &prepacked)?,
                None,
            ),
        };
        let tables = files.tables.clone();
        let embedder = Embedder::open(&tables, cfg.audio_vocab_size)?;
        let d = cfg.backbone.embed_dim;
        if embedder.dim() != d || backbone.embed_dim() != d || decoder.embed_dim() != d {
            return Err(LmError::Engine {
                path: files.backbone.clone(),
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
        let device = match memory {
            None => None,
            Some(pending) => Some(DeviceLm::new(
                pending.finish(frame.as_ref().unwrap_or(&backbone).session()?)?,
                ModelSizes {
                    embed_dim: d,
                    vocab: cfg.audio_vocab_size,
                    codebooks: cfg.audio_num_codebooks,
                },
            )),
        };
        Ok(Self {
            backbone,
            decoder,
            frame,
            embedder,
            device,
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

    /// Whether the engine has a frame graph ([`super::frame_graph`]).
    pub fn has_frame_graph(&self) -> bool {
        self.frame.is_some()
    }

    /// Whether a per-step graph (backbone or decoder) has a session yet: with
    /// a frame graph they are created on first use, so plain decoding holds
    /// one copy of the weights.
    pub fn per_step_graphs_open(&self) -> bool {
        self.backbone.is_open() || self.decoder.is_open()
    }

    /// The frame graph, if the engine has one ([`super::frame_graph`]).
    pub fn frame_graph(&mut self) -> Option<&mut StackGraph> {
        self.frame.as_mut()
    }

    /// Sizes and ids.
    pub fn dims(&self) -> LmDims {
        self.dims
    }

    /// The embedding tables.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Every output name of graph `kind`.
    pub fn outputs(&self, kind: GraphKind) -> Result<Vec<String>, LmError> {
        self.graph(kind).output_names()
    }

    /// Fails unless both graphs have every output `taps` asks for, naming the
    /// first one missing.
    pub fn check_taps(&self, taps: &Taps) -> Result<(), LmError> {
        for kind in [GraphKind::Backbone, GraphKind::Decoder] {
            let graph = self.graph(kind);
            for missing in taps.names(kind) {
                if !graph.has_output(missing)? {
                    return Err(LmError::Engine {
                        path: graph.path().to_path_buf(),
                        message: format!("graph has no output `{missing}` to tap"),
                    });
                }
            }
        }
        Ok(())
    }

    fn graph(&self, kind: GraphKind) -> &StackGraph {
        match kind {
            GraphKind::Backbone => &self.backbone,
            GraphKind::Decoder => &self.decoder,
        }
    }

    /// One step of graph `kind` returning the outputs `main`; when `st`
    /// asks for taps, asks for them too and keeps their values in `st`.
    fn tapped_step(
        &mut self,
        kind: GraphKind,
        st: &mut LmState,
        (embeds, s): (&[f32], usize),
        codebook: usize,
        main: &[&'static str],
    ) -> Result<Vec<Vec<f32>>, LmError> {
        let (graph, cache, codebook_input) = match kind {
            GraphKind::Backbone => (&mut self.backbone, &mut st.backbone, None),
            GraphKind::Decoder => (&mut self.decoder, &mut st.decoder, Some(codebook as i64)),
        };
        let taps = st.taps.names(kind);
        let cache = match cache {
            StackCache::Device(cursor) => {
                let which = match kind {
                    GraphKind::Backbone => Graph::Backbone,
                    GraphKind::Decoder => Graph::Decoder,
                };
                return device_step(
                    self.device.as_mut(),
                    graph,
                    which,
                    cursor,
                    (embeds, s),
                    codebook_input,
                    main,
                );
            }
            StackCache::Host(cache) => cache,
        };
        if taps.is_empty() {
            return graph.step(cache, embeds, s, codebook_input, main);
        }
        let names: Vec<&str> = main.iter().copied().chain(taps.iter().map(String::as_str)).collect();
        let mut out = graph.step(cache, embeds, s, codebook_input, &names)?;
        let values = out.split_off(main.len());
        st.tapped.push(TapValues {
            graph: kind,
            codebook,
            rows: cache.shape().batch * s,
            values,
        });
        Ok(out)
    }

    /// Whether generations keep their caches on the device ([`LoopKind::Device`]).
    pub fn loop_kind(&self) -> LoopKind {
        if self.device.is_some() {
            LoopKind::Device
        } else {
            LoopKind::Host
        }
    }

    /// The device-resident caches and bindings, on [`LoopKind::Device`].
    pub fn device(&self) -> Option<&DeviceLm> {
        self.device.as_ref()
    }

    /// One frame-graph call on the device loop: the frame's embeddings `[B,
    /// s, D]`, noise rows `q` `[n_codebooks, V]` and sampling scalars go into
    /// the frame graph's fixed input buffers, its new keys/values into the
    /// backbone's device cache, and only the `n_codebooks` codes come back.
    /// `None` on the host loop (the caller binds host buffers).
    pub fn device_frame_step(
        &mut self,
        st: &mut LmState,
        (embeds, s): (&[f32], usize),
        q: &[f32],
        sampling: FrameSampling,
    ) -> Result<Option<Vec<i64>>, LmError> {
        let StackCache::Device(cursor) = &mut st.backbone else {
            return Ok(None);
        };
        let (Some(graph), Some(device)) = (self.frame.as_mut(), self.device.as_mut()) else {
            return Err(LmError::Input(
                "the engine has no frame graph (rebuild it with this version of heart-build)".into(),
            ));
        };
        use heart::engine::frame_io;
        let (temperature, top_k, cfg_scale) = (
            sampling.temperature.to_le_bytes(),
            sampling.top_k.to_le_bytes(),
            sampling.cfg_scale.to_le_bytes(),
        );
        let inputs: [(&'static str, &[u8]); 4] = [
            (frame_io::NOISE, bytemuck::cast_slice(q)),
            (frame_io::TEMPERATURE, &temperature),
            (frame_io::TOP_K, &top_k),
            (frame_io::CFG_SCALE, &cfg_scale),
        ];
        // Every call after the prompt's has one row and the same addresses.
        let req = StepRequest {
            rows: s,
            embeds,
            inputs: &inputs,
            outputs: &[frame_io::CODES],
            capture: cursor.len > 0,
        };
        let path = graph.path().to_path_buf();
        let mut out = device.step(Graph::Frame, graph.session_mut()?, &path, cursor, &req)?;
        let codes = out.pop().unwrap_or_default();
        Ok(Some(
            codes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ))
    }

    /// Checks that the graphs have the per-position outputs the scoring steps
    /// read (engines exported before they existed lack them).
    pub fn check_scoring(&self) -> Result<(), LmError> {
        for (graph, outputs) in [
            (&self.backbone, [io::HIDDEN_ALL, io::C0_LOGITS_ALL].as_slice()),
            (&self.decoder, [io::LOGITS_ALL].as_slice()),
        ] {
            for missing in outputs {
                if !graph.has_output(missing)? {
                    return Err(LmError::Engine {
                        path: graph.path().to_path_buf(),
                        message: format!(
                            "graph has no `{missing}` output, which speculative decoding scores with; rebuild the \
                             engine with this version of heart-build"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fresh caches for `batch` rows and at most `max_positions` backbone
    /// positions (prompt + fed-back frames).
    pub fn new_state(&mut self, batch: usize, max_positions: usize) -> Result<LmState, LmError> {
        self.new_tapped_state(batch, max_positions, Taps::default())
    }

    /// As [`Self::new_state`], with every step also returning `taps`
    /// (checked against the graphs' outputs).
    pub fn new_tapped_state(&mut self, batch: usize, max_positions: usize, taps: Taps) -> Result<LmState, LmError> {
        self.check_taps(&taps)?;
        if max_positions > self.dims.max_seq_len {
            return Err(LmError::CacheFull {
                needed: max_positions,
                max: self.dims.max_seq_len,
            });
        }
        let n = self.dims.codebooks;
        let (backbone, decoder) = match self.device.as_mut() {
            Some(device) => {
                if taps != Taps::default() {
                    return Err(LmError::Input(
                        "taps read host caches' step outputs: run them on the host loop (--backend cpu)".into(),
                    ));
                }
                let layout = |g: &StackGraph, capacity| DeviceKvLayout {
                    shape: g.cache_shape(batch),
                    dtype: g.cache_dtype(),
                    capacity,
                };
                let (b, d) = device.prepare(layout(&self.backbone, max_positions), layout(&self.decoder, n))?;
                (StackCache::Device(b), StackCache::Device(d))
            }
            None => (
                StackCache::Host(KvCache::new(
                    self.backbone.cache_shape(batch),
                    self.backbone.cache_dtype(),
                    0,
                    max_positions,
                )?),
                StackCache::Host(KvCache::new(
                    self.decoder.cache_shape(batch),
                    self.decoder.cache_dtype(),
                    n,
                    n,
                )?),
            ),
        };
        Ok(LmState {
            backbone,
            decoder,
            taps,
            tapped: Vec::new(),
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

    /// Feeds back several frames at the next positions, the same codes in every
    /// batch row (audio rows are identical in both CFG rows, spec §2.5), and
    /// returns the outputs at the last position.
    pub fn feed_frames(&mut self, st: &mut LmState, frames: &[Vec<i64>]) -> Result<BackboneOut, LmError> {
        let embeds = self.frames_embeds(frames, st.batch())?;
        self.backbone_step(st, &embeds, frames.len())
    }

    /// Like [`Self::feed_frames`] but returns the outputs at every fed position:
    /// position `i`'s are those a plain loop would get after feeding
    /// `frames[..=i]` one at a time.
    pub fn score_positions(&mut self, st: &mut LmState, frames: &[Vec<i64>]) -> Result<BackboneAll, LmError> {
        let embeds = self.frames_embeds(frames, st.batch())?;
        let outputs = [io::HIDDEN_ALL, io::C0_LOGITS_ALL];
        let mut out = match &mut st.backbone {
            StackCache::Host(cache) => self.backbone.step(cache, &embeds, frames.len(), None, &outputs)?,
            StackCache::Device(cursor) => device_step(
                self.device.as_mut(),
                &mut self.backbone,
                Graph::Backbone,
                cursor,
                (&embeds, frames.len()),
                None,
                &outputs,
            )?,
        };
        let c0_logits = last_output(&mut out, io::C0_LOGITS_ALL, &self.backbone)?;
        let hidden = last_output(&mut out, io::HIDDEN_ALL, &self.backbone)?;
        Ok(BackboneAll {
            hidden,
            c0_logits,
            batch: st.batch(),
            positions: frames.len(),
        })
    }

    /// Backbone input `[batch, frames, D]`: each frame's audio row in every batch row.
    fn frames_embeds(&self, frames: &[Vec<i64>], batch: usize) -> Result<Vec<f32>, LmError> {
        if frames.is_empty() {
            return Err(LmError::Input("no frames to feed".into()));
        }
        let one = self.embedder.frame(frames, self.dims.empty_id)?;
        Ok(one.repeat(batch))
    }

    /// A backbone step over `s` rows of summed embeddings `[B, s, D]`.
    pub fn backbone_step(&mut self, st: &mut LmState, embeds: &[f32], s: usize) -> Result<BackboneOut, LmError> {
        let main = [io::HIDDEN, io::C0_LOGITS];
        let mut out = self.tapped_step(GraphKind::Backbone, st, (embeds, s), 0, &main)?;
        let c0_logits = last_output(&mut out, io::C0_LOGITS, &self.backbone)?;
        let hidden = last_output(&mut out, io::HIDDEN, &self.backbone)?;
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
            let mut out = self.tapped_step(GraphKind::Decoder, st, (&embeds, s), k, &[io::LOGITS])?;
            let logits = last_output(&mut out, io::LOGITS, &self.decoder)?;
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

    /// Scores whole frames in one decoder call: frame `f` is the backbone
    /// hidden state `hidden[f]` (`[B, D]`) followed by the embeddings of its
    /// codes `0..codebooks − 1` (`codes[f]`, the same in every batch row), at
    /// decoder positions `0..codebooks`; the frames are folded into the batch.
    /// Codebook `k`'s logits for frame `f` are those the per-codebook walk
    /// would get having picked `codes[f][..k]`.
    pub fn score_frames(
        &mut self,
        hidden: &[Vec<f32>],
        codes: &[Vec<i64>],
        batch: usize,
    ) -> Result<ScoredFrames, LmError> {
        let (n, d) = (self.dims.codebooks, self.embedder.dim());
        let frames = codes.len();
        if hidden.len() != frames
            || hidden.iter().any(|h| h.len() != batch * d)
            || codes.iter().any(|c| c.len() < n - 1)
        {
            return Err(LmError::Shape {
                what: "frames to score".into(),
                expected: format!(
                    "{frames} hidden states of {batch}x{d} values and {} codes per frame",
                    n - 1
                ),
                got: format!(
                    "{} hidden states, code counts {:?}",
                    hidden.len(),
                    codes.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            });
        }
        let mut embeds = Vec::with_capacity(frames * batch * n * d);
        for (h, c) in hidden.iter().zip(codes) {
            for row in h.chunks_exact(d) {
                embeds.extend_from_slice(row);
                for (k, &code) in c.iter().take(n - 1).enumerate() {
                    embeds.extend_from_slice(self.embedder.audio(k, code)?);
                }
            }
        }
        let shape = self.decoder.cache_shape(frames * batch);
        let dtype = self.decoder.cache_dtype();
        let mut out = match self.device.as_mut() {
            None => {
                let mut cache = KvCache::new(shape, dtype, n, n)?;
                self.decoder.step(&mut cache, &embeds, n, Some(1), &[io::LOGITS_ALL])?
            }
            Some(device) => {
                let layout = DeviceKvLayout {
                    shape,
                    dtype,
                    capacity: n,
                };
                let codebook = 1i64.to_le_bytes();
                let req = StepRequest {
                    rows: n,
                    embeds: &embeds,
                    inputs: &[(io::CODEBOOK, &codebook)],
                    outputs: &[io::LOGITS_ALL],
                    capture: true,
                };
                let path = self.decoder.path().to_path_buf();
                floats(device.score(self.decoder.session_mut()?, &path, layout, &req)?)
            }
        };
        let logits = last_output(&mut out, io::LOGITS_ALL, &self.decoder)?;
        let expected = frames * batch * (n - 1) * self.dims.audio_vocab;
        if logits.len() != expected {
            return Err(LmError::Engine {
                path: self.decoder.path().to_path_buf(),
                message: format!(
                    "`{}` has {} values for a whole-frame call; expected {expected}",
                    io::LOGITS_ALL,
                    logits.len()
                ),
            });
        }
        Ok(ScoredFrames {
            logits,
            frames,
            batch,
            codebooks: n,
            vocab: self.dims.audio_vocab,
        })
    }
}

/// One step of `graph` on the device loop: `embeds` `[B, s, D]` at
/// `cursor`, the decoder's `codebook`, the f32 outputs `outputs` read back.
fn device_step(
    device: Option<&mut DeviceLm>,
    graph: &mut StackGraph,
    which: Graph,
    cursor: &mut Cursor,
    (embeds, s): (&[f32], usize),
    codebook: Option<i64>,
    outputs: &[&'static str],
) -> Result<Vec<Vec<f32>>, LmError> {
    let device = device.ok_or_else(|| LmError::Input("a device cache on a model without a device loop".into()))?;
    let codebook = codebook.map(i64::to_le_bytes);
    let inputs: Vec<(&'static str, &[u8])> = codebook.iter().map(|k| (io::CODEBOOK, &k[..])).collect();
    // The prompt's shape is a one-off; every later step repeats its shape.
    let capture = which != Graph::Backbone || cursor.len > 0;
    let req = StepRequest {
        rows: s,
        embeds,
        inputs: &inputs,
        outputs,
        capture,
    };
    let path = graph.path().to_path_buf();
    Ok(floats(device.step(which, graph.session_mut()?, &path, cursor, &req)?))
}

/// f32 outputs read back as bytes.
fn floats(out: Vec<Vec<u8>>) -> Vec<Vec<f32>> {
    out.iter()
        .map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        })
        .collect()
}

impl std::fmt::Debug for HeartMula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartMula")
            .field("dims", &self.dims)
            .field("embedder", &self.embedder)
            .finish()
    }
}
