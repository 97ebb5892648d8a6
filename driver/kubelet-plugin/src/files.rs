//! Crash-safe file operations of the checkpoint and the CDI specs: atomic replacement through an unpredictable, exclusively
//! created temp file, private modes, moving a bad file aside, and removing what a crash left.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Mode of the directories created for the checkpoint.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the checkpoint and its temp files.
pub const FILE_MODE: u32 = 0o600;
/// How many bad files moved aside are kept (the newest); older ones are removed, so a checkpoint
/// that keeps going bad cannot fill the disk.
pub const KEEP_ASIDE: usize = 3;
/// How many temp names a write tries before giving up.
const TEMP_ATTEMPTS: u32 = 16;
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `O_NOFOLLOW`: a symlink at the path is an error (`ELOOP`), never followed.
fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits().cast_signed()
}

/// A name no other process can guess: SipHash with the process's random keys (seeded from the OS)
/// over the pid, the time and a counter.
fn unpredictable() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u64(TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones keep theirs).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Opens `path` for reading without following a symlink there, and without waiting: a FIFO put
/// there (even after the caller checked that it was a file) opens at once and reads as empty.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits().cast_signed())
        .open(path)
}

/// A step of [`write_atomically`], named in its errors and the point where tests inject faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the directory (and missing parents, mode 0700).
    CreateDir,
    /// Creating the temp file.
    Create,
    /// Writing the bytes into the temp file.
    Write,
    /// fsync of the temp file.
    Sync,
    /// Renaming the temp file over the final name.
    Rename,
    /// fsync of the directory.
    SyncDir,
}

impl Step {
    /// The action as a word for messages (`write`, `rename`, ...).
    pub fn action(self) -> &'static str {
        match self {
            Step::CreateDir => "create directory",
            Step::Create => "create",
            Step::Write => "write",
            Step::Sync => "sync",
            Step::Rename => "rename",
            Step::SyncDir => "sync directory",
        }
    }
}

/// A failed [`write_atomically`]: the step, the file or directory it concerned and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{} {}: {source}", step.action(), path.display())]
pub struct AtomicWriteError {
    /// Where it failed.
    pub step: Step,
    /// The temp file (create, write, sync), the final path (rename) or the directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Writes `bytes` to `path` through a new temp file in the same directory
/// (`.<name>.<random>.tmp`, created exclusively, never through a link, mode 0600), fsyncs it,
/// renames it over `path` and fsyncs the directory (and the parent of each directory it had to
/// create): a reader sees the old content or the new one,
/// never a partial one. `fault` runs before each [`Step`] (tests inject `ENOSPC` there). The temp
/// file is removed on failure. The one atomic-write helper of the plugin (checkpoint and CDI specs).
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    fault: &dyn Fn(Step) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    replace(path, bytes, fault, Durability::Synced)
}

/// Whether [`replace`] waits until the new content is on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync of the temp file before the rename and of the directory after it: the new content
    /// survives a power loss once the call returns.
    Synced,
    /// No fsync: readers (and a restarted process) see the old content or the new one, never a
    /// partial one, but a power loss may bring the old one back. For what a reboot makes moot
    /// (CDI specs in `/var/run/cdi`, records of device changes a reboot undoes).
    Unsynced,
}

