//! [`SysfsGpu`]: GPUs from sysfs (PCI functions and their DRM nodes) and from the NVIDIA driver's
//! `/proc/driver/nvidia/gpus`, both under the same root.
//!
//! A GPU is a PCI function that is display class (base class 0x03: VGA 0x0300, 3D 0x0302, other
//! 0x0380), or that a DRM card or render node belongs to (a compute part that shows as a processing
//! accelerator, class 0x12, still gets DRM nodes from amdgpu, i915 or xe), or that the NVIDIA kernel module lists under `proc/driver/nvidia/gpus/<dddd:bb:dd.f>`
//! (it creates that directory when it binds a GPU and removes it on unbind).
//!
//! * DRM nodes: `sys/class/drm` is listed once; only `card[0-9]{1,3}` and `renderD[0-9]{1,3}` count
//!   (not connectors `card0-DP-1`, legacy `controlD64`, `ttm`, `version`). Each maps to the last PCI
//!   function on its link target, never by number: `renderD128` need not belong to `card0`. Nodes of
//!   platform or virtual devices (simpledrm, vkms) have no PCI function and are skipped. A class entry
//!   that is a plain directory (hand-assembled trees) maps through `device/uevent` `PCI_SLOT_NAME`.
//! * Local memory, where sysfs shows it: amdgpu `<pci>/mem_info_vram_total`; Intel's out-of-tree i915
//!   `<card>/lmem_total_bytes` (or `prelim_lmem_total_bytes`); xe `<pci>/tileN/physical_vram_size_bytes`
//!   summed over tiles (hex `0x...` or decimal). Mainline i915 and NVIDIA show none in sysfs.
//! * Product: amdgpu `product_name`, NVIDIA `Model`.
//! * NVIDIA `information` (`Key:<spaces/tabs>value`): `Device Minor`, `GPU UUID` (not when the driver
//!   printed `GPU-????...`), `Model`. A missing file (driver not loaded) leaves them `None`, silently.
//!
//! Partial captures: a function the PCI backend could not identify (an error entry) is still a GPU
//! when the NVIDIA driver lists it, with vendor NVIDIA and driver `nvidia` (hwloc's
//! `nvidiagpunumanodes` holds such hand-trimmed entries), or when a DRM node belongs to it and its
//! `uevent` gives `PCI_ID`. The errors of the functions read stay in the result's errors. Only
//! the functions that can be GPUs are read in full; the others cost one read of `class`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use hal::{Discovered, GpuDevice, GpuInfo, GpuVendor, ParseError, PciAddress, Result};

use super::SysfsRoot;
use super::attr::ErrorLog;
use super::pci::{class_of, read_functions};
use super::tree::Tree;

const DRM_CLASS: &str = "sys/class/drm";
const NVIDIA_GPUS: &str = "proc/driver/nvidia/gpus";
/// The NVIDIA driver writes about a dozen lines; a text is read up to this many.
const MAX_LINES: usize = 64;
/// Longer values than this (models, UUIDs) are not what the driver writes.
const MAX_VALUE_BYTES: usize = 256;

/// GPUs read from sysfs and `proc/driver/nvidia` under a root directory.
#[derive(Debug, Clone, Default)]
pub struct SysfsGpu {
    root: SysfsRoot,
}

impl SysfsGpu {
    /// Reads the machine under `root` (the directory holding `sys/` and `proc/`).
    pub fn new(root: SysfsRoot) -> Self {
        SysfsGpu { root }
    }
}

/// A DRM node: its name, number and resolved path (relative to the root).
#[derive(Debug, Clone)]
struct DrmNode {
    name: String,
    number: u32,
    path: PathBuf,
}

/// The DRM nodes of one PCI function, and its device directory as seen from them.
#[derive(Debug, Default)]
struct DrmNodes {
    card: Option<DrmNode>,
    render: Option<DrmNode>,
    device_dir: PathBuf,
}

/// What identifies a GPU before its details are read.
struct Candidate {
    vendor: GpuVendor,
    device_id: Option<u16>,
    numa_node: Option<hal::NumaNode>,
    local_cpus: Option<hal::CpuSet>,
    driver: Option<String>,
    /// The PCI device directory, relative to the root, where there is one.
    device_dir: Option<PathBuf>,
}

