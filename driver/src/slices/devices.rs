//! Devices of a ResourceSlice from the inventory: GPUs, network functions, IB-only RDMA functions,
//! CPUs. Names are derived from what the hardware is (PCI address, CPU id), never from an
//! enumeration order, so they survive restarts and reboots.

use std::collections::BTreeMap;

use hal::{
    CoreType, CpuInventory, CpuSet, GpuInfo, GpuVendor, LinkLayer, NumaNode, PciFunction, RdmaInfo,
};
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, DeviceCapacity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::config::{CpuMode, SliceConfig};
use super::names::{self, address_label, attribute_string, semver_from_dotted};
use super::partitions;
pub use super::source::DeviceSource;
use crate::inventory::Inventory;

/// The standard attribute domain (k8s.io/dynamic-resource-allocation/deviceattribute).
pub const STANDARD_DOMAIN: &str = "resource.kubernetes.io";

/// One device under construction: typed setters that keep every value within the API's limits.
struct DeviceBuilder {
    name: String,
    attributes: BTreeMap<String, DeviceAttribute>,
    capacity: BTreeMap<String, DeviceCapacity>,
    shared: bool,
}

impl DeviceBuilder {
    fn new(name: String, kind: &str) -> Self {
        let mut builder = DeviceBuilder {
            name,
            attributes: BTreeMap::new(),
            capacity: BTreeMap::new(),
            shared: false,
        };
        builder.string("type", kind);
        builder
    }

    fn string(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        let value = attribute_string(value);
        self.attributes.insert(
            key.to_owned(),
            DeviceAttribute {
                string: Some(value),
                ..Default::default()
            },
        );
    }

    fn int(&mut self, key: &str, value: i64) {
        self.attributes.insert(
            key.to_owned(),
            DeviceAttribute {
                int: Some(value),
                ..Default::default()
            },
        );
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.attributes.insert(
            key.to_owned(),
            DeviceAttribute {
                bool: Some(value),
                ..Default::default()
            },
        );
    }

    /// A `version` value; the caller passes strict semver (checked again by the validator).
    fn version(&mut self, key: &str, value: &str) {
        self.attributes.insert(
            key.to_owned(),
            DeviceAttribute {
                version: Some(value.to_owned()),
                ..Default::default()
            },
        );
    }

    fn capacity(&mut self, key: &str, value: String) {
        self.capacity.insert(
            key.to_owned(),
            DeviceCapacity {
                value: Quantity(value),
                ..Default::default()
            },
        );
    }

    /// Capacity `key` (`total` whole units) is consumed in whole units (`requestPolicy.validRange`:
    /// min 1, step 1): the scheduler rounds a request of `1500m` up to 2. Without a policy it would
    /// record `1500m`. A request that does not name `key` consumes all of it, as without a policy
    /// (`default`: the total; the API server requires a default with a range). A total of 1 has no
    /// step (the API server wants `min + step` within the capacity), and 0 no policy.
    fn in_whole_units(&mut self, key: &str, total: i64) {
        use k8s_openapi::api::resource::v1::{CapacityRequestPolicy, CapacityRequestPolicyRange};
        let Some(capacity) = self.capacity.get_mut(key).filter(|_| total > 0) else {
            return;
        };
        capacity.request_policy = Some(CapacityRequestPolicy {
            default: Some(Quantity(names::whole(total.unsigned_abs()))),
            valid_range: Some(CapacityRequestPolicyRange {
                min: Quantity("1".into()),
                step: (total > 1).then(|| Quantity("1".into())),
                max: None,
            }),
            valid_values: None,
        });
    }

    /// `numaNode` in the driver's domain and in every compatibility domain; nothing when unknown
    /// (a device without a node must not match every other such device under `matchAttribute`).
    fn numa(&mut self, node: Option<NumaNode>, config: &SliceConfig) {
        let Some(node) = node else { return };
        self.int("numaNode", i64::from(node.id()));
        for domain in &config.compat_domains {
            self.int(&format!("{domain}/numaNode"), i64::from(node.id()));
        }
    }

    /// The PCI identity and place: address, ids, names, driver, NUMA node, the standard attributes.
    fn pci(&mut self, f: &PciFunction, config: &SliceConfig) {
        let address = f.address.to_string();
        self.string("pciAddress", &address);
        self.string(&format!("{STANDARD_DOMAIN}/pciBusID"), &address);
        if let Some(root) = f.pcie_root {
            self.string(&format!("{STANDARD_DOMAIN}/pcieRoot"), &root.to_string());
        }
        self.string("vendorId", &format!("{:#06x}", f.vendor_id));
        self.string("deviceId", &format!("{:#06x}", f.device_id));
        if let Some(name) = &f.vendor_name {
            self.string("vendorName", name);
        }
        if let Some(name) = &f.device_name {
            self.string("productName", name);
        }
        if let Some(driver) = &f.driver {
            self.string("driver", driver);
        }
        self.numa(f.numa_node, config);
    }

