//! The engine folder's `manifest.toml`: what every file is, its precision and
//! hash, the configs the graphs were built from, and the exact build inputs.
//!
//! `heart-build` writes it last (inside a temp dir that is then renamed), and
//! `heart-run` loads engines only through it: a manifest of another format
//! version, a missing file, or a file whose size or SHA-256 differs is refused
//! with a message naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{CodecConfig, GenConfig, MulaConfig};
use crate::error::{Error, Result};
use crate::precision::Precision;

/// Manifest file name inside an engine folder.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// Version of the engine-folder format this build reads and writes. Bumped on
/// any change of graph inputs/outputs or file roles.
pub const FORMAT_VERSION: u32 = 1;

/// What an engine file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Backbone step/prefill graph.
    Backbone,
    /// Depth decoder step graph.
    Decoder,
    /// Embedding tables used by the runtime's frame embedder.
    LmTables,
    /// Flow-matching estimator graph.
    FlowEstimator,
    /// Scalar-model CNN decoder graph.
    ScalarDecoder,
    /// RVQ codebooks and conditioning weights.
    CodecTables,
    /// The HeartCodec configuration (also recorded in the manifest).
    CodecConfig,
    /// External weight data of an ONNX graph.
    GraphData,
    /// The text tokenizer.
    Tokenizer,
    /// Calibration statistics.
    Calibration,
    /// A TensorRT artefact under `trt/`: an EP-context model, a serialized
    /// engine or its profile, or the builder's timing cache.
    TensorRt,
    /// Backbone graph of the speculative-decoding draft (`draft/`).
    DraftBackbone,
    /// Decoder graph of the speculative-decoding draft (`draft/`).
    DraftDecoder,
}

impl EngineKind {
    /// The precision recorded for a file of this kind, given the LM and codec
    /// build precisions (`None` for files without weights, and for draft graphs,
    /// whose precision the draft build records itself).
    pub fn precision(self, lm: Precision, codec: Precision) -> Option<Precision> {
        match self {
            Self::Backbone | Self::Decoder | Self::LmTables => Some(lm),
            Self::FlowEstimator | Self::ScalarDecoder | Self::CodecTables => Some(codec),
            Self::GraphData
            | Self::Tokenizer
            | Self::Calibration
            | Self::CodecConfig
            | Self::TensorRt
            | Self::DraftBackbone
            | Self::DraftDecoder => None,
        }
    }
}

/// One file of the engine folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the engine folder.
    pub path: String,
    /// What the file is.
    pub kind: EngineKind,
    /// Weight precision, for graphs and tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the contents.
    pub sha256: String,
}

/// A build input and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputEntry {
    /// Role of the input (`mula_config`, `mula_weights`, `tokenizer`, ...).
    pub role: String,
    /// Where it was read from, as given to `heart-build`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// A build profile (`configs/build/*.toml`) as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileEntry {
    /// The profile's name (file stem).
    pub name: String,
    /// Where it was read from: a path, or `built-in` for a compiled-in profile.
    pub source: String,
    /// Lower-case hex SHA-256 of its text.
    pub sha256: String,
    /// The profile's full text.
    pub text: String,
}

/// The calibration run behind an engine's activation scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationEntry {
    /// The prompts file the run read.
    pub prompts: String,
    /// Lower-case hex SHA-256 of that file (the calibration set's hash).
    pub prompts_sha256: String,
    /// How scales were chosen from the statistics (`max`, `percentile`, `mse`).
    pub method: String,
    /// The statistics file in the engine folder.
    pub stats: String,
    /// Lower-case hex SHA-256 of the statistics file.
    pub stats_sha256: String,
}

/// Where the engines run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Portable ONNX graphs for ONNX Runtime (CPU, or any provider).
    Onnx,
    /// The portable ONNX graphs plus TensorRT engines (and ONNX Runtime
    /// EP-context models pointing at them) built for one GPU model by ONNX
    /// Runtime's TensorRT execution provider. The engines run only on a GPU of
    /// the same name and compute capability; every field is what the build
    /// machine reported, not what heart assumed.
    #[serde(rename = "tensorrt")]
    TensorRt {
        /// Device name from the CUDA driver (`cuDeviceGetName`), e.g. `NVIDIA GB10`.
        gpu_name: String,
        /// `major.minor` from the driver's compute-capability attributes, e.g. `12.1`.
        compute_capability: String,
        /// Version of the TensorRT library the provider loaded
        /// (`getInferLibVersion()` of `libnvinfer.so.10`), e.g. `10.13.3`;
        /// absent when that symbol could not be queried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tensorrt_version: Option<String>,
        /// Newest CUDA version the installed driver supports
        /// (`cuDriverGetVersion`, e.g. `13.0`). This is not the kernel-module
        /// version `nvidia-smi` prints (e.g. 580.x), which the driver API does
        /// not report.
        cuda_driver_version: String,
    },
    /// The ONNX graphs in their TensorRT form plus TensorRT-RTX engines built
    /// ahead of time (no GPU involved) for one GPU architecture, each with an
    /// EP-context model that ONNX Runtime's NvTensorRTRTX execution provider
    /// loads. Engines deserialize only in the identical TensorRT-RTX release;
    /// the runtime then specializes them for the local GPU of that
    /// architecture (TensorRT-RTX's runtime cache, outside the engine folder).
    #[serde(rename = "tensorrt_rtx")]
    TensorRtRtx {
        /// Version of the TensorRT-RTX builder, e.g. `1.7.1.116`.
        tensorrt_rtx_version: String,
        /// GPU architecture compiled for, e.g. `sm121` (GB10).
        gpu_arch: String,
        /// The same as `major.minor`, e.g. `12.1`.
        compute_capability: String,
        /// The ONNX Runtime execution provider named by the EP-context models
        /// (their `source`), e.g. `NvTensorRTRTXExecutionProvider`.
        execution_provider: String,
        /// One entry per engine.
        #[serde(default, rename = "engine")]
        engines: Vec<TrtEngineEntry>,
    },
}

