//! The GPU/NIC topology view, like `nvidia-smi topo -m`: for every pair of GPUs and NICs, how far apart
//! they sit in the PCIe tree and across NUMA nodes. This is what decides whether a GPU and a NIC given to
//! one pod can do GPUDirect RDMA without crossing the SMP interconnect.

use std::collections::BTreeMap;
use std::fmt::Write;

use hal::{GpuInfo, NumaNode, PciAddress, PciFunction, PcieRoot, RdmaInfo};

/// How two devices are connected, nearest first (the `nvidia-smi topo -m` legend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Link {
    /// The device itself.
    #[serde(rename = "X")]
    Same,
    /// At most one PCIe bridge between them (the same switch port, or a PF and its VFs).
    #[serde(rename = "PIX")]
    Pix,
    /// Several PCIe bridges, without going through the host bridge.
    #[serde(rename = "PXB")]
    Pxb,
    /// The same PCIe root (host bridge), no common bridge below it.
    #[serde(rename = "PHB")]
    Phb,
    /// Different PCIe roots in the same NUMA node.
    #[serde(rename = "NODE")]
    Node,
    /// Different NUMA nodes: traffic crosses the SMP interconnect.
    #[serde(rename = "SYS")]
    Sys,
}

impl Link {
    /// The legend's name.
    pub fn name(self) -> &'static str {
        match self {
            Link::Same => "X",
            Link::Pix => "PIX",
            Link::Pxb => "PXB",
            Link::Phb => "PHB",
            Link::Node => "NODE",
            Link::Sys => "SYS",
        }
    }
}

/// What a device of the matrix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// A GPU.
    Gpu,
    /// A network function: a physical network function, or any function with an RDMA device.
    Nic,
}

/// One row/column of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// `GPU0`, `NIC3`: numbered in PCI address order within each kind.
    pub label: String,
    /// GPU or NIC.
    pub kind: EndpointKind,
    /// The RDMA device (`mlx5_0`), else the first netdev, of a NIC; `null` for GPUs and NICs without.
    pub name: Option<String>,
    /// The PCI function.
    pub pci_address: PciAddress,
    /// Its NUMA node (`null` when the kernel says -1).
    pub numa_node: Option<NumaNode>,
    /// Its PCIe root.
    pub pcie_root: Option<PcieRoot>,
}

/// The matrix: `links[i][j]` connects `devices[i]` and `devices[j]`; `null` where it cannot be told
/// (different PCIe roots and a NUMA node unknown).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    /// GPUs first, then NICs.
    pub devices: Vec<Endpoint>,
    /// Square, symmetric, `X` on the diagonal.
    pub links: Vec<Vec<Option<Link>>>,
}

impl Topology {
    /// Builds the matrix from the PCI functions, GPUs and RDMA devices of one inventory.
    pub fn build(functions: &[PciFunction], gpus: &[GpuInfo], rdma: &[RdmaInfo]) -> Topology {
        let by_address: BTreeMap<PciAddress, &PciFunction> =
            functions.iter().map(|f| (f.address, f)).collect();
        let rdma_of: BTreeMap<PciAddress, &str> = rdma
            .iter()
            .filter_map(|d| Some((d.pci_address?, d.name.as_str())))
            .collect();
        let mut devices = Vec::new();
        let mut gpu_addresses: Vec<PciAddress> = gpus.iter().map(|g| g.pci_address).collect();
        gpu_addresses.sort();
        for (i, address) in gpu_addresses.iter().enumerate() {
            devices.push(endpoint(
                format!("GPU{i}"),
                EndpointKind::Gpu,
                None,
                *address,
                &by_address,
            ));
        }
        let nics = functions.iter().filter(|f| {
            rdma_of.contains_key(&f.address) || (f.is_network() && !f.is_virtual_function())
        });
        for (i, f) in nics.enumerate() {
            let name = rdma_of
                .get(&f.address)
                .map(|n| (*n).to_owned())
                .or_else(|| f.netdevs.first().cloned());
            devices.push(endpoint(
                format!("NIC{i}"),
                EndpointKind::Nic,
                name,
                f.address,
                &by_address,
            ));
        }
        let links = devices
            .iter()
            .map(|a| devices.iter().map(|b| link(a, b, &by_address)).collect())
            .collect();
        Topology { devices, links }
    }

