//! [`EngineFolder`]: the one way an engine folder is opened. The manifest is
//! loaded and checked ([`Verify`]), the runtime's `--backend` choice is
//! resolved against the folder's target and this machine, and the parts are
//! handed out on demand: [`EngineFolder::lm`], [`EngineFolder::draft`],
//! [`EngineFolder::codec`], [`EngineFolder::tokenizer`]. The song pipeline,
//! the benchmark, the A/B and conformance all open folders through here, so
//! every one of them runs on the backend the user chose, and none of them
//! opens an engine file the manifest does not list (each listed file was
//! checked for size, location and external data when the manifest loaded).

use std::path::{Path, PathBuf};

use heart::manifest::{EngineKind, Manifest, Verify};
use heart::prompt::TextTokenizer;
use heart_backend::{BackendError, OrtRuntime, SessionConfig};

use crate::codec::{Codec, CodecError};
use crate::lm::{HeartMula, LmError};

/// Errors opening an engine folder or one of its parts; each names the folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The manifest is missing, malformed, or does not match the files (the
    /// core error names the folder or the file at fault).
    #[error("{source}")]
    Manifest {
        /// The engine folder.
        dir: PathBuf,
        /// What is wrong.
        source: heart::Error,
    },
    /// The asked-for backend cannot run this folder here.
    #[error(transparent)]
    Backend(Box<BackendError>),
    /// The tokenizer could not be loaded.
    #[error("loading the tokenizer of {}: {source}", dir.display())]
    Tokenizer {
        /// The engine folder.
        dir: PathBuf,
        /// What is wrong.
        source: heart::Error,
    },
    /// The LM (or draft) graphs could not be opened.
    #[error("loading the {part} engines of {}: {source}", dir.display())]
    Lm {
        /// The engine folder.
        dir: PathBuf,
        /// `LM` or `draft`.
        part: &'static str,
        /// What is wrong.
        source: LmError,
    },
    /// The codec graphs or tables could not be opened.
    #[error("loading the codec engines of {}: {source}", dir.display())]
    Codec {
        /// The engine folder.
        dir: PathBuf,
        /// What is wrong.
        source: CodecError,
    },
    /// Speculative decoding was asked for but the folder has no draft.
    #[error(
        "engine folder {} has no speculative draft: rebuild it with `heart-build … --draft-precision int4` (or \
         --draft-backbone-layers N), or run without --speculate",
        dir.display()
    )]
    NoDraft {
        /// The engine folder.
        dir: PathBuf,
    },
    /// Audio was asked for but the folder was built without a codec.
    #[error(
        "engine folder {} has no codec (it was built without --codec), so it cannot make audio",
        dir.display()
    )]
    NoCodec {
        /// The engine folder.
        dir: PathBuf,
    },
}

/// An engine folder opened through its manifest, with the runtime resolved for it.
pub struct EngineFolder {
    dir: PathBuf,
    manifest: Manifest,
    rt: OrtRuntime,
}

impl EngineFolder {
    /// Opens `dir`: loads and checks the manifest (every file's size, and the
    /// SHA-256 of the small ones with [`Verify::Quick`]), then resolves `rt`'s
    /// backend choice for this folder (logging why, when `auto` falls back).
    pub fn open(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self, EngineError> {
        let manifest = Manifest::load(dir, verify).map_err(|source| EngineError::Manifest {
            dir: dir.to_path_buf(),
            source,
        })?;
        let draft = manifest.file(EngineKind::DraftBackbone).is_some();
        manifest
            .require_files(dir, &heart::engine::runtime_files(manifest.codec.is_some(), draft))
            .map_err(|source| EngineError::Manifest {
                dir: dir.to_path_buf(),
                source,
            })?;
        let rt = rt
            .for_engine(dir, &manifest)
            .map_err(|e| EngineError::Backend(Box::new(e)))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            rt,
        })
    }

    /// The engine folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest it was opened through.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The runtime the folder's sessions are created with.
    pub fn runtime(&self) -> &OrtRuntime {
        &self.rt
    }

    /// Whether the folder has a speculative-decoding draft.
    pub fn has_draft(&self) -> bool {
        self.manifest.file(EngineKind::DraftBackbone).is_some()
    }

    /// The text tokenizer.
    pub fn tokenizer(&self) -> Result<TextTokenizer, EngineError> {
        let err = |source| EngineError::Tokenizer {
            dir: self.dir.clone(),
            source,
        };
        let path = self.manifest.path_of(&self.dir, EngineKind::Tokenizer).map_err(err)?;
        TextTokenizer::from_file(&path).map_err(err)
    }

    /// The LM (backbone and decoder sessions, embedding tables).
    pub fn lm(&self, sessions: &SessionConfig) -> Result<HeartMula, EngineError> {
        let m = &self.manifest;
        HeartMula::open(&self.rt, &self.dir, &m.model, &m.gen_config, sessions).map_err(|source| EngineError::Lm {
            dir: self.dir.clone(),
            part: "LM",
            source,
        })
    }

    /// The speculative-decoding draft (`draft/`, written by `heart-build
    /// --draft-precision` or `--draft-backbone-layers`).
    pub fn draft(&self, sessions: &SessionConfig) -> Result<HeartMula, EngineError> {
        if !self.has_draft() {
            return Err(EngineError::NoDraft { dir: self.dir.clone() });
        }
        let m = &self.manifest;
        HeartMula::open_draft(&self.rt, &self.dir, &m.model, &m.gen_config, sessions).map_err(|source| {
            EngineError::Lm {
                dir: self.dir.clone(),
                part: "draft",
                source,
            }
        })
    }

    /// The codec (flow estimator, scalar decoder, RVQ tables).
    pub fn codec(&self) -> Result<Codec, EngineError> {
        let Some(cfg) = &self.manifest.codec else {
            return Err(EngineError::NoCodec { dir: self.dir.clone() });
        };
        Codec::open_with_config(&self.rt, &self.dir, cfg.clone()).map_err(|source| EngineError::Codec {
            dir: self.dir.clone(),
            source,
        })
    }
}