    fn build(self) -> Device {
        Device {
            name: self.name,
            attributes: (!self.attributes.is_empty()).then_some(self.attributes),
            capacity: (!self.capacity.is_empty()).then_some(self.capacity),
            allow_multiple_allocations: self.shared.then_some(true),
            ..Default::default()
        }
    }
}

/// Every device to publish, in a stable order: GPUs and network functions by PCI address, then CPUs.
pub fn devices(inventory: &Inventory, config: &SliceConfig) -> Vec<Device> {
    devices_with_sources(inventory, config)
        .into_iter()
        .map(|(device, _)| device)
        .collect()
}

/// [`devices`], each with what it is on the machine.
pub fn devices_with_sources(
    inventory: &Inventory,
    config: &SliceConfig,
) -> Vec<(Device, DeviceSource)> {
    let mut out = Vec::new();
    if config.families.gpus {
        for g in &inventory.gpus {
            // VFs of a partitioned GPU are its partition devices, not GPUs of their own.
            if partitions::is_partition_vf(g, inventory, config) {
                continue;
            }
            let Some((mut device, source)) = gpu(g, inventory, config) else {
                continue;
            };
            let parts = partitions::partitions(g, &mut device, inventory, config);
            out.push((device, source));
            out.extend(parts);
        }
    }
    if config.families.nics {
        out.extend(network_functions(inventory, config));
    }
    if config.families.cpus
        && let Some(cpu) = &inventory.cpu
    {
        let groups = cpus(cpu, inventory, config);
        let rt: Vec<(Device, DeviceSource)> = match (config.rt_bandwidth, inventory.rt_limit) {
            (true, Some(limit)) => groups
                .iter()
                .filter_map(|(d, s)| rt_group(d, s, limit.per_cpu()))
                .collect(),
            _ => Vec::new(),
        };
        out.extend(groups);
        out.extend(rt);
    }
    // Unhealthy devices carry the taint that says why (`health`).
    for (device, source) in &mut out {
        if let Some(taint) =
            super::health::of_source(inventory, source, config).and_then(|u| u.taint(config))
        {
            device.taints = Some(vec![taint]);
        }
    }
    out
}

/// A GPU of a compute vendor (NVIDIA, Intel, AMD); `None` for others: a BMC's VGA (ASPEED, Matrox)
/// or an emulated display is not a device anyone claims.
fn gpu(g: &GpuInfo, inventory: &Inventory, config: &SliceConfig) -> Option<(Device, DeviceSource)> {
    let vendor = match g.vendor {
        GpuVendor::Nvidia => "nvidia",
        GpuVendor::Intel => "intel",
        GpuVendor::Amd => "amd",
        GpuVendor::Other(_) => return None,
    };
    let mut d = DeviceBuilder::new(format!("gpu-{}", address_label(g.pci_address)), "gpu");
    match inventory.function(g.pci_address) {
        Some(f) => d.pci(f, config),
        None => {
            let address = g.pci_address.to_string();
            d.string("pciAddress", &address);
            d.string(&format!("{STANDARD_DOMAIN}/pciBusID"), &address);
        }
    }
    d.string("vendor", vendor);
    if let Some(driver) = &g.driver {
        d.string("driver", driver);
    }
    if let Some(product) = &g.product {
        d.string("productName", product);
    }
    if let Some(uuid) = &g.uuid {
        d.string("uuid", uuid);
    }
    if let Some(card) = &g.drm_card {
        d.string("drmCard", card);
    }
    if let Some(minor) = g.nvidia_minor {
        d.int("minor", i64::from(minor));
    }
    if let Some(architecture) = &g.architecture {
        d.string("architecture", architecture);
    }
    if let Some(clique) = &g.nvlink_clique {
        d.string("nvlinkClique", clique);
    }
    for (key, count) in [("tiles", g.tiles), ("executionUnits", g.execution_units)] {
        if let Some(count) = count {
            d.int(key, i64::from(count));
        }
    }
    // Vendor versions as `version` values (semver), as NVIDIA's driver publishes them:
    // 580.105.08 becomes 580.105.8; a text that is not 1 to 3 numbers is left out.
    for (key, text) in [
        ("cudaComputeCapability", &g.compute_capability),
        ("driverVersion", &g.driver_version),
        ("cudaDriverVersion", &g.cuda_driver_version),
    ] {
        if let Some(version) = text.as_deref().and_then(semver_from_dotted) {
            d.version(key, &version);
        }
    }
    if let Some(bytes) = g.memory_bytes {
        d.capacity("memory", names::mebibytes(bytes / (1024 * 1024)));
    }
    Some((d.build(), DeviceSource::Gpu(g.clone())))
}