    /// Renders the matrix with its legend, like `nvidia-smi topo -m`.
    pub fn render(&self, out: &mut String) {
        if self.devices.is_empty() {
            let _ = writeln!(out, "topology: no GPUs or NICs");
            return;
        }
        let _ = writeln!(out, "topology (GPU/NIC pairs, like nvidia-smi topo -m):");
        let mut header = format!("  {:<6}", "");
        for d in &self.devices {
            let _ = write!(header, "{:<6}", d.label);
        }
        let _ = writeln!(out, "{header}NUMA  PCIe root");
        for (d, row) in self.devices.iter().zip(&self.links) {
            let mut line = format!("  {:<6}", d.label);
            for link in row {
                let _ = write!(line, "{:<6}", link.map_or("?", Link::name));
            }
            let numa = d
                .numa_node
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            let root = d
                .pcie_root
                .map_or_else(|| "?".to_owned(), |r| r.to_string());
            let _ = writeln!(out, "{line}{numa:<6}{root}");
        }
        for d in &self.devices {
            let name = d
                .name
                .as_deref()
                .map(|n| format!(" {}", super::cell(n)))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}:{name} {}", d.label, d.pci_address);
        }
        let _ = writeln!(
            out,
            "  legend: X self, PIX at most one PCIe bridge, PXB several bridges, PHB same PCIe root,\n  \
             NODE same NUMA node, SYS different NUMA nodes, ? unknown (no NUMA node)"
        );
    }
}

fn endpoint(
    label: String,
    kind: EndpointKind,
    name: Option<String>,
    address: PciAddress,
    by_address: &BTreeMap<PciAddress, &PciFunction>,
) -> Endpoint {
    let function = by_address.get(&address);
    Endpoint {
        label,
        kind,
        name,
        pci_address: address,
        numa_node: function.and_then(|f| f.numa_node),
        pcie_root: function.and_then(|f| f.pcie_root),
    }
}

/// The bridges above a function, nearest first (bounded: a cycle in a hostile tree ends it).
fn ancestors(
    address: PciAddress,
    by_address: &BTreeMap<PciAddress, &PciFunction>,
) -> Vec<PciAddress> {
    let mut chain = Vec::new();
    let mut next = by_address.get(&address).and_then(|f| f.parent);
    while let Some(parent) = next {
        if chain.contains(&parent) || chain.len() >= 64 {
            break;
        }
        chain.push(parent);
        next = by_address.get(&parent).and_then(|f| f.parent);
    }
    chain
}

fn link(
    a: &Endpoint,
    b: &Endpoint,
    by_address: &BTreeMap<PciAddress, &PciFunction>,
) -> Option<Link> {
    if a.pci_address == b.pci_address {
        return Some(Link::Same);
    }
    if a.pcie_root.is_some() && a.pcie_root == b.pcie_root {
        let up_a = ancestors(a.pci_address, by_address);
        let up_b = ancestors(b.pci_address, by_address);
        let common = up_a
            .iter()
            .enumerate()
            .find_map(|(i, bridge)| Some((i, up_b.iter().position(|x| x == bridge)?)));
        return Some(match common {
            None => Link::Phb,
            // The common bridge is the parent of both: it is the only bridge on the path.
            Some((0, 0)) => Link::Pix,
            Some(_) => Link::Pxb,
        });
    }
    match (a.numa_node, b.numa_node) {
        (Some(x), Some(y)) if x == y => Some(Link::Node),
        (Some(_), Some(_)) => Some(Link::Sys),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
