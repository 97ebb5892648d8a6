//! GPU health: a GPU that reported a critical XID through NVML, or that was seen and is gone (fallen
//! off the bus, removed), is published with the taint `<driver>/unhealthy=<reason>:NoSchedule`
//! (`xid-79`, `missing`), so the scheduler gives it to no new claim that does not tolerate it, and it is
//! reported in the log and to the kubelet ([`report`]). A missing GPU keeps its name and attributes
//! (its last-known view), so claims that hold it still find it, and Prepare refuses it. A GPU is gone
//! after [`MISSES_FOR_GONE`] reads in a row without it, a rescan interval apart (one missed read is
//! not a lost GPU), and healthy again when it is back. An XID is sticky while its GPU (its UUID) is at that address, as in NVIDIA's
//! device plugin: an XID often means the GPU needs a reset. Device taints are alpha in Kubernetes 1.34
//! and 1.35 (`DRADeviceTaints`; without the gate the API server drops them) and beta from 1.36.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::inventory::Inventory;
pub use crate::inventory::Unhealthy;
use backends::nvml::xid::{XidEvent, is_critical};
use hal::{GpuInfo, PciAddress, PciFunction};

/// The reason of a GPU seen before and gone from the machine now.
pub const MISSING: &str = "missing";

/// What the plugin knows of its GPUs' health across rescans.
#[derive(Debug, Default)]
pub struct Health {
    seen: BTreeMap<PciAddress, (GpuInfo, Option<PciFunction>)>,
    unhealthy: BTreeMap<PciAddress, Unhealthy>,
    /// The UUID of the GPU an XID was recorded for, by address: the taint stays while that GPU is
    /// there and goes with it.
    xid_uuid: BTreeMap<PciAddress, Option<String>>,
    /// Consecutive reads that did not find a GPU seen before, and when the first of them was.
    misses: BTreeMap<PciAddress, (u32, Instant)>,
    /// How long a GPU must be missing, besides [`MISSES_FOR_GONE`] reads, before it is gone.
    grace: Duration,
}

/// Reads in a row that must miss a GPU before it is "gone": one missed read (a rescan racing a
/// driver reload, a slow sysfs under load) is not a lost GPU.
pub const MISSES_FOR_GONE: u32 = 2;

impl Health {
    /// Health whose GPUs are gone only after [`MISSES_FOR_GONE`] reads without them that span at least
    /// `grace` (the plugin gives its rescan interval): reads come close together after a hotplug event
    /// or an XID, and two of them must not make a GPU gone.
    pub fn with_grace(grace: Duration) -> Health {
        Health {
            grace,
            ..Health::default()
        }
    }

    /// Records an XID event; true when it makes a GPU unhealthy that was not. Application XIDs (13,
    /// 31, 43, ...) and GPUs never seen are ignored.
    pub fn record_xid(&mut self, event: &XidEvent) -> bool {
        if !is_critical(event.xid) {
            return false;
        }
        let found = self
            .seen
            .iter()
            .find(|(_, (gpu, _))| gpu.uuid.as_deref() == Some(event.uuid.as_str()))
            .map(|(address, _)| *address);
        let Some(address) = found else {
            return false;
        };
        if self
            .unhealthy
            .get(&address)
            .is_some_and(|u| u.reason != MISSING)
        {
            return false;
        }
        let reason = format!("xid-{}", event.xid);
        tracing::warn!(gpu = %address, uuid = %event.uuid, %reason, "GPU unhealthy: critical XID");
        self.unhealthy.insert(address, Unhealthy::now(reason));
        self.xid_uuid.insert(address, Some(event.uuid.clone()));
        true
    }

    /// Brings back GPUs seen before and missing now (as they were last seen), marks a GPU gone after
    /// [`MISSES_FOR_GONE`] reads in a row without it (spanning the grace, see [`Health::with_grace`]), clears "gone" when it is back, clears an XID
    /// when another GPU (another UUID) sits at its address, and marks every unhealthy GPU in
    /// `inventory.gpu_health`. An XID stays while its GPU is there: it usually needs a reset.
    pub fn apply(&mut self, inventory: &mut Inventory) {
        self.apply_at(inventory, Instant::now());
    }

