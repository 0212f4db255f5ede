//! The calibration prompt set: tag + lyrics prompts the calibration run feeds
//! the higher-precision model to record activation ranges.
//!
//! A set is a folder holding `prompts.toml`, a list of `[[prompt]]` tables:
//!
//! ```toml
//! [[prompt]]
//! name = "en-folk-short"            # unique; ASCII letters, digits, `-`, `_`
//! language = "en"                   # ISO 639 code of the lyrics; "zxx" = none
//! tags = "Folk, Acoustic Guitar"    # non-empty, as passed to the prompt builder
//! lyrics = '''
//! [Verse]
//! ...
//! '''
//! ```
//!
//! `lyrics` must be present; it is empty exactly when `language` is `zxx`
//! (instrumental). Unknown keys are errors, so a typo cannot silently drop a
//! field. The SHA-256 of the file's bytes identifies the set in the manifest.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::sha256_bytes;
use crate::{Error, Result};

/// File name of the prompt list inside a calibration folder.
pub const PROMPTS_FILE: &str = "prompts.toml";

/// Language code of a prompt without lyrics (ISO 639-2 "no linguistic content").
pub const NO_LYRICS: &str = "zxx";

/// One calibration prompt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPrompt {
    /// Unique name, used to label per-prompt statistics.
    pub name: String,
    /// ISO 639 code of the lyrics, [`NO_LYRICS`] for an instrumental prompt.
    pub language: String,
    /// Comma-separated tags, raw (the prompt builder lower-cases and wraps them).
    pub tags: String,
    /// Lyrics with section markers such as `[Verse]`, raw; empty when instrumental.
    pub lyrics: String,
}

/// The file's top level.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptsFile {
    #[serde(default)]
    prompt: Vec<CalibrationPrompt>,
}

/// A validated calibration set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalibrationSet {
    path: PathBuf,
    prompts: Vec<CalibrationPrompt>,
    sha256: String,
}

impl CalibrationSet {
    /// Loads and validates `dir/prompts.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(PROMPTS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&path, &bytes)
    }

    /// Parses and validates the bytes of a prompts file; `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let file: PromptsFile =
            toml::from_str(text).map_err(|e| bad(format!("not a valid calibration prompt list: {e}")))?;
        if file.prompt.is_empty() {
            return Err(bad("no [[prompt]] entries".to_string()));
        }
        let mut first_use: HashMap<&str, usize> = HashMap::new();
        for (i, p) in file.prompt.iter().enumerate() {
            let at = |message: String| bad(format!("prompt #{} `{}`: {message}", i + 1, p.name));
            check_prompt(p).map_err(at)?;
            if let Some(first) = first_use.insert(&p.name, i + 1) {
                return Err(at(format!("duplicate name, first used by prompt #{first}")));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            sha256: sha256_bytes(bytes),
            prompts: file.prompt,
        })
    }

    /// The prompts file this set was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The prompts, in file order.
    pub fn prompts(&self) -> &[CalibrationPrompt] {
        &self.prompts
    }

    /// Lower-case hex SHA-256 of the prompts file, for the manifest.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The distinct lyric languages, without [`NO_LYRICS`].
    pub fn languages(&self) -> BTreeSet<&str> {
        self.prompts
            .iter()
            .map(|p| p.language.as_str())
            .filter(|&l| l != NO_LYRICS)
            .collect()
    }
}

/// Field rules of one prompt; the message names the field.
fn check_prompt(p: &CalibrationPrompt) -> std::result::Result<(), String> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if p.name.is_empty() || !p.name.chars().all(name_ok) {
        return Err("`name` must be non-empty ASCII letters, digits, `-` or `_`".to_string());
    }
    let lang_ok = (2..=3).contains(&p.language.len()) && p.language.chars().all(|c| c.is_ascii_lowercase());
    if !lang_ok {
        return Err(format!(
            "`language` must be a 2- or 3-letter lower-case ISO 639 code, got {:?}",
            p.language
        ));
    }
    if p.tags.trim().is_empty() {
        return Err("empty `tags`".to_string());
    }
    match (p.lyrics.trim().is_empty(), p.language == NO_LYRICS) {
        (true, false) => Err(format!(
            "empty `lyrics` needs `language = \"{NO_LYRICS}\"`, got {:?}",
            p.language
        )),
        (false, true) => Err(format!(
            "`language = \"{NO_LYRICS}\"` means no lyrics, but `lyrics` is not empty"
        )),
        _ => Ok(()),
    }
}
