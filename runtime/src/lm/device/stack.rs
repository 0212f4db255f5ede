//! One graph stepped over a cache that stays in [`Memory`]: [`DeviceKv`] (the
//! caches, allocated once at full capacity) and [`GraphBindings`] (per step
//! shape, the fixed input/output buffers and the I/O binding over them, made
//! from [`step_plan`] on first use and reused by every later step of that
//! shape, so the addresses a captured CUDA graph recorded stay valid).
//!
//! A step: upload the small inputs into the shape's buffers, run the
//! binding (replaying the shape's CUDA graph once captured), append the new
//! keys/values into the caches with [`DeviceKvLayout`]'s strided copies, read
//! back the outputs asked for — all through [`Memory`], on the providers'
//! stream on a GPU.

use std::collections::BTreeMap;
use std::path::Path;

use heart::engine::io;
use ort::session::{IoBinding, Session};

use super::layout::{
    Buffer, Cursor, DeviceKvLayout, Graph, StepGeometry, StepPlan, annotation, attn_bias, step_inputs, step_plan,
};
use super::memory::{Buf, Memory};
use crate::lm::LmError;

/// A stack's KV cache in [`Memory`], at a fixed capacity.
pub struct DeviceKv {
    layout: DeviceKvLayout,
    keys: Vec<Buf>,
    values: Vec<Buf>,
}

impl DeviceKv {
    /// Allocates every layer's key and value buffer of `layout`, zeroed
    /// ([`Memory::zero`]).
    pub fn new(memory: &Memory, layout: DeviceKvLayout) -> Result<Self, LmError> {
        let elem = super::layout::Elem::of_cache(layout.dtype);
        let mut keys = Vec::with_capacity(layout.shape.layers);
        let mut values = Vec::with_capacity(layout.shape.layers);
        for _ in 0..layout.shape.layers {
            keys.push(memory.alloc(elem, &layout.key_dims())?);
            values.push(memory.alloc(elem, &layout.value_dims())?);
        }
        for buf in keys.iter_mut().chain(values.iter_mut()) {
            memory.zero(buf)?;
        }
        Ok(Self { layout, keys, values })
    }

    /// The cache geometry.
    pub fn layout(&self) -> DeviceKvLayout {
        self.layout
    }

    /// Addresses of every key and value buffer (stable for the cache's life).
    pub fn addresses(&self) -> Vec<usize> {
        self.keys.iter().chain(&self.values).map(Buf::addr).collect()
    }
}

/// One step's request.
pub struct StepRequest<'a> {
    /// New positions.
    pub rows: usize,
    /// `embeds` `[B, rows, D]`.
    pub embeds: &'a [f32],
    /// The graph's other step inputs ([`step_inputs`] beyond `embeds`,
    /// `positions` and `attn_bias`), as little-endian bytes.
    pub inputs: &'a [(&'static str, &'a [u8])],
    /// Outputs to read back, in order.
    pub outputs: &'a [&'static str],
    /// Whether the shape repeats (capture and replay it); one-off shapes
    /// (the prompt) run uncaptured in buffers dropped after the step.
    pub capture: bool,
}

/// The buffers and binding of one step shape.
struct Shape {
    plan: StepPlan,
    buffers: BTreeMap<Buffer, Buf>,
    binding: IoBinding,
}

impl Shape {
    fn make(
        session: &Session,
        memory: &Memory,
        kv: &DeviceKv,
        geometry: &StepGeometry,
        plan: StepPlan,
    ) -> Result<Self, LmError> {
        let err = |e: ort::Error| LmError::Input(format!("device loop binding: {e}"));
        let mut buffers = BTreeMap::new();
        for b in plan.bindings.iter().filter(|b| !b.buffer.is_cache()) {
            let (elem, dims) = geometry.spec(b.buffer, plan.rows).ok_or_else(|| {
                LmError::Input(format!(
                    "the device loop reads no `{}` (taps and other outputs need the host loop: --backend cpu)",
                    b.name
                ))
            })?;
            buffers.insert(b.buffer, memory.alloc(elem, &dims)?);
        }
        let mut binding = session.create_binding().map_err(err)?;
        for b in &plan.bindings {
            match b.buffer {
                Buffer::Key(l) => binding.bind_input(b.name.as_str(), &kv.keys[l].tensor).map_err(err)?,
                Buffer::Value(l) => binding.bind_input(b.name.as_str(), &kv.values[l].tensor).map_err(err)?,
                other => {
                    let buf = buffers.get_mut(&other).expect("allocated above");
                    if b.input {
                        binding.bind_input(b.name.as_str(), &buf.tensor).map_err(err)?;
                    } else {
                        binding.bind_output(b.name.as_str(), &mut buf.tensor).map_err(err)?;
                    }
                }
            }
        }
        Ok(Self { plan, buffers, binding })
    }

    fn buffer(&mut self, b: Buffer) -> Result<&mut Buf, LmError> {
        self.buffers
            .get_mut(&b)
            .ok_or_else(|| LmError::Input(format!("the step binds no {b:?}")))
    }
}

