//! The named fixture machines: JSON descriptions in `testdata/machines/`, embedded at build time.

use std::io;
use std::path::Path;

use hal::AttributeWriter;

use crate::bridges::BridgeSpec;
use crate::cpu::CpuLayout;
use crate::devices::{GpuSpec, RdmaSpec};
use crate::kernel::EmulatedKernel;
use crate::pci::PciFunctionSpec;
use crate::tree::write;

/// A driver the emulated kernel binds to `vendor:device` functions by default (module aliases).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDriver {
    /// PCI vendor id.
    #[serde(with = "crate::hex::u16_hex")]
    pub vendor: u16,
    /// PCI device id.
    #[serde(with = "crate::hex::u16_hex")]
    pub device: u16,
    /// Driver name.
    pub driver: String,
}

/// A machine description.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureMachine {
    /// Name used by `hal-probe --fixture`.
    pub name: String,
    /// What machine it models, which facts are captured and which are modelled.
    pub description: String,
    /// Its CPUs and NUMA nodes.
    pub cpu: CpuLayout,
    /// PCI functions (PFs; VFs are created from `sriov.enabled`).
    #[serde(default)]
    pub pci: Vec<PciFunctionSpec>,
    /// The identities of the bridges named in the functions' `bridges` chains (each chain's bridges
    /// are rendered once, as functions of their own).
    #[serde(default)]
    pub bridges: Vec<BridgeSpec>,
    /// RDMA devices.
    #[serde(default)]
    pub rdma: Vec<RdmaSpec>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Vec<GpuSpec>,
    /// Drivers the kernel binds by default.
    #[serde(default)]
    pub default_drivers: Vec<DefaultDriver>,
}

/// The header line of `/proc/net/route`, which the kernel pads to 127 columns as every line
/// (`fib_route_seq_show`); with no route, the whole file.
const ROUTE_HEADER: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";

/// Names of every fixture, for `--help` and error messages.
pub const FIXTURES: [&str; 5] = ["xeon", "gb300", "i915", "hybrid", "epyc"];

const SOURCES: [(&str, &str); 5] = [
    ("xeon", include_str!("../../testdata/machines/xeon.json")),
    ("gb300", include_str!("../../testdata/machines/gb300.json")),
    ("i915", include_str!("../../testdata/machines/i915.json")),
    (
        "hybrid",
        include_str!("../../testdata/machines/hybrid.json"),
    ),
    ("epyc", include_str!("../../testdata/machines/epyc.json")),
];

/// Loads a fixture by name. Errors name the unknown fixture (with the known ones) or the description
/// file and what is wrong in it.
pub fn by_name(name: &str) -> Result<FixtureMachine, String> {
    let Some((_, json)) = SOURCES.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "unknown fixture {name:?}; known fixtures: {}",
            FIXTURES.join(", ")
        ));
    };
    let machine: FixtureMachine =
        serde_json::from_str(json).map_err(|e| format!("testdata/machines/{name}.json: {e}"))?;
    machine
        .cpu
        .check()
        .map_err(|e| format!("testdata/machines/{name}.json: cpu: {e}"))?;
    Ok(machine)
}

impl FixtureMachine {
    /// The emulated kernel of this machine's tree at `root`, with its default drivers.
    pub fn kernel(&self, root: &Path) -> EmulatedKernel {
        self.default_drivers
            .iter()
            .fold(EmulatedKernel::new(root), |k, d| {
                k.with_default_driver(d.vendor, d.device, &d.driver)
            })
    }

    /// Writes the machine's sysfs (and `proc/driver/nvidia`, `proc/sys/kernel/sched_rt_*`,
    /// `proc/net/route`) tree under `root` (which must exist):
    /// CPUs and nodes, the bridges, PCI functions, VFs enabled through the emulated kernel, then RDMA and GPUs.
    pub fn render(&self, root: &Path) -> io::Result<()> {
        self.cpu.render(root)?;
        // The kernel's default real-time bandwidth limit (95% of each period).
        write(&root.join("proc/sys/kernel/sched_rt_runtime_us"), "950000")?;
        write(&root.join("proc/sys/kernel/sched_rt_period_us"), "1000000")?;
        // An empty IPv4 routing table, as the kernel prints one (its header line): the fixtures
        // model hardware, not a network, so none of their NICs carries the node's default route.
        // Every kernel with IPv4 has the file, and the driver withholds every NIC of a tree
        // without it (which interface is the node's own is then not known).
        write(
            &root.join("proc/net/route"),
            &format!("{ROUTE_HEADER:<127}"),
        )?;
        write(&root.join("sys/bus/pci/drivers_probe"), "")?;
        crate::bridges::render(root, &self.pci, &self.bridges)?;
        for function in &self.pci {
            function.render(root)?;
        }
        let kernel = self.kernel(root);
        for function in &self.pci {
            let Some(sriov) = function.sriov.as_ref().filter(|s| s.enabled > 0) else {
                continue;
            };
            let numvfs = root.join(function.sysfs_dir()).join("sriov_numvfs");
            kernel.write_attribute(&numvfs, &sriov.enabled.to_string())?;
            for (index, netdev) in sriov.vf_netdevs.iter().enumerate() {
                let vf = std::fs::read_link(
                    root.join(function.sysfs_dir())
                        .join(format!("virtfn{index}")),
                )?;
                let vf_dir = function
                    .sysfs_dir()
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(vf.file_name().unwrap_or_default());
                write(
                    &root.join(&vf_dir).join("net").join(netdev).join("ifindex"),
                    &(10 + index).to_string(),
                )?;
                crate::pci::write_link_up(&root.join(&vf_dir).join("net").join(netdev))?;
                crate::tree::link(
                    root,
                    &Path::new("sys/class/net").join(netdev),
                    &vf_dir.join("net").join(netdev),
                )?;
            }
        }
        let functions = self.all_functions(root);
        for rdma in &self.rdma {
            rdma.render(root, &functions)?;
        }
        for gpu in &self.gpus {
            gpu.render(root, &functions)?;
        }
        Ok(())
    }

