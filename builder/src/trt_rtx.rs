//! `heart-build --target tensorrt-rtx`: NVIDIA TensorRT-RTX engines built
//! ahead of time, on any machine (no GPU, no driver), for one GPU
//! architecture (`--gpu-arch`, default `sm121` = GB10).
//!
//! TensorRT-RTX publishes no C++ headers on the package index; its Python
//! builder is the header-free interface. `scripts/setup-trt-rtx.sh` installs
//! it (`tensorrt-rtx-cu13` 1.7.1 from PyPI) into `.trt-rtx/`, and this module
//! runs the build helper `scripts/trt_rtx_build.py` (compiled into the binary,
//! written to a temporary file per build) with that interpreter, one JSON
//! request and reply for all graphs of a build (one Python start, ~1 s).
//!
//! Every graph of the folder (the TensorRT forms of `backbone`, `decoder`,
//! `frame`, `flow_estimator`, `scalar_decoder` and the draft's `draft/backbone`,
//! `draft/decoder`) gets a strongly typed engine `trt/<graph>.engine` with one
//! optimization profile from [`heart_backend::profiles`] (with a
//! draft, the target decoder also accepts the speculative scorer's `F·B`
//! rows), and an EP-context model `trt/<graph>_ctx.onnx`
//! ([`onnx_export::ep_context`]) naming the engine by its path relative to the
//! model. The manifest's [`Target::TensorRtRtx`] records the builder version,
//! the architecture and, per engine, its files and profile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{BuildError, Context, Result};
use clap::ValueEnum;
use heart::config::{CodecConfig, MulaConfig};
use heart::engine;
use heart::manifest::{InputRange, Target, TrtEngineEntry};
use heart::precision::Precision;
use heart_backend::profiles::{self, GraphProfile, ProfileLimits};
use onnx_export::ep_context::{EpContext, NV_TENSORRT_RTX_SOURCE, write_ep_context_model};
use onnx_export::external::WrittenFile;
use serde::{Deserialize, Serialize};

/// The build helper, run by the TensorRT-RTX install's interpreter.
const HELPER: &str = include_str!("../../scripts/trt_rtx_build.py");
/// Environment variable naming the TensorRT-RTX install folder.
pub const ENV_VAR: &str = "HEART_TRT_RTX";
/// The install folder's name in a source tree (`scripts/setup-trt-rtx.sh`).
pub const LOCAL_DIR: &str = ".trt-rtx";

/// GPU architectures TensorRT-RTX 1.7 builds for that heart offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuArch {
    /// Compute capability 12.1: GB10 (DGX Spark).
    Sm121,
    /// 12.0: RTX 50 series (Blackwell).
    Sm120,
    /// 8.9: RTX 40 series (Ada).
    Sm89,
    /// 8.6: RTX 30 series (Ampere).
    Sm86,
}

impl GpuArch {
    /// The spelling of `--gpu-arch` and of TensorRT-RTX's `ComputeCapability` (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sm121 => "sm121",
            Self::Sm120 => "sm120",
            Self::Sm89 => "sm89",
            Self::Sm86 => "sm86",
        }
    }

    /// `major.minor`.
    pub fn compute_capability(self) -> &'static str {
        match self {
            Self::Sm121 => "12.1",
            Self::Sm120 => "12.0",
            Self::Sm89 => "8.9",
            Self::Sm86 => "8.6",
        }
    }

    /// Refuses `precision` (of `what`, e.g. `--precision`) when this
    /// architecture has no tensor cores for it
    /// ([`heart_backend::trt_rtx::min_capability`]: NVFP4 needs Blackwell, FP8
    /// Ada or newer). TensorRT-RTX refuses such builds itself ("the model
    /// contains HW-specific datatypes: fp4_e2m1, fp8_e4m3"); this says so
    /// before any export.
    pub fn check_precision(self, precision: Precision, what: &str) -> Result<()> {
        let builds =
            |arch: Self| heart_backend::trt_rtx::min_capability(precision).is_none_or(|need| arch.capability() >= need);
        if builds(self) {
            return Ok(());
        }
        let mut able: Vec<Self> = Self::value_variants().iter().copied().filter(|&a| builds(a)).collect();
        able.sort_by_key(|a| a.capability());
        let names: Vec<&str> = able.iter().map(|a| a.as_str()).collect();
        let list = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.join(""),
        };
        Err(BuildError::Request(format!(
            "{what} {precision}: {} (compute capability {}) has no {precision} tensor cores; \
             TensorRT-RTX builds {precision} for {list} only",
            self.as_str(),
            self.compute_capability(),
        )))
    }

    /// `major·10 + minor` as a number.
    fn capability(self) -> i32 {
        self.hardware_architecture().parse().expect("sm<digits>")
    }

    /// `major·10 + minor`, the EP-context models' `hardware_architecture`.
    pub fn hardware_architecture(self) -> &'static str {
        &self.as_str()[2..]
    }
}

