//! CNI mode (the SR-IOV DRA driver's way): a NetworkAttachmentDefinition (read with [`nad`], named
//! by the driver's claim configuration) has a config ([`conf`]) that the runtime here runs as the CNI
//! spec says ([`exec`]): each plugin of the list in turn for `ADD` with the previous one's result as
//! `prevResult`, in reverse for `DEL` with the cached result, `deviceID` (the function's PCI address)
//! added to each plugin's config (and to `runtimeConfig` for a plugin that declares the `deviceID`
//! capability). Every attachment is kept in the [`cache`] so that `DEL` runs with ADD's inputs, after
//! a restart too.

pub mod cache;
pub mod conf;
pub mod error;
pub mod exec;
pub mod nad;
pub mod result;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

pub use cache::Entry;
pub use conf::ConfList;
pub use error::{CniError, CniErrorKind};
pub use result::{CniResult, NetworkData};

/// Where the CNI plugins are, where the cache is, and how long a plugin may run.
#[derive(Debug, Clone)]
pub struct Cni {
    /// The directories searched for plugin binaries (`--cni-bin-dir`); also `CNI_PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// The result cache (`<state root>/cni/results`).
    pub cache_dir: PathBuf,
    /// How long one plugin call may take before it is killed.
    pub timeout: Duration,
}

/// One attachment to make: a network function into a pod sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// The pod sandbox's id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The sandbox's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface's name in the pod (`CNI_IFNAME`).
    pub if_name: String,
    /// The function's PCI address (`deviceID`).
    pub device_id: Option<String>,
    /// `CNI_ARGS` pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: Vec<(String, String)>,
    /// Notes kept in the cache (claim, device, pod).
    pub labels: BTreeMap<String, String>,
}

/// What ADD did.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// The final result, as the last plugin wrote it.
    pub result: Value,
    /// What the pod's interface got.
    pub network: NetworkData,
}

/// The `DEL`s run, each cached attachment's file name with how its `DEL` went.
pub type Dels = Vec<(String, Result<(), CniError>)>;

