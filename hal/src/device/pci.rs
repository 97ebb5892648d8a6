//! [`PciFunction`] and the [`PciDevice`] trait.

use crate::cpuset::CpuSet;
use crate::error::Result;
use crate::inventory::Discovered;
use crate::numa::NumaNode;
use crate::pci::{PciAddress, PcieRoot};

/// What the kernel says about one PCI function (`/sys/bus/pci/devices/<address>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PciFunction {
    /// Its address.
    pub address: PciAddress,
    /// `vendor`.
    pub vendor_id: u16,
    /// `device`.
    pub device_id: u16,
    /// `subsystem_vendor`.
    pub subsystem_vendor_id: Option<u16>,
    /// `subsystem_device`.
    pub subsystem_device_id: Option<u16>,
    /// `class`: class << 16 | subclass << 8 | prog-if (`0x020000` Ethernet, `0x030200` 3D controller).
    pub class: u32,
    /// `revision`.
    pub revision: Option<u8>,
    /// Vendor name from the pci.ids database, when one was given and knows the id.
    pub vendor_name: Option<String>,
    /// Device name from the pci.ids database.
    pub device_name: Option<String>,
    /// The bound driver (`driver` link), if any.
    pub driver: Option<String>,
    /// `driver_override`; `None` when unset (the kernel prints `(null)`).
    pub driver_override: Option<String>,
    /// `numa_node`; `None` when the kernel says -1.
    pub numa_node: Option<NumaNode>,
    /// `local_cpulist` (or `local_cpus`).
    pub local_cpus: Option<CpuSet>,
    /// IOMMU group number (`iommu_group` link).
    pub iommu_group: Option<u32>,
    /// Physical slot name (`/sys/bus/pci/slots/<name>/address`), where firmware gives one.
    pub physical_slot: Option<String>,
    /// The root complex: the `pciDDDD:BB` directory the device's resolved path hangs under, including
    /// Hyper-V/Azure VMBUS paths (`.../VMBUS:00/<guid>/pci0101:00/0101:00:00.0`).
    pub pcie_root: Option<PcieRoot>,
    /// The upstream PCI function (bridge or root port), if the device is not on a root bus.
    pub parent: Option<PciAddress>,
    /// For an SR-IOV virtual function: its physical function (`physfn` link).
    pub physfn: Option<PciAddress>,
    /// Network interfaces of the function (`net/*`), sorted.
    pub netdevs: Vec<String>,
    /// The resolved device directory, relative to the sysfs root (`sys/devices/pci0000:00/...`).
    pub sysfs_path: String,
}

impl PciFunction {
    /// The base class (`class >> 16`): 0x02 network, 0x03 display, 0x12 processing accelerator.
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// A network controller (class 0x02: Ethernet, InfiniBand, ...).
    pub fn is_network(&self) -> bool {
        self.base_class() == 0x02
    }

    /// A display controller (class 0x03: VGA, 3D, other display), which is how GPUs identify.
    pub fn is_display(&self) -> bool {
        self.base_class() == 0x03
    }

    /// A PCI-to-PCI bridge (class 0x0604).
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }

    /// An SR-IOV virtual function.
    pub fn is_virtual_function(&self) -> bool {
        self.physfn.is_some()
    }
}

/// Enumerates PCI functions.
pub trait PciDevice: Send + Sync {
    /// Every PCI function of the machine, sorted by address; a function that cannot be read is an
    /// error entry, not a failed scan.
    fn pci_functions(&self) -> Result<Discovered<PciFunction>>;

    /// One function by address.
    fn pci_function(&self, address: PciAddress) -> Result<Option<PciFunction>> {
        Ok(self
            .pci_functions()?
            .items
            .into_iter()
            .find(|f| f.address == address))
    }
}
