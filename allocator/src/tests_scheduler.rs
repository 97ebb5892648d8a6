//! The structured allocator's rules of Kubernetes 1.36, each on a small scenario whose expected
//! answer is derived from the upstream source, `kubernetes/dynamic-resource-allocation`,
//! `structured/internal/incubating/` (the implementation the scheduler uses with the 1.36 default
//! feature gates): `allocator_incubating.go` (`Allocate`, `validateDeviceRequest`, `allocateOne`,
//! `selectorsMatch`, `allocateDevice`, `checkAvailableCounters`), `pools_incubating.go`
//! (`buildPool`) and `consumable_capacity.go` (`CmpRequestOverCapacity`).

use crate::{Allocator, Objects, Outcome, Status};

/// `n` devices `dev-00`.. of driver example.com on node-a, in slices of at most 64, with
/// `numaNode` alternating 0/1.
fn many(n: usize) -> String {
    let mut text = String::new();
    let slices = n.div_ceil(64).max(1);
    for s in 0..slices {
        text.push_str(&format!(
            "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: many-{s}}}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {{name: many, generation: 1, resourceSliceCount: {slices}}}\n  devices:\n"
        ));
        for i in (s * 64)..n.min((s + 1) * 64) {
            text.push_str(&format!(
                "  - name: dev-{i:02}\n    attributes: {{numaNode: {{int: {}}}}}\n",
                i % 2
            ));
        }
    }
    text
}

const CLASS: &str = "---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// Explains a claim (its `spec.devices`, indented by 4) against `slices` and `allocated` claims.
fn run(slices: &str, allocated: &str, devices: &str) -> Outcome {
    let mut objects = Objects::default();
    objects.add_text("slices", slices).unwrap();
    objects.add_text("class", CLASS).unwrap();
    objects.add_text("allocated", allocated).unwrap();
    let held = std::mem::take(&mut objects.claims);
    let claim = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n{devices}"
    );
    objects.add_text("claim", &claim).unwrap();
    let mut allocator =
        Allocator::new(&objects.slices, objects.classes, &held, Some("node-a")).unwrap();
    allocator.explain(&objects.claims[0])
}

fn devices(outcome: &Outcome) -> Vec<String> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome
        .devices
        .iter()
        .map(|d| format!("{}={}", d.request, d.device))
        .collect()
}

fn error(outcome: &Outcome) -> String {
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    outcome.explanation.join("\n")
}

fn exactly(name: &str, extra: &str) -> String {
    format!("    - name: {name}\n      exactly:\n        deviceClassName: example\n{extra}")
}

// Rule 1. `Allocate` sums each request's count (a firstAvailable request: its smallest) and fails
// the claim when the sum exceeds resourceapi.AllocationResultsMaxSize (32); the API itself only
// asks for count > 0.
#[test]
fn more_than_32_devices_is_the_schedulers_error_and_count_has_no_other_limit() {
    let nodes = many(40);
    let thirty_three = run(
        &nodes,
        "",
        &format!("    requests:\n{}", exactly("r", "        count: 33\n")),
    );
    assert_eq!(
        error(&thirty_three),
        "claim ns/c: number of requested devices 33 exceeds the claim limit of 32"
    );
    let huge = run(
        &nodes,
        "",
        &format!("    requests:\n{}", exactly("r", "        count: 200\n")),
    );
    assert!(
        error(&huge).contains("requested devices 200 exceeds"),
        "{huge:#?}"
    );
    // Two requests adding up to 33.
    let split = run(
        &nodes,
        "",
        &format!(
            "    requests:\n{}{}",
            exactly("a", "        count: 20\n"),
            exactly("b", "        count: 13\n")
        ),
    );
    assert!(error(&split).contains("requested devices 33 exceeds"));
    // allocationMode All counts every matching device: 40.
    let all = run(
        &nodes,
        "",
        &format!(
            "    requests:\n{}",
            exactly("r", "        allocationMode: All\n")
        ),
    );
    assert!(
        error(&all).contains("requested devices 40 exceeds"),
        "{all:#?}"
    );
    // 32 is allowed.
    assert_eq!(
        devices(&run(
            &nodes,
            "",
            &format!("    requests:\n{}", exactly("r", "        count: 32\n"))
        ))
        .len(),
        32
    );
    let zero = run(
        &nodes,
        "",
        &format!("    requests:\n{}", exactly("r", "        count: 0\n")),
    );
    assert!(error(&zero).contains("greater than zero"), "{zero:#?}");
}

