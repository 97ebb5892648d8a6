//! [`SysfsRdma`]: RDMA devices from `sys/class/infiniband`, with their ports, network interfaces and
//! the character devices a workload needs.
//!
//! * A device is a `sys/class/infiniband/<name>` entry. Its PCI function is the last PCI function on the
//!   resolved link (`../../devices/pci0000:80/0000:80:02.2/0000:82:00.0/infiniband/mlx4_0`, and on
//!   Azure `../../devices/LNXSYSTM:00/.../VMBUS:00/<guid>/pci0101:00/0101:00:00.0/infiniband/mlx5_0`);
//!   devices of non-PCI parents (soft-RoCE, `scif0`) have none. A class entry that is a plain
//!   directory (hand-assembled trees) is followed through its `device` link.
//! * Ports `ports/<N>/`: `state` and `phys_state` keep the name after `N: ` (`4: ACTIVE` → `ACTIVE`),
//!   `link_layer`, `rate` as printed and in Mbit/s (`2.5 Gb/sec (1X SDR)` → 2500).
//! * Network interfaces: the `net/` entries of the PCI function (the mlx5 RoCE netdev, mlx4/qib IPoIB
//!   `ib0`) and the netdev of GID 0 of each port (`gid_attrs/ndevs/0`, RoCE). None: IB-only.
//! * Character devices: `sys/class/infiniband_verbs/uverbsN/ibdev` and `sys/class/infiniband_mad/
//!   {umad,issm}N/ibdev` are listed once and matched to the device by exact name (`mlx5_1` never takes
//!   `mlx5_10`'s nodes), with `major:minor` from their `dev`; the same entries under the device's parent
//!   (`<pci>/infiniband_verbs/uverbsN`) count too, for captures without those class directories; every
//!   device also gets the shared
//!   `/dev/infiniband/rdma_cm` (its number from `sys/class/misc/rdma_cm/dev` where the module is loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hal::{
    Discovered, LinkLayer, ParseError, PciAddress, RdmaCharDevice, RdmaCharKind, RdmaDevice,
    RdmaInfo, RdmaPort, Result,
};

use super::SysfsRoot;
use super::attr::ErrorLog;
use super::link::pci_functions_in_path;
use super::tree::Tree;

const CLASS: &str = "sys/class/infiniband";
const RDMA_CM_DEV: &str = "sys/class/misc/rdma_cm/dev";
/// Where the char devices live on the host.
const DEV_DIR: &str = "/dev/infiniband";
/// Ports are numbered from 0 (switches) or 1; more than this is not a real device.
const MAX_PORTS: u32 = 256;

/// RDMA devices read from sysfs under a root directory.
#[derive(Debug, Clone, Default)]
pub struct SysfsRdma {
    root: SysfsRoot,
}

impl SysfsRdma {
    /// Reads the machine under `root` (the directory holding `sys/`).
    pub fn new(root: SysfsRoot) -> Self {
        SysfsRdma { root }
    }
}

impl RdmaDevice for SysfsRdma {
    fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>> {
        // Every file below is opened inside the root: a link out of it is not followed.
        let tree = &Tree::open(&self.root);
        let mut errors = ErrorLog::default();
        let Some(names) = tree.entry_names(&tree.join(CLASS), &mut errors) else {
            // No RDMA stack loaded: nothing to report (or the class could not be listed: the
            // error says so).
            return Ok(Discovered {
                items: Vec::new(),
                errors: errors.0,
            });
        };
        let mut chars = char_devices(tree, &mut errors);
        let listed: BTreeSet<String> = chars
            .values()
            .flatten()
            .filter_map(|c| c.path.rsplit('/').next().map(str::to_owned))
            .collect();
        let rdma_cm = RdmaCharDevice {
            kind: RdmaCharKind::RdmaCm,
            path: format!("{DEV_DIR}/rdma_cm"),
            dev: errors.keep(tree.parse_scalar(&tree.join(RDMA_CM_DEV), parse_dev)),
        };
        let items = names
            .into_iter()
            .map(|name| {
                let own = chars.remove(&name).unwrap_or_default();
                let chars = (own, &listed, &rdma_cm);
                read_device(tree, name, chars, &mut errors)
            })
            .collect();
        Ok(Discovered {
            items,
            errors: errors.0,
        })
    }
}