/// A TensorRT-RTX install made by `scripts/setup-trt-rtx.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrtRtx {
    /// The install folder.
    pub dir: PathBuf,
    /// The interpreter it was installed for.
    pub python: PathBuf,
}

/// Install folders to try, in order: `explicit` alone when given, else
/// `$HEART_TRT_RTX`, `.trt-rtx/` in the current directory, in the
/// executable's ancestors, then in this source tree.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os(ENV_VAR) {
        out.push(PathBuf::from(p));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(LOCAL_DIR));
    }
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).map(|d| d.join(LOCAL_DIR)));
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(LOCAL_DIR));
    out
}

/// The first complete install among [`candidates`]; an error naming every
/// place searched and the setup command when there is none.
pub fn locate(explicit: Option<&Path>) -> Result<TrtRtx> {
    let searched = candidates(explicit);
    for dir in &searched {
        let marker = dir.join("python");
        let Ok(python) = std::fs::read_to_string(&marker) else {
            continue;
        };
        let python = PathBuf::from(python.trim());
        if dir.join("site-packages").join("tensorrt_rtx").is_dir() && python.is_file() {
            return Ok(TrtRtx {
                dir: dir.clone(),
                python,
            });
        }
    }
    let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    Err(BuildError::Request(format!(
        "--target tensorrt-rtx needs NVIDIA TensorRT-RTX, which is not installed (searched: {}). \
         Run `bash scripts/setup-trt-rtx.sh` in the heart source tree (it pip-installs tensorrt-rtx-cu13 1.7.1 \
         into .trt-rtx/), or pass --trt-rtx DIR / set {ENV_VAR} to such a folder",
        list.join(", ")
    )))
}

/// One graph to build, relative to the engine folder, with its profile.
#[derive(Debug, Clone)]
pub struct GraphJob {
    /// The graph file, e.g. `backbone.onnx` or `draft/decoder.onnx`.
    pub graph: String,
    /// Its optimization profile.
    pub profile: GraphProfile,
}

/// The graphs of a build and their profiles: the LM with its frame graph (its decoder also takes
/// the speculative scorer's rows when `draft` is given), the codec when
/// `codec` is given, and the draft's graphs built from `draft` (the draft's
/// own, possibly shallower, configuration).
pub fn jobs(model: &MulaConfig, codec: Option<&CodecConfig>, draft: Option<&MulaConfig>) -> Vec<GraphJob> {
    let plain = ProfileLimits::for_model(model);
    let target = if draft.is_some() {
        plain.with_speculation()
    } else {
        plain
    };
    let mut out = vec![
        GraphJob {
            graph: engine::BACKBONE_GRAPH.into(),
            profile: profiles::backbone(model, &target),
        },
        GraphJob {
            graph: engine::DECODER_GRAPH.into(),
            profile: profiles::decoder(model, &target),
        },
        // The frame graph's dynamic inputs are the backbone's
        // (`profiles::for_graph`); it decodes plain frames only.
        GraphJob {
            graph: engine::FRAME_GRAPH.into(),
            profile: profiles::backbone(model, &plain),
        },
    ];
    if let Some(codec) = codec {
        out.push(GraphJob {
            graph: engine::FLOW_ESTIMATOR_GRAPH.into(),
            profile: profiles::flow_estimator(codec, &plain),
        });
        out.push(GraphJob {
            graph: engine::SCALAR_DECODER_GRAPH.into(),
            profile: profiles::scalar_decoder(codec, &plain),
        });
    }
    if let Some(cut) = draft {
        let limits = ProfileLimits::for_model(cut);
        for (graph, profile) in [
            (engine::BACKBONE_GRAPH, profiles::backbone(cut, &limits)),
            (engine::DECODER_GRAPH, profiles::decoder(cut, &limits)),
        ] {
            out.push(GraphJob {
                graph: format!("{}/{graph}", engine::DRAFT_DIR),
                profile,
            });
        }
    }
    out
}

#[derive(Serialize)]
struct Request<'a> {
    arch: &'a str,
    graphs: Vec<RequestGraph>,
}

