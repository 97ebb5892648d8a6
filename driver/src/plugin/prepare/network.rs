//! The network functions of a claim: their `status.devices` entries, and the direct-mode
//! configuration (`kind: NetworkConfig`) the NRI plugin applies at pod sandbox start, checked here
//! against the devices it applies to.

use std::collections::BTreeMap;

use super::PrepareError;
use crate::plugin::claims::Allocated;
use crate::podnet::config::Checked;
use crate::slices::SliceConfig;
use crate::slices::devices::DeviceSource;

/// `status.devices` entries for the claim's network functions: `networkData.interfaceName` (the
/// requested name in the pod, else the host netdev) and `data` with the PCI address, netdev, RDMA
/// device and network attachment.
pub(super) fn network_status(
    slices: &SliceConfig,
    allocated: &[Allocated],
    sources: &[DeviceSource],
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (a, source) in allocated.iter().zip(sources) {
        let DeviceSource::Nic { function, rdma } = source else {
            continue;
        };
        let vf = a.vf.as_ref();
        let netdev = function.netdevs.first();
        let mut data = serde_json::Map::new();
        data.insert("pciAddress".into(), function.address.to_string().into());
        if let Some(netdev) = netdev {
            data.insert("netdev".into(), netdev.clone().into());
        }
        if let Some(rdma) = rdma {
            data.insert("rdmaDevice".into(), rdma.name.clone().into());
        }
        if let Some(network) = vf.and_then(|v| v.network_attachment()) {
            data.insert("network".into(), network.to_string().into());
        }
        let mut entry = serde_json::json!({
            "driver": slices.driver_name,
            "pool": slices.node_name,
            "device": a.device,
            "data": data,
        });
        if let Some(name) = pod_if_name(a).or_else(|| netdev.cloned())
            && let Some(map) = entry.as_object_mut()
        {
            map.insert(
                "networkData".into(),
                serde_json::json!({"interfaceName": name}),
            );
        }
        out.push(entry);
    }
    out
}

/// The name asked for in the pod: the `NetworkConfig`'s `interface.name`, else the `VfConfig`'s
/// `ifName`.
pub(super) fn pod_if_name(a: &Allocated) -> Option<String> {
    a.network
        .as_ref()
        .and_then(|n| n.name.clone())
        .or_else(|| a.vf.as_ref().and_then(|v| v.if_name.clone()))
}

/// The name asked for in the pod with the field that gives it: the `NetworkConfig`'s
/// `interface.name`, else the `VfConfig`'s `ifName`.
fn pod_if_name_field(a: &Allocated) -> Option<(&'static str, String)> {
    let network = a.network.as_ref().and_then(|n| n.name.clone());
    let network = network.map(|name| ("NetworkConfig interface.name", name));
    network.or_else(|| {
        let vf = a.vf.as_ref().and_then(|v| v.if_name.clone());
        vf.map(|name| ("VfConfig.ifName", name))
    })
}

/// Two network functions of the claim asked for under one name in the pod (`VfConfig.ifName` or
/// `NetworkConfig` `interface.name`) are refused: the pod cannot have both.
fn check_pod_names(allocated: &[Allocated], sources: &[DeviceSource]) -> Result<(), PrepareError> {
    let mut named: BTreeMap<String, (&'static str, &str)> = BTreeMap::new();
    for (a, source) in allocated.iter().zip(sources) {
        if !matches!(source, DeviceSource::Nic { .. }) {
            continue;
        }
        let Some((field, name)) = pod_if_name_field(a) else {
            continue;
        };
        if let Some((first_field, first)) = named.get(&name) {
            return Err(PrepareError::InvalidConfig(format!(
                "{field} {name:?} of device {} is also the {first_field} of device {first}: two \
                 network functions of one claim cannot have one name in the pod",
                a.device
            )));
        }
        named.insert(name, (field, &a.device));
    }
    Ok(())
}

/// The direct-mode configurations of the claim by device name, each with the name its netdev gets
/// in the pod (`interface.name`, else `VfConfig.ifName`; neither: it keeps its host name). Two
/// network functions given one name in the pod are refused (whichever mode attaches them). A
/// `NetworkConfig` that applies to a network function must find a netdev to move: not one bound to
/// `vfio-pci`, not one whose `VfConfig` names a NetworkAttachmentDefinition (that is CNI mode), and
/// not a second name for it. One that applies to a device that is no network function (a class-wide
/// config) is left out.
pub(super) fn direct_configs(
    allocated: &[Allocated],
    sources: &[DeviceSource],
) -> Result<BTreeMap<String, Checked>, PrepareError> {
    check_pod_names(allocated, sources)?;
    for (a, source) in allocated.iter().zip(sources) {
        let (Some(network), DeviceSource::Nic { function, .. }) = (&a.network, source) else {
            continue;
        };
        let device = &a.device;
        let vf = a.vf.as_ref();
        if vf.and_then(|v| v.driver.as_deref()) == Some("vfio-pci") {
            return Err(PrepareError::InvalidConfig(format!(
                "device {device}: a NetworkConfig (direct mode) applies, but its VfConfig.driver \
                 is vfio-pci: the function has no netdev to move into the pod"
            )));
        }
        if let Some(nad) = vf.and_then(|v| v.network_attachment()) {
            return Err(PrepareError::InvalidConfig(format!(
                "device {device}: both VfConfig.netAttachDefName {:?} (CNI mode) and a \
                 NetworkConfig (direct mode) apply; give one",
                nad.name
            )));
        }
        if let (Some(name), Some(if_name)) = (&network.name, vf.and_then(|v| v.if_name.as_ref()))
            && name != if_name
        {
            return Err(PrepareError::InvalidConfig(format!(
                "device {device}: NetworkConfig interface.name {name:?} differs from \
                 VfConfig.ifName {if_name:?}"
            )));
        }
        if function.netdevs.is_empty() {
            return Err(PrepareError::InvalidConfig(format!(
                "device {device}: a NetworkConfig (direct mode) applies, but {} has no netdev to \
                 move into the pod",
                function.address
            )));
        }
    }
    let functions = allocated
        .iter()
        .zip(sources)
        .filter(|(_, source)| matches!(source, DeviceSource::Nic { .. }))
        .map(|(a, _)| a);
    Ok(named_configs(functions))
}

/// The direct-mode configurations of `functions` (network functions) by device name, with the name
/// in the pod filled in (unchecked: [`direct_configs`] checks them).
pub(super) fn named_configs<'a>(
    functions: impl Iterator<Item = &'a Allocated>,
) -> BTreeMap<String, Checked> {
    functions
        .filter_map(|a| {
            let mut config = a.network.clone()?;
            config.name = pod_if_name(a);
            Some((a.device.clone(), config))
        })
        .collect()
}
