//! The table form of the device families: one line per PCI function (bridges counted, not listed),
//! with its driver, NUMA node, PCIe root, name, interfaces and SR-IOV state; RDMA devices and GPUs.

use std::collections::BTreeMap;
use std::fmt::Write;

use hal::{GpuInfo, LinkLayer, PciAddress, PciFunction, RdmaCharKind, RdmaInfo, SriovState};

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

/// Renders PCI functions, with SR-IOV state beside each PF.
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
            f.driver.as_deref().unwrap_or("-"),
            f.numa_node
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            f.pcie_root
                .map_or_else(|| "root ?".to_owned(), |r| r.to_string()),
        );
        if let Some(name) = &f.device_name {
            let _ = write!(line, "  {name}");
        }
        if !f.netdevs.is_empty() {
            let _ = write!(line, "  [{}]", f.netdevs.join(", "));
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
            false => format!("[{}]", d.netdevs.join(", ")),
        };
        let nodes: Vec<&str> = d
            .char_devices
            .iter()
            .filter(|c| c.kind != RdmaCharKind::RdmaCm)
            .filter_map(|c| c.path.rsplit('/').next())
            .collect();
        let _ = writeln!(
            out,
            "  {:<10} {pci}  {netdevs}  {}",
            d.name,
            nodes.join(" ")
        );
        for p in &d.ports {
            let layer = match &p.link_layer {
                Some(LinkLayer::Infiniband) => "InfiniBand",
                Some(LinkLayer::Ethernet) => "Ethernet",
                Some(LinkLayer::Other(other)) => other.as_str(),
                None => "-",
            };
            let _ = writeln!(
                out,
                "    port {}  {} {}  {layer}  {}",
                p.number,
                p.state.as_deref().unwrap_or("-"),
                p.phys_state.as_deref().unwrap_or("-"),
                p.rate.as_deref().unwrap_or("-"),
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
            g.driver.as_deref().unwrap_or("-")
        );
        let nodes: Vec<String> = [g.drm_card.clone(), g.drm_render.clone()]
            .into_iter()
            .flatten()
            .chain(g.nvidia_minor.map(|m| format!("/dev/nvidia{m}")))
            .collect();
        if !nodes.is_empty() {
            let _ = write!(line, "  {}", nodes.join(" "));
        }
        if let Some(bytes) = g.memory_bytes {
            let _ = write!(line, "  {} MiB", bytes / (1024 * 1024));
        }
        if let Some(product) = &g.product {
            let _ = write!(line, "  {product}");
        }
        if let Some(architecture) = &g.architecture {
            let _ = write!(line, "  {architecture}");
        }
        if let Some(cc) = &g.compute_capability {
            let _ = write!(line, "  cc {cc}");
        }
        if let Some(version) = &g.driver_version {
            let _ = write!(line, "  driver {version}");
        }
        if let Some(uuid) = &g.uuid {
            let _ = write!(line, "  {uuid}");
        }
        let _ = writeln!(out, "{line}");
    }
}
