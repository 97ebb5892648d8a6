//! SR-IOV partitions of Intel GPUs, published with structured parameters (`--gpu-partitions N`).
//!
//! Each Intel GPU that can make at least N VFs is published as the whole GPU plus N partition devices
//! (`<gpu>-vf0` .. `<gpu>-vf<N-1>`), all consuming one shared counter set named after the GPU: `vfs`
//! (N slots; a partition takes 1, the whole GPU all N) and `memory` (the GPU's local memory; a partition
//! takes an even share, as the kernel's auto-provisioning splits it). The scheduler can then hand out
//! the whole GPU or partitions, never both. The VFs themselves do not exist until the first partition
//! is prepared (the preparer writes `sriov_numvfs = N`), and go away when the last is unprepared.
//!
//! Kubernetes 1.34 wants a counter set in the same ResourceSlice as the devices that consume it (1.35
//! and later want counter sets in slices of their own): [`super::build_slices`] keeps a GPU, its
//! partitions and its counter set together, within the 1.34 limits (32 counters across the sets of a
//! slice, 64 devices in a slice with counters). The 1.35 layout is not published yet.

use std::collections::BTreeMap;

use hal::{GpuInfo, GpuVendor};
use k8s_openapi::api::resource::v1::{
    Counter, CounterSet, Device, DeviceAttribute, DeviceCapacity, DeviceCounterConsumption,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::config::SliceConfig;
use super::names::address_label;
use super::source::DeviceSource;
use crate::inventory::Inventory;

pub use super::config::MAX_GPU_PARTITIONS;

/// Counters a counter set of a partitioned GPU holds.
pub const COUNTERS_PER_SET: usize = 2;

/// How many partitions `g` is published with: `config.gpu_partitions` for an Intel GPU (a PF) that
/// can make that many VFs, else none.
pub fn partition_count(g: &GpuInfo, inventory: &Inventory, config: &SliceConfig) -> Option<u32> {
    let count = config.gpu_partitions;
    if count == 0 || g.vendor != GpuVendor::Intel {
        return None;
    }
    if inventory
        .function(g.pci_address)
        .is_some_and(|f| f.physfn.is_some())
    {
        return None;
    }
    let state = inventory.sriov.iter().find(|s| s.pf == g.pci_address)?;
    // VFs someone else made (another count) are left alone: the GPU is published as it is.
    (state.total_vfs >= count && (state.num_vfs == 0 || state.num_vfs == count)).then_some(count)
}

/// Whether `g` is a VF of a GPU published with partitions (it is one of them).
pub fn is_partition_vf(g: &GpuInfo, inventory: &Inventory, config: &SliceConfig) -> bool {
    let Some(pf) = inventory.function(g.pci_address).and_then(|f| f.physfn) else {
        return false;
    };
    inventory
        .gpus
        .iter()
        .find(|p| p.pci_address == pf)
        .is_some_and(|p| partition_count(p, inventory, config).is_some())
}

/// The GPU whose partition `device` names (`gpu-<address>-vf<index>`, as published here).
pub fn partition_gpu(device: &str) -> Option<hal::PciAddress> {
    let (set, index) = device.strip_prefix("gpu-")?.rsplit_once("-vf")?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `address_label` in reverse: `0000-4d-00-0` is `0000:4d:00.0`.
    let [domain, bus, slot, function] = set.split('-').collect::<Vec<_>>()[..] else {
        return None;
    };
    hal::PciAddress::parse(&format!("{domain}:{bus}:{slot}.{function}")).ok()
}

/// The counter set name of a partitioned GPU: its device name.
pub fn counter_set_name(g: &GpuInfo) -> String {
    format!("gpu-{}", address_label(g.pci_address))
}

fn memory_mi(g: &GpuInfo) -> Option<u64> {
    g.memory_bytes.map(|b| b / (1024 * 1024))
}

fn consumption(set: &str, vfs: u32, memory_mi: Option<u64>) -> DeviceCounterConsumption {
    let mut counters = BTreeMap::from([(
        "vfs".to_owned(),
        Counter {
            value: Quantity(super::names::whole(u64::from(vfs))),
        },
    )]);
    if let Some(mi) = memory_mi {
        counters.insert(
            "memory".to_owned(),
            Counter {
                value: Quantity(super::names::mebibytes(mi)),
            },
        );
    }
    DeviceCounterConsumption {
        counter_set: set.to_owned(),
        counters,
        ..Default::default()
    }
}

/// The counter set of `g`, when it is published with partitions.
pub fn counter_set(g: &GpuInfo, inventory: &Inventory, config: &SliceConfig) -> Option<CounterSet> {
    let count = partition_count(g, inventory, config)?;
    let consumption = consumption(&counter_set_name(g), count, memory_mi(g));
    Some(CounterSet {
        name: consumption.counter_set,
        counters: consumption.counters,
    })
}

/// For a partitioned GPU: makes `whole` consume the whole counter set, and returns its partition
/// devices (each a copy of the GPU's placement attributes with its share of memory).
pub fn partitions(
    g: &GpuInfo,
    whole: &mut Device,
    inventory: &Inventory,
    config: &SliceConfig,
) -> Vec<(Device, DeviceSource)> {
    let Some(count) = partition_count(g, inventory, config) else {
        return Vec::new();
    };
    let set = counter_set_name(g);
    let memory = memory_mi(g);
    whole.consumes_counters = Some(vec![consumption(&set, count, memory)]);
    let int = |v: i64| DeviceAttribute {
        int: Some(v),
        ..Default::default()
    };
    let attributes = whole.attributes.get_or_insert_default();
    attributes.insert("partitions".into(), int(i64::from(count)));
    // The partitions share the GPU's placement and identity, not its PCI address (a VF has its own).
    let inherited: BTreeMap<String, DeviceAttribute> = attributes
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "pciAddress" | "resource.kubernetes.io/pciBusID" | "partitions"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let share = memory.map(|mi| mi / u64::from(count));
    (0..count)
        .map(|index| {
            let mut attributes = inherited.clone();
            attributes.insert(
                "parentPciAddress".into(),
                DeviceAttribute {
                    string: Some(g.pci_address.to_string()),
                    ..Default::default()
                },
            );
            attributes.insert("partitionIndex".into(), int(i64::from(index)));
            attributes.insert(
                "isPartition".into(),
                DeviceAttribute {
                    bool: Some(true),
                    ..Default::default()
                },
            );
            let capacity = share.map(|mi| {
                BTreeMap::from([(
                    "memory".to_owned(),
                    DeviceCapacity {
                        value: Quantity(super::names::mebibytes(mi)),
                        ..Default::default()
                    },
                )])
            });
            let device = Device {
                name: format!("{set}-vf{index}"),
                attributes: Some(attributes),
                capacity,
                consumes_counters: Some(vec![consumption(&set, 1, share)]),
                ..Default::default()
            };
            let source = DeviceSource::GpuPartition {
                pf: Box::new(g.clone()),
                index,
                count,
            };
            (device, source)
        })
        .collect()
}
