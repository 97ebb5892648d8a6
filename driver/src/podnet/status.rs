//! `networkData` (ips, interfaceName, hardwareAddress) of an attached function into the claim's
//! `status.devices[]`, through the preparer's status write (server-side apply by the driver): the
//! driver's current entries are read and written back with the function's `networkData` replaced, so
//! the rest of what the preparer wrote (`data`: PCI address, netdev, network) stays.

use serde_json::Value;

use super::cni::NetworkData;
use crate::plugin::api::ClaimRef;
use crate::plugin::prepare::{ClaimSource, StatusWriteError};

/// This driver's entries of `devices` with `networkData` of `device` set to `data`; `None` when the
/// driver has no entry for `device`: the claim's status was cleared (its unprepare) or never written
/// (the preparer's write failed; its tries again keep what this would write only when the entry is
/// there), and a pod's data must not bring back an entry of a claim no longer prepared.
pub fn with_network_data(
    devices: &[Value],
    driver: &str,
    device: &str,
    data: &NetworkData,
) -> Option<Vec<Value>> {
    let mut mine: Vec<Value> = devices
        .iter()
        .filter(|d| d["driver"] == driver)
        .cloned()
        .collect();
    let network = serde_json::to_value(data).unwrap_or(Value::Null);
    let entry = mine.iter_mut().find(|d| d["device"] == device)?;
    entry.as_object_mut()?.insert("networkData".into(), network);
    Some(mine)
}

/// Writes `data` as the `networkData` of `device` in `claim`'s status: read, changed and written
/// back in one step of `claims` ([`ClaimSource::change_device_status`]).
pub async fn write_network_data(
    claims: &dyn ClaimSource,
    claim: &ClaimRef,
    driver: &str,
    device: &str,
    data: &NetworkData,
) -> Result<(), StatusWriteError> {
    let (owner, device, data) = (driver.to_owned(), device.to_owned(), data.clone());
    let change = move |mine: Vec<Value>| with_network_data(&mine, &owner, &device, &data);
    claims
        .change_device_status(claim, driver, Box::new(change))
        .await
}
