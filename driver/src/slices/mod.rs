//! ResourceSlices from the HAL inventory, valid by construction: [`build_slices`] turns an
//! [`Inventory`] and a [`SliceConfig`] into the node's pool, split into
//! slices within the API server's limits, and [`validate::validate_pool`] checks every slice before it
//! leaves the process.

pub mod args;
pub mod config;
pub mod devices;
pub mod names;
pub mod validate;

use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use config::{CpuMode, DEFAULT_DRIVER_NAME, Families, SliceConfig};

use crate::inventory::Inventory;

/// Devices per slice (`ResourceSliceMaxDevices`).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Devices per slice when any device uses taints, counters or list attributes.
pub const MAX_DEVICES_PER_SLICE_ADVANCED: usize = 64;

/// The node's pool: every device of the inventory, split into slices of at most 128 devices, all
/// with the same generation and `resourceSliceCount`. Slice names are stable (`<node>-<driver>-<i>`,
/// shortened with a hash when too long), so a publisher can compare and update them in place.
pub fn build_slices(
    inventory: &Inventory,
    config: &SliceConfig,
    generation: i64,
) -> Vec<ResourceSlice> {
    let devices = devices::devices(inventory, config);
    let per_slice = match devices.iter().any(uses_advanced_features) {
        true => MAX_DEVICES_PER_SLICE_ADVANCED,
        false => MAX_DEVICES_PER_SLICE,
    };
    let chunks: Vec<Vec<Device>> = match devices.is_empty() {
        // An empty pool is still published, so consumers see the node has nothing.
        true => vec![Vec::new()],
        false => devices.chunks(per_slice).map(<[Device]>::to_vec).collect(),
    };
    let count = chunks.len() as i64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, devices)| ResourceSlice {
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
                devices: Some(devices),
                ..Default::default()
            },
        })
        .collect()
}

/// Taints, counters or list-typed attributes lower the per-slice limit to 64.
pub fn uses_advanced_features(device: &Device) -> bool {
    device.taints.as_ref().is_some_and(|t| !t.is_empty())
        || device
            .consumes_counters
            .as_ref()
            .is_some_and(|c| !c.is_empty())
}

/// `<node>-<driver with dots as dashes>-<index>` when that is a DNS subdomain; for a node name too
/// long for it, `<hash of the node name>-<index>.<driver>`, still unique per node and valid for any
/// valid driver name.
pub fn slice_name(node: &str, driver: &str, index: usize) -> String {
    let full = format!("{node}-{}-{index}", driver.replace('.', "-"));
    if names::is_dns_subdomain(&full, 253) {
        return full;
    }
    format!(
        "{:016x}-{index}.{}",
        fnv1a(node.as_bytes()),
        driver.to_ascii_lowercase()
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