// Rule 1, during the search. `allocateOne` refuses a sub-request that would take the claim past 32
// devices (errAllocationResultMaxSizeExceeded) and goes on with the next sub-request.
#[test]
fn a_first_available_alternative_past_32_devices_is_skipped() {
    let outcome = run(
        &many(40),
        "",
        "    requests:\n    - name: a\n      firstAvailable:\n      - {name: big, deviceClassName: example, count: 30}\n      - {name: small, deviceClassName: example, count: 1}\n    - name: b\n      exactly: {deviceClassName: example, count: 5}\n",
    );
    let got = devices(&outcome);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0], "a/small=dev-00");
    assert_eq!(
        got[1..],
        ["b=dev-01", "b=dev-02", "b=dev-03", "b=dev-04", "b=dev-05"]
    );
}

const NICS: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: nics}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 1}
  devices:
  - name: eth-0
    attributes: {numaNode: {int: 0}}
  - name: ib-0
    attributes: {numaNode: {int: 0}, rdma: {bool: true}}
  - name: ib-1
    attributes: {numaNode: {int: 1}, rdma: {bool: true}}
"#;

const RDMA: &str =
    "        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].rdma'}}]\n";

// Rule 2. `selectorsMatch` returns the CEL runtime error ("no such key"), wrapped by
// `EnhanceRuntimeError` and "claim %s: selector #%d on device %s: CEL runtime error", and
// `allocateOne` returns it: the whole claim fails when the search reaches such a device.
#[test]
fn a_selector_reading_a_missing_attribute_fails_the_claim_when_the_search_reaches_the_device() {
    let outcome = run(
        NICS,
        "",
        &format!("    requests:\n{}", exactly("nic", RDMA)),
    );
    let text = error(&outcome);
    assert!(
        text.starts_with("claim ns/c: selector #0 on device example.com/node-a/eth-0: CEL runtime error: no such key: rdma"),
        "{text}"
    );
    assert!(text.contains("has()"), "{text}");
    assert!(
        text.contains(r#"device.attributes[\"example.com\"].rdma"#),
        "{text}"
    );
    // The scheduler stops at the first allocation: with eth-0 in use by another claim it is never
    // evaluated (in use is checked first), and the claim gets ib-0.
    let held = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: busy, namespace: ns}\nspec: {}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {request: x, driver: example.com, pool: node-a, device: eth-0}\n";
    let outcome = run(
        NICS,
        held,
        &format!("    requests:\n{}", exactly("nic", RDMA)),
    );
    assert_eq!(devices(&outcome), ["nic=ib-0"]);
    // A guarded selector is no error.
    let guarded = "        selectors: [{cel: {expression: 'has(device.attributes[\"example.com\"].rdma) && device.attributes[\"example.com\"].rdma'}}]\n";
    let outcome = run(
        NICS,
        "",
        &format!("    requests:\n{}", exactly("nic", guarded)),
    );
    assert_eq!(devices(&outcome), ["nic=ib-0"]);
    // allocationMode All evaluates every device first (`validateDeviceRequest`).
    let all = format!("{RDMA}        allocationMode: All\n");
    let text = error(&run(
        NICS,
        held,
        &format!("    requests:\n{}", exactly("nic", &all)),
    ));
    assert!(
        text.contains("on device example.com/node-a/eth-0"),
        "{text}"
    );
}

