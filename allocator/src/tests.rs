//! The allocation semantics, each on a small hand-written node.

use crate::{Allocator, Objects, Outcome, Status};

/// Two NUMA nodes; gpu-0/1 on node 0/1; nic-0, nic-1 on node 0, nic-2 on node 1 (nic-1 is busy in
/// `ALLOCATED`); a shared accelerator with consumable memory; two partitions sharing one counter set.
const NODE: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-a-counters}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 2, resourceSliceCount: 2}
  sharedCounters:
  - name: gpu-2-counters
    counters: {memory: {value: 40Gi}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-a-example}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 2, resourceSliceCount: 2}
  devices:
  - name: gpu-0
    attributes: {type: {string: gpu}, numaNode: {int: 0}, resource.kubernetes.io/pcieRoot: {string: pci0000:00}}
  - name: gpu-1
    attributes: {type: {string: gpu}, numaNode: {int: 1}, resource.kubernetes.io/pcieRoot: {string: pci0000:80}}
  - name: nic-0
    attributes: {type: {string: nic}, numaNode: {int: 0}, resource.kubernetes.io/pcieRoot: {string: pci0000:00}}
  - name: nic-1
    attributes: {type: {string: nic}, numaNode: {int: 0}}
  - name: nic-2
    attributes: {type: {string: nic}, numaNode: {int: 1}}
  - name: shared
    attributes: {type: {string: accel}}
    allowMultipleAllocations: true
    capacity:
      memory:
        value: 10Gi
        requestPolicy: {default: 1Gi, validRange: {min: 1Gi, step: 1Gi}}
  - name: gpu-2-part-a
    attributes: {type: {string: part}}
    consumesCounters: [{counterSet: gpu-2-counters, counters: {memory: {value: 30Gi}}}]
  - name: gpu-2-part-b
    attributes: {type: {string: part}}
    consumesCounters: [{counterSet: gpu-2-counters, counters: {memory: {value: 20Gi}}}]
  - name: tainted
    attributes: {type: {string: accel}}
    taints: [{key: example.com/unhealthy, value: xid-79, effect: NoSchedule}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-a-example-old}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 1}
  devices:
  - name: stale
    attributes: {type: {string: gpu}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-b-example}
spec:
  driver: example.com
  nodeName: node-b
  pool: {name: node-b, generation: 1, resourceSliceCount: 1}
  devices:
  - name: elsewhere
    attributes: {type: {string: gpu}}
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: example}
spec:
  selectors:
  - cel: {expression: 'device.driver == "example.com"'}
"#;

const ALLOCATED: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: busy, namespace: team}
spec: {}
status:
  allocation:
    devices:
      results:
      - {request: nic, driver: example.com, pool: node-a, device: nic-1}
      - {request: acc, driver: example.com, pool: node-a, device: shared, shareID: 0b6f4c2e-8a51-4d3c-9f0e-1c2d3e4f5a6b, consumedCapacity: {memory: 8Gi}}
"#;

fn allocator() -> Allocator {
    let mut objects = Objects::default();
    objects.add_text("node", NODE).unwrap();
    objects.add_text("allocated", ALLOCATED).unwrap();
    let allocated = std::mem::take(&mut objects.claims);
    Allocator::new(&objects.slices, objects.classes, &allocated, Some("node-a")).unwrap()
}

/// A claim from its `spec.devices` YAML, indented by 4 under `devices:`.
fn explain(devices: &str) -> Outcome {
    let text = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n{devices}"
    );
    let mut objects = Objects::default();
    objects.add_text("claim", &text).unwrap();
    allocator().explain(&objects.claims[0])
}

fn picked(outcome: &Outcome) -> Vec<String> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome
        .devices
        .iter()
        .map(|d| format!("{}={}", d.request, d.device))
        .collect()
}

fn why(outcome: &Outcome) -> String {
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    outcome.explanation.join("\n")
}

const TYPE: &str = r#"device.attributes["example.com"].type"#;

fn request(name: &str, ty: &str, extra: &str) -> String {
    format!(
        "    - name: {name}\n      exactly:\n        deviceClassName: example\n        selectors: [{{cel: {{expression: '{TYPE} == \"{ty}\"'}}}}]\n{extra}"
    )
}

#[test]
fn only_this_nodes_newest_generation_is_seen() {
    let allocator = allocator();
    let names: Vec<&str> = allocator
        .pools()
        .devices
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert!(names.contains(&"gpu-0"));
    assert!(!names.contains(&"stale"), "an older generation is ignored");
    assert!(
        !names.contains(&"elsewhere"),
        "another node's slice is ignored"
    );
}

