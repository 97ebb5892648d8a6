//! The DRA feature gates that change what the scheduler sees, by Kubernetes version.
//!
//! A field behind a disabled gate never reaches the scheduler: the API server drops it when the
//! object is written (`shared/reference/interface-facts.md` A.7; upstream `dropDisabledFields` in
//! `pkg/registry/resource/*/strategy.go`). Explain does the same to the slices and claims it reads,
//! with the defaults of the version asked for unless `--feature-gates` says otherwise, and says what
//! it dropped.

use k8s_openapi::api::resource::v1::{ResourceClaimSpec, ResourceSlice};

use crate::version::KubernetesVersion;

/// The gates explain models, on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureGates {
    /// `DRAPartitionableDevices`: shared counters, counter consumption, per-device node selection.
    pub partitionable_devices: bool,
    /// `DRADeviceTaints`: device taints and request tolerations.
    pub device_taints: bool,
    /// `DRAConsumableCapacity`: shared devices, request policies, capacity requests.
    pub consumable_capacity: bool,
    /// `DRAAdminAccess`: `adminAccess` of requests.
    pub admin_access: bool,
    /// `DRAPrioritizedList`: `firstAvailable`.
    pub prioritized_list: bool,
    /// `DRADeviceBindingConditions`: devices with `bindingConditions` (the scheduler waits for
    /// them before binding), `bindsToNode`.
    pub binding_conditions: bool,
    /// `DRAExtendedResource`: extended resources of pods served by DeviceClasses
    /// (`extendedResourceName`) through an implicit claim.
    pub extended_resource: bool,
}

/// Gate names as `--feature-gates` takes them, with when each became beta (on by default).
const GATES: [(&str, KubernetesVersion); 7] = [
    ("DRAPartitionableDevices", KubernetesVersion::V1_36),
    ("DRADeviceTaints", KubernetesVersion::V1_36),
    ("DRAConsumableCapacity", KubernetesVersion::V1_36),
    ("DRAAdminAccess", KubernetesVersion::V1_34),
    ("DRAPrioritizedList", KubernetesVersion::V1_34),
    ("DRADeviceBindingConditions", KubernetesVersion::V1_36),
    ("DRAExtendedResource", KubernetesVersion::V1_36),
];

impl FeatureGates {
    /// The defaults of `version` (beta gates on, alpha gates off).
    pub fn defaults(version: KubernetesVersion) -> FeatureGates {
        let on = |name: &str| {
            GATES
                .iter()
                .any(|(gate, since)| *gate == name && version >= *since)
        };
        FeatureGates {
            partitionable_devices: on("DRAPartitionableDevices"),
            device_taints: on("DRADeviceTaints"),
            consumable_capacity: on("DRAConsumableCapacity"),
            admin_access: on("DRAAdminAccess"),
            prioritized_list: on("DRAPrioritizedList"),
            binding_conditions: on("DRADeviceBindingConditions"),
            extended_resource: on("DRAExtendedResource"),
        }
    }

