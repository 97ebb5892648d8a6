//! The sysfs PCI backend against real machines: the hwloc dumps with I/O (checked against the per-device
//! tables of their INDEX.md and against `lstopo --whole-io`) and ghw's snapshots (checked against the
//! values ghw's own tests assert).
//!
//! Needs `../shared/corpora`, `tar`, and Debian `hwloc`: ignored by default, run by `.ci/run`.

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

use backends::{SysfsPci, SysfsRoot, SysfsSriov};
use hal::{CpuSet, NumaNode, PciAddress, PciDevice, PciFunction, SriovPf};
use stack_tests::hwloc::{self, corpus_dir};
use stack_tests::index::{Row, tables};

fn functions(root: &Path) -> (BTreeMap<PciAddress, PciFunction>, Vec<hal::InventoryError>) {
    let found = SysfsPci::new(SysfsRoot::new(root)).pci_functions().unwrap();
    (
        found.items.into_iter().map(|f| (f.address, f)).collect(),
        found.errors,
    )
}

fn none_if_dash(cell: &str) -> Option<&str> {
    (!matches!(cell, "-" | "" | "(absent)")).then_some(cell)
}

#[test]
#[ignore = "needs ../shared corpora"]
fn pci_functions_match_the_hwloc_index_tables_needs_shared_corpora() {
    let index = fs::read_to_string(corpus_dir().join("INDEX.md")).unwrap();
    let all_tables = tables(&index, "BDF");
    let scratch = hal_mock::scratch_dir("pci-corpus-").unwrap();
    let mut checked = 0;
    let mut matched_tables = 0;
    let mut sriov_checked = 0;
    let mut failures = Vec::new();
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        let Some(entries) = fs::read_dir(root.join("sys/bus/pci/devices")).ok() else {
            continue;
        };
        let on_disk: BTreeSet<PciAddress> = entries
            .filter_map(|e| PciAddress::parse(e.ok()?.file_name().to_str()?).ok())
            .collect();
        // The table describing this dump is the one listing exactly its functions.
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
                "{}: {} INDEX tables list its {} functions",
                dump.name,
                matching.len(),
                on_disk.len()
            ));
            continue;
        };
        matched_tables += 1;
        let heading = &dump.name;
        let (found, errors) = functions(&root);
        let sriov: BTreeMap<PciAddress, (u32, u32)> = SysfsSriov::new(SysfsRoot::new(&root))
            .sriov_pfs()
            .unwrap()
            .items
            .into_iter()
            .map(|s| (s.pf, (s.num_vfs, s.total_vfs)))
            .collect();
        for row in rows.iter() {
            let address = PciAddress::parse(&row["BDF"]).unwrap();
            let mut check = |what: &str, same: bool, detail: String| {
                if !same {
                    failures.push(format!("{heading} {address} {what}: {detail}"));
                }
            };
            // Hand-trimmed dumps hold directories with only class/local_cpus: no identity, an error.
            if row["vendor:device"] == ":" {
                let reported = errors.iter().any(|e| e.path.contains(&address.to_string()));
                check(
                    "trimmed entry reported as an error",
                    reported && !found.contains_key(&address),
                    format!("{errors:?}"),
                );
                continue;
            }
            let Some(f) = found.get(&address) else {
                check("present", false, "missing".into());
                continue;
            };
            checked += 1;
            check(
                "class",
                format!("{:#08x}", f.class) == row["class"],
                format!("{:#08x} vs {}", f.class, row["class"]),
            );
            let ids = format!("{:#06x}:{:#06x}", f.vendor_id, f.device_id);
            check(
                "vendor:device",
                ids == row["vendor:device"],
                format!("{ids} vs {}", row["vendor:device"]),
            );
            let numa = match none_if_dash(&row["numa_node"]) {
                None => None,
                Some(n) => NumaNode::from_kernel_text(n).unwrap(),
            };
            check(
                "numa_node",
                f.numa_node == numa,
                format!("{:?} vs {}", f.numa_node, row["numa_node"]),
            );
            let cpus = &row["local_cpulist"];
            let want = match cpus.strip_prefix("mask ") {
                Some(mask) => CpuSet::from_hex_mask(mask).ok(),
                None => none_if_dash(cpus).and_then(|c| CpuSet::from_cpulist(c).ok()),
            };
            check(
                "local cpus",
                f.local_cpus == want,
                format!("{:?} vs {cpus}", f.local_cpus),
            );
            check(
                "driver",
                f.driver.as_deref() == none_if_dash(&row["driver"]),
                format!("{:?} vs {}", f.driver, row["driver"]),
            );
            let group = none_if_dash(&row["iommu_group"]).map(|g| g.parse::<u32>().unwrap());
            check(
                "iommu_group",
                f.iommu_group == group,
                format!("{:?} vs {}", f.iommu_group, row["iommu_group"]),
            );
            let physfn = none_if_dash(&row["physfn"])
                .map(|p| PciAddress::parse(p.trim_start_matches("../")).unwrap());
            check(
                "physfn",
                f.physfn == physfn,
                format!("{:?} vs {}", f.physfn, row["physfn"]),
            );
            // The root is the pciDDDD:BB directory the link target starts under.
            let target = &row["real path (bus/pci/devices link target)"];
            let want_root = target
                .split('/')
                .find(|part| part.starts_with("pci"))
                .map(str::to_owned);
            check(
                "pcie root",
                f.pcie_root.map(|r| r.to_string()) == want_root,
                format!("{:?} vs {target}", f.pcie_root),
            );
            let want_sriov = none_if_dash(&row["sriov numvfs/totalvfs"]).map(|c| {
                let (num, total) = c.split_once('/').unwrap();
                (num.parse().unwrap(), total.parse().unwrap())
            });
            if want_sriov.is_some() {
                sriov_checked += 1;
            }
            check(
                "sriov",
                sriov.get(&address).copied() == want_sriov,
                format!("{:?} vs {want_sriov:?}", sriov.get(&address)),
            );
            let children: BTreeSet<String> = row["children (net/infiniband/drm)"]
                .split(", ")
                .filter_map(|c| c.strip_prefix("net/").map(str::to_owned))
                .collect();
            // The INDEX lists direct net/ children; virtio-net's interface sits under virtioN/net/
            // (hwloc attaches it to the PCI function too: 2pa-pcidomain32bits' expected output has
            // ens3 under 0000:00:03.0).
            let mut children = children;
            let dir = root.join(&f.sysfs_path);
            for virtio in fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
            {
                for netdev in fs::read_dir(virtio.path().join("net"))
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok())
                {
                    children.insert(netdev.file_name().to_string_lossy().into_owned());
                }
            }
            let netdevs: BTreeSet<String> = f.netdevs.iter().cloned().collect();
            check(
                "netdevs",
                netdevs == children,
                format!("{netdevs:?} vs {children:?}"),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 100, "only {checked} functions checked");
    assert!(
        matched_tables >= 6,
        "only {matched_tables} dumps matched an INDEX table"
    );
    assert!(
        sriov_checked >= 2,
        "only {sriov_checked} SR-IOV PFs checked"
    );
}