/// One prebuilt engine of a [`Target::TensorRtRtx`] folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrtEngineEntry {
    /// The ONNX graph it was built from, relative to the folder (`backbone.onnx`, `draft/decoder.onnx`).
    pub graph: String,
    /// Its EP-context model, relative to the folder (`trt/backbone_ctx.onnx`).
    pub context_model: String,
    /// The serialized engine, relative to the folder (`trt/backbone.engine`).
    pub engine: String,
    /// The optimization profile: the accepted range of every dynamic input.
    #[serde(default, rename = "input")]
    pub profile: Vec<InputRange>,
}

/// The range an engine accepts for one input (TensorRT optimization profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRange {
    /// Input tensor name (the graph's and the engine's).
    pub name: String,
    /// Smallest shape accepted.
    pub min: Vec<u64>,
    /// Shape the kernels were tuned for.
    pub opt: Vec<u64>,
    /// Largest shape accepted.
    pub max: Vec<u64>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Engine-folder format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Version of heart that built the folder.
    pub heart_version: String,
    /// Execution target.
    pub target: Target,
    /// LM weight precision.
    pub precision: Precision,
    /// Codec weight precision, when a codec was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_precision: Option<Precision>,
    /// HeartMuLa configuration the LM graphs were built from.
    pub model: MulaConfig,
    /// Generation ids.
    pub gen_config: GenConfig,
    /// HeartCodec configuration, when a codec was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<CodecConfig>,
    /// The build profile the LM graphs were exported with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_profile: Option<ProfileEntry>,
    /// The calibration run behind the activation scales, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationEntry>,
    /// Build inputs with their hashes.
    #[serde(default, rename = "input")]
    pub inputs: Vec<InputEntry>,
    /// Every file of the folder (except the manifest itself).
    #[serde(default, rename = "file")]
    pub files: Vec<FileEntry>,
}

/// How thoroughly [`Manifest::load`] checks the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Existence and size of every file, SHA-256 of files up to
    /// [`Verify::SMALL_FILE`] bytes (graphs, tokenizer, tables of small models).
    Quick,
    /// SHA-256 of every file (reads the whole folder once).
    Full,
}

impl Verify {
    /// Files up to this size are always hashed.
    pub const SMALL_FILE: u64 = 64 << 20;
}

