//! [`SysfsCpuTopology`]: the [`CpuTopology`] of `sys/devices/system/cpu` and `sys/devices/system/node`.
//!
//! Works on every kernel in hwloc's Linux test corpus: masks-only kernels (no `*_list`), no
//! `cpu/online`, offline CPUs without `topology/`, no `cache/`, no `node/`, sparse node ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hal::cpuset::{CpuSet, MAX_CPUS};
use hal::{CoreType, CpuInventory, CpuTopology, LogicalCpu, NumaNode, ParseError, Result};

use super::SysfsRoot;
use super::attr::{
    ErrorLog, numbered_entries, parse_optional, parse_topology_id, parse_u32, read_optional,
};
use super::numa::read_numa_nodes;

/// x86's `BAD_APICID`: the `cluster_id` of a CPU whose L2 cluster the kernel does not know (VMs).
const X86_BAD_APICID: u32 = 0xffff;

/// CPU topology read from sysfs under a root directory.
#[derive(Debug, Clone, Default)]
pub struct SysfsCpuTopology {
    root: SysfsRoot,
}

impl SysfsCpuTopology {
    /// Reads the machine under `root` (the directory holding `sys/`).
    pub fn new(root: SysfsRoot) -> Self {
        SysfsCpuTopology { root }
    }
}

impl CpuTopology for SysfsCpuTopology {
    fn cpu_inventory(&self) -> Result<CpuInventory> {
        discover(&self.root)
    }
}

/// What the cache directories say about a CPU's L3.
struct L3 {
    id: Option<u32>,
    shared: Option<CpuSet>,
}

fn discover(root: &SysfsRoot) -> Result<CpuInventory> {
    let cpu_dir = root.join("sys/devices/system/cpu");
    let ids = numbered_entries(&cpu_dir, "cpu", MAX_CPUS)?;
    let mut errors = ErrorLog::default();

    let online_file = cpu_dir.join("online");
    let global_online = errors.keep(parse_optional(&online_file, CpuSet::from_cpulist));

    let mut cpus = Vec::with_capacity(ids.len());
    let mut l3s = Vec::with_capacity(ids.len());
    for &id in &ids {
        let dir = cpu_dir.join(format!("cpu{id}"));
        let online = match &global_online {
            Some(set) => set.contains(id),
            None => errors
                .keep(parse_optional(&dir.join("online"), parse_u32))
                .is_none_or(|v| v != 0),
        };
        let topology = dir.join("topology");
        let id_of = |errors: &mut ErrorLog, name: &str| {
            errors
                .keep(parse_optional(&topology.join(name), parse_topology_id))
                .flatten()
        };
        let package = id_of(&mut errors, "physical_package_id");
        let die = id_of(&mut errors, "die_id");
        // x86 reports an unknown cluster as BAD_APICID (65535); arm64 as -1.
        let cluster = id_of(&mut errors, "cluster_id").filter(|&c| c != X86_BAD_APICID);
        let core = id_of(&mut errors, "core_id");
        let siblings = read_cpuset(
            &mut errors,
            &topology,
            &["core_cpus_list", "thread_siblings_list"],
            &["core_cpus", "thread_siblings"],
        );
        l3s.push(read_l3(&mut errors, &dir.join("cache")));
        cpus.push(LogicalCpu {
            id,
            online,
            package,
            die,
            cluster,
            core,
            numa_node: None,
            l3: None,
            core_type: CoreType::Standard,
            siblings,
        });
    }

    assign_l3(&mut cpus, &l3s);
    assign_core_types(root, &cpu_dir, &mut cpus, &mut errors);

    let node_dir = root.join("sys/devices/system/node");
    let numa_nodes = read_numa_nodes(&node_dir, &mut errors);
    let mut assigned = CpuSet::new();
    for node in &numa_nodes {
        let overlap = node.cpus.intersection(&assigned);
        if !overlap.is_empty() {
            errors.note(
                &node_dir.join(format!("node{}", node.id)).join("cpulist"),
                format!("CPUs {overlap} are also in a lower node; they stay in the lower node"),
            );
        }
        for cpu_id in node.cpus.difference(&assigned).iter() {
            if let Ok(index) = cpus.binary_search_by_key(&cpu_id, |c| c.id) {
                if let Some(cpu) = cpus.get_mut(index) {
                    cpu.numa_node = Some(NumaNode(node.id.0));
                }
            }
        }
        assigned = assigned.union(&node.cpus);
    }
    for node in &numa_nodes {
        if !node.distances.is_empty() && node.distances.len() != numa_nodes.len() {
            errors.note(
                &node_dir.join(format!("node{}", node.id)).join("distance"),
                format!(
                    "{} distances for {} nodes",
                    node.distances.len(),
                    numa_nodes.len()
                ),
            );
        }
    }

    Ok(CpuInventory {
        cpus,
        numa_nodes,
        errors: errors.0,
    })
}

