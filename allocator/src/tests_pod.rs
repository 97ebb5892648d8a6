//! A pod's claims searched together, each scenario's answer derived from the upstream source:
//! `pkg/scheduler/framework/plugins/dynamicresources/` (`foreachPodResourceClaim` gathers the
//! claims in `spec.resourceClaims` order, `claimStore` puts the implicit extended-resource claim
//! last, `toAllocate` leaves out allocated ones, `Filter` calls `Allocate` once with all of them)
//! and `structured/internal/incubating/allocator_incubating.go` (`Allocate` checks every claim
//! first; `allocateOne` goes claim by claim with backtracking across claims; `allocateDevice`
//! marks a device as allocating for its claim, so later claims see it in use, unless they ask for
//! admin access, which only avoids devices of its own claim; constraints and the 32-device limit
//! are per claim).

use crate::{Allocator, Objects, Outcome, Status, implicit_claim, link_pod};

/// GPUs `gpu-0`.. of driver example.com on node-a, with the NUMA nodes given.
fn gpus(numa: &[u8]) -> String {
    let mut text = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: gpus}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: node-a, generation: 1, resourceSliceCount: 1}\n  devices:\n".to_owned();
    for (i, n) in numa.iter().enumerate() {
        text.push_str(&format!(
            "  - name: gpu-{i}\n    attributes: {{numaNode: {{int: {n}}}}}\n"
        ));
    }
    text
}

const CLASSES: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: gpu}\nspec:\n  extendedResourceName: example.com/gpu\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// A ResourceClaim `name` in namespace ml with these requests (indented by 4).
fn claim(name: &str, devices: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: ml}}\nspec:\n  devices:\n{devices}"
    )
}

/// One GPU of class gpu, with an optional selector.
fn one_gpu(request: &str, selector: Option<&str>) -> String {
    let selectors = selector
        .map(|s| format!("\n        selectors:\n        - cel: {{expression: '{s}'}}"))
        .unwrap_or_default();
    format!(
        "    requests:\n    - name: {request}\n      exactly:\n        deviceClassName: gpu{selectors}\n"
    )
}

/// A pod in namespace ml with these `resourceClaims` entries (flow maps) and, when `gpus` > 0,
/// one container asking for `example.com/gpu: gpus`.
fn pod(claims: &[&str], gpus: u32) -> String {
    let mut text =
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ml}\nspec:\n".to_owned();
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
    text
}

/// Explains the (only) pod of `objects` text on `slices`, with its extended resources.
fn explain_pod(slices: &str, objects_text: &str) -> Vec<Outcome> {
    let mut objects = Objects::default();
    objects.add_text("slices", slices).unwrap();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("objects", objects_text).unwrap();
    let implicit = implicit_claim(&objects.pods[0], &objects.classes).claim;
    let linked = link_pod(&objects.pods[0], &objects.claims, implicit);
    let mut allocator =
        Allocator::new(&objects.slices, objects.classes, &[], Some("node-a")).unwrap();
    allocator.explain_pod(&linked)
}

/// `request=device` of an allocated outcome.
fn devices(outcome: &Outcome) -> Vec<String> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome
        .devices
        .iter()
        .map(|d| format!("{}={}", d.request, d.device))
        .collect()
}

