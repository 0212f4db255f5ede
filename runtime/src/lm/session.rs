//! ONNX Runtime sessions for the two LM graphs and one cached step through
//! either of them.
//!
//! A step binds the caller's embeddings, the positions and `attn_bias` the cache
//! derives, and every layer's cache buffers as zero-copy tensor views; ORT
//! allocates only the small outputs (logits, hidden, the new positions' keys and
//! values), which are then written into the cache.
//!
//! Sessions come from the backend's one factory
//! ([`heart_backend::OrtRuntime::open_session`]). A graph may be opened
//! [deferred](StackGraph::deferred): its geometry is known up front and its
//! session is created on first use. An engine with a frame graph opens its
//! per-step graphs that way, because plain decoding never runs them and each
//! session holds its own copy of the weights the frame graph holds too.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use heart::engine::io;
use heart_backend::{OrtRuntime, SessionConfig};
use ort::session::builder::PrepackedWeights;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use super::LmError;
use super::kv_cache::{Buf, CacheDtype, CacheElem, CacheShape, KvCache};

/// A backbone or decoder session with the cache geometry read from its inputs.
pub struct StackGraph {
    path: PathBuf,
    session: OnceLock<Session>,
    opener: Option<Opener>,
    geometry: Geometry,
}

/// What a graph's cache and `embeds` inputs look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Layers (cache pairs).
    pub layers: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Cache element type.
    pub dtype: CacheDtype,
    /// Width of the `embeds` input.
    pub embed_dim: usize,
}

/// How a deferred graph's session is created.
struct Opener {
    rt: OrtRuntime,
    cfg: SessionConfig,
    prepacked: PrepackedWeights,
}

/// Named f32 outputs of one step, in the order asked for.
pub type StepOutputs = Vec<Vec<f32>>;

