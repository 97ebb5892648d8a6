//! Random claims over the fixtures' own slices: whatever `explain` answers keeps the invariants the
//! Kubernetes scheduler guarantees. An allocation has at most 32 devices and every request its
//! count, gives a device twice only where the slice allows several allocations, never consumes
//! more capacity or shared counters than published, meets every constraint; and the same input
//! gives the same answer. Pods of one to three such claims, searched together as the scheduler
//! does: all of the pod's claims get their devices or none, and no device goes to two claims of the
//! pod unless its slice allows several allocations, nor capacity or counters past what is
//! published, across the pod.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use allocator::{
    Allocated, Allocator, KubernetesVersion, Objects, Outcome, Quantity, Status, link_pod,
};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use proptest::prelude::*;

/// The machines, as `hal-probe` flags.
const MACHINES: [&[&str]; 5] = [
    &["--fixture", "xeon"],
    &["--fixture", "xeon", "--cpu-mode", "individual"],
    &["--fixture", "gb300", "--rt-bandwidth"],
    &[
        "--fixture",
        "i915",
        "--gpu-partitions",
        "4",
        "--counter-layout",
        "own-slice",
    ],
    &["--fixture", "epyc"],
];

const CLASSES: [&str; 8] = [
    "gpu.hal.dra.dev",
    "gpu-partition.hal.dra.dev",
    "nic.hal.dra.dev",
    "vf.hal.dra.dev",
    "rdma.hal.dra.dev",
    "cpu.hal.dra.dev",
    "cpus.hal.dra.dev",
    "rt.hal.dra.dev",
];

struct Machine {
    slices: Vec<ResourceSlice>,
}

fn machines() -> &'static Vec<Machine> {
    static MACHINES_SLICES: OnceLock<Vec<Machine>> = OnceLock::new();
    MACHINES_SLICES.get_or_init(|| {
        MACHINES
            .iter()
            .map(|flags| {
                let mut args = flags.to_vec();
                args.extend(["--format", "json", "slices"]);
                let output = Command::new(env!("CARGO_BIN_EXE_hal-probe"))
                    .args(&args)
                    .env_remove("NODE_NAME")
                    .output()
                    .unwrap();
                assert!(output.status.success(), "{args:?}");
                let mut objects = Objects::default();
                objects
                    .add_text("slices.json", std::str::from_utf8(&output.stdout).unwrap())
                    .unwrap();
                Machine {
                    slices: objects.slices,
                }
            })
            .collect()
    })
}

fn classes() -> Vec<DeviceClass> {
    hal_probe::explain::builtin_classes("hal.dra.dev").unwrap()
}

#[derive(Debug, Clone)]
struct Req {
    class: usize,
    /// None: allocationMode All.
    count: Option<usize>,
    cpu: Option<u32>,
}

fn claim_yaml(requests: &[Req], constraint: u8) -> String {
    named_claim_yaml("c", requests, constraint)
}

fn named_claim_yaml(name: &str, requests: &[Req], constraint: u8) -> String {
    let mut text = format!(
        "---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  devices:\n    requests:\n",
    );
    for (i, r) in requests.iter().enumerate() {
        text.push_str(&format!(
            "    - name: r{i}\n      exactly:\n        deviceClassName: {}\n",
            CLASSES[r.class]
        ));
        match r.count {
            Some(n) => text.push_str(&format!("        count: {n}\n")),
            None => text.push_str("        allocationMode: All\n"),
        }
        if let Some(cpu) = r.cpu {
            text.push_str(&format!(
                "        capacity: {{requests: {{cpu: \"{cpu}\"}}}}\n"
            ));
        }
    }
    match constraint {
        1 => text.push_str("    constraints:\n    - matchAttribute: hal.dra.dev/numaNode\n"),
        2 => text.push_str("    constraints:\n    - distinctAttribute: hal.dra.dev/numaNode\n"),
        _ => {}
    }
    text
}

