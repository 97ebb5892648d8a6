//! Device health, one mechanism for every published family: at each rescan every device is observed
//! (GPUs, network functions with their links and RDMA ports, CPUs), known by a
//! [`DeviceKey`], and what is wrong with it becomes an [`Unhealthy`] with a reason (the taint's value),
//! a message for the kubelet, and a [`Severity`]:
//!
//! | source (read at each rescan) | reason | severity |
//! |---|---|---|
//! | NVML critical XID (GPUs; sticky while the same UUID is at that address; on a GPU NVML cannot name, or a failed event wait (`nvml-events`): every NVIDIA GPU; a GPU NVML cannot register for events, and every GPU it does not watch when it cannot open one: `nvml-unwatched`) | `xid-79` | unusable |
//! | a device seen and gone for [`MISSES_FOR_GONE`] reads spanning the grace (GPUs, NICs, VFs gone with their PF, CPUs) | `missing` | unusable |
//! | a CPU seen online and offline now (`cpuN/online` = 0) | `offline` | unusable |
//! | CPUs of a group (grouped CPU modes) offline | `cpus-offline` | degraded |
//! | a network interface up with its link down (`operstate`, `carrier`) | `link-down` | degraded |
//! | an RDMA port not ACTIVE (`ports/N/state`, `phys_state`) | `port-down`, `port-init`, `port-armed`, `port-not-active` | degraded |
//!
//! An unusable device is published with the taint `<driver>/unhealthy=<reason>:NoSchedule`, so the
//! scheduler gives it to no new claim that does not tolerate it, and Prepare refuses a missing or
//! offline one. A degraded device still works once the outside comes back (the cable, the switch, the
//! subnet manager): it gets the informational effect `None`, which keeps nothing away, on API servers
//! that accept it (Kubernetes 1.35 and later, [`SliceConfig::informational_taints`](crate::slices::SliceConfig::informational_taints)); older ones get
//! no taint for it. Every unhealthy device, degraded or not, is UNHEALTHY in the kubelet's health
//! stream with its message ([`report`]), and HEALTHY again when it recovers.
//!
//! A device that goes away keeps its name and its last-known view (so claims that hold it still find
//! it) and is `missing` after [`MISSES_FOR_GONE`] reads in a row without it, a rescan interval apart
//! (one missed read is not a lost device; nor are up to [`EXHAUSTED_READS_SKIPPED`] reads in a row
//! that ran out of file descriptors or memory, `hal::ErrorKind::Exhausted`); it is healthy again when the same device (the same PCI
//! address or CPU id) is back. A VF gone while its PF stays was removed on purpose (a lower
//! `sriov_numvfs`) and is forgotten after the same reads, not missing. An XID is sticky while its GPU (its UUID) is at that address, as in
//! NVIDIA's device plugin: an XID often means the GPU needs a reset. Device taints are alpha in
//! Kubernetes 1.34 and 1.35 (`DRADeviceTaints`; without the gate the API server drops them) and beta
//! from 1.36.

mod observe;
mod report;
mod xid;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::inventory::Inventory;
use backends::nvml::xid::{XidEvent, is_critical};
use hal::PciAddress;

pub use crate::slices::health::of_source;
pub use crate::unhealthy::{DeviceKey, MISSING, OFFLINE, Severity, Unhealthy};
use observe::Snapshot;
pub use report::{report, report_of};
pub use xid::{Registered, XID_WAIT, XidWatch, follow_xids, open_xids, watch_xids};

/// Reads in a row that must miss a device before it is "gone": one missed read (a rescan racing a
/// driver reload, a slow sysfs under load) is not a lost device.
pub const MISSES_FOR_GONE: u32 = 2;

/// One device the plugin has seen.
#[derive(Debug)]
struct Tracked {
    /// Its last-known view, put back into the inventory while it is gone or offline.
    snapshot: Snapshot,
    /// Its UUID (GPUs), when known.
    identity: Option<String>,
    /// Consecutive reads without it, and when the first of them was.
    misses: Option<(u32, Instant)>,
    /// Gone: [`MISSING`].
    missing: Option<Unhealthy>,
    /// A critical XID, with the UUID of the GPU it was recorded for.
    xid: Option<Unhealthy>,
    /// What the last read found wrong (a link down, a port not active, offline).
    current: Option<Unhealthy>,
}

