//! Device traits: [`PciDevice`], [`SriovPf`], [`RdmaDevice`], [`GpuDevice`].
//!
//! The shapes are fixed here so that backends and the driver can be written against them; the sysfs
//! implementations and the fixture machines that exercise them arrive with the device issue.

use crate::cpuset::CpuSet;
use crate::error::Result;
use crate::numa::NumaNode;
use crate::pci::{PciAddress, PcieRoot};

/// What the kernel says about one PCI function.
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
    /// `class` (class << 16 | subclass << 8 | prog-if).
    pub class: u32,
    /// `revision`.
    pub revision: Option<u8>,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// `numa_node`, absent when the kernel says -1.
    pub numa_node: Option<NumaNode>,
    /// `local_cpulist` / `local_cpus`.
    pub local_cpus: Option<CpuSet>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// The root complex the function hangs under (from its resolved sysfs path).
    pub pcie_root: Option<PcieRoot>,
}

/// Enumerates PCI functions.
pub trait PciDevice: Send + Sync {
    /// Every PCI function of the machine.
    fn pci_functions(&self) -> Result<Vec<PciFunction>>;

    /// One function by address.
    fn pci_function(&self, address: PciAddress) -> Result<Option<PciFunction>> {
        Ok(self
            .pci_functions()?
            .into_iter()
            .find(|f| f.address == address))
    }
}

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SriovState {
    /// The physical function.
    pub pf: PciAddress,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// The enabled VFs, by VF index (`virtfnN`).
    pub vfs: Vec<PciAddress>,
}

/// Reads and changes SR-IOV state.
pub trait SriovPf: Send + Sync {
    /// The PFs with SR-IOV capability.
    fn sriov_pfs(&self) -> Result<Vec<SriovState>>;
    /// Sets the number of VFs of `pf` (through 0 when changing a non-zero count).
    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()>;
    /// Binds `function` to `driver`.
    fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()>;
}

/// One RDMA device (`/sys/class/infiniband/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RdmaInfo {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// Its PCI function, if it has one.
    pub pci_address: Option<PciAddress>,
    /// Its network interface, if any (RoCE, IPoIB); `None` means IB-only.
    pub netdev: Option<String>,
}

/// Enumerates RDMA devices.
pub trait RdmaDevice: Send + Sync {
    /// Every RDMA device.
    fn rdma_devices(&self) -> Result<Vec<RdmaInfo>>;
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuInfo {
    /// PCI address.
    pub pci_address: PciAddress,
    /// Vendor-assigned unique id (NVIDIA UUID), where known.
    pub uuid: Option<String>,
    /// Product name.
    pub product: Option<String>,
    /// Device memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// Enumerates GPUs.
pub trait GpuDevice: Send + Sync {
    /// Every GPU.
    fn gpus(&self) -> Result<Vec<GpuInfo>>;
}
