//! Where TensorRT engines built at run time for a portable (`onnx`) engine
//! folder are cached: a per-user cache, never the engine folder itself, which
//! may be read-only, shared between users, or downloaded (nothing is written
//! into an engine folder at run time).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The cache folder for engines built from `engine_dir`:
/// `<cache home>/heart/tensorrt/<16 hex digits of SHA-256 of the folder's
/// absolute path>`, where the cache home is `XDG_CACHE_HOME`, else
/// `$HOME/.cache`, else the system temp folder. One folder per engine folder,
/// so two engine folders never share (or overwrite) each other's engines.
pub fn tensorrt_cache_dir(engine_dir: &Path) -> PathBuf {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    home.join("heart").join("tensorrt").join(folder_key(engine_dir))
}

fn folder_key(engine_dir: &Path) -> String {
    let absolute = engine_dir
        .canonicalize()
        .unwrap_or_else(|_| std::path::absolute(engine_dir).unwrap_or_else(|_| engine_dir.to_path_buf()));
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_folder_gets_its_own_cache_outside_it() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let ca = tensorrt_cache_dir(&a);
        assert!(!ca.starts_with(&a), "{}", ca.display());
        assert!(ca.parent().unwrap().ends_with("heart/tensorrt"), "{}", ca.display());
        assert_eq!(ca.file_name().unwrap().len(), 16);
        assert_ne!(ca, tensorrt_cache_dir(&b));
        assert_eq!(
            ca,
            tensorrt_cache_dir(&root.path().join("b/../a")),
            "same folder, same cache"
        );
    }
}