/// Key of a shape: batch rows, new positions, outputs read back.
type ShapeKey = (usize, usize, Vec<&'static str>);

/// The step shapes of one graph over one [`DeviceKv`].
pub struct GraphBindings {
    graph: Graph,
    shapes: BTreeMap<ShapeKey, Shape>,
}

impl GraphBindings {
    /// No shape bound yet.
    pub fn new(graph: Graph) -> Self {
        Self {
            graph,
            shapes: BTreeMap::new(),
        }
    }

    /// The graph these shapes run.
    pub fn graph(&self) -> Graph {
        self.graph
    }

    /// The address of every buffer of the shape `key`, by buffer (for tests
    /// of address stability).
    pub fn addresses(&self, batch: usize, rows: usize, outputs: &[&'static str]) -> Option<BTreeMap<Buffer, usize>> {
        let shape = self.shapes.get(&(batch, rows, outputs.to_vec()))?;
        Some(shape.buffers.iter().map(|(b, buf)| (*b, buf.addr())).collect())
    }

    /// Runs `req` at `cursor`'s next positions over `kv` (which `cursor`
    /// belongs to), appends the new keys/values and returns the outputs as
    /// bytes, in the order asked; advances `cursor`. `path` names the graph
    /// in errors.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        session: &mut Session,
        path: &Path,
        memory: &Memory,
        kv: &mut DeviceKv,
        geometry: &StepGeometry,
        cursor: &mut Cursor,
        req: &StepRequest<'_>,
    ) -> Result<Vec<Vec<u8>>, LmError> {
        let layout = kv.layout;
        let len = cursor.next(req.rows).map_err(|needed| LmError::CacheFull {
            needed,
            max: layout.capacity,
        })?;
        let (Some(key_copy), Some(value_copy)) = (layout.key_append(len, req.rows), layout.value_append(len, req.rows))
        else {
            return Err(LmError::CacheFull {
                needed: len + req.rows,
                max: layout.capacity,
            });
        };
        let batch = layout.shape.batch;
        let expected = batch * req.rows * geometry.embed_dim;
        if req.embeds.len() != expected {
            return Err(LmError::Shape {
                what: format!("{} device step embeddings", path.display()),
                expected: format!("{expected} values"),
                got: format!("{} values", req.embeds.len()),
            });
        }
        let capture = if req.capture {
            annotation(self.graph, batch, req.rows, cursor.epoch)
        } else {
            None
        };
        let key: ShapeKey = (batch, req.rows, req.outputs.to_vec());
        let mut transient = None;
        let shape = match (capture, self.shapes.contains_key(&key)) {
            (_, true) => self.shapes.get_mut(&key).expect("present"),
            (Some(_), false) => {
                let plan = step_plan(self.graph, layout.shape.layers, req.rows, req.outputs, capture);
                let made = Shape::make(session, memory, kv, geometry, plan)?;
                self.shapes.entry(key).or_insert(made)
            }
            (None, false) => {
                let plan = step_plan(self.graph, layout.shape.layers, req.rows, req.outputs, None);
                transient.insert(Shape::make(session, memory, kv, geometry, plan)?)
            }
        };
        let positions: Vec<i64> = (len..len + req.rows).map(|p| p as i64).collect();
        let bias = attn_bias(layout.capacity, len, req.rows);
        let mut uploads: Vec<(&'static str, &[u8])> = vec![
            (io::EMBEDS, bytemuck::cast_slice(req.embeds)),
            (io::POSITIONS, bytemuck::cast_slice(&positions)),
            (io::ATTN_BIAS, bytemuck::cast_slice(&bias)),
        ];
        uploads.extend(req.inputs.iter().copied());
        for name in step_inputs(self.graph) {
            let Some((_, bytes)) = uploads.iter().find(|(n, _)| n == name) else {
                return Err(LmError::Input(format!(
                    "{}: device step without its `{name}` input",
                    path.display()
                )));
            };
            let buf = shape.buffer(Buffer::Input(name))?;
            if bytes.len() != buf.bytes {
                return Err(LmError::Shape {
                    what: format!("{} input `{name}`", path.display()),
                    expected: format!("{} bytes", buf.bytes),
                    got: format!("{} bytes", bytes.len()),
                });
            }
            memory.upload(buf, bytes)?;
        }
        let options = memory.run_options(shape.plan.capture)?;
        session
            .run_binding_with_options(&shape.binding, &options)
            .map_err(|e| LmError::Ort {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for layer in 0..layout.shape.layers {
            memory.copy_2d(&mut kv.keys[layer], shape.buffer(Buffer::NewKey(layer))?, &key_copy)?;
            memory.copy_2d(
                &mut kv.values[layer],
                shape.buffer(Buffer::NewValue(layer))?,
                &value_copy,
            )?;
        }
        let mut out = Vec::with_capacity(req.outputs.len());
        for &name in req.outputs {
            let buf = shape.buffer(Buffer::Output(name))?;
            let mut host = vec![0u8; buf.bytes];
            memory.download(buf, &mut host)?;
            out.push(host);
        }
        cursor.len = len + req.rows;
        Ok(out)
    }
}
