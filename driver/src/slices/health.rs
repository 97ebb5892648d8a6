//! A published device's health ([`of_source`]): the fact `health::Health` keeps in the inventory for
//! its GPU, network function or CPU, or for a CPU group, derived from its CPUs.

use hal::{CpuSet, LogicalCpu};

use super::config::{CpuMode, SliceConfig};
use super::source::DeviceSource;
use crate::inventory::Inventory;
use crate::unhealthy::{DeviceKey, OFFLINE, Severity, Unhealthy};

/// The health of the device published for `source`, when it is unhealthy: its GPU's (a partition
/// shares its GPU's), its network function's, its CPU's; a CPU group (and its real-time bandwidth
/// device) is degraded while CPUs of the group that were online are offline (its capacity counts
/// the online ones).
pub fn of_source(
    inventory: &Inventory,
    source: &DeviceSource,
    config: &SliceConfig,
) -> Option<Unhealthy> {
    let key = match source {
        DeviceSource::Gpu(gpu) => DeviceKey::Gpu(gpu.pci_address),
        DeviceSource::GpuPartition { pf, .. } => DeviceKey::Gpu(pf.pci_address),
        DeviceSource::Nic { function, .. } => DeviceKey::Function(function.address),
        DeviceSource::Cpu(id) => DeviceKey::Cpu(*id),
        DeviceSource::CpuGroup(cpus) | DeviceSource::RtGroup { cpus, .. } => {
            return group_health(inventory, cpus, config);
        }
    };
    inventory.health.get(&key).cloned()
}

/// The group of the online CPUs `cpus` is degraded by its CPUs that went offline.
fn group_health(inventory: &Inventory, cpus: &CpuSet, config: &SliceConfig) -> Option<Unhealthy> {
    let topology = inventory.cpu.as_ref()?;
    let group_of = |cpu: &LogicalCpu| match config.cpu_mode {
        CpuMode::GroupedByNuma => cpu.numa_node.map(|n| n.id()),
        CpuMode::GroupedBySocket => cpu.package,
        CpuMode::Individual => None,
    };
    let group = topology.cpu(cpus.first()?).and_then(group_of)?;
    let offline: Vec<(u32, &Unhealthy)> = inventory
        .health
        .iter()
        .filter_map(|(key, unhealthy)| match key {
            DeviceKey::Cpu(id) if unhealthy.reason == OFFLINE => Some((*id, unhealthy)),
            _ => None,
        })
        .filter(|(id, _)| topology.cpu(*id).and_then(group_of) == Some(group))
        .filter(|(id, _)| !config.reserved_cpus.contains(*id))
        .collect();
    let since = offline.iter().map(|(_, u)| u.since.clone()).min()?;
    let list: CpuSet = offline.iter().map(|(id, _)| *id).collect();
    Some(Unhealthy {
        reason: "cpus-offline".into(),
        message: format!(
            "CPUs {} of this group were online and are offline now; its capacity counts the {} online",
            list.to_cpulist(),
            cpus.len()
        ),
        severity: Severity::Degraded,
        since,
    })
}
