//! CPU topology: [`LogicalCpu`], [`NumaNodeInfo`], the [`CpuInventory`] snapshot and the
//! [`CpuTopology`] trait.

use std::collections::BTreeMap;

use crate::cpuset::CpuSet;
use crate::error::Result;
use crate::inventory::InventoryError;
use crate::numa::NumaNode;

/// The kind of core a logical CPU sits on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CoreType {
    /// A homogeneous machine (or one whose kernel does not tell).
    Standard,
    /// A big core: Intel P-core (`cpu_core`), arm "big" (highest `cpu_capacity`).
    Performance,
    /// A little core: Intel E-core (`cpu_atom`), arm "LITTLE".
    Efficiency,
}

/// A physical core: (package, die, cluster, `core_id`).
pub type CoreKey = (Option<u32>, Option<u32>, Option<u32>, u32);

/// One logical CPU (a hardware thread) as the kernel describes it. `None` where the kernel does not say
/// (offline CPUs usually have no `topology/`, many kernels have no `die_id`, old ones no `cache/`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogicalCpu {
    /// OS id (`cpuN`).
    pub id: u32,
    /// Whether the CPU is online.
    pub online: bool,
    /// `physical_package_id` (socket).
    pub package: Option<u32>,
    /// `die_id`.
    pub die: Option<u32>,
    /// `cluster_id`.
    pub cluster: Option<u32>,
    /// `core_id`: names one core of its package (and die). Ids the kernel numbers per cluster
    /// (device-tree arm64) or that do not tell cores apart are renumbered by their lowest CPU.
    pub core: Option<u32>,
    /// NUMA node whose `cpulist` holds this CPU.
    pub numa_node: Option<NumaNode>,
    /// L3 cache instance (the kernel's cache `id`, or a dense index of distinct L3 CPU sets).
    pub l3: Option<u32>,
    /// Core type (hybrid machines).
    pub core_type: CoreType,
    /// SMT siblings including this CPU (`core_cpus_list` / `thread_siblings`): the online threads of
    /// its core, as the kernel lists them (a thread taken offline leaves its siblings' lists, so a
    /// core can be one CPU on SMT hardware). `None` for an offline CPU.
    pub siblings: Option<CpuSet>,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NumaNodeInfo {
    /// Node id.
    pub id: NumaNode,
    /// Its CPUs (empty for CPU-less memory nodes: GPU HBM, CXL, ...).
    pub cpus: CpuSet,
    /// `MemTotal` from `nodeN/meminfo`, in bytes.
    pub memory_bytes: Option<u64>,
    /// The kernel's distance row: one entry per node, in ascending node-id order (the order of
    /// [`CpuInventory::numa_nodes`]), not indexed by node id.
    pub distances: Vec<u32>,
}

/// A snapshot of the machine's CPUs and NUMA nodes, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuInventory {
    /// Every logical CPU the kernel lists, online or not.
    pub cpus: Vec<LogicalCpu>,
    /// Every NUMA node (empty on kernels without NUMA support).
    pub numa_nodes: Vec<NumaNodeInfo>,
    /// Parts of the machine that could not be read.
    pub errors: Vec<InventoryError>,
}

impl CpuInventory {
    /// The online CPUs.
    pub fn online(&self) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.id)
            .collect()
    }

    /// One CPU by id.
    pub fn cpu(&self, id: u32) -> Option<&LogicalCpu> {
        self.cpus
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .and_then(|i| self.cpus.get(i))
    }

    /// Online CPUs grouped by a key; CPUs whose key is `None` are left out.
    pub fn group_online_by<K: Ord>(
        &self,
        key: impl Fn(&LogicalCpu) -> Option<K>,
    ) -> BTreeMap<K, CpuSet> {
        let mut groups: BTreeMap<K, CpuSet> = BTreeMap::new();
        for cpu in self.cpus.iter().filter(|c| c.online) {
            if let Some(k) = key(cpu) {
                groups.entry(k).or_default().insert(cpu.id);
            }
        }
        groups
    }

    /// Online CPUs per package.
    pub fn packages(&self) -> BTreeMap<u32, CpuSet> {
        self.group_online_by(|c| c.package)
    }

    /// Online CPUs per physical core, keyed by (package, die, cluster, core id): `core_id` alone is
    /// only unique within a package.
    pub fn cores(&self) -> BTreeMap<CoreKey, CpuSet> {
        self.group_online_by(|c| c.core.map(|core| (c.package, c.die, c.cluster, core)))
    }

    /// Online CPUs per L3 instance.
    pub fn l3_groups(&self) -> BTreeMap<u32, CpuSet> {
        self.group_online_by(|c| c.l3)
    }

    /// Online CPUs per NUMA node (CPU-less nodes do not appear; see [`Self::numa_nodes`]).
    pub fn numa_groups(&self) -> BTreeMap<NumaNode, CpuSet> {
        self.group_online_by(|c| c.numa_node)
    }

    /// The distance between two nodes, from the kernel's rows.
    pub fn distance(&self, from: NumaNode, to: NumaNode) -> Option<u32> {
        let row = self.numa_nodes.iter().find(|n| n.id == from)?;
        let column = self.numa_nodes.iter().position(|n| n.id == to)?;
        row.distances.get(column).copied()
    }
}

/// Discovers the CPU topology of a machine.
pub trait CpuTopology: Send + Sync {
    /// Reads the whole topology. `Err` only when nothing could be read (e.g. no CPU directory at all);
    /// problems with single files land in [`CpuInventory::errors`].
    fn cpu_inventory(&self) -> Result<CpuInventory>;

    /// The online CPUs.
    fn online_cpus(&self) -> Result<CpuSet> {
        Ok(self.cpu_inventory()?.online())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cpu(id: u32, package: u32, core: u32, node: u32) -> LogicalCpu {
        LogicalCpu {
            id,
            online: true,
            package: Some(package),
            die: None,
            cluster: None,
            core: Some(core),
            numa_node: Some(NumaNode(node)),
            l3: Some(package),
            core_type: CoreType::Standard,
            siblings: None,
        }
    }

    #[test]
    fn groups_use_package_scoped_core_ids() {
        let mut inv = CpuInventory {
            cpus: vec![
                cpu(0, 0, 0, 0),
                cpu(1, 1, 0, 1),
                cpu(2, 0, 0, 0),
                cpu(3, 1, 0, 1),
            ],
            numa_nodes: vec![
                NumaNodeInfo {
                    id: NumaNode(0),
                    cpus: "0,2".parse().unwrap(),
                    memory_bytes: None,
                    distances: vec![10, 21],
                },
                NumaNodeInfo {
                    id: NumaNode(1),
                    cpus: "1,3".parse().unwrap(),
                    memory_bytes: None,
                    distances: vec![21, 10],
                },
            ],
            errors: vec![],
        };
        inv.cpus.get_mut(3).unwrap().online = false;
        let cores: Vec<String> = inv.cores().values().map(|s| s.to_string()).collect();
        assert_eq!(cores, ["0,2", "1"]);
        assert_eq!(inv.online().to_string(), "0-2");
        assert_eq!(inv.packages().get(&1).unwrap().to_string(), "1");
        assert_eq!(inv.distance(NumaNode(0), NumaNode(1)), Some(21));
        assert_eq!(inv.distance(NumaNode(1), NumaNode(1)), Some(10));
        assert_eq!(inv.cpu(2).unwrap().id, 2);
        assert!(inv.cpu(9).is_none());
    }
}
