//! A pod linked to its claims as the scheduler's DRA plugin finds them (`foreachPodResourceClaim`
//! in `pkg/scheduler/framework/plugins/dynamicresources/dynamicresources.go`, with
//! `resourceclaim.Name` and `resourceclaim.IsForPod` of
//! `staging/src/k8s.io/dynamic-resource-allocation/resourceclaim/resourceclaim.go`), and the
//! implicit claim of its extended resources, or the one left from an earlier scheduling cycle
//! (`findExtendedResourceClaim` in `extendeddynamicresources.go`).

use crate::input::{ClaimInput, PodInput};
use crate::reserved::PodIdentity;

/// A pod linked to its claims, in the order the scheduler allocates them.
#[derive(Debug, Clone, Default)]
pub struct PodClaims {
    /// `Pod ns/name` or `Deployment ns/name`.
    pub pod: String,
    /// The pod as `reservedFor` and owner references name it.
    pub identity: PodIdentity,
    /// Claims without an allocation, in `spec.resourceClaims` order, then the implicit claim of
    /// the pod's extended resources.
    pub pending: Vec<ClaimInput>,
    /// The pod's claims that are allocated already: their devices are held.
    pub allocated: Vec<ClaimInput>,
    /// Claims the pod names that the scheduler cannot use: not in the files, not owned by the
    /// pod, being deleted. `(label, why)`. The scheduler does not try the pod while there are any.
    pub missing: Vec<(String, String)>,
    /// The pod's implicit extended-resource claim left from an earlier scheduling cycle (the
    /// scheduler refuses every node while it exists, then deletes it).
    pub stale_extended: Option<ClaimInput>,
    /// What the user should know about how the claims were found (a template's claim named by
    /// explain, a claim the files lack).
    pub warnings: Vec<String>,
    /// Indices of the given claims (ResourceClaims and templates) that the pod uses, so they are
    /// not explained again on their own.
    pub used: Vec<usize>,
}

/// `(kind, name)` of a claim's label (`ResourceClaim ns/name`, `ResourceClaimTemplate name`).
fn kind_and_name(label: &str) -> Option<(&str, &str)> {
    let (kind, rest) = label.split_once(' ')?;
    let name = rest.split(' ').next().unwrap_or(rest);
    Some((kind, name.rsplit('/').next().unwrap_or(name)))
}

/// Whether an object of namespace `object` can be the one a pod of namespace `pod` names: equal,
/// or either not written in the files (then taken as the same).
fn same_namespace(pod: Option<&str>, object: Option<&str>) -> bool {
    match (pod, object) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The annotation the scheduler puts on the implicit claim it creates for a pod's extended
/// resources (`resourceapi.ExtendedResourceClaimAnnotation`).
pub const EXTENDED_RESOURCE_CLAIM_ANNOTATION: &str =
    "resource.kubernetes.io/extended-resource-claim";

/// Whether `claim` is controlled by the pod (`metav1.IsControlledBy`: the controller owner
/// reference's UID is the pod's; without the pod's UID, its kind and name).
fn controlled_by(claim: &ClaimInput, pod: &PodIdentity) -> bool {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "Pod" && pod.is(&o.uid, &o.name))
}

