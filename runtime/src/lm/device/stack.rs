//! [`DeviceStack`]: one LM graph (backbone or decoder) stepped with its KV
//! cache resident on the GPU (feature `gpu`; compiled and linted without
//! CUDA, run only on a GPU — see docs/gpu.md).
//!
//! Everything the session reads or writes lives in buffers allocated once
//! through ONNX Runtime's allocator for the provider's device: the caches at
//! full capacity, and per step shape (`rows`) the inputs (`embeds`,
//! `positions`, `attn_bias`, `codebook`), the new keys/values and the f32
//! outputs. Each shape has its own I/O binding over those fixed addresses,
//! so with `enable_cuda_graph` the provider captures one graph per shape
//! (`cuda_graph_annotation_id` from [`annotation`]) and replays it. A step
//! follows [`frame_schedule`]: upload the small inputs, run, append the new
//! keys/values into the caches with [`DeviceKvLayout`]'s strided copies, and
//! download the f32 outputs — all on the provider's stream
//! ([`heart_backend::stream::CudaStream`], given to the provider as
//! `user_compute_stream`), so no copy races a kernel.
//!
//! [`frame_schedule`]: super::layout::frame_schedule

use std::collections::BTreeMap;

use heart::engine::io;
use heart_backend::stream::CudaStream;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::session::{RunOptions, Session};
use ort::value::{DynTensor, TensorElementType};

use super::layout::{Copy2d, DeviceKvLayout, Graph, annotation, attn_bias};
use crate::lm::{CacheDtype, LmError};

/// Fixed buffers and binding of one step shape.
struct Shape {
    embeds: DynTensor,
    positions: DynTensor,
    bias: DynTensor,
    codebook: Option<DynTensor>,
    new_keys: Vec<DynTensor>,
    new_values: Vec<DynTensor>,
    outputs: Vec<(String, DynTensor, usize)>,
    binding: IoBinding,
}

/// A graph whose KV cache stays on the device.
pub struct DeviceStack {
    graph: Graph,
    layout: DeviceKvLayout,
    embed_dim: usize,
    len: usize,
    allocator: Allocator,
    keys: Vec<DynTensor>,
    values: Vec<DynTensor>,
    shapes: BTreeMap<usize, Shape>,
    outputs: Vec<(String, usize)>,
}

fn ort_err(what: &str) -> impl Fn(ort::Error) -> LmError + '_ {
    move |e| LmError::Input(format!("device {what}: {e}"))
}

fn stream_err(e: heart_backend::stream::StreamError) -> LmError {
    LmError::Input(e.to_string())
}

fn device_ptr(t: &DynTensor) -> u64 {
    t.data_ptr() as u64
}

