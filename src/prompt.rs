//! Text tokenizer and HeartMuLa prompt construction (spec §3.1), bit-exact with
//! upstream's `HeartMuLaGenPipeline.preprocess`.
//!
//! A prompt is `tags` (lower-cased, wrapped in `<tag>…</tag>`), one reserved MuQ
//! row, then `lyrics` (lower-cased), each segment fixed up to start with BOS and
//! end with EOS. Every row of the backbone input has `n_codebooks + 1` columns:
//! the audio codebooks first, the text id last. Prompt rows use only the text
//! column (mask 1 there, 0 on audio columns); the MuQ row holds id 0 but is
//! masked in, and the model overwrites its embedding.
//!
//! With classifier-free guidance (`cfg_scale != 1.0`) the whole prompt is
//! duplicated into a batch of 2 (row 0 conditional, row 1 unconditional); the
//! rows differ only in which embeddings the model uses, not in their ids.
//!
//! Note on `muq_idx`: the fixtures (and the spec) place the MuQ row at
//! `len(tags_ids)`. One upstream revision computes `len(tags)` on the *string*
//! instead; the fixtures are the definition used here.

use std::path::{Path, PathBuf};

use crate::config::GenConfig;
use crate::error::{Error, Result};

/// A HF `tokenizers` tokenizer loaded from `tokenizer.json`.
#[derive(Clone)]
pub struct TextTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl TextTokenizer {
    /// Largest `tokenizer.json` read (Llama-3's is 9 MB).
    pub const MAX_FILE_BYTES: u64 = 256 << 20;

    /// Loads a `tokenizer.json`. The file may come from a stranger's engine
    /// folder: its size is bounded, and the `tokenizers` crate panics on some
    /// malformed files (an `expect` in its decoder deserializer, found by
    /// `tests/fuzz_readers.rs`), so a panic there is caught and reported as a
    /// load error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |message: String| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let size = std::fs::metadata(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if size > Self::MAX_FILE_BYTES {
            return Err(err(format!(
                "cannot load: {size} bytes, above the limit of {} bytes",
                Self::MAX_FILE_BYTES
            )));
        }
        let loaded = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(path)).map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown error");
            err(format!("cannot load: malformed tokenizer file ({what})"))
        })?;
        let inner = loaded.map_err(|e| err(format!("cannot load: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            inner,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Vocabulary size including added (special) tokens: every id it can emit
    /// is below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `tokenizer.encode(text).ids` with the post-processor's special tokens
    /// (Python's default `add_special_tokens=True`).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self.inner.encode(text, true).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: format!("cannot encode {text:?}: {e}"),
        })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }
}

/// Batch size for a CFG scale: 2 (conditional + unconditional) unless it is exactly 1.
pub fn cfg_batch(cfg_scale: f32) -> usize {
    if cfg_scale == 1.0 { 1 } else { 2 }
}

/// Upstream's tag normalisation: lower-case (Unicode full mapping, as Python's
/// `str.lower`), then `<tag>` prepended / `</tag>` appended unless already there.
/// Whitespace and newlines are kept.
pub fn process_tags(tags: &str) -> String {
    let mut out = tags.to_lowercase();
    if !out.starts_with("<tag>") {
        out.insert_str(0, "<tag>");
    }
    if !out.ends_with("</tag>") {
        out.push_str("</tag>");
    }
    out
}

/// Upstream's lyrics normalisation: lower-case only.
pub fn process_lyrics(lyrics: &str) -> String {
    lyrics.to_lowercase()
}

/// Prepends `bos` unless the ids already start with it, appends `eos` unless they
/// already end with it (an empty list gets both).
pub fn with_bos_eos(mut ids: Vec<i64>, bos: i64, eos: i64) -> Vec<i64> {
    if ids.first() != Some(&bos) {
        ids.insert(0, bos);
    }
    if ids.last() != Some(&eos) {
        ids.push(eos);
    }
    ids
}

