//! Paths read from files a stranger may have written: the entries of an engine
//! folder's `manifest.toml`, the shard names of a checkpoint index, the
//! external-data locations inside ONNX graphs.
//!
//! Engine folders are shared between users like model files, so a path inside
//! one is untrusted input. The rule is the same everywhere: a path is relative,
//! written with `/` separators, has no empty, `.` or `..` component, and once
//! symlinks are resolved it still lies inside the folder it is relative to.
//! Anything else is refused before the file is opened.

use std::path::{Component, Path, PathBuf};

/// Checks the spelling of `path` (no file-system access): relative, `/`
/// separators, no empty, `.` or `..` component, no NUL. The message says
/// what is wrong, for the caller to prefix with the file and field.
pub fn check_relative(path: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("path `{}` {why}", path.escape_debug()));
    if path.is_empty() {
        return refuse("is empty");
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if path.contains('\\') {
        return refuse("contains `\\` (paths use `/` separators)");
    }
    if path.starts_with('/') || Path::new(path).is_absolute() || path.as_bytes().get(1) == Some(&b':') {
        return refuse("is absolute (paths must be relative to the folder)");
    }
    for component in path.split('/') {
        match component {
            "" => return refuse("has an empty component (`//` or a trailing `/`)"),
            "." => return refuse("has a `.` component (paths must be normalized)"),
            ".." => return refuse("has a `..` component (paths must stay inside the folder)"),
            _ => {}
        }
    }
    debug_assert!(Path::new(path).components().all(|c| matches!(c, Component::Normal(_))));
    Ok(())
}

/// `dir/relative` after [`check_relative`], refusing a path that a symlink
/// (the file itself or a folder on the way) leads out of `dir`. A path that
/// does not exist is returned as is: opening it reports the missing file.
pub fn resolve_inside(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    check_relative(relative)?;
    let joined = dir.join(relative);
    let Ok(real) = joined.canonicalize() else {
        return Ok(joined);
    };
    let root = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve folder {}: {e}", dir.display()))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "path `{}` is a symlink (or lies under one) that leads out of the folder, to {}",
            relative.escape_debug(),
            real.display()
        ));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "tokenizer.json",
            "draft/backbone.onnx",
            "trt/engines/a.engine",
            "a..b",
            ".hidden",
        ] {
            assert_eq!(check_relative(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_paths_that_could_leave_the_folder() {
        for (bad, why) in [
            ("../secret.txt", "`..` component"),
            ("draft/../../x", "`..` component"),
            ("..", "`..` component"),
            ("/etc/passwd", "absolute"),
            ("C:/x", "absolute"),
            ("a\\..\\b", "`\\`"),
            ("./a", "`.` component"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("", "empty"),
            ("a\0b", "NUL"),
        ] {
            let err = check_relative(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn refuses_symlinks_out_of_the_folder_and_keeps_those_inside() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("engine");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(root.path().join("secret.txt"), b"secret").unwrap();
        std::fs::write(dir.join("real.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.txt"), dir.join("tokenizer.json")).unwrap();
        std::os::unix::fs::symlink(root.path(), dir.join("up")).unwrap();
        std::os::unix::fs::symlink("real.json", dir.join("alias.json")).unwrap();

        let err = resolve_inside(&dir, "tokenizer.json").unwrap_err();
        assert!(err.contains("symlink") && err.contains("secret.txt"), "{err}");
        let err = resolve_inside(&dir, "up/secret.txt").unwrap_err();
        assert!(err.contains("leads out of the folder"), "{err}");
        assert_eq!(resolve_inside(&dir, "alias.json").unwrap(), dir.join("alias.json"));
        assert_eq!(resolve_inside(&dir, "sub/missing").unwrap(), dir.join("sub/missing"));
    }
}