/// One device: where it sits, its identity, ports and interfaces.
fn read_device(
    tree: &Tree,
    name: String,
    (mut char_devices, listed, rdma_cm): (Vec<RdmaCharDevice>, &BTreeSet<String>, &RdmaCharDevice),
    errors: &mut ErrorLog,
) -> RdmaInfo {
    let entry = Path::new(CLASS).join(&name);
    let dir = device_dir(tree, &entry, errors);
    let abs = tree.join(&dir);
    let pci = pci_function(tree, &entry, &dir, errors);
    let mut netdevs = BTreeSet::new();
    if let Some((_, pci_dir)) = &pci {
        netdevs.extend(
            tree.entry_names(&tree.join(pci_dir).join("net"), errors)
                .unwrap_or_default(),
        );
    }
    if let Some(parent) = dir.parent().and_then(Path::parent).filter(|_| dir != entry) {
        // `<parent>/infiniband/<name>`: the char devices sit beside it under `<parent>`.
        add_parent_char_devices(tree, parent, &name, listed, &mut char_devices, errors);
    }
    char_devices.push(rdma_cm.clone());
    char_devices.sort();
    let ports = read_ports(tree, &abs, &mut netdevs, errors);
    RdmaInfo {
        name,
        pci_address: pci.map(|(address, _)| address),
        node_guid: errors
            .keep(tree.read_optional(&abs.join("node_guid")))
            .filter(|g| !g.is_empty()),
        node_type: errors
            .keep(tree.read_optional(&abs.join("node_type")))
            .and_then(|t| numbered_name(&t)),
        ports,
        netdevs: netdevs.into_iter().collect(),
        char_devices,
        max_qp: None,
    }
}

/// The device's directory relative to the root: the resolved class link, or the entry itself.
fn device_dir(tree: &Tree, entry: &Path, errors: &mut ErrorLog) -> PathBuf {
    errors
        .keep(tree.resolve_link(entry).map(Some))
        .flatten()
        .unwrap_or_else(|| entry.to_path_buf())
}

/// The PCI function the device belongs to and its directory (relative to the root): the PCI
/// function the device's resolved path sits directly under (`<function>/infiniband/<name>`), else
/// the one its resolved `device` link names. A device under an auxiliary device of a function
/// (`<function>/mlx5_core.sf.2/infiniband/mlx5_2`: an mlx5 scalable function, with its own
/// netdev and verbs nodes) is not that function's: it has none, as a software device.
fn pci_function(
    tree: &Tree,
    entry: &Path,
    dir: &Path,
    errors: &mut ErrorLog,
) -> Option<(PciAddress, PathBuf)> {
    if let Some(found) = last_pci_function(dir) {
        let depth = |p: &Path| p.components().count();
        return (depth(dir) == depth(&found.1) + 2).then_some(found);
    }
    let resolved = errors.keep(tree.resolve_link(&entry.join("device")))?;
    last_pci_function(&resolved).filter(|(_, function)| *function == resolved)
}

/// The last PCI function on a path relative to the root, and the path up to and including it.
fn last_pci_function(path: &Path) -> Option<(PciAddress, PathBuf)> {
    let address = *pci_functions_in_path(path).last()?;
    let mut prefix = PathBuf::new();
    let mut found = None;
    for component in path.components() {
        prefix.push(component);
        let name = component.as_os_str().to_str();
        if name.and_then(|n| PciAddress::parse(n).ok()) == Some(address) {
            found = Some(prefix.clone());
        }
    }
    found.map(|dir| (address, dir))
}

fn read_ports(
    tree: &Tree,
    dir: &Path,
    netdevs: &mut BTreeSet<String>,
    errors: &mut ErrorLog,
) -> Vec<RdmaPort> {
    let ports_dir = dir.join("ports");
    let Some(names) = tree.entry_names(&ports_dir, errors) else {
        return Vec::new();
    };
    let mut numbers: Vec<u32> = names
        .iter()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .filter(|n| *n < MAX_PORTS)
        .collect();
    numbers.sort_unstable();
    numbers
        .into_iter()
        .map(|number| {
            let port = ports_dir.join(number.to_string());
            let text = |name: &str, errors: &mut ErrorLog| {
                errors
                    .keep(tree.read_optional(&port.join(name)))
                    .filter(|t| !t.is_empty())
            };
            let rate = text("rate", errors);
            let rate_mbps = match &rate {
                Some(rate) => match parse_rate_mbps(rate) {
                    Ok(mbps) => Some(mbps),
                    Err(e) => {
                        errors.note(&port.join("rate"), e.to_string());
                        None
                    }
                },
                None => None,
            };
            // An InfiniBand port has no netdev: the kernel answers EINVAL (ENODATA for an empty
            // GID entry), which says "none", not "malformed".
            let ndev = errors.keep(tree.read_if_shown(&port.join("gid_attrs/ndevs/0")));
            if let Some(netdev) = ndev.filter(|n| !n.is_empty()) {
                netdevs.insert(netdev);
            }
            RdmaPort {
                state: text("state", errors).and_then(|s| numbered_name(&s)),
                phys_state: text("phys_state", errors).and_then(|s| numbered_name(&s)),
                link_layer: text("link_layer", errors).map(|l| parse_link_layer(&l)),
                rate,
                rate_mbps,
                ..RdmaPort::new(number)
            }
        })
        .collect()
}