// Rule 2, ordering. A device after the first allocation is never evaluated; one before it is,
// even when its request is satisfied by later devices.
#[test]
fn a_missing_attribute_after_the_allocation_is_never_evaluated() {
    let reversed = NICS.replace(
        "  - name: eth-0\n    attributes: {numaNode: {int: 0}}\n",
        "",
    ) + "  - name: eth-9\n    attributes: {numaNode: {int: 0}}\n";
    let outcome = run(
        &reversed,
        "",
        &format!("    requests:\n{}", exactly("nic", RDMA)),
    );
    assert_eq!(devices(&outcome), ["nic=ib-0"]);
    // Three wanted, two with the attribute: the search reaches eth-9 and fails with its error.
    let three = format!("{RDMA}        count: 3\n");
    let text = error(&run(
        &reversed,
        "",
        &format!("    requests:\n{}", exactly("nic", &three)),
    ));
    assert!(
        text.contains("on device example.com/node-a/eth-9"),
        "{text}"
    );
}

// Rule 3. `allocateDevice(..., must=true)` for allocationMode All turns a constraint that rejects
// a device into the error "cannot add device %s because a claim constraint would not be
// satisfied"; with ExactCount the same constraint just makes the claim unsatisfiable.
#[test]
fn allocation_mode_all_under_a_constraint_it_cannot_meet_is_an_error() {
    let all = run(
        NICS,
        "",
        &format!(
            "    requests:\n{}    constraints:\n    - matchAttribute: example.com/numaNode\n",
            exactly("nic", "        allocationMode: All\n")
        ),
    );
    assert_eq!(
        error(&all),
        "claim ns/c, request nic: cannot add device example.com/node-a/ib-1 because a claim constraint would not be satisfied"
    );
    // A sub-request is named by its own name, as `deviceSubRequestAccessor.name` does.
    let sub = run(
        NICS,
        "",
        "    requests:\n    - name: nic\n      firstAvailable:\n      - {name: every, deviceClassName: example, allocationMode: All}\n    constraints:\n    - matchAttribute: example.com/numaNode\n",
    );
    assert!(
        error(&sub).starts_with("claim ns/c, request every: cannot add device"),
        "{sub:#?}"
    );
    let exact = run(
        NICS,
        "",
        &format!(
            "    requests:\n{}    constraints:\n    - matchAttribute: example.com/numaNode\n",
            exactly("nic", "        count: 3\n")
        ),
    );
    assert_eq!(exact.status, Status::Unsatisfiable, "{exact:#?}");
}

// Rule 4. `buildPool` sorts a pool's slices by name before the search walks them.
#[test]
fn slices_of_a_pool_are_taken_in_name_order() {
    let slice = |name: &str, device: &str| {
        format!(
            "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: {name}}}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {{name: node-a, generation: 1, resourceSliceCount: 2}}\n  devices:\n  - name: {device}\n"
        )
    };
    let text = slice("pool-b", "from-b") + &slice("pool-a", "from-a");
    let outcome = run(&text, "", &format!("    requests:\n{}", exactly("r", "")));
    assert_eq!(devices(&outcome), ["r=from-a"]);
}

const SHARED: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: shared}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 1}
  devices:
  - name: whole
    allowMultipleAllocations: true
    capacity:
      memory: {value: 10Gi}
"#;

