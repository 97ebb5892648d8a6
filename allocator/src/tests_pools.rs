//! Pools as the scheduler gathers them for a node (`GatherPools`, `checkSlicesInPool` and
//! `buildPool` in `structured/internal/incubating/pools_incubating.go`, 1.35 and 1.36), and what
//! `validateDeviceRequest` (`allocator_incubating.go`) makes of them for `allocationMode: All`.

use crate::{Allocator, Objects, Outcome, Status};

const CLASS: &str = "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n";

/// A slice of pool `pool` (`generation`, `count` slices) on `node` with `body` (indented by 2).
fn slice(name: &str, node: &str, pool: &str, generation: u32, count: u32, body: &str) -> String {
    format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: {name}}}\nspec:\n  driver: example.com\n  nodeName: {node}\n  pool: {{name: {pool}, generation: {generation}, resourceSliceCount: {count}}}\n{body}"
    )
}

/// Explains a claim of one request (`extra` under `exactly`) on node-a.
fn run(slices: &str, allocated: &str, extra: &str) -> (Outcome, Vec<String>) {
    let mut objects = Objects::default();
    objects.add_text("slices", slices).unwrap();
    objects.add_text("class", CLASS).unwrap();
    objects.add_text("allocated", allocated).unwrap();
    let held = std::mem::take(&mut objects.claims);
    let claim = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n    requests:\n    - name: r\n      exactly:\n        deviceClassName: example\n{extra}"
    );
    objects.add_text("claim", &claim).unwrap();
    let mut allocator =
        Allocator::new(&objects.slices, objects.classes, &held, Some("node-a")).unwrap();
    let outcome = allocator.explain(&objects.claims[0]);
    (outcome, allocator.pools().warnings.clone())
}

fn devices(outcome: &Outcome) -> Vec<&str> {
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    outcome.devices.iter().map(|d| d.device.as_str()).collect()
}

const ALL: &str = "        allocationMode: All\n";

// `GatherPools`: the node's slices of a pool are enough when they are exactly
// `resourceSliceCount`; otherwise `checkSlicesInPool` counts the pool's slices of that generation
// on every node, and the pool is incomplete unless they are exactly `resourceSliceCount`. A newer
// generation anywhere makes the node's obsolete: the pool is ignored.
#[test]
fn a_pool_is_complete_by_its_slices_on_every_node_and_exactly_its_count() {
    // One slice per node, two in all: complete, node-a's device is allocated.
    let spread = [
        slice("sa", "node-a", "shared", 1, 2, "  devices:\n  - name: d1\n"),
        slice("sb", "node-b", "shared", 1, 2, "  devices:\n  - name: d2\n"),
    ]
    .concat();
    assert_eq!(devices(&run(&spread, "", "").0), ["d1"]);
    assert_eq!(devices(&run(&spread, "", ALL).0), ["d1"]);
    // Two slices where the pool says one: incomplete, nothing allocated.
    let over = [
        slice("sa", "node-a", "p", 1, 1, "  devices:\n  - name: d1\n"),
        slice("sb", "node-a", "p", 1, 1, "  devices:\n  - name: d2\n"),
    ]
    .concat();
    let (outcome, warnings) = run(&over, "", "");
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    assert!(
        outcome.explanation[0].contains("2 devices: its pool is being updated"),
        "{outcome:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("pool example.com/p: 2 of 1 slices present, more than")),
        "{warnings:?}"
    );
    // A newer generation on another node: the old one here is ignored, even for All.
    let replaced = [
        slice("old", "node-a", "p", 1, 2, "  devices:\n  - name: d1\n"),
        slice("new", "node-b", "p", 2, 2, "  devices:\n  - name: d2\n"),
        slice(
            "nics",
            "node-a",
            "nics",
            1,
            1,
            "  devices:\n  - name: nic0\n",
        ),
    ]
    .concat();
    let (outcome, warnings) = run(&replaced, "", ALL);
    assert_eq!(devices(&outcome), ["nic0"]);
    assert!(
        warnings.iter().any(|w| w.contains(
            "pool example.com/p: generation 1 here, but generation 2 elsewhere: as in the scheduler, the pool is ignored"
        )),
        "{warnings:?}"
    );
}

