//! [`DeviceLm`]: the device-resident state of one opened LM — the backbone
//! and decoder caches in [`Memory`], the step shapes of the backbone,
//! decoder and frame graphs over them, and the speculative scorer's caches.
//!
//! The caches belong to the model, not to a generation: a CUDA graph
//! captured for a shape replays the addresses it recorded, so a new song
//! must find the same buffers. [`DeviceLm::prepare`] reuses them when the
//! generation fits (same batch, capacity at most the allocated one) and
//! otherwise reallocates, bumping the allocation epoch so the new shapes get
//! new CUDA-graph ids ([`super::layout::annotation`]) and cursors of the old
//! allocation are refused instead of writing freed memory.

use std::collections::BTreeMap;
use std::path::Path;

use ort::session::Session;

use super::layout::{Cursor, DeviceKvLayout, Graph, StepGeometry};
use super::memory::Memory;
use super::stack::{DeviceKv, GraphBindings, StepRequest};
use crate::lm::LmError;

/// Model sizes the step buffers are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSizes {
    /// Width of `embeds` and `hidden`.
    pub embed_dim: usize,
    /// Audio vocabulary `V`.
    pub vocab: usize,
    /// Codebooks per frame.
    pub codebooks: usize,
}

/// A cache and the step shapes bound over it.
struct Stack {
    kv: DeviceKv,
    graphs: Vec<GraphBindings>,
}

/// The device-resident caches and bindings of one LM.
pub struct DeviceLm {
    sizes: ModelSizes,
    backbone: Option<Stack>,
    decoder: Option<Stack>,
    /// The speculative scorer's decoder caches, per folded batch `F·B`.
    scorers: BTreeMap<usize, Stack>,
    epoch: u32,
    /// Last: on a GPU it owns the stream, which outlives every buffer above.
    memory: Memory,
}

impl DeviceLm {
    /// Nothing allocated yet.
    pub fn new(memory: Memory, sizes: ModelSizes) -> Self {
        Self {
            sizes,
            backbone: None,
            decoder: None,
            scorers: BTreeMap::new(),
            epoch: 0,
            memory,
        }
    }

    /// The current allocation epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Cursors of a new generation over caches of at least `backbone` and
    /// `decoder`; the current caches are kept when they fit (same geometry,
    /// enough capacity), else both are reallocated at the larger capacity.
    pub fn prepare(&mut self, backbone: DeviceKvLayout, decoder: DeviceKvLayout) -> Result<(Cursor, Cursor), LmError> {
        let fits = |have: &Option<Stack>, want: DeviceKvLayout| {
            have.as_ref().is_some_and(|s| {
                let l = s.kv.layout();
                l.shape == want.shape && l.dtype == want.dtype && l.capacity >= want.capacity
            })
        };
        if !(fits(&self.backbone, backbone) && fits(&self.decoder, decoder)) {
            let grow = |have: &Option<Stack>, mut want: DeviceKvLayout| {
                if let Some(s) = have.as_ref().filter(|s| s.kv.layout().shape == want.shape) {
                    want.capacity = want.capacity.max(s.kv.layout().capacity);
                }
                want
            };
            let (b, d) = (grow(&self.backbone, backbone), grow(&self.decoder, decoder));
            // Free the old caches before allocating the new ones.
            self.backbone = None;
            self.decoder = None;
            self.epoch = self.epoch.wrapping_add(1);
            self.backbone = Some(Stack {
                kv: DeviceKv::new(&self.memory, b)?,
                graphs: vec![GraphBindings::new(Graph::Backbone), GraphBindings::new(Graph::Frame)],
            });
            self.decoder = Some(Stack {
                kv: DeviceKv::new(&self.memory, d)?,
                graphs: vec![GraphBindings::new(Graph::Decoder)],
            });
        }
        let cursor = |s: &Option<Stack>| Cursor {
            layout: s.as_ref().expect("allocated above").kv.layout(),
            len: 0,
            epoch: self.epoch,
        };
        Ok((cursor(&self.backbone), cursor(&self.decoder)))
    }

    /// Runs one step of `graph` (backbone, decoder or frame graph) at
    /// `cursor` and returns the outputs asked for as bytes.
    pub fn step(
        &mut self,
        graph: Graph,
        session: &mut Session,
        path: &Path,
        cursor: &mut Cursor,
        req: &StepRequest<'_>,
    ) -> Result<Vec<Vec<u8>>, LmError> {
        if cursor.epoch != self.epoch {
            return Err(LmError::Input(format!(
                "{}: this generation's device caches were reallocated by a newer generation of the same model \
                 (one generation per model at a time on a GPU backend)",
                path.display()
            )));
        }
        let sizes = self.sizes;
        let stack = match graph {
            Graph::Backbone | Graph::Frame => self.backbone.as_mut(),
            Graph::Decoder => self.decoder.as_mut(),
            Graph::Scorer => None,
        }
        .ok_or_else(|| LmError::Input(format!("{}: no device caches prepared", path.display())))?;
        let geometry = geometry(sizes, stack.kv.layout());
        let bindings = stack
            .graphs
            .iter_mut()
            .find(|g| g.graph() == graph)
            .ok_or_else(|| LmError::Input(format!("{}: {graph:?} does not run over this cache", path.display())))?;
        bindings.step(session, path, &self.memory, &mut stack.kv, &geometry, cursor, req)
    }

    /// One decoder call over a fresh cache of `layout` (the speculative
    /// scorer: frames folded into the batch, positions `0..rows`). The
    /// scorer's caches are kept per batch, so its shapes replay too.
    pub fn score(
        &mut self,
        session: &mut Session,
        path: &Path,
        layout: DeviceKvLayout,
        req: &StepRequest<'_>,
    ) -> Result<Vec<Vec<u8>>, LmError> {
        let batch = layout.shape.batch;
        let keep = self.scorers.get(&batch).is_some_and(|s| s.kv.layout() == layout);
        if !keep {
            self.scorers.remove(&batch);
            let stack = Stack {
                kv: DeviceKv::new(&self.memory, layout)?,
                graphs: vec![GraphBindings::new(Graph::Scorer)],
            };
            self.scorers.insert(batch, stack);
        }
        let stack = self.scorers.get_mut(&batch).expect("inserted above");
        let mut cursor = Cursor {
            layout,
            len: 0,
            epoch: self.epoch,
        };
        let geometry = geometry(self.sizes, layout);
        stack.graphs[0].step(session, path, &self.memory, &mut stack.kv, &geometry, &mut cursor, req)
    }

    /// Addresses of the backbone and decoder caches (for tests of address
    /// stability across generations).
    pub fn cache_addresses(&self) -> Vec<usize> {
        [&self.backbone, &self.decoder]
            .into_iter()
            .flatten()
            .flat_map(|s| s.kv.addresses())
            .collect()
    }

    /// The step shapes bound for `graph`.
    pub fn bindings(&self, graph: Graph) -> Option<&GraphBindings> {
        let stack = match graph {
            Graph::Backbone | Graph::Frame => self.backbone.as_ref(),
            Graph::Decoder => self.decoder.as_ref(),
            Graph::Scorer => self.scorers.values().next(),
        }?;
        stack.graphs.iter().find(|g| g.graph() == graph)
    }
}

fn geometry(sizes: ModelSizes, kv: DeviceKvLayout) -> StepGeometry {
    StepGeometry {
        kv,
        embed_dim: sizes.embed_dim,
        vocab: sizes.vocab,
        codebooks: sizes.codebooks,
    }
}