    /// [`apply`](Self::apply) as of `now`.
    pub fn apply_at(&mut self, inventory: &mut Inventory, now: Instant) {
        for gpu in &inventory.gpus {
            let address = gpu.pci_address;
            self.misses.remove(&address);
            let back = self
                .unhealthy
                .get(&address)
                .is_some_and(|u| u.reason == MISSING);
            let replaced = self
                .xid_uuid
                .get(&address)
                .is_some_and(|uuid| uuid.is_some() && gpu.uuid.is_some() && *uuid != gpu.uuid);
            if back || replaced {
                tracing::info!(gpu = %address, uuid = ?gpu.uuid, "GPU healthy again: it is back");
                self.unhealthy.remove(&address);
                self.xid_uuid.remove(&address);
            }
            let function = inventory.function(address).cloned();
            self.seen.insert(address, (gpu.clone(), function));
        }
        let present: Vec<PciAddress> = inventory.gpus.iter().map(|g| g.pci_address).collect();
        for (address, (gpu, function)) in &self.seen {
            if present.contains(address) {
                continue;
            }
            let (misses, first) = self.misses.entry(*address).or_insert((0, now));
            *misses = misses.saturating_add(1);
            let gone = *misses >= MISSES_FOR_GONE && now.duration_since(*first) >= self.grace;
            if gone && !self.unhealthy.contains_key(address) {
                tracing::warn!(gpu = %address, "GPU unhealthy: it is gone from the machine");
                self.unhealthy
                    .insert(*address, Unhealthy::now(MISSING.into()));
            }
            inventory.gpus.push(gpu.clone());
            if let Some(function) = function
                && inventory.function(*address).is_none()
            {
                inventory.pci.push(function.clone());
            }
        }
        inventory.gpus.sort_by_key(|g| g.pci_address);
        inventory.pci.sort_by_key(|f| f.address);
        inventory.gpu_health = self.unhealthy.clone();
    }
}

/// What the kubelet is told of every published device (`DRAResourceHealth`): a device carrying this
/// driver's `unhealthy` taint (a critical XID, a GPU gone) is UNHEALTHY with the reason, every other
/// published device HEALTHY, all checked at `now` (Unix seconds). The kubelet takes a device as
/// unknown when no report came within `timeout_seconds`.
pub fn report(
    devices: &[k8s_openapi::api::resource::v1::Device],
    config: &crate::slices::SliceConfig,
    now: i64,
    timeout_seconds: i64,
) -> crate::plugin::api::HealthReport {
    use crate::plugin::api::{DeviceHealth, HealthReport, HealthStatus};
    let key = format!("{}/unhealthy", config.driver_name);
    let devices = devices
        .iter()
        .map(|device| {
            let taint = device
                .taints
                .iter()
                .flatten()
                .find(|taint| taint.key == key);
            let (status, message) = match taint {
                Some(taint) => (
                    HealthStatus::Unhealthy,
                    describe(taint.value.as_deref().unwrap_or_default()),
                ),
                None => (HealthStatus::Healthy, String::new()),
            };
            DeviceHealth {
                pool_name: config.node_name.clone(),
                device_name: device.name.clone(),
                status,
                last_updated: now,
                message,
            }
        })
        .collect();
    HealthReport {
        devices,
        timeout_seconds,
    }
}