/// The default timeout of one plugin call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Cni {
    /// A runtime with the plugins of `bin_dir` and the cache under `state_root/cni/results`.
    pub fn new(bin_dir: impl Into<PathBuf>, state_root: &Path) -> Cni {
        Cni {
            bin_dirs: vec![bin_dir.into()],
            cache_dir: state_root.join("cni").join("results"),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs ADD of `list` for `at`. On failure, DEL runs once for what was added, and the cache entry
    /// goes even when that DEL fails (the sandbox fails; its namespace goes with it).
    pub fn add(&self, list: &ConfList, at: &Attachment) -> Result<Added, CniError> {
        let args = cni_args(&at.args)?;
        check_attachment(at)?;
        let mut entry = Entry {
            kind: cache::CACHE_KIND.into(),
            container_id: at.container_id.clone(),
            if_name: at.if_name.clone(),
            network_name: list.name.clone(),
            netns: at.netns.clone(),
            cni_args: args,
            device_id: at.device_id.clone(),
            config: list.clone(),
            result: None,
            labels: at.labels.clone(),
        };
        // Intent first: a crash during ADD still leaves what DEL needs.
        cache::store(&self.cache_dir, &entry)?;
        let mut previous: Option<Value> = None;
        for i in 0..list.plugins.len() {
            match self.call("ADD", &entry, i, previous.as_ref(), &entry.netns) {
                Ok(Value::Null) => {}
                Ok(out) => previous = Some(out),
                Err(e) => {
                    entry.result = previous;
                    // As libcni, a failed ADD leaves no cache entry: DEL runs once, best effort
                    // (a plugin's DEL may fail on what its ADD never made).
                    if let Err(undo) = self.del(&entry) {
                        tracing::warn!(error = %undo, "DEL after a failed CNI ADD");
                        if let Err(gone) = cache::remove(&self.cache_dir, &entry.file_name()) {
                            tracing::warn!(error = %gone, "forgetting a failed CNI ADD");
                        }
                    }
                    return Err(e);
                }
            }
        }
        let result = previous.unwrap_or(Value::Null);
        entry.result = Some(result.clone());
        if let Err(e) = cache::store(&self.cache_dir, &entry) {
            // A result the cache cannot keep (too large, nested too deep): undone now, while DEL
            // still has it, rather than left without what its DEL needs. The intent entry stays
            // when this DEL fails, so the sandbox's stop tries again.
            if let Err(undo) = self.del(&entry) {
                tracing::warn!(error = %undo, "DEL of a CNI ADD whose result cannot be cached");
            }
            return Err(e);
        }
        let network = CniResult::from_json(&result)
            .unwrap_or_default()
            .network_data(&at.if_name);
        Ok(Added { result, network })
    }

    /// Runs DEL for a cached attachment (plugins in reverse, with the cached result as `prevResult`),
    /// then forgets it. A namespace already gone is passed as an empty `CNI_NETNS`, as the spec allows.
    pub fn del(&self, entry: &Entry) -> Result<(), CniError> {
        let netns = if entry.netns.exists() {
            entry.netns.clone()
        } else {
            PathBuf::new()
        };
        for i in (0..entry.config.plugins.len()).rev() {
            self.call("DEL", entry, i, entry.result.as_ref(), &netns)?;
        }
        cache::remove(&self.cache_dir, &entry.file_name())
    }

    /// The cached attachments; an error when the cache cannot be listed ([`cache::list`]).
    pub fn cached(&self) -> Result<cache::Listed, CniError> {
        cache::list(&self.cache_dir)
    }

    /// Removes the temp files that writes of the cache interrupted by a crash left
    /// ([`cache::remove_stale_temps`]); at start, before any ADD.
    pub fn remove_stale_temps(&self) -> std::io::Result<Vec<PathBuf>> {
        cache::remove_stale_temps(&self.cache_dir)
    }

    /// Runs DEL for every cached attachment whose sandbox `alive` says is gone (at start, for
    /// sandboxes that vanished while the plugin was down); returns each one tried (its file name) and
    /// how it went. Unreadable entries are reported and kept. A cache that cannot be listed is an
    /// error: what it holds is not known.
    pub fn del_vanished(&self, alive: &dyn Fn(&Entry) -> bool) -> Result<Dels, CniError> {
        let mut out = Vec::new();
        for (name, entry) in self.cached()? {
            match entry {
                Ok(entry) if alive(&entry) => {}
                Ok(entry) => out.push((name, self.del(&entry))),
                Err(e) => out.push((name, Err(e))),
            }
        }
        Ok(out)
    }

    /// Runs DEL for every cached attachment of the sandbox `container_id` (its stop or removal).
    /// An unreadable entry whose name holds the sandbox's id is logged at WARN and kept, not
    /// skipped without a word (its attachment may still be there), nor returned as a failure:
    /// reading it again cannot succeed, and CRI-O fails the sandbox's stop on a plugin's error, so
    /// the pod would never finish stopping. A cache that cannot be listed (EIO, EMFILE, ...) is an
    /// error, for the caller to try again: whether the sandbox has attachments is not known.
    pub fn del_sandbox(&self, container_id: &str) -> Result<Dels, CniError> {
        let named = format!("-{container_id}-");
        Ok(self
            .cached()?
            .into_iter()
            .filter_map(|(name, entry)| match entry {
                Ok(entry) if entry.container_id == container_id => Some((name, self.del(&entry))),
                Err(error) if name.contains(&named) => {
                    tracing::warn!(attachment = %name, %error, sandbox = container_id,
                        "an unreadable CNI cache entry of a stopping sandbox; kept, no DEL run: \
                         its attachment may remain");
                    None
                }
                _ => None,
            })
            .collect())
    }

    /// The config plugin `i` gets on stdin.
    fn call(
        &self,
        command: &str,
        entry: &Entry,
        i: usize,
        previous: Option<&Value>,
        netns: &Path,
    ) -> Result<Value, CniError> {
        let stdin = plugin_config(&entry.config, i, entry.device_id.as_deref(), previous)?;
        let call = exec::Call {
            command,
            plugin: entry.config.plugin_type(i),
            container_id: &entry.container_id,
            netns,
            if_name: &entry.if_name,
            args: &entry.cni_args,
            stdin: &stdin,
        };
        exec::run(&self.bin_dirs, &call, self.timeout).map_err(|e| {
            e.context(format!(
                "network {} for sandbox {} ({})",
                entry.network_name, entry.container_id, entry.if_name
            ))
        })
    }
}

/// Plugin `i`'s config: its own object with the list's `name` and `cniVersion`, `deviceID`, the
/// `runtimeConfig` of its declared capabilities, and `prevResult`.
pub fn plugin_config(
    list: &ConfList,
    i: usize,
    device_id: Option<&str>,
    previous: Option<&Value>,
) -> Result<Vec<u8>, CniError> {
    let mut config = list
        .plugins
        .get(i)
        .cloned()
        .ok_or_else(|| CniError::config("plugins", format!("has no plugin {i}")))?;
    config.insert("name".into(), json!(list.name));
    config.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(id) = device_id {
        config.insert("deviceID".into(), json!(id));
        let declared = config
            .get("capabilities")
            .and_then(|c| c.get("deviceID"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if declared {
            config.insert("runtimeConfig".into(), json!({"deviceID": id}));
        }
    }
    if let Some(previous) = previous {
        config.insert("prevResult".into(), previous.clone());
    }
    serde_json::to_vec(&config).map_err(|e| CniError::config("plugins", e))
}

/// `CNI_ARGS`: `IgnoreUnknown=1;K=V;...`; keys and values may not hold `;` or `=`.
pub fn cni_args(pairs: &[(String, String)]) -> Result<String, CniError> {
    let mut out = String::from("IgnoreUnknown=1");
    for (k, v) in pairs {
        let bad = |s: &str| s.is_empty() || s.contains([';', '=', '\0']);
        if bad(k) || v.contains([';', '=', '\0']) {
            return Err(CniError::config(
                "CNI_ARGS",
                format!("{k}={v} has ';' or '='"),
            ));
        }
        out.push_str(&format!(";{k}={v}"));
    }
    Ok(out)
}

fn check_attachment(at: &Attachment) -> Result<(), CniError> {
    if !conf::is_container_id(&at.container_id) {
        return Err(CniError::config(
            "sandbox id",
            format!("{:?} is not a container id", at.container_id),
        ));
    }
    if let Some(problem) = crate::config::if_name_problem(&at.if_name) {
        return Err(CniError::config(
            "ifName",
            format!("{:?} {problem}", at.if_name),
        ));
    }
    if !at.netns.is_absolute() {
        return Err(CniError::config(
            "netns",
            format!("{} is not an absolute path", at.netns.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_root;