fn explain(machine: &Machine, claim: &str) -> Outcome {
    let mut objects = Objects::default();
    objects.add_text("claim", claim).unwrap();
    let mut allocator = Allocator::for_version(
        KubernetesVersion::NEWEST,
        &machine.slices,
        classes(),
        &[],
        None,
    )
    .unwrap();
    allocator.explain(&objects.claims[0])
}

fn q(text: &str) -> Quantity {
    Quantity::parse(text).unwrap()
}

/// Checks an allocation against the slices.
fn check(machine: &Machine, requests: &[Req], constraint: u8, outcome: &Outcome) {
    let least: usize = requests.iter().map(|r| r.count.unwrap_or(1)).sum();
    if least > 32 {
        assert_ne!(
            outcome.status,
            Status::Allocated,
            "{least} devices: {outcome:#?}"
        );
    }
    if outcome.status != Status::Allocated {
        assert!(!outcome.explanation.is_empty(), "{outcome:#?}");
        return;
    }
    assert!(outcome.devices.len() <= 32, "{outcome:#?}");
    check_counts(requests, outcome);
    check_use(machine, outcome, &outcome.devices);
    if constraint > 0 {
        let devices = published(machine).0;
        let values: Vec<i64> = outcome
            .devices
            .iter()
            .map(|d| {
                let attributes = devices[&d.device].attributes.as_ref().unwrap();
                attributes["numaNode"].int.unwrap()
            })
            .collect();
        let distinct: BTreeSet<i64> = values.iter().copied().collect();
        match constraint {
            1 => assert_eq!(distinct.len(), 1, "{outcome:#?}"),
            _ => assert_eq!(distinct.len(), values.len(), "{outcome:#?}"),
        }
    }
}

/// Every request got its count (at least one for `All`).
fn check_counts(requests: &[Req], outcome: &Outcome) {
    for (i, r) in requests.iter().enumerate() {
        let got = outcome
            .devices
            .iter()
            .filter(|d| d.request == format!("r{i}"))
            .count();
        match r.count {
            Some(n) => assert_eq!(got, n, "request r{i}: {outcome:#?}"),
            None => assert!(got >= 1, "request r{i}: {outcome:#?}"),
        }
    }
}

type Published<'a> = (
    BTreeMap<String, &'a k8s_openapi::api::resource::v1::Device>,
    BTreeMap<String, BTreeMap<String, Quantity>>,
);

/// The published devices and counter sets.
fn published(machine: &Machine) -> Published<'_> {
    let mut devices = BTreeMap::new();
    let mut sets: BTreeMap<String, BTreeMap<String, Quantity>> = BTreeMap::new();
    for slice in &machine.slices {
        for set in slice.spec.shared_counters.iter().flatten() {
            let counters = set
                .counters
                .iter()
                .map(|(k, c)| (k.clone(), q(&c.value.0)))
                .collect();
            sets.insert(set.name.clone(), counters);
        }
        for device in slice.spec.devices.iter().flatten() {
            devices.insert(device.name.clone(), device);
        }
    }
    (devices, sets)
}

/// `allocated` (one claim's devices, or a whole pod's) takes no device twice unless it is
/// shared, and consumes no more capacity or counters than published.
fn check_use(machine: &Machine, outcome: &impl std::fmt::Debug, allocated: &[Allocated]) {
    let (devices, sets) = published(machine);
    let mut seen = BTreeSet::new();
    let mut consumed: BTreeMap<(String, String), Quantity> = BTreeMap::new();
    let mut counters: BTreeMap<(String, String), Quantity> = BTreeMap::new();
    for d in allocated {
        let device = devices[&d.device];
        let shared = device.allow_multiple_allocations == Some(true);
        let first = seen.insert(d.device.clone());
        assert!(first || shared, "{} twice: {outcome:#?}", d.device);
        for (name, amount) in &d.consumed_capacity {
            let total = consumed
                .entry((d.device.clone(), name.clone()))
                .or_default();
            *total = total.plus(q(amount));
        }
        // Counters are charged once per device, however many shares of it the claim holds.
        if first {
            for consumption in device.consumes_counters.iter().flatten() {
                for (name, c) in &consumption.counters {
                    let total = counters
                        .entry((consumption.counter_set.clone(), name.clone()))
                        .or_default();
                    *total = total.plus(q(&c.value.0));
                }
            }
        }
    }
    for ((device, name), amount) in &consumed {
        let capacity = &devices[device].capacity.as_ref().unwrap()[name.as_str()];
        assert!(
            *amount <= q(&capacity.value.0),
            "{device} {name}: {outcome:#?}"
        );
    }
    for ((set, name), amount) in &counters {
        assert!(
            *amount <= sets[set][name],
            "counter set {set} {name}: {outcome:#?}"
        );
    }
}

