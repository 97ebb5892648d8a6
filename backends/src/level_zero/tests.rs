use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{SysfsGpu, SysfsRoot};

fn answers() -> Vec<ZeGpu> {
    serde_json::from_str(hal_mock::level_zero_answers("i915").unwrap()).unwrap()
}

fn gpus(name: &str, api: impl LevelZeroApi + 'static) -> Discovered<GpuInfo> {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let backend = LevelZeroGpus::new(SysfsGpu::new(SysfsRoot::new(machine.root())), Box::new(api));
    backend.gpus().unwrap()
}

#[test]
fn i915_flex_gpus_get_level_zero_facts_merged_by_pci_address() {
    let found = gpus("i915", FakeLevelZero(Ok(answers())));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    let flex: Vec<_> = found
        .items
        .iter()
        .filter(|g| g.vendor == GpuVendor::Intel)
        .collect();
    assert_eq!(flex.len(), 2);
    for gpu in flex {
        assert_eq!(gpu.device_id, Some(0x56c0));
        assert_eq!(
            gpu.product.as_deref(),
            Some("Intel(R) Data Center GPU Flex 170")
        );
        assert_eq!(gpu.memory_bytes, Some(14_248 * 1024 * 1024));
        assert_eq!(gpu.tiles, Some(1));
        assert_eq!(gpu.execution_units, Some(512));
    }
    // The BMC's VGA is no Level Zero device: left as sysfs describes it.
    let bmc = found
        .items
        .iter()
        .find(|g| g.vendor != GpuVendor::Intel)
        .unwrap();
    assert_eq!((bmc.tiles, bmc.execution_units), (None, None));
}

#[test]
fn a_missing_loader_is_reported_once_and_sysfs_goes_on() {
    let machine = hal_mock::by_name("i915").unwrap().materialize().unwrap();
    let api = FakeLevelZero(Err(
        "Level Zero unavailable: libze_loader.so.1: not found".into()
    ));
    let backend = LevelZeroGpus::new(SysfsGpu::new(SysfsRoot::new(machine.root())), Box::new(api));
    let first = backend.gpus().unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.items.iter().all(|g| g.tiles.is_none()));
    assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
    assert_eq!(first.errors[0].path, LOADER);
    assert!(
        first.errors[0]
            .error
            .contains("Intel GPUs are described from sysfs alone")
    );
    assert!(backend.gpus().unwrap().errors.is_empty(), "said once");
}

/// Counts the queries.
struct Counting(Arc<AtomicUsize>);

impl LevelZeroApi for Counting {
    fn query(&self) -> std::result::Result<Vec<ZeGpu>, String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err("asked".into())
    }
}

#[test]
fn machines_without_intel_gpus_never_ask_level_zero() {
    let queries = Arc::new(AtomicUsize::new(0));
    let found = gpus("gb300", Counting(queries.clone()));
    assert_eq!(found.items.len(), 4);
    assert!(found.errors.is_empty());
    assert_eq!(queries.load(Ordering::Relaxed), 0);
    // The i915 host has Intel GPUs: asked.
    gpus("i915", Counting(queries.clone()));
    assert_eq!(queries.load(Ordering::Relaxed), 1);
}

#[test]
fn disagreements_unreadable_devices_and_devices_sysfs_does_not_show_are_errors() {
    let mut answers = answers();
    answers[0].device_id = 0x56c1;
    answers[1].memory_bytes = Some(16 << 30);
    answers.push(ZeGpu {
        pci_address: "0000:99:00.0".into(),
        name: "ghost".into(),
        ..Default::default()
    });
    answers.push(ZeGpu {
        pci_address: "garbage".into(),
        ..Default::default()
    });
    answers.push(ZeGpu {
        error: Some("zeDevicePciGetPropertiesExt returned 0x78000003".into()),
        ..Default::default()
    });
    let found = gpus("i915", FakeLevelZero(Ok(answers)));
    let errors: Vec<_> = found
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].1.contains("\"garbage\""), "{errors:?}");
    assert!(
        errors[1].1.contains("could not read a device: zeDevicePci"),
        "{errors:?}"
    );
    assert_eq!(errors[2].0, "level-zero/0000:4d:00.0");
    assert!(
        errors[2]
            .1
            .contains("sysfs says 0x56c0, Level Zero says 0x56c1"),
        "{errors:?}"
    );
    assert_eq!(errors[3].0, "level-zero/0000:99:00.0");
    assert!(errors[3].1.contains("sysfs does not show; left out"));
    // A mismatched device keeps its sysfs view; sysfs's local memory wins over the runtime's.
    let by = |a: &str| {
        found
            .items
            .iter()
            .find(|g| g.pci_address.to_string() == a)
            .unwrap()
    };
    assert_eq!(by("0000:4d:00.0").product, None);
    assert_eq!(by("0000:4d:00.0").tiles, None);
    assert_eq!(by("0000:ca:00.0").memory_bytes, Some(14_940_110_848));
    assert_eq!(by("0000:ca:00.0").tiles, Some(1));
    assert_eq!(
        found.items.len(),
        3,
        "a device sysfs does not show is not added"
    );
}