impl StackGraph {
    /// Opens `path` and checks it has the LM graph inputs (`heart::engine::io`);
    /// the session shares pre-packed weights through `prepacked` with the
    /// engine's other graphs.
    pub fn open(
        rt: &OrtRuntime,
        path: &Path,
        cfg: &SessionConfig,
        prepacked: &PrepackedWeights,
    ) -> Result<Self, LmError> {
        let session = open_session(rt, path, cfg, prepacked)?;
        let geometry = read_geometry(&session, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            session: OnceLock::from(session),
            opener: None,
            geometry,
        })
    }

    /// Like [`Self::open`], but creates the session when a step or an output
    /// query first needs it; the graph must then have `geometry` (an
    /// [`LmError::Engine`] at that point otherwise).
    pub fn deferred(
        rt: &OrtRuntime,
        path: &Path,
        cfg: &SessionConfig,
        prepacked: &PrepackedWeights,
        geometry: Geometry,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            session: OnceLock::new(),
            opener: Some(Opener {
                rt: rt.clone(),
                cfg: *cfg,
                prepacked: prepacked.clone(),
            }),
            geometry,
        }
    }

    /// The graph's cache and `embeds` geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether the session exists (a deferred graph not used yet has none).
    pub fn is_open(&self) -> bool {
        self.session.get().is_some()
    }

    /// The session, created now if it was deferred.
    pub fn session(&self) -> Result<&Session, LmError> {
        if let Some(s) = self.session.get() {
            return Ok(s);
        }
        let Some(o) = &self.opener else {
            unreachable!("a StackGraph without an opener is created open")
        };
        let session = open_session(&o.rt, &self.path, &o.cfg, &o.prepacked)?;
        let found = read_geometry(&session, &self.path)?;
        if found != self.geometry {
            return Err(LmError::Engine {
                path: self.path.clone(),
                message: format!(
                    "the graph's cache and embeddings {found:?} differ from the engine's {:?}",
                    self.geometry
                ),
            });
        }
        Ok(self.session.get_or_init(|| session))
    }

    /// The session for a run (or an I/O binding), created now if it was deferred.
    pub fn session_mut(&mut self) -> Result<&mut Session, LmError> {
        self.session()?;
        Ok(self.session.get_mut().expect("created above"))
    }

    /// Cache geometry for `batch` rows.
    pub fn cache_shape(&self, batch: usize) -> CacheShape {
        CacheShape {
            layers: self.geometry.layers,
            batch,
            kv_heads: self.geometry.kv_heads,
            head_dim: self.geometry.head_dim,
        }
    }

    /// Cache element type.
    pub fn cache_dtype(&self) -> CacheDtype {
        self.geometry.dtype
    }

    /// Width of the `embeds` input.
    pub fn embed_dim(&self) -> usize {
        self.geometry.embed_dim
    }

    /// Whether the graph has an output called `name`.
    pub fn has_output(&self, name: &str) -> Result<bool, LmError> {
        Ok(self.session()?.outputs().iter().any(|o| o.name() == name))
    }

    /// The graph file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of every graph output (cache outputs included).
    pub fn output_names(&self) -> Result<Vec<String>, LmError> {
        Ok(self.session()?.outputs().iter().map(|o| o.name().to_string()).collect())
    }

    /// Runs `s` new rows (`embeds` `[batch, s, D]`) at the cache's next
    /// positions, appends their keys/values and returns the `outputs` asked for.
    /// `codebook` feeds the decoder's `codebook` input.
    pub fn step(
        &mut self,
        cache: &mut KvCache,
        embeds: &[f32],
        s: usize,
        codebook: Option<i64>,
        outputs: &[&str],
    ) -> Result<StepOutputs, LmError> {
        let codebook = codebook.map(|k| [k]);
        let mut extra: Vec<(String, SessionInputValue<'_>)> = Vec::new();
        if let Some(k) = &codebook {
            extra.push((
                io::CODEBOOK.into(),
                TensorRef::from_array_view(((), &k[..]))
                    .map_err(|e| self.ort_err(e))?
                    .into(),
            ));
        }
        let path = self.path.clone();
        self.run(cache, embeds, s, extra, |out| {
            outputs
                .iter()
                .map(|name| Ok(extract::<f32>(out, name, &path)?.to_vec()))
                .collect()
        })
    }

    /// [`Self::step`] with the graph-specific inputs `extra` bound too; `read`
    /// takes what it needs from the outputs (the cache is written already).
    pub fn run<R>(
        &mut self,
        cache: &mut KvCache,
        embeds: &[f32],
        s: usize,
        extra: Vec<(String, SessionInputValue<'_>)>,
        read: impl FnOnce(&SessionOutputs<'_>) -> Result<R, LmError>,
    ) -> Result<R, LmError> {
        let batch = cache.shape().batch;
        let Geometry {
            embed_dim,
            layers,
            dtype,
            ..
        } = self.geometry;
        if embeds.len() != batch * s * embed_dim || cache.shape() != self.cache_shape(batch) {
            return Err(LmError::Shape {
                what: format!("{} step input", self.path.display()),
                expected: format!("{batch}x{s}x{embed_dim} embeddings and a matching cache"),
                got: format!("{} values, cache {:?}", embeds.len(), cache.shape()),
            });
        }
        cache.reserve(s)?;
        let positions = cache.positions(s);
        let bias = cache.attn_bias(s);
        let ort_err = |e: ort::Error| self.ort_err(e);
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                io::EMBEDS.into(),
                TensorRef::from_array_view(([batch, s, embed_dim], embeds))
                    .map_err(ort_err)?
                    .into(),
            ),
            (
                io::POSITIONS.into(),
                TensorRef::from_array_view(([s], positions.as_slice()))
                    .map_err(ort_err)?
                    .into(),
            ),
            (
                io::ATTN_BIAS.into(),
                TensorRef::from_array_view(([s, cache.capacity() + s], bias.as_slice()))
                    .map_err(ort_err)?
                    .into(),
            ),
        ];
        inputs.extend(extra);
        for layer in 0..layers {
            let (k, v) = cache.layer(layer);
            inputs.push((io::past_key(layer), buf_view(k, cache.key_dims()).map_err(ort_err)?));
            inputs.push((io::past_value(layer), buf_view(v, cache.value_dims()).map_err(ort_err)?));
        }
        let path = self.path.clone();
        let out = self.session_mut()?.run(inputs).map_err(|e| LmError::Ort {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for layer in 0..layers {
            let (k, v) = (
                get(&out, &io::new_key(layer), &path)?,
                get(&out, &io::new_value(layer), &path)?,
            );
            match dtype {
                CacheDtype::F32 => write_layer::<f32>(cache, layer, (k, v), s, &path)?,
                CacheDtype::F16 => write_layer::<f16>(cache, layer, (k, v), s, &path)?,
            }
        }
        cache.advance(s);
        read(&out)
    }

    fn ort_err(&self, e: ort::Error) -> LmError {
        LmError::Ort {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

/// Opens `path` through the backend's session factory. ONNX Runtime refuses
/// CUDA-graph capture at session creation for a graph it cannot capture
/// whole (control-flow nodes, or nodes left to the CPU with copies around
/// them: the CPU-form decoder's `If`); such a graph opens uncaptured, said in
/// one warning line.
fn open_session(
    rt: &OrtRuntime,
    path: &Path,
    cfg: &SessionConfig,
    prepacked: &PrepackedWeights,
) -> Result<Session, LmError> {
    let opened = match rt.open_session_sharing(path, cfg, prepacked) {
        Err(e) if rt.plan.cuda_graph => {
            tracing::warn!(target: "heart", "{}: running without CUDA graphs: {}", path.display(), e.message);
            let mut plan = rt.plan.clone();
            plan.cuda_graph = false;
            rt.clone().with_plan(plan).open_session_sharing(path, cfg, prepacked)
        }
        other => other,
    };
    opened.map_err(|e| LmError::Ort {
        path: e.path,
        message: e.message,
    })
}

/// Reads the cache and `embeds` geometry of `session` (graph `path`),
/// checking it has the LM graph inputs (`heart::engine::io`).
fn read_geometry(session: &Session, path: &Path) -> Result<Geometry, LmError> {
    let err = |message: String| LmError::Engine {
        path: path.to_path_buf(),
        message,
    };
    let input = |name: &str| -> Result<(TensorElementType, Vec<i64>), LmError> {
        let outlet = session
            .inputs()
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| err(format!("graph has no input `{name}`")))?;
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok((*ty, shape.to_vec())),
            other => Err(err(format!("input `{name}` is {other:?}, expected a tensor"))),
        }
    };
    let layers = (0..)
        .take_while(|&i| session.inputs().iter().any(|o| o.name() == io::past_key(i)))
        .count();
    let first_key = io::past_key(0);
    if layers == 0 {
        return Err(err(format!(
            "graph has no `{first_key}` input (one cache input per layer)"
        )));
    }
    let (ty, key) = input(&first_key)?;
    let dtype = match ty {
        TensorElementType::Float32 => CacheDtype::F32,
        TensorElementType::Float16 => CacheDtype::F16,
        other => return Err(err(format!("cache inputs are {other:?}; expected f32 or f16"))),
    };
    let (_, embeds) = input(io::EMBEDS)?;
    let dim = |v: &[i64], i: usize, what: &str| {
        v.get(i)
            .copied()
            .filter(|&d| d > 0)
            .map(|d| d as usize)
            .ok_or_else(|| err(format!("`{what}` has no fixed dimension {i} (shape {v:?})")))
    };
    Ok(Geometry {
        layers,
        kv_heads: dim(&key, 1, &first_key)?,
        head_dim: dim(&key, 2, &first_key)?,
        embed_dim: dim(&embeds, 2, io::EMBEDS)?,
        dtype,
    })
}

/// Output `name` of a step; missing is an engine error naming the graph.
fn get<'o>(out: &'o SessionOutputs<'_>, name: &str, path: &Path) -> Result<&'o DynValue, LmError> {
    out.get(name).ok_or_else(|| LmError::Engine {
        path: path.to_path_buf(),
        message: format!("graph has no output `{name}`"),
    })
}

/// Output `name` of a step as a flat slice of `T`.
pub fn extract<'o, T: ort::value::PrimitiveTensorElementType>(
    out: &'o SessionOutputs<'_>,
    name: &str,
    path: &Path,
) -> Result<&'o [T], LmError> {
    let (_, data) = get(out, name, path)?
        .try_extract_tensor::<T>()
        .map_err(|e| LmError::Ort {
            path: path.to_path_buf(),
            message: format!("output `{name}`: {e}"),
        })?;
    Ok(data)
}

/// A zero-copy input view of a cache buffer.
fn buf_view(buf: &Buf, dims: [usize; 4]) -> ort::Result<SessionInputValue<'_>> {
    Ok(match buf {
        Buf::F32(v) => TensorRef::from_array_view((dims, v.as_slice()))?.into(),
        Buf::F16(v) => TensorRef::from_array_view((dims, v.as_slice()))?.into(),
    })
}

/// Copies one layer's `new_key`/`new_value` outputs into the cache.
fn write_layer<T: CacheElem + ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
    cache: &mut KvCache,
    layer: usize,
    (k, v): (&DynValue, &DynValue),
    s: usize,
    path: &Path,
) -> Result<(), LmError> {
    fn extract<'v, T: ort::value::PrimitiveTensorElementType>(
        x: &'v DynValue,
        layer: usize,
        path: &Path,
    ) -> Result<&'v [T], LmError> {
        x.try_extract_tensor::<T>()
            .map(|(_, d)| d)
            .map_err(|e| LmError::Engine {
                path: path.to_path_buf(),
                message: format!("new keys/values of layer {layer}: {e}"),
            })
    }
    cache.write(layer, extract::<T>(k, layer, path)?, extract::<T>(v, layer, path)?, s)
}
