//! `kind: NetworkConfig` (direct mode, dranet's way): how a network function is configured inside the
//! pod's network namespace. Field names follow dranet's `NetworkConfig`
//! (`interface{name, addresses, mtu}`, `routes[]{destination, gateway}`); unknown fields are rejected,
//! and every problem names its field. What it checks into ([`Checked`], [`Cidr`]) is the kit's
//! (`dra_podnet::config`).

use std::net::IpAddr;

pub use dra_podnet::config::{Checked, Cidr, CidrError, if_name_problem};

use crate::plugin::claims::FieldError;

/// `kind: NetworkConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// The interface inside the pod.
    #[serde(default)]
    pub interface: InterfaceConfig,
    /// Routes through it.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `interface` of a [`NetworkConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Its name in the pod (default: its name on the host).
    #[serde(default)]
    pub name: Option<String>,
    /// Addresses as CIDRs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Its MTU (default: unchanged).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// A CIDR (`0.0.0.0/0` for a default route).
    pub destination: String,
    /// The next hop; absent for an on-link route.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The smallest MTU accepted (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// The largest MTU accepted.
pub const MAX_MTU: u32 = 65535;

impl NetworkConfig {
    /// Parses and checks every field; an error is `field: problem`.
    pub fn check(&self) -> Result<Checked, FieldError> {
        let mut checked = Checked::default();
        if let Some(name) = &self.interface.name {
            if let Some(problem) = if_name_problem(name) {
                return Err(FieldError::new(
                    "interface.name",
                    format!("{name:?} {problem}"),
                ));
            }
            checked.name = Some(name.clone());
        }
        for (i, text) in self.interface.addresses.iter().enumerate() {
            let cidr: Cidr = text.parse().map_err(|e: CidrError| {
                FieldError::new(format!("interface.addresses[{i}]"), e.to_string())
            })?;
            if cidr.addr.is_unspecified() || cidr.addr.is_multicast() {
                return Err(FieldError::new(
                    format!("interface.addresses[{i}]"),
                    format!("{text:?} is not a unicast address"),
                ));
            }
            if checked.addresses.contains(&cidr) {
                return Err(FieldError::new(
                    format!("interface.addresses[{i}]"),
                    format!("{text:?} is given twice"),
                ));
            }
            checked.addresses.push(cidr);
        }
        if let Some(mtu) = self.interface.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(FieldError::new(
                    "interface.mtu",
                    format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"),
                ));
            }
            checked.mtu = Some(mtu);
        }
        for (i, route) in self.routes.iter().enumerate() {
            let destination: Cidr = route.destination.parse().map_err(|e: CidrError| {
                FieldError::new(format!("routes[{i}].destination"), e.to_string())
            })?;
            let gateway = match &route.gateway {
                None => None,
                Some(text) => {
                    let gateway: IpAddr = text.parse().map_err(|_| {
                        FieldError::new(
                            format!("routes[{i}].gateway"),
                            format!("{text:?} is not an IP address"),
                        )
                    })?;
                    if gateway.is_ipv4() != destination.addr.is_ipv4() {
                        return Err(FieldError::new(
                            format!("routes[{i}].gateway"),
                            format!("{text:?} is not of the destination's IP family"),
                        ));
                    }
                    Some(gateway)
                }
            };
            if gateway.is_none() && destination.prefix == 0 {
                return Err(FieldError::new(
                    format!("routes[{i}].gateway"),
                    "a default route needs a gateway",
                ));
            }
            checked.routes.push((destination, gateway));
        }
        Ok(checked)
    }

    /// Decodes `value` strictly (unknown fields rejected) and checks it; an error is `field: problem`.
    pub fn decode(value: serde_json::Value) -> Result<Checked, FieldError> {
        let config: NetworkConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(path, e.into_inner().to_string())
        })?;
        config.check()
    }
}