/// Network-class functions (PFs and VFs) and functions with an RDMA device (IB-only ones included,
/// whatever their class: QLogic's qib is a serial-bus controller).
fn network_functions(inventory: &Inventory, config: &SliceConfig) -> Vec<(Device, DeviceSource)> {
    let rdma: BTreeMap<hal::PciAddress, &RdmaInfo> = inventory
        .rdma
        .iter()
        .filter_map(|r| Some((r.pci_address?, r)))
        .collect();
    let sriov: BTreeMap<hal::PciAddress, &hal::SriovState> =
        inventory.sriov.iter().map(|s| (s.pf, s)).collect();
    let vf_index: BTreeMap<hal::PciAddress, u32> = inventory
        .sriov
        .iter()
        .flat_map(|s| s.vfs.iter().map(|v| (v.address, v.index)))
        .collect();
    inventory
        .pci
        .iter()
        .filter(|f| f.is_network() || rdma.contains_key(&f.address))
        .map(|f| {
            let rdma = rdma.get(&f.address).copied();
            let ib_only = f.netdevs.is_empty() && rdma.is_some_and(RdmaInfo::is_ib_only);
            let (prefix, kind) = if ib_only {
                ("rdma", "rdma")
            } else {
                ("nic", "nic")
            };
            let mut d = DeviceBuilder::new(format!("{prefix}-{}", address_label(f.address)), kind);
            d.pci(f, config);
            if let Some(name) = f.netdevs.first() {
                d.string("ifName", name);
            }
            if let Some(state) = sriov.get(&f.address) {
                d.bool("sriov", state.total_vfs > 0);
                d.int("sriovVfs", i64::from(state.total_vfs));
            }
            d.bool("isSriovVf", f.physfn.is_some());
            if let Some(pf) = f.physfn {
                d.string("parentPf", &pf.to_string());
                if let Some(index) = vf_index.get(&f.address) {
                    d.int("vfIndex", i64::from(*index));
                }
            }
            d.bool("rdma", rdma.is_some());
            if let Some(r) = rdma {
                d.string("rdmaDevice", &r.name);
                d.bool("ibOnly", ib_only);
                if let Some(port) = r.ports.first() {
                    if let Some(layer) = &port.link_layer {
                        let layer = match layer {
                            LinkLayer::Infiniband => "InfiniBand",
                            LinkLayer::Ethernet => "Ethernet",
                            LinkLayer::Other(other) => other.as_str(),
                        };
                        d.string("linkLayer", layer);
                    }
                    if let Some(rate) = &port.rate {
                        d.string("portRate", rate);
                    }
                    if let Some(state) = &port.state {
                        d.string("portState", state);
                    }
                    if let Some(mbps) = port.rate_mbps {
                        d.capacity("bandwidth", names::megabits(mbps));
                    }
                }
            }
            let source = DeviceSource::Nic {
                function: Box::new(f.clone()),
                rdma: rdma.cloned(),
            };
            (d.build(), source)
        })
        .collect()
}

/// The RT bandwidth device of a CPU group: `rt-numa-0` beside `cpus-numa-0`, with the group's placement
/// attributes, `perCpuRtBandwidth` and capacity `rtBandwidth` (CPUs' worth, in milli-CPUs), shareable.
fn rt_group(group: &Device, source: &DeviceSource, per_cpu: u64) -> Option<(Device, DeviceSource)> {
    let DeviceSource::CpuGroup(cpus) = source else {
        return None;
    };
    let name = group.name.strip_prefix("cpus-")?;
    let mut attributes = group.attributes.clone().unwrap_or_default();
    attributes.insert(
        "type".into(),
        DeviceAttribute {
            string: Some("rt".into()),
            ..Default::default()
        },
    );
    attributes.insert(
        "perCpuRtBandwidth".into(),
        DeviceAttribute {
            string: Some(format!("{}m", per_cpu / 1000)),
            ..Default::default()
        },
    );
    let total_milli = per_cpu * cpus.len() as u64 / 1000;
    let capacity = BTreeMap::from([(
        "rtBandwidth".to_owned(),
        DeviceCapacity {
            value: Quantity(names::millis(total_milli)),
            ..Default::default()
        },
    )]);
    let device = Device {
        name: format!("rt-{name}"),
        attributes: Some(attributes),
        capacity: Some(capacity),
        allow_multiple_allocations: Some(true),
        ..Default::default()
    };
    let source = DeviceSource::RtGroup {
        cpus: cpus.clone(),
        per_cpu,
    };
    Some((device, source))
}

