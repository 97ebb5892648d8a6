//! Reads a whole machine and prints what it found, one line per family:
//!
//! `cargo run -p backends --example inventory [ROOT]` (ROOT: `/` by default, or a captured tree).

use backends::SysfsRoot;
use backends::inventory::{Inventory, Vendors};

fn main() {
    let root = SysfsRoot::new(std::env::args_os().nth(1).unwrap_or_else(|| "/".into()));
    // The vendor libraries only for this machine's own tree (not for a capture of another one).
    let inventory = Inventory::from_machine(&root, None, Vendors::for_tree(&root));

    let (cpus, numa) = inventory
        .cpu
        .as_ref()
        .map_or((0, 0), |cpu| (cpu.cpus.len(), cpu.numa_nodes.len()));
    println!("cpus: {cpus} in {numa} NUMA nodes");
    println!("pci functions: {}", inventory.pci.len());
    println!("sr-iov pfs: {}", inventory.sriov.len());
    println!("rdma devices: {}", inventory.rdma.len());
    for gpu in &inventory.gpus {
        println!(
            "gpu {} {:?} {}",
            gpu.pci_address,
            gpu.vendor,
            gpu.product.as_deref().unwrap_or("?")
        );
    }
    for error in &inventory.errors {
        eprintln!("could not read {}: {}", error.path, error.error);
    }
}
