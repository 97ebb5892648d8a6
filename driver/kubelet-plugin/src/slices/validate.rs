//! The API server's rules for ResourceSlices (`k8s.io/kubernetes/pkg/apis/resource/validation`),
//! checked before a slice leaves the process: a slice the server would reject is a bug, caught here
//! with the field that breaks it.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::resource::v1::{Device, ResourceSlice};

use super::names::{
    MAX_VALUE_BYTES, is_dns_label, is_dns_subdomain, is_driver_name, is_qualified_name,
    is_quantity, is_semver,
};
use super::{MAX_ATTRIBUTES_AND_CAPACITIES, max_devices_per_slice};

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

/// Checks one pool (all slices of one driver and pool name): every slice on its own, and together
/// the same generation and `resourceSliceCount`, that count equal to the number of slices, and device
/// names unique across the pool.
pub fn validate_pool(slices: &[ResourceSlice]) -> Vec<SliceError> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    // Kubernetes 1.35 layout: counter sets in slices without devices, referenced across the pool.
    let own_slice = slices.iter().any(|s| {
        s.spec
            .shared_counters
            .as_ref()
            .is_some_and(|c| !c.is_empty())
            && s.spec.devices.as_ref().is_none_or(Vec::is_empty)
    });
    let pool_sets: Vec<k8s_openapi::api::resource::v1::CounterSet> = match own_slice {
        true => slices
            .iter()
            .flat_map(|s| s.spec.shared_counters.clone().unwrap_or_default())
            .collect(),
        false => Vec::new(),
    };
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
        validate_slice(slice, &mut fail);
        validate_counters(slice, own_slice.then_some(pool_sets.as_slice()), &mut fail);
        for (j, device) in slice.spec.devices.iter().flatten().enumerate() {
            if !names.insert(device.name.clone()) {
                fail(
                    format!("spec.devices[{j}].name"),
                    format!("{:?} is already used in the pool", device.name),
                );
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

fn validate_slice(slice: &ResourceSlice, fail: &mut impl FnMut(String, String)) {
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
    let placements = [
        spec.node_name.as_ref().is_some_and(|n| !n.is_empty()),
        spec.node_selector.is_some(),
        spec.all_nodes == Some(true),
        spec.per_device_node_selection == Some(true),
    ];
    if placements.iter().filter(|p| **p).count() != 1 {
        fail(
            "spec".into(),
            "exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection".into(),
        );
    }
    let devices = spec.devices.as_deref().unwrap_or_default();
    let limit = max_devices_per_slice(devices);
    if devices.len() > limit {
        fail(
            "spec.devices".into(),
            format!("{} devices; at most {limit}", devices.len()),
        );
    }
    for (i, device) in devices.iter().enumerate() {
        validate_device(device, &format!("spec.devices[{i}]"), fail);
    }
}

/// Shared counters as Kubernetes validates them: counter set names unique DNS labels; in the 1.34
/// layout at most 32 counters across the sets of a slice and each `consumesCounters` naming a set of
/// the same slice; in the 1.35 layout (`pool_sets`: every set of the pool) at most 8 sets of 32
/// counters in a slice without devices, at most 2 `consumesCounters` per device, each naming a set of
/// the pool; the counters named must be the set's; at most 32 counters per device and 1024 per slice.
fn validate_counters(
    slice: &ResourceSlice,
    pool_sets: Option<&[k8s_openapi::api::resource::v1::CounterSet]>,
    fail: &mut impl FnMut(String, String),
) {
    let own = slice.spec.shared_counters.as_deref().unwrap_or_default();
    if pool_sets.is_some() && !own.is_empty() {
        if slice.spec.devices.as_ref().is_some_and(|d| !d.is_empty()) {
            fail(
                "spec".into(),
                "sharedCounters and devices in one slice (Kubernetes 1.35 layout)".into(),
            );
        }
        if own.len() > super::MAX_COUNTER_SETS_PER_SLICE {
            fail(
                "spec.sharedCounters".into(),
                format!(
                    "{} sets; at most {}",
                    own.len(),
                    super::MAX_COUNTER_SETS_PER_SLICE
                ),
            );
        }
        for (i, set) in own.iter().enumerate() {
            if set.counters.len() > 32 {
                fail(
                    format!("spec.sharedCounters[{i}].counters"),
                    format!("{} counters; at most 32", set.counters.len()),
                );
            }
        }
    }
    let sets = pool_sets.unwrap_or(own);
    let mut names = BTreeSet::new();
    for (i, set) in own.iter().enumerate() {
        if !is_dns_label(&set.name) || !names.insert(set.name.as_str()) {
            fail(
                format!("spec.sharedCounters[{i}].name"),
                format!("{:?}: not a DNS label, or not unique", set.name),
            );
        }
    }
    let total: usize = own.iter().map(|s| s.counters.len()).sum();
    if pool_sets.is_none() && total > super::MAX_COUNTERS_PER_SLICE {
        fail(
            "spec.sharedCounters".into(),
            format!(
                "{total} counters; at most {}",
                super::MAX_COUNTERS_PER_SLICE
            ),
        );
    }
    let mut references = 0;
    for (i, device) in slice.spec.devices.iter().flatten().enumerate() {
        let entries = device.consumes_counters.as_ref().map_or(0, Vec::len);
        if pool_sets.is_some() && entries > 2 {
            fail(
                format!("spec.devices[{i}].consumesCounters"),
                format!("{entries} entries; at most 2 (Kubernetes 1.35)"),
            );
        }
        let mut counters = 0;
        for (j, consumption) in device.consumes_counters.iter().flatten().enumerate() {
            let at = format!("spec.devices[{i}].consumesCounters[{j}]");
            counters += consumption.counters.len();
            match sets.iter().find(|s| s.name == consumption.counter_set) {
                None => fail(
                    format!("{at}.counterSet"),
                    format!(
                        "{:?} is not a counter set of this {}",
                        consumption.counter_set,
                        if pool_sets.is_some() { "pool" } else { "slice" }
                    ),
                ),
                Some(set) => {
                    for name in consumption.counters.keys() {
                        if !set.counters.contains_key(name) {
                            fail(
                                format!("{at}.counters"),
                                format!("{name:?} is not a counter of set {:?}", set.name),
                            );
                        }
                    }
                }
            }
        }
        if counters > 32 {
            fail(
                format!("spec.devices[{i}].consumesCounters"),
                format!("{counters} counters; at most 32"),
            );
        }
        references += counters;
    }
    if references > 1024 {
        fail(
            "spec.devices".into(),
            format!("{references} counter references; at most 1024"),
        );
    }
}

fn validate_device(device: &Device, at: &str, fail: &mut impl FnMut(String, String)) {
    if !is_dns_label(&device.name) {
        fail(
            format!("{at}.name"),
            format!("{:?} is not a DNS label", device.name),
        );
    }
    let attributes = device.attributes.as_ref();
    let capacity = device.capacity.as_ref();
    let total = attributes.map_or(0, |a| a.len()) + capacity.map_or(0, |c| c.len());
    if total > MAX_ATTRIBUTES_AND_CAPACITIES {
        fail(
            at.to_owned(),
            format!("{total} attributes and capacities; at most {MAX_ATTRIBUTES_AND_CAPACITIES}"),
        );
    }
    for (name, value) in attributes.into_iter().flatten() {
        let field = format!("{at}.attributes[{name:?}]");
        if !is_qualified_name(name) {
            fail(
                field.clone(),
                "not a C identifier, optionally with a domain".into(),
            );
        }
        let set = [
            value.bool.is_some(),
            value.int.is_some(),
            value.string.is_some(),
            value.version.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            fail(
                field.clone(),
                "exactly one of bool, int, string, version".into(),
            );
        }
        if let Some(text) = &value.string
            && text.len() > MAX_VALUE_BYTES
        {
            fail(
                field.clone(),
                format!("string of {} bytes; at most 64", text.len()),
            );
        }
        if let Some(version) = &value.version
            && !is_semver(version)
        {
            fail(field, format!("{version:?} is not strict semver"));
        }
    }
    for (name, value) in capacity.into_iter().flatten() {
        let field = format!("{at}.capacity[{name:?}]");
        if !is_qualified_name(name) {
            fail(
                field.clone(),
                "not a C identifier, optionally with a domain".into(),
            );
        }
        if !is_quantity(&value.value.0) {
            fail(
                field.clone(),
                format!("{:?} is not a quantity", value.value.0),
            );
        }
        if value.request_policy.is_some() && device.allow_multiple_allocations != Some(true) {
            fail(
                field.clone(),
                "requestPolicy needs allowMultipleAllocations".into(),
            );
        }
        if let Some(policy) = &value.request_policy
            && let Err(problem) = request_policy_problem(&value.value.0, policy)
        {
            fail(format!("{field}.requestPolicy"), problem);
        }
    }
}

/// What the API server refuses in a capacity's request policy (`validateRequestPolicy` in
/// `k8s.io/kubernetes/pkg/apis/resource/validation`): a `default` is required with `validValues` or
/// `validRange`; valid values are at most 10, ascending, at most the capacity and include the
/// default; a range has `min` ≤ `default` ≤ `max` ≤ the capacity, `min + step` ≤ the capacity, and
/// `default` and `max` on a step from `min`.
fn request_policy_problem(
    capacity: &str,
    policy: &k8s_openapi::api::resource::v1::CapacityRequestPolicy,
) -> Result<(), String> {
    use hal::quantity::Quantity;
    let q = |text: &str| Quantity::parse(text).map_err(|e| e.to_string());
    let value = q(capacity)?;
    let values = policy.valid_values.as_deref().unwrap_or_default();
    if values.is_empty() && policy.valid_range.is_none() {
        return Ok(());
    }
    let what = if values.is_empty() {
        "validRange"
    } else {
        "validValues"
    };
    let Some(default) = &policy.default else {
        return Err(format!("default: required when {what} is defined"));
    };
    let default = q(&default.0)?;
    if !values.is_empty() {
        if policy.valid_range.is_some() {
            return Err("only one of validValues and validRange".into());
        }
        let values = values
            .iter()
            .map(|v| q(&v.0))
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() > 10 || !values.is_sorted() || values.iter().any(|v| *v > value) {
            return Err("validValues: at most 10, ascending, none over the capacity".into());
        }
        if !values.contains(&default) {
            return Err("validValues: must include the default".into());
        }
        return Ok(());
    }
    let Some(range) = &policy.valid_range else {
        return Ok(());
    };
    let min = q(&range.min.0)?;
    let max = range.max.as_ref().map(|m| q(&m.0)).transpose()?;
    let step = range.step.as_ref().map(|s| q(&s.0)).transpose()?;
    let on_step = |x: Quantity| match step {
        Some(step) if step.nano_units() > 0 => {
            (x.nano_units() - min.nano_units()) % step.nano_units() == 0
        }
        _ => true,
    };
    let top = max.unwrap_or(value);
    if min < Quantity::ZERO || min > value || top > value || min > top {
        return Err("validRange: 0 <= min <= max <= the capacity".into());
    }
    if default < min || default > top || !on_step(default) || !on_step(top) && max.is_some() {
        return Err("validRange: the default must be within the range, on a step from min".into());
    }
    if step.is_some_and(|step| step <= Quantity::ZERO || min.plus(step) > value) {
        return Err("validRange: step must be above 0 and min + step at most the capacity".into());
    }
    Ok(())
}