/// Allocatable CPUs: online and not reserved.
pub fn allocatable_cpus(cpu: &CpuInventory, reserved: &CpuSet) -> CpuSet {
    cpu.online().difference(reserved)
}

fn cpus(
    cpu: &CpuInventory,
    inventory: &Inventory,
    config: &SliceConfig,
) -> Vec<(Device, DeviceSource)> {
    let allocatable = allocatable_cpus(cpu, &config.reserved_cpus);
    let usable = cpu.cpus.iter().filter(|c| allocatable.contains(c.id));
    match config.cpu_mode {
        // A CPU seen online and offline now stays published, tainted (its last-known view).
        CpuMode::Individual => cpu
            .cpus
            .iter()
            .filter(|c| {
                allocatable.contains(c.id)
                    || (!config.reserved_cpus.contains(c.id)
                        && inventory
                            .health
                            .contains_key(&crate::unhealthy::DeviceKey::Cpu(c.id)))
            })
            .map(|c| {
                let mut d = DeviceBuilder::new(format!("cpu-{}", c.id), "cpu");
                d.int("cpuId", i64::from(c.id));
                if let Some(core) = c.core {
                    d.int("coreId", i64::from(core));
                }
                if let Some(package) = c.package {
                    d.int("socket", i64::from(package));
                }
                if let Some(die) = c.die {
                    d.int("die", i64::from(die));
                }
                if let Some(l3) = c.l3 {
                    d.int("l3Id", i64::from(l3));
                }
                d.string("coreType", core_type(c.core_type));
                if let Some(siblings) = &c.siblings {
                    d.string("smtSiblings", &siblings.to_cpulist());
                }
                d.numa(c.numa_node, config);
                (d.build(), DeviceSource::Cpu(c.id))
            })
            .collect(),
        CpuMode::GroupedByNuma | CpuMode::GroupedBySocket => {
            let by_numa = config.cpu_mode == CpuMode::GroupedByNuma;
            let mut groups: BTreeMap<u32, Vec<&hal::LogicalCpu>> = BTreeMap::new();
            for c in usable {
                let key = match by_numa {
                    true => c.numa_node.map(NumaNode::id),
                    false => c.package,
                };
                // A CPU without a node (or socket) cannot be placed in a group: it is left out.
                if let Some(key) = key {
                    groups.entry(key).or_default().push(c);
                }
            }
            groups
                .into_iter()
                .map(|(key, members)| {
                    let (prefix, kind) = match by_numa {
                        true => ("numa", "cpus"),
                        false => ("socket", "cpus"),
                    };
                    let mut d = DeviceBuilder::new(format!("cpus-{prefix}-{key}"), kind);
                    d.shared = true;
                    let count = members.len() as i64;
                    d.int("numCpus", count);
                    let smt = members
                        .iter()
                        .any(|c| c.siblings.as_ref().is_some_and(|s| s.len() > 1));
                    d.bool("smtEnabled", smt);
                    let single = |values: Vec<Option<u32>>| -> Option<u32> {
                        let first = *values.first()?;
                        values
                            .iter()
                            .all(|v| *v == first)
                            .then_some(first)
                            .flatten()
                    };
                    if let Some(socket) = single(members.iter().map(|c| c.package).collect()) {
                        d.int("socket", i64::from(socket));
                    }
                    let nodes = members
                        .iter()
                        .map(|c| c.numa_node.map(NumaNode::id))
                        .collect();
                    d.numa(single(nodes).map(NumaNode), config);
                    d.capacity("cpu", names::whole(count.unsigned_abs()));
                    d.in_whole_units("cpu", count);
                    let set: CpuSet = members.iter().map(|c| c.id).collect();
                    (d.build(), DeviceSource::CpuGroup(set))
                })
                .collect()
        }
    }
}

fn core_type(kind: CoreType) -> &'static str {
    match kind {
        CoreType::Standard => "standard",
        CoreType::Performance => "performance",
        CoreType::Efficiency => "efficiency",
    }
}