/// A person's words for an unhealthy reason (`xid-79`, `missing`).
fn describe(reason: &str) -> String {
    if reason == MISSING {
        return "the GPU was seen and is gone from the machine (fallen off the bus or removed)"
            .into();
    }
    match reason.strip_prefix("xid-") {
        Some(xid) => format!("NVML reported critical XID {xid}; the GPU likely needs a reset"),
        None => reason.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::inventory::FixtureVendors as _;
    use crate::slices::{SliceConfig, build_slices};

    fn gb300() -> Inventory {
        let machine = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
        let root = backends::SysfsRoot::new(machine.root());
        Inventory::from_machine(
            &root,
            None,
            crate::inventory::Vendors::for_machine(Some("gb300")),
        )
    }

    fn taints(inventory: &Inventory, device: &str) -> Vec<(String, String)> {
        build_slices(inventory, &SliceConfig::new("n"), 1)
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .find(|d| d.name == device)
            .unwrap()
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                (
                    t.key,
                    format!("{}:{}", t.value.unwrap_or_default(), t.effect),
                )
            })
            .collect()
    }

    #[test]
    fn a_critical_xid_taints_its_gpu_and_an_application_xid_does_not() {
        let mut health = Health::default();
        let mut inventory = gb300();
        health.apply(&mut inventory);
        let uuid = inventory.gpus[1].uuid.clone().unwrap();
        assert!(!health.record_xid(&XidEvent {
            uuid: uuid.clone(),
            xid: 13
        }));
        assert!(health.record_xid(&XidEvent {
            uuid: uuid.clone(),
            xid: 79
        }));
        assert!(
            !health.record_xid(&XidEvent { uuid, xid: 48 }),
            "already unhealthy"
        );
        assert!(!health.record_xid(&XidEvent {
            uuid: "GPU-unknown".into(),
            xid: 79
        }));
        let mut inventory = gb300();
        health.apply(&mut inventory);
        let name = format!(
            "gpu-{}",
            crate::slices::names::address_label(inventory.gpus[1].pci_address)
        );
        assert_eq!(
            taints(&inventory, &name),
            [(
                "hal.dra.dev/unhealthy".to_owned(),
                "xid-79:NoSchedule".to_owned()
            )]
        );
        assert_eq!(taints(&inventory, "gpu-0008-06-00-0"), []);
        // The slices with a taint stay valid (64 devices per slice at most).
        let slices = build_slices(&inventory, &SliceConfig::new("n"), 1);
        assert_eq!(crate::slices::validate::validate_pool(&slices), []);
    }

    #[test]
    fn a_gpu_that_goes_away_stays_published_as_missing() {
        let mut health = Health::default();
        let mut before = gb300();
        health.apply(&mut before);
        let attributes = |inventory: &Inventory| {
            build_slices(inventory, &SliceConfig::new("n"), 1)
                .iter()
                .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
                .find(|d| d.name == "gpu-0008-06-00-0")
                .unwrap()
                .attributes
        };
        let was = attributes(&before);
        let mut after = gb300();
        let gone = hal::PciAddress::parse("0008:06:00.0").unwrap();
        after.gpus.retain(|g| g.pci_address != gone);
        after.pci.retain(|f| f.address != gone);
        let without = after.clone();
        health.apply(&mut after);
        assert_eq!(
            taints(&after, "gpu-0008-06-00-0"),
            [],
            "one missed rescan keeps it published, untainted"
        );
        let mut after = without;
        health.apply(&mut after);
        assert_eq!(
            taints(&after, "gpu-0008-06-00-0"),
            [(
                "hal.dra.dev/unhealthy".to_owned(),
                "missing:NoSchedule".to_owned()
            )]
        );
        assert_eq!(
            attributes(&after),
            was,
            "the last-known view, same name and attributes"
        );
        assert_eq!(after.gpu_health[&gone].reason, MISSING);
    }

    #[test]
    fn the_kubelet_hears_every_published_device_and_why_an_unhealthy_one_is() {
        let mut health = Health::default();
        let mut inventory = gb300();
        health.apply(&mut inventory);
        let uuid = inventory.gpus[1].uuid.clone().unwrap();
        assert!(health.record_xid(&XidEvent { uuid, xid: 79 }));
        let mut inventory = gb300();
        health.apply(&mut inventory);
        let config = SliceConfig::new("n");
        let devices = crate::slices::devices::devices(&inventory, &config);
        let report = report(&devices, &config, 1_700_000_000, 180);
        assert_eq!(report.timeout_seconds, 180);
        assert_eq!(
            report.devices.len(),
            devices.len(),
            "every published device"
        );
        let name = format!(
            "gpu-{}",
            crate::slices::names::address_label(inventory.gpus[1].pci_address)
        );
        for device in &report.devices {
            assert_eq!(device.pool_name, "n");
            assert_eq!(device.last_updated, 1_700_000_000);
            if device.device_name == name {
                assert_eq!(device.status, crate::plugin::api::HealthStatus::Unhealthy);
                assert!(
                    device.message.contains("critical XID 79"),
                    "{}",
                    device.message
                );
            } else {
                assert_eq!(
                    device.status,
                    crate::plugin::api::HealthStatus::Healthy,
                    "{device:?}"
                );
                assert_eq!(device.message, "");
            }
        }
        assert_eq!(
            describe(MISSING),
            "the GPU was seen and is gone from the machine (fallen off the bus or removed)"
        );
    }

    #[test]
    fn a_gone_gpu_that_comes_back_is_healthy_and_an_xid_goes_only_with_its_gpu() {
        let gone = hal::PciAddress::parse("0008:06:00.0").unwrap();
        let without = || {
            let mut inventory = gb300();
            inventory.gpus.retain(|g| g.pci_address != gone);
            inventory.pci.retain(|f| f.address != gone);
            inventory
        };
        let mut health = Health::default();
        health.apply(&mut gb300());
        health.apply(&mut without());
        health.apply(&mut without());
        let mut back = gb300();
        assert_eq!(
            taints(&back, "gpu-0008-06-00-0"),
            [],
            "a fresh inventory has no taint"
        );
        let mut missing = without();
        health.apply(&mut missing);
        assert_eq!(missing.gpu_health[&gone].reason, MISSING);
        health.apply(&mut back);
        assert!(back.gpu_health.is_empty(), "{:?}", back.gpu_health);
        assert_eq!(taints(&back, "gpu-0008-06-00-0"), []);

        // An XID is sticky while its GPU is there, gone or not, ...
        let uuid = back
            .gpus
            .iter()
            .find(|g| g.pci_address == gone)
            .unwrap()
            .uuid
            .clone()
            .unwrap();
        assert!(health.record_xid(&XidEvent {
            uuid: uuid.clone(),
            xid: 79
        }));
        let mut inventory = gb300();
        health.apply(&mut inventory);
        assert_eq!(inventory.gpu_health[&gone].reason, "xid-79");
        health.apply(&mut without());
        health.apply(&mut without());
        let mut inventory = gb300();
        health.apply(&mut inventory);
        assert_eq!(
            inventory.gpu_health[&gone].reason, "xid-79",
            "the same GPU came back"
        );
        // ... and goes when another GPU (a replacement) sits at its address.
        let mut replaced = gb300();
        for gpu in &mut replaced.gpus {
            if gpu.pci_address == gone {
                gpu.uuid = Some("GPU-replacement".into());
            }
        }
        health.apply(&mut replaced);
        assert!(replaced.gpu_health.is_empty(), "{:?}", replaced.gpu_health);
    }

    #[test]
    fn reads_close_together_do_not_make_a_gpu_gone_within_the_grace() {
        let gone = hal::PciAddress::parse("0008:06:00.0").unwrap();
        let without = || {
            let mut inventory = gb300();
            inventory.gpus.retain(|g| g.pci_address != gone);
            inventory.pci.retain(|f| f.address != gone);
            inventory
        };
        let grace = Duration::from_secs(60);
        let mut health = Health::with_grace(grace);
        let start = Instant::now();
        health.apply_at(&mut gb300(), start);
        // A hotplug event and an XID: three reads within a second.
        for ms in [10, 500, 900] {
            let mut inventory = without();
            health.apply_at(&mut inventory, start + Duration::from_millis(ms));
            assert!(inventory.gpu_health.is_empty(), "{ms} ms");
        }
        let mut inventory = without();
        health.apply_at(&mut inventory, start + Duration::from_millis(10) + grace);
        assert_eq!(inventory.gpu_health[&gone].reason, MISSING);
    }
}
