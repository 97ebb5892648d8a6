//! [`Inventory`]: one read of every device family the driver publishes, from any HAL backends.

use hal::{
    CpuInventory, CpuTopology, Discovered, GpuDevice, GpuInfo, InventoryError, PciDevice,
    PciFunction, RdmaDevice, RdmaInfo, SriovPf, SriovState,
};

/// Where each family is read from (the sysfs backends on a node, fixtures or mocks in tests).
pub struct Backends<'a> {
    /// CPU topology.
    pub cpu: &'a dyn CpuTopology,
    /// PCI functions.
    pub pci: &'a dyn PciDevice,
    /// SR-IOV.
    pub sriov: &'a dyn SriovPf,
    /// RDMA devices.
    pub rdma: &'a dyn RdmaDevice,
    /// GPUs.
    pub gpus: &'a dyn GpuDevice,
}

/// Everything the driver knows about the node at one moment. A family that could not be read at all
/// is empty and its error is in `errors`: a partial inventory still publishes what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// CPUs and NUMA nodes (`None` when the CPU topology could not be read).
    pub cpu: Option<CpuInventory>,
    /// PCI functions, by address.
    pub pci: Vec<PciFunction>,
    /// SR-IOV physical functions.
    pub sriov: Vec<SriovState>,
    /// RDMA devices, by name.
    pub rdma: Vec<RdmaInfo>,
    /// GPUs, by address.
    pub gpus: Vec<GpuInfo>,
    /// What could not be read, each problem once.
    pub errors: Vec<InventoryError>,
    /// The kernel's real-time bandwidth limit (`proc/sys/kernel/sched_rt_*`), when readable.
    pub rt_limit: Option<crate::plugin::rt::RtLimit>,
    /// GPUs known to be unhealthy (see [`crate::health`]), published with a taint.
    pub gpu_health: std::collections::BTreeMap<hal::PciAddress, crate::health::Unhealthy>,
}

impl Inventory {
    /// Reads every family, one after the other (two threads did not pay: docs/perf.md).
    pub fn read(backends: &Backends<'_>) -> Inventory {
        let mut errors = Vec::new();
        let (cpu, pci, sriov, rdma, gpus) = (
            backends.cpu.cpu_inventory(),
            backends.pci.pci_functions(),
            backends.sriov.sriov_pfs(),
            backends.rdma.rdma_devices(),
            backends.gpus.gpus(),
        );
        let cpu = match cpu {
            Ok(mut cpu) => {
                errors.append(&mut cpu.errors);
                Some(cpu)
            }
            Err(e) => {
                errors.push((&e).into());
                None
            }
        };
        let mut inventory = Inventory {
            cpu,
            pci: take(pci, &mut errors),
            sriov: take(sriov, &mut errors),
            rdma: take(rdma, &mut errors),
            gpus: take(gpus, &mut errors),
            errors: Vec::new(),
            rt_limit: None,
            gpu_health: std::collections::BTreeMap::new(),
        };
        inventory.pci.sort_by_key(|f| f.address);
        let mut seen = std::collections::BTreeSet::new();
        errors.retain(|e: &InventoryError| seen.insert((e.path.clone(), e.error.clone())));
        inventory.errors = errors;
        inventory
    }

    /// The PCI function at `address`.
    pub fn function(&self, address: hal::PciAddress) -> Option<&PciFunction> {
        self.pci
            .binary_search_by_key(&address, |f| f.address)
            .ok()
            .and_then(|i| self.pci.get(i))
    }
}

fn take<T>(found: hal::Result<Discovered<T>>, errors: &mut Vec<InventoryError>) -> Vec<T> {
    match found {
        Ok(mut found) => {
            errors.append(&mut found.errors);
            found.items
        }
        Err(e) => {
            errors.push((&e).into());
            Vec::new()
        }
    }
}

impl Inventory {
    /// Reads a machine through the sysfs backends under `root`, with names from the pci.ids file at
    /// `pci_ids` when given.
    pub fn from_sysfs(root: &backends::SysfsRoot, pci_ids: Option<&std::path::Path>) -> Inventory {
        Inventory::from_machine(root, pci_ids, Vendors::default())
    }

    /// Like [`Inventory::from_sysfs`], with GPUs and RDMA devices enriched by the `vendors` libraries.
    pub fn from_machine(
        root: &backends::SysfsRoot,
        pci_ids: Option<&std::path::Path>,
        vendors: Vendors,
    ) -> Inventory {
        let cpu = backends::SysfsCpuTopology::new(root.clone());
        let mut pci = backends::SysfsPci::new(root.clone());
        if let Some(path) = pci_ids {
            pci = pci.with_pci_ids(path);
        }
        let sriov = backends::SysfsSriov::new(root.clone());
        let (gpus, rdma) = vendors.enrich(root);
        let mut inventory = Inventory::read(&Backends {
            cpu: &cpu,
            pci: &pci,
            sriov: &sriov,
            rdma: rdma.as_ref(),
            gpus: gpus.as_ref(),
        });
        inventory.rt_limit = crate::plugin::rt::RtLimit::read(root.root());
        inventory
    }
}