/// Reads the first list file that exists, else the first mask file that exists.
fn read_cpuset(
    errors: &mut ErrorLog,
    dir: &Path,
    lists: &[&str],
    masks: &[&str],
) -> Option<CpuSet> {
    for name in lists {
        if let Some(set) = errors.keep(parse_optional(&dir.join(name), CpuSet::from_cpulist)) {
            return Some(set);
        }
    }
    for name in masks {
        if let Some(set) = errors.keep(parse_optional(&dir.join(name), CpuSet::from_hex_mask)) {
            return Some(set);
        }
    }
    None
}

/// Finds the level-3 data or unified cache among `cache/index*`.
fn read_l3(errors: &mut ErrorLog, cache_dir: &Path) -> L3 {
    let none = L3 {
        id: None,
        shared: None,
    };
    let Ok(indices) = numbered_entries(cache_dir, "index", 64) else {
        return none;
    };
    for index in indices {
        let dir = cache_dir.join(format!("index{index}"));
        if errors.keep(parse_optional(&dir.join("level"), parse_u32)) != Some(3) {
            continue;
        }
        if errors
            .keep(read_optional(&dir.join("type")))
            .is_some_and(|t| t == "Instruction")
        {
            continue;
        }
        let id = errors.keep(parse_optional(&dir.join("id"), parse_u32));
        let shared = read_cpuset(errors, &dir, &["shared_cpu_list"], &["shared_cpu_map"]);
        return L3 { id, shared };
    }
    none
}

/// Uses the kernel's cache `id` when every CPU with an L3 has one; otherwise numbers the distinct
/// `shared_cpu_list` sets in order of their lowest CPU (older kernels have no `id`).
fn assign_l3(cpus: &mut [LogicalCpu], l3s: &[L3]) {
    let with_l3 = l3s.iter().filter(|l| l.id.is_some() || l.shared.is_some());
    if with_l3.clone().all(|l| l.id.is_some()) {
        for (cpu, l3) in cpus.iter_mut().zip(l3s) {
            cpu.l3 = l3.id;
        }
        return;
    }
    let mut by_set: BTreeMap<u32, (CpuSet, u32)> = BTreeMap::new();
    for l3 in with_l3 {
        if let Some(shared) = &l3.shared {
            let first = shared.first().unwrap_or(0);
            by_set.entry(first).or_insert_with(|| (shared.clone(), 0));
        }
    }
    for (index, entry) in by_set.values_mut().enumerate() {
        entry.1 = index as u32;
    }
    for (cpu, l3) in cpus.iter_mut().zip(l3s) {
        cpu.l3 = l3
            .shared
            .as_ref()
            .and_then(|s| by_set.get(&s.first().unwrap_or(0)))
            .map(|(_, index)| *index);
    }
}

