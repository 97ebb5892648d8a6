//! A pod's allocated claims, its template claims' real names, the implicit claim of an earlier
//! scheduling cycle and allocations' node selectors, each scenario's answer derived from the
//! upstream source:
//! - `pkg/scheduler/framework/plugins/dynamicresources/dynamicresources.go`: `PreFilter`
//!   (`CanBeReserved`, `nodeaffinity.NewNodeSelector` of `status.allocation.nodeSelector`),
//!   `Filter` ("resourceclaim not available on the node" after `Allocate`; `isClaimReadyForBinding`),
//!   `PostFilter` (deallocation), `bindClaim` (reservedFor appended, the API server's 256 limit);
//! - `extendeddynamicresources.go`: `findExtendedResourceClaim`, `filterExtendedResources`
//!   ("cannot schedule extended resource claim");
//! - `staging/src/k8s.io/dynamic-resource-allocation/resourceclaim/resourceclaim.go`: `Name`
//!   (`pod.status.resourceClaimStatuses`), `IsForPod`, `CanBeReserved`;
//! - `structured/internal/incubating/allocator_incubating.go`: `createNodeSelector`.

use std::collections::BTreeMap;

use crate::{
    Allocator, FeatureGates, KubernetesVersion, Node, Objects, Outcome, Status,
    describe_node_selector, implicit_claim, link_pod,
};

/// GPUs `gpu-0`, `gpu-1` of driver example.com on node-a.
const GPUS: &str = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: gpus}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: node-a, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: gpu-0\n  - name: gpu-1\n";

const CLASSES: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: gpu}\nspec:\n  extendedResourceName: example.com/gpu\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// A pending ResourceClaim `name` in namespace ml asking for `count` GPUs.
fn pending(name: &str, count: u32) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: ml}}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly: {{deviceClassName: gpu, count: {count}}}\n"
    )
}

/// An allocated ResourceClaim `name` holding gpu-1, with `status` lines added (indented by 2
/// under `status:`, after `allocation:`), and `allocation` lines under `allocation:`.
fn allocated(name: &str, allocation: &str, status: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: ml}}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly: {{deviceClassName: gpu}}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {{request: gpu, driver: example.com, pool: node-a, device: gpu-1}}\n{allocation}{status}"
    )
}

/// A node selector of one `matchFields metadata.name In [node]` term (under `allocation:`).
fn on_node(node: &str) -> String {
    format!(
        "    nodeSelector:\n      nodeSelectorTerms:\n      - matchFields:\n        - {{key: metadata.name, operator: In, values: [{node}]}}\n"
    )
}

/// Pod p (uid uid-p) in ml with these `resourceClaims` entries, `gpus` extended GPUs, and these
/// lines under `status:` (none: no status).
fn pod(claims: &[&str], gpus: u32, status: &str) -> String {
    let mut text =
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ml, uid: uid-p}\nspec:\n"
            .to_owned();
    if !claims.is_empty() {
        text.push_str("  resourceClaims:\n");
        for c in claims {
            text.push_str(&format!("  - {c}\n"));
        }
    }
    text.push_str("  containers:\n  - name: main\n    image: x\n");
    if gpus > 0 {
        text.push_str(&format!(
            "    resources: {{limits: {{example.com/gpu: {gpus}}}}}\n"
        ));
    }
    if !status.is_empty() {
        text.push_str("status:\n");
        text.push_str(status);
    }
    text
}

/// Explains the only pod of `text` on node-a (labels as given) with the rules of `version`.
fn explain_on(version: KubernetesVersion, labels: &[(&str, &str)], text: &str) -> Vec<Outcome> {
    let mut objects = Objects::default();
    objects.add_text("slices", GPUS).unwrap();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("objects", text).unwrap();
    let implicit = implicit_claim(&objects.pods[0], &objects.classes).claim;
    let linked = link_pod(&objects.pods[0], &objects.claims, implicit);
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let node = Node::named(Some("node-a"), labels);
    let mut allocator = Allocator::for_node(
        version,
        FeatureGates::defaults(version),
        &objects.slices,
        objects.classes,
        &[],
        &node,
    )
    .unwrap();
    allocator.explain_pod(&linked)
}

