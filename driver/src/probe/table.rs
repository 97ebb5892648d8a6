//! The table form: one line per package, NUMA node and L3 group, like a compact `lstopo`.

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
    if !report.errors.is_empty() {
        let _ = writeln!(out, "errors ({}):", report.errors.len());
        for e in &report.errors {
            let _ = writeln!(out, "  {}", e.error);
        }
    }
    out
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn render_cpu(out: &mut String, report: &CpuReport) {
    let inventory = CpuInventory {
        cpus: report.cpus.clone(),
        numa_nodes: report.numa_nodes.clone(),
        errors: vec![],
    };
    let online = inventory.online();
    let cores = inventory.cores();
    let l3s = inventory.l3_groups();
    let packages = inventory.packages();
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
    if kinds.len() > 1 || kinds.iter().any(|k| *k != CoreType::Standard) {
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
    let mut groups: Vec<(Option<u32>, CpuSet)> =
        packages.into_iter().map(|(p, s)| (Some(p), s)).collect();
    let unplaced = online.difference(
        &groups
            .iter()
            .fold(CpuSet::new(), |acc, (_, s)| acc.union(s)),
    );
    if !unplaced.is_empty() {
        groups.push((None, unplaced));
    }
    for (package, package_cpus) in groups {
        let cores_here = cores
            .values()
            .filter(|c| c.is_subset(&package_cpus))
            .count();
        let name = package.map_or_else(|| "package ?".to_owned(), |p| format!("package {p}"));
        let _ = writeln!(
            out,
            "{name}: cpus {package_cpus} ({}, {})",
            count(cores_here, "core"),
            count(package_cpus.len(), "thread")
        );
        let mut node_parts: Vec<(String, CpuSet)> = inventory
            .numa_nodes
            .iter()
            .map(|n| {
                (
                    numa_line(&inventory, n.id.0),
                    n.cpus.intersection(&package_cpus).intersection(&online),
                )
            })
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if node_parts.is_empty() {
            node_parts.push((String::new(), package_cpus.clone()));
        }
        for (line, node_cpus) in node_parts {
            let indent = if line.is_empty() { "  " } else { "    " };
            if !line.is_empty() {
                let _ = writeln!(out, "  {line}");
            }
            for (l3, l3_cpus) in &l3s {
                let part = l3_cpus.intersection(&node_cpus);
                if !part.is_empty() {
                    let n = cores.values().filter(|c| c.is_subset(&part)).count();
                    let _ = writeln!(out, "{indent}l3 {l3}: cpus {part} ({})", count(n, "core"));
                }
            }
        }
    }
    for node in inventory
        .numa_nodes
        .iter()
        .filter(|n| n.cpus.intersection(&online).is_empty())
    {
        let _ = writeln!(out, "{} (no online CPUs)", numa_line(&inventory, node.id.0));
    }
}

fn numa_line(inventory: &CpuInventory, id: u32) -> String {
    let Some(node) = inventory.numa_nodes.iter().find(|n| n.id.0 == id) else {
        return format!("numa {id}");
    };
    let mut line = format!(
        "numa {id}: cpus {}",
        if node.cpus.is_empty() {
            "none".to_owned()
        } else {
            node.cpus.to_string()
        }
    );
    if let Some(m) = node.memory_bytes {
        let _ = write!(line, ", {}", gib(m));
    }
    if !node.distances.is_empty() {
        let row: Vec<String> = node.distances.iter().map(|d| d.to_string()).collect();
        let _ = write!(line, ", distances {}", row.join(" "));
    }
    line
}

fn core_type_name(kind: CoreType) -> &'static str {
    match kind {
        CoreType::Standard => "standard",
        CoreType::Performance => "performance",
        CoreType::Efficiency => "efficiency",
    }
}
