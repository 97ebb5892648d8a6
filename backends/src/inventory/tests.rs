#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn fixture(name: &str) -> (hal_mock::MaterializedFixture, SysfsRoot) {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let root = SysfsRoot::new(machine.root());
    (machine, root)
}

#[test]
fn a_fixture_reads_whole_with_sorted_functions_and_no_errors() {
    let (_machine, root) = fixture("gb300");
    let inventory = Inventory::from_sysfs(&root, None);
    assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
    assert!(
        inventory
            .cpu
            .as_ref()
            .is_some_and(|cpu| !cpu.cpus.is_empty())
    );
    assert!(!inventory.gpus.is_empty() && !inventory.rdma.is_empty());
    assert!(
        inventory
            .pci
            .windows(2)
            .all(|w| w[0].address < w[1].address)
    );
    for gpu in &inventory.gpus {
        let function = inventory.function(gpu.pci_address).unwrap();
        assert_eq!(function.address, gpu.pci_address);
    }
}

#[test]
fn an_empty_tree_is_an_empty_inventory_that_says_what_it_could_not_read() {
    let tree = tempfile::tempdir().unwrap();
    let inventory = Inventory::from_sysfs(&SysfsRoot::new(tree.path()), None);
    assert!(inventory.pci.is_empty() && inventory.gpus.is_empty());
    assert!(
        !inventory.errors.is_empty(),
        "a tree without sysfs is an error"
    );
    let mut keys: Vec<_> = inventory
        .errors
        .iter()
        .map(|e| (e.path.clone(), e.error.clone()))
        .collect();
    let count = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        count,
        "each problem once: {:?}",
        inventory.errors
    );
}

#[test]
fn only_this_machines_tree_gets_the_vendor_libraries() {
    assert!(is_this_machine(Path::new("/")));
    let tree = tempfile::tempdir().unwrap();
    assert!(!is_this_machine(tree.path()), "a capture has no boot id");
    let id_file = tree.path().join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    std::fs::write(&id_file, "00000000-0000-0000-0000-000000000000\n").unwrap();
    assert!(!is_this_machine(tree.path()), "another kernel's boot id");
    assert!(Vendors::for_tree(&SysfsRoot::new(tree.path())).is_empty());
    if let Ok(ours) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        std::fs::write(&id_file, ours).unwrap();
        assert!(
            is_this_machine(tree.path()),
            "this host's /proc, mounted elsewhere"
        );
        #[cfg(feature = "nvml")]
        assert!(!Vendors::for_tree(&SysfsRoot::new(tree.path())).is_empty());
    }
}

/// `boot_id` of `root` on a thread, failing the test when it has not answered in 10 s.
fn boot_id_within_10s(root: &Path) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(boot_id(&root));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the boot id read hangs ({e})"))
}

#[test]
fn the_boot_id_is_read_bounded_and_without_blocking() {
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join("proc/sys/kernel/random");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("boot_id");
    assert_eq!(boot_id_within_10s(tree.path()), None, "missing");

    std::fs::write(&file, "6f1a2b3c-0000-4000-8000-000000000001\n").unwrap();
    assert_eq!(
        boot_id_within_10s(tree.path()).as_deref(),
        Some("6f1a2b3c-0000-4000-8000-000000000001")
    );

    // An endless file behind a link: refused (links are not followed), not read to the end.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    assert_eq!(boot_id_within_10s(tree.path()), None, "/dev/zero");

    // A FIFO nothing writes to: refused at once, not waited on.
    std::fs::remove_file(&file).unwrap();
    use rustix::fs::{CWD, FileType, Mode};
    rustix::fs::mknodat(CWD, &file, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    assert_eq!(boot_id_within_10s(tree.path()), None, "a FIFO");

    // Longer than any attribute may be: refused, not kept.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, vec![b'a'; 70_000]).unwrap();
    assert_eq!(boot_id_within_10s(tree.path()), None, "70 KB");

    // A link on the way to the host's own /proc: resolved inside the tree, so the capture does not
    // pass for this machine.
    std::fs::remove_dir_all(tree.path().join("proc")).unwrap();
    std::os::unix::fs::symlink("/proc", tree.path().join("proc")).unwrap();
    assert_eq!(boot_id_within_10s(tree.path()), None, "proc -> /proc");
    assert!(!is_this_machine(tree.path()));
}
