//! The geometry and per-frame schedule of the device-resident decode loop,
//! free of any device so it is tested on the CPU.
//!
//! - [`DeviceKvLayout`]: KV caches allocated once at full capacity (the
//!   graph's `past_key_i` `[B, KV, hd, C]` / `past_value_i` `[B, KV, C, hd]`
//!   keep one shape and one address for the whole song, which is what CUDA
//!   graph replay needs), and the strided copy ([`Copy2d`], the shape of
//!   `cuMemcpy2DAsync`) that appends a step's `new_key_i`/`new_value_i` at
//!   positions `len..len+s`. The host cache ([`crate::lm::KvCache::write`])
//!   is the reference these copies are tested against.
//! - [`attn_bias`]: the fixed-shape mask `[s, C + s]` of a step at `len`.
//! - [`step_plan`] / [`StepGeometry`]: which fixed buffer every graph input
//!   and output is bound to at each step shape, and its size; the caches
//!   are shared by every shape (and by the frame graph), the rest is one set
//!   per shape, so a shape's addresses never change between its steps.
//! - [`annotation`]: the CUDA graph each shape is captured as.
//! - [`Cursor`]: a generation's position in the fixed caches (rollback and
//!   reset move a length, nothing is copied).
//! - [`frame_schedule`]: the ordered operations of one frame. Every device
//!   write (inputs, graph runs, cache appends) is on the execution provider's
//!   own stream, so an append never races the graph that produced it (a copy
//!   on the legacy stream would, ONNX Runtime's stream being non-blocking);
//!   sampling runs outside the captured graphs
//!   (upstream found a captured RNG replays the same draws), on the host from
//!   the step's logits `[B, V]` (64 KB at B = 2, V = 8197, against ~470 MB of
//!   cache a host-resident loop moves per backbone step at a 2k cache).
//!   With a frame graph ([`frame_graph_schedule`]) sampling is inside the
//!   graph on supplied noise and only the 8 codes cross.
//! - [`LoopKind::for_backend`]: the frame loop takes this path on GPU
//!   backends only.

use heart_backend::Backend;

use crate::lm::{CacheDtype, CacheShape};

/// Which frame loop runs a backend's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    /// Host caches bound by pointer (ONNX Runtime's CPU provider).
    Host,
    /// Device-resident caches and fixed-address I/O binding.
    Device,
}

impl LoopKind {
    /// [`LoopKind::Device`] for the GPU backends in a build with the `gpu`
    /// feature (`gpu_build`: the device loop reaches the driver through
    /// it), [`LoopKind::Host`] otherwise. A `tensorrt-rtx` session in a build
    /// without the feature still runs, on the host loop (ONNX Runtime copies
    /// the caches in and out each step).
    pub fn select(backend: &Backend, gpu_build: bool) -> Self {
        match backend {
            Backend::Cpu => Self::Host,
            Backend::Cuda { .. } | Backend::TensorRt { .. } | Backend::TensorRtRtx { .. } if gpu_build => Self::Device,
            Backend::Cuda { .. } | Backend::TensorRt { .. } | Backend::TensorRtRtx { .. } => Self::Host,
        }
    }

    /// [`Self::select`] for this build.
    pub fn for_backend(backend: &Backend) -> Self {
        Self::select(backend, cfg!(feature = "gpu"))
    }
}

/// One strided copy (`cuMemcpy2DAsync`): `height` rows of `width` bytes from
/// `src_offset` (row pitch `src_pitch`) to `dst_offset` (row pitch
/// `dst_pitch`), offsets in bytes from the start of each buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy2d {
    /// Bytes into the destination.
    pub dst_offset: usize,
    /// Destination row pitch in bytes.
    pub dst_pitch: usize,
    /// Bytes into the source.
    pub src_offset: usize,
    /// Source row pitch in bytes.
    pub src_pitch: usize,
    /// Bytes per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Copy2d {
    /// Applies the copy to host byte buffers (the reference semantics of the
    /// device copy).
    pub fn apply(&self, dst: &mut [u8], src: &[u8]) {
        for r in 0..self.height {
            let d = self.dst_offset + r * self.dst_pitch;
            let s = self.src_offset + r * self.src_pitch;
            dst[d..d + self.width].copy_from_slice(&src[s..s + self.width]);
        }
    }

    /// Whether every byte the copy touches lies inside a destination of
    /// `dst_len` and a source of `src_len` bytes (checked before a device
    /// copy, which has no bounds of its own).
    pub fn fits(&self, dst_len: usize, src_len: usize) -> bool {
        let end = |offset: usize, pitch: usize| {
            self.height.checked_sub(1).map_or(Some(offset), |h| {
                h.checked_mul(pitch)?.checked_add(offset)?.checked_add(self.width)
            })
        };
        matches!(
            (end(self.dst_offset, self.dst_pitch), end(self.src_offset, self.src_pitch)),
            (Some(d), Some(s)) if d <= dst_len && s <= src_len
        )
    }
}

