//! The device side of the picture: under each NUMA node its PCIe roots, the bridges on the way down,
//! and the GPUs, NICs (VFs under their PF, folded when many), RDMA devices with their char devices, each
//! labelled with the name the driver publishes.

use std::collections::{BTreeMap, BTreeSet};

use hal::{GpuInfo, PciAddress, PciFunction, PcieRoot, RdmaCharKind, RdmaInfo};

use super::Highlights;
use super::cpus::gib;
use super::layout::{Flow, Node};
use driver::inventory::Inventory;

/// VFs beyond this many under a PF are folded into small boxes.
const LISTED_VFS: usize = 4;
/// Bridges followed up from a device (a cycle in a hostile tree ends there).
const MAX_DEPTH: usize = 64;

/// A PCI function the picture shows: a published device, or an unpublished GPU or RDMA function.
#[derive(Debug, Clone, Default)]
pub(super) struct Shown {
    /// The published device name.
    pub name: Option<String>,
    /// GPU partitions published under it: (VF index, device name).
    pub partitions: Vec<(u32, String)>,
}

/// Where a function sits: its NUMA node (`None`: unknown) and PCIe root (`None`: unknown).
pub(super) type Place = (Option<u32>, Option<PcieRoot>);

/// Everything needed to draw the devices.
pub(super) struct Devices<'a> {
    pub inventory: &'a Inventory,
    pub shown: BTreeMap<PciAddress, Shown>,
    pub highlights: &'a Highlights,
}

