//! A pod's claims that are allocated already, as the scheduler's DRA plugin treats them around
//! its search: where the allocation may be used, whether its devices failed to bind, and whether
//! one more consumer fits in `status.reservedFor`.
//!
//! Upstream, `pkg/scheduler/framework/plugins/dynamicresources/dynamicresources.go`:
//! - `PreFilter`: a claim is refused only when `!resourceclaim.CanBeReserved(claim) &&
//!   !resourceclaim.IsReservedForPod(pod, claim)` ("resourceclaim in use"), and `CanBeReserved`
//!   (`staging/src/k8s.io/dynamic-resource-allocation/resourceclaim/resourceclaim.go`) returns
//!   true ("Currently no restrictions on sharing"): a full `reservedFor` does not stop the pod
//!   there. The allocation's `nodeSelector` is parsed (`nodeaffinity.NewNodeSelector`); one that
//!   does not parse fails the pod with an error (`statusError`).
//! - `Filter`: a claim whose allocation's node selector does not match the node, or (with
//!   DRADeviceBindingConditions and DRAResourceClaimDeviceStatus) whose device status has a binding
//!   failure condition true (`isClaimReadyForBinding`) or that waited past the binding timeout
//!   (`isClaimTimeout`), is unavailable: the node is refused with "resourceclaim not available on
//!   the node", but only after the allocator has run for the pod's pending claims, whose failure
//!   is answered first.
//! - `PostFilter` (when no node fits): an unavailable claim reserved for nobody or for this pod
//!   only is deallocated ("deallocation of ResourceClaim completed") and the pod tried again.
//! - `PreBind` (`bindClaim`): the pod is appended to `status.reservedFor` "without checking
//!   preconditions. The apiserver will tell us": the API server refuses more than
//!   `ResourceClaimReservedForMaxSize` (256, `staging/src/k8s.io/api/resource/v1/types.go`)
//!   entries (`validateResourceClaimStatusUpdate` in `pkg/apis/resource/validation`), so a full
//!   claim fails the pod only at binding, after the scheduler has picked the node.

use k8s_openapi::api::core::v1::NodeSelector;
use k8s_openapi::api::resource::v1::ResourceClaimStatus;

use crate::input::ClaimInput;
use crate::nodes::{Node, describe_node_selector};

/// `ResourceClaimReservedForMaxSize`: at most this many consumers in `status.reservedFor`.
pub const RESERVED_FOR_MAX_SIZE: usize = 256;

/// The pod whose claims are checked, as `reservedFor` and owner references name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.uid` (a manifest has none).
    pub uid: Option<String>,
}

impl PodIdentity {
    /// Whether a reference (`reservedFor` entry, owner reference) with this UID and name is to
    /// the pod: by UID as upstream compares (`IsReservedForPod`, `metav1.IsControlledBy`); a pod
    /// read without a UID (a manifest) is taken to be the one of its name.
    pub(crate) fn is(&self, uid: &str, name: &str) -> bool {
        match &self.uid {
            Some(mine) => mine == uid,
            None => self.name == name,
        }
    }
}

/// What the scheduler makes of one allocated claim of the pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllocatedCheck {
    /// `PreFilter` fails the pod with this error (a node selector that does not parse).
    pub(crate) prefilter_error: Option<String>,
    /// `Filter` refuses the node: why the claim is not available on it.
    pub(crate) unavailable: Option<String>,
    /// `PreBind` fails: the API server refuses the pod as one more consumer.
    pub(crate) binding_error: Option<String>,
    /// What the user should know (not checked, waiting for binding conditions).
    pub(crate) warnings: Vec<String>,
    /// The allocation's node selector.
    pub(crate) node_selector: Option<NodeSelector>,
}

