//! `hal-probe explain`'s target: a 1024-device node and a claim of 8 requests with a matchAttribute
//! constraint explained in under 100 ms. Three claims: one that fits at once, one whose last request
//! only one NUMA node can satisfy (the search must not try every combination before it), and one that
//! fits nowhere (the explanation reruns the search without each constraint).

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use allocator::{Allocator, Objects, Status, link_pod, synthetic};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut node = Objects::default();
    node.add_text("node", &synthetic::node(1024, 4)).unwrap();
    for (name, last_on) in [
        ("fits", None),
        ("last-request-on-numa-3", Some(3)),
        ("fits-nowhere", Some(7)),
    ] {
        let mut claim = Objects::default();
        claim
            .add_text("claim", &synthetic::claim(8, last_on))
            .unwrap();
        c.bench_function(&format!("explain/1024-devices-8-requests/{name}"), |b| {
            b.iter(|| {
                // Includes building the CEL view of every device, as one hal-probe run does.
                let mut allocator =
                    Allocator::new(&node.slices, node.classes.clone(), &[], None).unwrap();
                allocator.explain(&claim.claims[0])
            });
        });
    }
}

/// 32 CPUs of one NUMA node where each of the two nodes offers 28 (`hal-probe explain --cpu-mode
/// individual` with a selector): a "no" that counting proves, where trying combinations never ends.
fn cannot_fit(c: &mut Criterion) {
    // One slice per NUMA node: a slice holds at most 128 devices.
    let mut text = String::new();
    for i in 0..224 {
        if i % 112 == 0 {
            text.push_str(&format!(
                "---\napiVersion: resource.k8s.io/v1\nkind: ResourceSlice\nmetadata: {{name: s{}}}\nspec:\n  driver: example.com\n  nodeName: node-n\n  pool: {{name: pool-n, generation: 1, resourceSliceCount: 2}}\n  devices:\n",
                i / 112
            ));
        }
        text.push_str(&format!(
            "  - {{name: cpu-{i}, attributes: {{numaNode: {{int: {}}}, cpuId: {{int: {i}}}}}}}\n",
            i / 112
        ));
    }
    text.push_str("---\napiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: example}\nspec:\n  selectors:\n  - cel: {expression: 'device.driver == \"example.com\"'}\n");
    let mut node = Objects::default();
    node.add_text("node", &text).unwrap();
    let mut claim = Objects::default();
    claim
        .add_text(
            "claim",
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec:\n  devices:\n    requests:\n    - name: cpus\n      exactly:\n        deviceClassName: example\n        count: 32\n        selectors: [{cel: {expression: 'device.attributes[\"example.com\"].cpuId % 4 == 0'}}]\n    constraints:\n    - matchAttribute: example.com/numaNode\n",
        )
        .unwrap();
    c.bench_function("explain/224-cpus-32-of-one-numa-node/cannot-fit", |b| {
        b.iter(|| {
            let mut allocator =
                Allocator::new(&node.slices, node.classes.clone(), &[], None).unwrap();
            let outcome = allocator.explain(&claim.claims[0]);
            assert!(outcome.explanation[0].contains("largest group has 28"));
            outcome
        });
    });
}

/// A pod of three claims like the ones above (the second needs its last request on NUMA node 3),
/// searched together as the scheduler does, against the same three claims explained one by one.
fn pod(c: &mut Criterion) {
    let mut objects = Objects::default();
    objects.add_text("node", &synthetic::node(1024, 4)).unwrap();
    let mut text = String::new();
    for (i, last_on) in [None, Some(3), None].into_iter().enumerate() {
        text.push_str("---\n");
        text.push_str(&synthetic::claim(8, last_on).replace("name: c,", &format!("name: c{i},")));
    }
    text.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: bench}\nspec:\n  resourceClaims:\n  - {name: a, resourceClaimName: c0}\n  - {name: b, resourceClaimName: c1}\n  - {name: c, resourceClaimName: c2}\n  containers: [{name: main, image: x}]\n");
    objects.add_text("pod", &text).unwrap();
    let linked = link_pod(&objects.pods[0], &objects.claims, None);
    c.bench_function("explain/1024-devices-pod-of-3-claims/together", |b| {
        b.iter(|| {
            let mut allocator =
                Allocator::new(&objects.slices, objects.classes.clone(), &[], None).unwrap();
            let outcomes = allocator.explain_pod(&linked);
            assert!(outcomes.iter().all(|o| o.status == Status::Allocated));
            outcomes
        });
    });
    c.bench_function("explain/1024-devices-pod-of-3-claims/one-by-one", |b| {
        b.iter(|| {
            let mut allocator =
                Allocator::new(&objects.slices, objects.classes.clone(), &[], None).unwrap();
            objects
                .claims
                .iter()
                .map(|claim| allocator.explain(claim))
                .collect::<Vec<_>>()
        });
    });
}

criterion_group!(benches, bench, cannot_fit, pod);
criterion_main!(benches);
