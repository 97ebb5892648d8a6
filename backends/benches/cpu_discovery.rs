//! Full CPU discovery, in process: the largest hwloc dump in the shared corpora (256 CPUs, 64 NUMA
//! nodes, masks-only kernel) when `../shared` is present, and the largest fixture machine always.
//!
//! `cargo bench -p backends --bench cpu_discovery`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use backends::{SysfsCpuTopology, SysfsRoot};
use criterion::{Criterion, criterion_group, criterion_main};
use hal::CpuTopology;

const LARGEST_DUMP: &str = "256ia64-64n2s2c";

/// Extracts the dump with tar (benchmark setup only; the code under test never shells out).
fn extract_dump(into: &Path) -> Option<PathBuf> {
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../shared/corpora/hwloc-linux/{LARGEST_DUMP}.tar.bz2"
    ));
    if !tarball.exists() {
        eprintln!(
            "{} not found: benchmarking the fixture only",
            tarball.display()
        );
        return None;
    }
    let status = Command::new("tar")
        .arg("xjf")
        .arg(&tarball)
        .arg("-C")
        .arg(into)
        .status()
        .ok()?;
    status.success().then(|| into.join(LARGEST_DUMP))
}

fn bench(c: &mut Criterion) {
    let scratch = hal_mock::scratch_dir("bench-").unwrap();
    if let Some(root) = extract_dump(scratch.path()) {
        let topology = SysfsCpuTopology::new(SysfsRoot::new(&root));
        let inventory = topology.cpu_inventory().unwrap();
        assert_eq!(inventory.cpus.len(), 256);
        c.bench_function("cpu_inventory/hwloc-256ia64-64n2s2c", |b| {
            b.iter(|| topology.cpu_inventory().unwrap())
        });
    }
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let topology = SysfsCpuTopology::new(SysfsRoot::new(fixture.root()));
    c.bench_function("cpu_inventory/fixture-xeon", |b| {
        b.iter(|| topology.cpu_inventory().unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