impl GpuDevice for SysfsGpu {
    fn gpus(&self) -> Result<Discovered<GpuInfo>> {
        let mut errors = ErrorLog::default();
        // Every file below is opened inside the root: a link out of it is not followed.
        let tree = &Tree::open(&self.root);
        let drm = drm_nodes(tree, &mut errors);
        let nvidia = nvidia_entries(tree, &mut errors);
        // Only the functions that can be GPUs are read in full: display class (or a class that cannot
        // be read, so its error is reported), or named by a DRM node or the NVIDIA driver.
        let pci = read_functions(tree, |address, dir| {
            drm.contains_key(&address)
                || nvidia.contains_key(&address)
                || class_of(tree, dir).is_none_or(|class| class >> 16 == 0x03)
        });
        errors.0.extend(pci.errors);
        let mut candidates: BTreeMap<PciAddress, Candidate> = pci
            .items
            .into_iter()
            .filter(|f| {
                f.is_display() || drm.contains_key(&f.address) || nvidia.contains_key(&f.address)
            })
            .map(|f| {
                let candidate = Candidate {
                    vendor: GpuVendor::from_pci_vendor(f.vendor_id),
                    device_id: Some(f.device_id),
                    numa_node: f.numa_node,
                    local_cpus: f.local_cpus,
                    driver: f.driver,
                    device_dir: Some(PathBuf::from(f.sysfs_path)),
                };
                (f.address, candidate)
            })
            .collect();
        for (address, nodes) in &drm {
            if !candidates.contains_key(address)
                && let Some(candidate) = candidate_from_uevent(tree, nodes, &mut errors)
            {
                candidates.insert(*address, candidate);
            }
        }
        for address in nvidia.keys() {
            candidates.entry(*address).or_insert(Candidate {
                vendor: GpuVendor::Nvidia,
                device_id: None,
                numa_node: None,
                local_cpus: None,
                driver: None,
                device_dir: None,
            });
        }
        let items = candidates
            .into_iter()
            .map(|(address, candidate)| {
                let nodes = drm.get(&address);
                let nvidia_dir = nvidia.get(&address);
                read_gpu(tree, address, candidate, nodes, nvidia_dir, &mut errors)
            })
            .collect();
        Ok(Discovered {
            items,
            errors: errors.0,
        })
    }
}

fn read_gpu(
    tree: &Tree,
    pci_address: PciAddress,
    candidate: Candidate,
    nodes: Option<&DrmNodes>,
    nvidia_dir: Option<&String>,
    errors: &mut ErrorLog,
) -> GpuInfo {
    let card = nodes.and_then(|n| n.card.as_ref());
    let render = nodes.and_then(|n| n.render.as_ref());
    let driver = candidate
        .driver
        .or_else(|| nvidia_dir.map(|_| "nvidia".to_owned()));
    let mut gpu = GpuInfo {
        device_id: candidate.device_id,
        numa_node: candidate.numa_node,
        local_cpus: candidate.local_cpus,
        driver,
        drm_card: card.map(|n| n.name.clone()),
        drm_render: render.map(|n| n.name.clone()),
        ..GpuInfo::new(pci_address, candidate.vendor)
    };
    if let Some(dir) = &candidate.device_dir {
        let dir = tree.join(dir);
        let card_dir = card.map(|n| tree.join(&n.path));
        read_memory_and_product(tree, &dir, card_dir.as_deref(), &mut gpu, errors);
    }
    if let Some(dir) = nvidia_dir {
        let path = tree.join(NVIDIA_GPUS).join(dir).join("information");
        let parsed = tree.parse_scalar(&path, parse_nvidia_information);
        if let Some(info) = errors.keep(parsed) {
            gpu.nvidia_minor = info.minor;
            gpu.uuid = info.uuid;
            gpu.product = info.model.or(gpu.product);
        }
    }
    gpu
}

/// amdgpu VRAM and product name, Intel local memory (out-of-tree i915, xe tiles).
fn read_memory_and_product(
    tree: &Tree,
    device_dir: &Path,
    card_dir: Option<&Path>,
    gpu: &mut GpuInfo,
    errors: &mut ErrorLog,
) {
    let names = tree.entry_names(device_dir, errors).unwrap_or_default();
    if names.contains("product_name") {
        gpu.product = errors
            .keep(tree.read_optional(&device_dir.join("product_name")))
            .filter(|name| !name.is_empty());
    }
    if names.contains("mem_info_vram_total") {
        let path = device_dir.join("mem_info_vram_total");
        gpu.memory_bytes = errors.keep(tree.parse_scalar(&path, parse_decimal_bytes));
        return;
    }
    if let Some(card_dir) = card_dir {
        let card_names = tree.entry_names(card_dir, errors).unwrap_or_default();
        if let Some(name) = ["lmem_total_bytes", "prelim_lmem_total_bytes"]
            .into_iter()
            .find(|name| card_names.contains(*name))
        {
            let path = card_dir.join(name);
            gpu.memory_bytes = errors.keep(tree.parse_scalar(&path, parse_decimal_bytes));
            return;
        }
    }
    let mut total: Option<u64> = None;
    for tile in names.iter().filter(|name| numbered(name, "tile").is_some()) {
        let path = device_dir.join(tile).join("physical_vram_size_bytes");
        if let Some(bytes) = errors.keep(tree.parse_scalar(&path, parse_vram_bytes)) {
            match total.unwrap_or(0).checked_add(bytes) {
                Some(sum) => total = Some(sum),
                None => {
                    errors.note(&path, "VRAM sizes of the tiles overflow 64 bits".to_owned());
                    return;
                }
            }
        }
    }
    if total.is_some() {
        gpu.memory_bytes = total;
    }
}