/// Links `pod` to its claims among `claims` (ResourceClaims and ResourceClaimTemplates read from
/// the files) as the scheduler sees them, with `implicit` (the claim of its extended resources,
/// see [`crate::implicit_claim`]) last.
///
/// A template's claim is the one `pod.status.resourceClaimStatuses` names (upstream
/// `resourceclaim.Name`), which must be controlled by the pod (`resourceclaim.IsForPod`); a
/// status that names none means the claim is intentionally not created, and the claim is skipped.
/// Without an entry the scheduler does not try the pod (`ErrClaimNotFound`); explain then answers
/// for the claim the template would stamp out, named `<pod>-<claim>`, and says so. Where the pod
/// asks for extended resources, a claim annotated as the scheduler's implicit claim and
/// controlled by the pod is the implicit claim of an earlier scheduling cycle
/// (`findExtendedResourceClaim` in `extendeddynamicresources.go`).
pub fn link_pod(pod: &PodInput, claims: &[ClaimInput], implicit: Option<ClaimInput>) -> PodClaims {
    let namespace = pod.namespace.as_deref();
    let pod_name = kind_and_name(&pod.label).map_or("pod", |(_, name)| name);
    let identity = PodIdentity {
        name: pod_name.to_owned(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
    };
    let mut linked = PodClaims {
        pod: pod.label.clone(),
        identity: identity.clone(),
        ..PodClaims::default()
    };
    let find = |kind: &str, name: &str| {
        claims.iter().position(|c| {
            kind_and_name(&c.label) == Some((kind, name))
                && same_namespace(namespace, c.namespace.as_deref())
        })
    };
    let qualified = |name: &str| match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    let pod_ref = qualified(pod_name);
    for pod_claim in pod.spec.resource_claims.iter().flatten() {
        match (
            &pod_claim.resource_claim_name,
            &pod_claim.resource_claim_template_name,
        ) {
            (Some(name), _) => match find("ResourceClaim", name) {
                Some(i) => {
                    linked.used.push(i);
                    if let Some(claim) = claims.get(i) {
                        linked.add(claim.clone());
                    }
                }
                None => linked.missing.push((
                    format!("ResourceClaim {}", qualified(name)),
                    format!(
                        "{}: pod claim {} names ResourceClaim {}, which is not in the files given: the scheduler does not try the pod until it exists (\"resourceclaim not found\")",
                        pod.label,
                        pod_claim.name,
                        qualified(name)
                    ),
                )),
            },
            (None, Some(template)) => {
                let Some(t) = find("ResourceClaimTemplate", template) else {
                    linked.missing.push((
                        format!("ResourceClaimTemplate {}", qualified(template)),
                        format!(
                            "{}: pod claim {} names ResourceClaimTemplate {}, which is not in the files given: no claim is created for the pod, and the scheduler does not try it until one exists",
                            pod.label,
                            pod_claim.name,
                            qualified(template)
                        ),
                    ));
                    continue;
                };
                linked.used.push(t);
                let Some(source) = claims.get(t) else { continue };
                let status = pod
                    .claim_statuses
                    .iter()
                    .flatten()
                    .find(|s| s.name == pod_claim.name);
                let generated = match status {
                    // Intentionally not created: the scheduler skips the pod claim.
                    Some(s) if s.resource_claim_name.is_none() => {
                        linked.warnings.push(format!(
                            "pod claim {}: status.resourceClaimStatuses names no claim (none was created on purpose): the scheduler skips it",
                            pod_claim.name
                        ));
                        continue;
                    }
                    Some(s) => s.resource_claim_name.clone().unwrap_or_default(),
                    None => {
                        linked.warnings.push(format!(
                            "pod claim {}: the pod's status.resourceClaimStatuses does not name the claim made from ResourceClaimTemplate {template}: the scheduler does not try the pod until the resourceclaim controller has created it (pod \"{pod_ref}\": ResourceClaim not created yet); explain answers for the claim the template would stamp out, named {pod_name}-{} here (the controller adds a random suffix)",
                            pod_claim.name, pod_claim.name
                        ));
                        format!("{pod_name}-{}", pod_claim.name)
                    }
                };
                if status.is_some() {
                    // The generated claim itself, when the files have it.
                    if let Some(i) = find("ResourceClaim", &generated) {
                        let Some(claim) = claims.get(i) else { continue };
                        linked.used.push(i);
                        if !controlled_by(claim, &identity) {
                            linked.missing.push((
                                claim.label.clone(),
                                format!(
                                    "ResourceClaim {} was not created for Pod {pod_ref} (Pod is not owner)",
                                    qualified(&generated)
                                ),
                            ));
                            continue;
                        }
                        let mut claim = claim.clone();
                        claim.label = format!("{} (from ResourceClaimTemplate {template})", claim.label);
                        linked.add(claim);
                        continue;
                    }
                    linked.warnings.push(format!(
                        "pod claim {}: ResourceClaim {} (named in the pod's status) is not in the files: explain takes it as ResourceClaimTemplate {template} stamps it out, not allocated yet",
                        pod_claim.name,
                        qualified(&generated)
                    ));
                }
                linked.pending.push(ClaimInput {
                    label: format!(
                        "ResourceClaim {} (from ResourceClaimTemplate {template})",
                        qualified(&generated)
                    ),
                    spec: source.spec.clone(),
                    status: None,
                    namespace: pod.namespace.clone().or_else(|| source.namespace.clone()),
                    request_mappings: Vec::new(),
                    scheduler_name: Some(qualified(&generated)),
                    metadata: Default::default(),
                });
            }
            // Neither: the API server refuses such a pod; the scheduler skips a claim without a
            // name (`foreachPodResourceClaim`).
            (None, None) => {}
        }
    }
    if implicit.is_some() {
        // `findExtendedResourceClaim`: the annotation "true" and the pod as controller.
        let stale = claims.iter().enumerate().find(|(_, c)| {
            kind_and_name(&c.label).map(|(kind, _)| kind) == Some("ResourceClaim")
                && same_namespace(namespace, c.namespace.as_deref())
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(EXTENDED_RESOURCE_CLAIM_ANNOTATION))
                    .map(String::as_str)
                    == Some("true")
                && controlled_by(c, &identity)
        });
        if let Some((i, claim)) = stale {
            linked.used.push(i);
            // A claim the scheduler created has requests: one from an earlier cycle. (One
            // without requests would be taken as the in-memory claim of this cycle.)
            let has_requests = claim
                .spec
                .devices
                .as_ref()
                .is_some_and(|d| d.requests.is_some());
            if has_requests {
                linked.stale_extended = Some(claim.clone());
                return linked;
            }
        }
    }
    linked.pending.extend(implicit);
    linked
}

impl PodClaims {
    /// A ResourceClaim of the pod: allocated or pending, or unusable while being deleted.
    fn add(&mut self, claim: ClaimInput) {
        if claim.metadata.deletion_timestamp.is_some() {
            let name = kind_and_name(&claim.label)
                .map_or("", |(_, n)| n)
                .to_owned();
            self.missing.push((
                claim.label.clone(),
                format!("resourceclaim \"{name}\" is being deleted"),
            ));
            return;
        }
        let allocated = claim
            .status
            .as_ref()
            .is_some_and(|s| s.allocation.is_some());
        match allocated {
            true => self.allocated.push(claim),
            false => self.pending.push(claim),
        }
    }
}
