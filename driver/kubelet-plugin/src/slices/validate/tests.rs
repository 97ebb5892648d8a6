//! The rules that depend on the Kubernetes version, and those of taints, counters and node
//! selection: each with a pool the API server refuses and one it accepts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorTerm};
use k8s_openapi::api::resource::v1::{
    Counter, CounterSet, Device, DeviceCounterConsumption, DeviceTaint, ResourcePool,
    ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{KubeVersion, validate_pool};

const V1_34: KubeVersion = KubeVersion::V1_34;
const V1_35: KubeVersion = KubeVersion::V1_35;

/// Slice `i` of a pool of `count` on node `n`.
fn slice(
    i: usize,
    count: usize,
    devices: Option<Vec<Device>>,
    sets: Option<Vec<CounterSet>>,
) -> ResourceSlice {
    ResourceSlice {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("n-hal-dra-dev-{i}")),
            ..Default::default()
        },
        spec: ResourceSliceSpec {
            driver: "hal.dra.dev".into(),
            node_name: Some("n".into()),
            pool: ResourcePool {
                name: "n".into(),
                generation: 1,
                resource_slice_count: count as i64,
            },
            devices,
            shared_counters: sets,
            ..Default::default()
        },
    }
}

fn device(name: &str) -> Device {
    Device {
        name: name.into(),
        ..Default::default()
    }
}

fn counters(names: &[&str]) -> BTreeMap<String, Counter> {
    names
        .iter()
        .map(|c| {
            (
                (*c).to_owned(),
                Counter {
                    value: Quantity("1".into()),
                },
            )
        })
        .collect()
}

fn set(name: &str, names: &[&str]) -> CounterSet {
    CounterSet {
        name: name.into(),
        counters: counters(names),
    }
}

/// A device consuming `names` of set `set`.
fn consumer(name: &str, set: &str, names: &[&str]) -> Device {
    Device {
        consumes_counters: Some(vec![DeviceCounterConsumption {
            counter_set: set.into(),
            counters: counters(names),
            ..Default::default()
        }]),
        ..device(name)
    }
}

fn taint(key: &str, value: Option<&str>, effect: &str) -> DeviceTaint {
    DeviceTaint {
        key: key.into(),
        value: value.map(Into::into),
        effect: effect.into(),
        time_added: None,
    }
}

fn tainted(taints: Vec<DeviceTaint>) -> Vec<ResourceSlice> {
    vec![slice(
        0,
        1,
        Some(vec![Device {
            taints: Some(taints),
            ..device("d0")
        }]),
        None,
    )]
}