// Rule 5. `CmpRequestOverCapacity` runs for admin access too: a request without an amount asks
// for the whole capacity (`calculateConsumedCapacity`), and `allocateDevice` records the consumed
// capacity and a share ID for a device with allowMultipleAllocations.
#[test]
fn admin_access_on_consumable_capacity_still_needs_the_capacity() {
    let admin = "        adminAccess: true\n";
    let free = run(
        SHARED,
        "",
        &format!("    requests:\n{}", exactly("r", admin)),
    );
    assert_eq!(devices(&free), ["r=whole"]);
    let device = &free.devices[0];
    assert_eq!(
        device.consumed_capacity.get("memory").map(String::as_str),
        Some("10Gi"),
        "{device:#?}"
    );
    assert!(
        device.share_id.as_deref().is_some_and(|id| id.len() == 36),
        "{device:#?}"
    );
    assert!(device.admin_access);
    // One share of 1Gi held by another claim: the whole 10Gi is no longer there.
    let held = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: busy, namespace: ns}\nspec: {}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {request: x, driver: example.com, pool: node-a, device: whole, shareID: 6a1f0b5e-0000-4000-8000-000000000001, consumedCapacity: {memory: 1Gi}}\n";
    let partly = run(
        SHARED,
        held,
        &format!("    requests:\n{}", exactly("r", admin)),
    );
    assert_eq!(partly.status, Status::Unsatisfiable, "{partly:#?}");
    // A result without a share ID holds the whole device, even a shareable one (the scheduler's
    // allocated state puts it among the allocated devices, not the shares).
    let whole = held.replace("shareID: 6a1f0b5e-0000-4000-8000-000000000001, ", "");
    let taken = run(
        SHARED,
        &whole,
        &format!(
            "    requests:\n{}",
            exactly("r", "        capacity: {requests: {memory: 1Gi}}\n")
        ),
    );
    assert_eq!(taken.status, Status::Unsatisfiable, "{taken:#?}");
    // An amount that is left fits.
    let some = format!("{admin}        capacity: {{requests: {{memory: 9Gi}}}}\n");
    assert_eq!(
        devices(&run(
            SHARED,
            held,
            &format!("    requests:\n{}", exactly("r", &some))
        )),
        ["r=whole"]
    );
}

const COUNTERS: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: gpu-counters}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 2}
  sharedCounters:
  - name: gpu-0
    counters: {memory: {value: 10Gi}}
  - name: gpu-1
    counters: {memory: {value: 10Gi}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: gpu-devices}
spec:
  driver: example.com
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 2}
  devices:
  - name: gpu-0-big
    consumesCounters: [{counterSet: gpu-0, counters: {memory: {value: 8Gi}}}]
  - name: gpu-0-small
    consumesCounters: [{counterSet: gpu-0, counters: {memory: {value: 4Gi}}}]
  - name: gpu-1-small
    consumesCounters: [{counterSet: gpu-1, counters: {memory: {value: 4Gi}}}]
  - name: plain
  - name: gpu-1-shared
    allowMultipleAllocations: true
    consumesCounters: [{counterSet: gpu-1, counters: {memory: {value: 1Gi}}}]
"#;

// Rule 6. `checkAvailableCounters` compares every counter set of the device's pool: held
// allocations that over-commit one set (here gpu-0: 8Gi + 4Gi of 10Gi) leave no device of the pool
// that consumes counters allocatable, gpu-1's included; devices without counters are unaffected.
#[test]
fn an_over_committed_counter_set_blocks_every_counter_device_of_its_pool() {
    let held = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: busy, namespace: ns}\nspec: {}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {request: x, driver: example.com, pool: node-a, device: gpu-0-big}\n      - {request: x, driver: example.com, pool: node-a, device: gpu-0-small}\n";
    let two = format!("    requests:\n{}", exactly("r", "        count: 2\n"));
    // Nothing held: gpu-0-big, then gpu-0-small would exceed gpu-0, so gpu-1-small.
    assert_eq!(
        devices(&run(COUNTERS, "", &two)),
        ["r=gpu-0-big", "r=gpu-1-small"]
    );
    // gpu-0 over-committed: gpu-1-small is refused too, only `plain` is left.
    let blocked = run(COUNTERS, held, &two);
    assert_eq!(blocked.status, Status::Unsatisfiable, "{blocked:#?}");
    // And it says why.
    let why = blocked.explanation.join("\n");
    assert!(
        why.contains("2 devices: consumes counters of a pool whose counter set existing allocations over-commit (the scheduler then gives no counter-consuming device of the pool): gpu-1-small, gpu-1-shared"),
        "{why}"
    );
    let one = run(
        COUNTERS,
        held,
        &format!("    requests:\n{}", exactly("r", "")),
    );
    assert_eq!(devices(&one), ["r=plain"]);
    // A shared device already shared is not counted again (`skipCounterCheck`): still allocatable.
    let shared = format!(
        "{held}      - {{request: r2, driver: example.com, pool: node-a, device: gpu-1-shared, shareID: 6a1f0b5e-0000-4000-8000-000000000002}}\n"
    );
    let two_free = format!("    requests:\n{}", exactly("r", "        count: 2\n"));
    assert_eq!(
        devices(&run(COUNTERS, &shared, &two_free)),
        ["r=plain", "r=gpu-1-shared"]
    );
    let fresh = run(COUNTERS, held, &two_free);
    assert_eq!(fresh.status, Status::Unsatisfiable, "{fresh:#?}");
}

