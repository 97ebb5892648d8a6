//! `networkData` (ips, interfaceName, hardwareAddress) of an attached function into the claim's
//! `status.devices[]`, through the preparer's status write (server-side apply by the driver): the
//! driver's current entries are read and written back with the function's `networkData` replaced, so
//! the rest of what the preparer wrote (`data`: PCI address, netdev, network) stays.

use serde_json::{Value, json};

use super::cni::NetworkData;
use crate::plugin::api::ClaimRef;
use crate::plugin::prepare::{ClaimSource, StatusWriteError};

/// This driver's entries of `devices` with `networkData` of `device` set to `data` (an entry added
/// when the preparer wrote none for it).
pub fn with_network_data(
    devices: &[Value],
    driver: &str,
    pool: &str,
    device: &str,
    data: &NetworkData,
) -> Vec<Value> {
    let mut mine: Vec<Value> = devices
        .iter()
        .filter(|d| d["driver"] == driver)
        .cloned()
        .collect();
    let network = serde_json::to_value(data).unwrap_or(Value::Null);
    match mine.iter_mut().find(|d| d["device"] == device) {
        Some(entry) => {
            if let Some(map) = entry.as_object_mut() {
                map.insert("networkData".into(), network);
            }
        }
        None => mine.push(
            json!({"driver": driver, "pool": pool, "device": device, "networkData": network}),
        ),
    }
    mine
}

/// Writes `data` as the `networkData` of `device` in `claim`'s status: read, changed and written
/// back in one step of `claims` ([`ClaimSource::change_device_status`]).
pub async fn write_network_data(
    claims: &dyn ClaimSource,
    claim: &ClaimRef,
    driver: &str,
    pool: &str,
    device: &str,
    data: &NetworkData,
) -> Result<(), StatusWriteError> {
    let (owner, pool, device, data) = (
        driver.to_owned(),
        pool.to_owned(),
        device.to_owned(),
        data.clone(),
    );
    let change = move |mine: Vec<Value>| with_network_data(&mine, &owner, &pool, &device, &data);
    claims
        .change_device_status(&claim.namespace, &claim.name, driver, Box::new(change))
        .await
}