    /// Applies `Name=true,Other=false` (the kube-scheduler's `--feature-gates` syntax). Gates
    /// explain does not model are refused, naming the ones it knows.
    pub fn set(&mut self, list: &str) -> Result<(), String> {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                format!("feature gate {item:?}: expected Name=true or Name=false")
            })?;
            let value = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(format!(
                        "feature gate {name}: {other:?} is not true or false"
                    ));
                }
            };
            let slot = match name.trim() {
                "DRAPartitionableDevices" => &mut self.partitionable_devices,
                "DRADeviceTaints" => &mut self.device_taints,
                "DRAConsumableCapacity" => &mut self.consumable_capacity,
                "DRAAdminAccess" => &mut self.admin_access,
                "DRAPrioritizedList" => &mut self.prioritized_list,
                "DRADeviceBindingConditions" => &mut self.binding_conditions,
                "DRAExtendedResource" => &mut self.extended_resource,
                other => {
                    let known: Vec<&str> = GATES.iter().map(|(g, _)| *g).collect();
                    return Err(format!(
                        "feature gate {other:?}: explain models {}",
                        known.join(", ")
                    ));
                }
            };
            *slot = value;
        }
        Ok(())
    }

    /// Drops from `slice` what the API server drops with these gates; a note per kind of field
    /// dropped.
    pub(crate) fn strip_slice(&self, slice: &mut ResourceSlice, notes: &mut Vec<String>) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let spec = &mut slice.spec;
        let mut dropped: Vec<(&str, &str)> = Vec::new();
        if !self.partitionable_devices {
            if spec.shared_counters.take().is_some() {
                dropped.push(("DRAPartitionableDevices", "sharedCounters"));
            }
            if spec.per_device_node_selection.take().is_some() {
                dropped.push(("DRAPartitionableDevices", "perDeviceNodeSelection"));
            }
        }
        for device in spec.devices.iter_mut().flatten() {
            if !self.partitionable_devices && device.consumes_counters.take().is_some() {
                dropped.push(("DRAPartitionableDevices", "consumesCounters"));
            }
            if !self.device_taints && device.taints.take().is_some() {
                dropped.push(("DRADeviceTaints", "taints"));
            }
            if !self.partitionable_devices {
                let node = [
                    device.node_name.take().is_some(),
                    device.node_selector.take().is_some(),
                    device.all_nodes.take().is_some(),
                ];
                if node.contains(&true) {
                    dropped.push(("DRAPartitionableDevices", "device node selection"));
                }
            }
            if !self.binding_conditions {
                let binding = [
                    device.binding_conditions.take().is_some(),
                    device.binding_failure_conditions.take().is_some(),
                    device.binds_to_node.take().is_some(),
                ];
                if binding.contains(&true) {
                    dropped.push(("DRADeviceBindingConditions", "bindingConditions"));
                }
            }
            if !self.consumable_capacity {
                if device.allow_multiple_allocations.take().is_some() {
                    dropped.push(("DRAConsumableCapacity", "allowMultipleAllocations"));
                }
                for capacity in device.capacity.iter_mut().flat_map(|c| c.values_mut()) {
                    if capacity.request_policy.take().is_some() {
                        dropped.push(("DRAConsumableCapacity", "capacity.requestPolicy"));
                    }
                }
            }
        }
        dropped.sort_unstable();
        dropped.dedup();
        for (gate, field) in dropped {
            notes.push(format!(
                "slice {name}: {field} dropped, as the API server drops it with the feature gate {gate} off (pass --feature-gates {gate}=true if the cluster enables it)"
            ));
        }
    }

    /// Drops from a claim what the API server drops with these gates, or refuses what it refuses;
    /// notes name the request.
    pub(crate) fn strip_claim(
        &self,
        spec: &mut ResourceClaimSpec,
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        for request in spec
            .devices
            .iter_mut()
            .flat_map(|d| d.requests.iter_mut().flatten())
        {
            if !self.prioritized_list && request.first_available.is_some() {
                return Err(format!(
                    "request {}: firstAvailable needs the feature gate DRAPrioritizedList (the API server drops it and then refuses a request with neither exactly nor firstAvailable)",
                    request.name
                ));
            }
            let mut dropped: Vec<(&str, &str)> = Vec::new();
            if let Some(exactly) = request.exactly.as_mut() {
                if !self.admin_access && exactly.admin_access.take().is_some() {
                    dropped.push(("DRAAdminAccess", "adminAccess"));
                }
                if !self.device_taints && exactly.tolerations.take().is_some() {
                    dropped.push(("DRADeviceTaints", "tolerations"));
                }
                if !self.consumable_capacity && exactly.capacity.take().is_some() {
                    dropped.push(("DRAConsumableCapacity", "capacity"));
                }
            }
            for sub in request.first_available.iter_mut().flatten() {
                if !self.device_taints && sub.tolerations.take().is_some() {
                    dropped.push(("DRADeviceTaints", "tolerations"));
                }
                if !self.consumable_capacity && sub.capacity.take().is_some() {
                    dropped.push(("DRAConsumableCapacity", "capacity"));
                }
            }
            dropped.sort_unstable();
            dropped.dedup();
            for (gate, field) in dropped {
                notes.push(format!(
                    "request {}: {field} dropped, as the API server drops it with the feature gate {gate} off (pass --feature-gates {gate}=true if the cluster enables it)",
                    request.name
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for FeatureGates {
    /// The gates that differ from on, as `Name=false`, or `all DRA gates on`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let off: Vec<&str> = [
            (self.partitionable_devices, "DRAPartitionableDevices"),
            (self.device_taints, "DRADeviceTaints"),
            (self.consumable_capacity, "DRAConsumableCapacity"),
            (self.admin_access, "DRAAdminAccess"),
            (self.prioritized_list, "DRAPrioritizedList"),
            (self.binding_conditions, "DRADeviceBindingConditions"),
            (self.extended_resource, "DRAExtendedResource"),
        ]
        .into_iter()
        .filter(|(on, _)| !on)
        .map(|(_, name)| name)
        .collect();
        match off.is_empty() {
            true => write!(f, "every modeled DRA feature gate on"),
            false => write!(f, "{} off", off.join(", ")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_release_each_gate_went_beta() {
        let v134 = FeatureGates::defaults(KubernetesVersion::V1_34);
        assert!(v134.admin_access && v134.prioritized_list);
        assert!(!v134.partitionable_devices && !v134.device_taints && !v134.consumable_capacity);
        assert!(!v134.binding_conditions && !v134.extended_resource);
        assert_eq!(
            FeatureGates::defaults(KubernetesVersion::V1_35),
            v134,
            "1.35 moved none of them"
        );
        let v136 = FeatureGates::defaults(KubernetesVersion::V1_36);
        assert!(v136.partitionable_devices && v136.device_taints && v136.consumable_capacity);
        assert!(v136.binding_conditions && v136.extended_resource);
        assert_eq!(v136.to_string(), "every modeled DRA feature gate on");
    }

    #[test]
    fn gates_are_set_as_the_scheduler_flag_takes_them_and_unknown_ones_are_refused() {
        let mut gates = FeatureGates::defaults(KubernetesVersion::V1_34);
        gates
            .set("DRAConsumableCapacity=true, DRAAdminAccess=false")
            .unwrap();
        assert!(gates.consumable_capacity && !gates.admin_access);
        assert_eq!(
            gates.to_string(),
            "DRAPartitionableDevices, DRADeviceTaints, DRAAdminAccess, DRADeviceBindingConditions, DRAExtendedResource off"
        );
        let error = gates.set("DynamicResourceAllocation=true").unwrap_err();
        assert!(
            error.contains("explain models DRAPartitionableDevices"),
            "{error}"
        );
        assert!(gates.set("DRADeviceTaints").is_err());
        assert!(gates.set("DRADeviceTaints=maybe").is_err());
    }
}