/// [`write_atomically`], with the fsyncs only when `durability` is [`Durability::Synced`] (the
/// [`Step::Sync`] and [`Step::SyncDir`] faults run only then).
pub fn replace(
    path: &Path,
    bytes: &[u8],
    fault: &dyn Fn(Step) -> io::Result<()>,
    durability: Durability,
) -> Result<(), AtomicWriteError> {
    let synced = durability == Durability::Synced;
    let dir = parent_of(path);
    let failed = |step: Step, at: &Path| {
        let path = at.to_path_buf();
        move |source| AtomicWriteError { step, path, source }
    };
    // The directories this write creates (the checkpoint directory on the first record): each
    // is fsynced in its parent too, or a power loss could take the new file with its directory.
    let created: Vec<&Path> = match synced {
        true => dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
            .collect(),
        false => Vec::new(),
    };
    fault(Step::CreateDir)
        .and_then(|()| create_private_dir(dir))
        .map_err(failed(Step::CreateDir, dir))?;
    let name = file_name_of(path);
    let (temp, mut file) = fault(Step::Create)
        .and_then(|()| create_temp(dir, &name))
        .map_err(failed(Step::Create, dir))?;
    let result = (|| {
        fault(Step::Write)
            .and_then(|()| file.write_all(bytes))
            .map_err(failed(Step::Write, &temp))?;
        if synced {
            fault(Step::Sync)
                .and_then(|()| file.sync_data())
                .map_err(failed(Step::Sync, &temp))?;
        }
        fault(Step::Rename)
            .and_then(|()| fs::rename(&temp, path))
            .map_err(failed(Step::Rename, path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    if !synced {
        return Ok(());
    }
    fault(Step::SyncDir)
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(failed(Step::SyncDir, dir))?;
    for new in created {
        let parent = parent_of(new);
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(failed(Step::SyncDir, parent))?;
    }
    Ok(())
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(".{name}.{:016x}.tmp", unpredictable()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(no_follow())
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Removes the temp files of `path` that crashed writes left (`.<name>.*.tmp`); returns their paths.
/// Links and directories of that name are removed as entries, never followed.
pub fn remove_stale_temps(path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = parent_of(path);
    let prefix = format!(".{}.", file_name_of(path));
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let matches = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"));
        if !matches {
            continue;
        }
        let temp = entry.path();
        let result = if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&temp)
        } else {
            fs::remove_file(&temp)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => removed.push(temp),
        }
    }
    Ok(removed)
}

/// Renames `path` (whatever it is: a file, a directory, a link) to `<name>.bad-<stamp>-<random>`
/// beside it, keeps the [`KEEP_ASIDE`] newest such entries and removes older ones; returns the new
/// name. The stamp is the wall clock in nanoseconds, or one more than the newest stamp already there
/// when the clock is behind it (a step back, a wrong RTC at boot): the name order stays the order
/// of the moves, so the entry just moved aside is never the one pruned.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let dir = parent_of(path);
    let name = file_name_of(path);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let newest = aside_entries(dir, &name)
        .unwrap_or_default()
        .iter()
        .filter_map(|(n, _)| aside_stamp(n, &name))
        .max();
    let stamp = newest.map_or(now, |newest| now.max(newest.saturating_add(1)));
    let aside = dir.join(format!("{name}.bad-{stamp:039}-{:016x}", unpredictable()));
    fs::rename(path, &aside)?;
    File::open(dir)?.sync_all()?;
    if let Err(error) = prune_aside(dir, &name) {
        tracing::warn!(dir = %dir.display(), %error, "removing old bad checkpoints failed");
    }
    Ok(aside)
}

/// The `<name>.bad-*` entries of `dir`: (file name, path).
fn aside_entries(dir: &Path, name: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let prefix = format!("{name}.bad-");
    Ok(fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            n.starts_with(&prefix).then(|| (n, e.path()))
        })
        .collect())
}

/// The stamp of an entry `<name>.bad-<stamp>-<random>` (39 digits, as [`move_aside`] writes it).
fn aside_stamp(entry: &str, name: &str) -> Option<u128> {
    let rest = entry.strip_prefix(name)?.strip_prefix(".bad-")?;
    let (stamp, _) = rest.split_once('-')?;
    (stamp.len() == 39 && stamp.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stamp.parse().ok())
        .flatten()
}

/// Keeps the [`KEEP_ASIDE`] newest `<name>.bad-*` entries of `dir` (by name: by stamp) and removes
/// the others.
fn prune_aside(dir: &Path, name: &str) -> io::Result<()> {
    let mut kept = aside_entries(dir, name)?;
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP_ASIDE);
    for (_, old) in kept.into_iter().take(excess) {
        let removed = match fs::symlink_metadata(&old) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&old),
            _ => fs::remove_file(&old),
        };
        if let Err(error) = removed {
            tracing::warn!(file = %old.display(), %error, "removing an old bad checkpoint failed");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod aside_tests {
    use super::*;

    /// A clock stepped back (entries moved aside "in the future" are there): the entry moved aside
    /// now is kept, and the oldest of the others goes.
    #[test]
    fn a_clock_behind_the_newest_stamp_still_keeps_the_entry_just_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let far = u128::from(u64::MAX) * 1000;
        for i in 0..KEEP_ASIDE {
            let stamp = far + i as u128;
            fs::write(dir.path().join(format!("a.json.bad-{stamp:039}-0")), "x").unwrap();
        }
        let path = dir.path().join("a.json");
        fs::write(&path, "newest").unwrap();
        let aside = move_aside(&path).unwrap();
        assert_eq!(fs::read_to_string(&aside).unwrap(), "newest");
        let entries = aside_entries(dir.path(), "a.json").unwrap();
        assert_eq!(entries.len(), KEEP_ASIDE);
        let oldest = format!("a.json.bad-{far:039}-0");
        assert!(entries.iter().all(|(n, _)| *n != oldest), "{entries:?}");
        let stamp = aside_stamp(&file_name_of(&aside), "a.json").unwrap();
        assert_eq!(stamp, far + KEEP_ASIDE as u128, "one past the newest");
    }

    #[test]
    fn only_stamps_written_by_move_aside_are_read() {
        assert_eq!(aside_stamp(&format!("a.bad-{:039}-ff", 7), "a"), Some(7));
        assert_eq!(aside_stamp("a.bad-7-ff", "a"), None);
        assert_eq!(aside_stamp(&format!("a.bad-{:039}", 7), "a"), None);
        assert_eq!(aside_stamp(&format!("b.bad-{:039}-ff", 7), "a"), None);
        assert_eq!(aside_stamp(&format!("a.bad-+{:038}-ff", 7), "a"), None);
    }
}