/// A stack's KV cache on the device at a fixed capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKvLayout {
    /// Dimensions other than the capacity.
    pub shape: CacheShape,
    /// Element type.
    pub dtype: CacheDtype,
    /// Positions allocated, once, for the whole song.
    pub capacity: usize,
}

impl DeviceKvLayout {
    /// Bytes per element.
    pub fn elem_bytes(&self) -> usize {
        match self.dtype {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
        }
    }

    /// `[B, KV, hd, C]`.
    pub fn key_dims(&self) -> [usize; 4] {
        self.shape.key_dims(self.capacity)
    }

    /// `[B, KV, C, hd]`.
    pub fn value_dims(&self) -> [usize; 4] {
        self.shape.value_dims(self.capacity)
    }

    /// Bytes of one layer's key (or value) buffer.
    pub fn layer_bytes(&self) -> usize {
        let s = self.shape;
        s.batch * s.kv_heads * s.head_dim * self.capacity * self.elem_bytes()
    }

    /// Bytes of the whole cache (keys and values of every layer).
    pub fn total_bytes(&self) -> usize {
        2 * self.shape.layers * self.layer_bytes()
    }

    /// `[B, KV, hd, s]` / `[B, KV, s, hd]`: the step outputs' dims.
    pub fn new_dims(&self, s: usize) -> ([usize; 4], [usize; 4]) {
        (self.shape.key_dims(s), self.shape.value_dims(s))
    }

    /// The copy appending `new_key` `[B, KV, hd, s]` at positions
    /// `len..len+s` of a key buffer `[B, KV, hd, C]`: one row of `s`
    /// elements per `(b, kv, d)`. `None` when it does not fit.
    pub fn key_append(&self, len: usize, s: usize) -> Option<Copy2d> {
        (s > 0 && len + s <= self.capacity).then(|| {
            let e = self.elem_bytes();
            let sh = self.shape;
            Copy2d {
                dst_offset: len * e,
                dst_pitch: self.capacity * e,
                src_offset: 0,
                src_pitch: s * e,
                width: s * e,
                height: sh.batch * sh.kv_heads * sh.head_dim,
            }
        })
    }

    /// The copy appending `new_value` `[B, KV, s, hd]` at positions
    /// `len..len+s` of a value buffer `[B, KV, C, hd]`: one block of `s·hd`
    /// elements per `(b, kv)`. `None` when it does not fit.
    pub fn value_append(&self, len: usize, s: usize) -> Option<Copy2d> {
        (s > 0 && len + s <= self.capacity).then(|| {
            let e = self.elem_bytes();
            let sh = self.shape;
            Copy2d {
                dst_offset: len * sh.head_dim * e,
                dst_pitch: self.capacity * sh.head_dim * e,
                src_offset: 0,
                src_pitch: s * sh.head_dim * e,
                width: s * sh.head_dim * e,
                height: sh.batch * sh.kv_heads,
            }
        })
    }
}

/// The `attn_bias` `[s, capacity + s]` of a step at `len` valid positions:
/// 0 where row `i` may attend (positions `< len`, new rows `<= i`), −inf
/// elsewhere. Its shape depends only on `s` and the fixed capacity.
pub fn attn_bias(capacity: usize, len: usize, s: usize) -> Vec<f32> {
    let width = capacity + s;
    let mut bias = vec![f32::NEG_INFINITY; s * width];
    for (i, row) in bias.chunks_exact_mut(width).enumerate() {
        row[..len.min(capacity)].fill(0.0);
        row[capacity..=capacity + i].fill(0.0);
    }
    bias
}

/// The graphs of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    /// The backbone.
    Backbone,
    /// The depth decoder.
    Decoder,
    /// The frame graph (backbone step, sampling and decoder walk in one call,
    /// over the backbone's cache).
    Frame,
    /// The depth decoder scoring whole drafted frames (speculative decoding:
    /// frames folded into the batch, over a cache of its own).
    Scorer,
}

