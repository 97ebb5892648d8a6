//! The sysfs RDMA backend against real machines: the hwloc dumps with InfiniBand (checked against the
//! InfiniBand and PCI tables of their INDEX.md and against the OpenFabrics objects of
//! `lstopo --whole-io`), and the node_exporter and procfs sysfs fixtures (checked against the tables
//! of sysfs-other/INDEX.md's appendix).
//!
//! Needs `../shared/corpora`, `tar`, and Debian `hwloc`: ignored by default, run by `.ci/run`.
//!
//! The hwloc INDEX also describes `mlx4_0` and `scif0` of a dump that is not in the corpus (its table
//! has no heading and no tarball matches it); only tables that match a dump on disk are used.

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

use backends::{SysfsRdma, SysfsRoot};
use hal::{LinkLayer, PciAddress, RdmaCharKind, RdmaDevice, RdmaInfo};
use stack_tests::hwloc::{self, corpus_dir};
use stack_tests::index::{Row, tables};
use stack_tests::ttar;

fn devices(root: &Path) -> BTreeMap<String, RdmaInfo> {
    let found = SysfsRdma::new(SysfsRoot::new(root)).rdma_devices().unwrap();
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    found
        .items
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect()
}

fn cell(row: &Row, column: &str) -> Option<String> {
    let text = row[column].as_str();
    (!matches!(text, "" | "-")).then(|| text.to_owned())
}

/// `4: ACTIVE` → `ACTIVE`, as the backend reports it.
fn name_of(text: Option<String>) -> Option<String> {
    text.map(|t| t.split_once(": ").map_or(t.clone(), |(_, n)| n.to_owned()))
}

/// Compares every row of an INDEX InfiniBand table (one row per device port; a device without ports
/// has `-` there) with what the backend found. Returns the mismatches.
fn compare(what: &str, rows: &[Row], found: &BTreeMap<String, RdmaInfo>) -> Vec<String> {
    let mut failures = Vec::new();
    let names: BTreeSet<&String> = rows.iter().map(|r| &r["ibdev"]).collect();
    if names != found.keys().collect() {
        return vec![format!("{what}: {names:?} vs {:?}", found.keys())];
    }
    for row in rows {
        let device = &found[&row["ibdev"]];
        let mut check = |field: &str, same: bool, detail: String| {
            if !same {
                failures.push(format!("{what} {} {field}: {detail}", device.name));
            }
        };
        let guid = cell(row, "node_guid");
        check(
            "node_guid",
            device.node_guid == guid,
            format!("{:?}", device.node_guid),
        );
        let node_type = name_of(cell(row, "node_type"));
        check(
            "node_type",
            device.node_type == node_type,
            format!("{:?}", device.node_type),
        );
        let Some(port) = cell(row, "port") else {
            check(
                "ports",
                device.ports.is_empty(),
                format!("{:?}", device.ports),
            );
            continue;
        };
        let Some(port) = device.ports.iter().find(|p| p.number.to_string() == port) else {
            check("port", false, format!("no port {port}: {:?}", device.ports));
            continue;
        };
        check(
            "state",
            port.state == name_of(cell(row, "state")),
            format!("{port:?}"),
        );
        let phys = name_of(cell(row, "phys_state"));
        check("phys_state", port.phys_state == phys, format!("{port:?}"));
        check("rate", port.rate == cell(row, "rate"), format!("{port:?}"));
        let layer = cell(row, "link_layer").map(|l| match l.as_str() {
            "InfiniBand" => LinkLayer::Infiniband,
            "Ethernet" => LinkLayer::Ethernet,
            other => LinkLayer::Other(other.to_owned()),
        });
        check("link_layer", port.link_layer == layer, format!("{port:?}"));
        check(
            "rate_mbps",
            port.rate.is_none() || port.rate_mbps.is_some(),
            format!("{port:?}"),
        );
    }
    failures
}