impl Devices<'_> {
    fn function(&self, address: PciAddress) -> Option<&PciFunction> {
        self.inventory.function(address)
    }

    fn gpu(&self, address: PciAddress) -> Option<&GpuInfo> {
        self.inventory
            .gpus
            .iter()
            .find(|g| g.pci_address == address)
    }

    fn rdma(&self, address: PciAddress) -> Option<&RdmaInfo> {
        self.inventory
            .rdma
            .iter()
            .find(|r| r.pci_address == Some(address))
    }

    /// The NUMA node and PCIe root of a shown function.
    pub(super) fn place(&self, address: PciAddress) -> Place {
        // A shown VF hangs under its PF, so it is drawn where the PF is, even when the kernel gives
        // it another NUMA node (an administrator fixed the PF's `numa_node`, not its VFs'). One
        // level only: a hostile tree's `physfn` links may loop.
        let drawn_at = match self.function(address).and_then(|f| f.physfn) {
            Some(pf) if pf != address && self.shown.contains_key(&pf) => pf,
            _ => address,
        };
        self.own_place(drawn_at)
    }

    /// The NUMA node and PCIe root of `address` itself.
    fn own_place(&self, address: PciAddress) -> Place {
        let f = self.function(address);
        let numa = f
            .and_then(|f| f.numa_node)
            .or_else(|| self.gpu(address).and_then(|g| g.numa_node))
            .map(|n| n.id());
        (numa, f.and_then(|f| f.pcie_root))
    }

    /// The shown functions by place.
    pub(super) fn by_place(&self) -> BTreeMap<Place, Vec<PciAddress>> {
        let mut out: BTreeMap<Place, Vec<PciAddress>> = BTreeMap::new();
        for address in self.shown.keys() {
            out.entry(self.place(*address)).or_default().push(*address);
        }
        out
    }

    /// Where a function hangs in the drawn tree: its PF (a shown VF), else its nearest bridge.
    fn tree_parent(&self, address: PciAddress) -> Option<PciAddress> {
        let f = self.function(address)?;
        match f.physfn {
            Some(pf) if self.shown.contains_key(&pf) && pf != address => Some(pf),
            _ => f.parent.filter(|p| *p != address),
        }
    }

    /// The PCIe root box with the bridges and devices of `addresses` (all of this root).
    pub(super) fn root_node(&self, root: Option<PcieRoot>, addresses: &[PciAddress]) -> Node {
        // Every function of the tree: the shown ones and the bridges above them, in the same root.
        let mut in_tree: BTreeSet<PciAddress> = addresses.iter().copied().collect();
        for a in addresses {
            let mut next = self.tree_parent(*a);
            let mut depth = 0;
            while let Some(p) = next {
                depth += 1;
                let same_root = self.function(p).is_some_and(|f| f.pcie_root == root);
                if depth > MAX_DEPTH || !same_root || !in_tree.insert(p) {
                    break;
                }
                next = self.tree_parent(p);
            }
        }
        let mut children: BTreeMap<Option<PciAddress>, Vec<PciAddress>> = BTreeMap::new();
        for a in &in_tree {
            let parent = self.tree_parent(*a).filter(|p| in_tree.contains(p));
            children.entry(parent).or_default().push(*a);
        }
        let label = root.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        let mut drawn = BTreeSet::new();
        let top = children.get(&None).cloned().unwrap_or_default();
        let mut node = Node::new("pcie-root", "#eef3fb")
            .data("root", label.clone())
            .line(format!("PCIe root {label}"));
        for a in top {
            node = node.child(self.function_node(a, &children, &mut drawn, 0));
        }
        // A cycle leaves functions unreachable from the top: draw them at the top too.
        for a in addresses {
            if !drawn.contains(a) {
                node = node.child(self.function_node(*a, &children, &mut drawn, 0));
            }
        }
        node
    }

    fn function_node(
        &self,
        address: PciAddress,
        children: &BTreeMap<Option<PciAddress>, Vec<PciAddress>>,
        drawn: &mut BTreeSet<PciAddress>,
        depth: usize,
    ) -> Node {
        drawn.insert(address);
        let below: Vec<PciAddress> = children
            .get(&Some(address))
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| !drawn.contains(c))
            .collect();
        let mut node = match self.shown.get(&address) {
            Some(shown) => self.device_node(address, shown),
            None => Node::new("bridge", "#f7f7f7")
                .data("pci", address.to_string())
                .line(format!("bridge {address}")),
        };
        if depth >= MAX_DEPTH {
            return node;
        }
        let (vfs, others): (Vec<PciAddress>, Vec<PciAddress>) = below
            .into_iter()
            .partition(|c| self.function(*c).and_then(|f| f.physfn) == Some(address));
        if vfs.len() > LISTED_VFS {
            let mut folded = Node::new("vfs", "#ffffff")
                .flow(Flow::Rows(4))
                .line(format!("{} VFs", vfs.len()));
            for vf in vfs {
                drawn.insert(vf);
                folded = folded.child(self.folded_vf(vf));
            }
            node = node.child(folded);
        } else {
            for vf in vfs {
                node = node.child(self.function_node(vf, children, drawn, depth + 1));
            }
        }
        for c in others {
            if !drawn.contains(&c) {
                node = node.child(self.function_node(c, children, drawn, depth + 1));
            }
        }
        node
    }

    /// A device box: published name, what it is, its address and device nodes.
    fn device_node(&self, address: PciAddress, shown: &Shown) -> Node {
        let f = self.function(address);
        let gpu = self.gpu(address);
        let rdma = self.rdma(address);
        let (class, fill, kind) = match (gpu, rdma, f) {
            (Some(_), _, _) => ("device", "#e3f4e1", "GPU"),
            (None, Some(r), _) if r.is_ib_only() => ("device", "#fdf0dc", "RDMA"),
            (None, _, Some(f)) if f.physfn.is_some() => ("device", "#fdf0dc", "VF"),
            _ => ("device", "#fdf0dc", "NIC"),
        };
        let class = if shown.name.is_some() {
            class
        } else {
            "pci-function"
        };
        let mut node = Node::new(class, fill).data("pci", address.to_string());
        if let Some(name) = &shown.name {
            node = self.highlight(node.data("device", name.clone()), name);
            node = node.line(name.clone());
        } else {
            node = node.line(format!("{address} (not published)"));
        }
        let mut what = vec![kind.to_owned()];
        if let Some(g) = gpu {
            what.extend(g.product.clone());
            what.extend(g.memory_bytes.map(gib));
        } else if let Some(name) = f.and_then(|f| f.device_name.clone()) {
            what.push(name);
        }
        node = node.line(what.join(" · "));
        let mut place = vec![address.to_string()];
        if let Some(f) = f {
            place.extend(f.driver.clone());
            place.extend(f.netdevs.iter().cloned());
        }
        if let Some(g) = gpu {
            place.extend(g.nvidia_minor.map(|m| format!("/dev/nvidia{m}")));
            place.extend(g.drm_card.clone());
        }
        node = node.line(place.join(" "));
        if let Some(r) = rdma {
            let chars: Vec<&str> = r
                .char_devices
                .iter()
                .filter(|c| c.kind != RdmaCharKind::RdmaCm)
                .filter_map(|c| c.path.rsplit('/').next())
                .collect();
            let ib = if r.is_ib_only() { " IB-only" } else { "" };
            node = node.child(
                Node::new("rdma", "#ffffff")
                    .data("rdma", r.name.clone())
                    .line(format!("{}{ib}: {}", r.name, chars.join(" "))),
            );
        }
        for (index, name) in &shown.partitions {
            let part = Node::new("device", "#e3f4e1")
                .data("device", name.clone())
                .line(format!("{name} (partition {index})"));
            node = node.child(self.highlight(part, name));
        }
        node
    }

    /// A VF folded into a small box: its index and netdev; the device name in the tooltip.
    fn folded_vf(&self, address: PciAddress) -> Node {
        let Some(shown) = self.shown.get(&address) else {
            return Node::new("pci-function", "#fdf0dc")
                .data("pci", address.to_string())
                .line(address.to_string());
        };
        let f = self.function(address);
        let index = self
            .inventory
            .sriov
            .iter()
            .flat_map(|s| s.vfs.iter())
            .find(|v| v.address == address)
            .map_or_else(|| "?".to_owned(), |v| v.index.to_string());
        let netdev = f
            .and_then(|f| f.netdevs.first().cloned())
            .unwrap_or_default();
        let name = shown.name.clone().unwrap_or_default();
        let mut node = Node::new("device", "#fdf0dc")
            .data("pci", address.to_string())
            .data("device", name.clone())
            .line(format!("vf{index} {netdev}").trim_end().to_owned());
        node.title = Some(format!("{name} {address}"));
        if let Some(r) = self.rdma(address) {
            node = node.line(r.name.clone());
        }
        self.highlight(node, &name)
    }

    fn highlight(&self, node: Node, name: &str) -> Node {
        self.highlights.apply(node, name)
    }
}

/// RDMA devices without a PCI function (soft RoCE, siw): listed in the "no NUMA" box.
pub(super) fn unattached_rdma(inventory: &Inventory) -> Vec<Node> {
    inventory
        .rdma
        .iter()
        .filter(|r| r.pci_address.is_none())
        .map(|r| {
            let chars: Vec<&str> = r
                .char_devices
                .iter()
                .filter(|c| c.kind != RdmaCharKind::RdmaCm)
                .filter_map(|c| c.path.rsplit('/').next())
                .collect();
            Node::new("rdma", "#ffffff")
                .data("rdma", r.name.clone())
                .line(format!("{} (no PCI function): {}", r.name, chars.join(" ")))
        })
        .collect()
}
