//! The table form of the device families: one line per PCI function (bridges counted, not listed),
//! with its driver, NUMA node, PCIe root, name, interfaces and SR-IOV state; RDMA devices and GPUs.

use std::collections::BTreeMap;
use std::fmt::Write;

use hal::{GpuInfo, LinkLayer, PciAddress, PciFunction, RdmaCharKind, RdmaInfo, SriovState};

use super::cell;

/// The tree's names, each escaped and bounded ([`cell`]), joined by `, `.
fn cells(names: &[String]) -> String {
    names
        .iter()
        .map(|name| cell(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short name for a PCI base class.
fn class_name(function: &PciFunction) -> String {
    match function.base_class() {
        0x01 => "storage".into(),
        0x02 => "network".into(),
        0x03 => "display".into(),
        0x04 => "multimedia".into(),
        0x05 => "memory".into(),
        0x06 => "bridge".into(),
        0x08 => "system".into(),
        0x0c => "serial-bus".into(),
        0x12 => "accelerator".into(),
        other => format!("class {other:#04x}"),
    }
}

/// Renders PCI functions, with SR-IOV state beside each PF. Every string from the tree (driver,
/// name, interfaces) goes in through [`cell`]: a directory name cannot forge a row.
pub(super) fn render_pci(
    out: &mut String,
    functions: &[PciFunction],
    sriov: Option<&[SriovState]>,
) {
    let sriov: BTreeMap<PciAddress, &SriovState> = sriov
        .unwrap_or_default()
        .iter()
        .map(|s| (s.pf, s))
        .collect();
    let (bridges, shown): (Vec<&PciFunction>, Vec<&PciFunction>) =
        functions.iter().partition(|f| f.base_class() == 0x06);
    let bridges = match bridges.len() {
        0 => String::new(),
        1 => " (1 bridge not listed)".to_owned(),
        n => format!(" ({n} bridges not listed)"),
    };
    let _ = writeln!(out, "pci: {} functions{bridges}", functions.len());
    for f in shown {
        let mut line = format!(
            "  {}  {:04x}:{:04x}  {:<11}  {:<10}  numa {:<2}  {}",
            f.address,
            f.vendor_id,
            f.device_id,
            class_name(f),
            cell(f.driver.as_deref().unwrap_or("-")),
            f.numa_node
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            f.pcie_root
                .map_or_else(|| "root ?".to_owned(), |r| r.to_string()),
        );
        if let Some(name) = &f.device_name {
            let _ = write!(line, "  {}", cell(name));
        }
        if !f.netdevs.is_empty() {
            let _ = write!(line, "  [{}]", cells(&f.netdevs));
        }
        if let Some(pf) = f.physfn {
            let _ = write!(line, "  VF of {pf}");
        }
        if let Some(state) = sriov.get(&f.address) {
            let _ = write!(line, "  sriov {}/{} VFs", state.num_vfs, state.total_vfs);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Renders RDMA devices: one line per device, one per port.
pub(super) fn render_rdma(out: &mut String, devices: &[RdmaInfo]) {
    let _ = writeln!(out, "rdma: {} devices", devices.len());
    for d in devices {
        let pci = d
            .pci_address
            .map_or_else(|| "no PCI function".to_owned(), |a| a.to_string());
        let netdevs = match d.is_ib_only() {
            true => "IB-only".to_owned(),
            false => format!("[{}]", cells(&d.netdevs)),
        };
        let nodes: Vec<_> = d
            .char_devices
            .iter()
            .filter(|c| c.kind != RdmaCharKind::RdmaCm)
            .filter_map(|c| c.path.rsplit('/').next())
            .map(cell)
            .collect();
        let _ = writeln!(
            out,
            "  {:<10} {pci}  {netdevs}  {}",
            cell(&d.name),
            nodes.join(" ")
        );
        for p in &d.ports {
            let layer = match &p.link_layer {
                Some(LinkLayer::Infiniband) => "InfiniBand",
                Some(LinkLayer::Ethernet) => "Ethernet",
                Some(LinkLayer::Other(other)) => &cell(other),
                None => "-",
            };
            let _ = writeln!(
                out,
                "    port {}  {} {}  {layer}  {}",
                p.number,
                cell(p.state.as_deref().unwrap_or("-")),
                cell(p.phys_state.as_deref().unwrap_or("-")),
                cell(p.rate.as_deref().unwrap_or("-")),
            );
        }
    }
}

/// Renders GPUs: one line each.
pub(super) fn render_gpus(out: &mut String, gpus: &[GpuInfo]) {
    let _ = writeln!(out, "gpus: {}", gpus.len());
    for g in gpus {
        let mut line = format!(
            "  {}  {:<7}",
            g.pci_address,
            cell(g.driver.as_deref().unwrap_or("-"))
        );
        let nodes: Vec<String> = [g.drm_card.as_deref(), g.drm_render.as_deref()]
            .into_iter()
            .flatten()
            .map(|node| cell(node).into_owned())
            .chain(g.nvidia_minor.map(|m| format!("/dev/nvidia{m}")))
            .collect();
        if !nodes.is_empty() {
            let _ = write!(line, "  {}", nodes.join(" "));
        }
        if let Some(bytes) = g.memory_bytes {
            let _ = write!(line, "  {} MiB", bytes / (1024 * 1024));
        }
        if let Some(product) = &g.product {
            let _ = write!(line, "  {}", cell(product));
        }
        if let Some(architecture) = &g.architecture {
            let _ = write!(line, "  {}", cell(architecture));
        }
        if let Some(cc) = &g.compute_capability {
            let _ = write!(line, "  cc {}", cell(cc));
        }
        if let Some(version) = &g.driver_version {
            let _ = write!(line, "  driver {}", cell(version));
        }
        if let Some(uuid) = &g.uuid {
            let _ = write!(line, "  {}", cell(uuid));
        }
        let _ = writeln!(out, "{line}");
    }
}
