//! The sysfs GPU backend against real machines: the hwloc dumps with I/O (checked against the per-device
//! tables of their INDEX.md and against the GPU objects of `lstopo --whole-io`) and ghw's snapshots
//! (checked against sysfs-other/INDEX.md section 1).
//!
//! Needs `../shared/corpora`, `tar`, and Debian `hwloc`: ignored by default, run by `.ci/run`.
//!
//! What the backend can honestly say about hwloc's `nvidiagpunumanodes` (POWER9 + 6 V100): its
//! `sys/bus/pci/devices/<bdf>` entries are hand-trimmed real directories holding only `class` and
//! `local_cpus`, so the PCI backend reports each as an error (no `vendor`). The NVIDIA module's
//! `proc/driver/nvidia/gpus/<bdf>` directories are there, and the module creates them only for GPUs
//! it drives, so the six are reported as NVIDIA GPUs with driver `nvidia`; the dump holds no
//! `information` files (only `numa_status`), so minor, UUID and model stay unknown, and the six PCI
//! errors stay in the result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use backends::{SysfsGpu, SysfsPci, SysfsRoot};
use hal::{GpuDevice, GpuInfo, GpuVendor, InventoryError, PciAddress, PciDevice};
use stack_tests::hwloc::{self, corpus_dir};
use stack_tests::index::{Row, tables};

fn gpus(root: &Path) -> (BTreeMap<PciAddress, GpuInfo>, Vec<InventoryError>) {
    let found = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
    let addresses: Vec<PciAddress> = found.items.iter().map(|g| g.pci_address).collect();
    assert!(addresses.is_sorted(), "{addresses:?}");
    (
        found
            .items
            .into_iter()
            .map(|g| (g.pci_address, g))
            .collect(),
        found.errors,
    )
}

fn pci_errors(root: &Path) -> Vec<InventoryError> {
    SysfsPci::new(SysfsRoot::new(root))
        .pci_functions()
        .unwrap()
        .errors
}

fn address(text: &str) -> PciAddress {
    PciAddress::parse(text).unwrap()
}

fn none_if_dash(cell: &str) -> Option<&str> {
    (!matches!(cell, "-" | "" | "(absent)")).then_some(cell)
}