impl Tracked {
    /// The one reason published: an XID, else gone, else what the last read found.
    fn worst(&self) -> Option<&Unhealthy> {
        self.xid
            .as_ref()
            .or(self.missing.as_ref())
            .or(self.current.as_ref())
    }
}

/// What the plugin knows of its devices' health across rescans.
#[derive(Debug, Default)]
pub struct Health {
    devices: BTreeMap<DeviceKey, Tracked>,
    /// How long a device must be missing, besides [`MISSES_FOR_GONE`] reads, before it is gone.
    grace: Duration,
    /// Reads in a row that ran out of a resource ([`EXHAUSTED_READS_SKIPPED`]).
    exhausted_reads: u32,
}

/// How many reads in a row that ran out of a resource (EMFILE, ENFILE, ENOMEM, ENOBUFS) count no miss:
/// a burst passes; an error that stays (a device's attribute that always fails so) must not keep a
/// device that fell off the bus from ever being `missing`.
pub const EXHAUSTED_READS_SKIPPED: u32 = 3;

impl Health {
    /// Health whose devices are gone only after [`MISSES_FOR_GONE`] reads without them that span at
    /// least `grace` (the plugin gives its rescan interval): reads come close together after a hotplug
    /// event or an XID, and two of them must not make a device gone.
    pub fn with_grace(grace: Duration) -> Health {
        Health {
            grace,
            ..Health::default()
        }
    }

    /// Records an XID event; true when it makes a GPU unhealthy that was not. Application XIDs (13,
    /// 31, 43, ...) and GPUs never seen are ignored. A critical XID on a GPU NVML could not name
    /// (lost) marks every NVIDIA GPU, as NVIDIA's device plugin does (`internal/rm/health.go`).
    pub fn record_xid(&mut self, event: &XidEvent) -> bool {
        if !is_critical(event.xid) {
            return false;
        }
        let reason = format!("xid-{}", event.xid);
        let Some(uuid) = &event.uuid else {
            let message = format!(
                "NVML reported critical XID {} on a GPU it could not name; every NVIDIA GPU is \
                 marked until the plugin restarts",
                event.xid
            );
            return self.mark_nvidia_gpus(&reason, &message);
        };
        let message = format!(
            "NVML reported critical XID {}; the GPU likely needs a reset",
            event.xid
        );
        self.mark_gpu(uuid, &reason, message)
    }

    /// Records that NVML's event wait failed (`why`): the XIDs of that moment are lost, so every
    /// NVIDIA GPU is marked (reason `nvml-events`), as NVIDIA's device plugin does; true when one
    /// was not already.
    pub fn record_lost_xids(&mut self, why: &str) -> bool {
        let message = format!(
            "waiting for NVML's XID events failed ({why}); every NVIDIA GPU is marked until the \
             plugin restarts"
        );
        self.mark_nvidia_gpus("nvml-events", &message)
    }

    /// Records that NVML could not register the GPU `uuid` for XID events (`why`): its critical
    /// errors would go unseen, so it is marked (`nvml-unwatched`), as NVIDIA's device plugin marks
    /// a device it cannot register. True when it was not marked already; false for a GPU not seen.
    pub fn record_unwatched(&mut self, uuid: &str, why: &str) -> bool {
        let message = format!("NVML cannot watch it for XID events ({why})");
        self.mark_gpu(uuid, "nvml-unwatched", message)
    }

