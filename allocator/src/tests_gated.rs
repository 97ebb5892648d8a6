//! Rules of the 1.36 scheduler behind feature gates that explain models beyond issue 26's eight:
//! per-device node selection (`DRAPartitionableDevices`), binding conditions
//! (`DRADeviceBindingConditions`) and the API server's admin-access namespace label. Expected
//! answers follow the upstream source: `structured/internal/incubating/pools_incubating.go`
//! (`NodeMatches`, `GatherPools`: slices by node, pools with binding conditions last),
//! `allocator_incubating.go` (`isSelectable`: a device's own node selection after the selectors;
//! `Allocate`: results carry the device's binding conditions) and, for admin access,
//! `pkg/registry/resource/utils.go` (`AuthorizedForAdmin`) of kubernetes/kubernetes.

use std::collections::BTreeMap;

use crate::{Allocator, FeatureGates, KubernetesVersion, Node, Objects, Outcome, Status};

const CLASS: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

fn claim(namespace: &str, request: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: {namespace}}}\nspec:\n  devices:\n    requests:\n    - name: r\n      exactly:\n        deviceClassName: example\n{request}"
    )
}

/// Explains the first claim of `text` (slices, class added) on `node` with `version`'s defaults.
fn explain_on(text: &str, node: &Node, version: KubernetesVersion) -> (Outcome, Vec<String>) {
    let mut objects = Objects::default();
    objects.add_text("input", text).unwrap();
    objects.add_text("class", CLASS).unwrap();
    let mut allocator = Allocator::for_node(
        version,
        FeatureGates::defaults(version),
        &objects.slices,
        objects.classes,
        &[],
        node,
    )
    .unwrap();
    allocator.namespaces = objects.namespaces;
    let warnings = allocator.pools().warnings.clone();
    (allocator.explain(&objects.claims[0]), warnings)
}

fn node(labels: &[(&str, &str)]) -> Node {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<BTreeMap<_, _>>();
    Node::named(Some("node-a"), labels)
}

fn picked(outcome: &Outcome) -> Vec<&str> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome.devices.iter().map(|d| d.device.as_str()).collect()
}

const PER_DEVICE: &str = "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: shared}\nspec:\n  driver: example.com\n  perDeviceNodeSelection: true\n  pool: {name: shared, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: d-b\n    nodeName: node-b\n  - name: d-a\n    nodeName: node-a\n  - name: d-rack1\n    nodeSelector:\n      nodeSelectorTerms:\n      - matchExpressions: [{key: rack, operator: In, values: [r1]}]\n  - name: d-all\n    allNodes: true\n";

// `GatherPools` takes a perDeviceNodeSelection slice when one of its devices is for the node;
// `isSelectable` then offers only the devices whose own nodeName, nodeSelector or allNodes
// selects the node.
#[test]
fn per_device_node_selection_offers_only_the_devices_for_the_node() {
    let v = KubernetesVersion::V1_36;
    let count = |n: u32| format!("        count: {n}\n");
    let in_r2 = node(&[("rack", "r2")]);
    let (two, _) = explain_on(
        &format!("{PER_DEVICE}{}", claim("ns", &count(2))),
        &in_r2,
        v,
    );
    assert_eq!(picked(&two), ["d-a", "d-all"], "d-b is node-b's");
    let (three, _) = explain_on(
        &format!("{PER_DEVICE}{}", claim("ns", &count(3))),
        &in_r2,
        v,
    );
    assert_eq!(three.status, Status::Unsatisfiable, "{three:#?}");
    let why = three.explanation.join("\n");
    assert!(
        why.contains("is for node node-b (per-device node selection)")
            && why.contains("has a node selector that does not select this node"),
        "{why}"
    );
    // In rack r1 the selector matches.
    let in_r1 = node(&[("rack", "r1")]);
    let (three, _) = explain_on(
        &format!("{PER_DEVICE}{}", claim("ns", &count(3))),
        &in_r1,
        v,
    );
    assert_eq!(picked(&three), ["d-a", "d-rack1", "d-all"]);
    // Before 1.36 the gate is off: the API server drops the node selection, and a slice that
    // selects no node is not for this node.
    let (old, warnings) = explain_on(
        &format!("{PER_DEVICE}{}", claim("ns", &count(1))),
        &in_r1,
        KubernetesVersion::V1_35,
    );
    assert_eq!(old.status, Status::Unsatisfiable, "{old:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("perDeviceNodeSelection dropped")),
        "{warnings:?}"
    );
}

// A slice-level nodeSelector is matched against the node's labels (`GatherPools`); a device
// selector that does not parse is the scheduler's error once the search reaches the device
// (`isSelectable` returns the error), not before.
#[test]
fn node_selectors_of_slices_and_unparsable_device_selectors() {
    let v = KubernetesVersion::V1_36;
    let by_label = "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: racked}\nspec:\n  driver: example.com\n  nodeSelector:\n    nodeSelectorTerms:\n    - matchExpressions: [{key: rack, operator: In, values: [r1]}]\n  pool: {name: racked, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: net-0\n";
    let text = format!("{by_label}{}", claim("ns", ""));
    assert_eq!(
        picked(&explain_on(&text, &node(&[("rack", "r1")]), v).0),
        ["net-0"]
    );
    let (elsewhere, _) = explain_on(&text, &node(&[("rack", "r2")]), v);
    assert_eq!(elsewhere.status, Status::Unsatisfiable, "{elsewhere:#?}");

    let bad = "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: shared}\nspec:\n  driver: example.com\n  perDeviceNodeSelection: true\n  pool: {name: shared, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: d-a\n    nodeName: node-a\n  - name: d-bad\n    nodeSelector:\n      nodeSelectorTerms:\n      - matchExpressions: [{key: gen, operator: Gt, values: [five]}]\n";
    let (one, _) = explain_on(&format!("{bad}{}", claim("ns", "")), &node(&[]), v);
    assert_eq!(picked(&one), ["d-a"], "the search never reaches d-bad");
    let (two, _) = explain_on(
        &format!("{bad}{}", claim("ns", "        count: 2\n")),
        &node(&[]),
        v,
    );
    assert_eq!(two.status, Status::Error, "{two:#?}");
    assert!(
        two.explanation[0].contains("d-bad: failed to parse node selector"),
        "{two:#?}"
    );
}

