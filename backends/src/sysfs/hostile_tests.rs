//! Hostile trees: what an attacker or an unlucky node puts where the kernel's files should be. Each
//! read runs on a thread and must answer within a bounded wait, so a hang fails the test instead of
//! stalling it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use hal::{CpuTopology, InventoryError, PciDevice};

use super::pciids::PciNames;
use super::{SysfsRoot, cpu::SysfsCpuTopology, pci::SysfsPci};

/// Runs `read` on a thread; fails the test when it has not answered in 10 s (a hang).
fn within_10s<T: Send + 'static>(what: &str, read: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(value) => value,
        Err(e) => panic!("{what} did not answer in 10 s ({e}): it hangs"),
    }
}

/// Replaces the file at `path` with a FIFO that nothing ever writes to.
fn make_fifo(path: &Path) {
    use rustix::fs::{CWD, FileType, Mode};
    let _ = fs::remove_file(path);
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
}

/// The xeon fixture's tree.
fn xeon() -> hal_mock::MaterializedFixture {
    hal_mock::by_name("xeon").unwrap().materialize().unwrap()
}

/// The directory of the first PCI function of a tree, resolved.
fn first_function(root: &Path) -> PathBuf {
    let devices = root.join("sys/bus/pci/devices");
    let mut names: Vec<_> = fs::read_dir(&devices)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    fs::canonicalize(devices.join(&names[0])).unwrap()
}

fn error_for<'a>(errors: &'a [InventoryError], path: &Path) -> &'a InventoryError {
    let path = path.display().to_string();
    errors
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error entry for {path}: {errors:#?}"))
}

#[test]
fn fifos_in_place_of_attributes_are_error_entries_not_hangs() {
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    let online = root.join("sys/devices/system/cpu/online");
    let meminfo = root.join("sys/devices/system/node/node0/meminfo");
    let function = first_function(&root);
    let vendor = function.join("vendor");
    let pci_ids = root.join("pci.ids");
    for fifo in [&online, &meminfo, &vendor, &pci_ids] {
        make_fifo(fifo);
    }

    let sysfs = SysfsRoot::new(&root);
    let cpus = SysfsCpuTopology::new(sysfs.clone());
    let cpus = within_10s("the CPU topology", move || cpus.cpu_inventory()).unwrap();
    for path in [&online, &meminfo] {
        let entry = error_for(&cpus.errors, path);
        assert!(
            entry.error.contains("a FIFO, not a regular file"),
            "{entry:?}"
        );
        assert_eq!(entry.kind, Some(hal::ErrorKind::Malformed));
    }
    // The rest is still read: every CPU (cpuN/online says which are online) and every node.
    assert!(
        !cpus.cpus.is_empty() && cpus.numa_nodes.len() >= 2,
        "{cpus:?}"
    );

    let pci = SysfsPci::new(sysfs).with_pci_ids(&pci_ids);
    let pci = within_10s("the PCI functions", move || pci.pci_functions()).unwrap();
    let entry = error_for(&pci.errors, &vendor);
    assert!(entry.error.contains("a FIFO"), "{entry:?}");
    let entry = error_for(&pci.errors, &pci_ids);
    assert!(entry.error.contains("a FIFO"), "{entry:?}");
    assert!(!pci.items.is_empty(), "the other functions are read");

    let path = pci_ids.clone();
    let loaded = within_10s("pci.ids", move || PciNames::load(&path, &BTreeSet::new()));
    let err = loaded.unwrap_err();
    assert!(
        err.to_string().contains(&pci_ids.display().to_string()),
        "{err}"
    );
}

/// A terminal's node in place of an attribute is refused without becoming the controlling
/// terminal of a reader that leads a session without one (`O_NOCTTY`); otherwise the terminal's
/// hangup would kill it (SIGHUP). The test runs itself again under `setsid(1)` as that reader.
#[test]
#[ignore = "needs root (bind mount) and setsid(1)"]
fn a_terminal_in_place_of_an_attribute_does_not_become_the_controlling_terminal_needs_root() {
    const CHILD: &str = "HAL_TEST_TERMINAL_ATTRIBUTE";
    if let Some(vendor) = std::env::var_os(CHILD) {
        // The child: a session leader without a controlling terminal.
        let vendor = PathBuf::from(vendor);
        let root = SysfsRoot::new("/");
        let error = super::tree::Tree::open(&root)
            .read_trimmed(&vendor)
            .unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let tty = fs::File::open("/dev/tty");
        assert!(tty.is_err(), "the terminal became the reader's: {tty:?}");
        return;
    }
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let terminal = ptsname(&master, Vec::new()).unwrap();
    let fixture = xeon();
    let vendor = first_function(fixture.root()).join("vendor");
    // Bound, not made with mknod: a pty's node opens only from its devpts.
    rustix::mount::mount_bind(terminal.to_str().unwrap(), &vendor).expect("bind mount");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(&vendor);
    let name = "sysfs::hostile_tests::\
        a_terminal_in_place_of_an_attribute_does_not_become_the_controlling_terminal_needs_root";
    let child = std::process::Command::new("setsid")
        .arg("--wait")
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture"])
        .env(CHILD, &vendor)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(out.contains("1 passed"), "the child ran the test: {out}");
    drop(master);
}