#[test]
fn match_attribute_backtracks_to_an_aligned_pair() {
    // The first GPU and the first free NIC share node 0.
    let one = explain(&format!(
        "    requests:\n{}{}    constraints:\n    - matchAttribute: example.com/numaNode\n",
        request("gpu", "gpu", ""),
        request("nic", "nic", "")
    ));
    assert_eq!(picked(&one), ["gpu=gpu-0", "nic=nic-0"]);
    assert_eq!(one.numa.as_deref(), Some("aligned on NUMA node 0"));
    assert_eq!(
        one.pcie_root.as_deref(),
        Some("aligned on PCIe root pci0000:00")
    );

    // The NIC must be nic-2 (a selector), so the search must go back and change the GPU to gpu-1.
    let nic2 = explain(&format!(
        "    requests:\n{}{}    constraints:\n    - matchAttribute: example.com/numaNode\n",
        request("gpu", "gpu", ""),
        "    - name: nic\n      exactly:\n        deviceClassName: example\n        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].numaNode == 1 && device.attributes[\"example.com\"].type == \"nic\"'}}]\n"
    ));
    assert_eq!(picked(&nic2), ["gpu=gpu-1", "nic=nic-2"]);
}

#[test]
fn unaligned_picks_are_reported_as_cross_numa() {
    let outcome = explain(&format!(
        "    requests:\n{}{}",
        request("gpu", "gpu", ""),
        "    - name: nic\n      exactly:\n        deviceClassName: example\n        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].numaNode == 1 && device.attributes[\"example.com\"].type == \"nic\"'}}]\n"
    ));
    assert_eq!(picked(&outcome), ["gpu=gpu-0", "nic=nic-2"]);
    assert_eq!(
        outcome.numa.as_deref(),
        Some("cross-NUMA: gpu-0 on node 0, nic-2 on node 1")
    );
}

#[test]
fn too_few_candidates_names_the_request_and_what_eliminated_each_device() {
    let outcome = explain(&format!(
        "    requests:\n{}",
        request("nic", "nic", "        count: 3\n")
    ));
    let text = why(&outcome);
    assert!(
        text.starts_with(
            "request nic: needs 3 devices of class example, 2 candidates (nic-0, nic-2)"
        ),
        "{text}"
    );
    assert!(
        text.contains("1 device: in use by ResourceClaim team/busy: nic-1"),
        "{text}"
    );
    assert!(
        text.contains("request nic selector #1 is false: gpu-0, gpu-1"),
        "{text}"
    );
}

#[test]
fn an_impossible_constraint_is_named_with_the_values_it_saw() {
    let outcome = explain(&format!(
        "    requests:\n{}{}    constraints:\n    - requests: [gpu, nic]\n      matchAttribute: example.com/numaNode\n",
        request("gpu", "gpu", "        count: 2\n"),
        request("nic", "nic", "")
    ));
    let text = why(&outcome);
    assert!(
        text.starts_with(
            "constraint #1 (matchAttribute example.com/numaNode over gpu, nic) cannot be met"
        ),
        "{text}"
    );
    assert!(
        text.contains("gpu (needs 2) by example.com/numaNode: 0: gpu-0; 1: gpu-1"),
        "{text}"
    );
}

#[test]
fn distinct_attribute_spreads_devices() {
    let outcome = explain(&format!(
        "    requests:\n{}    constraints:\n    - distinctAttribute: example.com/numaNode\n",
        request("nic", "nic", "        count: 2\n")
    ));
    assert_eq!(picked(&outcome), ["nic=nic-0", "nic=nic-2"]);
}

#[test]
fn missing_constraint_attribute_excludes_the_device() {
    // nic-1 and nic-2 have no pcieRoot; gpu-1 + a NIC on pci0000:80 does not exist.
    let outcome = explain(&format!(
        "    requests:\n{}{}    constraints:\n    - matchAttribute: resource.kubernetes.io/pcieRoot\n",
        request("gpu", "gpu", "        count: 2\n"),
        request("nic", "nic", "")
    ));
    assert!(
        why(&outcome).contains("(no such attribute)"),
        "{outcome:#?}"
    );
}

#[test]
fn first_available_takes_the_first_alternative_that_fits() {
    let outcome = explain(
        "    requests:\n    - name: acc\n      firstAvailable:\n      - name: three-gpus\n        deviceClassName: example\n        count: 3\n        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].type == \"gpu\"'}}]\n      - name: two-gpus\n        deviceClassName: example\n        count: 2\n        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].type == \"gpu\"'}}]\n",
    );
    assert_eq!(
        picked(&outcome),
        ["acc/two-gpus=gpu-0", "acc/two-gpus=gpu-1"]
    );
}