// `buildPool` keeps the slices of other nodes of a pool complete only with them
// (`DeviceSlicesNotTargetingNode`), and `checkAvailableCounters` charges the counters of their
// allocated devices: a device elsewhere holding most of a shared counter set leaves too little for
// node-a's.
#[test]
fn allocated_devices_of_other_nodes_consume_the_pools_counters() {
    let counters = "  sharedCounters:\n  - name: gpu-0\n    counters: {memory: {value: 10Gi}}\n";
    let part = |name: &str| {
        format!(
            "  devices:\n  - name: {name}\n    consumesCounters: [{{counterSet: gpu-0, counters: {{memory: {{value: 6Gi}}}}}}]\n"
        )
    };
    let slices = [
        slice("counters", "node-a", "p", 1, 3, counters),
        slice("on-a", "node-a", "p", 1, 3, &part("part-a")),
        slice("on-b", "node-b", "p", 1, 3, &part("part-b")),
    ]
    .concat();
    assert_eq!(devices(&run(&slices, "", "").0), ["part-a"]);
    let held = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: busy, namespace: ns}\nspec: {}\nstatus:\n  allocation:\n    devices:\n      results:\n      - {request: x, driver: example.com, pool: p, device: part-b}\n";
    let (outcome, warnings) = run(&slices, held, "");
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    assert!(
        !warnings.iter().any(|w| w.contains("no slice publishes")),
        "{warnings:?}"
    );
    // A device elsewhere consuming a counter set the pool does not have makes it invalid.
    let broken = slices.replace(
        "name: part-b\n    consumesCounters: [{counterSet: gpu-0",
        "name: part-b\n    consumesCounters: [{counterSet: gpu-9",
    );
    let (outcome, warnings) = run(&broken, "", "");
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("pool example.com/p is invalid (counter set gpu-9 not found)")),
        "{warnings:?}"
    );
}

// `validateDeviceRequest`: a request for all devices fails on any pool being updated or invalid,
// whether or not it has devices here: a pool of counters only counts too.
#[test]
fn all_fails_on_a_pool_being_updated_or_invalid_without_devices_here() {
    let counters = "  sharedCounters:\n  - name: cs\n    counters: {mem: {value: \"10\"}}\n";
    let nics = slice(
        "nics",
        "node-a",
        "a-nics",
        1,
        1,
        "  devices:\n  - name: nic0\n",
    );
    // A pool of counters only, one of its two slices here.
    let updating = [nics.clone(), slice("c1", "node-a", "gpus", 1, 2, counters)].concat();
    let (outcome, _) = run(&updating, "", ALL);
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    assert_eq!(
        outcome.explanation,
        [
            "claim ns/c, request r: asks for all devices, but resource pool example.com/gpus is currently being updated"
        ]
    );
    assert_eq!(devices(&run(&updating, "", "").0), ["nic0"]);
    // Two counter slices with the same set name: invalid.
    let invalid = [
        nics,
        slice("c1", "node-a", "gpus", 1, 2, counters),
        slice("c2", "node-a", "gpus", 1, 2, counters),
    ]
    .concat();
    let (outcome, _) = run(&invalid, "", ALL);
    assert_eq!(
        outcome.explanation,
        [
            "claim ns/c, request r: asks for all devices, but resource pool example.com/gpus is currently invalid"
        ]
    );
    // A claim with no allocation then fails with "invalid resource pools were encountered".
    let (outcome, _) = run(&invalid, "", "        count: 2\n");
    assert_eq!(outcome.status, Status::Error, "{outcome:#?}");
    assert!(
        outcome.explanation[0].starts_with("invalid resource pools were encountered"),
        "{outcome:#?}"
    );
}