/// Whether `path` is opened (`IN_OPEN`) while `read` runs, watched with inotify.
pub(super) fn opened_during(path: &Path, read: impl FnOnce()) -> bool {
    use rustix::fs::inotify::{self, CreateFlags, Reader, WatchFlags};
    let watch = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&watch, path, WatchFlags::OPEN).unwrap();
    read();
    let mut buffer = [std::mem::MaybeUninit::uninit(); 1024];
    let mut events = Reader::new(&watch, &mut buffer);
    match events.next() {
        Ok(_) => true,
        Err(rustix::io::Errno::AGAIN) => false,
        Err(e) => panic!("reading inotify events: {e}"),
    }
}

/// A special file in place of an attribute of a captured tree is never opened: opening is enough
/// for a device to act (a watchdog's node arms it). Here a FIFO, which any user can make; the root
/// test below does the same with a character device.
#[test]
fn a_fifo_in_place_of_an_attribute_of_a_tree_is_never_opened() {
    let fixture = xeon();
    let vendor = first_function(fixture.root()).join("vendor");
    make_fifo(&vendor);
    let tree = super::tree::Tree::open(&SysfsRoot::new(fixture.root()));
    let opened = opened_during(&vendor, || {
        let error = tree.read_trimmed(&vendor).unwrap_err();
        assert!(
            error.to_string().contains("a FIFO, not a regular file"),
            "{error}"
        );
    });
    assert!(!opened, "the FIFO was opened");
    // A regular file is read, and the watch sees it opened (the check works).
    let device = vendor.with_file_name("device");
    assert!(opened_during(&device, || {
        tree.read_trimmed(&device).unwrap();
    }));
}

#[test]
#[ignore = "needs root: mknod of a character device"]
fn a_character_device_in_place_of_an_attribute_of_a_tree_is_never_opened_needs_root() {
    use rustix::fs::{CWD, FileType, Mode};
    let fixture = xeon();
    let vendor = first_function(fixture.root()).join("vendor");
    fs::remove_file(&vendor).unwrap();
    // /dev/null's numbers (1, 3): harmless when opened, and the watch sees whether it was.
    let null = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        CWD,
        &vendor,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o644),
        null,
    )
    .unwrap();
    let tree = super::tree::Tree::open(&SysfsRoot::new(fixture.root()));
    let opened = opened_during(&vendor, || {
        let error = tree.read_trimmed(&vendor).unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        let error = tree.open_regular(&vendor).unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        // Nor by path (the pci.ids database).
        let error = super::attr::open_regular(&vendor).unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        // Nor by the writer (bind, unbind, sriov_numvfs on a captured tree).
        let writer = super::write::FileWriter::new(fixture.root());
        use hal::AttributeWriter;
        let error = writer.write_attribute(&vendor, "0x8086").unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
    });
    assert!(!opened, "the device was opened");
}

