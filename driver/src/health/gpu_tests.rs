//! GPU health: critical XIDs (sticky while the same GPU is there), GPUs gone and back.

use super::*;
use crate::inventory::FixtureVendors as _;
use crate::slices::{SliceConfig, build_slices};
use backends::nvml::xid::XidEvent;
use std::sync::Arc;

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
        uuid: Some(uuid.clone()),
        xid: 13
    }));
    assert!(health.record_xid(&XidEvent {
        uuid: Some(uuid.clone()),
        xid: 79
    }));
    assert!(
        !health.record_xid(&XidEvent {
            uuid: Some(uuid),
            xid: 48
        }),
        "already unhealthy"
    );
    assert!(!health.record_xid(&XidEvent {
        uuid: Some("GPU-unknown".into()),
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
    assert_eq!(
        dra_kubelet_plugin::slices::validate_pool(
            &slices,
            dra_kubelet_plugin::slices::KubeVersion::V1_34
        ),
        []
    );
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
    assert_eq!(after.health[&DeviceKey::Gpu(gone)].reason, MISSING);
}

#[test]
fn the_kubelet_hears_every_published_device_and_why_an_unhealthy_one_is() {
    let mut health = Health::default();
    let mut inventory = gb300();
    health.apply(&mut inventory);
    let uuid = inventory.gpus[1].uuid.clone().unwrap();
    assert!(health.record_xid(&XidEvent {
        uuid: Some(uuid),
        xid: 79
    }));
    let mut inventory = gb300();
    health.apply(&mut inventory);
    let config = SliceConfig::new("n");
    let devices = crate::slices::devices::devices(&inventory, &config);
    let report = report(&inventory, &config, 1_700_000_000, 180);
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
        missing_message(&DeviceKey::Gpu(inventory.gpus[1].pci_address)),
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
    assert_eq!(missing.health[&DeviceKey::Gpu(gone)].reason, MISSING);
    health.apply(&mut back);
    assert!(back.health.is_empty(), "{:?}", back.health);
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
        uuid: Some(uuid.clone()),
        xid: 79
    }));
    let mut inventory = gb300();
    health.apply(&mut inventory);
    assert_eq!(inventory.health[&DeviceKey::Gpu(gone)].reason, "xid-79");
    health.apply(&mut without());
    health.apply(&mut without());
    let mut inventory = gb300();
    health.apply(&mut inventory);
    assert_eq!(
        inventory.health[&DeviceKey::Gpu(gone)].reason,
        "xid-79",
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
    assert!(replaced.health.is_empty(), "{:?}", replaced.health);
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
        assert!(inventory.health.is_empty(), "{ms} ms");
    }
    let mut inventory = without();
    health.apply_at(&mut inventory, start + Duration::from_millis(10) + grace);
    assert_eq!(inventory.health[&DeviceKey::Gpu(gone)].reason, MISSING);
}

/// The unhealthy reason of each GPU of `inventory` (after `health.apply`), by index.
fn reasons(health: &mut Health) -> Vec<Option<String>> {
    let mut inventory = gb300();
    health.apply(&mut inventory);
    let gpus: Vec<_> = inventory.gpus.iter().map(|g| g.pci_address).collect();
    gpus.iter()
        .map(|a| {
            let key = DeviceKey::Gpu(*a);
            inventory.health.get(&key).map(|u| u.reason.clone())
        })
        .collect()
}

#[test]
fn a_critical_xid_on_a_gpu_nvml_cannot_name_marks_every_nvidia_gpu() {
    let mut health = Health::default();
    health.apply(&mut gb300());
    let lost = XidEvent {
        uuid: None,
        xid: 79,
    };
    assert!(health.record_xid(&lost));
    assert!(!health.record_xid(&lost), "already marked");
    assert_eq!(reasons(&mut health), vec![Some("xid-79".to_owned()); 4]);
}