/// The classes of RDMA char devices and the node name prefixes in each.
const CHAR_CLASSES: [(&str, &[(&str, RdmaCharKind)]); 2] = [
    ("infiniband_verbs", &[("uverbs", RdmaCharKind::Verbs)]),
    (
        "infiniband_mad",
        &[("umad", RdmaCharKind::Umad), ("issm", RdmaCharKind::Issm)],
    ),
];

/// Every `uverbsN`, `umadN` and `issmN` entry of the `sys/class` directories, by the RDMA device it
/// belongs to.
fn char_devices(tree: &Tree, errors: &mut ErrorLog) -> BTreeMap<String, Vec<RdmaCharDevice>> {
    let mut by_device = BTreeMap::new();
    for (class, prefixes) in CHAR_CLASSES {
        let dir = tree.join("sys/class").join(class);
        scan_char_devices(
            tree,
            &dir,
            prefixes,
            &BTreeSet::new(),
            errors,
            &mut by_device,
        );
    }
    by_device
}

/// Adds the char devices found under the device's parent (`<pci>/infiniband_verbs/uverbsN`, where
/// the kernel puts them) that the class directories did not list (`known`): captures such as hwloc's hold the
/// device tree but not `sys/class/infiniband_verbs`.
fn add_parent_char_devices(
    tree: &Tree,
    parent: &Path,
    name: &str,
    known: &BTreeSet<String>,
    own: &mut Vec<RdmaCharDevice>,
    errors: &mut ErrorLog,
) {
    let mut found = BTreeMap::new();
    for (class, prefixes) in CHAR_CLASSES {
        let dir = tree.join(parent).join(class);
        scan_char_devices(tree, &dir, prefixes, known, errors, &mut found);
    }
    own.extend(found.remove(name).unwrap_or_default());
}

fn scan_char_devices(
    tree: &Tree,
    class_dir: &Path,
    prefixes: &[(&str, RdmaCharKind)],
    known: &BTreeSet<String>,
    errors: &mut ErrorLog,
    by_device: &mut BTreeMap<String, Vec<RdmaCharDevice>>,
) {
    for name in tree.entry_names(class_dir, errors).unwrap_or_default() {
        if known.contains(&name) {
            continue;
        }
        let Some(kind) = prefixes
            .iter()
            .find(|(prefix, _)| is_numbered(&name, prefix))
            .map(|(_, kind)| *kind)
        else {
            continue; // abi_version
        };
        let dir = class_dir.join(&name);
        let Some(ibdev) = errors
            .keep(tree.read_optional(&dir.join("ibdev")))
            .filter(|d| !d.is_empty())
        else {
            continue;
        };
        by_device.entry(ibdev).or_default().push(RdmaCharDevice {
            kind,
            path: format!("{DEV_DIR}/{name}"),
            dev: errors.keep(tree.parse_scalar(&dir.join("dev"), parse_dev)),
        });
    }
}

/// `<prefix>N` with decimal N.
fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `4: ACTIVE` → `ACTIVE`; a value without a number is kept as it is. Empty: `None`.
fn numbered_name(text: &str) -> Option<String> {
    let name = match text.split_once(':') {
        Some((number, name)) if number.trim().bytes().all(|b| b.is_ascii_digit()) => name.trim(),
        _ => text.trim(),
    };
    (!name.is_empty()).then(|| name.to_owned())
}

pub(crate) fn parse_link_layer(text: &str) -> LinkLayer {
    match text {
        "InfiniBand" => LinkLayer::Infiniband,
        "Ethernet" => LinkLayer::Ethernet,
        other => LinkLayer::Other(other.to_owned()),
    }
}

/// `major:minor` of a class entry's `dev`.
pub fn parse_dev(text: &str) -> Result<(u32, u32), ParseError> {
    let bad = || ParseError::new("device number", text, "not major:minor");
    let (major, minor) = text.split_once(':').ok_or_else(bad)?;
    let number = |t: &str| {
        if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u32>().ok()
    };
    Ok((
        number(major).ok_or_else(bad)?,
        number(minor).ok_or_else(bad)?,
    ))
}

/// The port rate in Mbit/s: `400 Gb/sec (4X NDR)` → 400000, `2.5 Gb/sec (1X SDR)` → 2500,
/// `10 Gb/sec (4X)` → 10000. Up to three decimals of Gb/s are kept.
pub fn parse_rate_mbps(text: &str) -> Result<u64, ParseError> {
    let bad = |why| ParseError::new("port rate", text, why);
    let number = text
        .strip_suffix(')')
        .map_or(text, |t| t.split_once(" (").map_or(t, |(n, _)| n))
        .trim()
        .strip_suffix("Gb/sec")
        .ok_or_else(|| bad("no 'Gb/sec' unit"))?
        .trim();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!fraction.is_empty() && !digits(fraction)) || fraction.len() > 3 {
        return Err(bad("not a decimal number of Gb/sec"));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("out of range"))?;
    let milli: u64 = format!("{fraction:0<3}")
        .parse()
        .map_err(|_| bad("out of range"))?;
    Ok(whole * 1000 + milli)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
