//! The table form: one line per package, NUMA node and L3 group, like a compact `lstopo`.
//!
//! Levels nest by size, bigger groups outside: package > NUMA node > L3 on most machines, NUMA node >
//! package on machines whose nodes hold several sockets, package > NUMA node > L3 with sub-NUMA
//! clustering. A group that straddles its parent is shown with the part inside it and marked `part of`.

use std::collections::BTreeSet;
use std::fmt::Write;

use hal::{CoreType, CpuInventory, CpuSet};

use super::{CpuReport, Report};

/// Renders the report for people.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    if let Some(cpu) = &report.cpu {
        render_cpu(&mut out, cpu);
    }
    if let Some(pci) = &report.pci {
        super::devices_table::render_pci(&mut out, pci, report.sriov.as_deref());
    } else if let Some(sriov) = &report.sriov {
        for state in sriov {
            let vfs: Vec<String> = state.vfs.iter().map(|v| v.address.to_string()).collect();
            let _ = writeln!(
                out,
                "sriov {}: {}/{} VFs {}",
                state.pf,
                state.num_vfs,
                state.total_vfs,
                vfs.join(" ")
            );
        }
    }
    if let Some(rdma) = &report.rdma {
        super::devices_table::render_rdma(&mut out, rdma);
    }
    if let Some(gpus) = &report.gpus {
        super::devices_table::render_gpus(&mut out, gpus);
    }
    if let Some(topology) = &report.topology {
        topology.render(&mut out);
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "errors ({}):", report.errors.len());
        for e in &report.errors {
            let _ = writeln!(out, "  {}", allocator::text::field_safe(&e.error));
        }
    }
    out
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// One grouping level: its groups as (label, CPUs, extra text).
struct Level {
    groups: Vec<(String, CpuSet, String)>,
}

impl Level {
    fn mean_size(&self) -> usize {
        self.groups.iter().map(|g| g.1.len()).sum::<usize>() / self.groups.len().max(1)
    }
}

fn render_cpu(out: &mut String, report: &CpuReport) {
    let inventory = CpuInventory {
        cpus: report.cpus.clone(),
        numa_nodes: report.numa_nodes.clone(),
        errors: vec![],
    };
    let online = inventory.online();
    let cores: Vec<CpuSet> = inventory.cores().into_values().collect();
    let packages = inventory.packages();
    let l3s = inventory.l3_groups();
    let _ = writeln!(
        out,
        "cpus: {} ({} online), {}, {}, {}, {}",
        inventory.cpus.len(),
        online.len(),
        count(packages.len(), "package"),
        count(cores.len(), "core"),
        count(inventory.numa_nodes.len(), "NUMA node"),
        count(l3s.len(), "L3 cache"),
    );
    let offline: CpuSet = inventory
        .cpus
        .iter()
        .filter(|c| !c.online)
        .map(|c| c.id)
        .collect();
    if !offline.is_empty() {
        let _ = writeln!(out, "offline: {offline}");
    }
    let kinds: BTreeSet<CoreType> = inventory
        .cpus
        .iter()
        .filter(|c| c.online)
        .map(|c| c.core_type)
        .collect();
    if kinds.iter().any(|k| *k != CoreType::Standard) {
        for kind in kinds {
            let set: CpuSet = inventory
                .cpus
                .iter()
                .filter(|c| c.online && c.core_type == kind)
                .map(|c| c.id)
                .collect();
            let _ = writeln!(out, "core type {}: {set}", core_type_name(kind));
        }
    }

    let mut levels = vec![
        Level {
            groups: packages
                .iter()
                .map(|(id, s)| (format!("package {id}"), s.clone(), String::new()))
                .collect(),
        },
        Level {
            groups: inventory
                .numa_nodes
                .iter()
                .filter(|n| !n.cpus.intersection(&online).is_empty())
                .map(|n| {
                    (
                        format!("numa {}", n.id),
                        n.cpus.intersection(&online),
                        numa_extra(n),
                    )
                })
                .collect(),
        },
        Level {
            groups: l3s
                .iter()
                .map(|(id, s)| (format!("l3 {id}"), s.clone(), String::new()))
                .collect(),
        },
    ];
    levels.retain(|l| !l.groups.is_empty());
    // Stable: equal sizes keep package > numa > l3.
    levels.sort_by_key(|l| std::cmp::Reverse(l.mean_size()));
    if levels.is_empty() {
        // Nothing but cores is known (PS3, some VMs): one line for the machine.
        levels.push(Level {
            groups: vec![("machine".to_owned(), online.clone(), String::new())],
        });
    }
    render_level(out, &levels, &cores, &online, 0);
    let placed = levels.first().map_or_else(CpuSet::new, |l| {
        l.groups
            .iter()
            .fold(CpuSet::new(), |acc, g| acc.union(&g.1))
    });
    let unplaced = online.difference(&placed);
    if !unplaced.is_empty() {
        let _ = writeln!(out, "not in any group: cpus {unplaced}");
    }
    for node in inventory
        .numa_nodes
        .iter()
        .filter(|n| n.cpus.intersection(&online).is_empty())
    {
        let _ = writeln!(out, "numa {}: no online cpus{}", node.id, numa_extra(node));
    }
}

fn render_level(
    out: &mut String,
    levels: &[Level],
    cores: &[CpuSet],
    parent: &CpuSet,
    depth: usize,
) {
    let Some(level) = levels.get(depth) else {
        return;
    };
    for (label, set, extra) in &level.groups {
        let part = set.intersection(parent);
        if part.is_empty() {
            continue;
        }
        let core_count = cores
            .iter()
            .filter(|c| !c.intersection(&part).is_empty())
            .count();
        let whole = if part == *set {
            String::new()
        } else {
            format!(", part of {set}")
        };
        let _ = writeln!(
            out,
            "{:indent$}{label}: cpus {part} ({}, {}{whole}){extra}",
            "",
            count(core_count, "core"),
            count(part.len(), "thread"),
            indent = depth * 2
        );
        render_level(out, levels, cores, &part, depth + 1);
    }
}

fn numa_extra(node: &hal::NumaNodeInfo) -> String {
    let mut extra = String::new();
    if let Some(bytes) = node.memory_bytes {
        let _ = write!(extra, ", {:.1} GiB", bytes as f64 / (1u64 << 30) as f64);
    }
    if !node.distances.is_empty() {
        let row: Vec<String> = node.distances.iter().map(|d| d.to_string()).collect();
        let _ = write!(extra, ", distances {}", row.join(" "));
    }
    extra
}

fn core_type_name(kind: CoreType) -> &'static str {
    match kind {
        CoreType::Standard => "standard",
        CoreType::Performance => "performance",
        CoreType::Efficiency => "efficiency",
    }
}
