//! `hal-probe explain`'s target: a 1024-device node and a claim of 8 requests with a matchAttribute
//! constraint explained in under 100 ms. Three claims: one that fits at once, one whose last request
//! only one NUMA node can satisfy (the search must not try every combination before it), and one that
//! fits nowhere (the explanation reruns the search without each constraint).

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use allocator::{Allocator, Objects, synthetic};
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

criterion_group!(benches, bench);
criterion_main!(benches);
