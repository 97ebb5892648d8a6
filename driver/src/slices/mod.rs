//! ResourceSlices from the HAL inventory, valid by construction: [`build_slices`] turns an
//! [`Inventory`] and a [`SliceConfig`] into the node's pool, split into
//! slices within the API server's limits (the kit's [`dra_kubelet_plugin::slices`], whose
//! `validate_pool` the publisher runs on every slice before it leaves the process).

pub mod api_version;
pub mod args;
pub mod config;
pub mod devices;
pub mod health;
pub mod names;
pub mod partitions;
pub mod source;

use dra_kubelet_plugin::slices::{
    MAX_COUNTER_SETS_PER_SLICE, MAX_COUNTERS_PER_SLICE, max_devices_per_slice, slice_name,
};
use k8s_openapi::api::resource::v1::{
    CounterSet, Device, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use config::{ConfigError, CounterLayout, CpuMode, DEFAULT_DRIVER_NAME, Families, SliceConfig};

use crate::inventory::Inventory;

/// The node's pool: every device of the inventory, split into slices of at most 128 devices, all
/// with the same generation and `resourceSliceCount`. Slice names are stable (`<node>-<driver>-<i>`,
/// shortened with a hash when too long), so a publisher can compare and update them in place.
pub fn build_slices(
    inventory: &Inventory,
    config: &SliceConfig,
    generation: i64,
) -> Vec<ResourceSlice> {
    build_slices_of(
        devices::devices(inventory, config),
        inventory,
        config,
        generation,
    )
}

/// [`build_slices`] of `devices`, the devices of `inventory` already built ([`devices::devices`]),
/// for a caller that uses them for something else too.
pub fn build_slices_of(
    devices: Vec<Device>,
    inventory: &Inventory,
    config: &SliceConfig,
    generation: i64,
) -> Vec<ResourceSlice> {
    // Only the sets a published device consumes (not those of a GPU whose family is not
    // published, or whose devices were all left out).
    let counter_sets: Vec<CounterSet> = inventory
        .gpus
        .iter()
        .filter_map(|g| partitions::counter_set(g, inventory, config))
        .filter(|set| devices.iter().any(|d| consumes(d, &set.name)))
        .collect();
    let per_slice = max_devices_per_slice(&devices);
    let own_slice = config.counter_layout == CounterLayout::OwnSlice;
    let mut chunks: Vec<(Vec<Device>, Vec<CounterSet>)> = match own_slice {
        // Kubernetes 1.34: a counter set lives in the slice of the devices that consume it.
        false => chunk(devices, per_slice, &counter_sets)
            .into_iter()
            .map(|devices| {
                let used = counter_sets
                    .iter()
                    .filter(|set| devices.iter().any(|d| consumes(d, &set.name)))
                    .cloned()
                    .collect();
                (devices, used)
            })
            .collect(),
        // 1.35 and later: counter sets in slices of their own, devices in the others.
        true => chunk(devices, per_slice, &[])
            .into_iter()
            .map(|devices| (devices, Vec::new()))
            .collect(),
    };
    if own_slice {
        if chunks.first().is_some_and(|(d, _)| d.is_empty()) && !counter_sets.is_empty() {
            chunks.clear();
        }
        for sets in counter_sets.chunks(MAX_COUNTER_SETS_PER_SLICE) {
            chunks.push((Vec::new(), sets.to_vec()));
        }
    }
    let count = chunks.len() as i64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, (devices, used))| {
            let only_counters = devices.is_empty() && !used.is_empty();
            ResourceSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(&config.node_name, &config.driver_name, i)),
                    ..Default::default()
                },
                spec: ResourceSliceSpec {
                    driver: config.driver_name.clone(),
                    node_name: Some(config.node_name.clone()),
                    pool: ResourcePool {
                        name: config.node_name.clone(),
                        generation,
                        resource_slice_count: count,
                    },
                    devices: (!only_counters).then_some(devices),
                    shared_counters: (!used.is_empty()).then_some(used),
                    ..Default::default()
                },
            }
        })
        .collect()
}

/// The devices in slices of at most `per_slice`, never splitting the devices of one counter set, and
/// with at most 32 counters of counter sets in a slice (Kubernetes 1.34). An empty pool is still one
/// (empty) slice, so consumers see the node has nothing.
fn chunk(devices: Vec<Device>, per_slice: usize, sets: &[CounterSet]) -> Vec<Vec<Device>> {
    // Consecutive devices of one counter set form a group (a GPU and its partitions are adjacent).
    let mut groups: Vec<(Option<String>, Vec<Device>)> = Vec::new();
    for device in devices {
        let set = device
            .consumes_counters
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.counter_set.clone());
        match groups.last_mut() {
            Some((last, group)) if set.is_some() && *last == set => group.push(device),
            _ => groups.push((set, vec![device])),
        }
    }
    let counters_of = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| sets.iter().find(|s| &s.name == n))
            .map_or(0, |s| s.counters.len())
    };
    let mut chunks: Vec<Vec<Device>> = vec![Vec::new()];
    let mut counters = 0;
    for (set, group) in groups {
        let more = counters_of(&set);
        let full = chunks.last().map_or(0, Vec::len);
        let fits = full + group.len() <= per_slice && counters + more <= MAX_COUNTERS_PER_SLICE;
        if !fits && full > 0 {
            chunks.push(Vec::new());
            counters = 0;
        }
        counters += more;
        if set.is_some() {
            if let Some(last) = chunks.last_mut() {
                last.extend(group);
            }
        } else {
            for device in group {
                if chunks.last().is_some_and(|c| c.len() >= per_slice) {
                    chunks.push(Vec::new());
                    counters = 0;
                }
                if let Some(last) = chunks.last_mut() {
                    last.push(device);
                }
            }
        }
    }
    chunks
}

fn consumes(device: &Device, set: &str) -> bool {
    device
        .consumes_counters
        .iter()
        .flatten()
        .any(|c| c.counter_set == set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
