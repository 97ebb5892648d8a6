use super::*;
use crate::{SysfsGpu, SysfsRoot};

fn answers(name: &str) -> NvmlSystem {
    serde_json::from_str(hal_mock::nvml_answers(name).unwrap()).unwrap()
}

fn gpus(name: &str, api: FakeNvml) -> Discovered<GpuInfo> {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let backend = NvmlGpus::new(SysfsGpu::new(SysfsRoot::new(machine.root())), Box::new(api));
    backend.gpus().unwrap()
}

#[test]
fn gb300_gets_nvml_facts_merged_by_pci_address() {
    let found = gpus("gb300", FakeNvml(Ok(answers("gb300"))));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(found.items.len(), 4);
    for (i, gpu) in found.items.iter().enumerate() {
        assert_eq!(gpu.product.as_deref(), Some("NVIDIA GB300"));
        assert_eq!(gpu.architecture.as_deref(), Some("Blackwell"));
        assert_eq!(gpu.compute_capability.as_deref(), Some("10.3"));
        assert_eq!(gpu.driver_version.as_deref(), Some("580.105.08"));
        assert_eq!(gpu.cuda_driver_version.as_deref(), Some("13.0"));
        assert_eq!(gpu.memory_bytes, Some(284_208 * 1024 * 1024));
        assert_eq!(gpu.nvidia_minor, Some(i as u32));
        assert_eq!(gpu.mig_enabled, Some(false));
    }
    assert_eq!(found.items[2].pci_address.to_string(), "0018:06:00.0");
}

#[test]
fn a_missing_library_is_reported_once_and_sysfs_goes_on() {
    let machine = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
    let api = FakeNvml(Err(
        "NVML unavailable: libnvidia-ml.so.1: cannot open shared object file".into(),
    ));
    let backend = NvmlGpus::new(SysfsGpu::new(SysfsRoot::new(machine.root())), Box::new(api));
    let first = backend.gpus().unwrap();
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.items[0].architecture, None);
    assert_eq!(first.errors.len(), 1);
    assert!(first.errors[0].error.contains("described from sysfs alone"));
    assert!(backend.gpus().unwrap().errors.is_empty(), "said once");
}

#[test]
fn disagreements_and_gpus_sysfs_does_not_show_are_errors() {
    let mut system = answers("gb300");
    system.gpus[0].uuid = "GPU-00000000-0000-0000-0000-000000000000".into();
    system.gpus.push(NvmlGpu {
        pci_bus_id: "00000042:00:00.0".into(),
        uuid: "GPU-x".into(),
        name: "ghost".into(),
        ..Default::default()
    });
    system.gpus.push(NvmlGpu {
        pci_bus_id: "garbage".into(),
        ..Default::default()
    });
    let found = gpus("gb300", FakeNvml(Ok(system)));
    assert_eq!(found.items.len(), 4, "sysfs decides what exists");
    assert_eq!(
        found.items[0].uuid.as_deref(),
        Some("GPU-00000000-0000-0000-0000-000000000000")
    );
    let errors: Vec<&str> = found.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("UUID: sysfs says GPU-3b1f0a52")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("GPU at 0042:00:00.0 that sysfs does not show")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("\"garbage\"")),
        "{errors:?}"
    );
}

#[test]
fn xeon_h100s_by_upper_case_bus_ids() {
    let found = gpus("xeon", FakeNvml(Ok(answers("xeon"))));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert!(
        found
            .items
            .iter()
            .all(|g| g.architecture.as_deref() == Some("Hopper"))
    );
}

/// The PCI functions sysfs shows as NVIDIA GPUs bound to the `nvidia` driver: vendor 0x10de,
/// display class (0x03xxxx: VGA, 3D controller).
fn nvidia_gpus_in_sysfs() -> std::collections::BTreeSet<hal::PciAddress> {
    let devices = std::path::Path::new("/sys/bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(devices) else {
        return Default::default();
    };
    let mut gpus = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
        let driver = std::fs::read_link(path.join("driver")).unwrap_or_default();
        if read("vendor").trim() == "0x10de"
            && read("class").trim().starts_with("0x03")
            && driver.file_name().is_some_and(|name| name == "nvidia")
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            gpus.insert(hal::PciAddress::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
    }
    gpus
}

/// Where the NVIDIA driver is loaded, the real seam answers, with the loaded driver's version and
/// GPUs that sysfs shows as NVIDIA GPUs bound to `nvidia` (at least one; a container may see fewer
/// than the host's). Elsewhere (CI: no driver, no library) it fails cleanly, saying which.
#[test]
fn the_real_library_lists_the_gpus_sysfs_shows_or_says_why_not() {
    let version = std::fs::read_to_string("/proc/driver/nvidia/version");
    let Ok(version) = version else {
        let error = RealNvml.query().unwrap_err();
        // The library is not installed, or is and finds no driver.
        let missing_library = error.starts_with("NVML unavailable: a libloading error occurred: ")
            && error.contains("libnvidia-ml.so.1");
        let missing_driver = error == "NVML unavailable: NVIDIA driver is not loaded";
        assert!(missing_library || missing_driver, "{error}");
        return;
    };
    let system = RealNvml
        .query()
        .unwrap_or_else(|e| panic!("the NVIDIA driver is loaded ({version:?}), yet: {e}"));
    assert!(
        !system.driver_version.is_empty() && version.contains(&system.driver_version),
        "NVML says driver {}, /proc/driver/nvidia/version {version:?}",
        system.driver_version
    );
    assert!(!system.gpus.is_empty(), "{system:?}");
    let in_sysfs = nvidia_gpus_in_sysfs();
    for gpu in &system.gpus {
        let address = hal::PciAddress::parse(&gpu.pci_bus_id.to_ascii_lowercase()).unwrap();
        assert!(
            in_sysfs.contains(&address),
            "NVML lists {}, sysfs shows {in_sysfs:?}",
            gpu.pci_bus_id
        );
    }
    assert!(
        system.gpus.len() + system.unreadable.len() <= in_sysfs.len(),
        "{system:?}, sysfs {in_sysfs:?}"
    );
}

