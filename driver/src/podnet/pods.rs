//! The network functions of the prepared claims reserved for a pod, read from the preparer's records
//! (the checkpoint): each function's PCI address, host netdev, and the `VfConfig`'s `ifName` and
//! NetworkAttachmentDefinition, as the claim's CDI environment carries them
//! (`DRA_HAL_NIC_<i>_PCI_ADDRESS`, `_NETDEV`, `_IFNAME`, `_NETWORK`), and the direct-mode
//! `NetworkConfig` the record keeps for the function's device. The checkpoint is read here
//! without side effects ([`read_prepared`]): the preparer alone repairs or rewrites it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::config::Checked;
use crate::plugin::api::ClaimRef;
use crate::plugin::checkpoint::{CheckpointFile, ClaimRecord, Phase, Unreadable};
use crate::plugin::claims::NetworkAttachment;

/// One network function to attach to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFunction {
    /// The claim it is allocated in.
    pub claim: ClaimRef,
    /// Its device name in the pool (`nic-0000-3b-02-0`), for the claim's status; empty when the
    /// record does not name it.
    pub device: String,
    /// Its PCI address.
    pub pci: String,
    /// Its netdev on the host (none when bound to vfio-pci).
    pub netdev: Option<String>,
    /// The `VfConfig`'s `ifName`.
    pub if_name: Option<String>,
    /// The `VfConfig`'s NetworkAttachmentDefinition: namespace (the claim's when not given), name.
    pub network: Option<(String, String)>,
    /// The claim's `NetworkConfig` for it (direct mode), as the preparer checked and recorded it.
    pub direct: Option<Checked>,
    /// Its RDMA device (`DRA_HAL_RDMA_DEVICE` of its CDI device), if it has one.
    pub rdma: Option<String>,
}

impl PodFunction {
    /// How messages name it: `claim <namespace>/<name> device <device> (<pci>)`.
    pub fn describe(&self) -> String {
        let claim = &self.claim;
        format!(
            "claim {}/{} device {} ({})",
            claim.namespace, claim.name, self.device, self.pci
        )
    }
}

/// The network functions of the completed claims `claims` holds for the pod `pod_uid`, in claim then
/// function order. Unlike the CPU policy, a record that names no pods (written before pods were
/// recorded) counts for none: a function is attached only to a pod its claim is reserved for.
pub fn of_pod(claims: &BTreeMap<String, ClaimRecord>, pod_uid: &str) -> Vec<PodFunction> {
    let mut out = Vec::new();
    for record in claims.values() {
        if record.phase != Phase::Completed || !record.pods.iter().any(|p| p == pod_uid) {
            continue;
        }
        let Ok(spec) = record.cdi_spec.parse::<serde_json::Value>() else {
            continue;
        };
        let env = claim_env(&spec);
        let mut i = 0;
        while let Some(pci) = env.get(&format!("DRA_HAL_NIC_{i}_PCI_ADDRESS")) {
            let get = |what: &str| env.get(&format!("DRA_HAL_NIC_{i}_{what}")).cloned();
            let network = get("NETWORK")
                .and_then(|text| NetworkAttachment::parse(&text))
                .map(|nad| nad.in_namespace(&record.claim.namespace));
            let label = pci.replace([':', '.'], "-");
            let device = record
                .devices
                .iter()
                .map(|d| d.device_name.clone())
                .find(|d| *d == format!("nic-{label}") || *d == format!("rdma-{label}"))
                .unwrap_or_default();
            out.push(PodFunction {
                claim: record.claim.clone(),
                pci: pci.clone(),
                netdev: get("NETDEV"),
                if_name: get("IFNAME"),
                network,
                direct: record.network.get(&device).cloned(),
                rdma: device_env(
                    &spec,
                    &format!("{}-{device}", record.claim.uid),
                    "DRA_HAL_RDMA_DEVICE",
                ),
                device,
            });
            i += 1;
        }
    }
    out
}

/// The `KEY=VALUE` environment of a claim's CDI spec (every device carries the claim's).
fn claim_env(spec: &serde_json::Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let devices = spec.get("devices").and_then(|d| d.as_array());
    for device in devices.into_iter().flatten() {
        let list = device
            .get("containerEdits")
            .and_then(|e| e.get("env"))
            .and_then(|e| e.as_array());
        for entry in list.into_iter().flatten().filter_map(|e| e.as_str()) {
            if let Some((k, v)) = entry.split_once('=')
                && k.starts_with("DRA_HAL_NIC_")
            {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    env
}

/// The value of `key` in the environment of the CDI device `name` of `spec`.
fn device_env(spec: &serde_json::Value, name: &str, key: &str) -> Option<String> {
    let devices = spec.get("devices")?.as_array()?;
    let device = devices
        .iter()
        .find(|d| d.get("name").and_then(|n| n.as_str()) == Some(name))?;
    let env = device.get("containerEdits")?.get("env")?.as_array()?;
    env.iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// The prepared claims in the checkpoint directory `dir` (one record file per claim), read only:
/// no temp files removed, nothing moved aside (that is the preparer's). A missing directory has none.
///
/// A record file that cannot be read (EIO from a bad block, EACCES) is left out and logged at WARN,
/// once per file and error (`report_unreadable`): which pods its claim is reserved for is not
/// known, and failing the read would fail every pod sandbox on the node, those without claims too.
/// The readable claims are served. Only a directory that cannot be listed is an error.
pub fn read_prepared(
    dir: &Path,
) -> Result<BTreeMap<String, ClaimRecord>, crate::plugin::checkpoint::CheckpointError> {
    read_prepared_from(&CheckpointFile::new(dir))
}

/// [`read_prepared`] from `checkpoint` (tests give it a read fault).
pub(crate) fn read_prepared_from(
    checkpoint: &CheckpointFile,
) -> Result<BTreeMap<String, ClaimRecord>, crate::plugin::checkpoint::CheckpointError> {
    let valid = checkpoint.read_valid()?;
    report_unreadable(&UNREADABLE, &valid.unreadable);
    Ok(valid.claims)
}

/// The record files the last reads could not read, with their error's text.
static UNREADABLE: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());

/// Logs at WARN each of `unreadable` that `seen` does not hold with the same error (a record file
/// that became unreadable, or fails another way now), and at INFO each file `seen` holds that reads
/// again (or is gone); then `seen` holds `unreadable`. A read per pod sandbox would otherwise log the
/// same error at each. Returns how many it logged at WARN.
pub(crate) fn report_unreadable(
    seen: &Mutex<BTreeMap<PathBuf, String>>,
    unreadable: &[Unreadable],
) -> usize {
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let now: BTreeMap<PathBuf, String> = unreadable
        .iter()
        .map(|u| (u.path.clone(), u.error.to_string()))
        .collect();
    for path in seen.keys().filter(|path| !now.contains_key(*path)) {
        tracing::info!(file = %path.display(), "a checkpoint record that could not be read reads again, or is gone");
    }
    let mut warned = 0;
    for u in unreadable {
        if seen
            .get(&u.path)
            .is_none_or(|error| *error != u.error.to_string())
        {
            tracing::warn!(claim = %u.uid, file = %u.path.display(), error = %u.error,
                "a checkpoint record could not be read; its claim's network functions are not \
                attached to pods until it reads (the other claims are served)");
            warned += 1;
        }
    }
    *seen = now;
    warned
}