// `GatherPools` marks a pool with fewer slices than `resourceSliceCount` incomplete: `allocateOne`
// skips it, and `validateDeviceRequest` fails an allocationMode All request ("asks for all
// devices, but resource pool %s is currently being updated").
#[test]
fn devices_of_a_pool_being_updated_are_not_allocated() {
    let partial = NICS.replace("resourceSliceCount: 1", "resourceSliceCount: 2");
    let one = run(
        &partial,
        "",
        &format!("    requests:\n{}", exactly("nic", "")),
    );
    assert_eq!(one.status, Status::Unsatisfiable, "{one:#?}");
    assert!(
        one.explanation[0].contains("3 devices: its pool is being updated"),
        "{one:#?}"
    );
    let all = run(
        &partial,
        "",
        &format!(
            "    requests:\n{}",
            exactly("nic", "        allocationMode: All\n")
        ),
    );
    assert_eq!(
        error(&all),
        "claim ns/c, request nic: asks for all devices, but resource pool example.com/node-a is currently being updated"
    );
}

/// A partitioned GPU: its counter set and partitions in one slice (`beside`, the 1.34 layout) or
/// in two (the 1.35 layout).
fn partitions(beside: bool) -> String {
    let counters = "  sharedCounters:\n  - name: gpu-0\n    counters: {memory: {value: 10Gi}}\n";
    let devices = "  devices:\n  - name: part-a\n    consumesCounters: [{counterSet: gpu-0, counters: {memory: {value: 6Gi}}}]\n  - name: part-b\n    consumesCounters: [{counterSet: gpu-0, counters: {memory: {value: 6Gi}}}]\n";
    let slice = |name: &str, count: u32, body: &str| {
        format!(
            "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: {name}}}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {{name: node-a, generation: 1, resourceSliceCount: {count}}}\n{body}"
        )
    };
    match beside {
        true => slice("gpu", 1, &format!("{counters}{devices}")),
        false => slice("gpu-counters", 2, counters) + &slice("gpu-parts", 2, devices),
    }
}

/// Explains one device of class `example` under `version`, with DRAPartitionableDevices on (1.34
/// and 1.35 clusters that enable it) unless `default_gates`.
fn versioned_with(
    version: crate::KubernetesVersion,
    slices: &str,
    count: usize,
    default_gates: bool,
) -> (Outcome, Vec<String>) {
    let mut objects = Objects::default();
    objects.add_text("slices", slices).unwrap();
    objects.add_text("class", CLASS).unwrap();
    let claim = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n    requests:\n{}",
        exactly("r", &format!("        count: {count}\n"))
    );
    objects.add_text("claim", &claim).unwrap();
    let mut gates = crate::FeatureGates::defaults(version);
    if !default_gates {
        gates.set("DRAPartitionableDevices=true").unwrap();
    }
    let mut allocator =
        Allocator::with_gates(version, gates, &objects.slices, objects.classes, &[], None).unwrap();
    let outcome = allocator.explain(&objects.claims[0]);
    (outcome, allocator.pools().warnings.clone())
}

fn versioned(version: crate::KubernetesVersion, slices: &str) -> (Outcome, Vec<String>) {
    versioned_with(version, slices, 1, false)
}

