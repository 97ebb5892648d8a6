//! [`PciFunctionSpec`]: one PCI function of a fixture machine, rendered as the kernel lays it out.

use std::io;
use std::path::{Path, PathBuf};

use hal::{CpuSet, PciAddress};

use crate::tree::{link, write};

/// SR-IOV capability of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SriovSpec {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_vf_device`: the VFs' device id.
    #[serde(with = "crate::hex::u16_hex")]
    pub vf_device: u16,
    /// `sriov_offset` (routing-id distance of VF 0 from the PF).
    pub offset: u32,
    /// `sriov_stride` (routing-id distance between VFs).
    pub stride: u32,
    /// `sriov_drivers_autoprobe`.
    pub autoprobe: bool,
    /// VFs enabled when the fixture is materialized (created through the emulated kernel).
    #[serde(default)]
    pub enabled: u32,
    /// Interface names of the enabled VFs, by VF index.
    #[serde(default)]
    pub vf_netdevs: Vec<String>,
}

/// One PCI function of a fixture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciFunctionSpec {
    /// Its address.
    pub address: PciAddress,
    /// The directory under `sys/devices` its path starts with: `pci0000:3a` on bare metal, or a
    /// Hyper-V path ending in the root (`LNXSYSTM:00/.../VMBUS:00/<guid>/pci0101:00`).
    pub root_dir: String,
    /// Bridges between the root and the function, outermost first.
    #[serde(default)]
    pub bridges: Vec<PciAddress>,
    /// `vendor`.
    #[serde(with = "crate::hex::u16_hex")]
    pub vendor: u16,
    /// `device`.
    #[serde(with = "crate::hex::u16_hex")]
    pub device: u16,
    /// `class`.
    #[serde(with = "crate::hex::u32_hex")]
    pub class: u32,
    /// `numa_node` (`None` renders -1).
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// `local_cpulist`.
    pub local_cpus: CpuSet,
    /// Network interfaces (`net/<name>`).
    #[serde(default)]
    pub netdevs: Vec<String>,
    /// Bound driver.
    #[serde(default)]
    pub driver: Option<String>,
    /// IOMMU group.
    #[serde(default)]
    pub iommu_group: Option<u32>,
    /// SR-IOV capability (PFs only).
    #[serde(default)]
    pub sriov: Option<SriovSpec>,
}

impl PciFunctionSpec {
    /// `sys/devices/<root>/<bridges>/<address>`.
    pub fn sysfs_dir(&self) -> PathBuf {
        let mut dir = PathBuf::from("sys/devices").join(&self.root_dir);
        for bridge in &self.bridges {
            dir.push(bridge.to_string());
        }
        dir.push(self.address.to_string());
        dir
    }

    /// Writes the function's directory, its `sys/bus/pci/devices` link and its driver and IOMMU links.
    pub fn render(&self, root: &Path) -> io::Result<()> {
        let dir = self.sysfs_dir();
        let full = root.join(&dir);
        write(&full.join("vendor"), &format!("{:#06x}", self.vendor))?;
        write(&full.join("device"), &format!("{:#06x}", self.device))?;
        write(
            &full.join("subsystem_vendor"),
            &format!("{:#06x}", self.vendor),
        )?;
        write(&full.join("subsystem_device"), "0x0000")?;
        write(&full.join("class"), &format!("{:#08x}", self.class))?;
        write(&full.join("revision"), "0x00")?;
        let numa = self
            .numa_node
            .map_or_else(|| "-1".to_owned(), |n| n.to_string());
        write(&full.join("numa_node"), &numa)?;
        write(&full.join("local_cpulist"), &self.local_cpus.to_cpulist())?;
        write(&full.join("driver_override"), "(null)")?;
        link(
            root,
            &PathBuf::from(format!("sys/bus/pci/devices/{}", self.address)),
            &dir,
        )?;
        for netdev in &self.netdevs {
            write(&full.join("net").join(netdev).join("ifindex"), "2")?;
            write_link_up(&full.join("net").join(netdev))?;
            link(
                root,
                &Path::new("sys/class/net").join(netdev),
                &dir.join("net").join(netdev),
            )?;
        }
        if let Some(driver) = &self.driver {
            bind(root, &dir, driver)?;
        }
        if let Some(group) = self.iommu_group {
            std::fs::create_dir_all(root.join(format!("sys/kernel/iommu_groups/{group}/devices")))?;
            link(
                root,
                &dir.join("iommu_group"),
                Path::new(&format!("sys/kernel/iommu_groups/{group}")),
            )?;
        }
        if let Some(sriov) = &self.sriov {
            write(&full.join("sriov_totalvfs"), &sriov.total_vfs.to_string())?;
            write(&full.join("sriov_numvfs"), "0")?;
            write(&full.join("sriov_offset"), &sriov.offset.to_string())?;
            write(&full.join("sriov_stride"), &sriov.stride.to_string())?;
            write(
                &full.join("sriov_vf_device"),
                &format!("{:04x}", sriov.vf_device),
            )?;
            write(
                &full.join("sriov_drivers_autoprobe"),
                if sriov.autoprobe { "1" } else { "0" },
            )?;
        }
        Ok(())
    }
}

/// The link state of an interface that is up with its cable in (`flags` with IFF_UP, `operstate up`,
/// `carrier 1`): tests make a link go down by writing these files.
pub(crate) fn write_link_up(netdev_dir: &Path) -> io::Result<()> {
    write(&netdev_dir.join("flags"), "0x1003")?;
    write(&netdev_dir.join("operstate"), "up")?;
    write(&netdev_dir.join("carrier"), "1")
}

/// Binds the function at `dir` (relative to `root`) to `driver`: the driver's directory with its
/// `bind`/`unbind` files, and the function's `driver` link.
pub(crate) fn bind(root: &Path, dir: &Path, driver: &str) -> io::Result<()> {
    let driver_dir = PathBuf::from(format!("sys/bus/pci/drivers/{driver}"));
    for file in ["bind", "unbind", "new_id"] {
        let path = root.join(&driver_dir).join(file);
        if !path.exists() {
            write(&path, "")?;
        }
    }
    link(root, &dir.join("driver"), &driver_dir)
}