/// One operation of a frame, in issue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Host → device upload of a step's small inputs (embeddings, positions,
    /// mask) into the fixed input buffers, on the EP stream.
    Upload {
        /// The graph whose inputs they are.
        graph: Graph,
        /// New rows.
        rows: usize,
    },
    /// A run of a graph with the fixed binding; replayed from CUDA graph
    /// `annotation` after its first capture.
    Run {
        /// The graph.
        graph: Graph,
        /// New rows.
        rows: usize,
        /// [`annotation`]: one captured graph per shape.
        annotation: Option<u32>,
    },
    /// Appends the run's new keys/values to the device cache, on the EP stream.
    Append {
        /// The graph whose cache grows.
        graph: Graph,
        /// New rows.
        rows: usize,
    },
    /// Device → host copy of the run's logits `[B, V]` on the EP stream,
    /// then a sync of that stream.
    ReadLogits {
        /// The codebook they score.
        codebook: usize,
    },
    /// Device → host copy of a frame graph's `codes` (8 × int64), then a
    /// sync of the stream.
    ReadCodes,
    /// Picks codebook `codebook` on the host (never inside a captured graph).
    Sample {
        /// The codebook.
        codebook: usize,
    },
}

impl Op {
    /// Whether the operation may be part of a captured CUDA graph.
    pub fn captured(&self) -> bool {
        matches!(self, Self::Run { .. })
    }
}

/// The CUDA graph a step shape is captured as: `cuda_graph_annotation_id`
/// (the NvTensorRTRTX plugin) / `gpu_graph_id` (ONNX Runtime's CUDA provider)
/// for `graph` run at `batch` rows × `rows` new positions while the buffers
/// of allocation `epoch` are bound. Distinct per (graph, batch, rows, epoch)
/// so each shape keeps its own graph, and a reallocation (new addresses)
/// never replays a graph captured over freed buffers. `None` past the id
/// space (batch ≥ 64, rows ≥ 1024 or an id beyond `i32`, which the providers
/// parse): such a step runs uncaptured.
pub fn annotation(graph: Graph, batch: usize, rows: usize, epoch: u32) -> Option<u32> {
    if batch >= 64 || rows >= 1024 {
        return None;
    }
    let g = match graph {
        Graph::Backbone => 0,
        Graph::Decoder => 1,
        Graph::Frame => 2,
        Graph::Scorer => 3,
    };
    let id = 1 + rows as u64 + 1024 * (batch as u64 + 64 * (g + 4 * u64::from(epoch)));
    u32::try_from(id).ok().filter(|&id| id <= i32::MAX as u32)
}

/// A buffer the device loop allocates once and binds by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Buffer {
    /// Layer `i`'s key cache `[B, KV, hd, C]`, shared by every shape and
    /// every graph over the same cache (the frame graph and the backbone).
    Key(usize),
    /// Layer `i`'s value cache `[B, KV, C, hd]`, shared like [`Buffer::Key`].
    Value(usize),
    /// A step input of one shape (`embeds`, `positions`, `attn_bias`, …).
    Input(&'static str),
    /// Layer `i`'s `new_key_i` output of one shape, `[B, KV, hd, s]`.
    NewKey(usize),
    /// Layer `i`'s `new_value_i` output of one shape, `[B, KV, s, hd]`.
    NewValue(usize),
    /// A read-back output of one shape (`hidden`, logits, `codes`).
    Output(&'static str),
}

impl Buffer {
    /// Whether the buffer belongs to the cache (one per stack) rather than
    /// to one step shape.
    pub fn is_cache(&self) -> bool {
        matches!(self, Self::Key(_) | Self::Value(_))
    }
}

/// Element types of the loop's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// f32.
    F32,
    /// f16.
    F16,
    /// int64.
    I64,
}

impl Elem {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::I64 => 8,
        }
    }

    /// The cache's element type.
    pub fn of_cache(dtype: CacheDtype) -> Self {
        match dtype {
            CacheDtype::F32 => Self::F32,
            CacheDtype::F16 => Self::F16,
        }
    }
}

/// One graph input or output and the buffer it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The graph's input or output name.
    pub name: String,
    /// The buffer.
    pub buffer: Buffer,
    /// Input (read by the graph) or output (written by it).
    pub input: bool,
}

