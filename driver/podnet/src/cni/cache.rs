//! The result cache (libcni's convention: one file per attachment, `<network>-<containerID>-<ifName>`,
//! holding what DEL needs). It is written before ADD runs (with no result) and again after, so a DEL
//! can run with the same inputs after a crash at any point, and at start for sandboxes that vanished
//! while the plugin was down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conf::ConfList;
use super::error::{CniError, CniErrorKind};

/// `kind` of an entry.
pub const CACHE_KIND: &str = "cniCacheV1";
/// The largest cache file read.
const MAX_ENTRY: u64 = 2 * 1024 * 1024;

/// The entries of the cache, by file name, each read or why not ([`list`]).
pub type Listed = Vec<(String, Result<Entry, CniError>)>;

/// One attachment, as cached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// [`CACHE_KIND`].
    pub kind: String,
    /// `CNI_CONTAINERID` (the pod sandbox's id).
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The network's name.
    pub network_name: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The PCI address given as `deviceID`.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The conflist as ADD ran it.
    pub config: ConfList,
    /// The final result of ADD; `None` while (or when) ADD did not complete.
    #[serde(default)]
    pub result: Option<Value>,
    /// The caller's notes (claim, device, pod).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Entry {
    /// The file name of this entry.
    pub fn file_name(&self) -> String {
        file_name(&self.network_name, &self.container_id, &self.if_name)
    }
}

/// `<network>-<containerID>-<ifName>`.
pub fn file_name(network: &str, container_id: &str, if_name: &str) -> String {
    format!("{network}-{container_id}-{if_name}")
}

/// Writes `entry` under `dir` atomically, once it is known to read back ([`load`]): a config or a
/// result nested too deep for the JSON reader (a user's NAD, a plugin's output) or over
/// `MAX_ENTRY` is refused here, before ADD runs or while it can be undone, not found unreadable at
/// DEL, when nothing could undo the attachment any more.
pub fn store(dir: &Path, entry: &Entry) -> Result<(), CniError> {
    let path = dir.join(entry.file_name());
    let fail = |e: &dyn std::fmt::Display| {
        CniError::new(CniErrorKind::Cache, format!("{}: {e}", path.display()))
    };
    let bytes = serde_json::to_vec(entry).map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_ENTRY {
        return Err(fail(&format!(
            "{} bytes, over the cache's limit of {MAX_ENTRY}",
            bytes.len()
        )));
    }
    serde_json::from_slice::<Entry>(&bytes)
        .map_err(|e| fail(&format!("would not read back: {e}")))?;
    dra_kubelet_plugin::files::write_atomically(&path, &bytes, &|_| Ok(()))
        .map_err(|e| CniError::new(CniErrorKind::Cache, format!("CNI cache: {e}")))
}

/// Removes the entry `name` (absent already is fine).
pub fn remove(dir: &Path, name: &str) -> Result<(), CniError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::new(
            CniErrorKind::Cache,
            format!("removing {}: {e}", path.display()),
        )),
    }
}

/// Reads the entry at `path` (no symlink followed, at most 2 MiB).
pub fn load(path: &Path) -> Result<Entry, CniError> {
    let fail = |e: &dyn std::fmt::Display| {
        CniError::new(CniErrorKind::Cache, format!("{}: {e}", path.display()))
    };
    let bytes = crate::moved::read_limited(path, MAX_ENTRY).map_err(|e| fail(&e))?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| fail(&e))?;
    if entry.kind != CACHE_KIND {
        return Err(fail(&format!("kind {:?} is not {CACHE_KIND}", entry.kind)));
    }
    if path.file_name().and_then(|n| n.to_str()) != Some(entry.file_name().as_str()) {
        return Err(fail(
            &"its name does not match its network, container and interface",
        ));
    }
    Ok(entry)
}

/// Every entry under `dir` (temp files of interrupted writes skipped), by file name; a missing
/// directory has none. A directory that cannot be read, or an entry of it, is an error naming the
/// directory ([`CniErrorKind::Cache`]): never "nothing cached", which would let a teardown skip the
/// `DEL` of attachments still made.
pub fn list(dir: &Path) -> Result<Listed, CniError> {
    crate::moved::list_with(dir, load)
        .map_err(|e| CniError::new(CniErrorKind::Cache, e.to_string()))
}

/// Removes the temp files of interrupted writes of entries under `dir` (a plugin killed while
/// writing one), and returns their paths ([`crate::moved::remove_stale_temps`]). At start only.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    crate::moved::remove_stale_temps(dir)
}