#[test]
fn the_nvlink_clique_is_merged_where_nvml_gives_one() {
    let mut system = answers("gb300");
    let clique = "3b1f0a52-7c44-4e1d-9a2b-6f0e8d7c0001.32766";
    system.gpus[1].nvlink_clique = Some(clique.into());
    let found = gpus("gb300", FakeNvml(Ok(system)));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    let cliques: Vec<_> = found
        .items
        .iter()
        .map(|g| g.nvlink_clique.as_deref())
        .collect();
    assert_eq!(cliques, [None, Some(clique), None, None]);
}

#[test]
fn nvml_affinity_masks_are_read_as_cpu_sets() {
    // Two 64-bit words: CPUs 0-1 and 64; two 32-bit words: CPUs 0 and 33.
    let set = cpus_of_mask([0b11, 1].into_iter(), 64);
    assert_eq!(set.to_string(), "0-1,64");
    assert_eq!(cpus_of_mask([1, 2].into_iter(), 32).to_string(), "0,33");
    assert!(cpus_of_mask([0, 0].into_iter(), 64).is_empty());
    // Bits past a word's width are not CPUs.
    assert_eq!(cpus_of_mask([1 << 40].into_iter(), 32).to_string(), "");
}

#[test]
fn numa_and_local_cpus_come_from_sysfs_and_nvml_fills_what_it_lacks() {
    let mut system = answers("gb300");
    system.gpus[0].cpu_affinity = Some("0-63".parse().unwrap());
    system.gpus[1].cpu_affinity = Some("0-7".parse().unwrap());
    system.gpus[2].fabric_error = Some("registration not complete (state 2)".into());
    let found = gpus("gb300", FakeNvml(Ok(system)));
    let errors: Vec<_> = found
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].0, "nvml/0009:06:00.0");
    assert!(
        errors[0]
            .1
            .contains("sysfs says 0-63, NVML says 0-7; sysfs's is used")
    );
    assert_eq!(errors[1].0, "nvml/0018:06:00.0");
    assert!(errors[1].1.contains("state 2"), "{errors:?}");
    let cpus: Vec<_> = found
        .items
        .iter()
        .map(|g| g.local_cpus.as_ref().map(|c| c.to_string()))
        .collect();
    assert_eq!(cpus[0].as_deref(), Some("0-63"));
    assert_eq!(cpus[1].as_deref(), Some("0-63"), "sysfs's kept");
    let nodes: Vec<_> = found
        .items
        .iter()
        .map(|g| g.numa_node.map(|n| n.0))
        .collect();
    assert_eq!(nodes, [Some(0), Some(0), Some(1), Some(1)]);
}

/// One GPU fallen off the bus (XID 79): NVML cannot open it, and another answers "GPU is lost" to
/// some queries. The other GPUs keep their NVML facts; each failure is one error entry.
#[test]
fn a_lost_gpu_is_an_error_of_its_own_and_the_others_keep_their_nvml_facts() {
    let mut system = answers("gb300");
    let lost = system.gpus.remove(2);
    system.unreadable = vec!["GPU 2: the GPU has fallen off the bus".into()];
    system.gpus[0].uuid = String::new();
    system.gpus[0].memory_mib = None;
    system.gpus[0].failed = vec!["UUID: GPU is lost".into(), "memory: GPU is lost".into()];
    let found = gpus("gb300", FakeNvml(Ok(system)));
    assert_eq!(found.items.len(), 4);
    for (i, gpu) in found.items.iter().enumerate() {
        let described = gpu.architecture.as_deref() == Some("Blackwell");
        assert_eq!(described, i != 2, "GPU {i}");
    }
    assert_eq!(found.items[2].pci_address.to_string(), "0018:06:00.0");
    assert!(
        lost.pci_bus_id
            .to_ascii_lowercase()
            .ends_with("0018:06:00.0")
    );
    // The UUID NVML could not read is not a disagreement: sysfs's stays.
    assert!(
        found.items[0]
            .uuid
            .as_deref()
            .is_some_and(|u| u.starts_with("GPU-3b1f0a52"))
    );
    assert_eq!(found.items[0].memory_bytes, None);
    let errors: Vec<(&str, &str)> = found
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    let address = &found.items[0].pci_address;
    assert_eq!(
        errors,
        [
            (
                "nvml",
                "GPU 2: the GPU has fallen off the bus; its NVML facts are left out"
            ),
            (
                format!("nvml/{address}").as_str(),
                "NVML query failed: UUID: GPU is lost; left out"
            ),
            (
                format!("nvml/{address}").as_str(),
                "NVML query failed: memory: GPU is lost; left out"
            ),
        ]
    );
    assert!(found.errors.iter().all(|e| e.kind == Some(ErrorKind::Io)));
}

#[test]
fn an_impossible_memory_size_is_left_out() {
    let mut system = answers("gb300");
    system.gpus[0].memory_mib = Some(u64::MAX);
    let found = gpus("gb300", FakeNvml(Ok(system)));
    assert_eq!(found.items[0].memory_bytes, None);
}
