//! The API server's rules for ResourceSlices, for any driver: the limits a pool is split by
//! ([`max_devices_per_slice`], the counter limits), stable slice names ([`slice_name`]), the names and
//! values it accepts ([`names`]), and a check of a whole pool before it is sent ([`validate_pool`],
//! which [`Publisher`](crate::publish::Publisher) runs on every publish). The rules are those of
//! `k8s.io/kubernetes/pkg/apis/resource/validation` for `resource.k8s.io/v1` (Kubernetes 1.34 and
//! 1.35); a slice that breaks one is a bug in the driver's model, reported with the field that breaks
//! it instead of a 422 from the server.

pub mod names;
pub mod validate;

pub use validate::{KubeVersion, SliceError, validate_pool};

use k8s_openapi::api::resource::v1::Device;

/// Devices per slice (`ResourceSliceMaxDevices`).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Devices per slice when any device uses taints or counters
/// (`ResourceSliceMaxDevicesWithTaintsOrConsumesCounters` in 1.35, `...WithAdvancedFeatures` in 1.36,
/// which also counts list-typed attributes; `k8s_openapi`'s v1 types have none).
pub const MAX_DEVICES_PER_SLICE_ADVANCED: usize = 64;
/// Counters across all counter sets of a slice (Kubernetes 1.34).
pub const MAX_COUNTERS_PER_SLICE: usize = 32;
/// Counter sets in a slice of their own (Kubernetes 1.35 and later).
pub const MAX_COUNTER_SETS_PER_SLICE: usize = 8;
/// Attributes plus capacities of one device.
pub const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;

/// Taints or counters lower the per-slice limit to 64.
pub fn uses_advanced_features(device: &Device) -> bool {
    device.taints.as_ref().is_some_and(|t| !t.is_empty())
        || device
            .consumes_counters
            .as_ref()
            .is_some_and(|c| !c.is_empty())
}

/// How many of `devices` one slice may hold: 64 when any of them uses taints or counters, else 128.
pub fn max_devices_per_slice(devices: &[Device]) -> usize {
    match devices.iter().any(uses_advanced_features) {
        true => MAX_DEVICES_PER_SLICE_ADVANCED,
        false => MAX_DEVICES_PER_SLICE,
    }
}

/// `<node>-<driver with dots as dashes>-<index>` when that is a DNS subdomain; for a node name too
/// long for it, `<hash of the node name>-<index>.<driver>`, still unique per node and valid for any
/// valid driver name. Stable across restarts, so a publisher can compare and update slices in place.
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

/// FNV-1a, 64 bits: a stable hash (std's `DefaultHasher` may change between Rust releases, and the
/// name must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