/// `pci_type="0604 [8086:3408] [0000:0000] 22"` of every PCI object lstopo shows with `--whole-io`.
fn lstopo_pci(root: &Path) -> BTreeMap<PciAddress, (u16, u16)> {
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
            let ids = n
                .attribute("pci_type")?
                .split(['[', ']'])
                .nth(1)?
                .to_owned();
            let (vendor, device) = ids.split_once(':')?;
            Some((
                address,
                (
                    u16::from_str_radix(vendor, 16).ok()?,
                    u16::from_str_radix(device, 16).ok()?,
                ),
            ))
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared corpora and Debian hwloc"]
fn pci_functions_match_lstopo_whole_io_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("pci-lstopo-").unwrap();
    let mut compared = 0;
    let mut wide_checked = 0;
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        let devices = root.join("sys/bus/pci/devices");
        let Ok(entries) = fs::read_dir(&devices) else {
            continue;
        };
        // lstopo only sees functions whose entry is a link into sys/devices (old trimmed dumps hold
        // plain directories it cannot place).
        if entries
            .filter_map(|e| e.ok())
            .any(|e| !e.path().is_symlink())
        {
            continue;
        }
        let (found, _) = functions(&root);
        // Debian's hwloc is built without --enable-32bits-pci-domain and skips domains above ffff
        // (10000:00:04.0 of 2pa-pcidomain32bits), which hwloc's own expected output for that dump
        // lists: those functions are checked against that expected output instead.
        let (wide, narrow): (Vec<&PciFunction>, Vec<&PciFunction>) =
            found.values().partition(|f| f.address.domain > 0xffff);
        let ours: BTreeMap<PciAddress, (u16, u16)> = narrow
            .iter()
            .map(|f| (f.address, (f.vendor_id, f.device_id)))
            .collect();
        assert_eq!(ours, lstopo_pci(&root), "{}", dump.name);
        if !wide.is_empty() {
            let expected =
                fs::read_to_string(corpus_dir().join(format!("{}.console", dump.name))).unwrap();
            for f in wide.iter().filter(|f| f.base_class() != 0x06) {
                let line = format!(
                    "busid={} id={:04x}:{:04x}",
                    f.address, f.vendor_id, f.device_id
                );
                assert!(
                    expected.contains(&line),
                    "{}: {line} not in hwloc's expected output",
                    dump.name
                );
                wide_checked += 1;
            }
        }
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} dumps with PCI compared");
    assert_eq!(
        wide_checked, 1,
        "the 32-bit-domain SCSI function of 2pa-pcidomain32bits"
    );
}

