//! [`SysfsPci`]: every PCI function under `sys/bus/pci/devices`, with its place in the topology.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hal::{
    CpuSet, Discovered, Error, NumaNode, ParseError, PciAddress, PciDevice, PciFunction, Result,
};

use super::SysfsRoot;
use super::attr::ErrorLog;
use super::link::{pci_functions_in_path, pcie_root_of_path, resolve_link_text};
use super::pciids::PciNames;
use super::tree::Tree;

/// PCI functions read from sysfs under a root directory, named from a pci.ids database when given one.
#[derive(Debug, Clone, Default)]
pub struct SysfsPci {
    root: SysfsRoot,
    pci_ids: Option<PathBuf>,
}

impl SysfsPci {
    /// Reads the machine under `root` (the directory holding `sys/`). No names without
    /// [`Self::with_pci_ids`].
    pub fn new(root: SysfsRoot) -> Self {
        SysfsPci {
            root,
            pci_ids: None,
        }
    }

    /// Names vendors and devices from the pci.ids database at `path` (a host file: a captured tree
    /// has none). A missing or unreadable database is an error entry; discovery goes on without names.
    pub fn with_pci_ids(mut self, path: impl Into<PathBuf>) -> Self {
        self.pci_ids = Some(path.into());
        self
    }
}

impl PciDevice for SysfsPci {
    fn pci_functions(&self) -> Result<Discovered<PciFunction>> {
        let Discovered {
            items: mut functions,
            errors,
        } = read_functions(&Tree::open(&self.root), |_, _| true);
        let mut errors = ErrorLog(errors);
        if let Some(path) = &self.pci_ids {
            let wanted: BTreeSet<(u16, u16)> = functions
                .iter()
                .map(|f| (f.vendor_id, f.device_id))
                .collect();
            if let Some(names) = errors.keep(PciNames::load(path, &wanted).map(Some)) {
                for f in &mut functions {
                    f.vendor_name = names.vendor(f.vendor_id).map(str::to_owned);
                    f.device_name = names.device(f.vendor_id, f.device_id).map(str::to_owned);
                }
            }
        }
        Ok(Discovered {
            items: functions,
            errors: errors.0,
        })
    }
}

/// The functions under `sys/bus/pci/devices` that `wanted` keeps (given the address and the entry's
/// path), read in full and sorted by address; the others cost only what `wanted` reads. No PCI bus
/// (s390, some containers) is an empty result.
pub(crate) fn read_functions(
    tree: &Tree,
    wanted: impl Fn(PciAddress, &Path) -> bool,
) -> Discovered<PciFunction> {
    let devices = tree.join("sys/bus/pci/devices");
    let mut errors = ErrorLog::default();
    let Some(names) = tree.entry_names(&devices, &mut errors) else {
        return Discovered {
            items: Vec::new(),
            errors: errors.0,
        };
    };
    let slots = read_slots(tree, &mut errors);
    let cpu_limit = super::numa::possible_cpu_limit(tree);
    // Each function's directory is opened inside the root: a link on its path cannot lead out.
    let mut functions: Vec<PciFunction> = names
        .iter()
        .filter_map(|name| Some((PciAddress::parse(name).ok()?, name)))
        .filter(|(address, name)| wanted(*address, &devices.join(name)))
        .filter_map(|(address, name)| {
            match read_function(tree, address, &slots, cpu_limit, &mut errors) {
                Ok(function) => Some(function),
                // Removed while this scan ran (hot unplug, VFs being destroyed): gone, not broken.
                // A directory that cannot be listed again proves nothing: the error stays.
                Err(_) if matches!(tree.list(&devices), Ok(now) if !now.contains(name)) => None,
                Err(e) => {
                    errors.0.push((&e).into());
                    None
                }
            }
        })
        .collect();
    functions.sort_by_key(|f| f.address);
    Discovered {
        items: functions,
        errors: errors.0,
    }
}

/// The `class` of the function at `dir`, when readable.
pub(crate) fn class_of(tree: &Tree, dir: &Path) -> Option<u32> {
    tree.parse_scalar(&dir.join("class"), |t| parse_hex(t, 6))
        .ok()
        .flatten()
}

/// Red Hat's PCI vendor id, which virtio devices carry.
const VIRTIO_VENDOR: u16 = 0x1af4;