#[test]
fn cpus_beyond_the_possible_ones_are_error_entries() {
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    // 64 KiB of whole-range items (a file of 8191 `0-65535`) where the machine has 224 CPUs.
    let huge = vec!["0-65535"; 8191].join(",");
    assert!(huge.len() < 64 * 1024);
    let function = first_function(&root);
    let node0 = root.join("sys/devices/system/node/node0/cpulist");
    let node0_cpus =
        hal::cpuset::CpuSet::from_cpulist(&fs::read_to_string(&node0).unwrap()).unwrap();
    for path in [&function.join("local_cpulist"), &node0] {
        fs::write(path, &huge).unwrap();
    }
    // The mask fallback says too much as well: CPU 224.
    fs::write(
        function.join("local_cpus"),
        "1,00000000,00000000,00000000,00000000,00000000,00000000,00000000",
    )
    .unwrap();

    let sysfs = SysfsRoot::new(&root);
    let cpus = SysfsCpuTopology::new(sysfs.clone())
        .cpu_inventory()
        .unwrap();
    let entry = error_for(&cpus.errors, &node0);
    assert!(
        entry.error.contains("above the machine's possible CPUs"),
        "{entry:?}"
    );
    let node = cpus.numa_nodes.iter().find(|n| n.id.0 == 0).unwrap();
    assert_eq!(node.cpus, node0_cpus, "node0's CPUs come from its cpumap");

    let pci = SysfsPci::new(sysfs).pci_functions().unwrap();
    for name in ["local_cpulist", "local_cpus"] {
        let entry = error_for(&pci.errors, &function.join(name));
        assert!(
            entry.error.contains("above the machine's possible CPUs"),
            "{entry:?}"
        );
    }
    let address = function.file_name().unwrap().to_str().unwrap();
    let read = pci
        .items
        .iter()
        .find(|f| f.address.to_string() == address)
        .unwrap();
    assert_eq!(read.local_cpus, None);
}

/// A 128-CPU arm64 machine of 4 NUMA nodes with SMT, like hwloc's arm dump, whose CPU lists and masks
/// end with `\n\0` or not.
fn arm_128(nul_terminated_sets: bool) -> hal_mock::MaterializedFixture {
    let mut machine = hal_mock::by_name("gb300").unwrap();
    machine.cpu.cores_per_package = 32;
    machine.cpu.threads_per_core = 2;
    machine.cpu.nodes_per_package = 2;
    machine.cpu.nul_terminated_sets = nul_terminated_sets;
    machine.materialize().unwrap()
}

#[test]
fn cpu_lists_ending_in_nul_read_as_the_plain_ones() {
    let with_nuls = arm_128(true);
    let online = with_nuls.root().join("sys/devices/system/cpu/online");
    assert_eq!(
        fs::read(&online).unwrap(),
        b"0-127\n\0",
        "the fixture has them"
    );
    let read = |root: &Path| {
        SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap()
    };
    let nuls = read(with_nuls.root());
    assert_eq!(nuls.errors, [], "no file is rejected");
    assert_eq!(nuls.numa_nodes.len(), 4);
    assert!(
        nuls.numa_nodes.iter().all(|n| n.cpus.len() == 32),
        "{:?}",
        nuls.numa_nodes
    );
    assert_eq!(nuls.cpus.len(), 128);
    let pairs = nuls
        .cpus
        .iter()
        .filter(|c| c.siblings.as_ref().is_some_and(|s| s.len() == 2));
    assert_eq!(pairs.count(), 128, "SMT siblings");
    let plain = arm_128(false);
    assert_eq!(nuls, read(plain.root()));
}

/// A file outside every root, holding what must never show up in an inventory or its errors.
fn secret_outside() -> (tempfile::TempDir, PathBuf) {
    let dir = hal_mock::scratch_dir("secret-").unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, "SECRET-5a5a5a\n").unwrap();
    (dir, secret)
}

fn assert_not_leaked(errors: &[InventoryError]) {
    for e in errors {
        assert!(!e.error.contains("SECRET"), "leaked: {e:?}");
    }
}

#[test]
fn attributes_linked_outside_the_root_are_refused_and_never_echoed() {
    let (_outside, secret) = secret_outside();
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    let function = first_function(&root);
    let numa_node = function.join("numa_node");
    let core_id = root.join("sys/devices/system/cpu/cpu0/topology/core_id");
    for attribute in [&numa_node, &core_id] {
        fs::remove_file(attribute).unwrap();
        std::os::unix::fs::symlink(&secret, attribute).unwrap();
    }
    let sysfs = SysfsRoot::new(&root);
    let pci = SysfsPci::new(sysfs.clone()).pci_functions().unwrap();
    assert_not_leaked(&pci.errors);
    let entry = error_for(&pci.errors, &numa_node);
    assert!(
        entry.error.contains("a symbolic link, not followed"),
        "{entry:?}"
    );
    let cpus = SysfsCpuTopology::new(sysfs).cpu_inventory().unwrap();
    assert_not_leaked(&cpus.errors);
    let entry = error_for(&cpus.errors, &core_id);
    assert!(
        entry.error.contains("a symbolic link, not followed"),
        "{entry:?}"
    );
}