    /// The described functions plus the VFs the kernel created (found from the PFs' `virtfnN` links).
    fn all_functions(&self, root: &Path) -> Vec<PciFunctionSpec> {
        let mut all = self.pci.clone();
        for pf in &self.pci {
            let enabled = pf.sriov.as_ref().map_or(0, |s| s.enabled);
            for index in 0..enabled {
                let Ok(target) =
                    std::fs::read_link(root.join(pf.sysfs_dir()).join(format!("virtfn{index}")))
                else {
                    continue;
                };
                let Some(address) = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| hal::PciAddress::parse(n).ok())
                else {
                    continue;
                };
                all.push(PciFunctionSpec {
                    address,
                    sriov: None,
                    netdevs: vec![],
                    driver: None,
                    iommu_group: None,
                    ..pf.clone()
                });
            }
        }
        all
    }
}

/// What NVML answers on a fixture machine with NVIDIA GPUs (`testdata/nvml/<name>.json`, the JSON of
/// `backends::nvml::NvmlSystem`), or `None` for machines without them.
pub fn nvml_answers(name: &str) -> Option<&'static str> {
    match name {
        "gb300" => Some(include_str!("../../testdata/nvml/gb300.json")),
        "xeon" => Some(include_str!("../../testdata/nvml/xeon.json")),
        _ => None,
    }
}

/// What Level Zero answers on a fixture machine with Intel GPUs (`testdata/level-zero/<name>.json`, the
/// JSON of a list of `backends::level_zero::ZeGpu`), or `None` for machines without them.
pub fn level_zero_answers(name: &str) -> Option<&'static str> {
    match name {
        "i915" => Some(include_str!("../../testdata/level-zero/i915.json")),
        _ => None,
    }
}