/// `<prefix>N` with 1 to 3 decimal digits (`card1`, `renderD128`, `tile0`) → N.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists `sys/class/drm` once and maps every card and render node to its PCI function.
fn drm_nodes(tree: &Tree, errors: &mut ErrorLog) -> BTreeMap<PciAddress, DrmNodes> {
    let mut by_function: BTreeMap<PciAddress, DrmNodes> = BTreeMap::new();
    for name in tree
        .entry_names(&tree.join(DRM_CLASS), errors)
        .unwrap_or_default()
    {
        let (number, is_card) = match (numbered(&name, "card"), numbered(&name, "renderD")) {
            (Some(n), _) => (n, true),
            (None, Some(n)) => (n, false),
            (None, None) => continue,
        };
        let Some((address, path, device_dir)) = locate_node(tree, &name, errors) else {
            continue;
        };
        let nodes = by_function.entry(address).or_insert_with(|| DrmNodes {
            device_dir,
            ..DrmNodes::default()
        });
        let slot = if is_card {
            &mut nodes.card
        } else {
            &mut nodes.render
        };
        // One card per device; should a capture hold two, the lower number wins.
        if slot.as_ref().is_none_or(|node| number < node.number) {
            *slot = Some(DrmNode { name, number, path });
        }
    }
    by_function
}

/// The PCI function of `sys/class/drm/<name>`, the node's resolved path and the function's device
/// directory, all relative to the root. `None` for nodes of non-PCI devices.
fn locate_node(
    tree: &Tree,
    name: &str,
    errors: &mut ErrorLog,
) -> Option<(PciAddress, PathBuf, PathBuf)> {
    let entry = Path::new(DRM_CLASS).join(name);
    if let Some(resolved) = errors.keep(tree.resolve_link(&entry).map(Some))? {
        let (address, device_dir) = last_pci_function(&resolved)?;
        // The node of the function itself, not of a device behind it: a USB display's node sits
        // under its USB controller (`0000:00:14.0/usb3/3-1/3-1:1.0/drm/card1`).
        let below = resolved.strip_prefix(&device_dir).ok()?;
        return own_node(below).then_some((address, resolved, device_dir));
    }
    // A plain directory: its `device` is the PCI device (a link on a machine).
    let device = entry.join("device");
    let device_dir = match errors.keep(tree.resolve_link(&device).map(Some))? {
        Some(resolved) => resolved,
        None => device,
    };
    let uevent_path = tree.join(&device_dir).join("uevent");
    let uevent = errors.keep(tree.read_optional(&uevent_path))?;
    let slot = uevent_value(&uevent, "PCI_SLOT_NAME")?;
    match PciAddress::parse(slot) {
        Ok(address) => Some((address, entry, device_dir)),
        Err(e) => {
            errors.note(&uevent_path, e.to_string());
            None
        }
    }
}

/// The last PCI function on a resolved path and the path up to it
/// (`sys/devices/pci0000:00/0000:00:02.0/drm/card1` gives `0000:00:02.0` and `sys/devices/.../0000:00:02.0`).
fn last_pci_function(path: &Path) -> Option<(PciAddress, PathBuf)> {
    let mut prefix = PathBuf::new();
    let mut found = None;
    for component in path.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        prefix.push(name);
        if let Some(address) = name.to_str().and_then(|n| PciAddress::parse(n).ok()) {
            found = Some((address, prefix.clone()));
        }
    }
    found
}

/// Whether a DRM node's path below its PCI function is the function's own node: `drm/<node>`, or
/// `virtio<N>/drm/<node>` (virtio-gpu's node is under its virtio device).
fn own_node(below: &Path) -> bool {
    let parts: Vec<&str> = below.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        ["drm", _] => true,
        [virtio, "drm", _] => virtio
            .strip_prefix("virtio")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    }
}