#[derive(Serialize)]
struct RequestGraph {
    onnx: PathBuf,
    engine: PathBuf,
    profile: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Reply {
    error: Option<String>,
    tensorrt_rtx_version: Option<String>,
    #[serde(default)]
    graphs: Vec<ReplyGraph>,
}

#[derive(Debug, Deserialize)]
struct ReplyGraph {
    bytes: u64,
    seconds: f64,
    inputs: Vec<ReplyTensor>,
    outputs: Vec<ReplyTensor>,
}

#[derive(Debug, Deserialize)]
struct ReplyTensor {
    name: String,
}

/// Builds the engines of `jobs` (graphs already exported into `dir`) for
/// `arch` with the install `env`; writes `trt/` and returns the manifest
/// target and every file written there.
pub fn build(
    env: &TrtRtx,
    arch: GpuArch,
    dir: &Path,
    jobs: &[GraphJob],
    quiet: bool,
) -> Result<(Target, Vec<WrittenFile>)> {
    let mut graphs = Vec::with_capacity(jobs.len());
    for job in jobs {
        let engine = dir.join(engine::tensorrt_engine(&job.graph));
        if let Some(parent) = engine.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let profile = job
            .profile
            .inputs
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    serde_json::json!({"min": i.min, "opt": i.opt, "max": i.max}),
                )
            })
            .collect();
        graphs.push(RequestGraph {
            onnx: dir.join(&job.graph),
            engine,
            profile,
        });
    }
    let request = serde_json::to_vec(&Request {
        arch: arch.as_str(),
        graphs,
    })?;
    if !quiet {
        eprintln!(
            "building {} TensorRT-RTX engines for {} (no GPU needed)",
            jobs.len(),
            arch.as_str()
        );
    }
    let reply = run_helper(env, &request)?;
    let version = reply
        .tensorrt_rtx_version
        .ok_or_else(|| BuildError::TrtRtx("the TensorRT-RTX build helper replied without a version".into()))?;
    if reply.graphs.len() != jobs.len() {
        return Err(BuildError::TrtRtx(format!(
            "the TensorRT-RTX build helper built {} engines for {} graphs",
            reply.graphs.len(),
            jobs.len()
        )));
    }
    let mut files = Vec::new();
    let mut engines = Vec::new();
    for (job, built) in jobs.iter().zip(&reply.graphs) {
        if !quiet {
            eprintln!(
                "  {}: {:.1} MB engine in {:.1} s",
                job.graph,
                built.bytes as f64 / 1e6,
                built.seconds
            );
        }
        let engine_rel = engine::tensorrt_engine(&job.graph);
        let context_rel = engine::context_model(&job.graph);
        let engine_name = Path::new(&engine_rel)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BuildError::Unlisted(format!("engine file name of {engine_rel}")))?;
        let graph_name = Path::new(&job.graph)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BuildError::Unlisted(format!("graph file name of {}", job.graph)))?;
        let partition = job.graph.trim_end_matches(".onnx").replace('/', "_");
        let names = |tensors: &[ReplyTensor]| tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let context = dir.join(&context_rel);
        let bytes = write_ep_context_model(
            &dir.join(&job.graph),
            &names(&built.inputs),
            &names(&built.outputs),
            &EpContext {
                engine: engine_name,
                source: NV_TENSORRT_RTX_SOURCE,
                hardware_architecture: arch.hardware_architecture(),
                partition_name: &partition,
                sdk_version: &version,
                onnx_model_filename: graph_name,
            },
            &context,
        )
        .with_context(|| format!("writing the EP-context model of {}", job.graph))?;
        files.push(WrittenFile {
            path: dir.join(&engine_rel),
            bytes: built.bytes,
        });
        files.push(WrittenFile { path: context, bytes });
        engines.push(TrtEngineEntry {
            graph: job.graph.clone(),
            context_model: context_rel,
            engine: engine_rel,
            profile: job
                .profile
                .inputs
                .iter()
                .map(|i| {
                    let u = |v: &[usize]| v.iter().map(|&d| d as u64).collect();
                    InputRange {
                        name: i.name.clone(),
                        min: u(&i.min),
                        opt: u(&i.opt),
                        max: u(&i.max),
                    }
                })
                .collect(),
        });
    }
    let target = Target::TensorRtRtx {
        tensorrt_rtx_version: version,
        gpu_arch: arch.as_str().into(),
        compute_capability: arch.compute_capability().into(),
        execution_provider: NV_TENSORRT_RTX_SOURCE.into(),
        engines,
    };
    Ok((target, files))
}

