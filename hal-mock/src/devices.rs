//! RDMA devices and GPUs of a fixture, rendered as the kernel lays them out under their PCI function.

use std::io;
use std::path::{Path, PathBuf};

use hal::PciAddress;

use crate::pci::PciFunctionSpec;
use crate::tree::{link, write};

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdmaPortSpec {
    /// `state` as the kernel prints it (`4: ACTIVE`).
    pub state: String,
    /// `phys_state` (`5: LinkUp`).
    pub phys_state: String,
    /// `rate` (`400 Gb/sec (4X NDR)`).
    pub rate: String,
    /// `link_layer` (`InfiniBand`, `Ethernet`).
    pub link_layer: String,
}

/// One RDMA device on a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdmaSpec {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// Its PCI function (must be in the machine's `pci` list).
    pub pci: PciAddress,
    /// `node_guid`.
    pub node_guid: String,
    /// Ports 1.., in order.
    pub ports: Vec<RdmaPortSpec>,
    /// Index N of its `uverbsN` node.
    pub uverbs: u32,
    /// Index N of its first `umadN`/`issmN` pair (one pair per port).
    pub umad: u32,
    /// RoCE netdev of port 1 (`gid_attrs/ndevs/0`), if any.
    #[serde(default)]
    pub roce_netdev: Option<String>,
}

/// NVIDIA driver facts (`/proc/driver/nvidia/gpus/<bdf>/information`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvidiaSpec {
    /// `Model`.
    pub model: String,
    /// `GPU UUID`.
    pub uuid: String,
    /// `Device Minor`.
    pub minor: u32,
}

/// One GPU on a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Its PCI function (must be in the machine's `pci` list).
    pub pci: PciAddress,
    /// `cardN` index, for DRM drivers.
    #[serde(default)]
    pub drm_card: Option<u32>,
    /// `renderDN` number (128 and up), for DRM drivers.
    #[serde(default)]
    pub drm_render: Option<u32>,
    /// Intel out-of-tree i915 `lmem_total_bytes`.
    #[serde(default)]
    pub lmem_total_bytes: Option<u64>,
    /// NVIDIA proprietary driver facts.
    #[serde(default)]
    pub nvidia: Option<NvidiaSpec>,
}

fn function_dir(functions: &[PciFunctionSpec], address: PciAddress) -> io::Result<PathBuf> {
    functions
        .iter()
        .find(|f| f.address == address)
        .map(PciFunctionSpec::sysfs_dir)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{address} is not in the fixture's pci list"),
            )
        })
}

impl RdmaSpec {
    /// Writes `infiniband/<name>`, its ports, `infiniband_verbs/uverbsN`, `infiniband_mad/{umad,issm}N`
    /// under the PCI function, and the `sys/class` links to them.
    pub fn render(&self, root: &Path, functions: &[PciFunctionSpec]) -> io::Result<()> {
        let pci = function_dir(functions, self.pci)?;
        let dev = pci.join("infiniband").join(&self.name);
        let full = root.join(&dev);
        write(&full.join("node_guid"), &self.node_guid)?;
        write(&full.join("node_type"), "1: CA")?;
        for (i, port) in self.ports.iter().enumerate() {
            let dir = full.join(format!("ports/{}", i + 1));
            write(&dir.join("state"), &port.state)?;
            write(&dir.join("phys_state"), &port.phys_state)?;
            write(&dir.join("rate"), &port.rate)?;
            write(&dir.join("link_layer"), &port.link_layer)?;
            if let (0, Some(netdev)) = (i, &self.roce_netdev) {
                write(&dir.join("gid_attrs/ndevs/0"), netdev)?;
            }
        }
        link(
            root,
            &PathBuf::from(format!("sys/class/infiniband/{}", self.name)),
            &dev,
        )?;
        let verbs = pci.join(format!("infiniband_verbs/uverbs{}", self.uverbs));
        write(&root.join(&verbs).join("ibdev"), &self.name)?;
        write(
            &root.join(&verbs).join("dev"),
            &format!("231:{}", 192 + self.uverbs),
        )?;
        link(
            root,
            &PathBuf::from(format!("sys/class/infiniband_verbs/uverbs{}", self.uverbs)),
            &verbs,
        )?;
        for (i, _) in self.ports.iter().enumerate() {
            let n = self.umad + i as u32;
            for (kind, minor) in [("umad", n), ("issm", 64 + n)] {
                let entry = pci.join(format!("infiniband_mad/{kind}{n}"));
                write(&root.join(&entry).join("ibdev"), &self.name)?;
                write(&root.join(&entry).join("port"), &(i + 1).to_string())?;
                write(&root.join(&entry).join("dev"), &format!("231:{minor}"))?;
                link(
                    root,
                    &PathBuf::from(format!("sys/class/infiniband_mad/{kind}{n}")),
                    &entry,
                )?;
            }
        }
        Ok(())
    }
}

impl GpuSpec {
    /// Writes the DRM nodes under the PCI function with their `sys/class/drm` links, Intel local
    /// memory, and the NVIDIA driver's `information` file.
    pub fn render(&self, root: &Path, functions: &[PciFunctionSpec]) -> io::Result<()> {
        let pci = function_dir(functions, self.pci)?;
        for (name, minor) in [
            (self.drm_card.map(|n| format!("card{n}")), self.drm_card),
            (
                self.drm_render.map(|n| format!("renderD{n}")),
                self.drm_render,
            ),
        ] {
            let (Some(name), Some(minor)) = (name, minor) else {
                continue;
            };
            let node = pci.join("drm").join(&name);
            write(&root.join(&node).join("dev"), &format!("226:{minor}"))?;
            if let (Some(bytes), true) = (self.lmem_total_bytes, name.starts_with("card")) {
                write(
                    &root.join(&node).join("lmem_total_bytes"),
                    &bytes.to_string(),
                )?;
            }
            link(root, &PathBuf::from(format!("sys/class/drm/{name}")), &node)?;
        }
        if let Some(nvidia) = &self.nvidia {
            let info = format!(
                "Model: \t\t {}\nIRQ:   \t\t 0\nGPU UUID: \t\t {}\nVideo BIOS: \t\t ??.??.??.??.??\nBus Type: \t\t PCIe\nDMA Size: \t\t 47 bits\nDMA Mask: \t\t 0x7fffffffffff\nBus Location: \t\t {}\nDevice Minor: \t\t {}\nGPU Excluded:\t\t No",
                nvidia.model, nvidia.uuid, self.pci, nvidia.minor
            );
            write(
                &root.join(format!("proc/driver/nvidia/gpus/{}/information", self.pci)),
                &info,
            )?;
        }
        Ok(())
    }
}