/// Intel hybrid PMU lists first, then arm `cpu_capacity`, then arm MIDR part numbers.
fn assign_core_types(
    root: &SysfsRoot,
    cpu_dir: &Path,
    cpus: &mut [LogicalCpu],
    errors: &mut ErrorLog,
) {
    let p_cores = errors.keep(parse_optional(
        &root.join("sys/devices/cpu_core/cpus"),
        CpuSet::from_cpulist,
    ));
    let e_cores = errors.keep(parse_optional(
        &root.join("sys/devices/cpu_atom/cpus"),
        CpuSet::from_cpulist,
    ));
    if p_cores.is_some() || e_cores.is_some() {
        let (p_cores, e_cores) = (p_cores.unwrap_or_default(), e_cores.unwrap_or_default());
        for cpu in cpus.iter_mut() {
            if p_cores.contains(cpu.id) {
                cpu.core_type = CoreType::Performance;
            } else if e_cores.contains(cpu.id) {
                cpu.core_type = CoreType::Efficiency;
            }
        }
        return;
    }
    let per_cpu = |errors: &mut ErrorLog,
                   relative: &str,
                   parse: fn(&str) -> Result<u64, ParseError>|
     -> Vec<Option<u64>> {
        cpus.iter()
            .map(|cpu| {
                let path: PathBuf = cpu_dir.join(format!("cpu{}", cpu.id)).join(relative);
                errors.keep(parse_optional(&path, parse))
            })
            .collect()
    };
    let capacities = per_cpu(errors, "cpu_capacity", |t| {
        t.parse()
            .map_err(|_| ParseError::new("cpu_capacity", t, "not a decimal integer"))
    });
    if let Some(kinds) = classify_by_capacity(&capacities) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
        return;
    }
    // Only look for MIDR registers on machines that have them (arm64).
    if !cpus.first().is_some_and(|c| {
        cpu_dir
            .join(format!("cpu{}/regs/identification", c.id))
            .is_dir()
    }) {
        return;
    }
    let midrs = per_cpu(errors, "regs/identification/midr_el1", parse_hex_u64);
    if let Some(kinds) = classify_by_midr(&midrs) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
    }
}

fn parse_hex_u64(text: &str) -> Result<u64, ParseError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| ParseError::new("hex register", text, "not hexadecimal"))
}

/// big.LITTLE by `cpu_capacity`: the lowest capacity is "efficiency", every higher one "performance"
/// (so the middle cluster of a tri-cluster DynamIQ part counts as big). `None` when all are equal or
/// none is known.
fn classify_by_capacity(capacities: &[Option<u64>]) -> Option<Vec<CoreType>> {
    let known = capacities.iter().flatten();
    let (min, max) = (known.clone().min()?, known.max()?);
    if min == max {
        return None;
    }
    Some(
        capacities
            .iter()
            .map(|c| match c {
                Some(c) if c == min => CoreType::Efficiency,
                Some(_) => CoreType::Performance,
                None => CoreType::Standard,
            })
            .collect(),
    )
}

/// Arm part numbers (MIDR bits 15:4, implementer 0x41) of in-order "LITTLE" cores:
/// Cortex-A5, A7, A53, A55, A510, A520.
const LITTLE_ARM_PARTS: [u64; 6] = [0xc05, 0xc07, 0xd03, 0xd05, 0xd46, 0xd80];

