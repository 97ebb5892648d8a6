//! What the kubelet is told of every published device ([`report`]).

use crate::inventory::Inventory;
use crate::plugin::api::{DeviceHealth, HealthReport, HealthStatus};
use crate::slices::SliceConfig;
use crate::slices::devices::{DeviceSource, devices_with_sources};
use crate::slices::health::of_source;

/// What the kubelet is told of every published device (`DRAResourceHealth`): an unhealthy device
/// ([`of_source`]: a critical XID, gone, offline, a link or port down) is UNHEALTHY with why, whether
/// or not its taint is published (a degraded device has none for a 1.34 API server), every other
/// published device HEALTHY, all checked at `now` (Unix seconds). The kubelet takes a device as
/// unknown when no report came within `timeout_seconds`.
pub fn report(
    inventory: &Inventory,
    config: &SliceConfig,
    now: i64,
    timeout_seconds: i64,
) -> HealthReport {
    let devices = devices_with_sources(inventory, config);
    report_of(&devices, inventory, config, now, timeout_seconds)
}

/// [`report`] of `devices`, the published devices of `inventory` already built
/// ([`devices_with_sources`]), for a caller that publishes them too.
pub fn report_of(
    devices: &[(k8s_openapi::api::resource::v1::Device, DeviceSource)],
    inventory: &Inventory,
    config: &SliceConfig,
    now: i64,
    timeout_seconds: i64,
) -> HealthReport {
    let devices = devices
        .iter()
        .map(|(device, source)| {
            let (status, message) = match of_source(inventory, source, config) {
                Some(unhealthy) => (HealthStatus::Unhealthy, unhealthy.message),
                None => (HealthStatus::Healthy, String::new()),
            };
            DeviceHealth {
                pool_name: config.node_name.clone(),
                device_name: device.name.clone(),
                status,
                last_updated: now,
                message,
            }
        })
        .collect();
    HealthReport {
        devices,
        timeout_seconds,
    }
}