const BOUND: &str = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: a-bound}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: a-bound, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: fabric-0\n    bindingConditions: [FabricAttached]\n    bindingFailureConditions: [FabricFailed]\n    bindsToNode: true\n---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: z-plain}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: z-plain, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: plain-0\n";

// `GatherPools` puts pools with binding conditions after every other pool, so a plain device is
// preferred although its pool sorts later; the result carries the device's binding conditions.
// With DRADeviceBindingConditions off (1.35) the API server drops them.
#[test]
fn binding_conditions_come_last_and_are_carried_into_the_result() {
    let v = KubernetesVersion::V1_36;
    let (one, _) = explain_on(&format!("{BOUND}{}", claim("ns", "")), &node(&[]), v);
    assert_eq!(picked(&one), ["plain-0"]);
    assert!(one.devices[0].binding_conditions.is_empty());
    let (two, _) = explain_on(
        &format!("{BOUND}{}", claim("ns", "        count: 2\n")),
        &node(&[]),
        v,
    );
    assert_eq!(picked(&two), ["plain-0", "fabric-0"]);
    assert_eq!(two.devices[1].binding_conditions, ["FabricAttached"]);
    assert_eq!(two.devices[1].binding_failure_conditions, ["FabricFailed"]);
    assert!(
        two.warnings
            .iter()
            .any(|w| w.starts_with("fabric-0 has binding conditions")),
        "{:?}",
        two.warnings
    );
    let json = serde_json::to_value(&two).unwrap();
    assert_eq!(json["devices"][1]["bindingConditions"][0], "FabricAttached");
    assert!(json["devices"][0].get("bindingConditions").is_none());

    let (old, warnings) = explain_on(
        &format!("{BOUND}{}", claim("ns", "")),
        &node(&[]),
        KubernetesVersion::V1_35,
    );
    assert_eq!(picked(&old), ["fabric-0"], "pool order by name again");
    assert!(old.devices[0].binding_conditions.is_empty());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("bindingConditions dropped")
                && w.contains("DRADeviceBindingConditions")),
        "{warnings:?}"
    );
}

// The API server (not the allocator) refuses adminAccess unless the claim's namespace carries
// `resource.kubernetes.io/admin-access: "true"` (since 1.34; `AuthorizedForAdmin`).
#[test]
fn admin_access_needs_the_namespace_label_as_the_api_server_demands() {
    let v = KubernetesVersion::V1_36;
    let slice = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: s}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: p, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: gpu-0\n";
    let admin = claim("ops", "        adminAccess: true\n");
    let namespace = |labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ops\n  labels: {{{labels}}}\n"
        )
    };
    let (refused, _) = explain_on(
        &format!("{slice}{admin}{}", namespace("team: ops")),
        &node(&[]),
        v,
    );
    assert_eq!(refused.status, Status::Error, "{refused:#?}");
    assert_eq!(
        refused.explanation,
        [
            "ResourceClaim ops/c: admin access to devices requires the `resource.kubernetes.io/admin-access: true` label on the containing namespace (namespace ops; the API server refuses the claim)"
        ]
    );
    // The value must be the string "true" exactly.
    let (labelled, _) = explain_on(
        &format!(
            "{slice}{admin}{}",
            namespace("resource.kubernetes.io/admin-access: \"true\"")
        ),
        &node(&[]),
        v,
    );
    assert_eq!(picked(&labelled), ["gpu-0"]);
    assert!(labelled.devices[0].admin_access);
    // Namespace not given: allocated, with a warning saying what to add.
    let (unknown, _) = explain_on(&format!("{slice}{admin}"), &node(&[]), v);
    assert_eq!(picked(&unknown), ["gpu-0"]);
    assert!(
        unknown
            .warnings
            .iter()
            .any(|w| w.contains("kubectl get namespace ops -o yaml")),
        "{:?}",
        unknown.warnings
    );
}

// List-typed attributes (`DRAListTypeAttributes`, alpha in 1.36, off by default) are not
// modeled: explain leaves them out and says so, as a scheduler with the gate off never sees them.
#[test]
fn list_typed_attributes_are_left_out_with_a_warning() {
    let slice = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: s}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: p, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: cpu-0\n    attributes:\n      numaNodes: {ints: [0, 1]}\n      socket: {int: 0}\n";
    let guarded = claim(
        "ns",
        "        selectors:\n        - cel: {expression: 'has(device.attributes[\"example.com\"].socket) && !has(device.attributes[\"example.com\"].numaNodes)'}\n",
    );
    let (outcome, warnings) = explain_on(
        &format!("{slice}{guarded}"),
        &node(&[]),
        KubernetesVersion::V1_36,
    );
    assert_eq!(picked(&outcome), ["cpu-0"]);
    assert!(
        warnings.iter().any(|w| w.starts_with("slice s: list-typed attributes (cpu-0/numaNodes) need the alpha feature gate DRAListTypeAttributes")),
        "{warnings:?}"
    );
}
