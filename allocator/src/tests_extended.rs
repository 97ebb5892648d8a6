//! A pod's extended resources turned into the implicit claim as the 1.36 scheduler builds it
//! (kubernetes/kubernetes `pkg/scheduler/framework/plugins/dynamicresources/
//! extendeddynamicresources.go`: `createRequestsAndMappings`, `createResourceRequestAndMappings`,
//! `partitionContainerIndices`; `extended/cache.go` for which class serves a name), then explained.

use crate::{Allocator, Objects, RequestMapping, Status, implicit_claim};

const CLASSES: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: gpu-class}\nspec:\n  extendedResourceName: example.com/gpu\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// Requests of the implicit claim as `name=class×count`, and its mappings as
/// `container/resource->request`.
fn implicit(pod: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut objects = Objects::default();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("pod", pod).unwrap();
    let implicit = implicit_claim(&objects.pods[0], &objects.classes);
    let Some(claim) = implicit.claim else {
        return (Vec::new(), Vec::new(), implicit.notes);
    };
    let requests = claim
        .spec
        .devices
        .unwrap()
        .requests
        .unwrap()
        .iter()
        .map(|r| {
            let e = r.exactly.as_ref().unwrap();
            format!("{}={}x{}", r.name, e.device_class_name, e.count.unwrap())
        })
        .collect();
    let mappings = claim
        .request_mappings
        .iter()
        .map(|m: &RequestMapping| {
            format!(
                "{}/{}->{}",
                m.container_name, m.resource_name, m.request_name
            )
        })
        .collect();
    (requests, mappings, implicit.notes)
}

// Containers are numbered init containers first; request names are
// `container-<index>-request-<position of the resource among the container's requests, sorted>`;
// a resource only under limits is requested at its limit (API defaulting); a non-sidecar init
// container reuses the devices of later long-lived containers before asking for more; a resource
// no class serves is left to device plugins; the pod's own claims are not part of it.
#[test]
fn the_implicit_claim_follows_the_schedulers_construction() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: trainer, namespace: ml}\nspec:\n  resourceClaims:\n  - {name: nic, resourceClaimTemplateName: rdma-nic}\n  initContainers:\n  - name: init-a\n    image: x\n    resources: {requests: {example.com/gpu: 2}, limits: {example.com/gpu: 2}}\n  - name: side\n    image: x\n    restartPolicy: Always\n    resources: {limits: {example.com/gpu: 1}}\n  containers:\n  - name: main\n    image: x\n    resources: {requests: {cpu: 1, memory: 1Gi, example.com/gpu: 1}, limits: {example.com/gpu: 1}, claims: [{name: nic}]}\n  - name: helper\n    image: x\n    resources: {limits: {deviceclass.resource.kubernetes.io/example: 1, example.com/fpga: 1}}\n";
    let (requests, mappings, notes) = implicit(pod);
    assert_eq!(
        requests,
        [
            "container-1-request-0=gpu-classx1",
            "container-2-request-1=gpu-classx1",
            "container-3-request-0=examplex1",
        ]
    );
    assert_eq!(
        mappings,
        [
            "helper/deviceclass.resource.kubernetes.io/example->container-3-request-0",
            "side/example.com/gpu->container-1-request-0",
            "main/example.com/gpu->container-2-request-1",
            // init-a needs 2 and shares the sidecar's and main's: no request of its own.
            "init-a/example.com/gpu->container-1-request-0",
            "init-a/example.com/gpu->container-2-request-1",
        ]
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("no DeviceClass serves the extended resource example.com/fpga")),
        "{notes:?}"
    );
    // The pod's own claims are not part of the implicit claim (`pod.rs` links them).
    assert!(!requests.iter().any(|r| r.contains("rdma")), "{requests:?}");
}

