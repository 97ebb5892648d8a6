//! VF provisioning: a declarative per-PF policy (which PFs get how many VFs, bound to which driver),
//! applied at start and whenever the policy file changes, only while none of that PF's VFs is
//! prepared for a claim. The new VFs are then discovered and published by the next rescan.
//!
//! The policy is a JSON file:
//!
//! ```json
//! {"pfs": [
//!   {"selector": {"pciAddress": "0000:3b:00.0"}, "numVfs": 8, "vfDriver": "iavf"},
//!   {"selector": {"vendorId": "0x15b3", "deviceId": "0x101d"}, "numVfs": 4},
//!   {"selector": {"netdev": "ens2f0np0"}, "numVfs": 0}
//! ]}
//! ```
//!
//! A selector matches a PF when every field it gives matches. Every write is checked; an error names
//! the PF and the policy file; a refused count change puts the PF's previous count back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hal::{PciAddress, PciFunction, SriovPf, SriovState};

use crate::inventory::Inventory;

/// The largest policy file read.
const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Which PFs an entry is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PfSelector {
    /// Exactly this function.
    #[serde(default)]
    pub pci_address: Option<PciAddress>,
    /// PCI vendor id (`0x8086`).
    #[serde(default)]
    pub vendor_id: Option<String>,
    /// PCI device id of the PF (`0x1592`).
    #[serde(default)]
    pub device_id: Option<String>,
    /// One of the PF's network interfaces.
    #[serde(default)]
    pub netdev: Option<String>,
}

/// One policy entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PfPolicy {
    /// The PFs.
    pub selector: PfSelector,
    /// VFs wanted (0 removes them).
    pub num_vfs: u32,
    /// Driver for the VFs (`vfio-pci`, `iavf`, ...); the kernel's default when absent.
    #[serde(default)]
    pub vf_driver: Option<String>,
}

/// The whole policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfPolicy {
    /// Entries, applied in order; a PF takes the first entry that selects it.
    pub pfs: Vec<PfPolicy>,
    /// PFs left alone (not in the file): those the kernel refused this policy
    /// ([`KeptPolicy`] does not repeat a refused change, which goes through 0 VFs, or a bind that
    /// unbinds the VF's driver, every round).
    #[serde(skip)]
    pub skip: std::collections::BTreeSet<PciAddress>,
}

fn parse_id(text: &str) -> Option<u16> {
    u16::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

impl PfSelector {
    fn matches(&self, pf: &PciFunction) -> bool {
        self.pci_address.is_none_or(|a| a == pf.address)
            && self
                .vendor_id
                .as_deref()
                .is_none_or(|v| parse_id(v) == Some(pf.vendor_id))
            && self
                .device_id
                .as_deref()
                .is_none_or(|d| parse_id(d) == Some(pf.device_id))
            && self.netdev.as_ref().is_none_or(|n| pf.netdevs.contains(n))
    }

    fn is_empty(&self) -> bool {
        *self == PfSelector::default()
    }
}

impl VfPolicy {
    /// Reads and checks a policy file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<VfPolicy, PolicyError> {
        let file = std::fs::File::open(path).map_err(PolicyError::io(path))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_POLICY_BYTES), &mut text)
            .map_err(PolicyError::io(path))?;
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let policy: VfPolicy =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                PolicyError::Invalid {
                    path: path.to_owned(),
                    field: e.path().to_string(),
                    problem: e.inner().to_string(),
                }
            })?;
        for (i, entry) in policy.pfs.iter().enumerate() {
            if entry.selector.is_empty() {
                return Err(PolicyError::Invalid {
                    path: path.to_owned(),
                    field: format!("pfs[{i}].selector"),
                    problem: "selects every PF; give at least one field".into(),
                });
            }
            for (field, id) in [
                ("vendorId", &entry.selector.vendor_id),
                ("deviceId", &entry.selector.device_id),
            ] {
                if let Some(id) = id
                    && parse_id(id).is_none()
                {
                    return Err(PolicyError::Invalid {
                        path: path.to_owned(),
                        field: format!("pfs[{i}].selector.{field}"),
                        problem: format!("{id:?} is not a hex id"),
                    });
                }
            }
        }
        Ok(policy)
    }
}

/// Why a VF policy file was not applied; the message starts with the file and names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The policy file.
        path: PathBuf,
        /// What kind of failure (`NotFound`, `PermissionDenied`, ...).
        kind: hal::ErrorKind,
        /// The OS error.
        message: String,
    },
    /// The file is not a valid policy.
    #[error("{}: {field}: {problem}", path.display())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Where in the policy (`pfs[0].numVfs`).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl PolicyError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            PolicyError::Io { kind, .. } => *kind,
            PolicyError::Invalid { .. } => hal::ErrorKind::Malformed,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PolicyError {
        let path = path.to_owned();
        move |error| PolicyError::Io {
            path,
            kind: hal::ErrorKind::from_io(&error),
            message: error.to_string(),
        }
    }
}

/// What provisioning did to one PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already as the policy says.
    Unchanged(PciAddress),
    /// VF count changed (from, to).
    Changed(PciAddress, u32, u32),
    /// The count was right; these VFs were bound to the policy's `vfDriver` (the inventory to
    /// rescan, so the published `driver` attribute follows).
    Rebound(PciAddress, Vec<PciAddress>),
    /// Left alone: some of its VFs are prepared for claims.
    Busy(PciAddress, Vec<PciAddress>),
    /// The kernel refused: a refused count is put back, and a VF whose new driver did not bind
    /// gets its old one back (VFs bound before it keep the policy's driver). Tried again at the next
    /// round.
    Failed(PciAddress, String),
}