/// big.LITTLE by MIDR, used only when the machine mixes part numbers.
fn classify_by_midr(midrs: &[Option<u64>]) -> Option<Vec<CoreType>> {
    let part = |midr: u64| (midr >> 24 & 0xff, midr >> 4 & 0xfff);
    let mut parts = midrs.iter().flatten().map(|&m| part(m));
    let first = parts.next()?;
    if parts.all(|p| p == first) {
        return None;
    }
    Some(
        midrs
            .iter()
            .map(|m| match m.map(part) {
                Some((0x41, part)) if LITTLE_ARM_PARTS.contains(&part) => CoreType::Efficiency,
                Some(_) => CoreType::Performance,
                None => CoreType::Standard,
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, relative: &str, contents: &str) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    #[test]
    fn capacity_and_midr_classification() {
        let kinds = classify_by_capacity(&[Some(446), Some(446), Some(1024), Some(871)]).unwrap();
        assert_eq!(
            kinds,
            [
                CoreType::Efficiency,
                CoreType::Efficiency,
                CoreType::Performance,
                CoreType::Performance
            ]
        );
        assert_eq!(classify_by_capacity(&[Some(1024), Some(1024)]), None);
        assert_eq!(classify_by_capacity(&[None, None]), None);
        let a55 = 0x412f_d050;
        let a78 = 0x414f_d410;
        let kinds = classify_by_midr(&[Some(a55), Some(a78)]).unwrap();
        assert_eq!(kinds, [CoreType::Efficiency, CoreType::Performance]);
        assert_eq!(
            classify_by_midr(&[Some(a78), Some(a78 | 1)]),
            None,
            "same part, other revision"
        );
    }

    #[test]
    fn masks_only_kernel_without_online_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for cpu in 0..4 {
            let base = format!("sys/devices/system/cpu/cpu{cpu}/topology");
            write(
                root,
                &format!("{base}/physical_package_id"),
                &format!("{}\n", cpu / 2),
            );
            write(root, &format!("{base}/core_id"), "0\n");
            write(
                root,
                &format!("{base}/thread_siblings"),
                if cpu < 2 { "00000003\n" } else { "0000000c\n" },
            );
        }
        write(root, "sys/devices/system/cpu/cpu3/online", "0\n");
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert_eq!(inv.online().to_string(), "0-2");
        assert_eq!(inv.cpus[2].siblings.as_ref().unwrap().to_string(), "2-3");
        assert_eq!(
            inv.cores()
                .values()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ["0-1", "2"]
        );
        assert!(inv.numa_nodes.is_empty());
        assert!(
            inv.cpus
                .iter()
                .all(|c| c.numa_node.is_none() && c.l3.is_none())
        );
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
    }

    #[test]
    fn bad_files_degrade_only_what_depends_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/devices/system/cpu/online", "0-1\n");
        write(
            root,
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "zero\n",
        );
        write(root, "sys/devices/system/cpu/cpu0/topology/core_id", "0\n");
        write(
            root,
            "sys/devices/system/cpu/cpu1/topology/physical_package_id",
            "0\n",
        );
        write(root, "sys/devices/system/node/node0/cpulist", "0-1\n");
        write(root, "sys/devices/system/node/node0/distance", "10 oops\n");
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert_eq!(inv.cpus[0].package, None);
        assert_eq!(inv.cpus[0].core, Some(0));
        assert_eq!(inv.cpus[1].package, Some(0));
        assert_eq!(inv.cpus[1].numa_node, Some(NumaNode(0)));
        let paths: Vec<&str> = inv.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{:?}", inv.errors);
        assert!(paths[0].ends_with("cpu0/topology/physical_package_id"));
        assert!(paths[1].ends_with("node0/distance"));
        assert!(
            inv.errors[0].error.contains("invalid topology id \"zero\""),
            "{}",
            inv.errors[0].error
        );
    }

    #[test]
    fn missing_cpu_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = SysfsCpuTopology::new(SysfsRoot::new(dir.path()))
            .cpu_inventory()
            .unwrap_err();
        assert_eq!(err.kind(), hal::ErrorKind::NotFound);
        assert!(err.to_string().contains("sys/devices/system/cpu"), "{err}");
    }

    #[test]
    fn overlapping_nodes_keep_the_lower_node_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/devices/system/cpu/cpu0/topology/core_id", "0\n");
        write(root, "sys/devices/system/cpu/cpu1/topology/core_id", "1\n");
        write(root, "sys/devices/system/node/node0/cpumap", "3\n");
        write(root, "sys/devices/system/node/node1/cpumap", "3\n");
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert!(inv.cpus.iter().all(|c| c.numa_node == Some(NumaNode(0))));
        assert_eq!(inv.errors.len(), 1);
        assert!(
            inv.errors[0]
                .error
                .contains("CPUs 0-1 are also in a lower node")
        );
    }

    #[test]
    fn l3_falls_back_to_shared_sets_without_ids() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for cpu in 0..4 {
            let base = format!("sys/devices/system/cpu/cpu{cpu}/cache/index3");
            write(root, &format!("{base}/level"), "3\n");
            write(root, &format!("{base}/type"), "Unified\n");
            write(
                root,
                &format!("{base}/shared_cpu_map"),
                if cpu % 2 == 0 { "5\n" } else { "a\n" },
            );
        }
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        let l3: Vec<Option<u32>> = inv.cpus.iter().map(|c| c.l3).collect();
        assert_eq!(l3, [Some(0), Some(1), Some(0), Some(1)]);
    }
}
