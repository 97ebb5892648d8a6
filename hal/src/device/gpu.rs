//! [`GpuInfo`] and the [`GpuDevice`] trait.

use crate::error::Result;
use crate::inventory::Discovered;
use crate::pci::PciAddress;

/// GPU vendor, from the PCI vendor id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuVendor {
    /// 0x10de.
    Nvidia,
    /// 0x8086.
    Intel,
    /// 0x1002.
    Amd,
    /// Any other vendor id.
    Other(u16),
}

impl GpuVendor {
    /// From a PCI vendor id.
    pub fn from_pci_vendor(id: u16) -> Self {
        match id {
            0x10de => GpuVendor::Nvidia,
            0x8086 => GpuVendor::Intel,
            0x1002 => GpuVendor::Amd,
            other => GpuVendor::Other(other),
        }
    }
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuInfo {
    /// PCI address.
    pub pci_address: PciAddress,
    /// Vendor.
    pub vendor: GpuVendor,
    /// PCI device id (`0x56c0`), where sysfs shows it.
    #[serde(default)]
    pub device_id: Option<u16>,
    /// NUMA node of the function (sysfs; NVML's where sysfs says none).
    #[serde(default)]
    pub numa_node: Option<crate::NumaNode>,
    /// CPUs local to the function (sysfs `local_cpulist`; NVML's affinity where sysfs says none).
    #[serde(default)]
    pub local_cpus: Option<crate::CpuSet>,
    /// Bound kernel driver (`i915`, `xe`, `nvidia`, `amdgpu`).
    pub driver: Option<String>,
    /// DRM card node name (`card0`).
    pub drm_card: Option<String>,
    /// DRM render node name (`renderD128`).
    pub drm_render: Option<String>,
    /// NVIDIA device minor (`/dev/nvidiaN`).
    pub nvidia_minor: Option<u32>,
    /// Vendor-assigned unique id (NVIDIA UUID), where known.
    pub uuid: Option<String>,
    /// Product name.
    pub product: Option<String>,
    /// Device-local memory in bytes, where known.
    pub memory_bytes: Option<u64>,
    /// Architecture (`Blackwell`, `Hopper`), from a vendor library; sysfs does not say.
    #[serde(default)]
    pub architecture: Option<String>,
    /// CUDA compute capability (`10.3`), from NVML.
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// Kernel driver version as the vendor prints it (`580.105.08`), from a vendor library.
    #[serde(default)]
    pub driver_version: Option<String>,
    /// CUDA driver API version (`13.0`), from NVML.
    #[serde(default)]
    pub cuda_driver_version: Option<String>,
    /// MIG mode enabled (NVIDIA), from NVML.
    #[serde(default)]
    pub mig_enabled: Option<bool>,
    /// NVLink fabric clique, `<cluster UUID>.<clique id>` as NVIDIA's DRA driver spells it, from NVML on
    /// systems with an NVLink fabric (GB200/GB300 NVL); GPUs in one clique share a multi-node NVLink domain.
    #[serde(default)]
    pub nvlink_clique: Option<String>,
    /// Tiles (Level Zero sub-devices); 1 for a GPU without sub-devices.
    #[serde(default)]
    pub tiles: Option<u32>,
    /// Execution units (slices × sub-slices per slice × EUs per sub-slice), from Level Zero.
    #[serde(default)]
    pub execution_units: Option<u32>,
}

impl GpuInfo {
    /// A GPU at `pci_address` of which nothing else is known yet.
    pub fn new(pci_address: PciAddress, vendor: GpuVendor) -> Self {
        GpuInfo {
            pci_address,
            vendor,
            device_id: None,
            numa_node: None,
            local_cpus: None,
            driver: None,
            drm_card: None,
            drm_render: None,
            nvidia_minor: None,
            uuid: None,
            product: None,
            memory_bytes: None,
            architecture: None,
            compute_capability: None,
            driver_version: None,
            cuda_driver_version: None,
            mig_enabled: None,
            nvlink_clique: None,
            tiles: None,
            execution_units: None,
        }
    }
}

/// Enumerates GPUs.
pub trait GpuDevice: Send + Sync {
    /// Every GPU, sorted by PCI address.
    fn gpus(&self) -> Result<Discovered<GpuInfo>>;
}