#[test]
fn allocation_mode_all_takes_every_match_and_fails_on_a_busy_one() {
    let gpus = explain(&format!(
        "    requests:\n{}",
        request("gpu", "gpu", "        allocationMode: All\n")
    ));
    assert_eq!(picked(&gpus), ["gpu=gpu-0", "gpu=gpu-1"]);
    let nics = explain(&format!(
        "    requests:\n{}",
        request("nic", "nic", "        allocationMode: All\n")
    ));
    assert!(why(&nics).contains("in use by ResourceClaim team/busy: nic-1"));
}

#[test]
fn admin_access_sees_busy_devices() {
    let outcome = explain(&format!(
        "    requests:\n{}",
        request(
            "nic",
            "nic",
            "        count: 3\n        adminAccess: true\n"
        )
    ));
    assert_eq!(picked(&outcome), ["nic=nic-0", "nic=nic-1", "nic=nic-2"]);
}

#[test]
fn consumable_capacity_is_rounded_by_policy_and_limited_by_what_is_left() {
    // 8Gi of 10Gi are held by team/busy; 1.5Gi rounds up to 2Gi, which still fits.
    let fits = explain(&format!(
        "    requests:\n{}",
        request(
            "acc",
            "accel",
            "        capacity: {requests: {memory: 1.5Gi}}\n"
        )
    ));
    assert_eq!(picked(&fits), ["acc=shared"]);
    assert_eq!(
        fits.devices[0]
            .consumed_capacity
            .get("memory")
            .map(String::as_str),
        Some("2Gi")
    );
    // Two shares of 1Gi each (the default) from two requests of one claim also fit...
    let two = explain(&format!(
        "    requests:\n{}{}",
        request("a", "accel", ""),
        request("b", "accel", "")
    ));
    assert_eq!(picked(&two), ["a=shared", "b=shared"]);
    // ...but 3Gi does not.
    let text = why(&explain(&format!(
        "    requests:\n{}",
        request(
            "acc",
            "accel",
            "        capacity: {requests: {memory: 3Gi}}\n"
        )
    )));
    assert!(
        text.contains("capacity example.com/memory: 2Gi of 10Gi left, 3Gi needed: shared"),
        "{text}"
    );
}

/// The scheduler looks a requested capacity up by the name as published (`memory`), not as CEL
/// qualifies it (`requestsContainNonExistCapacity`): `example.com/memory` is another capacity.
#[test]
fn a_capacity_is_requested_by_its_published_name() {
    let text = why(&explain(&format!(
        "    requests:\n{}",
        request(
            "acc",
            "accel",
            "        capacity: {requests: {example.com/memory: 1Gi}}\n"
        )
    )));
    assert!(
        text.contains("has no capacity example.com/memory"),
        "{text}"
    );
}

/// What the API server refuses is an error, in its words: a request name that is not a DNS label,
/// one used twice, a toleration operator other than Equal and Exists.
#[test]
fn claims_the_api_server_refuses_are_errors() {
    let error = |devices: &str| {
        let outcome = explain(devices);
        assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
        outcome.explanation.join("\n")
    };
    let bad = error(&format!("    requests:\n{}", request("R_bad", "gpu", "")));
    assert!(
        bad.contains("spec.devices.requests[0].name: Invalid value: \"R_bad\""),
        "{bad}"
    );
    let twice = error(&format!(
        "    requests:\n{}{}",
        request("r", "gpu", ""),
        request("r", "nic", "")
    ));
    assert!(
        twice.contains("spec.devices.requests[1].name: Duplicate value: \"r\""),
        "{twice}"
    );
    let bogus = error(&format!(
        "    requests:\n{}",
        request(
            "t",
            "accel",
            "        tolerations: [{key: example.com/unhealthy, operator: Bogus}]\n"
        )
    ));
    assert!(bogus.contains("Unsupported value: \"Bogus\""), "{bogus}");
    let valued = error(&format!(
        "    requests:\n{}",
        request(
            "t",
            "accel",
            "        tolerations: [{key: example.com/unhealthy, operator: Exists, value: x}]\n"
        )
    ));
    assert!(
        valued.contains("must be empty for operator `Exists`"),
        "{valued}"
    );
    let effect = error(&format!(
        "    requests:\n{}",
        request(
            "t",
            "accel",
            "        tolerations: [{operator: Exists, effect: Sometimes}]\n"
        )
    ));
    assert!(
        effect.contains("effect: Unsupported value: \"Sometimes\""),
        "{effect}"
    );
}

