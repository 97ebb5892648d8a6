//! [`SysfsCpuTopology`]: the [`CpuTopology`] of `sys/devices/system/cpu` and `sys/devices/system/node`.
//!
//! Works on every kernel in hwloc's Linux test corpus: masks-only kernels (no `*_list`), no
//! `cpu/online`, offline CPUs without `topology/`, no `cache/`, no `node/`, sparse node ids.
//!
//! Groupings (which CPUs share a package, a core, an L3) come from the kernel's CPU masks, as hwloc
//! builds them; ids are the kernel's labels for those groups, kept where they agree with the masks (see
//! `cpu_groups`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use hal::cpuset::{CpuSet, MAX_CPUS};
use hal::{CoreType, CpuInventory, CpuTopology, LogicalCpu, NumaNode, Result};

use super::SysfsRoot;
use super::attr::{
    ErrorLog, entry_names, numbered_entries, parse_optional, parse_scalar, parse_topology_id,
    parse_u32, read_optional,
};
use super::core_type::assign_core_types;
use super::cpu_groups::{RawCpu, assign_l3, label_groups};
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

fn discover(root: &SysfsRoot) -> Result<CpuInventory> {
    let cpu_dir = root.join("sys/devices/system/cpu");
    let ids = numbered_entries(&cpu_dir, "cpu", MAX_CPUS)?;
    let mut errors = ErrorLog::default();
    let global_online = errors.keep(parse_optional(
        &cpu_dir.join("online"),
        CpuSet::from_cpulist,
    ));

    let raw = read_cpus(&cpu_dir, &ids, global_online.as_ref(), &mut errors);

    let packages = label_groups(
        &mut errors,
        &cpu_dir,
        "physical_package_id",
        &raw,
        |c| c.package_cpus.as_ref(),
        |c| c.package,
        |_| (),
    );
    let cores = label_groups(
        &mut errors,
        &cpu_dir,
        "core_id",
        &raw,
        |c| c.siblings.as_ref(),
        |c| c.core,
        |c| {
            let index = raw.iter().position(|r| r.id == c.id).unwrap_or(0);
            (packages.get(index).copied().flatten(), c.die)
        },
    );
    let l3 = assign_l3(&raw);
    let mut cpus: Vec<LogicalCpu> = raw
        .into_iter()
        .enumerate()
        .map(|(i, c)| LogicalCpu {
            id: c.id,
            online: c.online,
            package: packages.get(i).copied().flatten(),
            die: c.die,
            cluster: c.cluster,
            core: cores.get(i).copied().flatten(),
            numa_node: None,
            l3: l3.get(i).copied().flatten(),
            core_type: CoreType::Standard,
            siblings: c.siblings,
        })
        .collect();
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
            if let Ok(index) = cpus.binary_search_by_key(&cpu_id, |c| c.id)
                && let Some(cpu) = cpus.get_mut(index)
            {
                cpu.numa_node = Some(NumaNode(node.id.0));
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

/// Reads one `cpuN` directory.
/// Machines with at least this many CPUs are read by several threads.
const PARALLEL_FROM_CPUS: usize = 128;

/// Reads every `cpuN` directory, in order. Big machines are split into contiguous chunks read by
/// scoped threads (each with its own error log and known sets, merged in CPU order, so the result is
/// the same as one thread's): per-file cost dominates, and a 224-CPU machine has thousands of files.
fn read_cpus(
    cpu_dir: &Path,
    ids: &[u32],
    global_online: Option<&CpuSet>,
    errors: &mut ErrorLog,
) -> Vec<RawCpu> {
    let read_chunk = |chunk: &[u32]| -> (Vec<RawCpu>, ErrorLog) {
        let mut errors = ErrorLog::default();
        let mut known = KnownSets::default();
        let cpus = chunk
            .iter()
            .map(|&id| {
                let online = match global_online {
                    Some(set) => set.contains(id),
                    None => errors
                        .keep(parse_scalar(
                            &cpu_dir.join(format!("cpu{id}/online")),
                            parse_u32,
                        ))
                        .is_none_or(|v| v != 0),
                };
                read_cpu(
                    &mut errors,
                    &mut known,
                    &cpu_dir.join(format!("cpu{id}")),
                    id,
                    online,
                )
            })
            .collect();
        (cpus, errors)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let parts: Vec<(Vec<RawCpu>, ErrorLog)> = if ids.len() < PARALLEL_FROM_CPUS || threads < 2 {
        vec![read_chunk(ids)]
    } else {
        let size = ids.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .chunks(size)
                .map(|chunk| scope.spawn(move || read_chunk(chunk)))
                .collect();
            // A panicking reader would be a bug; its chunk is then read again on this thread.
            handles
                .into_iter()
                .zip(ids.chunks(size))
                .map(|(handle, chunk)| handle.join().unwrap_or_else(|_| read_chunk(chunk)))
                .collect()
        })
    };
    let mut cpus = Vec::with_capacity(ids.len());
    for (part, log) in parts {
        cpus.extend(part);
        errors.0.extend(log.0);
    }
    cpus
}

/// A group's CPU set names every CPU in it: once read, it is not read again for those CPUs (as hwloc
/// does). On a 96-CPU x86 dump this halves the files opened.
#[derive(Default)]
struct Known<T> {
    groups: Vec<T>,
    by_cpu: HashMap<u32, usize>,
}

impl<T: Clone> Known<T> {
    fn get(&self, cpu: u32) -> Option<T> {
        self.by_cpu
            .get(&cpu)
            .and_then(|&i| self.groups.get(i))
            .cloned()
    }

    fn remember(&mut self, set: &CpuSet, value: T) {
        let index = self.groups.len();
        self.groups.push(value);
        for cpu in set.iter() {
            self.by_cpu.entry(cpu).or_insert(index);
        }
    }
}

/// The sets read so far.
#[derive(Default)]
struct KnownSets {
    /// The files of the first CPU's `topology/`: the kernel's topology attributes are the same for
    /// every CPU of an architecture, so one listing serves all (a file missing after all reads as
    /// "not said", as on a CPU without it).
    topology_files: Option<BTreeSet<String>>,
    siblings: Known<CpuSet>,
    packages: Known<CpuSet>,
    l3: Known<(Option<u32>, Option<CpuSet>)>,
}

/// Returns the known set holding `cpu`, or reads one and remembers it. Offline CPUs only get what
/// their own directories say (usually nothing): the sets of online CPUs may still list them.
fn known_or_read<T: Clone>(
    known: &mut Known<T>,
    cpu: u32,
    online: bool,
    read: impl FnOnce() -> Option<T>,
    set_of: impl Fn(&T) -> Option<&CpuSet>,
) -> Option<T> {
    if !online {
        return read();
    }
    if let Some(value) = known.get(cpu) {
        return Some(value);
    }
    let value = read()?;
    if let Some(set) = set_of(&value).cloned() {
        known.remember(&set, value.clone());
    }
    Some(value)
}

fn read_cpu(
    errors: &mut ErrorLog,
    known: &mut KnownSets,
    dir: &Path,
    id: u32,
    online: bool,
) -> RawCpu {
    let topology = dir.join("topology");
    if known.topology_files.is_none() {
        known.topology_files = entry_names(&topology);
    }
    let present = known.topology_files.clone().unwrap_or_default();
    let mut label = |name: &str| {
        if !present.contains(name) {
            return None;
        }
        errors
            .keep(parse_scalar(&topology.join(name), parse_topology_id))
            .flatten()
    };
    let package = label("physical_package_id");
    let die = label("die_id");
    // x86 reports an unknown cluster as BAD_APICID (65535); arm64 as -1.
    let cluster = label("cluster_id").filter(|&c| c != X86_BAD_APICID);
    let core = label("core_id");
    let siblings = known_or_read(
        &mut known.siblings,
        id,
        online,
        || {
            read_own_cpuset(
                errors,
                &topology,
                Some(&present),
                id,
                &["core_cpus_list", "thread_siblings_list"],
                &["core_cpus", "thread_siblings"],
            )
        },
        |set: &CpuSet| Some(set),
    );
    let package_cpus = known_or_read(
        &mut known.packages,
        id,
        online,
        || {
            read_own_cpuset(
                errors,
                &topology,
                Some(&present),
                id,
                &["package_cpus_list", "core_siblings_list"],
                &["package_cpus", "core_siblings"],
            )
        },
        |set: &CpuSet| Some(set),
    );
    let l3 = known_or_read(
        &mut known.l3,
        id,
        online,
        || read_l3(errors, &dir.join("cache"), id),
        |(_, set)| set.as_ref(),
    );
    RawCpu {
        id,
        online,
        package,
        die,
        cluster,
        core,
        siblings,
        package_cpus,
        l3,
    }
}

/// A parser of one of the two kernel CPU-set forms.
type CpuSetParser = fn(&str) -> Result<CpuSet, hal::ParseError>;

/// Reads the CPU set of a group `cpu` belongs to: the first of the list files, then of the mask files,
/// that exists (in `present`, the directory's listing, when given) and contains `cpu` itself. A set without its own CPU is wrong (ia64 prints empty cache
/// maps; a dump may hold stale lists) and the next form is tried.
fn read_own_cpuset(
    errors: &mut ErrorLog,
    dir: &Path,
    present: Option<&BTreeSet<String>>,
    cpu: u32,
    lists: &[&str],
    masks: &[&str],
) -> Option<CpuSet> {
    let parsers: [(&[&str], CpuSetParser); 2] = [
        (lists, CpuSet::from_cpulist),
        (masks, CpuSet::from_hex_mask),
    ];
    for (names, parse) in parsers {
        for name in names
            .iter()
            .filter(|n| present.is_none_or(|p| p.contains(**n)))
        {
            if let Some(set) = errors.keep(parse_optional(&dir.join(name), parse))
                && set.contains(cpu)
            {
                return Some(set);
            }
        }
    }
    None
}

/// The CPUs sharing `cpu`'s level-3 data or unified cache, and the cache's `id`, from `cache/index*`.
fn read_l3(
    errors: &mut ErrorLog,
    cache_dir: &Path,
    cpu: u32,
) -> Option<(Option<u32>, Option<CpuSet>)> {
    let indices = numbered_entries(cache_dir, "index", 64).ok()?;
    for index in indices {
        let dir = cache_dir.join(format!("index{index}"));
        if errors.keep(parse_scalar(&dir.join("level"), parse_u32)) != Some(3) {
            continue;
        }
        if errors
            .keep(read_optional(&dir.join("type")))
            .is_some_and(|t| t == "Instruction")
        {
            continue;
        }
        let id = errors.keep(parse_scalar(&dir.join("id"), parse_u32));
        let shared = read_own_cpuset(
            errors,
            &dir,
            None,
            cpu,
            &["shared_cpu_list"],
            &["shared_cpu_map"],
        );
        return Some((id, shared));
    }
    None
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
