//! The API server's rules for ResourceSlices (`k8s.io/kubernetes/pkg/apis/resource/validation`),
//! checked before a slice leaves the process: a slice the server would reject is a bug, caught here
//! with the field that breaks it. Where the rules differ between releases (the counter layout, taint
//! effects and limits), the pool is checked for one [`KubeVersion`].

mod counters;
mod device;
mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::resource::v1::ResourceSlice;

pub use version::KubeVersion;

use super::max_devices_per_slice;
use super::names::{is_dns_subdomain, is_driver_name};

/// One broken rule: the slice, the field path inside it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceError {
    /// `metadata.name` of the slice (or its index when unnamed).
    pub slice: String,
    /// The field, e.g. `spec.devices[3].attributes["productName"]`.
    pub field: String,
    /// The rule it breaks.
    pub problem: String,
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slice {}: {}: {}", self.slice, self.field, self.problem)
    }
}

/// Checks one pool (all slices of one driver and pool name) for the API server of Kubernetes
/// `version`: every slice on its own, and together the same generation and `resourceSliceCount`,
/// that count equal to the number of slices, device names unique across the pool and, from 1.35
/// (counter sets in slices of their own), counter set names unique across the pool and each
/// `consumesCounters` naming a set of the pool.
pub fn validate_pool(slices: &[ResourceSlice], version: KubeVersion) -> Vec<SliceError> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    let own_slices = version.counter_sets_in_own_slices();
    // 1.35 and later: "The names of the counter sets must be unique in the ResourcePool" (the
    // `SharedCounters` doc in types.go; no API server can check it), and devices consume the sets
    // of any slice of the pool. In 1.34 a device consumes the sets of its own slice only.
    let pool_sets: Vec<&k8s_openapi::api::resource::v1::CounterSet> = match own_slices {
        true => slices
            .iter()
            .flat_map(|s| s.spec.shared_counters.iter().flatten())
            .collect(),
        false => Vec::new(),
    };
    let mut set_owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, slice) in slices.iter().enumerate() {
        let id = slice
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| format!("#{i}"));
        let mut fail = |field: String, problem: String| {
            errors.push(SliceError {
                slice: id.clone(),
                field,
                problem,
            });
        };
        validate_slice(slice, version, &mut fail);
        counters::validate_counters(slice, version, &pool_sets, &mut fail);
        for (j, device) in slice.spec.devices.iter().flatten().enumerate() {
            if !names.insert(device.name.clone()) {
                fail(
                    format!("spec.devices[{j}].name"),
                    format!("{:?} is already used in the pool", device.name),
                );
            }
        }
        if own_slices {
            for (j, set) in slice.spec.shared_counters.iter().flatten().enumerate() {
                match set_owner.get(set.name.as_str()) {
                    Some(owner) if *owner != i => fail(
                        format!("spec.sharedCounters[{j}].name"),
                        format!(
                            "{:?} is already a counter set of another slice of the pool (unique \
                             in the pool from Kubernetes 1.35)",
                            set.name
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        set_owner.insert(&set.name, i);
                    }
                }
            }
        }
        let pool = &slice.spec.pool;
        if pool.resource_slice_count != slices.len() as i64 {
            fail(
                "spec.pool.resourceSliceCount".into(),
                format!(
                    "{} but the pool has {} slices",
                    pool.resource_slice_count,
                    slices.len()
                ),
            );
        }
        if let Some(first) = slices.first() {
            let first = &first.spec;
            if (&pool.name, pool.generation, &slice.spec.driver)
                != (&first.pool.name, first.pool.generation, &first.driver)
            {
                fail(
                    "spec.pool".into(),
                    "every slice of a pool must have the same driver, pool name and generation"
                        .into(),
                );
            }
        }
    }
    errors
}

/// One slice's own rules, counters aside (`validateResourceSliceSpec`, the same in 1.34, 1.35 and
/// 1.36 for what is checked here).
fn validate_slice(
    slice: &ResourceSlice,
    version: KubeVersion,
    fail: &mut impl FnMut(String, String),
) {
    let spec = &slice.spec;
    if let Some(name) = &slice.metadata.name
        && !is_dns_subdomain(name, 253)
    {
        fail(
            "metadata.name".into(),
            format!("{name:?} is not a DNS subdomain"),
        );
    }
    if !is_driver_name(&spec.driver) {
        fail(
            "spec.driver".into(),
            format!(
                "{:?} is not a DNS subdomain of at most 63 characters",
                spec.driver
            ),
        );
    }
    let pool = &spec.pool;
    if pool.name.is_empty()
        || pool.name.len() > 253
        || !pool.name.split('/').all(|s| is_dns_subdomain(s, 253))
    {
        fail(
            "spec.pool.name".into(),
            format!("{:?} is not '/'-separated DNS subdomains", pool.name),
        );
    }
    if pool.generation < 0 {
        fail("spec.pool.generation".into(), "must not be negative".into());
    }
    if pool.resource_slice_count < 1 {
        fail(
            "spec.pool.resourceSliceCount".into(),
            "must be at least 1".into(),
        );
    }
    validate_node_selection(slice, fail);
    let devices = spec.devices.as_deref().unwrap_or_default();
    // 64 when a device has taints or counters: the limit from 1.35 on. 1.34 allows 128 there, but
    // a slice over 64 would be refused after an upgrade, so every version is held to 64.
    let limit = max_devices_per_slice(devices);
    if devices.len() > limit {
        fail(
            "spec.devices".into(),
            format!("{} devices; at most {limit}", devices.len()),
        );
    }
    let per_device = spec.per_device_node_selection == Some(true);
    for (i, device) in devices.iter().enumerate() {
        device::validate_device(
            device,
            &format!("spec.devices[{i}]"),
            version,
            per_device,
            fail,
        );
    }
}

/// Where the pool's devices are (`validateResourceSliceSpec`, 1.34 to 1.36): exactly one of
/// `nodeName` (a node name, not empty), `nodeSelector` (exactly one term), `allNodes` and
/// `perDeviceNodeSelection`, the last two unset or `true`.
fn validate_node_selection(slice: &ResourceSlice, fail: &mut impl FnMut(String, String)) {
    let spec = &slice.spec;
    let mut placements = 0;
    if let Some(name) = &spec.node_name {
        if name.is_empty() {
            fail(
                "spec.nodeName".into(),
                "must be either unset or a non-empty node name".into(),
            );
        } else {
            placements += 1;
            if !is_dns_subdomain(name, 253) {
                fail(
                    "spec.nodeName".into(),
                    format!("{name:?} is not a node name (a DNS subdomain)"),
                );
            }
        }
    }
    if let Some(selector) = &spec.node_selector {
        placements += 1;
        if selector.node_selector_terms.len() != 1 {
            fail(
                "spec.nodeSelector.nodeSelectorTerms".into(),
                format!(
                    "{} terms; must have exactly one node selector term",
                    selector.node_selector_terms.len()
                ),
            );
        }
    }
    for (field, value) in [
        ("allNodes", spec.all_nodes),
        ("perDeviceNodeSelection", spec.per_device_node_selection),
    ] {
        match value {
            Some(true) => placements += 1,
            Some(false) => fail(
                format!("spec.{field}"),
                "must be either unset or true".into(),
            ),
            None => {}
        }
    }
    if placements != 1 {
        fail(
            "spec".into(),
            "exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection".into(),
        );
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