/// Resolves a tags/lyrics argument the way upstream does: if it names an existing
/// file, its UTF-8 contents (nothing stripped); otherwise the string itself.
///
/// Upstream reads the file in Python text mode, which turns `\r\n` and lone `\r`
/// into `\n`; the same translation is applied here so prompts match.
pub fn read_text_arg(arg: &str) -> Result<String> {
    let path = Path::new(arg);
    if !path.is_file() {
        return Ok(arg.to_string());
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(universal_newlines(&text))
}

/// Python's universal-newlines read translation.
fn universal_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// A built prompt: the text ids of both segments, the batch size and the row
/// width. Tensors are produced on demand as flat row-major `i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Tag ids, BOS … EOS (rows `0..muq_idx`).
    pub tags_ids: Vec<i64>,
    /// Lyrics ids, BOS … EOS (rows `muq_idx + 1 ..`).
    pub lyrics_ids: Vec<i64>,
    /// 1, or 2 with CFG (row 0 conditional, row 1 unconditional).
    pub batch: usize,
    /// Audio codebooks per row; the text column is column `n_codebooks`.
    pub n_codebooks: usize,
}

impl Prompt {
    /// Prompt length `P = len(tags) + 1 + len(lyrics)`.
    pub fn prompt_len(&self) -> usize {
        self.tags_ids.len() + 1 + self.lyrics_ids.len()
    }

    /// Row whose embedding is replaced by the MuQ projection (cond) or the
    /// unconditional embedding (uncond).
    pub fn muq_idx(&self) -> usize {
        self.tags_ids.len()
    }

    /// Columns per row (`n_codebooks + 1`).
    pub fn columns(&self) -> usize {
        self.n_codebooks + 1
    }

    /// The text column of every row `[P]` (0 at the MuQ row).
    pub fn text_ids(&self) -> Vec<i64> {
        let mut ids = Vec::with_capacity(self.prompt_len());
        ids.extend_from_slice(&self.tags_ids);
        ids.push(0);
        ids.extend_from_slice(&self.lyrics_ids);
        ids
    }

    /// Token matrix `[B, P, n_codebooks + 1]`: audio columns 0, text column last.
    pub fn tokens(&self) -> Vec<i64> {
        let row = self.columns();
        let one: Vec<i64> = self
            .text_ids()
            .into_iter()
            .flat_map(|id| std::iter::repeat_n(0, row - 1).chain(std::iter::once(id)))
            .collect();
        one.repeat(self.batch)
    }

    /// Mask `[B, P, n_codebooks + 1]`: 1 on the text column of every row
    /// (the MuQ row included), 0 on audio columns.
    pub fn tokens_mask(&self) -> Vec<i64> {
        let row = self.columns();
        (0..self.batch * self.prompt_len() * row)
            .map(|i| i64::from(i % row == row - 1))
            .collect()
    }

    /// Positions `[B, P]`: `0..P` per batch row.
    pub fn positions(&self) -> Vec<i64> {
        let p = self.prompt_len() as i64;
        (0..self.batch).flat_map(|_| 0..p).collect()
    }

    /// `muq_idx` per batch row `[B]`.
    pub fn muq_indices(&self) -> Vec<i64> {
        vec![self.muq_idx() as i64; self.batch]
    }
}

/// Builds prompts with one tokenizer and the checkpoint's special ids.
#[derive(Debug, Clone, Copy)]
pub struct PromptBuilder<'a> {
    tokenizer: &'a TextTokenizer,
    gen_config: GenConfig,
    n_codebooks: usize,
}

impl<'a> PromptBuilder<'a> {
    /// A builder for a model with `n_codebooks` audio codebooks
    /// (`MulaConfig::audio_num_codebooks`).
    pub fn new(tokenizer: &'a TextTokenizer, gen_config: GenConfig, n_codebooks: usize) -> Self {
        Self {
            tokenizer,
            gen_config,
            n_codebooks,
        }
    }

    /// Tag ids: [`process_tags`], encode, BOS/EOS fix-up.
    pub fn tags_ids(&self, tags: &str) -> Result<Vec<i64>> {
        self.segment(&process_tags(tags))
    }

    /// Lyrics ids: [`process_lyrics`], encode, BOS/EOS fix-up.
    pub fn lyrics_ids(&self, lyrics: &str) -> Result<Vec<i64>> {
        self.segment(&process_lyrics(lyrics))
    }

