//! Full inventory in process: CPU topology, PCI functions, SR-IOV, RDMA devices and GPUs of every
//! fixture machine, and of the hwloc dumps with I/O when `../shared` is present.
//!
//! `cargo bench -p backends --bench inventory`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use backends::{SysfsCpuTopology, SysfsGpu, SysfsPci, SysfsRdma, SysfsRoot, SysfsSriov};
use criterion::{Criterion, criterion_group, criterion_main};
use hal::{CpuTopology, GpuDevice, PciDevice, RdmaDevice, SriovPf};

/// hwloc dumps with PCI devices (see the corpus INDEX).
const IO_DUMPS: [&str; 3] = [
    "32intel64-2p8co2t+8ve",
    "40intel64-2g2n4c+pcilocality",
    "2pa-pcidomain32bits",
];

/// Every backend, one after the other, as the driver's `Inventory::read` runs them.
fn inventory(root: &SysfsRoot) -> usize {
    let cpu = SysfsCpuTopology::new(root.clone())
        .cpu_inventory()
        .unwrap()
        .cpus
        .len();
    let pci = SysfsPci::new(root.clone())
        .pci_functions()
        .unwrap()
        .items
        .len();
    let sriov = SysfsSriov::new(root.clone())
        .sriov_pfs()
        .unwrap()
        .items
        .len();
    let rdma = SysfsRdma::new(root.clone())
        .rdma_devices()
        .unwrap()
        .items
        .len();
    let gpus = SysfsGpu::new(root.clone()).gpus().unwrap().items.len();
    cpu + pci + sriov + rdma + gpus
}

/// Extracts a dump with tar (benchmark setup only; the code under test never shells out).
fn extract(name: &str, into: &Path) -> Option<PathBuf> {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../shared/corpora/hwloc-linux/{name}.tar.bz2"));
    if !tarball.exists() {
        return None;
    }
    let dir = into.join(name);
    std::fs::create_dir_all(&dir).ok()?;
    let ok = Command::new("tar")
        .arg("xjf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .status()
        .ok()?
        .success();
    let top = std::fs::read_dir(&dir).ok()?.next()?.ok()?.path();
    ok.then_some(top)
}

fn bench(c: &mut Criterion) {
    for name in hal_mock::FIXTURES {
        let fixture = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let root = SysfsRoot::new(fixture.root());
        c.bench_function(&format!("full_inventory/fixture-{name}"), |b| {
            b.iter(|| inventory(&root))
        });
    }
    // Where the time of the largest fixture goes, backend by backend.
    let xeon = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = SysfsRoot::new(xeon.root());
    let mut parts = c.benchmark_group("part/fixture-xeon");
    parts.bench_function("cpu", |b| {
        b.iter(|| SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap())
    });
    parts.bench_function("pci", |b| {
        b.iter(|| SysfsPci::new(root.clone()).pci_functions().unwrap())
    });
    parts.bench_function("sriov", |b| {
        b.iter(|| SysfsSriov::new(root.clone()).sriov_pfs().unwrap())
    });
    parts.bench_function("rdma", |b| {
        b.iter(|| SysfsRdma::new(root.clone()).rdma_devices().unwrap())
    });
    parts.bench_function("gpu", |b| {
        b.iter(|| SysfsGpu::new(root.clone()).gpus().unwrap())
    });
    parts.finish();
    let scratch = hal_mock::scratch_dir("bench-io-").unwrap();
    for name in IO_DUMPS {
        if let Some(top) = extract(name, scratch.path()) {
            let root = SysfsRoot::new(top);
            c.bench_function(&format!("full_inventory/hwloc-{name}"), |b| {
                b.iter(|| inventory(&root))
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
