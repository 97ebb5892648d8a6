//! NUMA nodes from `sys/devices/system/node/`.

use std::path::Path;

use hal::cpuset::{CpuSet, MAX_CPUS};
use hal::numa::MAX_NUMA_NODES;
use hal::{NumaNode, NumaNodeInfo, ParseError};

use super::attr::ErrorLog;
use super::tree::Tree;

/// The bound on the machine's CPU ids: one above the highest of `sys/devices/system/cpu/possible`, or
/// [`MAX_CPUS`] when that cannot be read. CPU sets in device and node files (`local_cpulist`,
/// `nodeN/cpulist`) holding a CPU at or above it are error entries: no such CPU can exist.
pub(crate) fn possible_cpu_limit(tree: &Tree) -> u32 {
    tree.parse_optional(
        &tree.join("sys/devices/system/cpu/possible"),
        CpuSet::from_cpulist,
    )
    .ok()
    .flatten()
    .and_then(|possible| possible.last())
    .map_or(MAX_CPUS, |last| last + 1)
}

/// Reads every `nodeN` directory. A kernel without NUMA support has no `node/` directory: that is an
/// empty list, not an error. CPUs at or above `cpu_limit` ([`possible_cpu_limit`]) are errors.
pub(crate) fn read_numa_nodes(
    tree: &Tree,
    node_dir: &Path,
    cpu_limit: u32,
    errors: &mut ErrorLog,
) -> Vec<NumaNodeInfo> {
    let ids = match tree.numbered_entries(node_dir, "node", MAX_NUMA_NODES) {
        Ok(ids) => ids,
        Err(e) if e.kind() == hal::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.0.push((&e).into());
            return Vec::new();
        }
    };
    ids.into_iter()
        .map(|id| {
            let dir = node_dir.join(format!("node{id}"));
            let list = |t: &str| CpuSet::from_cpulist_below(t, cpu_limit);
            let mask = |t: &str| CpuSet::from_hex_mask_below(t, cpu_limit);
            let cpus = match errors.keep(tree.parse_optional(&dir.join("cpulist"), list)) {
                Some(cpus) => Some(cpus),
                None => errors.keep(tree.parse_optional(&dir.join("cpumap"), mask)),
            };
            let memory_bytes =
                errors.keep(tree.parse_scalar(&dir.join("meminfo"), parse_mem_total));
            let distances = errors
                .keep(tree.parse_optional(&dir.join("distance"), parse_distances))
                .unwrap_or_default();
            NumaNodeInfo {
                id: NumaNode(id),
                cpus: cpus.unwrap_or_default(),
                memory_bytes,
                distances,
            }
        })
        .collect()
}

/// `Node 0 MemTotal:       263841836 kB` → bytes.
/// Public so the `fuzz/` targets can reach it.
pub fn parse_mem_total(meminfo: &str) -> Result<u64, ParseError> {
    for line in meminfo.lines() {
        let mut words = line.split_whitespace();
        let (Some("Node"), Some(_), Some("MemTotal:"), Some(value), unit) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            continue;
        };
        let kib: u64 = value
            .parse()
            .map_err(|_| ParseError::new("meminfo MemTotal", line, "not a decimal number"))?;
        if unit.is_some_and(|u| u != "kB") {
            return Err(ParseError::new("meminfo MemTotal", line, "unit is not kB"));
        }
        return kib
            .checked_mul(1024)
            .ok_or_else(|| ParseError::new("meminfo MemTotal", line, "too large"));
    }
    Err(ParseError::new(
        "meminfo",
        meminfo.lines().next().unwrap_or(""),
        "no \"Node N MemTotal:\" line",
    ))
}

/// A SLIT row: `10 21 21`.
/// Public so the `fuzz/` targets can reach it.
pub fn parse_distances(row: &str) -> Result<Vec<u32>, ParseError> {
    let distances = row
        .split_whitespace()
        .map(|d| {
            d.parse::<u32>()
                .map_err(|_| ParseError::new("distance row", row, "entries must be decimal"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if distances.len() > MAX_NUMA_NODES as usize {
        return Err(ParseError::new(
            "distance row",
            row,
            "more entries than nodes can exist",
        ));
    }
    Ok(distances)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn meminfo_total() {
        let text = "Node 0 MemTotal:       263841836 kB\nNode 0 MemFree:        1 kB\n";
        assert_eq!(parse_mem_total(text).unwrap(), 263841836 * 1024);
        assert!(parse_mem_total("Node 0 MemFree: 1 kB").is_err());
        assert!(parse_mem_total("Node 0 MemTotal: x kB").is_err());
        assert!(parse_mem_total("Node 0 MemTotal: 99999999999999999999 kB").is_err());
    }

    #[test]
    fn distance_rows() {
        assert_eq!(parse_distances("10 21 21").unwrap(), [10, 21, 21]);
        assert_eq!(parse_distances("").unwrap(), Vec::<u32>::new());
        assert!(parse_distances("10 x").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,60}") {
            let _ = parse_mem_total(&text);
            let _ = parse_distances(&text);
        }
    }
}
