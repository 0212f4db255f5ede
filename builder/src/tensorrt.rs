//! `heart-build --target tensorrt`: TensorRT engines for this machine's GPU,
//! built by ONNX Runtime's TensorRT execution provider from the exported graphs.
//!
//! Opening each graph with the provider in build mode
//! ([`TrtMode::Build`]) compiles its engine with the optimization profiles of
//! [`heart_backend::profiles`], writes it and its `.profile` under
//! `trt/engines/`, the timing cache under `trt/timing/`, and an EP-context
//! model `trt/<graph>_ctx.onnx` that names the engine by a path relative to
//! itself, so the finished folder can be renamed or moved. `heart-run` loads
//! those context models and never rebuilds. Needs the `gpu` feature and an
//! NVIDIA driver; without them the build stops before exporting anything.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{BuildError, Context, Result};
use heart::config::{CodecConfig, MulaConfig};
use heart::engine::{self, TENSORRT_DIR};
use heart::manifest::Target;
use heart::precision::Precision;
use heart_backend::{Backend, BackendError, ExecutionPlan, GpuInfo, Probe, TrtMode, probe};
use onnx_export::external::WrittenFile;

use crate::cli::BuildTarget;

/// The GPU engines will be built for, checked before any export work:
/// `None` for portable builds, an error when TensorRT was asked for without a GPU.
pub fn preflight(target: BuildTarget) -> Result<Option<GpuInfo>> {
    match target {
        BuildTarget::Onnx | BuildTarget::TensorrtRtx => Ok(None),
        BuildTarget::Tensorrt => match probe(0) {
            Probe::Found(gpu) => Ok(Some(gpu)),
            other => Err(BackendError::Unavailable {
                flag: "target",
                choice: "tensorrt".into(),
                reason: other.reason(),
            }
            .into()),
        },
    }
}

/// What to build engines for.
pub struct EngineSet<'a> {
    /// The HeartMuLa configuration.
    pub model: &'a MulaConfig,
    /// The HeartCodec configuration, when a codec was exported.
    pub codec: Option<&'a CodecConfig>,
    /// LM precision.
    pub lm: Precision,
    /// Codec precision.
    pub codec_precision: Precision,
}

/// Builds the engines of every graph in `dir` on `gpu`, returning the
/// manifest target and the files written under `trt/`.
pub fn build(gpu: &GpuInfo, dir: &Path, set: &EngineSet<'_>, quiet: bool) -> Result<(Target, Vec<WrittenFile>)> {
    let rt = heart_backend::init(None)?.with_plan(ExecutionPlan {
        backend: Backend::TensorRt {
            device: gpu.ordinal,
            cache_dir: dir.join(TENSORRT_DIR),
        },
        graphs: ExecutionPlan::graph_options(set.model, set.codec, set.lm, set.codec_precision),
        mode: TrtMode::Build,
        ..ExecutionPlan::default()
    });
    let mut graphs = vec![engine::BACKBONE_GRAPH, engine::DECODER_GRAPH, engine::FRAME_GRAPH];
    if set.codec.is_some() {
        graphs.extend([engine::FLOW_ESTIMATOR_GRAPH, engine::SCALAR_DECODER_GRAPH]);
    }
    for name in graphs {
        let path = dir.join(name);
        let start = Instant::now();
        if !quiet {
            eprintln!("building the TensorRT engine of {name} on {}", gpu.name);
        }
        let session = rt
            .session_builder(&path)
            .and_then(|mut b| b.commit_from_file(&path))
            .with_context(|| format!("building the TensorRT engine of {}", path.display()))?;
        drop(session);
        let context = dir.join(engine::context_model(name));
        if !context.is_file() {
            return Err(BuildError::TensorRt(format!(
                "ONNX Runtime built no EP-context model {} for {name}; the TensorRT provider may have left \
                 the graph to other providers (run with RUST_LOG=ort=info to see its partitioning)",
                context.display()
            )));
        }
        if !quiet {
            eprintln!("  {name}: {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    let files = files_under(&dir.join(TENSORRT_DIR))?;
    Ok((gpu.target(), files))
}

/// Every file under `root`, recursively, in a stable order.
fn files_under(root: &Path) -> Result<Vec<WrittenFile>> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(WrittenFile {
                    path: entry.path(),
                    bytes: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_without_a_gpu_stops_before_any_export() {
        assert!(preflight(BuildTarget::Onnx).unwrap().is_none());
        if matches!(probe(0), Probe::Found(_)) {
            return;
        }
        let err = preflight(BuildTarget::Tensorrt).unwrap_err().to_string();
        assert!(
            err.starts_with("--target tensorrt needs a build with `--features gpu` and an NVIDIA driver; "),
            "{err}"
        );
    }

    #[test]
    fn artefacts_are_listed_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let trt = dir.path().join("trt");
        std::fs::create_dir_all(trt.join("engines")).unwrap();
        std::fs::write(trt.join("engines/backbone_a.engine"), b"engine").unwrap();
        std::fs::write(trt.join("backbone_ctx.onnx"), b"ctx").unwrap();
        let files = files_under(&trt).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.strip_prefix(dir.path()).unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["trt/backbone_ctx.onnx", "trt/engines/backbone_a.engine"]);
        assert_eq!(files[1].bytes, 6);
    }
}