/// Runs the helper with `request` on stdin; its reply, or an error with the
/// helper's own message and the tail of the builder's log.
fn run_helper(env: &TrtRtx, request: &[u8]) -> Result<Reply> {
    let mut script = tempfile::Builder::new()
        .prefix("trt_rtx_build")
        .suffix(".py")
        .tempfile()
        .context("writing the TensorRT-RTX build helper")?;
    script
        .write_all(HELPER.as_bytes())
        .context("writing the TensorRT-RTX build helper")?;
    let mut child = Command::new(&env.python)
        .arg(script.path())
        .env("PYTHONPATH", env.dir.join("site-packages"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (TensorRT-RTX install {})",
                env.python.display(),
                env.dir.display()
            )
        })?;
    // A helper that dies before reading its request closes the pipe: report
    // its own output then, not the broken pipe.
    let sent = child.stdin.take().map(|mut stdin| stdin.write_all(request));
    let out = child
        .wait_with_output()
        .context("waiting for the TensorRT-RTX build helper")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log_tail = || {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let reply: Option<Reply> = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok());
    match reply {
        Some(Reply { error: Some(e), .. }) => Err(BuildError::TrtRtx(format!(
            "TensorRT-RTX: {e}\nbuilder log (tail):\n{}",
            log_tail()
        ))),
        Some(r) if out.status.success() => Ok(r),
        _ => Err(BuildError::TrtRtx(format!(
            "the TensorRT-RTX build helper ({} with {}) failed ({}{}) without a reply; its output:\n{stdout}\n{}",
            env.python.display(),
            env.dir.display(),
            out.status,
            match sent {
                Some(Err(e)) => format!(", request not delivered: {e}"),
                _ => String::new(),
            },
            log_tail()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MulaConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartmula");
        MulaConfig::from_file(&dir.join("config.json")).unwrap()
    }

    #[test]
    fn architectures_spell_their_compute_capability() {
        assert_eq!(
            (GpuArch::Sm121.as_str(), GpuArch::Sm121.compute_capability()),
            ("sm121", "12.1")
        );
        assert_eq!(GpuArch::Sm121.hardware_architecture(), "121");
        assert_eq!(GpuArch::Sm89.hardware_architecture(), "89");
        assert_eq!(GpuArch::Sm86.compute_capability(), "8.6");
    }

    #[test]
    fn fp4_needs_blackwell_and_fp8_ada() {
        assert!(GpuArch::Sm121.check_precision(Precision::Fp4, "--precision").is_ok());
        assert!(GpuArch::Sm120.check_precision(Precision::Fp4, "--precision").is_ok());
        let err = GpuArch::Sm89
            .check_precision(Precision::Fp4, "--draft-precision")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--draft-precision fp4: sm89") && err.contains("sm120 and sm121"),
            "{err}"
        );
        assert!(GpuArch::Sm89.check_precision(Precision::Fp8, "--precision").is_ok());
        assert!(GpuArch::Sm86.check_precision(Precision::Fp8, "--precision").is_err());
        assert!(GpuArch::Sm86.check_precision(Precision::Fp16, "--precision").is_ok());
    }

    #[test]
    fn an_explicit_folder_without_an_install_names_the_setup_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("scripts/setup-trt-rtx.sh"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert_eq!(candidates(Some(dir.path())), vec![dir.path().to_path_buf()]);
    }

    #[test]
    fn a_helper_that_gives_no_reply_is_an_error_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let env = TrtRtx {
            dir: dir.path().to_path_buf(),
            python: PathBuf::from("/bin/sh"),
        };
        let err = run_helper(&env, b"{}").unwrap_err().to_string();
        assert!(
            err.contains("failed (exit status") && err.contains("without a reply"),
            "{err}"
        );
        assert!(err.contains("/bin/sh"), "{err}");
    }

    #[test]
    fn with_a_draft_the_target_decoder_takes_the_scorer_rows_and_the_draft_its_own_layers() {
        let m = model();
        let mut cut = m.clone();
        cut.backbone.num_layers = 1;
        let plain = jobs(&m, None, None);
        let spec = jobs(&m, None, Some(&cut));
        let names: Vec<&str> = spec.iter().map(|j| j.graph.as_str()).collect();
        assert_eq!(
            names,
            [
                "backbone.onnx",
                "decoder.onnx",
                "frame.onnx",
                "draft/backbone.onnx",
                "draft/decoder.onnx"
            ]
        );
        let batch_max = |j: &GraphJob| j.profile.inputs[0].max[0];
        assert_eq!(batch_max(&plain[1]), 2);
        assert_eq!(batch_max(&spec[1]), 2 * profiles::SPECULATE_MAX_FRAMES);
        assert_eq!(batch_max(&spec[0]), 2, "the backbone scores positions, not rows");
        assert_eq!(batch_max(&spec[4]), 2, "the draft decodes plain frames");
        let keys = |j: &GraphJob| {
            j.profile
                .inputs
                .iter()
                .filter(|i| i.name.starts_with("past_key_"))
                .count()
        };
        assert_eq!(keys(&spec[0]), m.backbone.num_layers);
        assert_eq!(
            keys(&spec[2]),
            m.backbone.num_layers,
            "the frame graph's cache is the backbone's"
        );
        assert_eq!(keys(&spec[3]), 1);
    }
}
