//! Output folders that appear complete or not at all: everything is written into
//! a hidden temporary sibling, which is renamed over the target at the end. A
//! failed or interrupted build leaves the previous folder (if any) untouched and
//! removes its temporary folder.
//!
//! A build killed outright (`kill -9`, power loss) cannot clean up, so each
//! temporary folder is held under an advisory lock (`flock`) for the life of
//! the process that owns it; the kernel drops the lock when that process dies.
//! The next build with the same target removes every temporary sibling whose
//! lock it can take (its owner is gone) and leaves those of builds still
//! running.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{BuildError, Context, Result};

/// Temporary folders in flight, removed by the Ctrl-C handler.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Makes Ctrl-C remove every temporary folder in flight before exiting (130),
/// so an interrupted build leaves nothing half-written.
pub fn clean_up_on_interrupt() -> Result<()> {
    ctrlc::set_handler(|| {
        if let Ok(pending) = PENDING.lock() {
            for dir in pending.iter() {
                remove_while_written(dir);
            }
        }
        eprintln!("\nheart-build: interrupted; nothing was written");
        heart_backend::library::exit_now(130);
    })?;
    Ok(())
}

/// Removes `dir` while the build thread may still be writing into it: a file
/// created between the listing and the final `rmdir` makes one attempt fail
/// (`ENOTEMPTY`, which left the folder behind in about one interrupt in two),
/// so it retries for up to a second.
fn remove_while_written(dir: &Path) {
    for _ in 0..1000 {
        if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn track(dir: &Path, pending: bool) {
    if let Ok(mut list) = PENDING.lock() {
        list.retain(|p| p != dir);
        if pending {
            list.push(dir.to_path_buf());
        }
    }
}

/// A temporary folder that becomes `target` on [`AtomicDir::commit`] and is
/// deleted if dropped uncommitted.
#[derive(Debug)]
pub struct AtomicDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// Holds the `flock` that marks `tmp` (and, after commit, the folders it
    /// moves) as owned by this live process.
    _locks: Vec<File>,
}

impl AtomicDir {
    /// Prepares a temporary folder next to `target`. Fails if `target` exists
    /// and `force` is false.
    pub fn new(target: &Path, force: bool) -> Result<Self> {
        if target.exists() && !force {
            return Err(BuildError::Request(format!(
                "{} already exists (pass --force to replace it)",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .ok_or_else(|| BuildError::Request(format!("{} is not a folder name", target.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let prefix = temp_prefix(&name);
        remove_abandoned(&parent, &prefix)?;
        let tmp = parent.join(format!("{prefix}{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        track(&tmp, true);
        let lock = lock(&tmp)?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            committed: false,
            _locks: vec![lock],
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the finished folder into place, replacing an older one.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            // Locked before it is moved aside, so a concurrent build does not
            // take it for abandoned while this one still needs it.
            self._locks.push(lock(&self.target)?);
            let old = self.tmp.with_extension("old");
            std::fs::rename(&self.target, &old).with_context(|| format!("moving aside {}", self.target.display()))?;
            std::fs::rename(&self.tmp, &self.target)
                .with_context(|| format!("renaming into {}", self.target.display()))?;
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        } else {
            std::fs::rename(&self.tmp, &self.target)
                .with_context(|| format!("renaming into {}", self.target.display()))?;
        }
        self.committed = true;
        track(&self.tmp, false);
        Ok(self.target.clone())
    }
}

/// Name prefix of the temporary siblings of a target named `name`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Takes the advisory lock on folder `dir`, held until the returned file is
/// dropped or the process ends.
fn lock(dir: &Path) -> Result<File> {
    let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    file.try_lock()
        .map_err(std::io::Error::from)
        .with_context(|| format!("locking {} (is another heart-build writing it?)", dir.display()))?;
    Ok(file)
}

/// Removes the temporary siblings (`prefix*` in `parent`) of builds that died
/// without cleaning up: those whose lock can be taken.
fn remove_abandoned(parent: &Path, prefix: &str) -> Result<()> {
    let entries = std::fs::read_dir(parent).with_context(|| format!("listing {}", parent.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else { continue };
        if file.try_lock().is_ok() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {} left by an interrupted build", path.display()))?;
        }
    }
    Ok(())
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            track(&self.tmp, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_drop_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("engine");
        let dir = AtomicDir::new(&target, false).unwrap();
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        assert!(!target.exists(), "nothing visible before commit");
        dir.commit().unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"1");

        let err = AtomicDir::new(&target, false).unwrap_err().to_string();
        assert!(err.contains("already exists (pass --force"), "{err}");

        let dir = AtomicDir::new(&target, true).unwrap();
        let tmp = dir.path().to_path_buf();
        std::fs::write(tmp.join("b"), b"2").unwrap();
        drop(dir);
        assert!(!tmp.exists(), "an uncommitted build leaves no temp folder");
        assert!(target.join("a").exists(), "and keeps the previous folder");

        let dir = AtomicDir::new(&target, true).unwrap();
        std::fs::write(dir.path().join("b"), b"2").unwrap();
        dir.commit().unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            1,
            "no leftovers next to the target"
        );
    }

    #[test]
    fn abandoned_temporary_folders_are_removed_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("engine");
        let abandoned = root.path().join(".engine.tmp-999999999");
        std::fs::create_dir_all(abandoned.join("sub")).unwrap();
        std::fs::write(abandoned.join("manifest.toml"), b"half").unwrap();
        std::fs::create_dir(root.path().join(".engine.tmp-999999999.old")).unwrap();
        let live = root.path().join(".engine.tmp-live");
        std::fs::create_dir(&live).unwrap();
        let held = lock(&live).unwrap();
        let other = root.path().join(".other.tmp-1");
        std::fs::create_dir(&other).unwrap();

        let dir = AtomicDir::new(&target, false).unwrap();
        assert!(!abandoned.exists(), "a dead build's folder is removed");
        assert!(!root.path().join(".engine.tmp-999999999.old").exists());
        assert!(live.exists(), "a running build's folder is kept");
        assert!(other.exists(), "another target's folder is not touched");
        drop(held);
        drop(dir);
    }
}