/// Identity of a function known only through its DRM nodes (trimmed or hand-assembled trees): the
/// PCI `uevent` (`PCI_ID=1002:687F`, `DRIVER=amdgpu`).
fn candidate_from_uevent(
    tree: &Tree,
    nodes: &DrmNodes,
    errors: &mut ErrorLog,
) -> Option<Candidate> {
    let dir = tree.join(&nodes.device_dir);
    let path = dir.join("uevent");
    let text = match tree.read_optional(&path) {
        Ok(Some(text)) => text,
        Ok(None) => {
            let why = "a DRM node's PCI device with no uevent to identify it";
            errors.note(&path, why.to_owned());
            return None;
        }
        Err(e) => {
            errors.0.push((&e).into());
            return None;
        }
    };
    let ids = uevent_value(&text, "PCI_ID").and_then(|id| id.split_once(':'));
    let vendor = ids.and_then(|(vendor, _)| u16::from_str_radix(vendor, 16).ok());
    let device_id = ids.and_then(|(_, device)| u16::from_str_radix(device, 16).ok());
    let Some(vendor) = vendor else {
        errors.note(&path, "no PCI_ID=vvvv:dddd line".to_owned());
        return None;
    };
    let driver = uevent_value(&text, "DRIVER")
        .map(str::to_owned)
        .or_else(|| tree.link_name(&dir.join("driver")));
    Some(Candidate {
        vendor: GpuVendor::from_pci_vendor(vendor),
        device_id,
        numa_node: None,
        local_cpus: None,
        driver,
        device_dir: Some(nodes.device_dir.clone()),
    })
}

/// The value of `KEY=value` in a uevent text, first of the first [`MAX_LINES`] lines.
fn uevent_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take(MAX_LINES)
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// `proc/driver/nvidia/gpus/<dddd:bb:dd.f>` directory names by address.
fn nvidia_entries(tree: &Tree, errors: &mut ErrorLog) -> BTreeMap<PciAddress, String> {
    tree.entry_names(&tree.join(NVIDIA_GPUS), errors)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| Some((PciAddress::parse(&name).ok()?, name)))
        .collect()
}

/// What the NVIDIA driver's `information` file says about one GPU.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct NvidiaInformation {
    model: Option<String>,
    uuid: Option<String>,
    pub(crate) minor: Option<u32>,
}

/// Parses `information`: lines `Key:<spaces/tabs>value`; unknown keys are skipped, the first of a
/// repeated key wins, a UUID with `?` (driver could not query it) is absent. At most [`MAX_LINES`]
/// lines are looked at.
pub(crate) fn parse_nvidia_information(text: &str) -> Result<NvidiaInformation, ParseError> {
    let mut info = NvidiaInformation::default();
    for line in text.lines().take(MAX_LINES) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let wanted = matches!(key.trim(), "Model" | "GPU UUID" | "Device Minor");
        if !wanted || value.is_empty() {
            continue;
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ParseError::new(
                "NVIDIA information value",
                value,
                "longer than 256 bytes",
            ));
        }
        match key.trim() {
            "Model" if info.model.is_none() => info.model = Some(value.to_owned()),
            "GPU UUID" if info.uuid.is_none() && !value.contains('?') => {
                info.uuid = Some(value.to_owned());
            }
            "Device Minor" if info.minor.is_none() => {
                let minor = value.parse().map_err(|_| {
                    ParseError::new(
                        "NVIDIA device minor",
                        value,
                        "not a decimal integer below 2^32",
                    )
                })?;
                info.minor = Some(minor);
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Decimal bytes (`mem_info_vram_total`, `lmem_total_bytes`).
fn parse_decimal_bytes(text: &str) -> Result<u64, ParseError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new("byte count", text, "not a decimal integer"));
    }
    text.parse()
        .map_err(|_| ParseError::new("byte count", text, "not a decimal integer below 2^64"))
}

