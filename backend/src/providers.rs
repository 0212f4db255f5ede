//! Registering ONNX Runtime's TensorRT and CUDA providers on a session
//! builder for an [`ExecutionPlan`] (feature `gpu`).
//!
//! Compiled and linted on CPU-only machines; executed only where a GPU is
//! present (see `docs/gpu.md` for what was and was not run).

use std::path::Path;

use heart::engine::{self, TENSORRT_ENGINE_SUBDIR, TENSORRT_TIMING_SUBDIR};
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::builder::SessionBuilder;

use crate::plan::{Backend, ExecutionPlan, TrtMode, cache_prefix, context_model_for};

/// Registers the plan's providers for the graph file `graph`.
pub(crate) fn register(builder: SessionBuilder, plan: &ExecutionPlan, graph: &Path) -> ort::Result<SessionBuilder> {
    let providers: Vec<ExecutionProviderDispatch> = match &plan.backend {
        // The NvTensorRTRTX plugin goes through the device API (`OrtRuntime::session_builder`).
        Backend::Cpu | Backend::TensorRtRtx { .. } => Vec::new(),
        Backend::Cuda { device } => vec![cuda(*device, plan).build().error_on_failure()],
        Backend::TensorRt { device, cache_dir } => vec![
            tensorrt(plan, graph, *device, cache_dir)?.build().error_on_failure(),
            // Nodes TensorRT does not take run on CUDA (or, failing that, the CPU).
            cuda(
                *device,
                &ExecutionPlan {
                    cuda_graph: false,
                    ..plan.clone()
                },
            )
            .build(),
        ],
    };
    Ok(builder.with_execution_providers(providers)?)
}

fn cuda(device: i32, plan: &ExecutionPlan) -> ep::CUDA {
    let ep = ep::CUDA::default()
        .with_device_id(device)
        .with_cuda_graph(plan.cuda_graph);
    match plan.compute_stream {
        // SAFETY: `ExecutionPlan::compute_stream`'s contract: the stream
        // outlives every session of the plan.
        Some(stream) => unsafe { ep.with_compute_stream(stream as *mut ()) },
        None => ep,
    }
}

/// TensorRT options for `graph`:
/// - an EP-context model from `heart-build --target tensorrt` is loaded as is
///   (the engine it names is deserialized, nothing is rebuilt);
/// - [`TrtMode::Build`] builds the engine at session creation (every dynamic
///   input has a profile), writes it under `trt/engines/` with the graph's
///   name as prefix, the timing cache under `trt/timing/`, and dumps
///   `trt/<graph>_ctx.onnx` referring to the engine by a path relative to it;
/// - otherwise (a portable folder) engines are built on first use and cached
///   in `cache_dir`.
fn tensorrt(plan: &ExecutionPlan, graph: &Path, device: i32, cache_dir: &Path) -> ort::Result<ep::TensorRT> {
    let trt = ep::TensorRT::default()
        .with_device_id(device)
        .with_cuda_graph(plan.cuda_graph);
    // SAFETY: `ExecutionPlan::compute_stream`'s contract: the stream outlives
    // every session of the plan.
    let trt = match plan.compute_stream {
        Some(stream) => unsafe { trt.with_compute_stream(stream as *mut ()) },
        None => trt,
    };
    if context_model_for(plan, graph).is_some() {
        return Ok(trt);
    }
    let name = graph
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ort::Error::new(format!("{}: not a graph file name", graph.display())))?;
    let options = plan.graphs.get(name).ok_or_else(|| {
        ort::Error::new(format!(
            "{}: no TensorRT optimization profile for this graph",
            graph.display()
        ))
    })?;
    // The provider creates its cache folder with a non-recursive mkdir.
    for sub in [TENSORRT_ENGINE_SUBDIR, TENSORRT_TIMING_SUBDIR] {
        let folder = cache_dir.join(sub);
        std::fs::create_dir_all(&folder).map_err(|e| ort::Error::new(format!("creating {}: {e}", folder.display())))?;
    }
    let trt = trt
        .with_fp16(options.fp16)
        .with_profile_min_shapes(&options.profile.min)
        .with_profile_opt_shapes(&options.profile.opt)
        .with_profile_max_shapes(&options.profile.max)
        .with_engine_cache(true)
        .with_engine_cache_prefix(cache_prefix(name))
        .with_timing_cache(true)
        .with_timing_cache_path(cache_dir.join(TENSORRT_TIMING_SUBDIR).display());
    Ok(match plan.mode {
        // With an EP-context dump the provider requires a relative cache path
        // and resolves it against the context model's folder.
        TrtMode::Build => {
            let engine_dir = graph.parent().unwrap_or(Path::new("."));
            trt.with_engine_cache_path(TENSORRT_ENGINE_SUBDIR)
                .with_dump_ep_context_model(true)
                .with_ep_context_file_path(engine_dir.join(engine::context_model(name)).display())
                .with_ep_context_embed_mode(0)
        }
        TrtMode::Run => trt.with_engine_cache_path(cache_dir.join(TENSORRT_ENGINE_SUBDIR).display()),
    })
}