#[test]
#[ignore = "needs ../shared corpora"]
fn pci_functions_match_ghw_assertions_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("pci-ghw-").unwrap();
    let get = |found: &BTreeMap<PciAddress, PciFunction>, a: &str| {
        found[&PciAddress::parse(a).unwrap()].clone()
    };

    // Dual Xeon L5640 (ghw's pci_linux_test.go).
    let (xeon, errors) = functions(
        &hwloc::extract_ghw(
            "linux-amd64-8581cf3a529e5d8b97ea876eade2f60d",
            scratch.path(),
        )
        .unwrap(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(get(&xeon, "0000:07:03.0").numa_node, None);
    assert_eq!(get(&xeon, "0000:05:11.0").numa_node, Some(NumaNode(0)));
    assert_eq!(get(&xeon, "0000:05:00.1").numa_node, Some(NumaNode(1)));
    assert_eq!(get(&xeon, "0000:07:03.0").revision, Some(0x0a));
    assert_eq!(get(&xeon, "0000:05:00.0").revision, Some(0x01));
    assert_eq!(
        get(&xeon, "0000:07:03.0").driver.as_deref(),
        Some("mgag200")
    );
    assert_eq!(get(&xeon, "0000:05:11.0").driver.as_deref(), Some("igbvf"));
    assert_eq!(get(&xeon, "0000:05:00.1").driver.as_deref(), Some("igb"));
    assert_eq!(
        get(&xeon, "0000:05:00.0").local_cpus.unwrap().to_string(),
        "0,2,4,6,8,10,12,14,16,18,20,22"
    );
    assert_eq!(xeon.len(), 82);

    // Alder Lake laptop: parents and IOMMU groups.
    let (laptop, errors) = functions(
        &hwloc::extract_ghw(
            "linux-amd64-415ee03b8c4d1c4f07ae2e9d8b3d3d6d",
            scratch.path(),
        )
        .unwrap(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        get(&laptop, "0000:04:00.0").parent,
        Some(PciAddress::parse("0000:00:06.0").unwrap())
    );
    assert_eq!(get(&laptop, "0000:00:1f.0").iommu_group, Some(13));
    assert_eq!(get(&laptop, "0000:00:1f.5").iommu_group, Some(13));
    assert_eq!(get(&laptop, "0000:04:00.0").iommu_group, Some(14));
    assert_eq!(get(&laptop, "0000:00:02.0").iommu_group, Some(0));
    assert_eq!(laptop.len(), 23);

    // Exactly one processing accelerator (class 0x12) in each accel snapshot; the NVIDIA one is 3D.
    for (name, vendor) in [
        ("linux-amd64-accel", 0x1b36),
        ("linux-amd64-accel-nvidia", 0x10de),
    ] {
        let (found, _) = functions(&hwloc::extract_ghw(name, scratch.path()).unwrap());
        let accelerators: Vec<&PciFunction> = found
            .values()
            .filter(|f| f.base_class() == 0x12 || (f.class == 0x030200))
            .collect();
        assert_eq!(accelerators.len(), 1, "{name}");
        assert_eq!(accelerators[0].vendor_id, vendor, "{name}");
    }
}

/// The procfs and node_exporter trees (ttar archives) against the appendix tables of
/// sysfs-other/INDEX.md: identity, NUMA node, local CPUs, driver, IOMMU group, SR-IOV counts, netdevs.
#[test]
#[ignore = "needs ../shared corpora"]
fn pci_functions_match_the_procfs_and_node_exporter_trees_needs_shared_corpora() {
    let dir = corpus_dir().join("../sysfs-other");
    let index = fs::read_to_string(dir.join("INDEX.md")).unwrap();
    let all_tables = tables(&index, "BDF");
    let scratch = hal_mock::scratch_dir("pci-ttar-").unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for archive in ["prometheus-procfs/fixtures.ttar", "node_exporter/sys.ttar"] {
        let into = scratch.path().join(archive.replace('/', "-"));
        stack_tests::ttar::extract(&dir.join(archive), &into).unwrap();
        let root = [into.join("fixtures"), into.clone()]
            .into_iter()
            .find(|r| r.join("sys/bus/pci/devices").is_dir())
            .unwrap();
        let (found, errors) = functions(&root);
        assert!(errors.is_empty(), "{archive}: {errors:?}");
        let sriov: BTreeMap<PciAddress, (u32, u32)> = SysfsSriov::new(SysfsRoot::new(&root))
            .sriov_pfs()
            .unwrap()
            .items
            .into_iter()
            .map(|s| (s.pf, (s.num_vfs, s.total_vfs)))
            .collect();
        let on_disk: BTreeSet<String> = found.keys().map(|a| a.to_string()).collect();
        let Some(rows) = all_tables.iter().find(|rows| {
            rows.iter()
                .map(|r| r["BDF"].clone())
                .collect::<BTreeSet<_>>()
                == on_disk
        }) else {
            panic!("{archive}: no INDEX table lists {on_disk:?}");
        };
        for row in rows {
            let f = &found[&PciAddress::parse(&row["BDF"]).unwrap()];
            let mut check = |what: &str, same: bool, detail: String| {
                if !same {
                    failures.push(format!("{archive} {} {what}: {detail}", f.address));
                }
            };
            let ids = format!("{:#08x} {:#06x}:{:#06x}", f.class, f.vendor_id, f.device_id);
            let want = format!("{} {}", row["class"], row["vendor:device"]);
            check("identity", ids == want, format!("{ids} vs {want}"));
            let numa = NumaNode::from_kernel_text(&row["numa_node"]).unwrap();
            check("numa", f.numa_node == numa, format!("{:?}", f.numa_node));
            let cpus = CpuSet::from_cpulist(&row["local_cpulist"]).ok();
            check(
                "local cpus",
                f.local_cpus == cpus,
                format!("{:?}", f.local_cpus),
            );
            let driver = none_if_dash(&row["driver"]);
            check(
                "driver",
                f.driver.as_deref() == driver,
                format!("{:?}", f.driver),
            );
            let group = none_if_dash(&row["iommu_group"]).map(|g| g.parse::<u32>().unwrap());
            check(
                "iommu group",
                f.iommu_group == group,
                format!("{:?}", f.iommu_group),
            );
            let want_sriov = none_if_dash(&row["sriov numvfs/totalvfs"]).map(|c| {
                let (num, total) = c.split_once('/').unwrap();
                (num.parse().unwrap(), total.parse().unwrap())
            });
            let got = sriov.get(&f.address).copied();
            check(
                "sriov",
                got == want_sriov,
                format!("{got:?} vs {want_sriov:?}"),
            );
            let netdevs: Vec<String> = row["children (net/infiniband/drm)"]
                .split(", ")
                .filter_map(|c| c.strip_prefix("net/").map(str::to_owned))
                .collect();
            check("netdevs", f.netdevs == netdevs, format!("{:?}", f.netdevs));
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 6);
}

/// node-feature-discovery's PCI tree: real attribute files in real directories (no `sys/devices`),
/// checked against what NFD's own test asserts (sysfs-other/INDEX.md section 4).
#[test]
#[ignore = "needs ../shared corpora"]
fn pci_functions_match_the_nfd_assertions_needs_shared_corpora() {
    let root = corpus_dir().join("../sysfs-other/nfd/testdata/source/pci/rootfs-1");
    let (found, errors) = functions(&root);
    // NFD's test shows classes as 4 hex digits; its list covers all but 3f:00.0, an Intel X722
    // network function (class 0x020000 in its `class` file).
    let classes: BTreeMap<String, String> = found
        .values()
        .map(|f| (f.address.to_string(), format!("{:04x}", f.class >> 8)))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("0000:00:04.0", "0880"),
        ("0000:00:11.1", "ff00"),
        ("0000:00:11.5", "0106"),
        ("0000:00:14.2", "1180"),
        ("0000:00:16.0", "0780"),
        ("0000:00:1c.0", "0604"),
        ("0000:00:1f.5", "0c80"),
        ("0000:02:00.0", "0300"),
        ("0000:3b:00.0", "0b40"),
        ("0000:3f:00.0", "0200"),
    ]
    .into_iter()
    .map(|(a, c)| (a.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(classes, expected);
    let qat = &found[&PciAddress::parse("0000:3b:00.0").unwrap()];
    assert_eq!(
        (qat.vendor_id, qat.device_id, qat.class),
        (0x8086, 0x37c8, 0x0b4000)
    );
    assert_eq!(qat.numa_node, Some(NumaNode(0)));
    assert_eq!(
        qat.local_cpus,
        Some(CpuSet::from_cpulist("0-2,5-6,10-12,15-16,40-42,45-46,50-52,55-56").unwrap())
    );
    assert_eq!(qat.driver_override, None, "the kernel's (null)");
    let aspeed = &found[&PciAddress::parse("0000:02:00.0").unwrap()];
    assert_eq!((aspeed.vendor_id, aspeed.device_id), (0x1a03, 0x2000));
    let sriov = SysfsSriov::new(SysfsRoot::new(&root)).sriov_pfs().unwrap();
    let qat_pf = sriov.items.iter().find(|s| s.pf == qat.address).unwrap();
    assert_eq!((qat_pf.num_vfs, qat_pf.total_vfs), (16, 16));
    assert_eq!(qat_pf.vf_device_id, Some(0x37c9));
    // 0000:00:1f.2 is incomplete on purpose: it is an error entry, the ten others are reported.
    assert_eq!(found.len(), 10, "{:?}", found.keys());
    assert!(
        errors.iter().all(|e| e.path.contains("0000:00:1f.2")) && !errors.is_empty(),
        "{errors:?}"
    );
}