// Several non-sidecar init containers run one after the other: only the largest request is kept
// and the others' mappings point to it.
#[test]
fn init_containers_share_the_largest_request() {
    let pod = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ml}\nspec:\n  template:\n    spec:\n      initContainers:\n      - {name: i0, image: x, resources: {limits: {example.com/gpu: 3}}}\n      - {name: i1, image: x, resources: {limits: {example.com/gpu: 2}}}\n      containers:\n      - {name: main, image: x, resources: {limits: {example.com/gpu: 1}}}\n";
    let (requests, mappings, _) = implicit(pod);
    assert_eq!(
        requests,
        [
            "container-0-request-0=gpu-classx2",
            "container-2-request-0=gpu-classx1"
        ]
    );
    assert_eq!(
        mappings,
        [
            "main/example.com/gpu->container-2-request-0",
            "i0/example.com/gpu->container-2-request-0",
            "i0/example.com/gpu->container-0-request-0",
            "i1/example.com/gpu->container-2-request-0",
            "i1/example.com/gpu->container-0-request-0",
        ]
    );
    // Nothing a class serves: no claim.
    let plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: x, resources: {limits: {cpu: 1, example.com/fpga: 1, hugepages-2Mi: 1Gi}}}\n";
    let (requests, _, notes) = implicit(plain);
    assert!(requests.is_empty());
    assert_eq!(
        notes.len(),
        1,
        "only the fpga is an extended resource: {notes:?}"
    );
}

// Counts as large as a quantity goes add up without overflowing (a debug build panicked).
#[test]
fn huge_counts_saturate_instead_of_overflowing() {
    let max = i64::MAX;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  initContainers:\n  - {{name: i, image: x, resources: {{limits: {{example.com/gpu: {max}}}}}}}\n  containers:\n  - {{name: a, image: x, resources: {{limits: {{example.com/gpu: 9000000000000000000}}}}}}\n  - {{name: b, image: x, resources: {{limits: {{example.com/gpu: 9000000000000000000}}}}}}\n"
    );
    let (requests, _, _) = implicit(&pod);
    assert_eq!(
        requests,
        [
            "container-1-request-0=gpu-classx9000000000000000000",
            "container-2-request-0=gpu-classx9000000000000000000",
        ],
        "the init container's need is covered by the saturated sum"
    );
}

// The implicit claim is explained like any other: three devices on a node of four, each request
// named as the scheduler names it.
#[test]
fn a_pods_implicit_claim_is_explained_and_reports_its_mappings() {
    let slices = "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: s}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: p, generation: 1, resourceSliceCount: 1}\n  devices:\n  - {name: gpu-0}\n  - {name: gpu-1}\n  - {name: gpu-2}\n";
    let pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ml}\nspec:\n  containers:\n  - {name: a, image: x, resources: {limits: {example.com/gpu: 2}}}\n  - {name: b, image: x, resources: {limits: {example.com/gpu: 2}}}\n";
    let mut objects = Objects::default();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("slices", slices).unwrap();
    objects.add_text("pod", pod).unwrap();
    let claim = implicit_claim(&objects.pods[0], &objects.classes)
        .claim
        .unwrap();
    let mut allocator =
        Allocator::new(&objects.slices, objects.classes, &[], Some("node-a")).unwrap();
    let outcome = allocator.explain(&claim);
    assert_eq!(outcome.claim, "Pod ml/p (extended resources)");
    assert_eq!(
        outcome.status,
        Status::Unsatisfiable,
        "4 of 3: {outcome:#?}"
    );
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(
        json["requestMappings"][1]["requestName"],
        "container-1-request-0"
    );
    // Three GPUs asked for in all: fits.
    let three = pod.replace(
        "{example.com/gpu: 2}}}\n  - {name: b",
        "{example.com/gpu: 1}}}\n  - {name: b",
    );
    let mut objects = Objects::default();
    objects.add_text("classes", CLASSES).unwrap();
    objects.add_text("pod", &three).unwrap();
    let claim = implicit_claim(&objects.pods[0], &objects.classes)
        .claim
        .unwrap();
    let outcome = allocator.explain(&claim);
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    let picks: Vec<String> = outcome
        .devices
        .iter()
        .map(|d| format!("{}={}", d.request, d.device))
        .collect();
    assert_eq!(
        picks,
        [
            "container-0-request-0=gpu-0",
            "container-1-request-0=gpu-1",
            "container-1-request-0=gpu-2"
        ]
    );
}
