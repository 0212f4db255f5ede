//! Finding and opening checkpoints laid out the way users download them (spec §1).
//!
//! A HeartMuLa folder holds `config.json` and the weights (`model.safetensors`, or
//! `model.safetensors.index.json` + shards). `tokenizer.json` and
//! `gen_config.json` live either in the same folder (the fixtures) or one level up,
//! shared with the codec (the release: `ckpt/tokenizer.json` next to
//! `ckpt/HeartMuLa-oss-3B/`). The folder itself wins over its parent; paths given
//! explicitly win over both. A HeartCodec folder holds `config.json` and weights.
//!
//! [`MulaCheckpoint::open`] / [`CodecCheckpoint::open`] then read the configs,
//! memory-map the weights and validate every tensor before returning, so nothing
//! downstream sees a checkpoint that does not match its config.

use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, INDEX_FILE, SINGLE_FILE};
use crate::config::{CodecConfig, GenConfig, MulaConfig};
use crate::error::{Error, Result};
use crate::prompt::{PromptBuilder, TextTokenizer};
use crate::tensors;

/// Model config file name (both models).
pub const CONFIG_FILE: &str = "config.json";
/// Tokenizer file name.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Generation ids file name.
pub const GEN_CONFIG_FILE: &str = "gen_config.json";

/// Where a checkpoint's weights are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// `model.safetensors`.
    Single(PathBuf),
    /// `model.safetensors.index.json` (its shards sit next to it).
    Sharded(PathBuf),
}

impl Weights {
    /// The weights file (single file or index).
    pub fn path(&self) -> &Path {
        match self {
            Self::Single(p) | Self::Sharded(p) => p,
        }
    }

    /// Finds the weights in `dir`; an index wins over a single file, as in
    /// [`Checkpoint::open`].
    fn discover(dir: &Path, model: &str) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        if index.is_file() {
            Ok(Self::Sharded(index))
        } else if single.is_file() {
            Ok(Self::Single(single))
        } else {
            Err(Error::Layout {
                path: dir.to_path_buf(),
                message: format!("no {model} weights: expected `{SINGLE_FILE}` or `{INDEX_FILE}` + shards"),
            })
        }
    }
}

/// Files of a HeartMuLa checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulaPaths {
    /// The model folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The weights.
    pub weights: Weights,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `gen_config.json`.
    pub gen_config: PathBuf,
}

impl MulaPaths {
    /// Discovers the files of the HeartMuLa folder `mula_dir`; `tokenizer` and
    /// `gen_config`, when given, must exist and are used as they are.
    pub fn discover(mula_dir: &Path, tokenizer: Option<&Path>, gen_config: Option<&Path>) -> Result<Self> {
        require_dir(mula_dir, "HeartMuLa")?;
        Ok(Self {
            dir: mula_dir.to_path_buf(),
            config: require_config(mula_dir, "HeartMuLa")?,
            weights: Weights::discover(mula_dir, "HeartMuLa")?,
            tokenizer: shared_file(mula_dir, TOKENIZER_FILE, tokenizer)?,
            gen_config: shared_file(mula_dir, GEN_CONFIG_FILE, gen_config)?,
        })
    }
}

/// Files of a HeartCodec checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPaths {
    /// The model folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The weights.
    pub weights: Weights,
}

impl CodecPaths {
    /// Discovers the files of the HeartCodec folder `dir`.
    pub fn discover(dir: &Path) -> Result<Self> {
        require_dir(dir, "HeartCodec")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config: require_config(dir, "HeartCodec")?,
            weights: Weights::discover(dir, "HeartCodec")?,
        })
    }
}

fn require_dir(dir: &Path, model: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Layout {
            path: dir.to_path_buf(),
            message: format!("not a directory (expected the {model} checkpoint folder)"),
        })
    }
}

fn require_config(dir: &Path, model: &str) -> Result<PathBuf> {
    let path = dir.join(CONFIG_FILE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Layout {
            path: dir.to_path_buf(),
            message: format!("no `{CONFIG_FILE}` (expected the {model} config next to the weights)"),
        })
    }
}

