//! The CPU side of the picture: packages, dies, NUMA nodes, L3 groups, and cores collapsed into runs
//! of identical cores (`56 cores x 2 threads: cpus 0-55,112-167`), so a 224-CPU machine is a few lines.

use std::collections::{BTreeMap, BTreeSet};

use hal::{CoreType, CpuSet, LogicalCpu};

use super::layout::{Flow, Node};

/// A core: its hardware threads and type.
#[derive(Debug, Clone)]
struct Core {
    first: u32,
    threads: Vec<u32>,
    core_type: CoreType,
}

/// A run of cores alike: same type, same thread count, the threads at the same offsets from the
/// core's first thread, and first threads a constant step apart.
#[derive(Debug, Clone)]
struct Run {
    cores: Vec<Core>,
}

impl Run {
    fn accepts(&self, core: &Core) -> bool {
        let Some(last) = self.cores.last() else {
            return true;
        };
        let offsets = |c: &Core| -> Vec<i64> {
            c.threads
                .iter()
                .map(|t| i64::from(*t) - i64::from(c.first))
                .collect()
        };
        let step = i64::from(core.first) - i64::from(last.first);
        let same_step = match self.cores.as_slice() {
            [a, b, ..] => i64::from(b.first) - i64::from(a.first) == step,
            _ => step > 0,
        };
        last.core_type == core.core_type && offsets(last) == offsets(core) && same_step
    }

    fn node(&self) -> Node {
        let cpus: CpuSet = self
            .cores
            .iter()
            .flat_map(|c| c.threads.iter().copied())
            .collect();
        let n = self.cores.len();
        let threads = self.cores.first().map_or(1, |c| c.threads.len());
        let kind = match self.cores.first().map(|c| c.core_type) {
            Some(CoreType::Performance) => "P-core",
            Some(CoreType::Efficiency) => "E-core",
            _ => "core",
        };
        let plural = if n == 1 { "" } else { "s" };
        let smt = match threads {
            1 => String::new(),
            t => format!(" x {t} threads"),
        };
        let list = cpus.to_cpulist();
        Node::new("cores", "#ffffff")
            .data("cpus", list.clone())
            .data("count", n.to_string())
            .line(format!("{n} {kind}{plural}{smt}: cpus {list}"))
    }
}

/// Cores of some CPUs (SMT siblings form one core; a CPU without sibling information is a core),
/// collapsed into runs.
fn core_runs(cpus: &[&LogicalCpu]) -> Vec<Node> {
    let ids: BTreeSet<u32> = cpus.iter().map(|c| c.id).collect();
    let mut cores: BTreeMap<u32, Core> = BTreeMap::new();
    for c in cpus {
        // The siblings present in this group (a hostile tree may name CPUs of other groups).
        let threads: Vec<u32> = match &c.siblings {
            Some(s) if s.contains(c.id) => s.iter().filter(|t| ids.contains(t)).collect(),
            _ => vec![c.id],
        };
        let first = threads.first().copied().unwrap_or(c.id);
        cores.entry(first).or_insert(Core {
            first,
            threads,
            core_type: c.core_type,
        });
    }
    let mut runs: Vec<Run> = Vec::new();
    for core in cores.into_values() {
        match runs.last_mut() {
            Some(run) if run.accepts(&core) => run.cores.push(core),
            _ => runs.push(Run { cores: vec![core] }),
        }
    }
    runs.iter().map(Run::node).collect()
}

/// L3 groups of some CPUs, each with its core runs; `die` shown when the package has several dies.
pub(super) fn l3_groups(cpus: &[&LogicalCpu], show_die: bool) -> Vec<Node> {
    let mut groups: BTreeMap<(Option<u32>, Option<u32>), Vec<&LogicalCpu>> = BTreeMap::new();
    for c in cpus {
        let die = if show_die { c.die } else { None };
        groups.entry((die, c.l3)).or_default().push(c);
    }
    groups
        .into_iter()
        .map(|((die, l3), members)| {
            let set: CpuSet = members.iter().map(|c| c.id).collect();
            let name = match l3 {
                Some(id) => format!("L3 {id}"),
                None => "no L3".to_owned(),
            };
            let die = die.map(|d| format!(" (die {d})")).unwrap_or_default();
            Node::new("l3", "#f4f4f4")
                .data(
                    "l3",
                    l3.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                )
                .data("cpus", set.to_cpulist())
                .line(format!("{name}{die}: {} CPUs", members.len()))
                .children(core_runs(&members))
        })
        .collect()
}

/// A size in GiB with one decimal.
pub(super) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The L3 boxes of a NUMA node (or of CPUs without one), four to a row.
pub(super) fn cpu_box(cpus: &[&LogicalCpu], show_die: bool) -> Option<Node> {
    if cpus.is_empty() {
        return None;
    }
    Some(
        Node::new("cpus", "#fafafa")
            .flow(Flow::Rows(4))
            .children(l3_groups(cpus, show_die)),
    )
}
