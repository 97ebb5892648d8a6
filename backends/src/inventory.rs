//! [`Inventory`]: one read of every device family of a machine (CPU topology, PCI functions, SR-IOV,
//! RDMA devices, GPUs), through the sysfs backends and the vendor libraries this build links.
//!
//! The two lines another project needs (here on a captured tree; on a node the root is `/`):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let machine = hal_mock::by_name("gb300")?.materialize()?;
//! # let tree = machine.root();
//! let root = backends::SysfsRoot::new(tree); // SysfsRoot::new("/") on a node
//! let inventory = backends::inventory::Inventory::from_sysfs(&root, None);
//!
//! let cpus = inventory.cpu.as_ref().map_or(0, |cpu| cpu.cpus.len());
//! assert!(cpus > 0 && !inventory.gpus.is_empty());
//! assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
//! # Ok(())
//! # }
//! ```
//!
//! [`Inventory::from_machine`] adds the vendor libraries ([`Vendors`]); [`Inventory::read`] takes any
//! [`hal`] backends (mocks in tests).

use std::collections::BTreeSet;
use std::path::Path;

use hal::{
    CpuInventory, CpuTopology, Discovered, GpuDevice, GpuInfo, InventoryError, PciAddress,
    PciDevice, PciFunction, RdmaDevice, RdmaInfo, SriovPf, SriovState,
};

use crate::SysfsRoot;
use crate::sysfs::net::NetLink;

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