// Two claims that each fit alone on a node of one GPU: `Allocate` gives the first claim gpu-0,
// the second then finds it in use (`deviceInUse`: allocatingDevices), backtracks into the first
// claim, which has no other device: no allocation for the pod, and the scheduler allocates none
// of its claims.
#[test]
fn two_claims_competing_for_one_gpu_leave_the_pod_unsatisfiable() {
    let text = [
        claim("a", &one_gpu("gpu", None)),
        claim("b", &one_gpu("gpu", None)),
        pod(
            &[
                "{name: first, resourceClaimName: a}",
                "{name: second, resourceClaimName: b}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0]), &text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    for outcome in &outcomes {
        assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
        assert_eq!(outcome.pod.as_deref(), Some("Pod ml/p"));
        assert!(outcome.devices.is_empty());
    }
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/a");
    // The second claim is the one that cannot be placed given the first.
    let why = outcomes[1].explanation.join("\n");
    assert!(
        why.contains("ResourceClaim ml/b fits alone, but not after the pod's claims before it")
            && why.contains("gpu-0 (ResourceClaim ml/a)"),
        "{why}"
    );
    assert!(
        outcomes[0].explanation[0].contains("ResourceClaim ml/b cannot be placed"),
        "{:?}",
        outcomes[0].explanation
    );
    // Each alone fits (explained without the pod).
    let mut objects = Objects::default();
    objects.add_text("slices", &gpus(&[0])).unwrap();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("objects", &text).unwrap();
    let mut allocator =
        Allocator::new(&objects.slices, objects.classes.clone(), &[], None).unwrap();
    for c in &objects.claims {
        assert_eq!(allocator.explain(c).status, Status::Allocated);
    }
    // Two GPUs: both fit, in claim order.
    let outcomes = explain_pod(&gpus(&[0, 0]), &text);
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-0"]);
    assert_eq!(devices(&outcomes[1]), ["gpu=gpu-1"]);
}

// The scheduler backtracks across claims: the first claim would take gpu-0 alone, but the second
// can only use gpu-0 (NUMA node 0), so the first claim gets gpu-1.
#[test]
fn claims_that_fit_together_get_the_devices_the_search_across_claims_picks() {
    let text = [
        claim("any", &one_gpu("gpu", None)),
        claim(
            "numa0",
            &one_gpu(
                "gpu",
                Some("device.attributes[\"example.com\"].numaNode == 0"),
            ),
        ),
        pod(
            &[
                "{name: a, resourceClaimName: any}",
                "{name: b, resourceClaimName: numa0}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-1"]);
    assert_eq!(devices(&outcomes[1]), ["gpu=gpu-0"]);
    // In the other order of resourceClaims, no backtracking is needed.
    let swapped = text.replace(
        "{name: a, resourceClaimName: any}\n  - {name: b, resourceClaimName: numa0}",
        "{name: b, resourceClaimName: numa0}\n  - {name: a, resourceClaimName: any}",
    );
    let outcomes = explain_pod(&gpus(&[0, 1]), &swapped);
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/numa0");
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-0"]);
    assert_eq!(devices(&outcomes[1]), ["gpu=gpu-1"]);
}

// A template's claim is stamped out for the pod (`<pod>-<claim>`), and the implicit claim of the
// pod's extended resources comes after the pod's own claims (`claimStore`): on two GPUs the
// template's claim gets gpu-0, the implicit claim gpu-1; asking for two extended GPUs more does
// not fit, and the implicit claim is the one that cannot be placed.
#[test]
fn a_template_claim_and_an_extended_resource_request_are_searched_together() {
    let template = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {name: one-gpu, namespace: ml}\nspec:\n  spec:\n    devices:\n      requests:\n      - name: gpu\n        exactly: {deviceClassName: gpu}\n";
    let text = [
        template,
        &pod(&["{name: g, resourceClaimTemplateName: one-gpu}"], 1),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert_eq!(
        outcomes[0].claim,
        "ResourceClaim ml/p-g (from ResourceClaimTemplate one-gpu)"
    );
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-0"]);
    assert_eq!(outcomes[1].claim, "Pod ml/p (extended resources)");
    assert_eq!(devices(&outcomes[1]), ["container-0-request-0=gpu-1"]);
    let text = [
        template,
        &pod(&["{name: g, resourceClaimTemplateName: one-gpu}"], 2),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert!(
        outcomes.iter().all(|o| o.status == Status::Unsatisfiable),
        "{outcomes:#?}"
    );
    let why = outcomes[1].explanation.join("\n");
    assert!(
        why.contains("Pod ml/p (extended resources) fits alone, but not after")
            && why.contains("gpu-0 (ResourceClaim ml/p-g"),
        "{why}"
    );
}

// An allocated claim of the pod is not searched again (`toAllocate`); its devices are in use
// (the allocated state) for the pod's pending claims.
#[test]
fn an_allocated_claim_of_the_pod_holds_its_devices() {
    let allocated = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: held, namespace: ml}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly: {deviceClassName: gpu}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {request: gpu, driver: example.com, pool: node-a, device: gpu-0}\n";
    let text = [
        allocated,
        &claim("new", &one_gpu("gpu", None)),
        &pod(
            &[
                "{name: a, resourceClaimName: held}",
                "{name: b, resourceClaimName: new}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/held");
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-0"]);
    assert!(outcomes[0].explanation[0].contains("allocated already"));
    assert_eq!(devices(&outcomes[1]), ["gpu=gpu-1"]);
    // One GPU: the pending claim finds it held.
    let outcomes = explain_pod(&gpus(&[0]), &text);
    assert_eq!(outcomes[1].status, Status::Unsatisfiable, "{outcomes:#?}");
    let why = outcomes[1].explanation.join("\n");
    assert!(why.contains("in use by ResourceClaim ml/held"), "{why}");
    // The held device is given back after the pod: another claim explained later sees it free.
    let mut objects = Objects::default();
    objects.add_text("slices", &gpus(&[0])).unwrap();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("objects", &text).unwrap();
    let linked = link_pod(&objects.pods[0], &objects.claims, None);
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    allocator.explain_pod(&linked);
    assert_eq!(
        allocator.explain(&objects.claims[1]).status,
        Status::Allocated
    );
}

// Constraints are per claim (`alloc.constraints[claimIndex]`), even where request names repeat
// across claims; the 32-device limit is per claim (`alloc.result[claimIndex]`), not per pod.
#[test]
fn constraints_and_the_device_limit_are_per_claim() {
    let pair = "    requests:\n    - name: g1\n      exactly: {deviceClassName: gpu}\n    - name: g2\n      exactly: {deviceClassName: gpu}\n    constraints:\n    - matchAttribute: example.com/numaNode\n";
    let text = [
        claim("pair", pair),
        claim("other", &one_gpu("g1", None)),
        pod(
            &[
                "{name: a, resourceClaimName: pair}",
                "{name: b, resourceClaimName: other}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 0, 1]), &text);
    assert_eq!(devices(&outcomes[0]), ["g1=gpu-0", "g2=gpu-1"]);
    assert_eq!(devices(&outcomes[1]), ["g1=gpu-2"]);
    // 20 + 20 devices on 48: each claim within 32, the pod over it.
    let twenty =
        "    requests:\n    - name: many\n      exactly: {deviceClassName: gpu, count: 20}\n";
    let text = [
        claim("x", twenty),
        claim("z", twenty),
        pod(
            &[
                "{name: a, resourceClaimName: x}",
                "{name: b, resourceClaimName: z}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0; 48]), &text);
    assert_eq!(devices(&outcomes[0]).len(), 20);
    assert_eq!(devices(&outcomes[1]).len(), 20);
    assert_eq!(devices(&outcomes[1])[0], "many=gpu-20");
}

// Admin access only avoids devices of its own claim (`allocatingDeviceForClaim`): the second
// claim's admin request gets the device the first claim takes.
#[test]
fn admin_access_sees_devices_of_the_pods_other_claims() {
    let admin = "    requests:\n    - name: watch\n      exactly: {deviceClassName: gpu, adminAccess: true}\n";
    let namespace = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ml\n  labels: {resource.kubernetes.io/admin-access: \"true\"}\n";
    let text = [
        namespace,
        &claim("work", &one_gpu("gpu", None)),
        &claim("monitor", admin),
        &pod(
            &[
                "{name: a, resourceClaimName: work}",
                "{name: b, resourceClaimName: monitor}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0]), &text);
    assert_eq!(devices(&outcomes[0]), ["gpu=gpu-0"]);
    assert_eq!(devices(&outcomes[1]), ["watch=gpu-0"]);
    assert!(outcomes[1].devices[0].admin_access);
}

// A claim the pod names that is not in the files: the scheduler does not try the pod
// ("resourceclaim not found"); an error in one claim fails the whole pod (`Allocate` returns the
// first claim's error before searching).
#[test]
fn a_missing_claim_or_an_invalid_one_fails_the_pod() {
    let text = [
        claim("a", &one_gpu("gpu", None)),
        pod(
            &[
                "{name: x, resourceClaimName: a}",
                "{name: other, resourceClaimName: gone}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    assert!(
        outcomes.iter().all(|o| o.status == Status::Error),
        "{outcomes:#?}"
    );
    assert_eq!(outcomes[0].claim, "ResourceClaim ml/gone");
    assert!(outcomes[0].explanation[0].contains("not in the files given"));
    let bad = claim(
        "bad",
        "    requests:\n    - name: gpu\n      exactly: {deviceClassName: nowhere}\n",
    );
    let text = [
        claim("a", &one_gpu("gpu", None)),
        bad,
        pod(
            &[
                "{name: x, resourceClaimName: a}",
                "{name: other, resourceClaimName: bad}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&[0, 1]), &text);
    assert!(
        outcomes.iter().all(|o| o.status == Status::Error),
        "{outcomes:#?}"
    );
    assert!(
        outcomes[1].explanation[0].contains("nowhere"),
        "{outcomes:#?}"
    );
    assert!(
        outcomes[0].explanation[0]
            .contains("fails the whole pod with the error of ResourceClaim ml/bad"),
        "{outcomes:#?}"
    );
}

// A claim that counting proves cannot fit alone (32 GPUs of one NUMA node where each node has
// 28) is answered without trying every combination, as for the claim alone: the pod is
// unsatisfiable and that claim is named, whatever comes before it.
#[test]
fn a_claim_that_cannot_fit_alone_is_named_without_a_search() {
    let numa: Vec<u8> = (0..56).map(|i| u8::from(i >= 28)).collect();
    let one_numa = "    requests:\n    - name: many\n      exactly: {deviceClassName: gpu, count: 32}\n    constraints:\n    - matchAttribute: example.com/numaNode\n";
    let text = [
        claim("small", &one_gpu("gpu", None)),
        claim("big", one_numa),
        pod(
            &[
                "{name: a, resourceClaimName: small}",
                "{name: b, resourceClaimName: big}",
            ],
            0,
        ),
    ]
    .concat();
    let outcomes = explain_pod(&gpus(&numa), &text);
    assert!(
        outcomes.iter().all(|o| o.status == Status::Unsatisfiable),
        "{outcomes:#?}"
    );
    let why = outcomes[1].explanation.join("\n");
    assert!(
        why.contains("ResourceClaim ml/big does not fit even alone")
            && why.contains("largest group has 28"),
        "{why}"
    );
    assert_eq!(outcomes[1].search_steps, 0);
}