#[test]
fn shared_counters_keep_partitions_of_one_gpu_apart() {
    let one = explain(&format!("    requests:\n{}", request("p", "part", "")));
    assert_eq!(picked(&one), ["p=gpu-2-part-a"]);
    let text = why(&explain(&format!(
        "    requests:\n{}",
        request("p", "part", "        count: 2\n")
    )));
    assert!(
        text.contains("compete for the same devices, capacity or counters"),
        "{text}"
    );
}

#[test]
fn taints_keep_devices_away_unless_tolerated() {
    let text = why(&explain(&format!(
        "    requests:\n{}",
        request("t", "accel", "        count: 2\n")
    )));
    assert!(
        text.contains("tainted example.com/unhealthy=xid-79:NoSchedule (not tolerated): tainted"),
        "{text}"
    );
    let tolerated = explain(&format!(
        "    requests:\n{}",
        request(
            "t",
            "accel",
            "        count: 2\n        tolerations: [{key: example.com/unhealthy, operator: Exists}]\n"
        )
    ));
    assert_eq!(picked(&tolerated), ["t=shared", "t=tainted"]);
}

#[test]
fn missing_attributes_are_not_selected_with_a_warning_and_errors_are_reported() {
    let outcome = explain(
        "    requests:\n    - name: x\n      exactly:\n        deviceClassName: example\n        selectors: [{cel: {expression: 'device.attributes[\"resource.kubernetes.io\"].pcieRoot == \"pci0000:80\"'}}]\n",
    );
    assert_eq!(picked(&outcome), ["x=gpu-1"]);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("CEL runtime error")),
        "{outcome:#?}"
    );
    let broken = explain(
        "    requests:\n    - name: x\n      exactly:\n        deviceClassName: example\n        selectors: [{cel: {expression: 'device.attributes['}}]\n",
    );
    assert_eq!(broken.status, Status::Error);
    assert!(
        broken.explanation[0].contains("CEL syntax error"),
        "{broken:#?}"
    );
}

#[test]
fn invalid_claims_are_errors_that_say_what_is_wrong() {
    let unknown_class =
        explain("    requests:\n    - name: x\n      exactly: {deviceClassName: nope}\n");
    assert_eq!(unknown_class.status, Status::Error);
    assert!(unknown_class.explanation[0].contains("DeviceClass \"nope\" not found"));
    let bad_constraint = explain(&format!(
        "    requests:\n{}    constraints:\n    - matchAttribute: numaNode\n",
        request("gpu", "gpu", "")
    ));
    assert!(
        bad_constraint.explanation[0].contains("fully qualified"),
        "{bad_constraint:#?}"
    );
    let unknown_request = explain(&format!(
        "    requests:\n{}    constraints:\n    - requests: [nope]\n      matchAttribute: example.com/numaNode\n",
        request("gpu", "gpu", "")
    ));
    assert!(unknown_request.explanation[0].contains("no request named \"nope\""));
}