    fn segment(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.tokenizer.encode(text)?;
        Ok(with_bos_eos(
            ids,
            self.gen_config.text_bos_id,
            self.gen_config.text_eos_id,
        ))
    }

    /// The full prompt for raw (not yet normalised) tags and lyrics strings.
    /// Use [`read_text_arg`] first for command-line arguments that may be files.
    pub fn build(&self, tags: &str, lyrics: &str, cfg_scale: f32) -> Result<Prompt> {
        Ok(Prompt {
            tags_ids: self.tags_ids(tags)?,
            lyrics_ids: self.lyrics_ids(lyrics)?,
            batch: cfg_batch(cfg_scale),
            n_codebooks: self.n_codebooks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lowercased_and_wrapped_once() {
        assert_eq!(process_tags("Piano, Happy"), "<tag>piano, happy</tag>");
        assert_eq!(process_tags("<TAG>Rock</TAG>"), "<tag>rock</tag>");
        assert_eq!(process_tags("<tag>rock"), "<tag>rock</tag>");
        assert_eq!(process_tags(""), "<tag></tag>");
        assert_eq!(process_tags("piano,happy\n"), "<tag>piano,happy\n</tag>");
    }

    #[test]
    fn lowercase_matches_python_str_lower_on_special_cases() {
        // Python: "İstanbul".lower() == "i\u0307stanbul"; final sigma; ß unchanged.
        assert_eq!(process_lyrics("İstanbul"), "i\u{307}stanbul");
        assert_eq!(process_lyrics("ΣΑΣ"), "σας");
        assert_eq!(process_lyrics("STRAßE"), "straße");
    }

    #[test]
    fn bos_eos_fixup_adds_only_what_is_missing() {
        assert_eq!(with_bos_eos(vec![], 1, 2), [1, 2]);
        assert_eq!(with_bos_eos(vec![1, 5], 1, 2), [1, 5, 2]);
        assert_eq!(with_bos_eos(vec![5, 2], 1, 2), [1, 5, 2]);
        assert_eq!(with_bos_eos(vec![1, 5, 2], 1, 2), [1, 5, 2]);
    }

    #[test]
    fn prompt_tensors_have_text_last_and_duplicate_for_cfg() {
        let p = Prompt {
            tags_ids: vec![10, 11],
            lyrics_ids: vec![10, 12, 11],
            batch: 2,
            n_codebooks: 2,
        };
        assert_eq!(p.prompt_len(), 6);
        assert_eq!(p.muq_idx(), 2);
        assert_eq!(p.text_ids(), [10, 11, 0, 10, 12, 11]);
        let one = [0, 0, 10, 0, 0, 11, 0, 0, 0, 0, 0, 10, 0, 0, 12, 0, 0, 11];
        assert_eq!(p.tokens(), [one, one].concat());
        assert_eq!(p.tokens_mask()[..6], [0, 0, 1, 0, 0, 1]);
        assert_eq!(p.tokens_mask().iter().sum::<i64>(), 12);
        assert_eq!(p.positions(), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
        assert_eq!(p.muq_indices(), [2, 2]);
    }

    #[test]
    fn cfg_batch_is_two_unless_exactly_one() {
        assert_eq!(cfg_batch(1.0), 1);
        assert_eq!(cfg_batch(1.5), 2);
        assert_eq!(cfg_batch(0.5), 2);
    }

    #[test]
    fn text_arg_is_file_contents_with_python_newlines_or_the_string() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tags.txt");
        std::fs::write(&file, "piano,happy\r\nsad\rend\n").unwrap();
        assert_eq!(
            read_text_arg(file.to_str().unwrap()).unwrap(),
            "piano,happy\nsad\nend\n"
        );
        assert_eq!(read_text_arg("piano, happy").unwrap(), "piano, happy");
        // A directory is not a file: the argument is used as text.
        assert_eq!(
            read_text_arg(dir.path().to_str().unwrap()).unwrap(),
            dir.path().to_str().unwrap()
        );
    }
}