/// A file shared between models: explicit path, else `dir/name`, else `dir/../name`.
fn shared_file(dir: &Path, name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::Layout {
                path: path.to_path_buf(),
                message: format!("the given `{name}` does not exist or is not a file"),
            })
        };
    }
    let inside = dir.join(name);
    if inside.is_file() {
        return Ok(inside);
    }
    // `parent()` of "." or ".." is not the parent folder; `..` always is.
    let up = match (dir.file_name(), dir.parent()) {
        (Some(_), Some(parent)) => parent.join(name),
        _ => dir.join("..").join(name),
    };
    if up.is_file() {
        return Ok(up);
    }
    Err(Error::Layout {
        path: dir.to_path_buf(),
        message: format!("no `{name}` in this folder or its parent; pass its path explicitly"),
    })
}

/// A validated HeartMuLa checkpoint with its configs and tokenizer.
#[derive(Debug)]
pub struct MulaCheckpoint {
    /// Where everything came from.
    pub paths: MulaPaths,
    /// The resolved model config.
    pub config: MulaConfig,
    /// Special ids.
    pub gen_config: GenConfig,
    /// The memory-mapped weights (validated against `config`).
    pub checkpoint: Checkpoint,
    /// The loaded tokenizer (its ids fit `config.text_vocab_size`).
    pub tokenizer: TextTokenizer,
}

impl MulaCheckpoint {
    /// Reads the configs, maps the weights, loads the tokenizer and validates
    /// everything against `config.json`.
    pub fn open(paths: MulaPaths) -> Result<Self> {
        let config = MulaConfig::from_file(&paths.config)?;
        let gen_config = GenConfig::from_file(&paths.gen_config)?;
        gen_config.check_against(&config).map_err(|message| Error::Config {
            path: paths.gen_config.clone(),
            message,
        })?;
        let checkpoint = Checkpoint::open(&paths.dir)?;
        tensors::validate_mula(&checkpoint, &config)?;
        let tokenizer = TextTokenizer::from_file(&paths.tokenizer)?;
        if tokenizer.vocab_size() > config.text_vocab_size {
            return Err(Error::Tokenizer {
                path: paths.tokenizer.clone(),
                message: format!(
                    "{} tokens (with special tokens) but config.json has text_vocab_size {}: ids would index past \
                     text_embeddings",
                    tokenizer.vocab_size(),
                    config.text_vocab_size
                ),
            });
        }
        Ok(Self {
            paths,
            config,
            gen_config,
            checkpoint,
            tokenizer,
        })
    }

    /// Discovers and opens in one step (see [`MulaPaths::discover`]).
    pub fn discover_and_open(mula_dir: &Path, tokenizer: Option<&Path>, gen_config: Option<&Path>) -> Result<Self> {
        Self::open(MulaPaths::discover(mula_dir, tokenizer, gen_config)?)
    }

    /// A prompt builder using this checkpoint's tokenizer, ids and codebook count.
    pub fn prompt_builder(&self) -> PromptBuilder<'_> {
        PromptBuilder::new(&self.tokenizer, self.gen_config, self.config.audio_num_codebooks)
    }
}

/// A validated HeartCodec checkpoint with its config.
#[derive(Debug)]
pub struct CodecCheckpoint {
    /// Where everything came from.
    pub paths: CodecPaths,
    /// The codec config.
    pub config: CodecConfig,
    /// The memory-mapped weights (validated against `config`).
    pub checkpoint: Checkpoint,
}

impl CodecCheckpoint {
    /// Reads the config, maps the weights and validates them.
    pub fn open(paths: CodecPaths) -> Result<Self> {
        let config = CodecConfig::from_file(&paths.config)?;
        let checkpoint = Checkpoint::open(&paths.dir)?;
        tensors::validate_codec(&checkpoint, &config)?;
        Ok(Self {
            paths,
            config,
            checkpoint,
        })
    }

    /// Discovers and opens in one step.
    pub fn discover_and_open(dir: &Path) -> Result<Self> {
        Self::open(CodecPaths::discover(dir)?)
    }
}