fn problems(slices: &[ResourceSlice], version: KubeVersion) -> Vec<String> {
    validate_pool(slices, version)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[track_caller]
fn accepted(slices: &[ResourceSlice], version: KubeVersion) {
    assert_eq!(problems(slices, version), Vec::<String>::new(), "{version}");
}

/// Refused with exactly the `expect`ed problems, each a part of one message.
#[track_caller]
fn refused(slices: &[ResourceSlice], version: KubeVersion, expect: &[&str]) {
    let errors = problems(slices, version);
    assert_eq!(errors.len(), expect.len(), "{version}: {errors:#?}");
    for part in expect {
        assert!(
            errors.iter().any(|e| e.contains(part)),
            "{version}: {part:?} in {errors:#?}"
        );
    }
}

#[test]
fn taint_keys_values_and_effects_are_checked() {
    let good = vec![
        taint("hal.dra.dev/unhealthy", Some("xid-79"), "NoSchedule"),
        taint("unhealthy", None, "NoExecute"),
        taint("example.com/Not_Lower.case", Some(""), "NoSchedule"),
    ];
    for version in [V1_34, V1_35] {
        accepted(&tainted(good.clone()), version);
    }
    let bad = vec![
        taint("Not A Key!", Some("ok"), "NoSchedule"),
        taint("Bad_Domain/x", None, "NoSchedule"),
        taint(
            &format!("example.com/{}", "k".repeat(64)),
            None,
            "NoSchedule",
        ),
        taint("k", Some("-bad value-"), "NoSchedule"),
        taint("k", Some(&"v".repeat(64)), "NoSchedule"),
        taint("k", None, ""),
        taint("k", None, "PreferNoSchedule"),
    ];
    // One a device: 1.34 allows 4 taints per device.
    let devices = bad
        .into_iter()
        .enumerate()
        .map(|(i, t)| Device {
            taints: Some(vec![t]),
            ..device(&format!("d{i}"))
        })
        .collect();
    let slices = vec![slice(0, 1, Some(devices), None)];
    for version in [V1_34, V1_35] {
        refused(
            &slices,
            version,
            &[
                "devices[0].taints[0].key: \"Not A Key!\" is not a label key",
                "devices[1].taints[0].key: \"Bad_Domain/x\" is not a label key",
                "devices[2].taints[0].key",
                "devices[3].taints[0].value: \"-bad value-\" is not a label value",
                "devices[4].taints[0].value",
                "devices[5].taints[0].effect: required",
                "devices[6].taints[0].effect: \"PreferNoSchedule\" is not one of",
            ],
        );
    }
}

#[test]
fn the_taint_effect_none_is_refused_by_1_34_and_accepted_from_1_35() {
    let slices = tainted(vec![taint(
        "hal.dra.dev/unhealthy",
        Some("link-down"),
        "None",
    )]);
    refused(
        &slices,
        V1_34,
        &[
            "spec.devices[0].taints[0].effect: \"None\" is not one of [\"NoExecute\", \"NoSchedule\"] (Kubernetes 1.34)",
        ],
    );
    accepted(&slices, V1_35);
    accepted(&slices, KubeVersion::V1_36);
}

#[test]
fn taints_per_device_are_at_most_4_on_1_34_and_16_from_1_35() {
    let taints = |n: usize| tainted(vec![taint("k", None, "NoSchedule"); n]);
    accepted(&taints(4), V1_34);
    refused(
        &taints(5),
        V1_34,
        &["spec.devices[0].taints: 5 taints; at most 4 (Kubernetes 1.34)"],
    );
    accepted(&taints(16), V1_35);
    refused(
        &taints(17),
        V1_35,
        &["spec.devices[0].taints: 17 taints; at most 16 (Kubernetes 1.35)"],
    );
}

/// The 1.34 layout: sets beside the devices that consume them.
fn same_slice_pool() -> Vec<ResourceSlice> {
    vec![slice(
        0,
        1,
        Some(vec![consumer("d0", "gpu-a", &["vfs"])]),
        Some(vec![set("gpu-a", &["vfs"])]),
    )]
}

/// The 1.35 layout: sets in a slice of their own, consumed from another.
fn own_slice_pool() -> Vec<ResourceSlice> {
    vec![
        slice(0, 2, Some(vec![consumer("d0", "gpu-a", &["vfs"])]), None),
        slice(1, 2, None, Some(vec![set("gpu-a", &["vfs"])])),
    ]
}

#[test]
fn sets_beside_devices_are_refused_from_1_35() {
    accepted(&same_slice_pool(), V1_34);
    refused(
        &same_slice_pool(),
        V1_35,
        &["slice n-hal-dra-dev-0: spec: sharedCounters and devices in one slice"],
    );
}

#[test]
fn sets_of_another_slice_are_refused_by_1_34() {
    accepted(&own_slice_pool(), V1_35);
    refused(
        &own_slice_pool(),
        V1_34,
        &[
            "spec.devices[0].consumesCounters[0].counterSet: \"gpu-a\" is not a counter set of this slice",
        ],
    );
}

#[test]
fn an_empty_devices_list_beside_sets_is_refused_from_1_35() {
    let mut slices = own_slice_pool();
    slices[1].spec.devices = Some(Vec::new());
    refused(
        &slices,
        V1_35,
        &[
            "slice n-hal-dra-dev-1: spec: sharedCounters and devices in one slice (even an empty list counts)",
        ],
    );
    // And an empty list of sets beside devices.
    let mut slices = own_slice_pool();
    slices[0].spec.shared_counters = Some(Vec::new());
    refused(
        &slices,
        V1_35,
        &["slice n-hal-dra-dev-0: spec: sharedCounters and devices in one slice"],
    );
    // 1.34 has no such rule.
    let mut slices = same_slice_pool();
    slices[0].spec.devices = Some(Vec::new());
    accepted(&slices, V1_34);
}

#[test]
fn counter_maps_must_not_be_empty() {
    for (version, mut slices, devices_at) in
        [(V1_34, same_slice_pool(), 0), (V1_35, own_slice_pool(), 0)]
    {
        accepted(&slices, version);
        let sets = slices
            .iter_mut()
            .find_map(|s| s.spec.shared_counters.as_mut())
            .unwrap();
        sets.push(set("gpu-b", &[]));
        let device = &mut slices[devices_at].spec.devices.as_mut().unwrap()[0];
        device.consumes_counters.as_mut().unwrap()[0]
            .counters
            .clear();
        refused(
            &slices,
            version,
            &[
                "spec.sharedCounters[1].counters: required: at least one counter",
                "spec.devices[0].consumesCounters[0].counters: required: at least one counter",
            ],
        );
    }
}

#[test]
fn counter_names_are_dns_labels_and_a_set_is_consumed_once_per_device() {
    for (version, pool) in [(V1_34, same_slice_pool()), (V1_35, own_slice_pool())] {
        let mut slices = pool;
        let sets = slices
            .iter_mut()
            .find_map(|s| s.spec.shared_counters.as_mut())
            .unwrap();
        sets[0].counters.extend(counters(&["Bad_Counter"]));
        let device = &mut slices[0].spec.devices.as_mut().unwrap()[0];
        let entries = device.consumes_counters.as_mut().unwrap();
        entries.push(entries[0].clone());
        refused(
            &slices,
            version,
            &[
                "spec.sharedCounters[0].counters: \"Bad_Counter\" is not a DNS label",
                "spec.devices[0].consumesCounters[1].counterSet: \"gpu-a\" again: one entry per counter set",
            ],
        );
    }
}

#[test]
fn counter_set_names_are_unique_in_the_pool_from_1_35() {
    let mut slices = own_slice_pool();
    slices.push(slice(2, 3, None, Some(vec![set("gpu-b", &["vfs"])])));
    for s in &mut slices {
        s.spec.pool.resource_slice_count = 3;
    }
    accepted(&slices, V1_35);
    slices[2].spec.shared_counters = Some(vec![set("gpu-a", &["vfs"])]);
    refused(
        &slices,
        V1_35,
        &[
            "slice n-hal-dra-dev-2: spec.sharedCounters[0].name: \"gpu-a\" is already a counter set of another slice",
        ],
    );
}

#[test]
fn counters_per_device_are_limited_per_entry_from_1_35() {
    let names: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let two_entries = |a: &[&str], b: &[&str]| {
        let mut d = consumer("d0", "gpu-a", a);
        let entries = d.consumes_counters.as_mut().unwrap();
        entries.push(DeviceCounterConsumption {
            counter_set: "gpu-b".into(),
            counters: counters(b),
            ..Default::default()
        });
        vec![
            slice(0, 2, Some(vec![d]), None),
            slice(
                1,
                2,
                None,
                Some(vec![set("gpu-a", &names[..32]), set("gpu-b", &names[..32])]),
            ),
        ]
    };
    // 40 counters in two entries: 1.34 allowed 32 per device, 1.35 32 per entry.
    accepted(&two_entries(&names[..20], &names[..20]), V1_35);
    refused(
        &two_entries(&names[..32], &names),
        V1_35,
        &[
            "spec.devices[0].consumesCounters[1].counters: 33 counters; at most 32",
            "\"c32\" is not a counter of set \"gpu-b\"",
        ],
    );
}

#[test]
fn device_node_selection_needs_the_slices_per_device_node_selection() {
    let with = |d: Device| vec![slice(0, 1, Some(vec![d]), None)];
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm::default()],
    };
    for version in [V1_34, V1_35] {
        for own in [
            Device {
                node_name: Some("other".into()),
                ..device("d0")
            },
            Device {
                node_selector: Some(selector.clone()),
                ..device("d0")
            },
            Device {
                all_nodes: Some(false),
                ..device("d0")
            },
        ] {
            refused(
                &with(own.clone()),
                version,
                &[
                    "spec.devices[0]: nodeName, nodeSelector and allNodes can only be set if the slice's perDeviceNodeSelection is true",
                ],
            );
            let mut slices = with(own);
            slices[0].spec.node_name = None;
            slices[0].spec.per_device_node_selection = Some(true);
            if slices[0].spec.devices.as_ref().unwrap()[0].all_nodes == Some(false) {
                refused(
                    &slices,
                    version,
                    &[
                        "spec.devices[0].allNodes: must be either unset or true",
                        "spec.devices[0]: exactly one of nodeName, nodeSelector, allNodes",
                    ],
                );
            } else {
                accepted(&slices, version);
            }
        }
        // perDeviceNodeSelection: every device says where it is, in one way.
        let mut slices = with(Device {
            node_name: Some("a".into()),
            all_nodes: Some(true),
            ..device("d0")
        });
        slices[0].spec.node_name = None;
        slices[0].spec.per_device_node_selection = Some(true);
        slices[0].spec.devices.as_mut().unwrap().push(device("d1"));
        refused(
            &slices,
            version,
            &[
                "spec.devices[0]: exactly one of nodeName, nodeSelector, allNodes",
                "spec.devices[1]: exactly one of nodeName, nodeSelector, allNodes",
            ],
        );
    }
}