/// Checks an allocated claim of `pod` against `node` as the scheduler does (see the module
/// documentation). `device_status` is whether DRADeviceBindingConditions (with
/// DRAResourceClaimDeviceStatus, on by default since 1.33) is on.
pub(crate) fn check_allocated(
    claim: &ClaimInput,
    pod: &PodIdentity,
    node: &Node,
    device_status: bool,
) -> AllocatedCheck {
    let mut check = AllocatedCheck::default();
    let Some(status) = &claim.status else {
        return check;
    };
    let Some(allocation) = &status.allocation else {
        return check;
    };
    let name = claim_name(claim);
    check.node_selector = allocation.node_selector.clone();
    if let Some(selector) = &allocation.node_selector {
        match node.name.as_deref() {
            // Without the node's name, its labels and name are unknown.
            None => check.warnings.push(format!(
                "its allocation's node selector ({}) was not checked: explain was not told the node (--node-name)",
                describe_node_selector(selector)
            )),
            Some(node_name) => match node.matches(None, false, Some(selector)) {
                Err(e) => check.prefilter_error = Some(e),
                Ok(true) => {}
                Ok(false) => {
                    check.unavailable = Some(format!(
                        "resourceclaim not available on the node: the allocation's node selector ({}) does not select node {node_name}",
                        describe_node_selector(selector)
                    ));
                }
            },
        }
    }
    if device_status && check.unavailable.is_none() {
        match ready_for_binding(&name, status) {
            Err(failed) => {
                check.unavailable = Some(format!(
                    "resourceclaim not available on the node: {failed}"
                ));
            }
            Ok(false) => check.warnings.push(format!(
                "its devices' binding conditions are not all true yet: the scheduler waits for them in PreBind, and once the allocation is older than its binding timeout (allocationTimestamp {}, 10 minutes by default) it treats the claim as not available on the node; explain does not read the clock",
                allocation
                    .allocation_timestamp
                    .as_ref()
                    .map_or_else(|| "not set".to_owned(), |t| format!("{:?}", t.0))
            )),
            Ok(true) => {}
        }
    }
    let reserved = status.reserved_for.as_deref().unwrap_or_default();
    let mine = reserved
        .iter()
        .any(|r| r.resource == "pods" && pod.is(&r.uid, &r.name));
    if !mine && reserved.len() >= RESERVED_FOR_MAX_SIZE {
        let short = claim
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| name.rsplit('/').next().unwrap_or(&name).to_owned());
        check.binding_error = Some(format!(
            "add reservation to claim {name}: ResourceClaim.resource.k8s.io \"{short}\" is invalid: status.reservedFor: Too many: {}: must have at most {RESERVED_FOR_MAX_SIZE} items",
            reserved.len() + 1
        ));
    }
    check
}

/// Whether `PostFilter` would deallocate the claim when no node fits: reserved for nobody, or
/// for this pod only.
pub(crate) fn post_filter_deallocates(claim: &ClaimInput, pod: &PodIdentity) -> bool {
    let reserved = claim
        .status
        .as_ref()
        .and_then(|s| s.reserved_for.as_deref())
        .unwrap_or_default();
    match reserved {
        [] => true,
        [only] => only.resource == "pods" && pod.is(&only.uid, &only.name),
        _ => false,
    }
}

/// `isClaimReadyForBinding`: ready when, for every device with binding conditions, the claim's
/// device status has them all true; not ready as soon as one such device has no status; an error
/// when a binding failure condition is true (checked per device before its conditions).
fn ready_for_binding(name: &str, status: &ResourceClaimStatus) -> Result<bool, String> {
    let results = status
        .allocation
        .as_ref()
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_deref())
        .unwrap_or_default();
    let short = name.rsplit('/').next().unwrap_or(name);
    for result in results {
        let conditions = result.binding_conditions.as_deref().unwrap_or_default();
        if conditions.is_empty() {
            continue;
        }
        let Some(device) = status.devices.iter().flatten().find(|d| {
            d.driver == result.driver && d.pool == result.pool && d.device == result.device
        }) else {
            return Ok(false);
        };
        let found = |kind: &str| device.conditions.iter().flatten().find(|c| c.type_ == kind);
        for failure in result.binding_failure_conditions.iter().flatten() {
            if let Some(c) = found(failure).filter(|c| c.status == "True") {
                return Err(format!(
                    "claim {short} binding failed: reason={}, message={:?}",
                    c.reason, c.message
                ));
            }
        }
        if conditions
            .iter()
            .any(|kind| found(kind).is_none_or(|c| c.status != "True"))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `namespace/name` of a claim, from its label (`ResourceClaim ns/name ...`).
fn claim_name(claim: &ClaimInput) -> String {
    claim.scheduler_name.clone().unwrap_or_else(|| {
        claim
            .label
            .split(' ')
            .nth(1)
            .unwrap_or(&claim.label)
            .to_owned()
    })
}
