//! [`OrtRuntime`]: the loaded ONNX Runtime library with its environment and
//! execution plan, and the one session factory every graph is opened with
//! ([`OrtRuntime::open_session`]: providers, threads, optimization level,
//! memory pattern).
//!
//! Session defaults: intra-op threads = one per available core; graph
//! optimisation level `All` (the tiny-a conformance cases pass with it at the
//! fixture tolerances); `Basic` (constant folding and redundant-node removal
//! only) is there for A/B checks of ONNX Runtime's fusions. The memory pattern
//! is on unless a graph's caller turns it off (the codec does: see its
//! sessions module for the measurement).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heart::manifest::{Manifest, Target};
use heart::precision::Precision;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};

use crate::plan::{Backend, BackendChoice, BackendError, CudaGraphs, ExecutionPlan, context_model_for};
use crate::trt_rtx;

/// The loaded library and its environment, shared by every session of the process.
#[derive(Clone)]
pub struct OrtRuntime {
    /// The library that was loaded.
    pub library: PathBuf,
    /// The committed ONNX Runtime environment sessions are created from.
    pub env: ort::environment::Environment,
    /// Which provider sessions use (the CPU unless set).
    pub plan: ExecutionPlan,
}

/// How a session is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Intra-op threads; 0 = one per available core.
    pub intra_threads: usize,
    /// Graph optimisation level.
    pub optimization: Optimization,
    /// ONNX Runtime's memory pattern (pre-planned arena blocks per input shape).
    pub memory_pattern: bool,
}

/// ONNX Runtime graph optimisation levels offered to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimization {
    /// Constant folding and redundant-node removal only.
    Basic,
    /// Every CPU fusion (default).
    All,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            intra_threads: 0,
            optimization: Optimization::All,
            memory_pattern: true,
        }
    }
}

/// A graph that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: ONNX Runtime: {message}", path.display())]
pub struct SessionError {
    /// The graph file.
    pub path: PathBuf,
    /// ONNX Runtime's message.
    pub message: String,
}

impl OrtRuntime {
    /// This runtime with `--backend choice`, resolved per engine folder by [`OrtRuntime::for_engine`].
    pub fn with_backend(mut self, choice: BackendChoice) -> Self {
        self.plan.choice = Some(choice);
        self
    }

    /// This runtime with CUDA-graph capture in the device-resident LM loop
    /// set to `graphs` ([`ExecutionPlan::device_cuda_graphs`]).
    pub fn with_cuda_graphs(mut self, graphs: CudaGraphs) -> Self {
        self.plan.device_cuda_graphs = graphs;
        self
    }

    /// This runtime with an explicit plan (used by `heart-build --target tensorrt`).
    pub fn with_plan(mut self, plan: ExecutionPlan) -> Self {
        self.plan = plan;
        self
    }

    /// Whether sessions run on ONNX Runtime's CPU provider.
    pub fn on_cpu(&self) -> bool {
        matches!(self.plan.backend, Backend::Cpu)
    }

    /// A session builder for the graph file `graph` with the plan's providers registered.
    pub fn session_builder(&self, graph: &Path) -> ort::Result<SessionBuilder> {
        let builder = Session::builder(&self.env)?;
        match &self.plan.backend {
            Backend::Cpu => Ok(builder),
            Backend::TensorRtRtx { device, cache_dir } => {
                let device = self
                    .env
                    .devices()
                    .filter(|d| d.ep().is_ok_and(|ep| ep == trt_rtx::EP_NAME))
                    .nth(*device)
                    .ok_or_else(|| {
                        ort::Error::new(format!(
                            "{}: the NvTensorRTRTX plugin has no device {device} (was it registered?)",
                            graph.display()
                        ))
                    })?;
                std::fs::create_dir_all(cache_dir)
                    .map_err(|e| ort::Error::new(format!("creating {}: {e}", cache_dir.display())))?;
                let options = trt_rtx::session_options(cache_dir, self.plan.cuda_graph, self.plan.compute_stream);
                Ok(builder.with_devices([device], Some(&options))?)
            }
            #[cfg(feature = "gpu")]
            _ => crate::providers::register(builder, &self.plan, graph),
            #[cfg(not(feature = "gpu"))]
            _ => Err(ort::Error::new(format!(
                "{}: {:?} needs a build with `--features gpu`",
                graph.display(),
                self.plan.backend
            ))),
        }
    }

