//! The table form of the device families: one line per PCI function (bridges counted, not listed),
//! with its driver, NUMA node, PCIe root, name, interfaces and SR-IOV state.

use std::collections::BTreeMap;
use std::fmt::Write;

use hal::{PciAddress, PciFunction, SriovState};

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