/// The vendor libraries that enrich the sysfs view of GPUs and RDMA devices: their recorded answers on a
/// fixture, the libraries themselves on a node. sysfs stays the source of truth for what exists.
#[derive(Default)]
pub struct Vendors {
    /// NVML, for NVIDIA GPUs.
    pub nvml: Option<Box<dyn backends::nvml::NvmlApi>>,
    /// Level Zero, for Intel GPUs.
    pub level_zero: Option<Box<dyn backends::level_zero::LevelZeroApi>>,
    /// verbs, for RDMA ports.
    pub verbs: Option<Box<dyn backends::verbs::VerbsApi>>,
}

impl Vendors {
    /// The libraries this binary is built with (NVML always; Level Zero and verbs with the
    /// `level-zero` and `verbs` features): the fixture's recorded answers, or the real libraries.
    pub fn for_machine(fixture: Option<&str>) -> Vendors {
        Vendors {
            nvml: Some(nvml_for(fixture)),
            level_zero: level_zero_for(fixture),
            verbs: verbs_for(fixture),
        }
    }

    /// [`Vendors::for_machine`] for the tree under `root`. The real libraries describe this machine's
    /// devices, so a tree that is not this machine's ([`is_this_machine`]: a capture from another
    /// node, or taken here) is read without them; on a GPU node their answers would otherwise be
    /// merged into another machine's devices. A fixture gets its recorded answers.
    pub fn for_root(root: &backends::SysfsRoot, fixture: Option<&str>) -> Vendors {
        match fixture.is_some() || is_this_machine(root.root()) {
            true => Vendors::for_machine(fixture),
            false => Vendors::default(),
        }
    }

    /// The sysfs GPU and RDMA backends under `root`, each wrapped by the libraries given.
    pub fn enrich(
        self,
        root: &backends::SysfsRoot,
    ) -> (Box<dyn hal::GpuDevice>, Box<dyn hal::RdmaDevice>) {
        let mut gpus: Box<dyn hal::GpuDevice> = Box::new(backends::SysfsGpu::new(root.clone()));
        if let Some(api) = self.level_zero {
            gpus = Box::new(backends::level_zero::LevelZeroGpus::new(gpus, api));
        }
        if let Some(api) = self.nvml {
            gpus = Box::new(backends::nvml::NvmlGpus::new(gpus, api));
        }
        let mut rdma: Box<dyn hal::RdmaDevice> = Box::new(backends::SysfsRdma::new(root.clone()));
        if let Some(api) = self.verbs {
            rdma = Box::new(backends::verbs::VerbsRdma::new(rdma, api));
        }
        (gpus, rdma)
    }
}

/// Whether the tree under `root` is this machine's: `/` itself, or a root whose
/// `proc/sys/kernel/random/boot_id` is this running kernel's (the host's /proc and /sys mounted in a
/// pod). A capture holds no boot id, so it counts as another machine's even when taken here.
pub fn is_this_machine(root: &std::path::Path) -> bool {
    if std::fs::canonicalize(root).is_ok_and(|path| path == std::path::Path::new("/")) {
        return true;
    }
    matches!(
        (boot_id(root), boot_id(std::path::Path::new("/"))),
        (Some(theirs), Some(ours)) if theirs == ours
    )
}

/// The boot id of the kernel whose `/proc` is under `root` (`proc/sys/kernel/random/boot_id`), or `None`
/// when it cannot be read or is empty. Read as every attribute is: bounded (64 KiB), without blocking,
/// and only from a regular file, so a FIFO or `/dev/zero` there is `None`, not a hang or a 1 GiB read.
pub fn boot_id(root: &std::path::Path) -> Option<String> {
    backends::sysfs::attr::read_optional(&root.join("proc/sys/kernel/random/boot_id"))
        .ok()
        .flatten()
        .filter(|id| !id.is_empty())
}

/// The NVML seam for a machine: the fixture's recorded answers, or the real library on a node.
fn nvml_for(fixture: Option<&str>) -> Box<dyn backends::nvml::NvmlApi> {
    use backends::nvml::{FakeNvml, RealNvml};
    match fixture {
        None => Box::new(RealNvml),
        Some(name) => Box::new(FakeNvml(recorded(
            name,
            "NVML",
            crate::fixtures::nvml_answers(name),
        ))),
    }
}

/// The Level Zero seam for a machine, with the `level-zero` feature.
fn level_zero_for(fixture: Option<&str>) -> Option<Box<dyn backends::level_zero::LevelZeroApi>> {
    #[cfg(feature = "level-zero")]
    {
        use backends::level_zero::{FakeLevelZero, RealLevelZero};
        Some(match fixture {
            None => Box::new(RealLevelZero),
            Some(name) => Box::new(FakeLevelZero(recorded(
                name,
                "Level Zero",
                crate::fixtures::level_zero_answers(name),
            ))),
        })
    }
    #[cfg(not(feature = "level-zero"))]
    {
        let _ = fixture;
        None
    }
}

