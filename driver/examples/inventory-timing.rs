//! Times the driver's read of a machine in process: `Inventory::from_sysfs` (CPU topology, PCI,
//! SR-IOV, RDMA devices, GPUs; no pci.ids names, no vendor libraries) of the sysfs tree under DIR,
//! RUNS times after three warm-up reads. Prints one line: the mean and the fastest read in
//! milliseconds, the logical CPUs and the PCI functions found. `scripts/hwloc-load.c` prints the same
//! for hwloc's `hwloc_topology_load`, so that `scripts/bench-discovery.sh` can put the two libraries
//! side by side.
//!
//! `cargo run --release -p driver --example inventory-timing -- DIR RUNS`

use std::process::ExitCode;
use std::time::Instant;

use driver::inventory::Inventory;

const WARM_UP: usize = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, runs) = match args.as_slice() {
        [dir, runs] => match runs.parse::<usize>() {
            Ok(runs) if runs > 0 => (dir.clone(), runs),
            _ => {
                eprintln!("inventory-timing: RUNS must be a positive number, not {runs:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: inventory-timing DIR RUNS (DIR holds the sys/ tree to read)");
            return ExitCode::from(2);
        }
    };
    if !std::path::Path::new(&dir).join("sys").is_dir() {
        eprintln!("inventory-timing: {dir}/sys is not a directory");
        return ExitCode::from(2);
    }
    let root = backends::SysfsRoot::new(&dir);
    let (mut total, mut best) = (0.0f64, f64::INFINITY);
    let (mut cpus, mut functions) = (0, 0);
    for run in 0..WARM_UP + runs {
        let start = Instant::now();
        let inventory = Inventory::from_sysfs(&root, None);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        cpus = inventory.cpu.as_ref().map_or(0, |cpu| cpu.cpus.len());
        functions = inventory.pci.len();
        if run >= WARM_UP {
            total += ms;
            best = best.min(ms);
        }
    }
    println!("{:.3} {:.3} {cpus} {functions}", total / runs as f64, best);
    ExitCode::SUCCESS
}
