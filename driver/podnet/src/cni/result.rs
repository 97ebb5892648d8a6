//! A CNI result (spec 0.4.0 and 1.0.0 share the fields read here) and what of it goes into the claim's
//! `status.devices[].networkData`.

use serde_json::Value;

/// `interfaces[]` of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Interface {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its hardware address.
    #[serde(default)]
    pub mac: String,
    /// The namespace it is in; empty for a host-side interface.
    #[serde(default)]
    pub sandbox: String,
}

/// `ips[]` of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IpConfig {
    /// A CIDR (`192.0.2.20/24`).
    pub address: String,
    /// Its gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The index in `interfaces` it is on.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// The fields of a result read here; the rest is kept as JSON (for `prevResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct CniResult {
    /// `cniVersion`.
    #[serde(default, rename = "cniVersion")]
    pub cni_version: String,
    /// Interfaces created or moved.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

/// `networkData` of a claim's device status (`resource.k8s.io/v1` `NetworkDeviceData`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkData {
    /// The interface's name in the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// Its addresses, as CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hardware_address: String,
}

/// Limits of `networkData` in the API (`NetworkDeviceDataMaxIPs`, the field lengths).
const MAX_IPS: usize = 16;
const MAX_NAME: usize = 256;
const MAX_MAC: usize = 128;

impl CniResult {
    /// Reads a result; `None` when it is not one.
    pub fn from_json(value: &Value) -> Option<CniResult> {
        serde_json::from_value(value.clone()).ok()
    }

    /// What the pod's interface `if_name` got: its addresses (those on it, or all when the result does
    /// not say which interface), its MAC.
    pub fn network_data(&self, if_name: &str) -> NetworkData {
        let index = self
            .interfaces
            .iter()
            .position(|i| i.name == if_name && !i.sandbox.is_empty())
            .or_else(|| self.interfaces.iter().position(|i| i.name == if_name));
        let ips = self
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
            .map(|ip| ip.address.clone())
            .filter(|a| a.len() <= 64 && a.parse::<crate::config::Cidr>().is_ok())
            .take(MAX_IPS)
            .collect();
        let mac = index
            .and_then(|i| self.interfaces.get(i))
            .map(|i| i.mac.clone())
            .filter(|m| m.len() <= MAX_MAC)
            .unwrap_or_default();
        NetworkData {
            interface_name: if_name.chars().take(MAX_NAME).collect(),
            ips,
            hardware_address: mac,
        }
    }
}
