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
/// directory has none.
pub fn list(dir: &Path) -> Vec<(String, Result<Moved, NetError>)> {
    list_with(dir, load)
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
/// interrupted writes), at most 4096, by file name; a missing directory has none.
pub(crate) fn list_with<T>(dir: &Path, load: impl Fn(&Path) -> T) -> Vec<(String, T)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, T)> = read
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .take(MAX_ENTRIES)
        .map(|name| {
            let entry = load(&dir.join(&name));
            (name, entry)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