// DRAPartitionableDevices is alpha (off by default) in 1.34 and 1.35: the API server drops
// `sharedCounters` and `consumesCounters` when the driver writes the slice
// (`dropDisabledFields` in pkg/registry/resource/resourceslice/strategy.go), so the scheduler sees
// two plain devices and gives both, over-committing the GPU's memory.
#[test]
fn default_feature_gates_of_older_versions_drop_what_the_api_server_drops() {
    use crate::KubernetesVersion::{V1_35, V1_36};
    let (outcome, warnings) = versioned_with(V1_35, &partitions(false), 2, true);
    assert_eq!(devices(&outcome), ["r=part-a", "r=part-b"]);
    assert_eq!(
        outcome.feature_gates,
        "DRAPartitionableDevices, DRADeviceTaints, DRAConsumableCapacity, DRADeviceBindingConditions, DRAExtendedResource off"
    );
    assert!(
        warnings.iter().any(
            |w| w.starts_with("slice gpu-counters: sharedCounters dropped")
                && w.contains("--feature-gates DRAPartitionableDevices=true")
        ),
        "{warnings:?}"
    );
    // On 1.36 the counters hold: 6Gi + 6Gi of a 10Gi set do not fit.
    let (outcome, _) = versioned_with(V1_36, &partitions(false), 2, true);
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    assert_eq!(outcome.feature_gates, "every modeled DRA feature gate on");
    // A claim's capacity request and tolerations go too (DRAConsumableCapacity, DRADeviceTaints).
    let mut objects = Objects::default();
    objects.add_text("class", CLASS).unwrap();
    objects
        .add_text(
            "claim",
            &format!(
                "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n    requests:\n{}",
                exactly(
                    "r",
                    "        capacity: {requests: {memory: 1Gi}}\n        tolerations: [{operator: Exists}]\n"
                )
            ),
        )
        .unwrap();
    let mut allocator = Allocator::for_version(V1_35, &[], objects.classes, &[], None).unwrap();
    let outcome = allocator.explain(&objects.claims[0]);
    let dropped: Vec<&String> = outcome
        .warnings
        .iter()
        .filter(|w| w.starts_with("request r: "))
        .collect();
    assert_eq!(dropped.len(), 2, "{:#?}", outcome.warnings);
    assert!(
        dropped[0].contains("capacity dropped") && dropped[0].contains("DRAConsumableCapacity")
    );
    assert!(dropped[1].contains("tolerations dropped") && dropped[1].contains("DRADeviceTaints"));
}

// Rule 8. `buildPool` of 1.36 (with DRAPartitionableDevices, on by default) files a slice with
// shared counters under counter slices and never looks at its devices; 1.34 required the counter
// set in the consuming device's own slice.
#[test]
fn counter_layouts_are_read_as_the_version_asked_for_reads_them() {
    use crate::KubernetesVersion::{V1_34, V1_35, V1_36};
    let (old_on_old, _) = versioned(V1_34, &partitions(true));
    assert_eq!(devices(&old_on_old), ["r=part-a"]);
    assert_eq!(old_on_old.kubernetes_version, "1.34");
    for version in [V1_35, V1_36] {
        let (outcome, warnings) = versioned(version, &partitions(true));
        assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
        assert_eq!(outcome.kubernetes_version, version.to_string());
        assert!(
            warnings.iter().any(
                |w| w.contains("slice gpu: carries shared counters and 2 devices")
                    && w.contains(&format!("Kubernetes {version} scheduler"))
            ),
            "{warnings:?}"
        );
        let (new_on_new, _) = versioned(version, &partitions(false));
        assert_eq!(devices(&new_on_new), ["r=part-a"]);
    }
    let (new_on_old, warnings) = versioned(V1_34, &partitions(false));
    // The partitions' set is not in their slice: 1.34 finds no such set, so the pool is invalid.
    assert_eq!(new_on_old.status, Status::Error, "{new_on_old:#?}");
    assert_eq!(
        new_on_old.explanation[0],
        "invalid resource pools were encountered"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w
                .contains("part-a: consumes counters of set \"gpu-0\", which is not in its slice")),
        "{warnings:?}"
    );
}