/// The API server's list limits: at the limit the claim is explained, one more is refused with
/// the API server's words, before any search.
#[test]
fn claims_beyond_the_api_servers_list_limits_are_refused() {
    use crate::claim::limits;
    let requests = |n: usize| -> String {
        (0..n)
            .map(|i| request(&format!("r{i}"), "none", ""))
            .collect()
    };
    let at = explain(&format!("    requests:\n{}", requests(limits::REQUESTS)));
    assert_eq!(at.status, Status::Unsatisfiable, "{at:#?}");
    let over = explain(&format!(
        "    requests:\n{}",
        requests(limits::REQUESTS + 1)
    ));
    assert_eq!(over.status, Status::Error, "{over:#?}");
    assert!(
        over.explanation[0].contains("spec.devices.requests: Too many: 33: must have at most 32"),
        "{over:#?}"
    );

    let subs = |n: usize| -> String {
        let subs: String = (0..n)
            .map(|i| format!("      - {{name: s{i}, deviceClassName: example}}\n"))
            .collect();
        format!("    requests:\n    - name: x\n      firstAvailable:\n{subs}")
    };
    assert_eq!(
        explain(&subs(limits::FIRST_AVAILABLE)).status,
        Status::Allocated
    );
    let over = explain(&subs(limits::FIRST_AVAILABLE + 1));
    assert!(
        over.explanation[0].contains("request x: firstAvailable: Too many: 9"),
        "{over:#?}"
    );

    let selectors = |n: usize| -> String {
        let selectors = vec!["{cel: {expression: 'true'}}"; n].join(", ");
        format!(
            "    requests:\n    - name: x\n      exactly:\n        deviceClassName: example\n        selectors: [{selectors}]\n"
        )
    };
    assert_eq!(
        explain(&selectors(limits::SELECTORS)).status,
        Status::Allocated
    );
    let over = explain(&selectors(limits::SELECTORS + 1));
    assert!(
        over.explanation[0].contains("request x: selectors: Too many: 33"),
        "{over:#?}"
    );

    let constraints = |n: usize| -> String {
        let constraint = "    - matchAttribute: example.com/numaNode\n";
        format!(
            "    requests:\n{}    constraints:\n{}",
            request("gpu", "gpu", ""),
            constraint.repeat(n)
        )
    };
    assert_eq!(
        explain(&constraints(limits::CONSTRAINTS)).status,
        Status::Allocated
    );
    let over = explain(&constraints(limits::CONSTRAINTS + 1));
    assert!(
        over.explanation[0].contains("spec.devices.constraints: Too many: 33"),
        "{over:#?}"
    );

    let named = |n: usize| -> String {
        let names = vec!["gpu"; n].join(", ");
        format!(
            "    requests:\n{}    constraints:\n    - requests: [{names}]\n      matchAttribute: example.com/numaNode\n",
            request("gpu", "gpu", "")
        )
    };
    assert_eq!(explain(&named(limits::REQUESTS)).status, Status::Allocated);
    let over = explain(&named(limits::REQUESTS + 1));
    assert!(
        over.explanation[0].contains("constraint #1: requests: Too many: 33"),
        "{over:#?}"
    );

    let tolerations = |n: usize| -> String {
        let toleration = "        - {key: example.com/unhealthy, operator: Exists}\n";
        format!(
            "    requests:\n    - name: x\n      exactly:\n        deviceClassName: example\n        tolerations:\n{}",
            toleration.repeat(n)
        )
    };
    assert_eq!(
        explain(&tolerations(limits::TOLERATIONS)).status,
        Status::Allocated
    );
    let over = explain(&tolerations(limits::TOLERATIONS + 1));
    assert!(
        over.explanation[0].contains("request x: tolerations: Too many: 17"),
        "{over:#?}"
    );
}

#[test]
fn a_device_class_beyond_the_selector_limit_is_refused() {
    let class = |n: usize| {
        let selectors = vec!["{cel: {expression: 'true'}}"; n].join(", ");
        format!(
            "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {{name: wide}}\nspec:\n  selectors: [{selectors}]\n"
        )
    };
    let claim = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c, namespace: ns}\nspec:\n  devices:\n    requests:\n    - name: x\n      exactly: {deviceClassName: wide}\n";
    let outcome = |n: usize| {
        let mut objects = Objects::default();
        objects.add_text("node", NODE).unwrap();
        objects.add_text("class", &class(n)).unwrap();
        objects.add_text("claim", claim).unwrap();
        let mut allocator =
            Allocator::new(&objects.slices, objects.classes, &[], Some("node-a")).unwrap();
        allocator.explain(&objects.claims[0])
    };
    assert_eq!(outcome(32).status, Status::Allocated);
    let over = outcome(33);
    assert!(
        over.explanation[0].contains("DeviceClass wide: spec.selectors: Too many: 33"),
        "{over:#?}"
    );
}