/// The hardware of a machine at one moment. A family that could not be read at all is empty and its
/// error is in `errors`: a partial inventory still has what could be read.
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
    /// The link state of the PCI functions' network interfaces, by name (read by
    /// [`Inventory::from_machine`]; empty from [`Inventory::read`], which has no sysfs root).
    pub net_links: Vec<NetLink>,
    /// What could not be read, each problem once.
    pub errors: Vec<InventoryError>,
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
            net_links: Vec::new(),
            errors: Vec::new(),
        };
        inventory.pci.sort_by_key(|f| f.address);
        let mut seen = BTreeSet::new();
        errors.retain(|e: &InventoryError| seen.insert((e.path.clone(), e.error.clone())));
        inventory.errors = errors;
        inventory
    }

    /// Reads the machine under `root` through the sysfs backends alone, with names from the pci.ids
    /// file at `pci_ids` when given.
    pub fn from_sysfs(root: &SysfsRoot, pci_ids: Option<&Path>) -> Inventory {
        Inventory::from_machine(root, pci_ids, Vendors::default())
    }

    /// Like [`Inventory::from_sysfs`], with GPUs and RDMA devices enriched by the `vendors` libraries.
    pub fn from_machine(root: &SysfsRoot, pci_ids: Option<&Path>, vendors: Vendors) -> Inventory {
        let cpu = crate::SysfsCpuTopology::new(root.clone());
        let mut pci = crate::SysfsPci::new(root.clone());
        if let Some(path) = pci_ids {
            pci = pci.with_pci_ids(path);
        }
        let sriov = crate::SysfsSriov::new(root.clone());
        let (gpus, rdma) = vendors.enrich(root);
        let mut inventory = Inventory::read(&Backends {
            cpu: &cpu,
            pci: &pci,
            sriov: &sriov,
            rdma: rdma.as_ref(),
            gpus: gpus.as_ref(),
        });
        inventory.read_net_links(root);
        inventory
    }

    /// Reads the link state of every network interface of the PCI functions (three attributes
    /// each); an unreadable one is left out and its error kept.
    pub fn read_net_links(&mut self, root: &SysfsRoot) {
        let names: BTreeSet<&String> = self.pci.iter().flat_map(|f| &f.netdevs).collect();
        let tree = crate::sysfs::tree::Tree::open(root);
        let mut links = Vec::new();
        for name in names {
            match crate::sysfs::net::read_link_state_in(&tree, name) {
                Ok(link) => links.push(link),
                Err(e) => self.errors.push((&e).into()),
            }
        }
        self.net_links = links;
    }

    /// The link state of interface `name`, when read.
    pub fn net_link(&self, name: &str) -> Option<&NetLink> {
        self.net_links
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.net_links.get(i))
    }

    /// The PCI function at `address`.
    pub fn function(&self, address: PciAddress) -> Option<&PciFunction> {
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

/// The vendor libraries that enrich the sysfs view of GPUs and RDMA devices: the libraries themselves
/// on a node, recorded answers on a fixture. sysfs stays the source of truth for what exists.
#[derive(Default)]
pub struct Vendors {
    /// NVML, for NVIDIA GPUs.
    #[cfg(feature = "nvml")]
    pub nvml: Option<Box<dyn crate::nvml::NvmlApi>>,
    /// Level Zero, for Intel GPUs.
    pub level_zero: Option<Box<dyn crate::level_zero::LevelZeroApi>>,
    /// verbs, for RDMA ports.
    pub verbs: Option<Box<dyn crate::verbs::VerbsApi>>,
}

impl Vendors {
    /// The real libraries this build links: NVML with the `nvml` feature, Level Zero and verbs with
    /// `level-zero` and `verbs`. Each is opened when first asked; one that is missing on the node is
    /// said once and leaves the sysfs view as it is.
    pub fn linked() -> Vendors {
        Vendors {
            #[cfg(feature = "nvml")]
            nvml: Some(Box::new(crate::nvml::RealNvml)),
            #[cfg(feature = "level-zero")]
            level_zero: Some(Box::new(crate::level_zero::RealLevelZero)),
            #[cfg(not(feature = "level-zero"))]
            level_zero: None,
            #[cfg(feature = "verbs")]
            verbs: Some(Box::new(crate::verbs::RealVerbs)),
            #[cfg(not(feature = "verbs"))]
            verbs: None,
        }
    }

    /// [`Vendors::linked`] when the tree under `root` is this machine's ([`is_this_machine`]), none
    /// otherwise: the libraries describe this machine's devices, and on a GPU node their answers would
    /// otherwise be merged into a captured machine's devices.
    pub fn for_tree(root: &SysfsRoot) -> Vendors {
        match is_this_machine(root.root()) {
            true => Vendors::linked(),
            false => Vendors::default(),
        }
    }

    /// Whether no library is set.
    pub fn is_empty(&self) -> bool {
        #[cfg(feature = "nvml")]
        let nvml = self.nvml.is_none();
        #[cfg(not(feature = "nvml"))]
        let nvml = true;
        nvml && self.level_zero.is_none() && self.verbs.is_none()
    }

    /// The sysfs GPU and RDMA backends under `root`, each wrapped by the libraries given.
    pub fn enrich(self, root: &SysfsRoot) -> (Box<dyn GpuDevice>, Box<dyn RdmaDevice>) {
        let mut gpus: Box<dyn GpuDevice> = Box::new(crate::SysfsGpu::new(root.clone()));
        if let Some(api) = self.level_zero {
            gpus = Box::new(crate::level_zero::LevelZeroGpus::new(gpus, api));
        }
        #[cfg(feature = "nvml")]
        if let Some(api) = self.nvml {
            gpus = Box::new(crate::nvml::NvmlGpus::new(gpus, api));
        }
        let mut rdma: Box<dyn RdmaDevice> = Box::new(crate::SysfsRdma::new(root.clone()));
        if let Some(api) = self.verbs {
            rdma = Box::new(crate::verbs::VerbsRdma::new(rdma, api));
        }
        (gpus, rdma)
    }
}

/// Whether the tree under `root` is this machine's: `/` itself, or a root whose
/// `proc/sys/kernel/random/boot_id` is this running kernel's (the host's /proc and /sys mounted in a
/// pod). A capture holds no boot id, so it counts as another machine's even when taken here.
pub fn is_this_machine(root: &Path) -> bool {
    if std::fs::canonicalize(root).is_ok_and(|path| path == Path::new("/")) {
        return true;
    }
    matches!(
        (boot_id(root), boot_id(Path::new("/"))),
        (Some(theirs), Some(ours)) if theirs == ours
    )
}

/// The boot id of the kernel whose `/proc` is under `root` (`proc/sys/kernel/random/boot_id`), or `None`
/// when it cannot be read or is empty. Read as every attribute is: inside the root (a link on the way
/// cannot lead to the host's own `/proc`), bounded (64 KiB), without blocking, and only from a regular
/// file, so a FIFO or `/dev/zero` there is `None`, not a hang or a 1 GiB read.
pub fn boot_id(root: &Path) -> Option<String> {
    let tree = crate::sysfs::tree::Tree::open(&crate::SysfsRoot::new(root));
    tree.read_optional(&tree.join("proc/sys/kernel/random/boot_id"))
        .ok()
        .flatten()
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests;