// Issue 25 item 19. The API server refuses a selector whose estimated cost exceeds
// CELSelectorExpressionMaxCost ("too complex, exceeds cost limit", pkg/apis/resource/validation),
// so no scheduler ever runs it; explain answers at once instead of evaluating 10^8 steps per device.
#[test]
fn a_selector_over_the_cost_limit_is_refused_as_the_api_server_does() {
    let ten = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]";
    let mut expression = "true".to_owned();
    for v in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        expression = format!("{ten}.all({v}, {expression})");
    }
    let selector = format!("        selectors: [{{cel: {{expression: '{expression}'}}}}]\n");
    let outcome = run(
        NICS,
        "",
        &format!("    requests:\n{}", exactly("nic", &selector)),
    );
    let text = error(&outcome);
    assert!(
        text.starts_with("request nic selector #1 \"[1, 2,")
            && text.contains("Forbidden: too complex, exceeds cost limit"),
        "{text}"
    );
}

// `buildPool` sets a pool aside as invalid (duplicate device names, a consumed counter set or
// counter the pool does not have): `allocateOne` skips it, allocationMode All fails on it ("is
// currently invalid"), and `Allocate` turns "no allocation" into the error "invalid resource pools
// were encountered".
#[test]
fn an_invalid_pool_gives_nothing_and_turns_no_allocation_into_an_error() {
    let duplicate = NICS.replace("- name: ib-1", "- name: ib-0");
    let other = "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: other}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: other, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: spare\n";
    let text = format!("{duplicate}{other}");
    // The valid pool still serves.
    let one = run(&text, "", &format!("    requests:\n{}", exactly("r", "")));
    assert_eq!(devices(&one), ["r=spare"]);
    let two = run(
        &text,
        "",
        &format!("    requests:\n{}", exactly("r", "        count: 2\n")),
    );
    let why = error(&two);
    assert!(
        why.starts_with("invalid resource pools were encountered\n"),
        "{why}"
    );
    assert!(why.contains("3 devices: its pool is invalid"), "{why}");
    let all = run(
        &text,
        "",
        &format!(
            "    requests:\n{}",
            exactly("r", "        allocationMode: All\n")
        ),
    );
    assert_eq!(
        error(&all),
        "claim ns/c, request r: asks for all devices, but resource pool example.com/node-a is currently invalid"
    );
    // A counter the set does not have.
    let counters = COUNTERS.replace(
        "counters: {memory: {value: 4Gi}}}]\n  - name: plain",
        "counters: {cores: {value: 4}}}]\n  - name: plain",
    );
    let (outcome, warnings) = versioned(crate::KubernetesVersion::V1_36, &counters);
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    assert!(
        warnings.iter().any(|w| w.contains(
            "pool example.com/node-a is invalid (counter cores not found in counter set gpu-1)"
        )),
        "{warnings:?}"
    );
}

// Taint effect `None` (1.35+, DRADeviceTaintRules) is informational: `allocateDevice` only skips a
// device for an untolerated NoSchedule or NoExecute taint, so a `None` taint needs no toleration.
#[test]
fn a_none_effect_taint_is_informational_and_needs_no_toleration() {
    let slices = "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: s}\nspec:\n  driver: example.com\n  nodeName: node-a\n  pool: {name: node-a, generation: 1, resourceSliceCount: 1}\n  devices:\n  - name: noted\n    taints: [{key: example.com/maintenance, value: soon, effect: None}]\n  - name: kept-away\n    taints: [{key: example.com/maintenance, value: now, effect: NoSchedule}]\n";
    let outcome = run(slices, "", &format!("    requests:\n{}", exactly("r", "")));
    assert_eq!(devices(&outcome), ["r=noted"]);
    let both = run(
        slices,
        "",
        &format!("    requests:\n{}", exactly("r", "        count: 2\n")),
    );
    assert_eq!(both.status, Status::Unsatisfiable, "{both:#?}");
}