impl Manifest {
    /// Reads `<dir>/manifest.toml` and checks it against the folder.
    pub fn load(dir: &Path, verify: Verify) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::Config {
                path,
                message: format!(
                    "engine format version {} is not supported by this heart ({}, format {FORMAT_VERSION}); \
                     rebuild the engines with this version of heart-build",
                    manifest.format_version,
                    env!("CARGO_PKG_VERSION")
                ),
            });
        }
        manifest.check_files(dir, verify)?;
        Ok(manifest)
    }

    /// Writes the manifest into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let text = toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
    }

    /// The entry of a file of the given kind (the first, if several).
    pub fn file(&self, kind: EngineKind) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.kind == kind)
    }

    /// Absolute path of the file of the given kind, or an error naming the manifest.
    pub fn path_of(&self, dir: &Path, kind: EngineKind) -> Result<PathBuf> {
        self.file(kind).map(|f| dir.join(&f.path)).ok_or_else(|| Error::Config {
            path: dir.join(MANIFEST_FILE),
            message: format!("no file of kind `{kind:?}` in this engine folder"),
        })
    }

    fn check_files(&self, dir: &Path, verify: Verify) -> Result<()> {
        let manifest_path = dir.join(MANIFEST_FILE);
        for entry in &self.files {
            let path = dir.join(&entry.path);
            let size = file_size(&path)?;
            if size != entry.size {
                return Err(Error::Config {
                    path: manifest_path,
                    message: format!(
                        "file `{}` has {size} bytes but the manifest records {}; the engine folder was modified \
                         or is incomplete — rebuild it",
                        entry.path, entry.size
                    ),
                });
            }
            if verify == Verify::Full || size <= Verify::SMALL_FILE {
                let digest = sha256_file(&path)?;
                if digest != entry.sha256 {
                    return Err(Error::Config {
                        path: manifest_path,
                        message: format!(
                            "file `{}` has SHA-256 {digest} but the manifest records {}; the engine folder was \
                             modified — rebuild it",
                            entry.path, entry.sha256
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Describes a file for the manifest (size + SHA-256).
pub fn describe_file(dir: &Path, relative: &str, kind: EngineKind, precision: Option<Precision>) -> Result<FileEntry> {
    let path = dir.join(relative);
    let size = file_size(&path)?;
    Ok(FileEntry {
        path: relative.to_string(),
        kind,
        precision,
        size,
        sha256: sha256_file(&path)?,
    })
}

fn file_size(path: &Path) -> Result<u64> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Lower-case hex SHA-256 of a file, streamed in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlavorParams, RawMulaConfig};

    fn sample(dir: &Path) -> Manifest {
        std::fs::write(dir.join("backbone.onnx"), b"graph bytes").unwrap();
        let raw: RawMulaConfig = serde_json::from_value(serde_json::json!({
            "backbone_flavor": "llama-3B", "decoder_flavor": "llama-300M", "text_vocab_size": 128256,
            "audio_vocab_size": 8197, "audio_num_codebooks": 8, "muq_dim": 512, "torch_dtype": "float32"
        }))
        .unwrap();
        let model = MulaConfig::resolve(raw).unwrap();
        assert_eq!(model.backbone, FlavorParams::builtin("llama-3B").unwrap());
        Manifest {
            format_version: FORMAT_VERSION,
            heart_version: "test".into(),
            target: Target::Onnx,
            precision: Precision::Fp32,
            codec_precision: None,
            model,
            gen_config: GenConfig {
                text_bos_id: 128000,
                text_eos_id: 128001,
                audio_eos_id: 8193,
                empty_id: 0,
            },
            codec: None,
            build_profile: None,
            calibration: None,
            inputs: vec![],
            files: vec![describe_file(dir, "backbone.onnx", EngineKind::Backbone, Some(Precision::Fp32)).unwrap()],
        }
    }

    #[test]
    fn round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample(dir.path());
        m.write(dir.path()).unwrap();
        let back = Manifest::load(dir.path(), Verify::Full).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.files[0].sha256,
            sha256_bytes(b"graph bytes"),
            "manifest records the real SHA-256"
        );
    }

    #[test]
    fn tensorrt_target_round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.target = Target::TensorRt {
            gpu_name: "NVIDIA GB10".into(),
            compute_capability: "12.1".into(),
            tensorrt_version: Some("10.13.3".into()),
            cuda_driver_version: "13.0".into(),
        };
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("kind = \"tensorrt\""), "{text}");
        assert!(text.contains("gpu_name = \"NVIDIA GB10\""), "{text}");
        assert_eq!(Manifest::load(dir.path(), Verify::Full).unwrap(), m);

        m.target = Target::TensorRt {
            gpu_name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: "9.0".into(),
            tensorrt_version: None,
            cuda_driver_version: "13.0".into(),
        };
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(!text.contains("tensorrt_version"), "absent version is omitted: {text}");
        assert_eq!(Manifest::load(dir.path(), Verify::Full).unwrap(), m);

        m.target = Target::Onnx;
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("kind = \"onnx\""), "{text}");
    }

    #[test]
    fn refuses_modified_files_and_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = sample(dir.path());
        m.write(dir.path()).unwrap();

        std::fs::write(dir.path().join("backbone.onnx"), b"graph bytez").unwrap();
        let err = Manifest::load(dir.path(), Verify::Quick).unwrap_err().to_string();
        assert!(err.contains("`backbone.onnx` has SHA-256"), "{err}");

        std::fs::write(dir.path().join("backbone.onnx"), b"short").unwrap();
        let err = Manifest::load(dir.path(), Verify::Quick).unwrap_err().to_string();
        assert!(
            err.contains("`backbone.onnx` has 5 bytes but the manifest records 11"),
            "{err}"
        );

        std::fs::remove_file(dir.path().join("backbone.onnx")).unwrap();
        let err = Manifest::load(dir.path(), Verify::Quick).unwrap_err().to_string();
        assert!(err.contains("backbone.onnx"), "{err}");

        m.format_version = FORMAT_VERSION + 1;
        m.files.clear();
        m.write(dir.path()).unwrap();
        let err = Manifest::load(dir.path(), Verify::Quick).unwrap_err().to_string();
        assert!(err.contains("engine format version 2 is not supported"), "{err}");
    }
}