#[test]
fn directory_links_down_a_device_path_stay_in_the_root() {
    let (outside, _secret) = secret_outside();
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    let function = first_function(&root);
    let address = function.file_name().unwrap().to_str().unwrap().to_owned();
    // The function's parent (a bridge or the root complex) moved outside the root, a link left in its
    // place, and the function's numa_node out there made to hold the secret.
    let parent = function.parent().unwrap().to_path_buf();
    let moved = outside.path().join("moved");
    fs::rename(&parent, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &parent).unwrap();
    fs::write(moved.join(&address).join("numa_node"), "SECRET-5a5a5a\n").unwrap();
    assert!(
        fs::metadata(function.join("vendor")).is_ok(),
        "the kernel would follow the link"
    );

    let pci = SysfsPci::new(SysfsRoot::new(&root))
        .pci_functions()
        .unwrap();
    assert_not_leaked(&pci.errors);
    assert!(
        pci.items.iter().all(|f| f.address.to_string() != address),
        "{address} was read from outside the root"
    );
    // Looked up inside the root, where the link's target does not exist.
    let entry = error_for(&pci.errors, &function.join("vendor"));
    assert!(entry.error.contains("missing or empty"), "{entry:?}");
}

/// The link tests above again, every open taking the component walk (kernels without `openat2`, or
/// a seccomp profile that refuses it): the same answers. (The FIFO test reads on other threads,
/// which the forced walk, set per thread, does not reach.)
#[test]
fn the_same_holds_through_the_component_walk() {
    super::in_root::forced_walk::with(|| {
        attributes_linked_outside_the_root_are_refused_and_never_echoed();
        directory_links_down_a_device_path_stay_in_the_root();
    });
}

/// The first PCI function of the xeon tree that has a network interface, and its `net` directory.
fn function_with_netdev(root: &Path) -> (String, PathBuf) {
    let devices = root.join("sys/bus/pci/devices");
    let mut names: Vec<String> = fs::read_dir(&devices)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let name = names
        .into_iter()
        .find(|n| devices.join(n).join("net").is_dir())
        .expect("a function with a netdev");
    let net = fs::canonicalize(devices.join(&name)).unwrap().join("net");
    (name, net)
}

#[test]
fn directories_that_cannot_be_listed_are_error_entries_not_absent() {
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    let (address, net) = function_with_netdev(&root);
    // A link loop in place of the function's `net/`: it cannot be listed (ELOOP).
    fs::remove_dir_all(&net).unwrap();
    std::os::unix::fs::symlink("net", &net).unwrap();
    let pci = SysfsPci::new(SysfsRoot::new(&root))
        .pci_functions()
        .unwrap();
    let entry = error_for(&pci.errors, &net);
    assert!(entry.error.contains("list"), "{entry:?}");
    let function = pci.items.iter().find(|f| f.address.to_string() == address);
    assert!(
        function.is_some_and(|f| f.netdevs.is_empty()),
        "{function:?}"
    );

    // The same for the whole bus: no functions, and an error saying why (not an empty machine).
    let devices = root.join("sys/bus/pci/devices");
    fs::remove_dir_all(&devices).unwrap();
    std::os::unix::fs::symlink("devices", &devices).unwrap();
    let pci = SysfsPci::new(SysfsRoot::new(&root))
        .pci_functions()
        .unwrap();
    assert!(pci.items.is_empty());
    error_for(&pci.errors, &devices);
}

#[test]
#[ignore = "needs root (capabilities to drop)"]
fn a_directory_the_reader_may_not_list_is_an_error_entry_needs_root() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let fixture = xeon();
    let root = fixture.root().to_path_buf();
    let (address, net) = function_with_netdev(&root);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&net, fs::Permissions::from_mode(0o000)).unwrap();
    let read = {
        let root = root.clone();
        move || {
            // Capabilities are per thread: this one reads as a root without the override of
            // directory permissions (a container's root without CAP_DAC_*), so `net/` is EACCES.
            let mut sets = capabilities(None).unwrap();
            sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
            set_capabilities(None, sets).unwrap();
            SysfsPci::new(SysfsRoot::new(&root)).pci_functions()
        }
    };
    let pci = within_10s("pci_functions", read).unwrap();
    let entry = error_for(&pci.errors, &net);
    assert_eq!(
        entry.kind,
        Some(hal::ErrorKind::PermissionDenied),
        "{entry:?}"
    );
    let function = pci.items.iter().find(|f| f.address.to_string() == address);
    assert!(
        function.is_some_and(|f| f.netdevs.is_empty()),
        "{function:?}"
    );
}
