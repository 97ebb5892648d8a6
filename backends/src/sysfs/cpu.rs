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
use super::attr::{ErrorLog, parse_topology_id, parse_u32};
use super::core_type::assign_core_types;
use super::cpu_groups::{RawCpu, assign_l3, label_groups};
use super::numa::{possible_cpu_limit, read_numa_nodes};
use super::tree::Tree;

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
    // Every file below is opened inside the root: a link to a directory outside it is not followed out.
    let tree = &Tree::open(root);
    let cpu_dir = tree.join("sys/devices/system/cpu");
    let ids = tree.numbered_entries(&cpu_dir, "cpu", MAX_CPUS)?;
    let mut errors = ErrorLog::default();
    let global_online =
        errors.keep(tree.parse_optional(&cpu_dir.join("online"), CpuSet::from_cpulist));

    // `smt/control` "notsupported": the hardware has one thread per core (x86 since 4.19, and arm64 and
    // powerpc kernels with HOTPLUG_SMT), so each CPU is a core of its own and its `core_cpus_list` is
    // not read: on a 128-CPU arm64 node that is a third of the files of the CPU topology. Not
    // `smt/active` 0, which a kernel built without CONFIG_SCHED_SMT also says on SMT hardware.
    let no_smt = errors
        .keep(tree.read_optional(&cpu_dir.join("smt/control")))
        .is_some_and(|control| control == "notsupported");
    let raw = read_cpus(
        tree,
        &cpu_dir,
        &ids,
        global_online.as_ref(),
        no_smt,
        &mut errors,
    );

    let packages = label_groups(
        &mut errors,
        &cpu_dir,
        "physical_package_id",
        &raw,
        |c| c.package_cpus.as_ref(),
        |c| c.package,
        |_| (),
    );
    let package_of = |c: &RawCpu| {
        let index = raw.iter().position(|r| r.id == c.id).unwrap_or(0);
        packages.get(index).copied().flatten()
    };
    // Device-tree arm64 numbers each cluster's cores from 0 (`parse_cluster` in
    // drivers/base/arch_topology.c): ids unique within their cluster are the kernel's right, so
    // only a conflict within package, die and cluster is an error...
    label_groups(
        &mut errors,
        &cpu_dir,
        "core_id",
        &raw,
        |c| c.siblings.as_ref(),
        |c| c.core,
        |c| (package_of(c), c.die, c.cluster),
    );
    // ...but a core id names one core of its package (and die), as it is published (`coreId`):
    // ids that repeat there are renumbered by their lowest CPU, quietly.
    let cores = label_groups(
        &mut ErrorLog::default(),
        &cpu_dir,
        "core_id",
        &raw,
        |c| c.siblings.as_ref(),
        |c| c.core,
        |c| (package_of(c), c.die),
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
    assign_core_types(tree, &cpu_dir, &mut cpus, &mut errors);

    let node_dir = tree.join("sys/devices/system/node");
    let numa_nodes = read_numa_nodes(tree, &node_dir, possible_cpu_limit(tree), &mut errors);
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

/// Reads every `cpuN` directory, in CPU order. Each core's, package's and L3's files are read once
/// for all its CPUs ([`KnownSets`]).
fn read_cpus(
    tree: &Tree,
    cpu_dir: &Path,
    ids: &[u32],
    global_online: Option<&CpuSet>,
    no_smt: bool,
    errors: &mut ErrorLog,
) -> Vec<RawCpu> {
    let mut known = KnownSets {
        no_smt,
        ..KnownSets::default()
    };
    ids.iter()
        .map(|&id| {
            let online = match global_online {
                Some(set) => set.contains(id),
                None => errors
                    .keep(tree.parse_scalar(&cpu_dir.join(format!("cpu{id}/online")), parse_u32))
                    .is_none_or(|v| v != 0),
            };
            let dir = cpu_dir.join(format!("cpu{id}"));
            read_cpu(tree, errors, &mut known, &dir, id, online)
        })
        .collect()
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
    /// Each core's CPUs with the labels its threads share (read once, for its first CPU).
    cores: Known<(CpuSet, CoreLabels)>,
    /// Each package's CPUs with its label.
    packages: Known<(CpuSet, Option<u32>)>,
    /// Each die's label, by `die_cpus_list` (read once, for the first core of the die).
    dies: Known<Option<u32>>,
    /// A `die_id` said -1: the architecture has no dies (arm64 prints -1 for every CPU, with a
    /// `die_cpus_list` of the CPU alone), so no other CPU's is read.
    no_dies: bool,
    /// `smt/control` said "notsupported": an online CPU's core is the CPU alone.
    no_smt: bool,
    l3: Known<(Option<u32>, Option<CpuSet>)>,
}

/// What SMT siblings have in common: the kernel derives the core's CPUs from them.
#[derive(Debug, Clone, Copy, Default)]
struct CoreLabels {
    package: Option<u32>,
    die: Option<u32>,
    cluster: Option<u32>,
    core: Option<u32>,
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
    tree: &Tree,
    errors: &mut ErrorLog,
    known: &mut KnownSets,
    dir: &Path,
    id: u32,
    online: bool,
) -> RawCpu {
    let topology = dir.join("topology");
    if known.topology_files.is_none() {
        known.topology_files = tree.entry_names(&topology, errors);
    }
    // Borrowed out of `known` for this CPU (and put back at the end), not cloned for each.
    let listing = known.topology_files.take();
    let empty = BTreeSet::new();
    let present = listing.as_ref().unwrap_or(&empty);
    let label = |errors: &mut ErrorLog, name: &str| {
        if !present.contains(name) {
            return None;
        }
        errors
            .keep(tree.parse_scalar(&topology.join(name), parse_topology_id))
            .flatten()
    };
    // A sibling of a core already read: its labels and set are this CPU's too.
    let known_core = online.then(|| known.cores.get(id)).flatten();
    let (siblings, labels) = match known_core {
        Some((set, labels)) => (Some(set), labels),
        None => {
            let package = match online.then(|| known.packages.get(id)).flatten() {
                Some((_, package)) => package,
                None => label(errors, "physical_package_id"),
            };
            let die = match online.then(|| known.dies.get(id)).flatten() {
                Some(die) => die,
                None if known.no_dies => None,
                None => {
                    let logged = errors.0.len();
                    let die = label(errors, "die_id");
                    // -1 itself, not a file that could not be read or parsed.
                    known.no_dies =
                        die.is_none() && present.contains("die_id") && errors.0.len() == logged;
                    // The kernel's die set is the CPUs of this package with this die id.
                    if online
                        && die.is_some()
                        && present.contains("die_cpus_list")
                        && let Some(set) =
                            errors.keep(tree.parse_optional(
                                &topology.join("die_cpus_list"),
                                CpuSet::from_cpulist,
                            ))
                        && set.contains(id)
                    {
                        known.dies.remember(&set, die);
                    }
                    die
                }
            };
            let labels = CoreLabels {
                package,
                die,
                // x86 reports an unknown cluster as BAD_APICID (65535); arm64 as -1.
                cluster: label(errors, "cluster_id").filter(|&c| c != X86_BAD_APICID),
                core: label(errors, "core_id"),
            };
            let siblings = match online && known.no_smt {
                true => {
                    let mut alone = CpuSet::new();
                    alone.insert(id);
                    Some(alone)
                }
                false => read_own_cpuset(
                    tree,
                    errors,
                    &topology,
                    Some(present),
                    id,
                    &["core_cpus_list", "thread_siblings_list"],
                    &["core_cpus", "thread_siblings"],
                ),
            };
            if let (true, Some(set)) = (online, &siblings) {
                known.cores.remember(set, (set.clone(), labels));
            }
            (siblings, labels)
        }
    };
    let package_cpus = known_or_read(
        &mut known.packages,
        id,
        online,
        || {
            let set = read_own_cpuset(
                tree,
                errors,
                &topology,
                Some(present),
                id,
                &["package_cpus_list", "core_siblings_list"],
                &["package_cpus", "core_siblings"],
            )?;
            Some((set, labels.package))
        },
        |(set, _)| Some(set),
    )
    .map(|(set, _)| set);
    let l3 = known_or_read(
        &mut known.l3,
        id,
        online,
        || read_l3(tree, errors, &dir.join("cache"), id),
        |(_, set)| set.as_ref(),
    );
    known.topology_files = listing;
    RawCpu {
        id,
        online,
        package: labels.package,
        die: labels.die,
        cluster: labels.cluster,
        core: labels.core,
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
    tree: &Tree,
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
            if let Some(set) = errors.keep(tree.parse_optional(&dir.join(name), parse))
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
    tree: &Tree,
    errors: &mut ErrorLog,
    cache_dir: &Path,
    cpu: u32,
) -> Option<(Option<u32>, Option<CpuSet>)> {
    let indices = tree.numbered_entries(cache_dir, "index", 64).ok()?;
    for index in indices {
        let dir = cache_dir.join(format!("index{index}"));
        if errors.keep(tree.parse_scalar(&dir.join("level"), parse_u32)) != Some(3) {
            continue;
        }
        if errors
            .keep(tree.read_optional(&dir.join("type")))
            .is_some_and(|t| t == "Instruction")
        {
            continue;
        }
        let id = errors.keep(tree.parse_scalar(&dir.join("id"), parse_u32));
        let shared = read_own_cpuset(
            tree,
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
    fn without_smt_hardware_a_cpus_core_is_itself_and_its_core_list_is_not_read() {
        let fixture = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
        let root = SysfsRoot::new(fixture.root());
        let cpu_dir = fixture.root().join("sys/devices/system/cpu");
        let read = || SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap();
        let told = read();
        assert!(told.errors.is_empty(), "{:?}", told.errors);
        assert!(
            told.cpus
                .iter()
                .all(|c| c.siblings.as_ref().unwrap().len() == 1)
        );
        // Without the kernel's word the lists are read, and say the same.
        fs::remove_dir_all(cpu_dir.join("smt")).unwrap();
        assert_eq!(format!("{:?}", read().cpus), format!("{:?}", told.cpus));
        // With it, they are not: unreadable lists change nothing.
        write(&cpu_dir, "smt/control", "notsupported\n");
        for id in 0..128 {
            let topology = format!("cpu{id}/topology");
            for name in ["core_cpus_list", "thread_siblings_list"] {
                write(&cpu_dir, &format!("{topology}/{name}"), "not a list\n");
            }
        }
        let skipped = read();
        assert!(skipped.errors.is_empty(), "{:?}", skipped.errors);
        assert_eq!(format!("{:?}", skipped.cpus), format!("{:?}", told.cpus));
        // Where the hardware has SMT they are read (here: found bad), even with no two threads of a
        // core online (`active` 0: SMT switched off, or a kernel without CONFIG_SCHED_SMT).
        write(&cpu_dir, "smt/control", "on\n");
        write(&cpu_dir, "smt/active", "0\n");
        let errors = read().errors;
        assert!(
            errors
                .iter()
                .any(|e| e.path.ends_with("cpu5/topology/core_cpus_list")),
            "{errors:?}"
        );
    }

    /// Four single-thread cores in one package, with the given `die_id` and `die_cpus_list` per CPU.
    fn dies_tree(dies: [(&str, Option<&str>); 4]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (cpu, (die, die_cpus)) in dies.into_iter().enumerate() {
            let base = format!("sys/devices/system/cpu/cpu{cpu}/topology");
            write(dir.path(), &format!("{base}/physical_package_id"), "0\n");
            write(dir.path(), &format!("{base}/core_id"), &format!("{cpu}\n"));
            write(
                dir.path(),
                &format!("{base}/core_cpus_list"),
                &format!("{cpu}\n"),
            );
            write(dir.path(), &format!("{base}/die_id"), &format!("{die}\n"));
            if let Some(set) = die_cpus {
                write(
                    dir.path(),
                    &format!("{base}/die_cpus_list"),
                    &format!("{set}\n"),
                );
            }
        }
        dir
    }

    fn dies(dir: &tempfile::TempDir) -> Vec<Option<u32>> {
        let inv = SysfsCpuTopology::new(SysfsRoot::new(dir.path()))
            .cpu_inventory()
            .unwrap();
        inv.cpus.iter().map(|c| c.die).collect()
    }

    #[test]
    fn a_die_is_read_once_for_its_die_cpus_list_and_never_where_there_are_no_dies() {
        // x86: CPUs 0-1 on die 0, 2-3 on die 1. CPU 1's own file is never read: the die of CPU 0
        // covers it (a stale "9" there proves it).
        let x86 = dies_tree([
            ("0", Some("0-1")),
            ("9", Some("0-1")),
            ("1", Some("2-3")),
            ("1", Some("2-3")),
        ]);
        assert_eq!(dies(&x86), [Some(0), Some(0), Some(1), Some(1)]);
        // Without die_cpus_list (kernels before 5.3), every core's die_id is read.
        let old = dies_tree([("0", None), ("9", None), ("1", None), ("1", None)]);
        assert_eq!(dies(&old), [Some(0), Some(9), Some(1), Some(1)]);
        // arm64: -1 means the architecture has no dies; no other CPU's die_id is read.
        let arm = dies_tree([
            ("-1", Some("0")),
            ("5", Some("1")),
            ("-1", Some("2")),
            ("-1", Some("3")),
        ]);
        assert_eq!(dies(&arm), [None, None, None, None]);
        // A die_id that cannot be parsed is not -1: the next CPUs' are still read.
        let bad = dies_tree([
            ("x", Some("0")),
            ("1", Some("1")),
            ("1", Some("2")),
            ("1", Some("3")),
        ]);
        assert_eq!(dies(&bad), [None, Some(1), Some(1), Some(1)]);
    }

    /// An RK3588-like device-tree machine: one package, clusters 0-3, 4-5 and 6-7, core ids from 0
    /// in each cluster (`parse_cluster`). No error (the kernel's numbering is right for its scope),
    /// and the ids are renumbered to name one core of the package each.
    #[test]
    fn core_ids_numbered_per_cluster_are_the_kernels_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let clusters = [0, 0, 0, 0, 1, 1, 2, 2];
        let cores = [0, 1, 2, 3, 0, 1, 0, 1];
        write(root, "sys/devices/system/cpu/online", "0-7\n");
        write(root, "sys/devices/system/cpu/possible", "0-7\n");
        for cpu in 0..8 {
            let base = format!("sys/devices/system/cpu/cpu{cpu}/topology");
            write(root, &format!("{base}/physical_package_id"), "0\n");
            write(root, &format!("{base}/die_id"), "-1\n");
            write(
                root,
                &format!("{base}/cluster_id"),
                &format!("{}\n", clusters[cpu]),
            );
            write(
                root,
                &format!("{base}/core_id"),
                &format!("{}\n", cores[cpu]),
            );
            write(root, &format!("{base}/core_cpus_list"), &format!("{cpu}\n"));
            write(root, &format!("{base}/package_cpus_list"), "0-7\n");
        }
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        let ids: Vec<_> = inv.cpus.iter().map(|c| c.core).collect();
        assert_eq!(ids, (0..8).map(Some).collect::<Vec<_>>());
        assert_eq!(inv.cores().len(), 8, "{:?}", inv.cores());
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

    /// The shape of hwloc's `16em64t-4s2c2t-offlines` dump (masks only, no `cpu/online`): the kernel
    /// leaves an offline thread out of its sibling's lists (there cpu6's `thread_siblings` is `...040`
    /// with cpu14 offline). Here core 1 is cpus 1 and 3, cpu3 offline: the core is cpu1 alone, with its
    /// `core_id`, and no error; cpu3 has nothing but `online`.
    #[test]
    fn a_core_whose_other_thread_is_offline_is_its_online_thread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (cpu, core, siblings) in [(0, 0, "5"), (1, 1, "2"), (2, 0, "5")] {
            let base = format!("sys/devices/system/cpu/cpu{cpu}");
            write(root, &format!("{base}/topology/physical_package_id"), "0\n");
            write(
                root,
                &format!("{base}/topology/core_id"),
                &format!("{core}\n"),
            );
            write(root, &format!("{base}/topology/thread_siblings"), siblings);
            write(root, &format!("{base}/topology/core_siblings"), "7\n");
            write(root, &format!("{base}/cache/index2/level"), "3\n");
            write(root, &format!("{base}/cache/index2/type"), "Unified\n");
            write(root, &format!("{base}/cache/index2/shared_cpu_map"), "7\n");
        }
        write(root, "sys/devices/system/cpu/cpu3/online", "0\n");
        let inv = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        assert_eq!(inv.online().to_string(), "0-2");
        let cpu1 = &inv.cpus[1];
        assert_eq!(cpu1.siblings.as_ref().unwrap().to_string(), "1");
        assert_eq!(
            (cpu1.package, cpu1.core, cpu1.l3),
            (Some(0), Some(1), Some(0))
        );
        let cores: Vec<String> = inv.cores().values().map(|s| s.to_string()).collect();
        assert_eq!(cores, ["0,2", "1"]);
        let cpu3 = &inv.cpus[3];
        assert_eq!(
            (cpu3.online, cpu3.core, &cpu3.siblings),
            (false, None, &None)
        );
    }

    /// The epyc fixture, CPUs 62-63 offline: the cores of cpu30 and cpu31 are one thread each, keep
    /// their core ids, and the machine still has 32 cores.
    #[test]
    fn the_epyc_fixtures_half_offline_cores_are_their_online_threads() {
        let fixture = hal_mock::by_name("epyc").unwrap().materialize().unwrap();
        let inv = SysfsCpuTopology::new(SysfsRoot::new(fixture.root()))
            .cpu_inventory()
            .unwrap();
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        let cpu30 = inv.cpu(30).unwrap();
        assert_eq!(cpu30.siblings.as_ref().unwrap().to_string(), "30");
        assert_eq!(cpu30.core, Some(30));
        let cores = inv.cores();
        assert_eq!(cores.len(), 32);
        let single: Vec<String> = cores
            .values()
            .filter(|s| s.len() == 1)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(single, ["30", "31"]);
        assert_eq!(inv.cpu(62).unwrap().siblings, None);
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