fn explain(text: &str) -> Vec<Outcome> {
    explain_on(KubernetesVersion::NEWEST, &[], text)
}

fn why(outcome: &Outcome) -> String {
    outcome.explanation.join("\n")
}

// `Filter`: an allocated claim whose `status.allocation.nodeSelector` does not select the node is
// unavailable ("resourceclaim not available on the node"), even though the pod's pending claim
// fits (the allocator runs first and succeeds); `PostFilter` would deallocate it, as it is
// reserved for nobody. On the node it names, the claim is usable and the pod fits.
#[test]
fn an_allocated_claim_for_another_node_makes_the_node_unavailable() {
    let text = [
        allocated("elsewhere", &on_node("node-b"), ""),
        pending("fresh", 1),
        pod(
            &[
                "{name: a, resourceClaimName: elsewhere}",
                "{name: b, resourceClaimName: fresh}",
            ],
            0,
            "",
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/elsewhere");
    assert_eq!(outcomes[0].status, Status::Unsatisfiable);
    assert!(
        why(&outcomes[0]).starts_with("resourceclaim not available on the node: the allocation's node selector (metadata.name In [node-b]) does not select node node-a")
            && why(&outcomes[0]).contains("PostFilter deallocates this claim"),
        "{}",
        why(&outcomes[0])
    );
    assert_eq!(outcomes[1].status, Status::Unsatisfiable);
    assert!(outcomes[1].devices.is_empty());
    assert!(
        why(&outcomes[1]).contains("would fit, but the scheduler's Filter refuses the node: resourceclaim not available on the node (ResourceClaim ml/elsewhere)"),
        "{}",
        why(&outcomes[1])
    );
    // Reserved for another pod: PostFilter leaves it.
    let reserved = text.replacen(
        "values: [node-b]}\n",
        "values: [node-b]}\n  reservedFor:\n  - {resource: pods, name: q, uid: uid-q}\n",
        1,
    );
    let outcomes = explain(&reserved);
    assert!(
        why(&outcomes[0]).contains("reserved for other pods"),
        "{}",
        why(&outcomes[0])
    );
    // Its own node: usable, its node selector reported, the pending claim gets gpu-0.
    let outcomes = explain(&text.replace("[node-b]", "[node-a]"));
    assert_eq!(outcomes[0].status, Status::Allocated, "{outcomes:#?}");
    assert_eq!(
        describe_node_selector(outcomes[0].node_selector.as_ref().unwrap()),
        "metadata.name In [node-a]"
    );
    assert_eq!(outcomes[1].status, Status::Allocated, "{outcomes:#?}");
    assert_eq!(outcomes[1].devices[0].device, "gpu-0");
}

// The allocator's failure is answered before unavailable claims (`Filter` returns from
// `Allocate`'s result first): a pending claim that cannot fit keeps its own reason.
#[test]
fn a_pending_claim_that_does_not_fit_is_answered_before_an_unavailable_one() {
    let text = [
        allocated("elsewhere", &on_node("node-b"), ""),
        pending("three", 3),
        pod(
            &[
                "{name: a, resourceClaimName: elsewhere}",
                "{name: b, resourceClaimName: three}",
            ],
            0,
            "",
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(outcomes[1].status, Status::Unsatisfiable);
    assert!(
        !why(&outcomes[1]).contains("not available on the node"),
        "{}",
        why(&outcomes[1])
    );
}

// Node selectors match labels as node affinity does; one that does not parse fails the pod in
// `PreFilter` with an error (`statusError`), before any search.
#[test]
fn allocation_node_selectors_match_labels_and_an_unparsable_one_fails_the_pod() {
    let by_label = "    nodeSelector:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {key: rack, operator: In, values: [r1]}\n";
    let text = [
        allocated("racked", by_label, ""),
        pending("fresh", 1),
        pod(
            &[
                "{name: a, resourceClaimName: racked}",
                "{name: b, resourceClaimName: fresh}",
            ],
            0,
            "",
        ),
    ]
    .concat();
    let on_rack = explain_on(KubernetesVersion::NEWEST, &[("rack", "r1")], &text);
    assert_eq!(on_rack[0].status, Status::Allocated, "{on_rack:#?}");
    assert_eq!(on_rack[1].status, Status::Allocated, "{on_rack:#?}");
    let off_rack = explain_on(KubernetesVersion::NEWEST, &[("rack", "r2")], &text);
    assert_eq!(off_rack[0].status, Status::Unsatisfiable);
    assert!(why(&off_rack[0]).contains("(rack In [r1]) does not select node node-a"));
    let broken = text.replace("operator: In", "operator: Near");
    let outcomes = explain(&broken);
    assert_eq!(outcomes[0].status, Status::Error, "{outcomes:#?}");
    assert!(why(&outcomes[0]).contains("failed to parse node selector"));
    assert_eq!(outcomes[1].status, Status::Error);
    assert!(
        why(&outcomes[1]).contains(
            "not allocated: the scheduler fails the whole pod with the error of ResourceClaim ml/racked"
        ),
        "{}",
        why(&outcomes[1])
    );
}

// `isClaimReadyForBinding`: a binding failure condition true in the claim's device status makes
// the claim unavailable (with DRADeviceBindingConditions, on by default from 1.36); conditions
// not all true yet only wait (the binding timeout needs the clock). With the 1.35 defaults the
// gate is off and the conditions are not read.
#[test]
fn a_binding_failure_condition_makes_the_allocated_claim_unavailable() {
    let conditions = |failed: &str| {
        format!(
            "  devices:\n  - driver: example.com\n    pool: node-a\n    device: gpu-1\n    conditions:\n    - {{type: FabricAttached, status: \"False\", reason: Waiting, message: attaching, lastTransitionTime: \"2026-01-01T00:00:00Z\"}}\n    - {{type: FabricFailed, status: \"{failed}\", reason: Broken, message: link down, lastTransitionTime: \"2026-01-01T00:00:00Z\"}}\n"
        )
    };
    let bound = |failed: &str| {
        [
            allocated("fabric", &on_node("node-a"), &conditions(failed)).replace(
                "device: gpu-1}",
                "device: gpu-1, bindingConditions: [FabricAttached], bindingFailureConditions: [FabricFailed]}",
            ),
            pod(&["{name: a, resourceClaimName: fabric}"], 0, ""),
        ]
        .concat()
    };
    let outcomes = explain(&bound("True"));
    assert_eq!(outcomes[0].status, Status::Unsatisfiable, "{outcomes:#?}");
    assert!(
        why(&outcomes[0]).starts_with(
            "resourceclaim not available on the node: claim fabric binding failed: reason=Broken, message=\"link down\""
        ),
        "{}",
        why(&outcomes[0])
    );
    let outcomes = explain(&bound("False"));
    assert_eq!(outcomes[0].status, Status::Allocated, "{outcomes:#?}");
    assert!(
        outcomes[0]
            .warnings
            .iter()
            .any(|w| w.contains("binding conditions are not all true yet")),
        "{:?}",
        outcomes[0].warnings
    );
    let outcomes = explain_on(KubernetesVersion::V1_35, &[], &bound("True"));
    assert_eq!(outcomes[0].status, Status::Allocated, "{outcomes:#?}");
}

/// `n` reservedFor entries of other pods (and the pod itself when `mine`).
fn reserved_for(n: usize, mine: bool) -> String {
    let mut text = "  reservedFor:\n".to_owned();
    for i in 0..n {
        text.push_str(&format!(
            "  - {{resource: pods, name: other-{i}, uid: uid-{i}}}\n"
        ));
    }
    if mine {
        text.push_str("  - {resource: pods, name: p, uid: uid-p}\n");
    }
    text
}

// `CanBeReserved` is always true, so neither PreFilter nor Filter refuses a claim whose
// reservedFor is full; `bindClaim` appends the pod and the API server refuses the 257th entry
// (`ResourceClaimReservedForMaxSize` = 256): the pod fails at binding. A claim already reserved
// for the pod is not reserved again.
#[test]
fn a_full_reserved_for_fails_the_pod_at_binding_not_in_filter() {
    let text = |n: usize, mine: bool| {
        [
            allocated("shared", &on_node("node-a"), &reserved_for(n, mine)),
            pending("fresh", 1),
            pod(
                &[
                    "{name: a, resourceClaimName: shared}",
                    "{name: b, resourceClaimName: fresh}",
                ],
                0,
                "",
            ),
        ]
        .concat()
    };
    let outcomes = explain(&text(256, false));
    assert_eq!(outcomes[0].status, Status::Error, "{outcomes:#?}");
    assert_eq!(
        outcomes[0].explanation[0],
        "add reservation to claim ml/shared: ResourceClaim.resource.k8s.io \"shared\" is invalid: status.reservedFor: Too many: 257: must have at most 256 items"
    );
    assert!(why(&outcomes[0]).contains("Filter accepts the node"));
    // The search itself found the pending claim's devices (Filter passed).
    assert_eq!(outcomes[1].status, Status::Allocated, "{outcomes:#?}");
    assert!(
        outcomes[1]
            .warnings
            .iter()
            .any(|w| w.starts_with("the pod's binding fails at ResourceClaim ml/shared")),
        "{:?}",
        outcomes[1].warnings
    );
    for (n, mine) in [(255, false), (256, true)] {
        let outcomes = explain(&text(n, mine));
        assert_eq!(outcomes[0].status, Status::Allocated, "{n} {mine}");
        assert!(
            outcomes[1]
                .warnings
                .iter()
                .all(|w| !w.contains("binding fails"))
        );
    }
}

/// The implicit claim the scheduler created in an earlier cycle for pod p (owned by `owner_uid`).
fn stale_claim(owner_uid: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata:\n  name: p-extended-resources-x7k2q\n  namespace: ml\n  annotations: {{resource.kubernetes.io/extended-resource-claim: \"true\"}}\n  ownerReferences:\n  - {{apiVersion: v1, kind: Pod, name: p, uid: {owner_uid}, controller: true}}\nspec:\n  devices:\n    requests:\n    - name: container-0-request-0\n      exactly: {{deviceClassName: gpu, count: 1}}\n"
    )
}

// `findExtendedResourceClaim` finds the claim of an earlier cycle (annotation, the pod as
// controller); `filterExtendedResources` refuses every node ("cannot schedule extended resource
// claim"), and nothing is searched. A claim owned by another pod (another UID) is not the pod's:
// the implicit claim is built anew and fits.
#[test]
fn an_implicit_claim_left_from_an_earlier_cycle_blocks_the_pod() {
    let text = [
        stale_claim("uid-p"),
        pending("fresh", 1),
        pod(&["{name: b, resourceClaimName: fresh}"], 1, ""),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/fresh");
    assert_eq!(outcomes[0].status, Status::Unsatisfiable);
    assert!(why(&outcomes[0]).contains("cannot schedule extended resource claim"));
    assert!(
        outcomes[1]
            .claim
            .starts_with("ResourceClaim ml/p-extended-resources-x7k2q (the implicit claim"),
        "{}",
        outcomes[1].claim
    );
    assert_eq!(outcomes[1].status, Status::Unsatisfiable);
    assert_eq!(
        outcomes[1].explanation[0],
        "cannot schedule extended resource claim"
    );
    assert!(why(&outcomes[1]).contains("deletion of ResourceClaim completed"));
    assert_eq!(outcomes[1].search_steps, 0);
    // Another pod's claim of the same name: not this pod's.
    let outcomes = explain(&text.replace("uid: uid-p, controller", "uid: uid-other, controller"));
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(outcomes[1].claim, "Pod ml/p (extended resources)");
    assert!(
        outcomes.iter().all(|o| o.status == Status::Allocated),
        "{outcomes:#?}"
    );
    // A pod without extended resources: the annotated claim plays no part (nor is it linked).
    let mut objects = Objects::default();
    objects.add_text("classes", CLASSES).unwrap();
    objects
        .add_text("objects", &[stale_claim("uid-p"), pod(&[], 0, "")].concat())
        .unwrap();
    let linked = link_pod(&objects.pods[0], &objects.claims, None);
    assert!(linked.stale_extended.is_none() && linked.used.is_empty());
}

/// A ResourceClaimTemplate one-gpu in ml.
const TEMPLATE: &str = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {name: one-gpu, namespace: ml}\nspec:\n  spec:\n    devices:\n      requests:\n      - name: gpu\n        exactly: {deviceClassName: gpu}\n";

// `resourceclaim.Name`: a template's claim is the one `pod.status.resourceClaimStatuses` names,
// and it must be controlled by the pod (`IsForPod`); a status entry without a name means the
// claim was not created on purpose (skipped). Without an entry, the scheduler waits ("ResourceClaim
// not created yet"); explain answers for `<pod>-<claim>` and says so.
#[test]
fn a_template_claim_is_the_one_the_pod_status_names() {
    let generated = |owner_uid: &str| {
        allocated("p-g-abc12", &on_node("node-a"), "").replace(
            "metadata: {name: p-g-abc12, namespace: ml}",
            &format!(
                "metadata:\n  name: p-g-abc12\n  namespace: ml\n  ownerReferences:\n  - {{apiVersion: v1, kind: Pod, name: p, uid: {owner_uid}, controller: true}}"
            ),
        )
    };
    let status = "  resourceClaimStatuses:\n  - {name: g, resourceClaimName: p-g-abc12}\n";
    let text = [
        TEMPLATE.to_owned(),
        generated("uid-p"),
        pod(
            &["{name: g, resourceClaimTemplateName: one-gpu}"],
            1,
            status,
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(
        outcomes[0].claim,
        "ResourceClaim ml/p-g-abc12 (from ResourceClaimTemplate one-gpu)"
    );
    // Allocated already (gpu-1): the implicit claim gets gpu-0.
    assert_eq!(outcomes[0].status, Status::Allocated);
    assert_eq!(outcomes[0].devices[0].device, "gpu-1");
    assert_eq!(outcomes[1].devices[0].device, "gpu-0");
    // Not owned by the pod.
    let outcomes = explain(&text.replace("uid: uid-p, controller", "uid: uid-q, controller"));
    assert!(
        outcomes.iter().any(|o| why(o)
            == "ResourceClaim ml/p-g-abc12 was not created for Pod ml/p (Pod is not owner)"),
        "{outcomes:#?}"
    );
    assert!(outcomes.iter().all(|o| o.status != Status::Allocated));
    // Named in the status but not in the files: stamped out under its real name.
    let text = [
        TEMPLATE,
        &pod(
            &["{name: g, resourceClaimTemplateName: one-gpu}"],
            0,
            status,
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(
        outcomes[0].claim,
        "ResourceClaim ml/p-g-abc12 (from ResourceClaimTemplate one-gpu)"
    );
    assert_eq!(outcomes[0].status, Status::Allocated);
    assert!(
        outcomes[0]
            .warnings
            .iter()
            .any(|w| w.contains("is not in the files"))
    );
    // No status entry: explain's stand-in name, with the scheduler's wait said.
    let text = [
        TEMPLATE,
        &pod(&["{name: g, resourceClaimTemplateName: one-gpu}"], 0, ""),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(
        outcomes[0].claim,
        "ResourceClaim ml/p-g (from ResourceClaimTemplate one-gpu)"
    );
    assert!(
        outcomes[0]
            .warnings
            .iter()
            .any(|w| w.contains("(pod \"ml/p\": ResourceClaim not created yet)")),
        "{:?}",
        outcomes[0].warnings
    );
    // Not created on purpose: skipped.
    let text = [
        TEMPLATE,
        &pod(
            &["{name: g, resourceClaimTemplateName: one-gpu}"],
            1,
            "  resourceClaimStatuses:\n  - {name: g}\n",
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    assert_eq!(outcomes[0].claim, "Pod ml/p (extended resources)");
}

// `foreachPodResourceClaim`: a claim being deleted stops the pod ("resourceclaim %q is being
// deleted").
#[test]
fn a_claim_being_deleted_stops_the_pod() {
    let text = [
        pending("going", 1).replace(
            "metadata: {name: going, namespace: ml}",
            "metadata: {name: going, namespace: ml, deletionTimestamp: \"2026-01-01T00:00:00Z\"}",
        ),
        pending("fresh", 1),
        pod(
            &[
                "{name: a, resourceClaimName: going}",
                "{name: b, resourceClaimName: fresh}",
            ],
            0,
            "",
        ),
    ]
    .concat();
    let outcomes = explain(&text);
    assert_eq!(
        why(&outcomes[0]),
        "resourceclaim \"going\" is being deleted"
    );
    assert!(outcomes.iter().all(|o| o.status == Status::Error));
}