/// The binding of one step shape: every input and output of `graph` at
/// `rows` new positions, each to a fixed buffer, and its CUDA graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// The graph.
    pub graph: Graph,
    /// New positions per step.
    pub rows: usize,
    /// The captured graph it replays ([`annotation`]); `None` runs it
    /// uncaptured (one-off shapes such as the prompt).
    pub capture: Option<u32>,
    /// Inputs then outputs, in binding order.
    pub bindings: Vec<Bound>,
}

/// The step inputs of `graph` besides the caches, in binding order.
pub fn step_inputs(graph: Graph) -> &'static [&'static str] {
    use heart::engine::{frame_io, io};
    match graph {
        Graph::Backbone => &[io::EMBEDS, io::POSITIONS, io::ATTN_BIAS],
        Graph::Decoder | Graph::Scorer => &[io::EMBEDS, io::POSITIONS, io::ATTN_BIAS, io::CODEBOOK],
        Graph::Frame => &[
            io::EMBEDS,
            io::POSITIONS,
            io::ATTN_BIAS,
            frame_io::NOISE,
            frame_io::TEMPERATURE,
            frame_io::TOP_K,
            frame_io::CFG_SCALE,
        ],
    }
}

/// The binding of `graph` over a `layers`-layer cache at `rows` new
/// positions, reading back `outputs`; captured as `capture`.
pub fn step_plan(graph: Graph, layers: usize, rows: usize, outputs: &[&'static str], capture: Option<u32>) -> StepPlan {
    use heart::engine::io;
    let mut bindings: Vec<Bound> = step_inputs(graph)
        .iter()
        .map(|&n| Bound {
            name: n.to_string(),
            buffer: Buffer::Input(n),
            input: true,
        })
        .collect();
    for layer in 0..layers {
        bindings.push(Bound {
            name: io::past_key(layer),
            buffer: Buffer::Key(layer),
            input: true,
        });
        bindings.push(Bound {
            name: io::past_value(layer),
            buffer: Buffer::Value(layer),
            input: true,
        });
    }
    for layer in 0..layers {
        bindings.push(Bound {
            name: io::new_key(layer),
            buffer: Buffer::NewKey(layer),
            input: false,
        });
        bindings.push(Bound {
            name: io::new_value(layer),
            buffer: Buffer::NewValue(layer),
            input: false,
        });
    }
    bindings.extend(outputs.iter().map(|&n| Bound {
        name: n.to_string(),
        buffer: Buffer::Output(n),
        input: false,
    }));
    StepPlan {
        graph,
        rows,
        capture,
        bindings,
    }
}

/// The sizes a stack's step buffers are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepGeometry {
    /// The cache the steps read and append to.
    pub kv: DeviceKvLayout,
    /// Width of `embeds` (and `hidden`).
    pub embed_dim: usize,
    /// Audio vocabulary `V`.
    pub vocab: usize,
    /// Codebooks per frame.
    pub codebooks: usize,
}

impl StepGeometry {
    /// Element type and dims of `buffer` in a step of `rows` new positions
    /// (`heart::engine::io` / `frame_io` contracts); `None` for an output
    /// the device loop does not read back (taps stay on the host loop).
    pub fn spec(&self, buffer: Buffer, rows: usize) -> Option<(Elem, Vec<usize>)> {
        use heart::engine::{frame_io, io};
        let (b, d, v, n) = (self.kv.shape.batch, self.embed_dim, self.vocab, self.codebooks);
        let cache = Elem::of_cache(self.kv.dtype);
        Some(match buffer {
            Buffer::Key(_) => (cache, self.kv.key_dims().to_vec()),
            Buffer::Value(_) => (cache, self.kv.value_dims().to_vec()),
            Buffer::NewKey(_) => (cache, self.kv.new_dims(rows).0.to_vec()),
            Buffer::NewValue(_) => (cache, self.kv.new_dims(rows).1.to_vec()),
            Buffer::Input(name) => match name {
                io::EMBEDS => (Elem::F32, vec![b, rows, d]),
                io::POSITIONS => (Elem::I64, vec![rows]),
                io::ATTN_BIAS => (Elem::F32, vec![rows, self.kv.capacity + rows]),
                io::CODEBOOK => (Elem::I64, vec![]),
                frame_io::NOISE => (Elem::F32, vec![n, v]),
                frame_io::TEMPERATURE | frame_io::CFG_SCALE => (Elem::F32, vec![]),
                frame_io::TOP_K => (Elem::I64, vec![1]),
                _ => return None,
            },
            Buffer::Output(name) => match name {
                io::HIDDEN => (Elem::F32, vec![b, d]),
                io::C0_LOGITS | io::LOGITS => (Elem::F32, vec![b, v]),
                io::HIDDEN_ALL => (Elem::F32, vec![b, rows, d]),
                io::C0_LOGITS_ALL => (Elem::F32, vec![b, rows, v]),
                io::LOGITS_ALL => (Elem::F32, vec![b, n - 1, v]),
                frame_io::CODES => (Elem::I64, vec![n]),
                _ => return None,
            },
        })
    }