#[test]
fn tiles_listed_as_devices_of_one_address_are_added_up() {
    // A flat hierarchy lists each tile of a two-tile GPU as a device at the GPU's address; a
    // composite one lists the GPU with two sub-devices. Both are one GPU of two tiles.
    let tile = |eus, memory| ZeGpu {
        pci_address: "0000:4d:00.0".into(),
        name: "Intel(R) Data Center GPU Flex 170".into(),
        vendor_id: 0x8086,
        device_id: 0x56c0,
        memory_bytes: Some(memory),
        execution_units: Some(eus),
        ..Default::default()
    };
    let mut machine = hal_mock::by_name("i915").unwrap();
    machine
        .gpus
        .iter_mut()
        .for_each(|g| g.lmem_total_bytes = None);
    let rendered = machine.materialize().unwrap();
    let read = |answers: Vec<ZeGpu>| {
        let sysfs = SysfsGpu::new(SysfsRoot::new(rendered.root()));
        let found = LevelZeroGpus::new(sysfs, Box::new(FakeLevelZero(Ok(answers))));
        found.gpus().unwrap().items.remove(1)
    };
    let flat = read(vec![tile(256, 1 << 30), tile(256, 1 << 30)]);
    assert_eq!((flat.tiles, flat.execution_units), (Some(2), Some(512)));
    assert_eq!(
        flat.memory_bytes,
        Some(2 << 30),
        "sysfs has none: Level Zero's sum"
    );
    let mut whole = tile(512, 2 << 30);
    whole.sub_devices = 2;
    let composite = read(vec![whole]);
    assert_eq!(
        (composite.tiles, composite.execution_units),
        (Some(2), Some(512))
    );
    // An integrated GPU's memory is the host's.
    let mut integrated = tile(512, 2 << 30);
    integrated.integrated = true;
    assert_eq!(read(vec![integrated]).memory_bytes, None);
}

/// One tile of a two-tile GPU could not be read: the GPU is not published as a smaller one (one
/// tile, half the memory and EUs); the error names it.
#[test]
fn a_gpu_with_an_unreadable_tile_keeps_its_sysfs_view_and_its_error_names_it() {
    let mut answers = answers();
    let mut tile = answers[0].clone();
    tile.error = Some("zeDeviceGetMemoryProperties returned 0x70000001".into());
    answers.push(tile);
    let found = gpus("i915", FakeLevelZero(Ok(answers)));
    let errors: Vec<_> = found
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [(
            "level-zero/0000:4d:00.0",
            "Level Zero could not read a device: zeDeviceGetMemoryProperties returned 0x70000001; \
             Level Zero's answers for this GPU are not used"
        )]
    );
    let by = |a: &str| {
        found
            .items
            .iter()
            .find(|g| g.pci_address.to_string() == a)
            .unwrap()
    };
    assert_eq!(
        (by("0000:4d:00.0").tiles, by("0000:4d:00.0").execution_units),
        (None, None)
    );
    assert_eq!(
        by("0000:ca:00.0").tiles,
        Some(1),
        "the other GPU is described"
    );
}

/// The PCI functions sysfs shows as Intel GPUs: vendor 0x8086, display class (0x03xxxx), bound to
/// a GPU driver (`i915`, `xe`).
#[cfg(feature = "level-zero")]
fn intel_gpus_in_sysfs() -> std::collections::BTreeSet<PciAddress> {
    let mut gpus = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return gpus;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
        let driver = std::fs::read_link(path.join("driver")).unwrap_or_default();
        if read("vendor").trim() == "0x8086"
            && read("class").trim().starts_with("0x03")
            && driver
                .file_name()
                .is_some_and(|name| name == "i915" || name == "xe")
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            gpus.insert(PciAddress::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
    }
    gpus
}

/// The real loader, where the machine has one (CI installs libze-dev, with no Intel GPU driver):
/// every GPU it lists is one sysfs shows as an Intel GPU (none where there is none); where it
/// cannot answer it says it has no driver (`zeInit` answers `ZE_RESULT_ERROR_UNINITIALIZED`) or no
/// loader. Never a panic.
#[cfg(feature = "level-zero")]
#[test]
fn the_real_loader_answers_or_says_why() {
    let in_sysfs = intel_gpus_in_sysfs();
    match RealLevelZero.query() {
        Ok(gpus) => {
            for gpu in gpus {
                let address =
                    PciAddress::parse(&gpu.pci_address).unwrap_or_else(|e| panic!("{gpu:?}: {e}"));
                assert!(
                    in_sysfs.contains(&address),
                    "Level Zero lists {address}, sysfs shows Intel GPUs {in_sysfs:?}"
                );
            }
        }
        Err(why) => {
            let no_driver = format!(
                "Level Zero unavailable: zeInit returned {:#x}",
                bindings::ZE_RESULT_ERROR_UNINITIALIZED
            );
            let no_loader = why.starts_with("Level Zero unavailable: ") && why.contains(LOADER);
            assert!(why == no_driver || no_loader, "{why}");
        }
    }
}