/// xe `physical_vram_size_bytes`: `0x...` hex on newer kernels, decimal on early ones.
fn parse_vram_bytes(text: &str) -> Result<u64, ParseError> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16)
                .map_err(|_| ParseError::new("VRAM size", text, "hex value above 2^64"))
        }
        Some(_) => Err(ParseError::new(
            "VRAM size",
            text,
            "expected 0x and hex digits",
        )),
        None => parse_decimal_bytes(text),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sysfs::test_tree::{link, write};
    use proptest::prelude::*;
    use std::fs;

    /// A PCI function at `sys/devices/<parent>/<bdf>` with its bus link and driver.
    fn function(root: &Path, parent: &str, bdf: &str, ids: (&str, &str, &str), driver: &str) {
        let dir = format!("sys/devices/{parent}/{bdf}");
        write(root, &format!("{dir}/vendor"), &format!("{}\n", ids.0));
        write(root, &format!("{dir}/device"), &format!("{}\n", ids.1));
        write(root, &format!("{dir}/class"), &format!("{}\n", ids.2));
        link(
            root,
            &format!("sys/bus/pci/devices/{bdf}"),
            &format!("../../../devices/{parent}/{bdf}"),
        );
        if !driver.is_empty() {
            let depth = "../".repeat(dir.matches('/').count());
            link(
                root,
                &format!("{dir}/driver"),
                &format!("{depth}bus/pci/drivers/{driver}"),
            );
        }
    }

    /// A DRM node under a PCI function (or any device dir) with its class link.
    fn drm(root: &Path, device: &str, name: &str) {
        fs::create_dir_all(root.join(format!("sys/devices/{device}/drm/{name}"))).unwrap();
        link(
            root,
            &format!("sys/class/drm/{name}"),
            &format!("../../devices/{device}/drm/{name}"),
        );
    }

    const IGPU: &str = "pci0000:00/0000:00:02.0";
    const AST: &str = "pci0000:00/0000:00:1c.0/0000:03:00.0";
    const MI300: &str = "pci0000:c0/0000:c0:01.0/0000:c1:00.0";
    const XE: &str = "pci0000:80/0000:80:01.0/0000:81:00.0";
    const FLEX: &str = "pci0000:90/0000:90:01.0/0000:91:00.0";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // parent, address, vendor, device, class, driver (- for none); the last five are not GPUs:
        // an NVMe drive, root ports, and a processing accelerator without a DRM node.
        for row in [
            "pci0000:00 0000:00:02.0 0x8086 0x46a6 0x030000 i915",
            "pci0000:00/0000:00:1c.0 0000:03:00.0 0x1a03 0x2000 0x030000 ast",
            "pci0000:64/0000:64:00.0 0000:65:00.0 0x10de 0x2330 0x030200 nvidia",
            "pci0000:64/0000:64:00.0 0000:66:00.0 0x10de 0x2330 0x030200 nvidia",
            "pci0000:64/0000:64:00.0 0000:67:00.0 0x10de 0x2330 0x030200 -",
            "pci0000:c0/0000:c0:01.0 0000:c1:00.0 0x1002 0x74a1 0x120000 amdgpu",
            "pci0000:80/0000:80:01.0 0000:81:00.0 0x8086 0xe20b 0x030000 xe",
            "pci0000:90/0000:90:01.0 0000:91:00.0 0x8086 0x56c0 0x038000 i915",
            "pci0000:00/0000:00:1c.0 0000:04:00.0 0x144d 0xa80a 0x010802 nvme",
            "pci0000:00 0000:00:1c.0 0x8086 0x51b8 0x060400 pcieport",
            "pci0000:64 0000:64:00.0 0x8086 0x347a 0x060400 pcieport",
            "pci0000:c0 0000:c0:01.0 0x1022 0x14ab 0x060400 pcieport",
            "pci0000:00 0000:00:0b.0 0x8086 0x7e4c 0x120000 intel_vpu",
        ] {
            let cells: Vec<&str> = row.split(' ').collect();
            let driver = cells[5].trim_start_matches('-');
            function(
                root,
                cells[0],
                cells[1],
                (cells[2], cells[3], cells[4]),
                driver,
            );
        }

        // The ast card enumerated first: the iGPU is card1 with renderD128 (not renderD129).
        drm(root, AST, "card0");
        drm(root, IGPU, "card1");
        drm(root, IGPU, "renderD128");
        drm(root, MI300, "card2");
        drm(root, MI300, "renderD129");
        drm(root, XE, "card3");
        drm(root, XE, "renderD130");
        drm(root, FLEX, "card4");
        drm(root, FLEX, "renderD131");
        // Connectors, legacy control node, class files: not nodes of their own.
        fs::create_dir_all(root.join(format!("sys/devices/{IGPU}/drm/card1/card1-DP-1"))).unwrap();
        link(
            root,
            "sys/class/drm/card1-DP-1",
            &format!("../../devices/{IGPU}/drm/card1/card1-DP-1"),
        );
        link(
            root,
            "sys/class/drm/card1-eDP-1",
            &format!("../../devices/{IGPU}/drm/card1/card1-eDP-1"),
        );
        link(
            root,
            "sys/class/drm/controlD64",
            &format!("../../devices/{AST}/drm/controlD64"),
        );
        link(root, "sys/class/drm/ttm", "../../devices/virtual/drm/ttm");
        write(root, "sys/class/drm/version", "drm 1.1.0 20060810\n");
        // A node whose link points elsewhere: simpledrm's card on a platform device, no PCI function.
        drm(root, "platform/simple-framebuffer.0", "card5");
        // A link that leaves the root: an error entry, nothing else.
        link(root, "sys/class/drm/card6", "../../../../../../../etc");

        write(
            root,
            &format!("sys/devices/{MI300}/mem_info_vram_total"),
            "206141652992\n",
        );
        write(
            root,
            &format!("sys/devices/{MI300}/product_name"),
            "AMD Instinct MI300X\n",
        );
        write(
            root,
            &format!("sys/devices/{XE}/tile0/physical_vram_size_bytes"),
            "0x2f8000000\n",
        );
        write(
            root,
            &format!("sys/devices/{XE}/tile1/physical_vram_size_bytes"),
            "12750684160\n",
        );
        write(
            root,
            &format!("sys/devices/{FLEX}/drm/card4/prelim_lmem_total_bytes"),
            "14940110848\n",
        );

        write(
            root,
            "proc/driver/nvidia/gpus/0000:65:00.0/information",
            "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 246\nGPU UUID: \t\t GPU-9a1c3e2f-04b6-7d1e-5c2a-8f7e6d5c4b3a\n\
             Video BIOS: \t\t 96.00.74.00.01\nBus Type: \t\t PCIe\nDMA Size: \t\t 52 bits\nDMA Mask: \t\t 0xfffffffffffff\n\
             Bus Location: \t\t 0000:65:00.0\nDevice Minor: \t\t 3\nGPU Firmware: \t\t 535.104.05\nGPU Excluded:\t\t No\n",
        );
        write(
            root,
            "proc/driver/nvidia/gpus/0000:66:00.0/information",
            "Model: \t\t NVIDIA H100 80GB HBM3\nGPU UUID: \t\t GPU-????????-????-????-????-????????????\nDevice Minor: \t\t 4\n",
        );
        // 0000:67:00.0 has no proc entry: the driver is not loaded for it.
        // A listed GPU whose PCI entry is a trimmed real directory without identity (hwloc captures).
        write(root, "sys/bus/pci/devices/0035:05:00.0/class", "0x030200\n");
        write(
            root,
            "proc/driver/nvidia/gpus/0035:05:00.0/numa_status",
            "Node: 255\nStatus: online\n",
        );
        dir
    }

    fn gpus(root: &Path) -> (BTreeMap<String, GpuInfo>, Vec<hal::InventoryError>) {
        let found = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
        let addresses: Vec<PciAddress> = found.items.iter().map(|g| g.pci_address).collect();
        let mut sorted = addresses.clone();
        sorted.sort();
        assert_eq!(addresses, sorted, "sorted by PCI address");
        let by = found
            .items
            .into_iter()
            .map(|g| (g.pci_address.to_string(), g))
            .collect();
        (by, found.errors)
    }

    #[test]
    fn finds_gpus_their_nodes_memory_and_nvidia_facts() {
        let dir = tree();
        let (by, errors) = gpus(dir.path());
        let names: Vec<&str> = by.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "0000:00:02.0",
                "0000:03:00.0",
                "0000:65:00.0",
                "0000:66:00.0",
                "0000:67:00.0",
                "0000:81:00.0",
                "0000:91:00.0",
                "0000:c1:00.0",
                "0035:05:00.0",
            ]
        );

        let igpu = &by["0000:00:02.0"];
        assert_eq!(igpu.vendor, GpuVendor::Intel);
        assert_eq!(igpu.driver.as_deref(), Some("i915"));
        assert_eq!(igpu.drm_card.as_deref(), Some("card1"));
        assert_eq!(
            igpu.drm_render.as_deref(),
            Some("renderD128"),
            "by link, not by number"
        );
        assert_eq!((igpu.memory_bytes, igpu.product.as_deref()), (None, None));

        let ast = &by["0000:03:00.0"];
        assert_eq!(ast.vendor, GpuVendor::Other(0x1a03));
        assert_eq!(
            (ast.drm_card.as_deref(), ast.drm_render.as_deref()),
            (Some("card0"), None)
        );

        let h100 = &by["0000:65:00.0"];
        assert_eq!(h100.vendor, GpuVendor::Nvidia);
        assert_eq!(h100.nvidia_minor, Some(3));
        assert_eq!(
            h100.uuid.as_deref(),
            Some("GPU-9a1c3e2f-04b6-7d1e-5c2a-8f7e6d5c4b3a")
        );
        assert_eq!(h100.product.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!((h100.drm_card.as_deref(), h100.memory_bytes), (None, None));

        let unqueried = &by["0000:66:00.0"];
        assert_eq!(
            (unqueried.nvidia_minor, unqueried.uuid.as_deref()),
            (Some(4), None)
        );
        let unloaded = &by["0000:67:00.0"];
        assert_eq!(unloaded.driver, None);
        assert_eq!(
            (unloaded.nvidia_minor, &unloaded.uuid, &unloaded.product),
            (None, &None, &None)
        );

        let mi300 = &by["0000:c1:00.0"];
        assert_eq!(mi300.vendor, GpuVendor::Amd);
        assert_eq!(mi300.memory_bytes, Some(206_141_652_992));
        assert_eq!(mi300.product.as_deref(), Some("AMD Instinct MI300X"));
        assert_eq!(mi300.drm_render.as_deref(), Some("renderD129"));

        let xe = &by["0000:81:00.0"];
        assert_eq!(
            xe.memory_bytes,
            Some(0x0002_f800_0000 + 12_750_684_160),
            "tiles summed"
        );
        assert_eq!(by["0000:91:00.0"].memory_bytes, Some(14_940_110_848));

        let trimmed = &by["0035:05:00.0"];
        assert_eq!(trimmed.vendor, GpuVendor::Nvidia);
        assert_eq!(trimmed.driver.as_deref(), Some("nvidia"));
        assert_eq!(
            (trimmed.nvidia_minor, trimmed.drm_card.as_deref()),
            (None, None)
        );

        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{errors:?}");
        assert!(
            paths.iter().any(|p| p.ends_with("0035:05:00.0/vendor")),
            "{paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.ends_with("sys/class/drm/card6")),
            "{paths:?}"
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_file() {
        let dir = tree();
        let root = dir.path();
        write(
            root,
            &format!("sys/devices/{MI300}/mem_info_vram_total"),
            "lots\n",
        );
        write(
            root,
            "proc/driver/nvidia/gpus/0000:65:00.0/information",
            "Device Minor: x\n",
        );
        let (by, errors) = gpus(root);
        assert_eq!(by["0000:c1:00.0"].memory_bytes, None);
        assert_eq!(by["0000:65:00.0"].nvidia_minor, None);
        assert_eq!(
            by["0000:65:00.0"].driver.as_deref(),
            Some("nvidia"),
            "still a GPU"
        );
        for file in ["mem_info_vram_total", "0000:65:00.0/information"] {
            let error = errors.iter().find(|e| e.path.ends_with(file)).unwrap();
            assert_eq!(error.kind, Some(hal::ErrorKind::Malformed), "{error:?}");
        }
    }

    #[test]
    fn class_directories_map_through_uevent() {
        // Hand-assembled trees (prometheus/procfs) hold sys/class/drm/cardN as real directories.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "sys/class/drm/card0/device/uevent",
            "DRIVER=amdgpu\nPCI_CLASS=30000\nPCI_ID=1002:687F\nPCI_SLOT_NAME=0000:09:00.0\n",
        );
        write(
            root,
            "sys/class/drm/card0/device/mem_info_vram_total",
            "8573157376\n",
        );
        write(root, "sys/class/drm/card0/device/product_name", "\n");
        write(
            root,
            "sys/class/drm/card1/device/uevent",
            "PCI_ID=8086:5917\nPCI_SLOT_NAME=0000:00:02.0\n",
        );
        link(
            root,
            "sys/class/drm/card1/device/driver",
            "../../../../bus/pci/drivers/i915",
        );
        fs::create_dir_all(root.join("sys/class/drm/card1/card1-DP-1")).unwrap();
        write(
            root,
            "sys/class/drm/card2/device/uevent",
            "PCI_SLOT_NAME=0000:zz:00.0\n",
        );
        let (by, errors) = gpus(root);
        assert_eq!(by.len(), 2, "{by:?}");
        let vega = &by["0000:09:00.0"];
        assert_eq!(
            (vega.vendor, vega.driver.as_deref()),
            (GpuVendor::Amd, Some("amdgpu"))
        );
        assert_eq!(
            (vega.memory_bytes, vega.product.as_deref()),
            (Some(8_573_157_376), None)
        );
        let kaby = &by["0000:00:02.0"];
        assert_eq!(
            (kaby.vendor, kaby.driver.as_deref()),
            (GpuVendor::Intel, Some("i915"))
        );
        assert_eq!(kaby.drm_card.as_deref(), Some("card1"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].path.ends_with("card2/device/uevent"),
            "{errors:?}"
        );
    }

    #[test]
    fn fixture_machines_read_back() {
        let i915 = hal_mock::by_name("i915").unwrap().materialize().unwrap();
        let (by, errors) = gpus(i915.root());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(by.len(), 3);
        let flex = &by["0000:4d:00.0"];
        assert_eq!(
            (flex.drm_card.as_deref(), flex.drm_render.as_deref()),
            (Some("card1"), Some("renderD128"))
        );
        assert_eq!(flex.memory_bytes, Some(14_940_110_848));
        assert_eq!(by["0000:03:00.0"].drm_card.as_deref(), Some("card0"));

        let gb300 = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
        let (by, errors) = gpus(gb300.root());
        assert!(errors.is_empty(), "{errors:?}");
        let minors: Vec<Option<u32>> = by.values().map(|g| g.nvidia_minor).collect();
        assert_eq!(minors, [Some(0), Some(1), Some(2), Some(3)]);
        assert!(
            by.values()
                .all(|g| g.product.as_deref() == Some("NVIDIA GB300"))
        );
    }

    #[test]
    fn information_files() {
        let info = parse_nvidia_information(
            "Model: \t\t Tesla V100-SXM2-16GB\nIRQ:   \t\t 33\nGPU UUID: \t\t GPU-4b1e2b0c-0c3c-4e1d-8a2b-6f0e8d7c1234\n\
             Bus Location: \t\t 0004:04:00.0\nDevice Minor: \t\t 0\nBlacklisted:\t\t No\n",
        )
        .unwrap();
        assert_eq!(info.model.as_deref(), Some("Tesla V100-SXM2-16GB"));
        assert_eq!(
            info.uuid.as_deref(),
            Some("GPU-4b1e2b0c-0c3c-4e1d-8a2b-6f0e8d7c1234")
        );
        assert_eq!(info.minor, Some(0));
        assert_eq!(
            parse_nvidia_information("").unwrap(),
            NvidiaInformation::default()
        );
        let odd =
            parse_nvidia_information("Device Minor:\nGPU UUID: GPU-????\nno colon\n").unwrap();
        assert_eq!(odd, NvidiaInformation::default());
        assert!(parse_nvidia_information("Device Minor: -1").is_err());
        assert!(parse_nvidia_information(&format!("Model: {}", "x".repeat(300))).is_err());
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(numbered("card0", "card"), Some(0));
        assert_eq!(numbered("renderD128", "renderD"), Some(128));
        for other in [
            "card0-DP-1",
            "card",
            "card1234",
            "controlD64",
            "ttm",
            "version",
            "card+1",
        ] {
            assert_eq!(numbered(other, "card"), None, "{other}");
        }
        assert_eq!(parse_vram_bytes("0x2f8000000").unwrap(), 0x0002_f800_0000);
        assert_eq!(parse_vram_bytes("4294967296").unwrap(), 1 << 32);
        for bad in ["", "0x", "-1", "0xg", "+5", "0x10000000000000000"] {
            assert!(parse_vram_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(
            uevent_value("A=1\nPCI_ID= 10DE:2330 \n", "PCI_ID"),
            Some("10DE:2330")
        );
        assert_eq!(uevent_value("PCI_ID=\n", "PCI_ID"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,200}") {
            let _ = parse_nvidia_information(&text);
            let _ = parse_vram_bytes(&text);
            let _ = parse_decimal_bytes(&text);
            let _ = uevent_value(&text, "PCI_SLOT_NAME");
            let _ = numbered(&text, "card");
            let _ = last_pci_function(Path::new(&text));
        }

        #[test]
        fn information_lines_never_panic(lines in proptest::collection::vec(
            ("(Model|GPU UUID|Device Minor|IRQ|\\PC{0,12})", "[ \t]{0,4}", "\\PC{0,40}"), 0..80)
        ) {
            let text: String = lines
                .iter()
                .map(|(key, space, value)| format!("{key}:{space}{value}\n"))
                .collect();
            let _ = parse_nvidia_information(&text);
        }
    }

    /// A USB display (DisplayLink, `udl`, `gud`) has its DRM node under its USB controller: the
    /// controller is not a GPU. virtio-gpu's node, under its virtio device, is its function's.
    #[test]
    fn a_drm_node_behind_a_usb_controller_is_not_the_controllers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let xhci = "pci0000:00/0000:00:14.0";
        function(
            root,
            "pci0000:00",
            "0000:00:14.0",
            ("0x8086", "0x7ae0", "0x0c0330"),
            "xhci_hcd",
        );
        drm(root, &format!("{xhci}/usb3/3-1/3-1:1.0"), "card1");
        let virtio = "pci0000:00/0000:00:02.0";
        function(
            root,
            "pci0000:00",
            "0000:00:02.0",
            ("0x1af4", "0x1050", "0x030000"),
            "virtio-pci",
        );
        drm(root, &format!("{virtio}/virtio0"), "card0");
        let (by, errors) = gpus(root);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(by.keys().collect::<Vec<_>>(), ["0000:00:02.0"]);
        assert_eq!(by["0000:00:02.0"].drm_card.as_deref(), Some("card0"));
    }
}