/// `sys/bus/pci/slots/<name>/address` (`0000:3b:00`, no function) → slot name.
fn read_slots(tree: &Tree, errors: &mut ErrorLog) -> BTreeMap<String, String> {
    let dir = tree.join("sys/bus/pci/slots");
    let mut slots = BTreeMap::new();
    for name in tree.entry_names(&dir, errors).unwrap_or_default() {
        if let Some(address) = errors.keep(tree.read_optional(&dir.join(&name).join("address"))) {
            slots.insert(address, name);
        }
    }
    slots
}

/// Reads one function. Its identity (vendor, device, class) is required; everything else degrades to
/// `None` with an error entry when unreadable.
fn read_function(
    tree: &Tree,
    address: PciAddress,
    slots: &BTreeMap<String, String>,
    cpu_limit: u32,
    errors: &mut ErrorLog,
) -> Result<PciFunction> {
    let entry = PathBuf::from(format!("sys/bus/pci/devices/{address}"));
    // Old captures hold real directories here instead of links: no path, so no root.
    let sysfs_path = tree.resolve_link(&entry)?.unwrap_or_else(|| entry.clone());
    let dir = tree.join(&sysfs_path);
    let attr = |name: &str| dir.join(name);
    let required = |name: &str, digits: usize| -> Result<u32> {
        tree.parse_scalar(&attr(name), |t| parse_hex(t, digits))?
            .ok_or_else(|| Error::Parse {
                source: ParseError::new("PCI attribute", name, "missing or empty"),
                path: attr(name),
            })
    };
    let vendor_id = required("vendor", 4)? as u16;
    let device_id = required("device", 4)? as u16;
    let class = required("class", 6)?;
    let optional = |errors: &mut ErrorLog, name: &str, digits: usize| {
        errors.keep(tree.parse_scalar(&attr(name), |t| parse_hex(t, digits)))
    };
    let subsystem_vendor_id = optional(errors, "subsystem_vendor", 4).map(|v| v as u16);
    let subsystem_device_id = optional(errors, "subsystem_device", 4).map(|v| v as u16);
    let revision = optional(errors, "revision", 2).map(|v| v as u8);
    let numa_node = errors
        .keep(tree.parse_scalar(&attr("numa_node"), NumaNode::from_kernel_text))
        .flatten();
    let list = |t: &str| CpuSet::from_cpulist_below(t, cpu_limit);
    let mask = |t: &str| CpuSet::from_hex_mask_below(t, cpu_limit);
    let local_cpus = match errors.keep(tree.parse_optional(&attr("local_cpulist"), list)) {
        Some(set) => Some(set),
        None => errors.keep(tree.parse_scalar(&attr("local_cpus"), mask)),
    };
    let driver_override = errors
        .keep(tree.read_optional(&attr("driver_override")))
        .filter(|text| !text.is_empty() && text != "(null)");
    let iommu_group = tree
        .link_name(&attr("iommu_group"))
        .and_then(|g| g.parse().ok());
    let functions = pci_functions_in_path(&sysfs_path);
    let parent = functions
        .len()
        .checked_sub(2)
        .and_then(|i| functions.get(i))
        .copied();
    // Only VFs have `physfn`: a missing link is the common case, not an error.
    let physfn = tree.read_link(&attr("physfn")).and_then(|text| {
        let resolved = resolve_link_text(&attr("physfn"), &sysfs_path.join("physfn"), &text);
        errors.keep(resolved.map(Some))
    });
    let physfn = physfn.and_then(|p| pci_functions_in_path(&p).last().copied());
    let slot_key = format!(
        "{:04x}:{:02x}:{:02x}",
        address.domain, address.bus, address.device
    );
    Ok(PciFunction {
        address,
        vendor_id,
        device_id,
        subsystem_vendor_id,
        subsystem_device_id,
        class,
        revision,
        vendor_name: None,
        device_name: None,
        driver: tree.link_name(&attr("driver")),
        driver_override,
        numa_node,
        local_cpus,
        iommu_group,
        physical_slot: slots.get(&slot_key).cloned(),
        pcie_root: pcie_root_of_path(&sysfs_path),
        parent,
        physfn,
        netdevs: netdevs_of(tree, &dir, vendor_id, errors),
        sysfs_path: sysfs_path.to_string_lossy().into_owned(),
    })
}

/// Interface names of a function: `net/<name>`, and for virtio (vendor 0x1af4) `virtioN/net/<name>`,
/// as virtio-net's interface hangs under the virtio device the PCI function carries.
fn netdevs_of(tree: &Tree, dir: &Path, vendor_id: u16, errors: &mut ErrorLog) -> Vec<String> {
    let mut names = tree
        .entry_names(&dir.join("net"), errors)
        .unwrap_or_default();
    if vendor_id != VIRTIO_VENDOR {
        return names.into_iter().collect();
    }
    for child in tree
        .entry_names(dir, errors)
        .unwrap_or_default()
        .iter()
        .filter(|n| n.starts_with("virtio"))
    {
        names.extend(
            tree.entry_names(&dir.join(child).join("net"), errors)
                .unwrap_or_default(),
        );
    }
    names.into_iter().collect()
}

