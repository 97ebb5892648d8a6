//! The node selector of each allocation explain makes, as the scheduler's allocator writes
//! `status.allocation.nodeSelector` (upstream `structured/internal/incubating/
//! allocator_incubating.go`, `createNodeSelector`: a node-local device or one with `bindsToNode`
//! restricts the allocation to the node (`metadata.name In [node]`); otherwise the single terms of
//! the devices' node selectors (their slice's, or their own with `perDeviceNodeSelection`) are
//! joined, each requirement once (`addNewNodeSelectorRequirements`); none: usable everywhere; a
//! slice node selector of several terms is an error of `Allocate`).

use std::collections::BTreeMap;

use crate::{
    Allocator, FeatureGates, KubernetesVersion, Node, Objects, Outcome, Status,
    describe_node_selector, render_table,
};

const CLASS: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: gpu}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// A slice `name` of pool `name` with `selection` (node selection lines under spec) and these
/// device lines (each `  - name: ...`).
fn slice(name: &str, selection: &str, devices: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: {name}}}\nspec:\n  driver: example.com\n{selection}  pool: {{name: {name}, generation: 1, resourceSliceCount: 1}}\n  devices:\n{devices}"
    )
}

/// A claim of `count` GPUs whose device names start with `prefix`.
fn claim(count: u32, prefix: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ml}}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly:\n        deviceClassName: gpu\n        count: {count}\n        selectors: [{{cel: {{expression: 'device.attributes[\"example.com\"].kind.startsWith(\"{prefix}\")'}}}}]\n"
    )
}

/// Explains the only claim of `text` on node-a labelled rack=r1 (None: no node given).
fn explain(version: KubernetesVersion, node: Option<&str>, text: &str) -> Outcome {
    let mut objects = Objects::default();
    objects
        .add_text("objects", &[CLASS, text].concat())
        .unwrap();
    let node = Node::named(node, BTreeMap::from([("rack".to_owned(), "r1".to_owned())]));
    let mut allocator = Allocator::for_node(
        version,
        FeatureGates::defaults(version),
        &objects.slices,
        objects.classes,
        &[],
        &node,
    )
    .unwrap();
    allocator.explain(&objects.claims[0])
}

fn selector(outcome: &Outcome) -> Option<String> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome.node_selector.as_ref().map(describe_node_selector)
}

const LOCAL: &str = "  nodeName: node-a\n";
const EVERYWHERE: &str = "  allNodes: true\n";
const RACK: &str = "  nodeSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: rack, operator: In, values: [r1]}\n";

fn device(name: &str, extra: &str) -> String {
    format!("  - name: {name}\n    attributes: {{kind: {{string: {name}}}}}\n{extra}")
}

#[test]
fn node_local_devices_restrict_the_allocation_to_the_node() {
    let text = [
        slice("local", LOCAL, &device("local-0", "")),
        claim(1, "local"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [node-a]")
    );
    // JSON as the allocation result spells it.
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(
        json["nodeSelector"],
        serde_json::json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]})
    );
    assert!(render_table(&[outcome]).contains("\n  node selector: metadata.name In [node-a]\n"));
    // With no node given, the slice's node name stands in.
    let outcome = explain(KubernetesVersion::NEWEST, None, &text);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [node-a]")
    );
}

#[test]
fn devices_for_every_node_give_no_node_selector() {
    let text = [
        slice("shared", EVERYWHERE, &device("shared-0", "")),
        claim(1, "shared"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    assert_eq!(selector(&outcome), None);
    let json = serde_json::to_value(&outcome).unwrap();
    assert!(json.get("nodeSelector").is_none(), "{json}");
    assert!(render_table(&[outcome]).contains("\n  node selector: none (usable on every node)\n"));
}

#[test]
fn slice_node_selectors_are_joined_into_one_term() {
    let zone = "  nodeSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: rack, operator: In, values: [r1]}\n      - {key: zone, operator: DoesNotExist}\n";
    let text = [
        slice("rack-a", RACK, &device("rack-0", "")),
        slice("rack-b", zone, &device("rack-1", "")),
        claim(2, "rack"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    // `rack In [r1]` once, then what the second slice adds.
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("rack In [r1], zone DoesNotExist")
    );
    // One node-local device among them: the node alone.
    let text = [
        slice("rack-a", RACK, &device("rack-0", "")),
        slice("rack-b", LOCAL, &device("rack-1", "")),
        claim(2, "rack"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [node-a]")
    );
}

#[test]
fn per_device_node_selection_gives_each_devices_own() {
    let per_device = "  perDeviceNodeSelection: true\n";
    let text = [
        slice(
            "mixed",
            per_device,
            &[
                device("anywhere-0", "    allNodes: true\n"),
                device("mine-0", "    nodeName: node-a\n"),
            ]
            .concat(),
        ),
        claim(1, "anywhere"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    assert_eq!(selector(&outcome), None);
    let mine = text.replace("startsWith(\"anywhere\")", "startsWith(\"mine\")");
    assert_ne!(mine, text);
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &mine);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [node-a]")
    );
}

// `bindsToNode` (DRADeviceBindingConditions, beta and on by default in 1.36): the allocation is
// for the node it was made on, even from a slice for every node. In 1.35 the gate is off by
// default, the API server drops the field, and the allocation is usable everywhere.
#[test]
fn binds_to_node_restricts_the_allocation_from_1_36() {
    let text = [
        slice(
            "fabric",
            EVERYWHERE,
            &device(
                "fabric-0",
                "    bindsToNode: true\n    bindingConditions: [Attached]\n",
            ),
        ),
        claim(1, "fabric"),
    ]
    .concat();
    let outcome = explain(KubernetesVersion::V1_36, Some("node-a"), &text);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [node-a]")
    );
    let outcome = explain(KubernetesVersion::V1_35, Some("node-a"), &text);
    assert_eq!(selector(&outcome), None);
    // Without the node's name: a stand-in, and a warning.
    let outcome = explain(KubernetesVersion::V1_36, None, &text);
    assert_eq!(
        selector(&outcome).as_deref(),
        Some("metadata.name In [<the node the scheduler picks>]")
    );
    assert!(outcome.warnings.iter().any(|w| w.contains("bindsToNode")));
}

// `createNodeSelector` refuses a slice node selector of more than one term (validation keeps such
// slices out of a cluster; files can have them): an error for the claim.
#[test]
fn a_slice_node_selector_of_several_terms_is_an_error() {
    let two = "  nodeSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: rack, operator: In, values: [r1]}\n    - matchExpressions:\n      - {key: rack, operator: In, values: [r2]}\n";
    let text = [slice("racks", two, &device("rack-0", "")), claim(1, "rack")].concat();
    let outcome = explain(KubernetesVersion::NEWEST, Some("node-a"), &text);
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    assert!(outcome.devices.is_empty());
    assert_eq!(
        outcome.explanation,
        ["create NodeSelector for claim c: unsupported ResourceSlice.NodeSelector with 2 terms"]
    );
}