/// The `/proc/driver/nvidia/gpus entries:` lines of the hwloc INDEX: address → files in its directory.
fn nvidia_entries(index: &str) -> BTreeMap<PciAddress, String> {
    index
        .lines()
        .filter_map(|l| l.strip_prefix("/proc/driver/nvidia/gpus entries: "))
        .flat_map(|l| l.split(", "))
        .map(|entry| {
            let (bdf, files) = entry.split_once(' ').unwrap_or((entry, ""));
            (address(bdf), files.to_owned())
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared corpora"]
fn gpus_match_the_hwloc_index_tables_needs_shared_corpora() {
    let index = fs::read_to_string(corpus_dir().join("INDEX.md")).unwrap();
    let all_tables = tables(&index, "BDF");
    let nvidia = nvidia_entries(&index);
    assert_eq!(nvidia.len(), 6, "{nvidia:?}");
    let scratch = hal_mock::scratch_dir("gpu-").unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut dumps_with_gpus = BTreeSet::new();
    let mut by_dump = BTreeMap::new();
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        let Ok(entries) = fs::read_dir(root.join("sys/bus/pci/devices")) else {
            continue;
        };
        let on_disk: BTreeSet<PciAddress> = entries
            .filter_map(|e| PciAddress::parse(e.ok()?.file_name().to_str()?).ok())
            .collect();
        let bdfs = |rows: &Vec<Row>| -> BTreeSet<PciAddress> {
            rows.iter()
                .filter_map(|r| PciAddress::parse(&r["BDF"]).ok())
                .collect()
        };
        let matching: Vec<&Vec<Row>> = all_tables
            .iter()
            .filter(|rows| bdfs(rows) == on_disk)
            .collect();
        let [rows] = matching.as_slice() else {
            failures.push(format!(
                "{}: {} INDEX tables match",
                dump.name,
                matching.len()
            ));
            continue;
        };
        let (found, errors) = gpus(&root);
        // The GPU backend adds no errors of its own on these dumps: it passes the PCI ones on.
        if errors != pci_errors(&root) {
            failures.push(format!("{}: errors {errors:?}", dump.name));
        }
        // Display-class rows are GPUs; a row without identity only where the NVIDIA module lists it.
        let expected: BTreeMap<PciAddress, &Row> = rows
            .iter()
            .filter(|r| r["class"].starts_with("0x03"))
            .filter(|r| r["vendor:device"] != ":" || nvidia.contains_key(&address(&r["BDF"])))
            .map(|r| (address(&r["BDF"]), r))
            .collect();
        let found_set: BTreeSet<&PciAddress> = found.keys().collect();
        let expected_set: BTreeSet<&PciAddress> = expected.keys().collect();
        if found_set != expected_set {
            failures.push(format!("{}: {found_set:?} vs {expected_set:?}", dump.name));
            continue;
        }
        for (address, row) in &expected {
            let gpu = &found[address];
            let mut check = |what: &str, same: bool, detail: String| {
                if !same {
                    failures.push(format!("{} {address} {what}: {detail}", dump.name));
                }
            };
            let (vendor, driver) = match row["vendor:device"].split_once(':') {
                Some(("", "")) => (GpuVendor::Nvidia, Some("nvidia")),
                Some((vendor, _)) => (
                    GpuVendor::from_pci_vendor(
                        u16::from_str_radix(vendor.trim_start_matches("0x"), 16).unwrap(),
                    ),
                    none_if_dash(&row["driver"]),
                ),
                None => panic!("{row:?}"),
            };
            check("vendor", gpu.vendor == vendor, format!("{:?}", gpu.vendor));
            check(
                "driver",
                gpu.driver.as_deref() == driver,
                format!("{:?} vs {driver:?}", gpu.driver),
            );
            let children: Vec<&str> = row["children (net/infiniband/drm)"]
                .split(", ")
                .filter_map(|c| c.strip_prefix("drm/"))
                .collect();
            let card = children.iter().find(|c| c.starts_with("card")).copied();
            let render = children.iter().find(|c| c.starts_with("renderD")).copied();
            check(
                "drm nodes",
                (gpu.drm_card.as_deref(), gpu.drm_render.as_deref()) == (card, render),
                format!("{:?} {:?} vs {children:?}", gpu.drm_card, gpu.drm_render),
            );
            // No dump holds an `information` file or a local-memory attribute.
            check(
                "nothing else known",
                (
                    &gpu.nvidia_minor,
                    &gpu.uuid,
                    &gpu.product,
                    &gpu.memory_bytes,
                ) == (&None, &None, &None, &None),
                format!("{gpu:?}"),
            );
            checked += 1;
            dumps_with_gpus.insert(dump.name.clone());
        }
        by_dump.insert(dump.name.clone(), (found, errors));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // cirrus (2pa-pcidomain32bits), two Matrox G200eR (40intel64-2g2n4c+pcilocality,
    // fakepcilocalities), six trimmed V100s (nvidiagpunumanodes). The INDEX also has an untitled table
    // (an ASPEED at 0000:05:00.0) whose dump is not in the corpus; no tarball matches it.
    assert_eq!(
        checked, 9,
        "3 display functions with identity, 6 trimmed V100s"
    );
    assert_eq!(dumps_with_gpus.len(), 4, "{dumps_with_gpus:?}");

    // The one dump with DRM content: card0 (cirrus) on 0000:00:02.0; card0-VGA-1, controlD64, ttm
    // and version are not nodes of their own.
    let (cirrus, errors) = &by_dump["2pa-pcidomain32bits"];
    assert!(errors.is_empty(), "{errors:?}");
    let gpu = &cirrus[&address("0000:00:02.0")];
    assert_eq!(cirrus.len(), 1);
    assert_eq!(gpu.vendor, GpuVendor::Other(0x1013));
    assert_eq!(gpu.driver.as_deref(), Some("cirrus"));
    assert_eq!(gpu.drm_card.as_deref(), Some("card0"));
    assert_eq!(gpu.drm_render, None);

    // The trimmed V100s: six GPUs from the NVIDIA list, and the six PCI errors naming `vendor`.
    let (v100s, errors) = &by_dump["nvidiagpunumanodes"];
    let listed: Vec<String> = v100s.keys().map(|a| a.to_string()).collect();
    assert_eq!(
        listed,
        [
            "0004:05:00.0",
            "0004:06:00.0",
            "0006:00:00.0",
            "0007:00:00.0",
            "0035:04:00.0",
            "0035:05:00.0"
        ]
    );
    assert!(v100s.values().all(|g| g.vendor == GpuVendor::Nvidia
        && g.driver.as_deref() == Some("nvidia")
        && g.nvidia_minor.is_none()));
    assert_eq!(errors.len(), 6, "{errors:?}");
    for bdf in &listed {
        assert!(
            errors
                .iter()
                .any(|e| e.path.ends_with(&format!("{bdf}/vendor"))),
            "{bdf}: {errors:?}"
        );
    }
    // Each listed directory holds only numa_status: no `information`, so nothing more to say.
    assert!(nvidia.values().all(|files| files == "[numa_status]"));
}

/// Per PCI object of `lstopo --whole-io`: its class and the names of its GPU OS devices.
fn lstopo_gpus(root: &Path) -> BTreeMap<PciAddress, (String, BTreeSet<String>)> {
    let output = Command::new("lstopo-no-graphics")
        .args(["--of", "xml", "--whole-io", "-"])
        .env("HWLOC_FSROOT", root)
        .env("HWLOC_COMPONENTS", "linux,stop")
        .output()
        .expect("lstopo-no-graphics (Debian hwloc)");
    let xml = String::from_utf8(output.stdout).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap();
    doc.descendants()
        .filter_map(|n| {
            let address = PciAddress::parse(n.attribute("pci_busid")?).ok()?;
            let class = n.attribute("pci_type")?.split(' ').next()?.to_owned();
            // osdev_type 1 is HWLOC_OBJ_OSDEV_GPU: what the linux component found in sys/class/drm.
            let nodes = n
                .children()
                .filter(|c| c.attribute("osdev_type") == Some("1"))
                .filter_map(|c| c.attribute("name").map(str::to_owned))
                .collect();
            Some((address, (class, nodes)))
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared corpora and Debian hwloc"]
fn gpus_match_lstopo_whole_io_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("gpu-lstopo-").unwrap();
    let mut compared = 0;
    let mut with_nodes = 0;
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        if !root.join("sys/bus/pci/devices").is_dir() {
            continue;
        }
        let (found, _) = gpus(&root);
        let lstopo = lstopo_gpus(&root);
        // lstopo's display-class PCI objects are our GPUs (it also shows the trimmed V100s, as
        // `0300 [0000:0000]`); Debian's hwloc skips 32-bit domains, where no dump has a GPU.
        let display: BTreeSet<PciAddress> = lstopo
            .iter()
            .filter(|(_, (class, _))| class.starts_with("03"))
            .map(|(a, _)| *a)
            .collect();
        let ours: BTreeSet<PciAddress> = found.keys().copied().collect();
        assert_eq!(ours, display, "{}", dump.name);
        // hwloc also lists the legacy controlD64 node; card and render nodes must agree.
        for (address, gpu) in &found {
            let theirs: BTreeSet<String> = lstopo[address]
                .1
                .iter()
                .filter(|n| n.starts_with("card") || n.starts_with("renderD"))
                .cloned()
                .collect();
            let mine: BTreeSet<String> = gpu
                .drm_card
                .iter()
                .chain(&gpu.drm_render)
                .cloned()
                .collect();
            assert_eq!(mine, theirs, "{} {address}", dump.name);
            with_nodes += usize::from(!mine.is_empty());
        }
        compared += 1;
    }
    // The six I/O dumps of the INDEX.
    assert_eq!(compared, 6, "dumps with PCI compared");
    assert_eq!(with_nodes, 1, "card0 of 2pa-pcidomain32bits");
}

#[test]
#[ignore = "needs ../shared corpora"]
fn gpus_match_the_ghw_snapshots_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("gpu-ghw-").unwrap();
    let read = |name: &str| {
        let root = hwloc::extract_ghw(name, scratch.path()).unwrap();
        let (found, errors) = gpus(&root);
        assert_eq!(errors, pci_errors(&root), "{name}: no errors of its own");
        assert!(errors.is_empty(), "{name}: {errors:?}");
        found
    };
    let listed = |found: &BTreeMap<PciAddress, GpuInfo>| -> Vec<String> {
        found.keys().map(|a| a.to_string()).collect()
    };

    // AMD Ryzen 5 1600: sys/class/drm/card0 -> ../../devices/pci0000:00/0000:00:03.1/0000:0a:00.0/drm/card0,
    // AMD 1002:6758 with no driver link.
    let ryzen = read("linux-amd64-61797caf7c0b6bca1725ad7975ed4773");
    assert_eq!(listed(&ryzen), ["0000:0a:00.0"]);
    let radeon = &ryzen[&address("0000:0a:00.0")];
    assert_eq!(radeon.vendor, GpuVendor::Amd);
    assert_eq!(radeon.driver, None);
    assert_eq!(radeon.drm_card.as_deref(), Some("card0"));
    assert_eq!(radeon.drm_render, None);
    assert_eq!((radeon.memory_bytes, &radeon.product), (None, &None));

    // VM with an NVIDIA GP100 (10de:15f8, class 0x030200, driver nvidia) next to a virtio-gpu; no
    // proc/driver/nvidia captured, so no NVIDIA facts. Exactly one accelerator in ghw's terms.
    let vm = read("linux-amd64-accel-nvidia");
    assert_eq!(listed(&vm), ["0000:04:00.0", "0000:06:00.0"]);
    let gp100 = &vm[&address("0000:06:00.0")];
    assert_eq!(gp100.vendor, GpuVendor::Nvidia);
    assert_eq!(gp100.driver.as_deref(), Some("nvidia"));
    assert_eq!(
        (gp100.nvidia_minor, &gp100.uuid, &gp100.drm_card),
        (None, &None, &None)
    );
    let virtio = &vm[&address("0000:04:00.0")];
    assert_eq!(virtio.vendor, GpuVendor::Other(0x1af4));
    assert_eq!(virtio.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(
        vm.values()
            .filter(|g| g.vendor == GpuVendor::Nvidia)
            .count(),
        1
    );

    // QEMU VM whose one accelerator is a processing accelerator (0x120000, 1b36:0005,
    // fake_pci_driver): not a GPU; the virtio-gpu is.
    let accel = read("linux-amd64-accel");
    assert_eq!(listed(&accel), ["0000:00:01.0"]);

    // Core i7-1270P: the i915 iGPU at 0000:00:02.0 (no sys/class/drm in the snapshot).
    let laptop = read("linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d");
    assert_eq!(listed(&laptop), ["0000:00:02.0"]);
    let igpu = &laptop[&address("0000:00:02.0")];
    assert_eq!(igpu.vendor, GpuVendor::Intel);
    assert_eq!(igpu.driver.as_deref(), Some("i915"));
    assert_eq!((&igpu.drm_card, &igpu.memory_bytes), (&None, &None));

    // Dual Xeon L5640: the Matrox BMC display (mgag200) at 0000:07:03.0.
    let xeon = read("linux-amd64-8581cf3a529e5d8b97ea876eade2f60d");
    assert_eq!(listed(&xeon), ["0000:07:03.0"]);
    assert_eq!(
        xeon[&address("0000:07:03.0")].vendor,
        GpuVendor::Other(0x102b)
    );
    assert_eq!(
        xeon[&address("0000:07:03.0")].driver.as_deref(),
        Some("mgag200")
    );
}