/// NVML's answers played in order; `done` once they are all delivered.
struct Script {
    answers: std::collections::VecDeque<Result<Vec<XidEvent>, String>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl backends::nvml::xid::XidSource for Script {
    fn wait(&mut self, _timeout: Duration) -> Result<Vec<XidEvent>, String> {
        let answer = self.answers.pop_front().unwrap_or(Ok(Vec::new()));
        if self.answers.is_empty() {
            self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        answer
    }
}

#[test]
fn the_xid_watch_goes_on_after_a_failed_wait_and_marks_the_gpus_whose_events_were_lost() {
    let mut health = Health::default();
    let inventory = {
        let mut inventory = gb300();
        health.apply(&mut inventory);
        inventory
    };
    let uuid = inventory.gpus[1].uuid.clone().unwrap();
    let lost_after = XidEvent {
        uuid: Some(inventory.gpus[3].uuid.clone().unwrap()),
        xid: 48,
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut script = Script {
        answers: [
            Ok(vec![XidEvent {
                uuid: Some(uuid),
                xid: 79,
            }]),
            Err("GPU is lost".to_owned()),
            Err("GPU is lost".to_owned()),
            Ok(vec![lost_after]),
        ]
        .into(),
        done: done.clone(),
    };
    let health = std::sync::Mutex::new(health);
    let changed = std::sync::atomic::AtomicUsize::new(0);
    follow_xids(
        &mut script,
        &health,
        &|| {
            changed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        },
        &|| done.load(std::sync::atomic::Ordering::SeqCst),
        Duration::ZERO,
    );
    assert!(
        script.answers.is_empty(),
        "the watch went on after the failures"
    );
    // The XID, then the first failed wait (the second changed nothing).
    assert_eq!(changed.load(std::sync::atomic::Ordering::SeqCst), 2);
    let mut health = health.into_inner().unwrap();
    let nvml = Some("nvml-events".to_owned());
    let xid = Some("xid-79".to_owned());
    assert_eq!(
        reasons(&mut health),
        [nvml.clone(), xid, nvml.clone(), nvml]
    );
}

#[test]
fn gpus_not_watched_when_nvml_could_not_open_one_are_marked_unwatched() {
    let mut health = Health::default();
    let mut inventory = gb300();
    assert!(
        inventory
            .gpus
            .iter()
            .all(|g| g.driver.as_deref() == Some("nvidia"))
    );
    // The second is passed through to a VM: not NVML's to open.
    inventory.gpus[1].driver = Some("vfio-pci".to_owned());
    health.apply(&mut inventory);
    let uuid = |i: usize| inventory.gpus[i].uuid.clone().unwrap();
    // NVML opened and watches two of the three on nvidia; which one it could not open it cannot say.
    let watched = [uuid(0), uuid(3)];
    assert!(health.record_unopened(&watched, "GPU 2: GPU is lost"));
    assert!(
        !health.record_unopened(&watched, "GPU 2: GPU is lost"),
        "already"
    );
    let unwatched = Some("nvml-unwatched".to_owned());
    assert_eq!(reasons(&mut health), [None, None, unwatched, None]);
}

#[test]
fn a_gpu_nvml_cannot_register_for_xid_events_is_marked_unwatched() {
    let mut health = Health::default();
    let mut inventory = gb300();
    health.apply(&mut inventory);
    let uuid = inventory.gpus[2].uuid.clone().unwrap();
    assert!(health.record_unwatched(&uuid, "Not Supported"));
    assert!(!health.record_unwatched(&uuid, "Not Supported"), "already");
    assert!(!health.record_unwatched("GPU-unknown", "Not Supported"));
    let unwatched = Some("nvml-unwatched".to_owned());
    assert_eq!(reasons(&mut health), [None, None, unwatched, None]);
}

/// A rescan that ran out of file descriptors (EMFILE while listing the PCI devices) sees no GPU:
/// that is no miss, for up to `EXHAUSTED_READS_SKIPPED` reads in a row; the GPUs stay published as
/// they were, untainted. A read without the error afterwards counts again, and so do reads of an
/// error that stays.
#[test]
fn a_rescan_that_ran_out_of_file_descriptors_makes_no_device_gone() {
    let mut health = Health::default();
    health.apply(&mut gb300());
    let exhausted = || {
        let mut inventory = gb300();
        inventory.gpus.clear();
        inventory.pci.clear();
        inventory.errors.push(hal::InventoryError {
            path: "/sys/bus/pci/devices".into(),
            error: "Too many open files (os error 24)".into(),
            kind: Some(hal::ErrorKind::from_io(&std::io::Error::from_raw_os_error(
                24,
            ))),
        });
        inventory
    };
    for _ in 0..EXHAUSTED_READS_SKIPPED {
        let mut inventory = exhausted();
        health.apply(&mut inventory);
        assert!(inventory.health.is_empty(), "{:?}", inventory.health);
        assert_eq!(inventory.gpus.len(), 4, "kept as last seen");
    }
    // An error that stays: after that many reads, the devices not seen count as missed again,
    // and are gone after MISSES_FOR_GONE of them.
    let mut health_staying = Health::default();
    health_staying.apply(&mut gb300());
    let first = DeviceKey::Gpu(inventory_gpu(&gb300(), 0));
    for read in 1..=EXHAUSTED_READS_SKIPPED + MISSES_FOR_GONE {
        let mut inventory = exhausted();
        health_staying.apply(&mut inventory);
        let reason = inventory.health.get(&first).map(|u| u.reason.as_str());
        match read {
            r if r < EXHAUSTED_READS_SKIPPED + MISSES_FOR_GONE => {
                assert_eq!(reason, None, "read {read}")
            }
            _ => assert_eq!(reason, Some(MISSING), "read {read}"),
        }
    }
    // Reads without the error count from the first: fewer than MISSES_FOR_GONE misses are not
    // gone (the GPU is kept as last seen), the MISSES_FOR_GONE-th is.
    let gone = hal::PciAddress::parse("0008:06:00.0").unwrap();
    for read in 1..=MISSES_FOR_GONE {
        let mut inventory = gb300();
        inventory.gpus.retain(|g| g.pci_address != gone);
        inventory.pci.retain(|f| f.address != gone);
        health.apply(&mut inventory);
        if read < MISSES_FOR_GONE {
            assert!(
                inventory.health.is_empty(),
                "read {read}: {:?}",
                inventory.health
            );
            assert_eq!(inventory.gpus.len(), 4, "read {read}: kept as last seen");
        } else {
            assert_eq!(
                inventory.health.keys().collect::<Vec<_>>(),
                [&DeviceKey::Gpu(gone)],
                "read {read}"
            );
            assert_eq!(inventory.health[&DeviceKey::Gpu(gone)].reason, MISSING);
        }
    }
}

fn inventory_gpu(inventory: &Inventory, i: usize) -> hal::PciAddress {
    inventory.gpus[i].pci_address
}