    /// The file to load for `graph`: its EP-context model on TensorRT when one
    /// was built, else `graph` itself.
    pub fn graph_file(&self, graph: &Path) -> PathBuf {
        context_model_for(&self.plan, graph).unwrap_or_else(|| graph.to_path_buf())
    }

    /// Opens the graph file `path` as a session: the plan's providers, then
    /// `cfg`'s threads, optimisation level and memory pattern.
    pub fn open_session(&self, path: &Path, cfg: &SessionConfig) -> Result<Session, SessionError> {
        self.open(path, cfg, None)
    }

    /// [`Self::open_session`] with ONNX Runtime's pre-packed weights shared
    /// with every other session opened with `prepacked`: graphs of one engine
    /// that hold the same weights (the frame graph and the per-step graphs)
    /// keep one packed copy of each instead of one per session.
    pub fn open_session_sharing(
        &self,
        path: &Path,
        cfg: &SessionConfig,
        prepacked: &PrepackedWeights,
    ) -> Result<Session, SessionError> {
        self.open(path, cfg, Some(prepacked))
    }

    fn open(
        &self,
        path: &Path,
        cfg: &SessionConfig,
        prepacked: Option<&PrepackedWeights>,
    ) -> Result<Session, SessionError> {
        let err = |e: ort::Error| SessionError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let threads = match cfg.intra_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let level = match cfg.optimization {
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::All => GraphOptimizationLevel::All,
        };
        let builder = self.session_builder(path).map_err(err)?;
        let builder = builder
            .with_operators(crate::int4_op::domain().map_err(err)?)
            .map_err(|e| err(e.into()))?;
        let builder = builder.with_intra_threads(threads).map_err(|e| err(e.into()))?;
        let builder = builder.with_optimization_level(level).map_err(|e| err(e.into()))?;
        let mut builder = builder
            .with_memory_pattern(cfg.memory_pattern)
            .map_err(|e| err(e.into()))?;
        if let Some(p) = prepacked {
            builder = builder.with_prepacked_weights(p).map_err(|e| err(e.into()))?;
        }
        crate::int4_op::creating_session(|| builder.commit_from_file(self.graph_file(path))).map_err(err)
    }

    /// The runtime to open the engine folder `dir` with: resolves the plan's
    /// `--backend` choice against the folder's target and this machine's GPU,
    /// logs the notice (one line, `warn` level) and fills in the per-graph
    /// TensorRT settings. A runtime without a choice is returned unchanged.
    pub fn for_engine(&self, dir: &Path, manifest: &Manifest) -> Result<OrtRuntime, BackendError> {
        let Some(choice) = self.plan.choice else {
            return Ok(self.clone());
        };
        let rtx = choice == BackendChoice::TensorrtRtx
            || (choice == BackendChoice::Auto && matches!(manifest.target, Target::TensorRtRtx { .. }));
        let resolved = if rtx {
            let status = self.tensorrt_rtx();
            trt_rtx::resolve(
                choice,
                manifest,
                dir,
                &status,
                &crate::driver::probe(0),
                trt_rtx::runtime_cache_dir(dir)?,
            )?
        } else {
            Backend::resolve(choice, &manifest.target, dir)?
        };
        if let Some(notice) = &resolved.notice {
            tracing::warn!(target: "heart", "{notice}");
        }
        let mut plan = self.plan.clone();
        plan.graphs = match resolved.backend {
            Backend::TensorRt { .. } => ExecutionPlan::graph_options(
                &manifest.model,
                manifest.codec.as_ref(),
                manifest.precision,
                manifest.codec_precision.unwrap_or(Precision::Fp32),
            ),
            _ => BTreeMap::new(),
        };
        plan.contexts = match resolved.backend {
            Backend::TensorRtRtx { .. } => trt_rtx::context_models(manifest, dir),
            _ => BTreeMap::new(),
        };
        plan.backend = resolved.backend;
        Ok(self.clone().with_plan(plan))
    }

    /// This runtime with the NvTensorRTRTX plugin at `path` (a library or
    /// its folder) instead of the searched places.
    pub fn with_rtx_plugin(mut self, path: Option<PathBuf>) -> Self {
        self.plan.rtx_plugin = path;
        self
    }

    /// Registers the NvTensorRTRTX plugin with this runtime's environment
    /// (once per process) and reports the outcome.
    pub fn tensorrt_rtx(&self) -> trt_rtx::PluginStatus {
        trt_rtx::register(&self.env, self.plan.rtx_plugin.as_deref())
    }
}
