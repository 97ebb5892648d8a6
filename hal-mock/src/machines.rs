//! The named fixture machines.

use crate::cpu::{Arch, CpuLayout};

const GIB: u64 = 1 << 30;

/// A named machine description.
#[derive(Debug, Clone)]
pub struct FixtureMachine {
    /// Name used by `hal-probe --fixture`.
    pub name: &'static str,
    /// What machine it models and where its facts come from.
    pub description: &'static str,
    /// Its CPUs and NUMA nodes.
    pub cpu: CpuLayout,
}

/// Names of every fixture, for `--help` and error messages.
pub const FIXTURES: [&str; 5] = ["xeon", "gb300", "i915", "hybrid", "epyc"];

/// Looks a fixture up by name.
pub fn by_name(name: &str) -> Option<FixtureMachine> {
    let machine = match name {
        "xeon" => FixtureMachine {
            name: "xeon",
            description: "2-socket Intel Xeon Platinum 8480+ (Sapphire Rapids): 56 cores x 2 threads per socket, \
                          one L3 per socket, SNC off (one NUMA node per socket, 256 GiB each, SLIT 10/21)",
            cpu: CpuLayout {
                arch: Arch::X86,
                packages: 2,
                cores_per_package: 56,
                threads_per_core: 2,
                efficiency_cores_per_package: 0,
                l3_per_package: 1,
                nodes_per_package: 1,
                memory_per_node: 256 * GIB,
                remote_distance: 21,
                offline: vec![],
            },
        },
        "gb300" => FixtureMachine {
            name: "gb300",
            description: "Azure ND GB300 v6 VM: 2 Grace (aarch64, Neoverse-V2) sockets, 128 vCPUs without SMT, \
                          one L3 per Grace, 2 NUMA nodes. GPU and NIC placement (NUMA 0 and 1) as in the live GB300 \
                          ResourceSlices of the shared corpora",
            cpu: CpuLayout {
                arch: Arch::Arm64,
                packages: 2,
                cores_per_package: 64,
                threads_per_core: 1,
                efficiency_cores_per_package: 0,
                l3_per_package: 1,
                nodes_per_package: 1,
                memory_per_node: 480 * GIB,
                remote_distance: 40,
                offline: vec![],
            },
        },
        "i915" => FixtureMachine {
            name: "i915",
            description: "2-socket Intel Xeon Gold 6336Y (Ice Lake) host for Intel Data Center GPU Flex 170 cards: \
                          24 cores x 2 threads per socket, one L3 per socket, 2 NUMA nodes",
            cpu: CpuLayout {
                arch: Arch::X86,
                packages: 2,
                cores_per_package: 24,
                threads_per_core: 2,
                efficiency_cores_per_package: 0,
                l3_per_package: 1,
                nodes_per_package: 1,
                memory_per_node: 128 * GIB,
                remote_distance: 20,
                offline: vec![],
            },
        },
        "hybrid" => FixtureMachine {
            name: "hybrid",
            description: "Intel Core i7-1370P laptop (Raptor Lake): 6 P-cores x 2 threads (CPUs 0-11) and 8 \
                          E-cores (CPUs 12-19), one L3, no NUMA beyond node 0; the same CPU as hwloc's \
                          20em64t-hybrid dump, plus the cpu_core/cpu_atom PMU lists that dump lacks",
            cpu: CpuLayout {
                arch: Arch::X86,
                packages: 1,
                cores_per_package: 6,
                threads_per_core: 2,
                efficiency_cores_per_package: 8,
                l3_per_package: 1,
                nodes_per_package: 1,
                memory_per_node: 32 * GIB,
                remote_distance: 21,
                offline: vec![],
            },
        },
        "epyc" => FixtureMachine {
            name: "epyc",
            description: "1-socket AMD EPYC 9354 (Genoa): 32 cores x 2 threads, 8 CCDs with an L3 each, NPS2 (two \
                          NUMA nodes), with CPUs 62-63 taken offline",
            cpu: CpuLayout {
                arch: Arch::X86,
                packages: 1,
                cores_per_package: 32,
                threads_per_core: 2,
                efficiency_cores_per_package: 0,
                l3_per_package: 8,
                nodes_per_package: 2,
                memory_per_node: 192 * GIB,
                remote_distance: 21,
                offline: vec![62, 63],
            },
        },
        _ => return None,
    };
    Some(machine)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use backends::{SysfsCpuTopology, SysfsRoot};
    use hal::{CpuTopology, NumaNode};

    /// Every fixture, rendered and read back through the real sysfs backend, reports its description.
    #[test]
    fn every_fixture_round_trips_through_the_sysfs_backend() {
        for name in FIXTURES {
            let machine = by_name(name).expect(name);
            let fixture = machine.materialize().unwrap();
            let inventory = SysfsCpuTopology::new(SysfsRoot::new(fixture.root()))
                .cpu_inventory()
                .unwrap();
            assert!(
                inventory.errors.is_empty(),
                "{name}: {:?}",
                inventory.errors
            );
            let expected = machine.cpu.expected();
            assert_eq!(inventory.cpus.len(), expected.len(), "{name}");
            for (cpu, want) in inventory.cpus.iter().zip(&expected) {
                assert_eq!(cpu.id, want.id, "{name}");
                let online = !machine.cpu.offline.contains(&want.id);
                assert_eq!(cpu.online, online, "{name} cpu{}", cpu.id);
                if !online {
                    assert_eq!(
                        (cpu.package, cpu.core, cpu.l3),
                        (None, None, None),
                        "{name} cpu{}",
                        cpu.id
                    );
                    continue;
                }
                assert_eq!(cpu.package, Some(want.package), "{name} cpu{}", cpu.id);
                assert_eq!(cpu.core, Some(want.core), "{name} cpu{}", cpu.id);
                assert_eq!(
                    cpu.numa_node,
                    want.numa_node.map(NumaNode),
                    "{name} cpu{}",
                    cpu.id
                );
                assert_eq!(cpu.l3, Some(want.l3), "{name} cpu{}", cpu.id);
                assert_eq!(cpu.core_type, want.core_type, "{name} cpu{}", cpu.id);
                assert_eq!(
                    cpu.siblings.as_ref(),
                    Some(&want.siblings),
                    "{name} cpu{}",
                    cpu.id
                );
            }
            let nodes = machine.cpu.packages * machine.cpu.nodes_per_package;
            assert_eq!(inventory.numa_nodes.len() as u32, nodes, "{name}");
            for node in &inventory.numa_nodes {
                assert_eq!(node.distances.len() as u32, nodes, "{name}");
                assert!(node.memory_bytes.is_some_and(|m| m > 0), "{name}");
            }
        }
    }

    #[test]
    fn fixture_facts() {
        let xeon = by_name("xeon").unwrap().cpu.expected();
        assert_eq!(xeon.len(), 224);
        // Linux numbers first threads first: cpu0 and cpu112 share a core.
        assert_eq!(xeon.first().unwrap().siblings.to_string(), "0,112");
        let rpl = by_name("hybrid").unwrap().cpu.expected();
        assert_eq!(rpl.len(), 20);
        let gb300 = by_name("gb300").unwrap();
        assert_eq!(gb300.cpu.expected().len(), 128);
        assert!(by_name("nope").is_none());
    }
}
