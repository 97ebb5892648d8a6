//! Counting bounds: a claim no value of a matchAttribute constraint can hold is refused without a
//! search, and the bounds never change an answer.

use crate::{Allocator, Objects, Outcome, Status};

/// One slice of devices `d-00`.. whose `numaNode` values are `numa`, in that order.
fn node(numa: &[u8]) -> String {
    let mut text = String::from(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {name: s}\nspec:\n  driver: example.com\n  nodeName: node-n\n  pool: {name: pool-n, generation: 1, resourceSliceCount: 1}\n  devices:\n",
    );
    for (i, n) in numa.iter().enumerate() {
        text.push_str(&format!(
            "  - {{name: d-{i:02}, attributes: {{numaNode: {{int: {n}}}}}}}\n"
        ));
    }
    text.push_str("---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n");
    text
}

/// A claim with requests `r0`.. of these counts, all under one matchAttribute on numaNode.
fn claim(counts: &[usize]) -> String {
    let mut text = String::from(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c, namespace: ns}\nspec:\n  devices:\n    requests:\n",
    );
    for (i, count) in counts.iter().enumerate() {
        text.push_str(&format!(
            "    - name: r{i}\n      exactly:\n        deviceClassName: example\n        count: {count}\n"
        ));
    }
    text.push_str("    constraints:\n    - matchAttribute: example.com/numaNode\n");
    text
}

fn explain(numa: &[u8], counts: &[usize], bounds: bool) -> Outcome {
    let mut objects = Objects::default();
    objects.add_text("node", &node(numa)).unwrap();
    objects.add_text("claim", &claim(counts)).unwrap();
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    allocator.counting_bounds = bounds;
    allocator.explain(&objects.claims[0])
}

/// Two NUMA nodes of 28 devices, alternating.
fn two_groups_of_28() -> Vec<u8> {
    (0..56).map(|i| (i % 2) as u8).collect()
}

#[test]
fn more_devices_of_one_value_than_any_group_has_is_a_no_without_a_search() {
    let outcome = explain(&two_groups_of_28(), &[32], true);
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    assert_eq!(outcome.search_steps, 0);
    let why = outcome.explanation.join("\n");
    assert!(
        why.starts_with(
            "constraint #1 (matchAttribute example.com/numaNode over every request) cannot be met: cannot fit: request r0 wants 32 devices with one value of example.com/numaNode, and the largest group has 28 (numaNode 0)"
        ),
        "{why}"
    );
    // The values the attribute takes among the candidates follow, as for any failed constraint.
    assert!(
        why.contains("r0 (needs 32) by example.com/numaNode: 0: d-00"),
        "{why}"
    );
    // Without the bound the same claim exhausts the step limit instead.
    let mut objects = Objects::default();
    objects
        .add_text("node", &node(&two_groups_of_28()))
        .unwrap();
    objects.add_text("claim", &claim(&[32])).unwrap();
    let mut allocator = Allocator::new(&objects.slices, objects.classes, &[], None).unwrap();
    allocator.counting_bounds = false;
    allocator.step_limit = 100_000;
    let unbounded = allocator.explain(&objects.claims[0]);
    assert!(
        unbounded.explanation[0].contains("gave up"),
        "{unbounded:#?}"
    );
    assert_eq!(unbounded.status, Status::Undecided);
}

#[test]
fn requests_that_together_want_more_than_a_group_are_a_no_without_a_search() {
    let outcome = explain(&two_groups_of_28(), &[16, 16], true);
    assert_eq!(outcome.status, Status::Unsatisfiable, "{outcome:#?}");
    assert_eq!(outcome.search_steps, 0);
    assert!(
        outcome.explanation[0].ends_with(
            "cannot fit: requests r0, r1 together want 32 devices with one value of example.com/numaNode, and the largest group has 28 (numaNode 0)"
        ),
        "{outcome:#?}"
    );
    // 14 + 14 fit in one group.
    let outcome = explain(&two_groups_of_28(), &[14, 14], true);
    assert_eq!(outcome.status, Status::Allocated, "{outcome:#?}");
    assert_eq!(outcome.numa.as_deref(), Some("aligned on NUMA node 0"));
}

#[test]
fn a_value_fixed_by_the_first_pick_with_too_few_devices_left_is_abandoned_at_once() {
    // Ten devices of node 0 first, then 25 of node 1: 20 fit only on node 1. Without pruning, every
    // subset of node 0's devices is tried first.
    let numa: Vec<u8> = std::iter::repeat_n(0, 10)
        .chain(std::iter::repeat_n(1, 25))
        .collect();
    let pruned = explain(&numa, &[20], true);
    assert_eq!(pruned.status, Status::Allocated, "{pruned:#?}");
    assert_eq!(pruned.numa.as_deref(), Some("aligned on NUMA node 1"));
    let unpruned = explain(&numa, &[20], false);
    assert_eq!(unpruned.status, Status::Allocated);
    assert!(
        pruned.search_steps * 100 < unpruned.search_steps,
        "{} steps with pruning, {} without",
        pruned.search_steps,
        unpruned.search_steps
    );
    assert!(pruned.search_steps < 100, "{}", pruned.search_steps);
}

mod properties {
    use proptest::prelude::*;

    use super::explain;
    use crate::Status;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The bounds only ever skip work: the same claim gets the same answer (status and devices)
        /// with and without them.
        #[test]
        fn counting_bounds_never_change_an_answer(
            numa in proptest::collection::vec(0u8..3, 1..18),
            counts in proptest::collection::vec(1usize..7, 1..4),
        ) {
            let unbounded = explain(&numa, &counts, false);
            prop_assume!(!unbounded.explanation.iter().any(|l| l.contains("gave up")));
            let bounded = explain(&numa, &counts, true);
            prop_assert_eq!(bounded.status, unbounded.status);
            let devices = |o: &crate::Outcome| {
                o.devices.iter().map(|d| format!("{}={}", d.request, d.device)).collect::<Vec<_>>()
            };
            prop_assert_eq!(devices(&bounded), devices(&unbounded));
            if bounded.status == Status::Allocated {
                prop_assert!(bounded.search_steps <= unbounded.search_steps);
            }
        }
    }
}