    /// Bytes of `buffer` in a step of `rows` new positions.
    pub fn bytes(&self, buffer: Buffer, rows: usize) -> Option<usize> {
        self.spec(buffer, rows)
            .map(|(e, dims)| e.bytes() * dims.iter().product::<usize>())
    }
}

/// Where a stack's valid positions end, for one generation: the device
/// caches stay allocated at `capacity`; rollback and the decoder's per-frame
/// reset only move `len` (stale positions are masked by `attn_bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The cache geometry.
    pub layout: DeviceKvLayout,
    /// Valid positions.
    pub len: usize,
    /// The allocation the caches belong to; a cursor of an older one is refused.
    pub epoch: u32,
}

impl Cursor {
    /// The first position of a step of `rows` new positions, or the
    /// positions it would need when they do not fit.
    pub fn next(&self, rows: usize) -> Result<usize, usize> {
        let needed = self.len + rows;
        if rows == 0 || needed > self.layout.capacity {
            Err(needed)
        } else {
            Ok(self.len)
        }
    }

    /// Keeps only the first `len` positions (speculative rollback; no copy).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// The operations of one frame after the prompt: the backbone step on the
/// fed-back frame, `c0`, then the decoder walk (2 rows — hidden state and
/// `c0`'s embedding — then one row per code) for codebooks `1..codebooks`.
/// The decoder's cache is reset per frame (positions restart at 0; nothing
/// is copied).
pub fn frame_schedule(codebooks: usize, batch: usize) -> Vec<Op> {
    let mut ops = vec![
        Op::Upload {
            graph: Graph::Backbone,
            rows: 1,
        },
        Op::Run {
            graph: Graph::Backbone,
            rows: 1,
            annotation: annotation(Graph::Backbone, batch, 1, 0),
        },
        Op::Append {
            graph: Graph::Backbone,
            rows: 1,
        },
        Op::ReadLogits { codebook: 0 },
        Op::Sample { codebook: 0 },
    ];
    for k in 1..codebooks {
        let rows = if k == 1 { 2 } else { 1 };
        ops.extend([
            Op::Upload {
                graph: Graph::Decoder,
                rows,
            },
            Op::Run {
                graph: Graph::Decoder,
                rows,
                annotation: annotation(Graph::Decoder, batch, rows, 0),
            },
            Op::Append {
                graph: Graph::Decoder,
                rows,
            },
            Op::ReadLogits { codebook: k },
            Op::Sample { codebook: k },
        ]);
    }
    ops
}

/// The operations of one frame through the frame graph (`frame.onnx`):
/// upload the fed-back frame's embeddings and the frame's noise rows, one
/// captured run (backbone step, guided top-k race, decoder walk), append the
/// backbone's new keys/values, read back the `n` codes. The noise is an
/// input, so the captured graph holds no RNG.
pub fn frame_graph_schedule(batch: usize) -> Vec<Op> {
    vec![
        Op::Upload {
            graph: Graph::Frame,
            rows: 1,
        },
        Op::Run {
            graph: Graph::Frame,
            rows: 1,
            annotation: annotation(Graph::Frame, batch, 1, 0),
        },
        Op::Append {
            graph: Graph::Frame,
            rows: 1,
        },
        Op::ReadCodes,
    ]
}

/// Bytes crossing device → host per frame under [`frame_schedule`]: one
/// `[B, V]` f32 logits block per codebook (the caches never leave the device).
pub fn host_bytes_per_frame(codebooks: usize, batch: usize, vocab: usize) -> usize {
    codebooks * batch * vocab * 4
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