/// Applies `policy` to the PFs of `inventory`. `in_use` are the functions prepared for claims (a PF
/// whose VFs are in use is not touched: changing its count goes through 0 and would destroy them).
pub fn apply(
    policy: &VfPolicy,
    source: &Path,
    inventory: &Inventory,
    sriov: &dyn SriovPf,
    in_use: &BTreeSet<PciAddress>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for state in &inventory.sriov {
        let Some(pf) = inventory.function(state.pf) else {
            continue;
        };
        if policy.skip.contains(&state.pf) {
            continue;
        }
        let Some(entry) = policy.pfs.iter().find(|e| e.selector.matches(pf)) else {
            continue;
        };
        outcomes.push(apply_one(entry, source, state, inventory, sriov, in_use));
    }
    outcomes
}

fn apply_one(
    entry: &PfPolicy,
    source: &Path,
    state: &SriovState,
    inventory: &Inventory,
    sriov: &dyn SriovPf,
    in_use: &BTreeSet<PciAddress>,
) -> Outcome {
    let pf = state.pf;
    let failed =
        |what: String| Outcome::Failed(pf, format!("{what} (policy {})", source.display()));
    let busy: Vec<PciAddress> = state
        .vfs
        .iter()
        .map(|v| v.address)
        .chain([pf])
        .filter(|a| in_use.contains(a))
        .collect();
    let count_changes = state.num_vfs != entry.num_vfs;
    if count_changes && !busy.is_empty() {
        return Outcome::Busy(pf, busy);
    }
    if count_changes && let Err(e) = sriov.set_num_vfs(pf, entry.num_vfs) {
        // Going through 0 may have removed the old VFs: put the previous count back.
        let restored = sriov.set_num_vfs(pf, state.num_vfs);
        let note = match restored {
            Ok(()) => format!("restored to {} VFs", state.num_vfs),
            Err(r) => format!("restoring {} VFs failed too: {r}", state.num_vfs),
        };
        return failed(format!("{pf}: setting {} VFs: {e}; {note}", entry.num_vfs));
    }
    let mut rebound = Vec::new();
    if let Some(driver) = &entry.vf_driver {
        let vfs = match sriov.sriov_state(pf) {
            Ok(Some(now)) => now.vfs,
            Ok(None) => Vec::new(),
            Err(e) => return failed(format!("{pf}: reading its VFs: {e}")),
        };
        for vf in vfs.iter().filter(|v| !in_use.contains(&v.address)) {
            if let Err(e) = sriov.bind_driver(vf.address, driver) {
                return failed(format!("{pf}: binding VF {} to {driver}: {e}", vf.address));
            }
            // A VF the inventory lacks (a read that failed) is not counted, or every round would
            // ask for a rescan.
            let had = inventory.function(vf.address).map(|f| f.driver.as_deref());
            if had.is_some_and(|had| had != Some(driver.as_str())) {
                rebound.push(vf.address);
            }
        }
    }
    match count_changes {
        true => Outcome::Changed(pf, state.num_vfs, entry.num_vfs),
        false if !rebound.is_empty() => Outcome::Rebound(pf, rebound),
        false => Outcome::Unchanged(pf),
    }
}

/// The policy file and when it was last applied.
#[derive(Debug)]
pub struct PolicyWatch {
    path: PathBuf,
    applied: Option<std::time::SystemTime>,
}

impl PolicyWatch {
    /// Watches `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PolicyWatch {
            path: path.into(),
            applied: None,
        }
    }

    /// The policy when the file is new or changed since the last call, else `None`.
    pub fn changed(&mut self) -> Option<Result<VfPolicy, PolicyError>> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let modified = match modified {
            Ok(m) => m,
            Err(e) => return Some(Err(PolicyError::io(&self.path)(e))),
        };
        if self.applied == Some(modified) {
            return None;
        }
        self.applied = Some(modified);
        Some(VfPolicy::load(&self.path))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The VF policy kept applied: the file's policy, loaded again when the file changes, is applied at
/// every tick, not only after a change, so that a PF left alone while claims held its VFs (`Busy`)
/// or found later (a module loaded, a hotplug) gets it too. Applying a PF already as the policy says
/// writes nothing. A PF the kernel refused (`Failed`) is not tried again until the file changes (or
/// the plugin restarts): each try goes through 0 VFs or unbinds a VF's driver. A file that does not
/// load is reported, and nothing is applied until it loads.
#[derive(Debug)]
pub struct KeptPolicy {
    watch: PolicyWatch,
    policy: Option<VfPolicy>,
    last: Vec<Outcome>,
}

impl KeptPolicy {
    /// The policy of `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeptPolicy {
            watch: PolicyWatch::new(path),
            policy: None,
            last: Vec::new(),
        }
    }

    /// The policy to apply now, loaded again when the file changed; the file's error when that load
    /// failed (the first time it is seen).
    pub fn policy(&mut self) -> Result<Option<VfPolicy>, PolicyError> {
        match self.watch.changed() {
            Some(Ok(policy)) => self.policy = Some(policy),
            Some(Err(error)) => {
                self.policy = None;
                return Err(error);
            }
            None => {}
        }
        Ok(self.policy.clone())
    }

    /// The outcomes of this tick that differ from the last tick's (what to log), and whether a
    /// count or a VF's driver changed (the inventory to rescan).
    pub fn report(&mut self, outcomes: Vec<Outcome>) -> (Vec<Outcome>, bool) {
        let new: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| !self.last.contains(o))
            .cloned()
            .collect();
        let rescan = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Changed(..) | Outcome::Rebound(..)));
        if let Some(policy) = &mut self.policy {
            for outcome in &outcomes {
                if let Outcome::Failed(pf, _) = outcome {
                    policy.skip.insert(*pf);
                }
            }
        }
        self.last = outcomes;
        (new, rescan)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.watch.path()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