impl DeviceStack {
    /// Allocates the caches of `layout` on CUDA device `device` through
    /// `session`'s allocator. `outputs` are the f32 outputs read back after
    /// each step with their per-row widths (e.g. `hidden` D and `c0_logits`
    /// V for the backbone, `logits` V for the decoder).
    pub fn new(
        session: &Session,
        graph: Graph,
        layout: DeviceKvLayout,
        embed_dim: usize,
        device: i32,
        outputs: &[(&str, usize)],
    ) -> Result<Self, LmError> {
        let info = MemoryInfo::new(
            AllocationDevice::CUDA,
            device,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(ort_err("memory info"))?;
        let allocator = Allocator::new(session, info).map_err(ort_err("allocator"))?;
        let ty = match layout.dtype {
            CacheDtype::F32 => TensorElementType::Float32,
            CacheDtype::F16 => TensorElementType::Float16,
        };
        let mut keys = Vec::with_capacity(layout.shape.layers);
        let mut values = Vec::with_capacity(layout.shape.layers);
        for _ in 0..layout.shape.layers {
            keys.push(DynTensor::new(&allocator, ty, layout.key_dims()).map_err(ort_err("key cache"))?);
            values.push(DynTensor::new(&allocator, ty, layout.value_dims()).map_err(ort_err("value cache"))?);
        }
        Ok(Self {
            graph,
            layout,
            embed_dim,
            len: 0,
            allocator,
            keys,
            values,
            shapes: BTreeMap::new(),
            outputs: outputs.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
        })
    }

    /// Valid positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is valid.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position (the decoder's per-frame reset; nothing is copied).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (speculative rollback).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The fixed buffers and binding of `rows`-row steps, made on first use.
    fn shape(&mut self, session: &mut Session, rows: usize) -> Result<&mut Shape, LmError> {
        if !self.shapes.contains_key(&rows) {
            let made = self.make_shape(session, rows)?;
            self.shapes.insert(rows, made);
        }
        Ok(self.shapes.get_mut(&rows).expect("inserted above"))
    }

    fn make_shape(&self, session: &mut Session, rows: usize) -> Result<Shape, LmError> {
        let a = &self.allocator;
        let b = self.layout.shape.batch;
        let cap = self.layout.capacity;
        let ty = match self.layout.dtype {
            CacheDtype::F32 => TensorElementType::Float32,
            CacheDtype::F16 => TensorElementType::Float16,
        };
        let err = ort_err("step buffers");
        let embeds = DynTensor::new(a, TensorElementType::Float32, [b, rows, self.embed_dim]).map_err(&err)?;
        let positions = DynTensor::new(a, TensorElementType::Int64, [rows]).map_err(&err)?;
        let bias = DynTensor::new(a, TensorElementType::Float32, [rows, cap + rows]).map_err(&err)?;
        let codebook = match self.graph {
            Graph::Decoder => Some(DynTensor::new(a, TensorElementType::Int64, Vec::<usize>::new()).map_err(&err)?),
            Graph::Backbone => None,
        };
        let (kd, vd) = self.layout.new_dims(rows);
        let mut new_keys = Vec::new();
        let mut new_values = Vec::new();
        for _ in 0..self.layout.shape.layers {
            new_keys.push(DynTensor::new(a, ty, kd).map_err(&err)?);
            new_values.push(DynTensor::new(a, ty, vd).map_err(&err)?);
        }
        let mut outputs = Vec::new();
        for (name, width) in &self.outputs {
            let t = DynTensor::new(a, TensorElementType::Float32, [b, *width]).map_err(&err)?;
            outputs.push((name.clone(), t, *width));
        }
        let mut binding = session.create_binding().map_err(&err)?;
        binding.bind_input(io::EMBEDS, &embeds).map_err(&err)?;
        binding.bind_input(io::POSITIONS, &positions).map_err(&err)?;
        binding.bind_input(io::ATTN_BIAS, &bias).map_err(&err)?;
        if let Some(k) = &codebook {
            binding.bind_input(io::CODEBOOK, k).map_err(&err)?;
        }
        for layer in 0..self.layout.shape.layers {
            binding
                .bind_input(io::past_key(layer), &self.keys[layer])
                .map_err(&err)?;
            binding
                .bind_input(io::past_value(layer), &self.values[layer])
                .map_err(&err)?;
            binding
                .bind_output(io::new_key(layer), &mut new_keys[layer])
                .map_err(&err)?;
            binding
                .bind_output(io::new_value(layer), &mut new_values[layer])
                .map_err(&err)?;
        }
        for (name, t, _) in &mut outputs {
            binding.bind_output(name.as_str(), &mut *t).map_err(&err)?;
        }
        Ok(Shape {
            embeds,
            positions,
            bias,
            codebook,
            new_keys,
            new_values,
            outputs,
            binding,
        })
    }

    /// Runs `rows` new rows (`embeds` `[B, rows, D]`) at the next positions
    /// on `stream`, appends their keys/values to the device caches and returns
    /// the f32 outputs, in the order given to [`DeviceStack::new`].
    pub fn step(
        &mut self,
        session: &mut Session,
        stream: &CudaStream,
        embeds: &[f32],
        rows: usize,
        codebook: Option<i64>,
    ) -> Result<Vec<Vec<f32>>, LmError> {
        let layout = self.layout;
        let len = self.len;
        let (Some(key_copy), Some(value_copy)) = (layout.key_append(len, rows), layout.value_append(len, rows)) else {
            return Err(LmError::CacheFull {
                needed: len + rows,
                max: layout.capacity,
            });
        };
        let expected = layout.shape.batch * rows * self.embed_dim;
        if embeds.len() != expected {
            return Err(LmError::Shape {
                what: "device step embeddings".into(),
                expected: format!("{expected} values"),
                got: format!("{} values", embeds.len()),
            });
        }
        let graph = self.graph;
        let keys: Vec<u64> = self.keys.iter().map(device_ptr).collect();
        let values: Vec<u64> = self.values.iter().map(device_ptr).collect();
        let shape = self.shape(session, rows)?;
        let positions: Vec<i64> = (len..len + rows).map(|p| p as i64).collect();
        let bias = attn_bias(layout.capacity, len, rows);
        // SAFETY (uploads, copies, downloads): every address is a live
        // allocation of this stack, sized by `layout` for `rows` (checked above).
        unsafe {
            stream
                .upload(device_ptr(&shape.embeds), bytemuck::cast_slice(embeds))
                .map_err(stream_err)?;
            stream
                .upload(device_ptr(&shape.positions), bytemuck::cast_slice(&positions))
                .map_err(stream_err)?;
            stream
                .upload(device_ptr(&shape.bias), bytemuck::cast_slice(&bias))
                .map_err(stream_err)?;
            if let (Some(t), Some(k)) = (&shape.codebook, codebook) {
                stream.upload(device_ptr(t), &k.to_le_bytes()).map_err(stream_err)?;
            }
        }
        // ONNX Runtime's CUDA provider reads `gpu_graph_id`
        // (kOrtRunOptionsConfigCudaGraphAnnotation), the NvTensorRTRTX plugin
        // `cuda_graph_annotation_id` (its run_option_names); each ignores the other.
        let mut options = RunOptions::new().map_err(ort_err("run options"))?;
        for key in ["gpu_graph_id", "cuda_graph_annotation_id"] {
            options
                .set(key, annotation(graph, rows).to_string())
                .map_err(ort_err("run options"))?;
        }
        session
            .run_binding_with_options(&shape.binding, &options)
            .map_err(ort_err("run"))?;
        for layer in 0..layout.shape.layers {
            // SAFETY: as above; the copies follow the run on the same stream.
            unsafe {
                append(stream, keys[layer], device_ptr(&shape.new_keys[layer]), &key_copy)?;
                append(stream, values[layer], device_ptr(&shape.new_values[layer]), &value_copy)?;
            }
        }
        let mut out = Vec::with_capacity(shape.outputs.len());
        for (_, t, width) in &shape.outputs {
            let mut host = vec![0f32; layout.shape.batch * width];
            // SAFETY: as above; the download waits for the stream.
            unsafe {
                stream
                    .download(bytemuck::cast_slice_mut(&mut host), device_ptr(t))
                    .map_err(stream_err)?;
            }
            out.push(host);
        }
        self.len = len + rows;
        Ok(out)
    }
}

/// Enqueues `copy` from the buffer at `src` into the cache buffer at `dst`.
///
/// # Safety
/// Both must be live device allocations covering every byte `copy` addresses.
unsafe fn append(stream: &CudaStream, dst: u64, src: u64, copy: &Copy2d) -> Result<(), LmError> {
    // SAFETY: as the caller vouches.
    unsafe {
        stream.copy_2d(
            (dst + copy.dst_offset as u64, copy.dst_pitch),
            (src + copy.src_offset as u64, copy.src_pitch),
            copy.width,
            copy.height,
        )
    }
    .map_err(stream_err)
}

/// Output names and widths of a graph's step, as the frame loop reads them.
pub fn step_outputs(graph: Graph, hidden: usize, vocab: usize) -> Vec<(&'static str, usize)> {
    match graph {
        Graph::Backbone => vec![(io::HIDDEN, hidden), (io::C0_LOGITS, vocab)],
        Graph::Decoder => vec![(io::LOGITS, vocab)],
    }
}
