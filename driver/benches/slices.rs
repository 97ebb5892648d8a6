//! Inventory → validated ResourceSlices, in process: the largest fixture (xeon, individual CPUs: 224
//! CPU devices plus 18 PCI devices) and a synthetic 1024-CPU node in individual mode (8 slices).
//!
//! `cargo bench -p driver --bench slices`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use dra_kubelet_plugin::slices::KubeVersion;
use dra_kubelet_plugin::slices::validate_pool;
use driver::inventory::Inventory;
use driver::slices::{CpuMode, SliceConfig, build_slices};
use hal::{CoreType, CpuInventory, CpuSet, LogicalCpu, NumaNode, NumaNodeInfo};

/// 4 sockets x 128 cores x 2 threads, one NUMA node and one L3 per socket.
fn synthetic_1024() -> Inventory {
    let cpus: Vec<LogicalCpu> = (0..1024u32)
        .map(|id| {
            let core = id % 512;
            LogicalCpu {
                id,
                online: true,
                package: Some(core / 128),
                die: Some(0),
                cluster: None,
                core: Some(core % 128),
                numa_node: Some(NumaNode(core / 128)),
                l3: Some(core / 128),
                core_type: CoreType::Standard,
                siblings: Some(CpuSet::from_ids([core, core + 512]).unwrap()),
            }
        })
        .collect();
    let numa_nodes = (0..4u32)
        .map(|n| NumaNodeInfo {
            id: NumaNode(n),
            cpus: CpuSet::from_ids((0..1024).filter(|c| (c % 512) / 128 == n)).unwrap(),
            memory_bytes: Some(256 << 30),
            distances: (0..4).map(|m| if m == n { 10 } else { 21 }).collect(),
        })
        .collect();
    Inventory::from(backends::inventory::Inventory {
        cpu: Some(CpuInventory {
            cpus,
            numa_nodes,
            errors: Vec::new(),
        }),
        ..Default::default()
    })
}

fn bench(c: &mut Criterion) {
    let mut config = SliceConfig::new("node-1");
    config.cpu_mode = CpuMode::Individual;
    let xeon = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(xeon.root()), None);
    c.bench_function("slices/xeon-individual", |b| {
        b.iter(|| {
            let slices = build_slices(&inventory, &config, 1);
            assert!(validate_pool(&slices, KubeVersion::V1_34).is_empty());
            slices.len()
        })
    });
    let big = synthetic_1024();
    c.bench_function("slices/synthetic-1024-cpus-individual", |b| {
        b.iter(|| {
            let slices = build_slices(&big, &config, 1);
            assert!(validate_pool(&slices, KubeVersion::V1_34).is_empty());
            assert_eq!(slices.len(), 8);
            slices.len()
        })
    });
    c.bench_function("inventory+slices/xeon-individual", |b| {
        b.iter(|| {
            let inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(xeon.root()), None);
            build_slices(&inventory, &config, 1).len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
