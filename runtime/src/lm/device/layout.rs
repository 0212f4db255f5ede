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
//! - [`frame_schedule`]: the ordered operations of one frame. Every device
//!   write (inputs, graph runs, cache appends) is on the execution provider's
//!   own stream, so an append never races the graph that produced it (the
//!   earlier device cache copied on the legacy stream while ONNX Runtime ran
//!   on a non-blocking one); sampling runs outside the captured graphs
//!   (upstream found a captured RNG replays the same draws), on the host from
//!   the step's logits `[B, V]` (64 KB at B = 2, V = 8197, against ~470 MB of
//!   cache a host-resident loop moves per backbone step at a 2k cache).
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
    /// [`LoopKind::Device`] for the GPU backends, [`LoopKind::Host`] for the CPU.
    pub fn for_backend(backend: &Backend) -> Self {
        match backend {
            Backend::Cpu => Self::Host,
            Backend::Cuda { .. } | Backend::TensorRt { .. } | Backend::TensorRtRtx { .. } => Self::Device,
        }
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
        /// `cuda_graph_annotation_id`: one captured graph per shape.
        annotation: u32,
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

/// `cuda_graph_annotation_id` of `graph` run with `rows` new rows: distinct
/// per (graph, shape) so each shape keeps its own captured graph. The
/// sessions are separate, so the ids need only differ within a graph; they
/// also differ across graphs to keep logs unambiguous.
pub fn annotation(graph: Graph, rows: usize) -> u32 {
    let base = match graph {
        Graph::Backbone => 1,
        Graph::Decoder => 1001,
    };
    base + rows as u32
}

/// The operations of one frame after the prompt: the backbone step on the
/// fed-back frame, `c0`, then the decoder walk (2 rows — hidden state and
/// `c0`'s embedding — then one row per code) for codebooks `1..codebooks`.
/// The decoder's cache is reset per frame (positions restart at 0; nothing
/// is copied).
pub fn frame_schedule(codebooks: usize) -> Vec<Op> {
    let mut ops = vec![
        Op::Upload {
            graph: Graph::Backbone,
            rows: 1,
        },
        Op::Run {
            graph: Graph::Backbone,
            rows: 1,
            annotation: annotation(Graph::Backbone, 1),
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
                annotation: annotation(Graph::Decoder, rows),
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

/// Bytes crossing device → host per frame under [`frame_schedule`]: one
/// `[B, V]` f32 logits block per codebook (the caches never leave the device).
pub fn host_bytes_per_frame(codebooks: usize, batch: usize, vocab: usize) -> usize {
    codebooks * batch * vocab * 4
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