fn request() -> impl Strategy<Value = Req> {
    (
        0..CLASSES.len(),
        prop_oneof![10 => (1usize..3).prop_map(Some), 1 => (3usize..40).prop_map(Some), 2 => Just(None)],
        prop::option::of(1u32..12),
    )
        .prop_map(|(class, count, cpu)| Req {
            class,
            count,
            cpu: cpu.filter(|_| class == 6 || class == 7),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_claims_on_the_fixtures_keep_the_schedulers_invariants(
        machine in 0..MACHINES.len(),
        requests in prop::collection::vec(request(), 1..3),
        constraint in 0u8..3,
    ) {
        let machine = &machines()[machine];
        let claim = claim_yaml(&requests, constraint);
        let outcome = explain(machine, &claim);
        check(machine, &requests, constraint, &outcome);
        // Same input, same answer (share IDs included).
        prop_assert_eq!(&explain(machine, &claim), &outcome);
    }
}

/// Explains the pod of `claims` (named c0, c1, ...), and each claim alone.
fn explain_pod(machine: &Machine, claims: &[(Vec<Req>, u8)]) -> (Vec<Outcome>, Vec<Outcome>) {
    let mut text = String::new();
    for (i, (requests, constraint)) in claims.iter().enumerate() {
        text.push_str(&named_claim_yaml(&format!("c{i}"), requests, *constraint));
    }
    text.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  resourceClaims:\n");
    for i in 0..claims.len() {
        text.push_str(&format!(
            "  - {{name: claim{i}, resourceClaimName: c{i}}}\n"
        ));
    }
    text.push_str("  containers: [{name: main, image: x}]\n");
    let mut objects = Objects::default();
    objects.add_text("pod", &text).unwrap();
    let mut allocator = Allocator::for_version(
        KubernetesVersion::NEWEST,
        &machine.slices,
        classes(),
        &[],
        None,
    )
    .unwrap();
    let linked = link_pod(&objects.pods[0], &objects.claims, None);
    let together = allocator.explain_pod(&linked);
    let alone = objects
        .claims
        .iter()
        .map(|c| allocator.explain(c))
        .collect();
    (together, alone)
}

fn pod_claim() -> impl Strategy<Value = (Vec<Req>, u8)> {
    (prop::collection::vec(request(), 1..3), 0u8..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_pods_of_several_claims_keep_the_schedulers_invariants(
        machine in 0..MACHINES.len(),
        claims in prop::collection::vec(pod_claim(), 1..4),
    ) {
        let machine = &machines()[machine];
        let (together, alone) = explain_pod(machine, &claims);
        prop_assert_eq!(together.len(), claims.len());
        // All of the pod's claims get their devices, or none does.
        let status = together[0].status;
        prop_assert!(together.iter().all(|o| o.status == status), "{:#?}", together);
        let mut all = Vec::new();
        for ((outcome, (requests, constraint)), alone) in together.iter().zip(&claims).zip(&alone) {
            check(machine, requests, *constraint, outcome);
            prop_assert_eq!(outcome.pod.as_deref(), Some("Pod ns/p"));
            // What fits with the others fits alone.
            if status == Status::Allocated {
                prop_assert_ne!(alone.status, Status::Unsatisfiable, "{:#?} {:#?}", outcome, alone);
            }
            all.extend(outcome.devices.iter().cloned());
        }
        // Across the pod: no device twice unless shared, capacity and counters within bounds.
        check_use(machine, &together, &all);
        // Same input, same answer.
        prop_assert_eq!(&explain_pod(machine, &claims).0, &together);
    }
}