    /// Records that NVML could not even open a GPU when the XID watch started (`why`; which GPU it
    /// is NVML cannot say): every GPU on the `nvidia` driver whose UUID is not among the `watched` ones is marked
    /// (`nvml-unwatched`), as NVIDIA's device plugin marks a device it cannot get a handle of. True
    /// when one was not marked already.
    pub fn record_unopened(&mut self, watched: &[String], why: &str) -> bool {
        let message = format!(
            "NVML could not open a GPU to watch it for XID events ({why}), and this GPU is not among those it watches"
        );
        let mut marked = false;
        for (key, tracked) in &mut self.devices {
            let nvidia = matches!(&tracked.snapshot, Snapshot::Gpu { gpu, .. }
                if gpu.vendor == hal::GpuVendor::Nvidia);
            let seen = tracked
                .identity
                .as_ref()
                .is_some_and(|u| watched.contains(u));
            // A GPU on another driver (vfio-pci: passed through to a VM) is not NVML's to open.
            let on_nvidia = matches!(&tracked.snapshot, Snapshot::Gpu { gpu, .. }
                if gpu.driver.as_deref() == Some(backends::nvidia_gate::NVIDIA_DRIVER));
            if nvidia && on_nvidia && !seen && tracked.xid.is_none() {
                tracing::warn!(device = %key, "GPU unhealthy: {message}");
                tracked.xid = Some(Unhealthy::now(
                    "nvml-unwatched",
                    message.clone(),
                    Severity::Unusable,
                ));
                marked = true;
            }
        }
        marked
    }

    /// Marks the GPU `uuid` with a sticky `reason`; true when it was seen and not marked already.
    fn mark_gpu(&mut self, uuid: &str, reason: &str, message: String) -> bool {
        let found = self.devices.iter_mut().find(|(key, tracked)| {
            matches!(key, DeviceKey::Gpu(_)) && tracked.identity.as_deref() == Some(uuid)
        });
        let Some((key, tracked)) = found else {
            return false;
        };
        if tracked.xid.is_some() {
            return false;
        }
        tracing::warn!(device = %key, %uuid, %reason, "GPU unhealthy: {message}");
        tracked.xid = Some(Unhealthy::now(reason, message, Severity::Unusable));
        true
    }

    /// Marks every NVIDIA GPU not marked yet with a sticky `reason`; true when one was not.
    fn mark_nvidia_gpus(&mut self, reason: &str, message: &str) -> bool {
        let mut marked = false;
        for (key, tracked) in &mut self.devices {
            let nvidia = matches!(&tracked.snapshot, Snapshot::Gpu { gpu, .. }
                if gpu.vendor == hal::GpuVendor::Nvidia);
            if nvidia && tracked.xid.is_none() {
                tracing::warn!(device = %key, %reason, "GPU unhealthy: {message}");
                tracked.xid = Some(Unhealthy::now(
                    reason,
                    message.to_owned(),
                    Severity::Unusable,
                ));
                marked = true;
            }
        }
        marked
    }

    /// Forgets the network functions at `addresses` (withheld from publishing, such as the node's
    /// own NIC): a function not published is not missing.
    pub fn forget_functions(&mut self, addresses: impl IntoIterator<Item = PciAddress>) {
        for address in addresses {
            self.devices.remove(&DeviceKey::Function(address));
        }
    }

    /// Observes every device of `inventory`, brings back devices seen before and missing now (as
    /// they were last seen), marks a device gone after [`MISSES_FOR_GONE`] reads in a row without it
    /// (spanning the grace, see [`Health::with_grace`]), clears "gone" when it is back, clears an XID
    /// when another GPU (another UUID) sits at its address, and records every unhealthy device in
    /// `inventory.health`.
    pub fn apply(&mut self, inventory: &mut Inventory) {
        self.apply_at(inventory, Instant::now());
    }