/// Slices the API server would refuse (too many devices, too many attributes on one) cannot exist:
/// their devices are left out with a warning; a slice at the limits is read.
#[test]
fn slices_beyond_the_api_servers_limits_are_left_out_with_a_warning() {
    let slice = |name: &str, devices: usize, attributes: usize, tainted: bool| {
        let attrs: Vec<String> = (0..attributes)
            .map(|a| format!("a{a}: {{int: {a}}}"))
            .collect();
        let taints = match tainted {
            true => "\n    taints: [{key: example.com/x, effect: NoSchedule}]",
            false => "",
        };
        let devices: String = (0..devices)
            .map(|d| {
                format!(
                    "  - name: {name}-{d}\n    attributes: {{{}}}{taints}\n",
                    attrs.join(", ")
                )
            })
            .collect();
        format!(
            "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: {name}}}\nspec:\n  driver: big.example.com\n  nodeName: node-a\n  pool: {{name: {name}, generation: 1, resourceSliceCount: 1}}\n  devices:\n{devices}"
        )
    };
    let text = [
        slice("max", 128, 32, false),
        // A pool of two slices, one refused: the pool is incomplete, its devices not allocatable.
        slice("half-a", 1, 1, false).replace("resourceSliceCount: 1", "resourceSliceCount: 2"),
        slice("half-b", 1, 33, false)
            .replace("resourceSliceCount: 1", "resourceSliceCount: 2")
            .replace("{name: half-b, generation", "{name: half-a, generation"),
        slice("wide", 129, 1, false),
        slice("tainted", 65, 1, true),
        slice("rich", 1, 33, false),
    ]
    .concat();
    let mut objects = Objects::default();
    objects.add_text("slices", &text).unwrap();
    let pools = crate::Pools::new(
        &objects.slices,
        Some("node-a"),
        &[],
        crate::KubernetesVersion::NEWEST,
    );
    let complete: Vec<&str> = pools
        .devices
        .iter()
        .filter(|d| !d.incomplete_pool)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(complete.len(), 128, "only the slice at the limits");
    assert!(complete.iter().all(|d| d.starts_with("max-")));
    let halves: Vec<(&str, bool)> = pools
        .devices
        .iter()
        .filter(|d| d.name.starts_with("half-"))
        .map(|d| (d.name.as_str(), d.incomplete_pool))
        .collect();
    assert_eq!(halves, [("half-a-0", true)]);
    for expected in [
        "slice wide: 129 devices, at most 128 allowed",
        "slice tainted: 65 devices, at most 64 allowed (some have taints or consume counters)",
        "slice rich: device rich-0: 33 attributes and capacities, at most 32 allowed",
        "slice half-b: device half-b-0: 33 attributes and capacities",
        "pool big.example.com/half-a: 1 of 2 slices present",
    ] {
        assert!(
            pools.warnings.iter().any(|w| w.contains(expected)),
            "{expected}: {:#?}",
            pools.warnings
        );
    }
}

#[test]
fn a_search_that_cannot_finish_says_so() {
    let mut objects = Objects::default();
    objects
        .add_text("claim", &format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c}}\nspec:\n  devices:\n    requests:\n{}{}    constraints:\n    - matchAttribute: example.com/numaNode\n",
            request("gpu", "gpu", ""),
            request("nic", "nic", "")
        ))
        .unwrap();
    let mut allocator = allocator();
    allocator.step_limit = 1;
    let outcome = allocator.explain(&objects.claims[0]);
    assert_eq!(
        outcome.status,
        Status::Undecided,
        "not known to be unsatisfiable"
    );
    assert!(outcome.explanation[0].contains("gave up after 1 device tries"));
}

#[test]
fn a_late_request_only_one_numa_node_satisfies_is_found_without_trying_every_combination() {
    let mut objects = Objects::default();
    objects
        .add_text("node", &crate::synthetic::node(1024, 4))
        .unwrap();
    objects
        .add_text("claim", &crate::synthetic::claim(8, Some(3)))
        .unwrap();
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    assert_eq!(allocator.pools().devices.len(), 1024);
    allocator.step_limit = 10_000;
    let outcome = allocator.explain(&objects.claims[0]);
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    assert_eq!(outcome.numa.as_deref(), Some("aligned on NUMA node 3"));
    assert!(
        outcome.search_steps < 1_000,
        "{} steps",
        outcome.search_steps
    );
}

#[test]
fn allocation_mode_all_fails_on_an_untolerated_taint_as_the_scheduler_does() {
    let outcome = explain(&format!(
        "    requests:\n{}",
        request("acc", "accel", "        allocationMode: All\n")
    ));
    let text = why(&outcome);
    assert!(
        text.contains("tainted example.com/unhealthy=xid-79:NoSchedule (not tolerated): tainted"),
        "{text}"
    );
}

#[test]
fn counters_of_a_shared_device_are_charged_once_however_many_shares_it_has() {
    // A multi-allocatable device consuming a counter set, already shared by two claims.
    let node = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: s}
spec:
  driver: example.com
  nodeName: node-n
  pool: {name: pool-n, generation: 1, resourceSliceCount: 1}
  sharedCounters:
  - name: set
    counters: {slots: {value: "2"}}
  devices:
  - name: shared
    allowMultipleAllocations: true
    consumesCounters: [{counterSet: set, counters: {slots: {value: "1"}}}]
  - name: other
    consumesCounters: [{counterSet: set, counters: {slots: {value: "1"}}}]
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: example}
spec: {}
"#;
    let held = |name: &str| {
        format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}}}\nspec: {{}}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {{request: r, driver: example.com, pool: pool-n, device: shared, shareID: 0b6f4c2e-8a51-4d3c-9f0e-00000000000{name}}}\n---\n"
        )
    };
    let mut objects = Objects::default();
    objects.add_text("node", node).unwrap();
    objects
        .add_text("held", &format!("{}{}", held("a"), held("b")))
        .unwrap();
    let allocated = std::mem::take(&mut objects.claims);
    objects
        .add_text(
            "claim",
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec:\n  devices:\n    requests:\n    - name: r\n      exactly: {deviceClassName: example, count: 2}\n",
        )
        .unwrap();
    // Counters beside their devices: the 1.34 layout.
    let mut allocator = Allocator::for_version(
        crate::KubernetesVersion::V1_34,
        &objects.slices,
        objects.classes,
        &allocated,
        None,
    )
    .unwrap();
    // 1 slot charged by `shared` (once), 1 left for `other`; `shared` may be shared again.
    assert_eq!(
        picked(&allocator.explain(&objects.claims[0])),
        ["r=shared", "r=other"]
    );
}

