//! The sysfs tree of `--fixture`: one per process, in RAM-backed scratch space (`/dev/shm`), removed
//! at exit and, after a kill, by the next plugin that starts.
//!
//! Each tree holds an exclusive lock on its `.plugin.lock` for as long as its process lives (the OS
//! drops it when the process dies, even by `kill -9`). At start, before writing its own tree, the
//! plugin removes every `hal-fixture-*` tree in the scratch directory whose lock it can take: those are
//! trees of plugins that died. Trees without a lock file (`hal-probe`'s, tests', or one being written)
//! are left alone, so only the plugin's own dead trees are ever removed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file in each tree.
const LOCK: &str = ".plugin.lock";
/// The prefix of fixture trees (as `hal_mock::FixtureMachine::materialize` names them).
const PREFIX: &str = "hal-fixture-";

/// A fixture tree owned by this process; removed when dropped.
#[derive(Debug)]
pub struct FixtureTree {
    // Declared first: the lock is released only after the tree is gone.
    dir: tempfile::TempDir,
    _lock: File,
}

impl FixtureTree {
    /// Removes dead plugins' trees from `parent` (the scratch directory, see
    /// `hal_mock::scratch_dir`), then writes `machine`'s tree into a new directory there, locked
    /// before anything is written into it.
    pub fn create(
        machine: &driver::fixtures::FixtureMachine,
        parent: &Path,
    ) -> io::Result<FixtureTree> {
        for removed in remove_dead_trees(parent)? {
            tracing::info!(tree = %removed.display(), "removed the fixture tree of a plugin that died");
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", machine.name))
            .tempdir_in(parent)?;
        // Locked under a temp name, then renamed: a visible lock file is always held by its owner.
        let temp = dir.path().join(".plugin.lock.tmp");
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The inner error itself (an EPERM from a seccomp profile says so), not std's summary of it.
        lock.try_lock().map_err(io::Error::from)?;
        fs::rename(&temp, dir.path().join(LOCK))?;
        machine.render(dir.path())?;
        Ok(FixtureTree { dir, _lock: lock })
    }

    /// The tree's root (holds `sys/`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// The scratch directory fixture trees go to: `$TMPDIR` when set, else `/dev/shm` where there is
/// one, else the system temporary directory (as `hal_mock::scratch_dir`).
pub fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    match std::env::var_os("TMPDIR") {
        None if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

/// Removes the `hal-fixture-*` directories of `parent` that have a lock file nobody holds; returns
/// them. Links are never followed.
pub fn remove_dead_trees(parent: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries.filter_map(Result::ok) {
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if !ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let tree = entry.path();
        let lock = match OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
            .open(tree.join(LOCK))
        {
            Ok(lock) => lock,
            Err(_) => continue,
        };
        if lock.try_lock().is_ok() {
            match fs::remove_dir_all(&tree) {
                Ok(()) => removed.push(tree),
                Err(error) => {
                    tracing::warn!(tree = %tree.display(), %error, "removing a dead fixture tree failed");
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dead_trees_are_removed_live_and_foreign_ones_kept_and_a_tree_goes_at_drop() {
        let parent = hal_mock::scratch_dir("fixture-tree-test-").unwrap();
        let machine = hal_mock::by_name("xeon").unwrap();
        let live = FixtureTree::create(&machine, parent.path()).unwrap();
        assert!(live.root().join("sys").is_dir());
        // What a kill -9 leaves: a tree with its lock file and no holder.
        let dead = parent.path().join("hal-fixture-xeon-dead");
        fs::create_dir_all(dead.join("sys")).unwrap();
        fs::write(dead.join(LOCK), "").unwrap();
        // hal-probe's tree, or one being written: no lock file.
        let foreign = parent.path().join("hal-fixture-xeon-probe");
        fs::create_dir_all(foreign.join("sys")).unwrap();

        let second = FixtureTree::create(&machine, parent.path()).unwrap();
        assert!(
            !dead.exists(),
            "the dead tree is removed before the new one is written"
        );
        assert!(live.root().is_dir(), "a live plugin's tree is kept");
        assert!(
            foreign.is_dir(),
            "trees without a lock file are not the plugin's"
        );
        assert_ne!(live.root(), second.root(), "one tree per process");

        let (first_root, second_root) = (live.root().to_owned(), second.root().to_owned());
        drop(live);
        drop(second);
        assert!(!first_root.exists() && !second_root.exists());
        assert_eq!(
            remove_dead_trees(parent.path()).unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
