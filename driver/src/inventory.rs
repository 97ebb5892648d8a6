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
    /// Reads every family. The CPU topology (the most files: several per CPU) is read on a thread of
    /// its own while the devices are read on this one.
    pub fn read(backends: &Backends<'_>) -> Inventory {
        let mut errors = Vec::new();
        // Both on threads of their own: a thread that works while it waits for another tends to share
        // a core with it (the scheduler places a new thread beside its parent).
        let (cpu, devices) = std::thread::scope(|scope| {
            let cpu = scope.spawn(|| backends.cpu.cpu_inventory());
            let read_devices = || {
                (
                    backends.pci.pci_functions(),
                    backends.sriov.sriov_pfs(),
                    backends.rdma.rdma_devices(),
                    backends.gpus.gpus(),
                )
            };
            let devices = scope.spawn(read_devices);
            // A panicking backend is a bug; it is read again on this thread to report it as it is.
            let devices = devices.join().unwrap_or_else(|_| read_devices());
            let cpu = cpu.join().unwrap_or_else(|_| backends.cpu.cpu_inventory());
            (cpu, devices)
        });
        let (pci, sriov, rdma, gpus) = devices;
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
        Inventory::from_machine(root, pci_ids, None)
    }

    /// Like [`Inventory::from_sysfs`], with NVIDIA GPUs enriched by `nvml` when given.
    pub fn from_machine(
        root: &backends::SysfsRoot,
        pci_ids: Option<&std::path::Path>,
        nvml: Option<Box<dyn backends::nvml::NvmlApi>>,
    ) -> Inventory {
        // The devices are read on another core meanwhile (`Inventory::read`).
        let cpu = backends::SysfsCpuTopology::new(root.clone())
            .with_threads(backends::sysfs::cpu::threads_beside_devices());
        let mut pci = backends::SysfsPci::new(root.clone());
        if let Some(path) = pci_ids {
            pci = pci.with_pci_ids(path);
        }
        let sriov = backends::SysfsSriov::new(root.clone());
        let rdma = backends::SysfsRdma::new(root.clone());
        let sysfs_gpus = backends::SysfsGpu::new(root.clone());
        let gpus: Box<dyn hal::GpuDevice> = match nvml {
            Some(api) => Box::new(backends::nvml::NvmlGpus::new(sysfs_gpus, api)),
            None => Box::new(sysfs_gpus),
        };
        let mut inventory = Inventory::read(&Backends {
            cpu: &cpu,
            pci: &pci,
            sriov: &sriov,
            rdma: &rdma,
            gpus: gpus.as_ref(),
        });
        inventory.rt_limit = crate::plugin::rt::RtLimit::read(root.root());
        inventory
    }
}

/// The NVML seam for a machine: the fixture's recorded answers, or the real library on a node.
pub fn nvml_for(fixture: Option<&str>) -> Box<dyn backends::nvml::NvmlApi> {
    use backends::nvml::{FakeNvml, NvmlSystem, RealNvml};
    match fixture {
        None => Box::new(RealNvml),
        Some(name) => {
            let answers = hal_mock::nvml_answers(name)
                .ok_or_else(|| format!("fixture {name} has no NVIDIA GPU"))
                .and_then(|json| {
                    serde_json::from_str::<NvmlSystem>(json)
                        .map_err(|e| format!("{name} NVML answers: {e}"))
                });
            Box::new(FakeNvml(answers))
        }
    }
}
