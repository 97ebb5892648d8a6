//! The direct-mode state: one file per netdev moved into a pod sandbox (`<sandbox id>-<name in the
//! pod>` under `<plugin dir>/direct`), holding what moving it back needs ([`Saved`]). It is written
//! atomically before the netdev moves and removed once it is home (or gone with its namespace), so a
//! plugin killed at any point in between still finds it at the next start, as the CNI cache does for
//! CNI mode.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::direct::Saved;
use crate::error::{NetError, NetErrorKind};

/// `kind` of an entry.
pub const MOVED_KIND: &str = "directV1";
/// The largest state file read.
const MAX_ENTRY: u64 = 64 * 1024;
/// The most entries read from the directory.
const MAX_ENTRIES: usize = 4096;

/// The entries of the state directory, by file name, each read or why not ([`list`]).
pub type Listed = Vec<(String, Result<Moved, NetError>)>;

/// One netdev moved into a pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Moved {
    /// [`MOVED_KIND`].
    pub kind: String,
    /// The pod sandbox's id.
    pub sandbox: String,
    /// The claim (`namespace/name`) and device it is allocated as, for the log.
    pub claim: String,
    /// Its device name in the pool.
    pub device: String,
    /// How to move it back.
    pub saved: Saved,
}

impl Moved {
    /// The file name of this entry.
    pub fn file_name(&self) -> String {
        format!("{}-{}", self.sandbox, self.saved.pod_name)
    }
}

/// The state directory under `state_root` (the plugin's directory).
pub fn dir_under(state_root: &Path) -> PathBuf {
    state_root.join("direct")
}

fn state_error(what: String) -> NetError {
    NetError::new(NetErrorKind::State, &what)
}

/// Writes `entry` under `dir` atomically (file and directory synced).
pub fn store(dir: &Path, entry: &Moved) -> Result<(), NetError> {
    let path = dir.join(entry.file_name());
    let bytes = serde_json::to_vec_pretty(entry)
        .map_err(|e| state_error(format!("{}: {e}", path.display())))?;
    dra_kubelet_plugin::files::write_atomically(&path, &bytes, &|_| Ok(()))
        .map_err(|e| state_error(format!("direct-mode state: {e}")))
}

/// Removes the entry `name` (absent already is fine).
pub fn remove(dir: &Path, name: &str) -> Result<(), NetError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_error(format!("removing {}: {e}", path.display()))),
    }
}

/// Reads the entry at `path` (no symlink followed, at most 64 KiB; its name must be its own).
pub fn load(path: &Path) -> Result<Moved, NetError> {
    let fail = |e: &dyn std::fmt::Display| state_error(format!("{}: {e}", path.display()));
    let bytes = read_limited(path, MAX_ENTRY).map_err(|e| fail(&e))?;
    let entry: Moved = serde_json::from_slice(&bytes).map_err(|e| fail(&e))?;
    if entry.kind != MOVED_KIND {
        return Err(fail(&format!("kind {:?} is not {MOVED_KIND}", entry.kind)));
    }
    if path.file_name().and_then(|n| n.to_str()) != Some(entry.file_name().as_str()) {
        return Err(fail(&"its name does not match its sandbox and interface"));
    }
    Ok(entry)
}

/// Every entry under `dir` (temp files of interrupted writes skipped), by file name; a missing
/// directory has none. A directory that cannot be read, or an entry of it, is an error naming the
/// directory ([`NetErrorKind::State`]): never "nothing moved", which would let a teardown forget
/// netdevs still in their pods.
pub fn list(dir: &Path) -> Result<Listed, NetError> {
    list_with(dir, load).map_err(|e| state_error(e.to_string()))
}

/// The file at `path` (no symlink followed), refused when over `max` bytes.
pub(crate) fn read_limited(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = dra_kubelet_plugin::files::open_no_follow(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("over {max} bytes")));
    }
    Ok(bytes)
}

/// `load` of every file under `dir` whose name does not start with `.` (the temp files of
/// interrupted writes), by file name; a missing directory has none, and more than 4096 entries are
/// an error (no node holds that many attachments). Any other failure
/// to read the directory, or one of its entries, is an error naming the directory (`listing <dir>:
/// <why>`, the OS error's kind kept): a partial listing is never returned as a whole one.
pub(crate) fn list_with<T>(
    dir: &Path,
    load: impl Fn(&Path) -> T,
) -> std::io::Result<Vec<(String, T)>> {
    let failed = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("listing {}: {e}", dir.display()))
    };
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    };
    let names = entry_names(read.map(|entry| entry.map(|e| e.file_name()))).map_err(failed)?;
    let mut out: Vec<(String, T)> = names
        .into_iter()
        .map(|name| {
            let entry = load(&dir.join(&name));
            (name, entry)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The names of `entries` (a directory's, in its order) that are UTF-8 and do not start with `.`;
/// the first entry that failed to read fails them all, as do more than [`MAX_ENTRIES`] names.
fn entry_names(
    entries: impl Iterator<Item = std::io::Result<std::ffi::OsString>>,
) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        if names.len() == MAX_ENTRIES {
            return Err(std::io::Error::other(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Removes the temp files that atomic writes interrupted by a crash (a SIGKILL, an OOM kill) left
/// under `dir` (the direct-mode state or the CNI result cache), and returns their paths; a missing
/// directory has none. Only [`dra_kubelet_plugin::files::write_atomically`]'s temp files go: for each
/// name of its temp naming (`.<entry>.<16 hex digits>.tmp`), the kit's
/// [`dra_kubelet_plugin::files::remove_stale_temps`] of that entry (`.<entry>.*.tmp`); entries,
/// files moved aside and anything else stay. For a start, before anything writes there: a write
/// under way would lose its temp file.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = std::collections::BTreeSet::new();
    for entry in read {
        let name = entry?.file_name();
        if let Some(of) = name.to_str().and_then(temp_of) {
            entries.insert(of.to_owned());
        }
    }
    let mut removed = Vec::new();
    for entry in entries {
        removed.extend(dra_kubelet_plugin::files::remove_stale_temps(
            &dir.join(entry),
        )?);
    }
    Ok(removed)
}

/// The entry whose temp file `name` is, when it is one: `.<entry>.<16 hex digits>.tmp`, `<entry>`
/// not empty and not starting with `.` (no entry of these directories does).
fn temp_of(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (entry, random) = inner.rsplit_once('.')?;
    let random_ok = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
    (random_ok && !entry.is_empty() && !entry.starts_with('.')).then_some(entry)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
