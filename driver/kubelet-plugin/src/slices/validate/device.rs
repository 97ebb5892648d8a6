//! One device's rules (`validateDevice` in `k8s.io/kubernetes/pkg/apis/resource/validation`):
//! name, attributes and capacities, request policies, taints and per-device node selection.
//! Counters are in `counters`.

use k8s_openapi::api::resource::v1::{CapacityRequestPolicy, Device};

use super::KubeVersion;
use crate::slices::MAX_ATTRIBUTES_AND_CAPACITIES;
use crate::slices::names::{
    MAX_VALUE_BYTES, is_dns_label, is_dns_subdomain, is_label_key, is_label_value,
    is_qualified_name, is_quantity, is_semver,
};

/// `device` at field path `at` of a slice whose `perDeviceNodeSelection` is `per_device`.
pub(super) fn validate_device(
    device: &Device,
    at: &str,
    version: KubeVersion,
    per_device: bool,
    fail: &mut impl FnMut(String, String),
) {
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
    validate_taints(device, at, version, fail);
    validate_device_node_selection(device, at, per_device, fail);
}

/// Taints as `validateDevice` checks them: at most `DeviceTaintsMaxLength` (4 in 1.34, 16 from
/// 1.35; over it, nothing else is checked), and each as `validateDeviceTaint` (the same in 1.34,
/// 1.35 and 1.36 but for the effects): the key a label key (`ValidateLabelName`), the value empty
/// or a label value, the effect `NoSchedule` or `NoExecute`, and from 1.35 also `None`
/// (`validDeviceTaintEffects`). `timeAdded` is not checked by any of them (the server sets it when
/// it is missing).
fn validate_taints(
    device: &Device,
    at: &str,
    version: KubeVersion,
    fail: &mut impl FnMut(String, String),
) {
    let taints = device.taints.as_deref().unwrap_or_default();
    let max = version.max_taints_per_device();
    if taints.len() > max {
        fail(
            format!("{at}.taints"),
            format!(
                "{} taints; at most {max} (Kubernetes {version})",
                taints.len()
            ),
        );
        return;
    }
    let effects = version.taint_effects();
    for (i, taint) in taints.iter().enumerate() {
        let field = format!("{at}.taints[{i}]");
        if !is_label_key(&taint.key) {
            fail(
                format!("{field}.key"),
                format!(
                    "{:?} is not a label key ([<DNS subdomain>/]<name of at most 63 \
                     alphanumerics, '-', '_', '.'>)",
                    taint.key
                ),
            );
        }
        if let Some(value) = &taint.value
            && !is_label_value(value)
        {
            fail(
                format!("{field}.value"),
                format!(
                    "{value:?} is not a label value (at most 63 alphanumerics, '-', '_', '.', \
                     starting and ending alphanumeric)"
                ),
            );
        }
        if taint.effect.is_empty() {
            fail(format!("{field}.effect"), "required".into());
        } else if !effects.contains(&taint.effect.as_str()) {
            fail(
                format!("{field}.effect"),
                format!(
                    "{:?} is not one of {effects:?} (Kubernetes {version})",
                    taint.effect
                ),
            );
        }
    }
}

/// A device's own `nodeName`, `nodeSelector` or `allNodes` (`validateDevice`, the same in 1.34,
/// 1.35 and 1.36): only when the slice sets `perDeviceNodeSelection: true`, and then exactly one of
/// them, `nodeName` a node name, `allNodes` unset or `true`, `nodeSelector` with a term.
fn validate_device_node_selection(
    device: &Device,
    at: &str,
    per_device: bool,
    fail: &mut impl FnMut(String, String),
) {
    if !per_device {
        if device.node_name.is_some()
            || device.node_selector.is_some()
            || device.all_nodes.is_some()
        {
            fail(
                at.to_owned(),
                "nodeName, nodeSelector and allNodes can only be set if the slice's \
                 perDeviceNodeSelection is true"
                    .into(),
            );
        }
        return;
    }
    let mut placements = 0;
    if let Some(name) = &device.node_name {
        if name.is_empty() {
            fail(format!("{at}.nodeName"), "must not be empty".into());
        } else {
            placements += 1;
            if !is_dns_subdomain(name, 253) {
                fail(
                    format!("{at}.nodeName"),
                    format!("{name:?} is not a node name (a DNS subdomain)"),
                );
            }
        }
    }
    if let Some(selector) = &device.node_selector {
        placements += 1;
        if selector.node_selector_terms.is_empty() {
            fail(
                format!("{at}.nodeSelector.nodeSelectorTerms"),
                "must have at least one node selector term".into(),
            );
        }
    }
    match device.all_nodes {
        Some(true) => placements += 1,
        Some(false) => fail(
            format!("{at}.allNodes"),
            "must be either unset or true".into(),
        ),
        None => {}
    }
    if placements != 1 {
        fail(
            at.to_owned(),
            "exactly one of nodeName, nodeSelector, allNodes when the slice's \
             perDeviceNodeSelection is true"
                .into(),
        );
    }
}

/// What the API server refuses in a capacity's request policy (`validateRequestPolicy` in
/// `k8s.io/kubernetes/pkg/apis/resource/validation`): a `default` is required with `validValues` or
/// `validRange`; valid values are at most 10, ascending, at most the capacity and include the
/// default; a range has `min` ≤ `default` ≤ `max` ≤ the capacity, `min + step` ≤ the capacity, and
/// `default` and `max` on a step from `min`.
fn request_policy_problem(capacity: &str, policy: &CapacityRequestPolicy) -> Result<(), String> {
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