mod properties {
    use proptest::prelude::*;

    use crate::{Allocator, Objects, Status};

    const TYPES: [&str; 4] = ["gpu", "nic", "nvme", "fpga"];

    /// (type index, count) per request, and the constraint: 0 none, 1 matchAttribute, 2 distinct.
    fn claim(requests: &[(usize, usize)], constraint: u8) -> String {
        let mut text = String::from(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec:\n  devices:\n    requests:\n",
        );
        for (i, (ty, count)) in requests.iter().enumerate() {
            text.push_str(&format!(
                "    - name: r{i}\n      exactly:\n        deviceClassName: example\n        count: {count}\n        selectors: [{{cel: {{expression: 'device.attributes[\"example.com\"].type == \"{}\"'}}}}]\n",
                TYPES[*ty]
            ));
        }
        match constraint {
            1 => text.push_str("    constraints:\n    - matchAttribute: example.com/numaNode\n"),
            2 => text.push_str("    constraints:\n    - distinctAttribute: example.com/numaNode\n"),
            _ => {}
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever is asked, an allocation gives each request its count of devices of its type, never
        /// a device twice, within the constraint; and a claim that plainly fits is never refused.
        #[test]
        fn allocations_satisfy_the_claim(
            requests in proptest::collection::vec((0usize..4, 1usize..5), 1..5),
            constraint in 0u8..3,
        ) {
            let mut objects = Objects::default();
            // 64 devices: 16 of each type, 4 of each type per NUMA node.
            objects.add_text("node", &crate::synthetic::node(64, 4)).unwrap();
            objects.add_text("claim", &claim(&requests, constraint)).unwrap();
            let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
            let outcome = allocator.explain(&objects.claims[0]);
            let mut per_type = [0usize; 4];
            for (ty, count) in &requests {
                per_type[*ty] += count;
            }
            if constraint == 0 && per_type.iter().all(|n| *n <= 16) {
                prop_assert_eq!(outcome.status, Status::Allocated, "{:#?}", outcome);
            }
            if constraint == 1 && per_type.iter().all(|n| *n <= 4) {
                prop_assert_eq!(outcome.status, Status::Allocated, "{:#?}", outcome);
            }
            if outcome.status != Status::Allocated {
                prop_assert!(!outcome.explanation.is_empty());
                return Ok(());
            }
            let pools = allocator.pools();
            let mut seen = std::collections::BTreeSet::new();
            let mut numa = Vec::new();
            for (i, (ty, count)) in requests.iter().enumerate() {
                let got: Vec<_> = outcome.devices.iter().filter(|d| d.request == format!("r{i}")).collect();
                prop_assert_eq!(got.len(), *count);
                for d in got {
                    prop_assert!(seen.insert(d.device.clone()), "{} twice", d.device);
                    let device = pools.devices.iter().find(|x| x.name == d.device).unwrap();
                    prop_assert_eq!(
                        device.attributes.get("example.com/type"),
                        Some(&crate::AttrValue::String(TYPES[*ty].to_owned()))
                    );
                    numa.push(d.numa_node);
                }
            }
            let distinct: std::collections::BTreeSet<_> = numa.iter().collect();
            match constraint {
                1 => prop_assert_eq!(distinct.len(), 1),
                2 => prop_assert_eq!(distinct.len(), numa.len()),
                _ => {}
            }
        }
    }
}

/// A node of 128 devices on 4 NUMA nodes (8 GPUs each), and a claim of five GPUs that must share
/// a NUMA node and each be on another: impossible. Its two constraints are written `copies` times.
fn five_gpus_on_a_128_device_node(copies: usize) -> Objects {
    let mut text = String::from(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec:\n  devices:\n    requests:\n",
    );
    for r in 0..5 {
        text.push_str(&format!(
            "    - name: r{r}\n      exactly:\n        deviceClassName: example\n        selectors: [{{cel: {{expression: 'device.attributes[\"example.com\"].type == \"gpu\"'}}}}]\n"
        ));
    }
    text.push_str("    constraints:\n");
    for _ in 0..copies {
        text.push_str("    - matchAttribute: example.com/numaNode\n    - distinctAttribute: example.com/numaNode\n");
    }
    let mut objects = Objects::default();
    objects
        .add_text("node", &crate::synthetic::node(128, 4))
        .unwrap();
    objects.add_text("claim", &text).unwrap();
    objects
}

#[test]
fn an_explanation_that_runs_out_of_steps_says_so() {
    // Five GPUs on one NUMA node and on five different ones: impossible (4 nodes). Each NUMA node has
    // eight GPUs, so no counting bound proves it. The search for the allocation ends quickly;
    // leaving out matchAttribute, the search for the reason does not.
    let objects = five_gpus_on_a_128_device_node(1);
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    allocator.step_limit = 2000;
    let outcome = allocator.explain(&objects.claims[0]);
    assert_eq!(outcome.status, Status::Unsatisfiable);
    assert!(
        outcome.search_steps < 2000,
        "the allocation search itself finished"
    );
    assert!(
        outcome.explanation[0]
            .contains("the search for the reason gave up after 2000 device tries"),
        "{outcome:#?}"
    );
}

/// The searches for the reason share one step limit: with every constraint twice, leaving out one
/// copy leaves the claim as hard as it was, so each of those searches takes as long as the search
/// for the allocation, and two of them need more than the limit.
#[test]
fn the_searches_for_the_reason_share_one_step_limit() {
    let objects = five_gpus_on_a_128_device_node(2);
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    let unlimited = allocator.explain(&objects.claims[0]);
    assert_eq!(unlimited.status, Status::Unsatisfiable);
    assert!(
        unlimited.explanation[0].contains("the constraints together cannot be met"),
        "{unlimited:#?}"
    );
    let steps = unlimited.search_steps;
    assert!(steps > 10, "{steps}");
    // One and a half times the allocation search: enough for one search for the reason, not four.
    allocator.step_limit = steps + steps / 2;
    let limited = allocator.explain(&objects.claims[0]);
    assert_eq!(limited.search_steps, steps);
    assert!(
        limited.explanation[0].contains("the search for the reason gave up"),
        "{limited:#?}"
    );
}

/// A name of 5,000 characters from a user's file shows cut at `MAX_CELL_CHARS` with a marker.
#[test]
fn the_table_cuts_a_huge_name() {
    let name = "a".repeat(5000);
    let text = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly:\n        deviceClassName: example\n"
    );
    let mut objects = Objects::default();
    objects.add_text("claim", &text).unwrap();
    let outcome = allocator().explain(&objects.claims[0]);
    let table = crate::render_table(&[outcome]);
    let first = table.lines().next().unwrap();
    let (shown, _) = first.split_once(": ").unwrap();
    assert_eq!(
        shown.chars().count(),
        crate::text::MAX_CELL_CHARS + 1,
        "{first}"
    );
    assert!(shown.ends_with('…'), "{first}");
}

