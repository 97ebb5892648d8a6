//! Conformance of the sysfs CPU topology with hwloc's `lstopo` on every Linux dump of hwloc's test suite.
//!
//! Needs `../shared/corpora/hwloc-linux`, `tar`/`bzip2` and `lstopo-no-graphics` (Debian `hwloc`):
//! ignored by default, run by `.ci/run` with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use backends::{SysfsCpuTopology, SysfsRoot};
use hal::{CpuSet, CpuTopology};
use stack_tests::hwloc::{self, Grouping, hal_groupings, parse_oracle, run_lstopo};

/// Where hwloc deliberately reports something other than the kernel's raw view, per dump and grouping,
/// with the reason. The test checks these differences still exist, so the list cannot go stale.
fn exceptions() -> BTreeMap<(&'static str, Grouping), &'static str> {
    // hwloc's test for insertion errors: its descriptor says "4th socket conflicts, ignored" and "3rd L3
    // conflicts, ignored" (HWLOC_SHOW_ERRORS=none hides the messages), so lstopo drops package 3 and
    // one L3. In the dump's sysfs those masks are self-consistent (each equals one node's cpulist,
    // e.g. package 3 = L3 = node3 = 3,7,...,39), so the HAL keeps what the kernel says.
    const CONFLICTS: &str = "40intel64-4n10c+pci-conflicts";
    let why = "hwloc drops objects that conflict on insertion; the kernel's masks are consistent";
    BTreeMap::from([
        ((CONFLICTS, Grouping::Package), why),
        ((CONFLICTS, Grouping::L3), why),
    ])
}

#[test]
#[ignore = "needs ../shared corpora and Debian hwloc"]
fn cpu_groupings_match_lstopo_on_every_hwloc_dump_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("hwloc-corpus-").unwrap();
    let exceptions = exceptions();
    let mut used = Vec::new();
    let mut failures = Vec::new();
    let dumps = hwloc::dumps().unwrap();
    assert!(
        dumps.len() >= 30,
        "expected the whole hwloc corpus, found {} dumps",
        dumps.len()
    );
    for dump in &dumps {
        let root = dump.extract(scratch.path()).unwrap();
        let inventory = SysfsCpuTopology::new(SysfsRoot::new(&root))
            .cpu_inventory()
            .unwrap();
        let oracle = parse_oracle(&run_lstopo(&root, &dump.env()).unwrap()).unwrap();
        let online = inventory.online();
        let common: CpuSet = online.intersection(&oracle.pus);
        if common != oracle.pus || common != online {
            failures.push(format!(
                "{}: online CPUs differ: hal {online}, lstopo {}",
                dump.name, oracle.pus
            ));
        }
        let ours = hal_groupings(&inventory, &common);
        let kernel_has_numa = root.join("sys/devices/system/node").is_dir();
        for (grouping, theirs) in &oracle.groupings {
            if *grouping == Grouping::NumaNode && !kernel_has_numa {
                // A kernel without NUMA support has no node/ directory: hwloc invents one node holding
                // every CPU, while the kernel says nothing, so the HAL reports no node (null).
                let theirs_one_node = theirs.len() == 1;
                let ours_none = inventory.cpus.iter().all(|c| c.numa_node.is_none())
                    && inventory.numa_nodes.is_empty();
                if !(theirs_one_node && ours_none) {
                    failures.push(format!("{}: no node/ directory, expected no NUMA nodes from hal and one from lstopo", dump.name));
                }
                continue;
            }
            let theirs: hwloc::Partition = theirs
                .iter()
                .map(|s| s.intersection(&common))
                .filter(|s| !s.is_empty())
                .collect();
            let mine = ours.get(grouping).cloned().unwrap_or_default();
            let same = mine == theirs;
            match (exceptions.get(&(dump.name.as_str(), *grouping)), same) {
                (None, true) => {}
                (None, false) => failures.push(format!(
                    "{} {grouping:?}: hal {:?} lstopo {:?}",
                    dump.name,
                    mine.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    theirs.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                )),
                (Some(_), true) => failures.push(format!(
                    "{} {grouping:?}: listed as an exception but now agrees",
                    dump.name
                )),
                (Some(_), false) => used.push((dump.name.clone(), *grouping)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(used.len(), exceptions.len(), "every exception is exercised");
}
