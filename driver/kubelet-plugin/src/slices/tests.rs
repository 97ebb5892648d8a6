use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    Counter, CounterSet, Device, DeviceAttribute, DeviceCounterConsumption, DeviceTaint,
    ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::names::*;
use super::validate::KubeVersion;
use super::*;

/// A valid pool of `slices.len()` slices of node `n` and driver `gpu.example.com`, with that many
/// devices each (named `gpu-<slice>-<j>`, one int attribute and one capacity).
fn pool(slices: &[usize]) -> Vec<ResourceSlice> {
    slices
        .iter()
        .enumerate()
        .map(|(i, count)| ResourceSlice {
            metadata: kube::api::ObjectMeta {
                name: Some(slice_name("n", "gpu.example.com", i)),
                ..Default::default()
            },
            spec: ResourceSliceSpec {
                driver: "gpu.example.com".into(),
                node_name: Some("n".into()),
                pool: ResourcePool {
                    name: "n".into(),
                    generation: 3,
                    resource_slice_count: slices.len() as i64,
                },
                devices: Some(
                    (0..*count)
                        .map(|j| Device {
                            name: format!("gpu-{i}-{j}"),
                            attributes: Some(BTreeMap::from([(
                                "index".to_owned(),
                                DeviceAttribute {
                                    int: Some(j as i64),
                                    ..Default::default()
                                },
                            )])),
                            capacity: Some(BTreeMap::from([(
                                "memory".to_owned(),
                                k8s_openapi::api::resource::v1::DeviceCapacity {
                                    value: Quantity("80Gi".into()),
                                    ..Default::default()
                                },
                            )])),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            },
        })
        .collect()
}

/// What the API server of Kubernetes 1.34 would refuse.
fn problems(slices: &[ResourceSlice]) -> Vec<String> {
    problems_for(slices, KubeVersion::V1_34)
}

fn problems_for(slices: &[ResourceSlice], version: KubeVersion) -> Vec<String> {
    validate_pool(slices, version)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn set(name: &str, counters: &[&str]) -> CounterSet {
    CounterSet {
        name: name.into(),
        counters: counters
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    Counter {
                        value: Quantity("1".into()),
                    },
                )
            })
            .collect(),
    }
}

fn consumes(set: &str, counters: &[&str]) -> DeviceCounterConsumption {
    DeviceCounterConsumption {
        counter_set: set.into(),
        counters: counters
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    Counter {
                        value: Quantity("1".into()),
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn a_valid_pool_passes() {
    assert_eq!(problems(&pool(&[128, 128, 3])), Vec::<String>::new());
}

#[test]
fn the_validator_catches_what_the_api_server_rejects() {
    let mut slices = pool(&[8]);
    let devices = slices[0].spec.devices.as_mut().unwrap();
    devices[0].name = "GPU_0".into();
    let attrs = devices[1].attributes.as_mut().unwrap();
    let mut attribute = |name: &str, value: DeviceAttribute| {
        attrs.insert(name.into(), value);
    };
    attribute(
        "numa-1",
        DeviceAttribute {
            int: Some(1),
            ..Default::default()
        },
    );
    attribute(
        "long",
        DeviceAttribute {
            string: Some("x".repeat(65)),
            ..Default::default()
        },
    );
    attribute(
        "driverVersion",
        DeviceAttribute {
            version: Some("580.105.08".into()),
            ..Default::default()
        },
    );
    attribute(
        "both",
        DeviceAttribute {
            int: Some(1),
            bool: Some(true),
            ..Default::default()
        },
    );
    for i in 0..40 {
        devices[2].attributes.as_mut().unwrap().insert(
            format!("extra{i}"),
            DeviceAttribute {
                bool: Some(true),
                ..Default::default()
            },
        );
    }
    devices[3].name = devices[4].name.clone();
    devices[5]
        .capacity
        .as_mut()
        .unwrap()
        .get_mut("memory")
        .unwrap()
        .value = Quantity("80 GB".into());
    devices[6]
        .capacity
        .as_mut()
        .unwrap()
        .get_mut("memory")
        .unwrap()
        .request_policy = Some(Default::default());
    devices.extend((0..130).map(|i| Device {
        name: format!("d{i}"),
        ..Default::default()
    }));
    slices[0].spec.pool.resource_slice_count = 2;
    slices[0].metadata.name = Some("N_1".into());
    let errors = problems(&slices);
    let expect = [
        "slice N_1: metadata.name: \"N_1\" is not a DNS subdomain",
        "spec.devices[0].name: \"GPU_0\" is not a DNS label",
        "attributes[\"numa-1\"]: not a C identifier",
        "attributes[\"long\"]: string of 65 bytes",
        "attributes[\"driverVersion\"]: \"580.105.08\" is not strict semver",
        "attributes[\"both\"]: exactly one of",
        "spec.devices[2]: 42 attributes and capacities; at most 32",
        "spec.devices[4].name: \"gpu-0-4\" is already used in the pool",
        "spec.devices[5].capacity[\"memory\"]: \"80 GB\" is not a quantity",
        "spec.devices[6].capacity[\"memory\"]: requestPolicy needs allowMultipleAllocations",
        "spec.devices: 138 devices; at most 128",
        "resourceSliceCount: 2 but the pool has 1 slices",
    ];
    for e in expect {
        assert!(errors.iter().any(|x| x.contains(e)), "{e}\n{errors:#?}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn slices_of_one_pool_must_agree_and_be_placed_once() {
    let mut slices = pool(&[2, 2]);
    slices[1].spec.pool.generation = 4;
    slices[0].spec.all_nodes = Some(true);
    slices[1].spec.driver = "Bad_Driver".into();
    slices[1].spec.pool.name = "a//b".into();
    let errors = problems(&slices);
    let expect = [
        "exactly one of nodeName, nodeSelector, allNodes, perDeviceNodeSelection",
        "spec.driver: \"Bad_Driver\" is not a DNS subdomain",
        "spec.pool.name: \"a//b\" is not '/'-separated DNS subdomains",
        "spec.pool: every slice of a pool must have the same driver, pool name and generation",
    ];
    for e in expect {
        assert!(errors.iter().any(|x| x.contains(e)), "{e}\n{errors:#?}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn one_differing_generation_or_slice_count_is_caught_alone() {
    let mut slices = pool(&[1, 1]);
    slices[1].spec.pool.generation = 4;
    assert_eq!(
        problems(&slices),
        [
            "slice n-gpu-example-com-1: spec.pool: every slice of a pool must have the same driver, pool name and generation"
        ]
    );
    let mut slices = pool(&[1, 1]);
    slices[0].spec.pool.resource_slice_count = 3;
    assert_eq!(
        problems(&slices),
        ["slice n-gpu-example-com-0: spec.pool.resourceSliceCount: 3 but the pool has 2 slices"]
    );
}

#[test]
fn taints_or_counters_lower_the_device_limit_to_64() {
    let mut slices = pool(&[65]);
    assert_eq!(
        max_devices_per_slice(slices[0].spec.devices.as_ref().unwrap()),
        128
    );
    assert_eq!(problems(&slices), Vec::<String>::new());
    slices[0].spec.devices.as_mut().unwrap()[7].taints = Some(vec![DeviceTaint {
        key: "example.com/unhealthy".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }]);
    assert_eq!(
        max_devices_per_slice(slices[0].spec.devices.as_ref().unwrap()),
        64
    );
    assert_eq!(
        problems(&slices),
        ["slice n-gpu-example-com-0: spec.devices: 65 devices; at most 64"]
    );
}

#[test]
fn counters_in_the_devices_slice_kubernetes_1_34() {
    let mut slices = pool(&[3]);
    slices[0].spec.shared_counters = Some(vec![set("gpu-0", &["memory", "sm"])]);
    slices[0].spec.devices.as_mut().unwrap()[0].consumes_counters =
        Some(vec![consumes("gpu-0", &["memory"])]);
    assert_eq!(problems(&slices), Vec::<String>::new());

    let devices = slices[0].spec.devices.as_mut().unwrap();
    devices[1].consumes_counters = Some(vec![consumes("gpu-9", &["memory"])]);
    devices[2].consumes_counters = Some(vec![consumes("gpu-0", &["power"])]);
    let errors = problems(&slices);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("\"gpu-9\" is not a counter set of this slice"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("\"power\" is not a counter of set \"gpu-0\""),
        "{errors:#?}"
    );

    let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut slices = pool(&[1]);
    slices[0].spec.shared_counters = Some(vec![set("gpu-0", &many), set("gpu-0", &["x"])]);
    let errors = problems(&slices);
    assert!(
        errors.iter().any(|e| e.contains("34 counters; at most 32")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.sharedCounters[1].name")),
        "{errors:#?}"
    );
}

/// A capacity's request policy as the API server checks it: a default is required with a range or
/// valid values, within the range and on a step, and `min + step` within the capacity.
#[test]
fn request_policies_are_checked_as_the_api_server_does() {
    use k8s_openapi::api::resource::v1::{
        CapacityRequestPolicy, CapacityRequestPolicyRange, DeviceCapacity,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let q = |text: &str| Quantity(text.into());
    let check = |value: &str, default: Option<&str>, step: Option<&str>| {
        let mut slices = pool(&[1]);
        let device = &mut slices[0].spec.devices.as_mut().unwrap()[0];
        device.allow_multiple_allocations = Some(true);
        let policy = CapacityRequestPolicy {
            default: default.map(q),
            valid_range: Some(CapacityRequestPolicyRange {
                min: q("1"),
                step: step.map(q),
                max: None,
            }),
            valid_values: None,
        };
        let capacity = DeviceCapacity {
            value: q(value),
            request_policy: Some(policy),
        };
        device.capacity = Some([("cpu".to_owned(), capacity)].into());
        problems(&slices)
    };
    assert_eq!(check("60", Some("60"), Some("1")), Vec::<String>::new());
    assert_eq!(check("1", Some("1"), None), Vec::<String>::new());
    let errors = check("60", None, Some("1"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("default: required when validRange is defined")),
        "{errors:#?}"
    );
    let errors = check("1", Some("1"), Some("1"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("min + step at most the capacity")),
        "{errors:#?}"
    );
    let errors = check("60", Some("61"), Some("1"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("default must be within the range")),
        "{errors:#?}"
    );
}

#[test]
fn counter_sets_in_slices_of_their_own_kubernetes_1_35() {
    let mut slices = pool(&[2, 0]);
    slices[1].spec.devices = None;
    slices[1].spec.shared_counters = Some(vec![set("gpu-0", &["memory"])]);
    slices[0].spec.devices.as_mut().unwrap()[0].consumes_counters =
        Some(vec![consumes("gpu-0", &["memory"])]);
    assert_eq!(
        problems_for(&slices, KubeVersion::V1_35),
        Vec::<String>::new(),
        "a set of the pool"
    );

    slices[0].spec.devices.as_mut().unwrap()[1].consumes_counters = Some(vec![
        consumes("gpu-0", &["memory"]),
        consumes("gpu-0", &["memory"]),
        consumes("gpu-0", &["memory"]),
    ]);
    slices[0].spec.shared_counters = Some(vec![set("gpu-1", &["memory"])]);
    slices[1].spec.shared_counters = Some((0..9).map(|i| set(&format!("s{i}"), &["m"])).collect());
    let errors = problems_for(&slices, KubeVersion::V1_35);
    let expect = [
        "sharedCounters and devices in one slice",
        "spec.devices[1].consumesCounters: 3 entries; at most 2 (Kubernetes 1.35)",
        "spec.sharedCounters: 9 sets; at most 8",
    ];
    for e in expect {
        assert!(errors.iter().any(|x| x.contains(e)), "{e}\n{errors:#?}");
    }
}

#[test]
fn names_and_values() {
    for ok in ["gpu-0008-06-00-0", "a", "cpu-12", &"x".repeat(63)] {
        assert!(is_dns_label(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
    // apimachinery's IsDNS1123Subdomain has no limit per part, only on the whole.
    for ok in [&"x".repeat(64), &format!("{}.example", "n".repeat(100))] {
        assert!(is_dns_subdomain(ok, 253), "{ok}");
    }
    for bad in [&"x".repeat(254), "a..b", "a.-b", "A.b", ""] {
        assert!(!is_dns_subdomain(bad, 253), "{bad}");
    }
    for ok in [
        "gpu.example.com",
        "GPU.Example.com",
        &format!("{}.io", "d".repeat(60)),
    ] {
        assert!(is_driver_name(ok), "{ok}");
    }
    for bad in ["", "a..b", &format!("{}.io", "d".repeat(61))] {
        assert!(!is_driver_name(bad), "{bad}");
    }
    for ok in [
        "numaNode",
        "_x",
        "dra.net/numaNode",
        "resource.kubernetes.io/pcieRoot",
    ] {
        assert!(is_qualified_name(ok), "{ok}");
    }
    for bad in [
        "numa-1",
        "1x",
        "/x",
        "dra.net/",
        "Bad_Domain!/x",
        &"x".repeat(33),
    ] {
        assert!(!is_qualified_name(bad), "{bad}");
    }
    for ok in [
        "1.2.3",
        "0.0.0",
        "10.3.0",
        "1.0.0-rc.1",
        "1.0.0+build.5",
        "1.0.0-0a",
    ] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in [
        "1.2", "v1.2.3", "01.2.3", "1.2.3-01", "1.2.3-", "1.2.3+", "1..3",
    ] {
        assert!(!is_semver(bad), "{bad}");
    }
    assert!(
        !is_semver(&format!("1.2.3-{}", "a".repeat(60))),
        "over 64 bytes"
    );
    for ok in [
        "1", "64", "284208Mi", "800000M", "1.5", ".5", "100m", "1e3", "-1Ki",
    ] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "Mi", "1.2.3", "1X", "1e", "1 Mi", "."] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn slice_names_are_stable_and_always_valid() {
    assert_eq!(
        slice_name("node-1", "hal.dra.dev", 0),
        "node-1-hal-dra-dev-0"
    );
    let node = [
        "n".repeat(60),
        "m".repeat(60),
        "o".repeat(60),
        "p".repeat(60),
    ]
    .join(".");
    let name = slice_name(&node, "hal.dra.dev", 3);
    assert!(
        is_dns_subdomain(&name, 253) && name.ends_with("-3.hal.dra.dev"),
        "{name}"
    );
    assert_eq!(
        name,
        slice_name(&node, "hal.dra.dev", 3),
        "the same every time"
    );
    assert_ne!(name, slice_name(&format!("{node}x"), "hal.dra.dev", 3));
    let long_driver = format!("{}.example.com", "d".repeat(51));
    assert!(is_dns_subdomain(&slice_name(&node, &long_driver, 0), 253));
}