    /// [`apply`](Self::apply) as of `now`.
    pub fn apply_at(&mut self, inventory: &mut Inventory, now: Instant) {
        let observed = observe::observe(inventory);
        let mut present = std::collections::BTreeSet::new();
        for seen in observed {
            present.insert(seen.key);
            let tracked = match self.devices.get_mut(&seen.key) {
                Some(tracked) => tracked,
                // A device never seen usable (a CPU offline since boot) is not one of ours.
                None if !seen.usable => continue,
                None => self.devices.entry(seen.key).or_insert(Tracked {
                    snapshot: seen.snapshot.clone(),
                    identity: seen.identity.clone(),
                    misses: None,
                    missing: None,
                    xid: None,
                    current: None,
                }),
            };
            tracked.misses = None;
            if tracked.missing.take().is_some() {
                tracing::info!(device = %seen.key, "healthy again: it is back");
            }
            let replaced = tracked.identity.is_some()
                && seen.identity.is_some()
                && tracked.identity != seen.identity;
            if replaced && tracked.xid.take().is_some() {
                tracing::info!(device = %seen.key, uuid = ?seen.identity, "XID cleared: another GPU at its address");
            }
            match seen.usable {
                true => {
                    tracked.snapshot = seen.snapshot;
                    tracked.identity = seen.identity;
                }
                // Offline: the last view it was usable in (an offline CPU has no topology).
                false => tracked.snapshot.restore(inventory),
            }
            tracked.current = match (seen.problem, tracked.current.take()) {
                // The same problem keeps its time, so the published taint does not change.
                (Some(problem), Some(was)) if problem.reason == was.reason => Some(Unhealthy {
                    message: problem.message,
                    ..was
                }),
                (Some(problem), _) => {
                    tracing::warn!(device = %seen.key, reason = %problem.reason, message = %problem.message, "unhealthy");
                    Some(problem)
                }
                (None, Some(was)) => {
                    tracing::info!(device = %seen.key, was = %was.reason, "healthy again");
                    None
                }
                (None, None) => None,
            };
        }
        // A read that ran out of file descriptors or memory left out devices that are there: their
        // absence is not a miss (kept as they were last seen), or one burst of EMFILE would make
        // every device gone, and every prepare refused, for a rescan interval.
        let exhausted = inventory
            .errors
            .iter()
            .find(|e| e.kind == Some(hal::ErrorKind::Exhausted));
        self.exhausted_reads = match exhausted {
            Some(_) => self.exhausted_reads.saturating_add(1),
            None => 0,
        };
        let exhausted = match exhausted {
            Some(error) if self.exhausted_reads <= EXHAUSTED_READS_SKIPPED => {
                tracing::warn!(path = %error.path, error = %error.error,
                    "the rescan ran out of a resource: devices it did not see are kept as they were");
                true
            }
            Some(error) => {
                tracing::warn!(path = %error.path, error = %error.error, reads = self.exhausted_reads,
                    "the rescans keep running out of a resource: devices they do not see count as missed");
                false
            }
            None => false,
        };
        let mut forgotten = Vec::new();
        for (key, tracked) in &mut self.devices {
            if present.contains(key) {
                continue;
            }
            if exhausted {
                tracked.snapshot.restore(inventory);
                continue;
            }
            let (misses, first) = tracked.misses.get_or_insert((0, now));
            *misses = misses.saturating_add(1);
            let gone = *misses >= MISSES_FOR_GONE && now.duration_since(*first) >= self.grace;
            // A VF gone while its PF is here was removed by lowering the PF's `sriov_numvfs` (a VF
            // cannot leave alone): on purpose (an operator, the VF policy), so it is forgotten, not
            // missing; until then it is kept as any device a read missed. A PF withheld from
            // publishing (the node's own NIC, whose VFs are published) is here too.
            let pf_here = tracked.snapshot.pf().is_some_and(|pf| {
                present.contains(&DeviceKey::Function(pf))
                    || present.contains(&DeviceKey::Gpu(pf))
                    || inventory.withheld.iter().any(|f| f.address == pf)
            });
            if gone && pf_here {
                tracing::info!(device = %key, "forgotten: a VF removed with a lower sriov_numvfs");
                forgotten.push(*key);
                continue;
            }
            if gone && tracked.missing.is_none() {
                tracing::warn!(device = %key, "unhealthy: it is gone from the machine");
                tracked.missing = Some(Unhealthy::now(
                    MISSING,
                    missing_message(key),
                    Severity::Unusable,
                ));
            }
            tracked.snapshot.restore(inventory);
        }
        for key in forgotten {
            self.devices.remove(&key);
        }
        observe::sort(inventory);
        inventory.health = self
            .devices
            .iter()
            .filter_map(|(key, tracked)| Some((*key, tracked.worst()?.clone())))
            .collect();
    }
}

/// What the kubelet is told of a device gone.
fn missing_message(key: &DeviceKey) -> String {
    let how = match key {
        DeviceKey::Gpu(_) => "fallen off the bus or removed",
        DeviceKey::Function(_) => {
            "removed, or a VF gone with its PF; healthy again when it is back"
        }
        DeviceKey::Cpu(_) => "hot-removed",
    };
    format!(
        "the {} was seen and is gone from the machine ({how})",
        key.noun()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod gpu_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod family_tests;
