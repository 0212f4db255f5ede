//! The shipped calibration set loads and is as varied as promised; every way a
//! prompts file can be wrong is an error naming the file and the entry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use heart::Error;
use heart::manifest::sha256_bytes;
use heart::quant::calibration::{CalibrationSet, NO_LYRICS, PROMPTS_FILE};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration")
}

#[test]
fn shipped_set_is_large_and_varied() {
    let set = CalibrationSet::load(&shipped_dir()).unwrap();
    let prompts = set.prompts();
    assert!(prompts.len() >= 32, "{} prompts", prompts.len());
    let names: HashSet<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), prompts.len(), "names must be unique");
    let languages = set.languages();
    assert!(languages.len() >= 5, "languages {languages:?}");
    for lang in ["en", "zh", "ja", "ko", "es", "fr", "de", "pt"] {
        assert!(languages.contains(lang), "no `{lang}` prompt");
    }
    assert!(prompts.iter().any(|p| p.lyrics.is_empty() && p.language == NO_LYRICS));
    let lengths: Vec<usize> = prompts.iter().map(|p| p.lyrics.chars().count()).collect();
    assert!(lengths.iter().any(|&n| n > 0 && n < 60), "a short lyric");
    assert!(lengths.iter().any(|&n| n > 1000), "a long lyric");
    for marker in ["[Verse]", "[Chorus]", "[Bridge]", "[Intro]", "[Outro]"] {
        assert!(prompts.iter().any(|p| p.lyrics.contains(marker)), "no {marker}");
    }
}

#[test]
fn hash_is_the_sha256_of_the_file() {
    let set = CalibrationSet::load(&shipped_dir()).unwrap();
    let bytes = std::fs::read(shipped_dir().join(PROMPTS_FILE)).unwrap();
    assert_eq!(set.sha256(), sha256_bytes(&bytes));
    assert_eq!(set.sha256().len(), 64);
    assert_eq!(set.path(), shipped_dir().join(PROMPTS_FILE));
}

const GOOD: &str = r#"
[[prompt]]
name = "a"
language = "en"
tags = "Pop"
lyrics = "[Verse]\nla la"
"#;

/// The error of loading a folder whose prompts file is `text`.
fn load_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PROMPTS_FILE), text).unwrap();
    let err = CalibrationSet::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(PROMPTS_FILE), "{msg}");
    msg
}

fn assert_contains(msg: &str, fragment: &str) {
    assert!(msg.contains(fragment), "message {msg:?} lacks {fragment:?}");
}

#[test]
fn minimal_set_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PROMPTS_FILE), GOOD).unwrap();
    let set = CalibrationSet::load(dir.path()).unwrap();
    assert_eq!(set.prompts().len(), 1);
    assert_eq!(set.prompts()[0].lyrics, "[Verse]\nla la");
}

#[test]
fn duplicate_names_are_rejected() {
    let msg = load_err(&format!("{GOOD}{}", GOOD.replace("Pop", "Rock")));
    assert_contains(&msg, "prompt #2 `a`: duplicate name, first used by prompt #1");
}

#[test]
fn empty_tags_are_rejected() {
    let msg = load_err(&GOOD.replace("\"Pop\"", "\"  \""));
    assert_contains(&msg, "prompt #1 `a`: empty `tags`");
}

#[test]
fn lyrics_and_language_must_agree() {
    let msg = load_err(&GOOD.replace("\"[Verse]\\nla la\"", "\"\""));
    assert_contains(&msg, "empty `lyrics` needs `language = \"zxx\"`");
    let msg = load_err(&GOOD.replace("\"en\"", "\"zxx\""));
    assert_contains(&msg, "means no lyrics");
    let msg = load_err(&GOOD.replace("\"en\"", "\"English\""));
    assert_contains(&msg, "2- or 3-letter lower-case ISO 639 code, got \"English\"");
}

#[test]
fn bad_names_are_rejected() {
    let msg = load_err(&GOOD.replace("\"a\"", "\"a b\""));
    assert_contains(&msg, "prompt #1 `a b`: `name` must be");
}

#[test]
fn unknown_and_missing_fields_are_rejected() {
    let msg = load_err(&GOOD.replace("tags =", "tag ="));
    assert_contains(&msg, "unknown field `tag`");
    let msg = load_err(&GOOD.replace("lyrics = \"[Verse]\\nla la\"", ""));
    assert_contains(&msg, "missing field `lyrics`");
}

#[test]
fn empty_or_malformed_files_are_rejected() {
    assert_contains(&load_err("# nothing\n"), "no [[prompt]] entries");
    assert_contains(&load_err("[[prompt]\n"), "not a valid calibration prompt list");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = CalibrationSet::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_contains(&err.to_string(), &dir.path().join(PROMPTS_FILE).display().to_string());
}