/// The verbs seam for a machine, with the `verbs` feature.
fn verbs_for(fixture: Option<&str>) -> Option<Box<dyn backends::verbs::VerbsApi>> {
    #[cfg(feature = "verbs")]
    {
        use backends::verbs::{FakeVerbs, RealVerbs};
        Some(match fixture {
            None => Box::new(RealVerbs),
            Some(name) => Box::new(FakeVerbs(recorded(
                name,
                "verbs",
                crate::fixtures::verbs_answers(name),
            ))),
        })
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = fixture;
        None
    }
}

/// A fixture's recorded answers of `library`, parsed. A fixture without any plays a library that cannot
/// be used (its wrapper asks only on machines with devices for it, and then says so once).
fn recorded<T: serde::de::DeserializeOwned>(
    name: &str,
    library: &str,
    json: Option<&str>,
) -> Result<T, String> {
    let json = json.ok_or_else(|| format!("fixture {name} has no recorded {library} answers"))?;
    serde_json::from_str(json).map_err(|e| format!("{name} {library} answers: {e}"))
}

#[cfg(all(test, feature = "level-zero", feature = "verbs"))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod vendor_tests {
    use super::*;

    #[test]
    fn only_this_machines_tree_gets_the_vendor_libraries() {
        assert!(is_this_machine(std::path::Path::new("/")));
        let tree = tempfile::tempdir().unwrap();
        assert!(!is_this_machine(tree.path()), "a capture has no boot id");
        let id_file = tree.path().join("proc/sys/kernel/random/boot_id");
        std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
        std::fs::write(&id_file, "00000000-0000-0000-0000-000000000000\n").unwrap();
        assert!(!is_this_machine(tree.path()), "another kernel's boot id");
        if let Ok(ours) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            std::fs::write(&id_file, ours).unwrap();
            assert!(
                is_this_machine(tree.path()),
                "this host's /proc, mounted elsewhere"
            );
        }
        let capture = tempfile::tempdir().unwrap();
        let root = backends::SysfsRoot::new(capture.path());
        let vendors = Vendors::for_root(&root, None);
        assert!(vendors.nvml.is_none() && vendors.level_zero.is_none() && vendors.verbs.is_none());
        let fixture = Vendors::for_root(&root, Some("gb300"));
        assert!(
            fixture.nvml.is_some(),
            "a fixture plays its recorded answers"
        );
    }

    fn read(name: &str) -> Inventory {
        let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let root = backends::SysfsRoot::new(machine.root());
        Inventory::from_machine(&root, None, Vendors::for_machine(Some(name)))
    }

    #[test]
    fn fixtures_are_enriched_by_their_recorded_level_zero_answers() {
        let inventory = read("i915");
        assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
        let flex: Vec<_> = inventory
            .gpus
            .iter()
            .filter(|g| g.tiles.is_some())
            .collect();
        assert_eq!(flex.len(), 2);
        assert!(flex.iter().all(|g| g.execution_units == Some(512)));
    }

    #[test]
    fn fixtures_are_enriched_by_their_recorded_verbs_answers() {
        let inventory = read("gb300");
        assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
        assert_eq!(inventory.rdma.len(), 4);
        for device in &inventory.rdma {
            assert_eq!(device.max_qp, Some(131_072));
            assert_eq!(device.ports[0].active_mtu, Some(4096));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod boot_id_tests {
    use super::boot_id;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    /// `boot_id` of `root` on a thread, failing the test when it has not answered in 10 s.
    fn boot_id_within_10s(root: &Path) -> Option<String> {
        let (tx, rx) = mpsc::channel();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(boot_id(&root));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the boot id read hangs ({e})"))
    }

    #[test]
    fn the_boot_id_is_read_bounded_and_without_blocking() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("proc/sys/kernel/random");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("boot_id");
        assert_eq!(boot_id_within_10s(tree.path()), None, "missing");

        std::fs::write(&file, "6f1a2b3c-0000-4000-8000-000000000001\n").unwrap();
        assert_eq!(
            boot_id_within_10s(tree.path()).as_deref(),
            Some("6f1a2b3c-0000-4000-8000-000000000001")
        );

        // An endless file behind a link: refused (links are not followed), not read to the end.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        assert_eq!(boot_id_within_10s(tree.path()), None, "/dev/zero");

        // A FIFO nothing writes to: refused at once, not waited on.
        std::fs::remove_file(&file).unwrap();
        use rustix::fs::{CWD, FileType, Mode};
        rustix::fs::mknodat(CWD, &file, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        assert_eq!(boot_id_within_10s(tree.path()), None, "a FIFO");

        // Longer than any attribute may be: refused, not kept.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, vec![b'a'; 70_000]).unwrap();
        assert_eq!(boot_id_within_10s(tree.path()), None, "70 KB");
    }
}