/// What verbs answers on a fixture machine with RDMA devices (`testdata/verbs/<name>.json`, the JSON of
/// a list of `backends::verbs::VerbsDevice`), or `None` for machines without them.
pub fn verbs_answers(name: &str) -> Option<&'static str> {
    match name {
        "gb300" => Some(include_str!("../../testdata/verbs/gb300.json")),
        "xeon" => Some(include_str!("../../testdata/verbs/xeon.json")),
        _ => None,
    }
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
                    // No topology or cache of its own, and in no node's list.
                    assert_eq!(
                        (cpu.package, cpu.core, cpu.l3, cpu.numa_node, &cpu.siblings),
                        (None, None, None, None, &None),
                        "{name} cpu{}",
                        cpu.id
                    );
                    continue;
                }
                assert_eq!(cpu.package, Some(want.package), "{name} cpu{}", cpu.id);
                assert_eq!(cpu.core, Some(want.core), "{name} cpu{}", cpu.id);
                assert_eq!(cpu.cluster, want.cluster, "{name} cpu{}", cpu.id);
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

    /// Every described PCI function, and every VF the kernel created, comes back through the real PCI
    /// and SR-IOV backends with its identity and place.
    #[test]
    fn every_fixture_pci_round_trips_through_the_sysfs_backends() {
        use backends::{SysfsPci, SysfsSriov};
        use hal::{PciDevice, SriovPf};
        for name in FIXTURES {
            let machine = by_name(name).unwrap();
            let fixture = machine.materialize().unwrap();
            let found = SysfsPci::new(SysfsRoot::new(fixture.root()))
                .pci_functions()
                .unwrap();
            assert!(found.errors.is_empty(), "{name}: {:?}", found.errors);
            let vfs: u32 = machine
                .pci
                .iter()
                .filter_map(|f| f.sriov.as_ref())
                .map(|s| s.enabled)
                .sum();
            assert_eq!(
                found.items.len(),
                machine.pci.len() + machine.bridges.len() + vfs as usize,
                "{name}"
            );
            for bridge in &machine.bridges {
                let f = found
                    .items
                    .iter()
                    .find(|f| f.address == bridge.address)
                    .unwrap();
                assert_eq!(
                    (f.vendor_id, f.device_id, f.class, &f.driver),
                    (bridge.vendor, bridge.device, 0x060400, &bridge.driver),
                    "{name} {}",
                    bridge.address
                );
                assert!(f.iommu_group.is_some(), "{name} {}", bridge.address);
            }
            for spec in &machine.pci {
                let f = found
                    .items
                    .iter()
                    .find(|f| f.address == spec.address)
                    .unwrap();
                assert_eq!(
                    (f.vendor_id, f.device_id, f.class),
                    (spec.vendor, spec.device, spec.class),
                    "{name}"
                );
                assert_eq!(
                    f.numa_node,
                    spec.numa_node.map(NumaNode),
                    "{name} {}",
                    spec.address
                );
                assert_eq!(f.driver, spec.driver, "{name} {}", spec.address);
                assert_eq!(f.netdevs, spec.netdevs, "{name} {}", spec.address);
                let root = spec.root_dir.rsplit('/').next().unwrap();
                assert_eq!(
                    f.pcie_root.map(|r| r.to_string()).as_deref(),
                    Some(root),
                    "{name} {}",
                    spec.address
                );
            }
            let sriov = SysfsSriov::new(SysfsRoot::new(fixture.root()))
                .sriov_pfs()
                .unwrap();
            for state in &sriov.items {
                let spec = machine
                    .pci
                    .iter()
                    .find(|f| f.address == state.pf)
                    .unwrap()
                    .sriov
                    .clone()
                    .unwrap();
                assert_eq!(
                    (state.total_vfs, state.num_vfs, state.vfs.len() as u32),
                    (spec.total_vfs, spec.enabled, spec.enabled),
                    "{name}"
                );
                for (vf, netdev) in state.vfs.iter().zip(&spec.vf_netdevs) {
                    let f = found
                        .items
                        .iter()
                        .find(|f| f.address == vf.address)
                        .unwrap();
                    assert_eq!(f.physfn, Some(state.pf));
                    assert_eq!(
                        f.netdevs,
                        std::slice::from_ref(netdev),
                        "{name} {}",
                        vf.address
                    );
                }
            }
        }
    }

    #[test]
    fn gb300_devices_sit_where_the_live_slices_say() {
        use backends::SysfsPci;
        use hal::PciDevice;
        let fixture = by_name("gb300").unwrap().materialize().unwrap();
        let found = SysfsPci::new(SysfsRoot::new(fixture.root()))
            .pci_functions()
            .unwrap();
        let place: Vec<String> = found
            .items
            .iter()
            .map(|f| {
                format!(
                    "{} {} numa{}",
                    f.address,
                    f.pcie_root.unwrap(),
                    f.numa_node.unwrap()
                )
            })
            .collect();
        assert_eq!(
            place,
            [
                "0008:00:00.0 pci0008:00 numa0",
                "0008:06:00.0 pci0008:00 numa0",
                "0009:00:00.0 pci0009:00 numa0",
                "0009:06:00.0 pci0009:00 numa0",
                "0018:00:00.0 pci0018:00 numa1",
                "0018:06:00.0 pci0018:00 numa1",
                "0019:00:00.0 pci0019:00 numa1",
                "0019:06:00.0 pci0019:00 numa1",
                "0101:00:00.0 pci0101:00 numa0",
                "0102:00:00.0 pci0102:00 numa0",
                "0103:00:00.0 pci0103:00 numa1",
                "0104:00:00.0 pci0104:00 numa1",
            ]
        );
        let nic = found
            .items
            .iter()
            .find(|f| f.address.domain == 0x0101)
            .unwrap();
        assert!(nic.sysfs_path.contains("/VMBUS:00/"), "{}", nic.sysfs_path);
        assert!(nic.netdevs.is_empty(), "InfiniBand-mode VFs have no netdev");
    }

    #[test]
    fn fixture_facts() {
        let xeon = by_name("xeon").unwrap().cpu.expected();
        assert_eq!(xeon.len(), 224);
        // Linux numbers first threads first: cpu0 and cpu112 share a core.
        assert_eq!(xeon.first().unwrap().siblings.to_string(), "0,112");
        let rpl = by_name("hybrid").unwrap().cpu.expected();
        assert_eq!(rpl.len(), 20);
        // Intel client parts number a P-core's threads next to each other.
        assert_eq!(rpl[0].siblings.to_string(), "0-1");
        assert_eq!(rpl[11].siblings.to_string(), "10-11");
        // CPUs 62-63 are offline: the kernel lists the online thread of their cores alone.
        let epyc = by_name("epyc").unwrap().cpu.expected();
        assert_eq!(epyc[30].siblings.to_string(), "30");
        assert_eq!(epyc[29].siblings.to_string(), "29,61");
        let gb300 = by_name("gb300").unwrap();
        assert_eq!(gb300.cpu.expected().len(), 128);
        let unknown = by_name("nope").unwrap_err();
        assert!(
            unknown.contains("unknown fixture \"nope\"") && unknown.contains("gb300"),
            "{unknown}"
        );
    }
}