#[test]
fn the_table_escapes_names_so_none_forges_a_line_or_reorders_text() {
    // A claim name and a selector from a user's file, neither validated before the report.
    let text = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: \"c\\n  gpu  example.com  node-a  gpu-9\\r\\u202eevil\\u009b31m\", namespace: ns}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly:\n        deviceClassName: example\n        selectors: [{cel: {expression: \"device.attributes[\\\"example.com\\\"].type == \\\"x\\u2066\\\"\\n\\r\\t\\u001b[2J\"}}]\n";
    let mut objects = Objects::default();
    objects.add_text("claim", text).unwrap();
    let outcome = allocator().explain(&objects.claims[0]);
    let table = crate::render_table(&[outcome]);
    assert!(
        table.starts_with(
            "ResourceClaim ns/c\\u000a  gpu  example.com  node-a  gpu-9\\u000d\\u202eevil\\u009b31m: error"
        ),
        "{table}"
    );
    // One line of its own for the claim; the explanation's lines are indented under it.
    assert_eq!(
        table.lines().filter(|l| !l.starts_with(' ')).count(),
        1,
        "{table}"
    );
    assert!(
        table.contains("== \\\"x\\u{2066}\\\"\\n\\r\\t\\u{1b}[2J\""),
        "{table}"
    );
    assert!(
        !table
            .chars()
            .any(|c| hal::text::acts_on_terminal(c) && c != '\n' && c != '\t'),
        "{table:?}"
    );
}