#[test]
#[ignore = "needs ../shared corpora"]
fn rdma_devices_match_the_hwloc_index_tables_needs_shared_corpora() {
    let index = fs::read_to_string(corpus_dir().join("INDEX.md")).unwrap();
    let ib_tables = tables(&index, "ibdev");
    let pci_tables = tables(&index, "BDF");
    let scratch = hal_mock::scratch_dir("rdma-").unwrap();
    let mut failures = Vec::new();
    let mut compared = Vec::new();
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        if !root.join("sys/class/infiniband").is_dir() {
            continue;
        }
        let found = devices(&root);
        let targets: BTreeSet<String> = found
            .keys()
            .map(|name| {
                let link = root.join("sys/class/infiniband").join(name);
                fs::read_link(link).unwrap().display().to_string()
            })
            .collect();
        // The table of this dump: the same devices at the same link targets.
        let Some(rows) = ib_tables.iter().find(|rows| {
            rows.iter()
                .map(|r| r["link target"].clone())
                .collect::<BTreeSet<_>>()
                == targets
        }) else {
            failures.push(format!("{}: no INDEX table for {targets:?}", dump.name));
            continue;
        };
        failures.extend(compare(&dump.name, rows, &found));
        // The PCI row of each device's function lists its net, verbs and MAD children.
        for device in found.values() {
            let address = device.pci_address.expect("hwloc IB devices are on PCI");
            let Some(row) = pci_tables
                .iter()
                .flatten()
                .find(|r| PciAddress::parse(&r["BDF"]).ok() == Some(address))
            else {
                failures.push(format!("{} {address}: no PCI row", dump.name));
                continue;
            };
            let children: BTreeSet<&str> =
                row["children (net/infiniband/drm)"].split(", ").collect();
            let mut ours: BTreeSet<String> = device
                .char_devices
                .iter()
                .filter(|c| c.kind != RdmaCharKind::RdmaCm)
                .map(|c| {
                    let node = c.path.rsplit('/').next().unwrap();
                    let class = match c.kind {
                        RdmaCharKind::Verbs => "infiniband_verbs",
                        _ => "infiniband_mad",
                    };
                    format!("{class}/{node}")
                })
                .collect();
            ours.extend(device.netdevs.iter().map(|n| format!("net/{n}")));
            ours.insert(format!("infiniband/{}", device.name));
            let theirs: BTreeSet<String> = children.iter().map(|c| (*c).to_owned()).collect();
            if ours != theirs {
                failures.push(format!(
                    "{} {}: {ours:?} vs {theirs:?}",
                    dump.name, device.name
                ));
            }
        }
        compared.push(dump.name.clone());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        compared,
        ["40intel64-2g2n4c+pcilocality", "fakepcilocalities"],
        "the dumps with InfiniBand"
    );
}

/// Per OpenFabrics OS device of `lstopo --whole-io` (osdev_type 3): its PCI parent and NodeGUID.
fn lstopo_openfabrics(root: &Path) -> BTreeMap<String, (Option<PciAddress>, Option<String>)> {
    let output = Command::new("lstopo-no-graphics")
        .args(["--of", "xml", "--whole-io", "-"])
        .env("HWLOC_FSROOT", root)
        .env("HWLOC_COMPONENTS", "linux,stop")
        .output()
        .expect("lstopo-no-graphics (Debian hwloc)");
    let xml = String::from_utf8(output.stdout).unwrap();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&xml, options).unwrap();
    doc.descendants()
        .filter(|n| n.attribute("osdev_type") == Some("3"))
        .map(|n| {
            let parent = n
                .parent()
                .and_then(|p| p.attribute("pci_busid"))
                .and_then(|a| PciAddress::parse(a).ok());
            let guid = n
                .children()
                .find(|c| c.attribute("name") == Some("NodeGUID"))
                .and_then(|c| c.attribute("value"))
                .map(str::to_owned);
            (n.attribute("name").unwrap().to_owned(), (parent, guid))
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared corpora and Debian hwloc"]
fn rdma_devices_match_lstopo_whole_io_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("rdma-lstopo-").unwrap();
    let mut compared = 0;
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        if !root.join("sys/bus/pci/devices").is_dir() {
            continue;
        }
        let ours: BTreeMap<String, (Option<PciAddress>, Option<String>)> = devices(&root)
            .into_values()
            .map(|d| (d.name, (d.pci_address, d.node_guid)))
            .collect();
        assert_eq!(ours, lstopo_openfabrics(&root), "{}", dump.name);
        compared += usize::from(!ours.is_empty());
    }
    assert_eq!(compared, 2, "dumps with OpenFabrics devices");
}

#[test]
#[ignore = "needs ../shared corpora"]
fn rdma_devices_match_the_procfs_and_node_exporter_fixtures_needs_shared_corpora() {
    let dir = corpus_dir().join("../sysfs-other");
    let index = fs::read_to_string(dir.join("INDEX.md")).unwrap();
    let ib_tables = tables(&index, "ibdev");
    let scratch = hal_mock::scratch_dir("rdma-ttar-").unwrap();
    let mut compared = 0;
    for archive in ["prometheus-procfs/fixtures.ttar", "node_exporter/sys.ttar"] {
        let into = scratch.path().join(archive.replace('/', "-"));
        ttar::extract(&dir.join(archive), &into).unwrap();
        // procfs keeps its sysfs tree under fixtures/sys.
        let root = [into.join("fixtures"), into.clone()]
            .into_iter()
            .find(|r| r.join("sys/class/infiniband").is_dir())
            .unwrap_or_else(|| panic!("{archive}: no sys/class/infiniband"));
        let found = devices(&root);
        let names: BTreeSet<&String> = found.keys().collect();
        let Some(rows) = ib_tables
            .iter()
            .find(|rows| rows.iter().map(|r| &r["ibdev"]).collect::<BTreeSet<_>>() == names)
        else {
            panic!("{archive}: no INDEX table for {names:?}");
        };
        let failures = compare(archive, rows, &found);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // These trees hold the class directories themselves, not links into a PCI device.
        assert!(found.values().all(|d| d.pci_address.is_none()), "{found:?}");
        compared += 1;
    }
    assert_eq!(compared, 2);
}