#[test]
fn slice_node_selection_fields_are_unset_or_meaningful() {
    let base = || vec![slice(0, 1, Some(vec![device("d0")]), None)];
    for version in [V1_34, V1_35] {
        accepted(&base(), version);
        let mut slices = base();
        slices[0].spec.all_nodes = Some(false);
        slices[0].spec.per_device_node_selection = Some(false);
        refused(
            &slices,
            version,
            &[
                "spec.allNodes: must be either unset or true",
                "spec.perDeviceNodeSelection: must be either unset or true",
            ],
        );
        let mut slices = base();
        slices[0].spec.node_name = Some(String::new());
        slices[0].spec.all_nodes = Some(true);
        refused(
            &slices,
            version,
            &["spec.nodeName: must be either unset or a non-empty node name"],
        );
        let mut slices = base();
        slices[0].spec.node_name = Some("Node_1".into());
        refused(
            &slices,
            version,
            &["spec.nodeName: \"Node_1\" is not a node name"],
        );
        let mut slices = base();
        slices[0].spec.node_name = None;
        slices[0].spec.node_selector = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm::default(); 2],
        });
        refused(
            &slices,
            version,
            &["spec.nodeSelector.nodeSelectorTerms: 2 terms; must have exactly one"],
        );
    }
}

#[test]
fn label_keys_and_values() {
    use crate::slices::names::{is_label_key, is_label_value};
    for ok in [
        "k",
        "hal.dra.dev/unhealthy",
        "example.com/Mixed_Case.name-1",
        &"k".repeat(63),
        &format!("{}/k", "d".repeat(253)),
    ] {
        assert!(is_label_key(ok), "{ok}");
    }
    for bad in [
        "",
        "/k",
        "a/",
        "a/b/c",
        "Upper.Domain/k",
        "-k",
        "k-",
        "k k",
        &"k".repeat(64),
        &format!("{}/k", "d".repeat(254)),
    ] {
        assert!(!is_label_key(bad), "{bad}");
    }
    for ok in ["", "v", "xid-79", "A.b_c-1", &"v".repeat(63)] {
        assert!(is_label_value(ok), "{ok}");
    }
    for bad in ["-v", "v.", "v v", "v/w", &"v".repeat(64)] {
        assert!(!is_label_value(bad), "{bad}");
    }
}

/// The minor version: below 1.34 is 1.34, the first with `resource.k8s.io/v1`.
#[test]
fn versions() {
    assert_eq!(KubeVersion::minor(30), V1_34);
    assert_eq!(KubeVersion::minor(35), V1_35);
    assert_eq!(KubeVersion::minor(37).to_string(), "1.37");
    assert!(!V1_34.counter_sets_in_own_slices());
    assert!(KubeVersion::minor(37).counter_sets_in_own_slices());
}