/// `0x8086` → 0x8086, at most `digits` hex digits (the kernel prints `0x%04x`, class `0x%06x`).
fn parse_hex(text: &str, digits: usize) -> Result<u32, ParseError> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.is_empty() || hex.len() > digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::new(
            "PCI id",
            text,
            "expected 0x and hex digits",
        ));
    }
    u32::from_str_radix(hex, 16).map_err(|_| ParseError::new("PCI id", text, "not hexadecimal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn write(root: &Path, relative: &str, contents: &str) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// A PF on a root port and a VF, plus an Azure VMBUS function.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pf = "sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0";
        let vf = "sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0";
        let vmbus = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/00000101-0001-0000-3130-444532304235/pci0101:00/0101:00:00.0";
        for (path, vendor, device, class) in [
            (pf, "0x8086", "0x1592", "0x020000"),
            (vf, "0x8086", "0x1889", "0x020000"),
            (vmbus, "0x15b3", "0x101e", "0x020700"),
        ] {
            write(root, &format!("{path}/vendor"), &format!("{vendor}\n"));
            write(root, &format!("{path}/device"), &format!("{device}\n"));
            write(root, &format!("{path}/class"), &format!("{class}\n"));
            write(root, &format!("{path}/numa_node"), "-1\n");
            write(root, &format!("{path}/driver_override"), "(null)\n");
        }
        write(root, &format!("{pf}/numa_node"), "1\n");
        write(root, &format!("{pf}/local_cpulist"), "56-111\n");
        write(root, &format!("{pf}/revision"), "0x02\n");
        write(root, &format!("{pf}/net/ens1f0/ifindex"), "4\n");
        write(root, &format!("{vf}/driver_override"), "vfio-pci\n");
        write(root, "sys/bus/pci/slots/7/address", "0000:3b:00\n");
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/drivers/ice")).unwrap();
        fs::create_dir_all(root.join("sys/kernel/iommu_groups/42")).unwrap();
        symlink(
            "../../../bus/pci/drivers/ice",
            root.join(format!("{pf}/driver")),
        )
        .unwrap();
        symlink(
            "../../../../kernel/iommu_groups/42",
            root.join(format!("{pf}/iommu_group")),
        )
        .unwrap();
        symlink("../0000:3b:00.0", root.join(format!("{vf}/physfn"))).unwrap();
        for (name, path) in [
            ("0000:3b:00.0", pf),
            ("0000:3b:01.0", vf),
            ("0101:00:00.0", vmbus),
        ] {
            symlink(
                format!("../../../{}", path.trim_start_matches("sys/")),
                root.join(format!("sys/bus/pci/devices/{name}")),
            )
            .unwrap();
        }
        // A function without its identity files: an error entry, not a failed scan.
        write(
            root,
            "sys/devices/pci0000:00/0000:00:1f.0/class",
            "0x060100\n",
        );
        symlink(
            "../../../devices/pci0000:00/0000:00:1f.0",
            root.join("sys/bus/pci/devices/0000:00:1f.0"),
        )
        .unwrap();
        dir
    }

    /// A function removed between the listing and its reading (VFs destroyed by a
    /// `sriov_numvfs` write during a scan) is left out without an error; one still listed whose
    /// identity cannot be read stays an error.
    #[test]
    fn a_function_removed_during_the_scan_is_gone_not_an_error() {
        let dir = tree();
        let root = dir.path().to_path_buf();
        let vf = "sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0";
        let found = read_functions(&Tree::open(&SysfsRoot::new(&root)), |address, _| {
            if address.to_string() == "0000:3b:01.0" {
                fs::remove_dir_all(root.join(vf)).unwrap();
                fs::remove_file(root.join("sys/bus/pci/devices/0000:3b:01.0")).unwrap();
            }
            true
        });
        let addresses: Vec<String> = found.items.iter().map(|f| f.address.to_string()).collect();
        assert_eq!(addresses, ["0000:3b:00.0", "0101:00:00.0"]);
        let paths: Vec<&str> = found.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths.len(), 1, "{:?}", found.errors);
        assert!(paths[0].ends_with("0000:00:1f.0/vendor"), "{paths:?}");
    }

    /// When the device list itself cannot be read again, nothing proves a function was removed:
    /// its read error stays.
    #[test]
    fn a_read_error_stays_when_the_device_list_cannot_be_read_again() {
        let dir = tree();
        let root = dir.path().to_path_buf();
        let devices = root.join("sys/bus/pci/devices");
        let found = read_functions(&Tree::open(&SysfsRoot::new(&root)), |_, _| {
            if devices.exists() {
                fs::rename(&devices, root.join("sys/bus/pci/moved")).unwrap();
            }
            true
        });
        assert!(found.items.is_empty(), "{:?}", found.items);
        let failed: Vec<&str> = found.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(
            failed.iter().any(|p| p.contains("0000:3b:01.0")),
            "{failed:?}"
        );
    }

    #[test]
    fn reads_functions_roots_and_links() {
        let dir = tree();
        let found = SysfsPci::new(SysfsRoot::new(dir.path()))
            .pci_functions()
            .unwrap();
        let by: BTreeMap<String, &PciFunction> = found
            .items
            .iter()
            .map(|f| (f.address.to_string(), f))
            .collect();
        assert_eq!(by.len(), 3);
        let pf = by["0000:3b:00.0"];
        assert_eq!(
            (pf.vendor_id, pf.device_id, pf.class, pf.revision),
            (0x8086, 0x1592, 0x020000, Some(2))
        );
        assert_eq!(pf.numa_node, Some(NumaNode(1)));
        assert_eq!(pf.local_cpus.as_ref().unwrap().to_string(), "56-111");
        assert_eq!(pf.driver.as_deref(), Some("ice"));
        assert_eq!(pf.driver_override, None, "(null) means unset");
        assert_eq!(pf.iommu_group, Some(42));
        assert_eq!(pf.physical_slot.as_deref(), Some("7"));
        assert_eq!(pf.pcie_root.unwrap().to_string(), "pci0000:3a");
        assert_eq!(pf.parent.unwrap().to_string(), "0000:3a:00.0");
        assert_eq!(pf.netdevs, ["ens1f0"]);
        assert!(pf.is_network() && !pf.is_virtual_function());

        let vf = by["0000:3b:01.0"];
        assert_eq!(vf.physfn.unwrap().to_string(), "0000:3b:00.0");
        assert_eq!(vf.driver_override.as_deref(), Some("vfio-pci"));
        assert_eq!(vf.numa_node, None, "-1 is absent");

        let ib = by["0101:00:00.0"];
        assert_eq!(
            ib.pcie_root.unwrap().to_string(),
            "pci0101:00",
            "VMBUS path"
        );
        assert_eq!(ib.parent, None);

        assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
        assert!(
            found.errors[0].path.ends_with("0000:00:1f.0/vendor"),
            "{:?}",
            found.errors[0]
        );
    }

    #[test]
    fn names_come_from_the_given_database() {
        let dir = tree();
        let ids = dir.path().join("pci.ids");
        fs::write(
            &ids,
            "8086  Intel Corporation\n\t1592  Ethernet Controller E810-C for QSFP\n",
        )
        .unwrap();
        let found = SysfsPci::new(SysfsRoot::new(dir.path()))
            .with_pci_ids(&ids)
            .pci_functions()
            .unwrap();
        let pf = found.items.iter().find(|f| f.device_id == 0x1592).unwrap();
        assert_eq!(pf.vendor_name.as_deref(), Some("Intel Corporation"));
        assert_eq!(
            pf.device_name.as_deref(),
            Some("Ethernet Controller E810-C for QSFP")
        );
        let missing = SysfsPci::new(SysfsRoot::new(dir.path()))
            .with_pci_ids("/nonexistent/pci.ids")
            .pci_functions()
            .unwrap();
        assert_eq!(
            missing.items.len(),
            3,
            "no database: no names, same functions"
        );
        assert!(
            missing
                .errors
                .iter()
                .any(|e| e.path == "/nonexistent/pci.ids")
        );
    }

    #[test]
    fn no_pci_bus_is_an_empty_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let found = SysfsPci::new(SysfsRoot::new(dir.path()))
            .pci_functions()
            .unwrap();
        assert!(found.items.is_empty() && found.errors.is_empty());
    }

    #[test]
    fn hex_ids() {
        assert_eq!(parse_hex("0x10de", 4).unwrap(), 0x10de);
        assert_eq!(parse_hex("0x030200", 6).unwrap(), 0x030200);
        for bad in ["", "0x", "0x123456789", "10dez", "0x+1"] {
            assert!(parse_hex(bad, 4).is_err(), "{bad}");
        }
    }
}
