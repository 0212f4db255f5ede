//! Dependencies point one way inside every crate too: no module of a
//! workspace crate reaches (through `crate::…` or `super::…` paths) a module
//! that reaches back to it. Checked at the crate's top-level modules and one
//! level below (`lm`, `lm::model`, ...); crate-level cycles are refused by
//! cargo itself.
//!
//! The scan is textual on purpose (no compiler internals): comments are
//! dropped, then every `crate::a::b` and `super::…::a` path names the longest
//! module it resolves to. Re-exports through `lib.rs` do not count as edges,
//! since the crate root is the parent of every module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose `src/` is checked (every member of the workspace).
const CRATES: [&str; 11] = [
    "src",
    "onnx-export/src",
    "backend/src",
    "runtime/src",
    "builder/src",
    "benches/src",
    "eval/src",
    "conform/src",
    "run/src",
    "serve/src",
    "tests/support/src",
];

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `[a, b]`, `a/mod.rs` → `[a]`, `lib.rs`/`main.rs` → `[]`;
/// `None` for binaries under `bin/`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    Some(parts)
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths (lower-case segments) following `prefix` in `text`.
fn paths_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    text.match_indices(prefix).filter_map(move |(i, _)| {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &text[i + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        Some(
            rest[..end]
                .split("::")
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_lowercase()))
                .collect(),
        )
    })
}

/// Module-level edges of the crate at `src`, truncated to `depth` segments.
fn edges(src: &Path, depth: usize) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .filter_map(|f| module_of(src, f).map(|m| (m, f.clone())))
        .collect();
    let known = |mut m: Module| {
        while !m.is_empty() && !modules.contains_key(&m) {
            m.pop();
        }
        m
    };
    let cut = |m: &Module| m[..m.len().min(depth)].to_vec();
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = strip_comments(&std::fs::read_to_string(file).unwrap());
        let mut targets = Vec::new();
        for path in paths_after(&text, "crate::") {
            targets.push(known(path.iter().map(|s| s.to_string()).collect()));
        }
        for path in paths_after(&text, "super::") {
            // `super` of `a/b.rs` and of `a/b/mod.rs` (both module `a::b`) is `a`.
            let mut base = module.clone();
            base.pop();
            let ups = path.iter().take_while(|s| **s == "super").count();
            base.truncate(base.len().saturating_sub(ups));
            base.extend(path[ups..].iter().map(|s| s.to_string()));
            targets.push(known(base));
        }
        for target in targets {
            if !target.is_empty() && cut(&target) != cut(module) {
                out.entry(cut(module)).or_default().insert(cut(&target));
            }
        }
    }
    out
}

/// Modules on a cycle, as `a -> b -> a` strings.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let reaches = |from: &Module, to: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            if &m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut found = Vec::new();
    for (a, targets) in graph {
        for b in targets {
            if a < b && reaches(b, a) {
                found.push(format!("{} -> {} -> … -> {}", a.join("::"), b.join("::"), a.join("::")));
            }
        }
    }
    found
}

#[test]
fn no_module_of_any_crate_imports_back_up() {
    let root = heart_test_support::workspace_root();
    let mut all = Vec::new();
    for krate in CRATES {
        for depth in [1, 2] {
            all.extend(
                cycles(&edges(&root.join(krate), depth))
                    .into_iter()
                    .map(|c| format!("{krate}: {c}")),
            );
        }
    }
    assert!(all.is_empty(), "import cycles:\n{}", all.join("\n"));
}

#[test]
fn the_scan_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::Thing;\n// crate::b is fine in a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "pub struct Thing;\nfn f() { super::a::g() }\n").unwrap();
    let found = cycles(&edges(src, 1));
    assert_eq!(found, vec!["a -> b -> … -> a".to_string()]);
    std::fs::write(src.join("b.rs"), "pub struct Thing;\n").unwrap();
    assert!(cycles(&edges(src, 1)).is_empty());
}
