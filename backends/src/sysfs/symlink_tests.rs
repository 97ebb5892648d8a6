//! Directory links that lead out of the root, family by family (CPU, NUMA node, DRM and the NVIDIA
//! driver's directory, InfiniBand, network interfaces): a directory of a real tree is moved outside the
//! root and a link left in its place, and the files out there are made to hold a secret. Every reader
//! must look the link's target up inside the root (where it does not exist) and never show a byte of
//! the secret, in an item or in an error. The links the fixtures themselves hold (class entries,
//! `sys/bus/pci/devices`) stay inside the root and keep working: each test also checks what is still
//! read.

use std::fs;
use std::path::{Path, PathBuf};

use hal::{CpuTopology, GpuDevice, PciDevice, RdmaDevice};

use super::{SysfsRoot, cpu::SysfsCpuTopology, gpu::SysfsGpu, pci::SysfsPci, rdma::SysfsRdma};

const SECRET: &str = "SECRET-5a5a5a";

fn fixture(name: &str) -> hal_mock::MaterializedFixture {
    hal_mock::by_name(name).unwrap().materialize().unwrap()
}

/// A directory outside every root.
fn outside() -> tempfile::TempDir {
    hal_mock::scratch_dir("outside-").unwrap()
}

/// How the link left in place of a moved directory names its target.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// `/tmp/outside-…/moved`.
    Absolute,
    /// `../../../../tmp/outside-…/moved`: climbs to `/` from the link's directory, then down.
    Climbing,
}

/// Moves the directory `path` to `outside/<name>` and leaves a link to it at `path`; returns the
/// moved directory. The kernel follows the link (checked), so a reader that does the same reads there.
fn move_out(path: &Path, outside: &Path, name: &str, link: Link) -> PathBuf {
    let moved = outside.join(name);
    fs::rename(path, &moved).unwrap();
    let target = match link {
        Link::Absolute => moved.clone(),
        Link::Climbing => {
            let depth = path.parent().unwrap().components().count() - 1;
            let mut climb = PathBuf::new();
            for _ in 0..depth {
                climb.push("..");
            }
            climb.join(moved.strip_prefix("/").unwrap())
        }
    };
    std::os::unix::fs::symlink(&target, path).unwrap();
    assert!(
        fs::canonicalize(path).unwrap() == fs::canonicalize(&moved).unwrap(),
        "the link leads to {}",
        moved.display()
    );
    moved
}

fn assert_no_secret(what: &str, found: &impl std::fmt::Debug) {
    let text = format!("{found:?}");
    assert!(!text.contains("SECRET"), "{what} shows the secret: {text}");
}

/// The resolved directory of a PCI function that has `child` (`net`, `infiniband`, `drm`).
fn function_with(root: &Path, child: &str) -> PathBuf {
    let devices = root.join("sys/bus/pci/devices");
    let mut names: Vec<_> = fs::read_dir(&devices)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
        .iter()
        .map(|name| fs::canonicalize(devices.join(name)).unwrap())
        .find(|dir| dir.join(child).is_dir())
        .unwrap_or_else(|| panic!("no PCI function with {child}/"))
}

#[test]
fn cpu_directory_links_out_of_the_root_are_not_followed() {
    for link in [Link::Absolute, Link::Climbing] {
        // cpu0 itself, and a directory further down (cpu1's topology/, cpu2's cache/).
        let machine = fixture("xeon");
        let root = machine.root();
        let cpu_dir = root.join("sys/devices/system/cpu");
        let out = outside();
        let cpu0 = move_out(&cpu_dir.join("cpu0"), out.path(), "cpu0", link);
        fs::write(cpu0.join("topology/core_id"), SECRET).unwrap();
        fs::write(cpu0.join("topology/physical_package_id"), SECRET).unwrap();
        let topology = move_out(&cpu_dir.join("cpu1/topology"), out.path(), "topo1", link);
        fs::write(topology.join("core_id"), SECRET).unwrap();
        fs::write(topology.join("core_cpus_list"), SECRET).unwrap();
        let cache = move_out(&cpu_dir.join("cpu2/cache"), out.path(), "cache2", link);
        for index in fs::read_dir(&cache).unwrap() {
            let index = index.unwrap().path();
            fs::write(index.join("level"), SECRET).unwrap();
            fs::write(index.join("shared_cpu_list"), SECRET).unwrap();
        }

        let read = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert_no_secret(&format!("the CPU topology ({link:?})"), &read);
        let cpu0 = &read.cpus[0];
        assert_eq!(
            (cpu0.id, cpu0.core, cpu0.package),
            (0, None, None),
            "{link:?}: nothing of cpu0 is read outside the root"
        );
        // The rest of the machine is read as before.
        assert_eq!(read.cpus.len(), 224);
        assert!(read.cpus[3..].iter().all(|c| c.core.is_some()));
    }
}

#[test]
fn numa_node_directory_links_out_of_the_root_are_not_followed() {
    for link in [Link::Absolute, Link::Climbing] {
        let machine = fixture("xeon");
        let root = machine.root();
        let out = outside();
        let node_dir = root.join("sys/devices/system/node");
        let node1 = move_out(&node_dir.join("node1"), out.path(), "node1", link);
        fs::write(node1.join("cpulist"), SECRET).unwrap();
        fs::write(node1.join("cpumap"), SECRET).unwrap();
        fs::write(node1.join("distance"), SECRET).unwrap();
        fs::write(
            node1.join("meminfo"),
            format!("Node 1 MemTotal: {SECRET} kB\n"),
        )
        .unwrap();

        let read = SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap();
        assert_no_secret(&format!("the NUMA nodes ({link:?})"), &read);
        let node1 = read.numa_nodes.iter().find(|n| n.id.0 == 1).unwrap();
        assert!(node1.cpus.is_empty() && node1.memory_bytes.is_none());
        let node0 = read.numa_nodes.iter().find(|n| n.id.0 == 0).unwrap();
        assert!(!node0.cpus.is_empty() && node0.memory_bytes.is_some());
    }
}

#[test]
fn drm_and_nvidia_directory_links_out_of_the_root_are_not_followed() {
    // Intel cards: a function's `drm/` moved out, its card's local memory made the secret.
    let machine = fixture("i915");
    let root = machine.root();
    let before = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
    let out = outside();
    let function = function_with(root, "drm");
    let address = function.file_name().unwrap().to_str().unwrap().to_owned();
    let drm = move_out(&function.join("drm"), out.path(), "drm", Link::Absolute);
    for card in fs::read_dir(&drm).unwrap() {
        let card = card.unwrap().path();
        fs::write(card.join("lmem_total_bytes"), SECRET).unwrap();
    }
    let read = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
    assert_no_secret("the Intel GPUs", &read);
    let gpu = read
        .items
        .iter()
        .find(|g| g.pci_address.to_string() == address)
        .unwrap();
    assert_eq!(gpu.memory_bytes, None, "read outside the root");
    // The GPUs are still found, the others' cards with their memory.
    assert_eq!(read.items.len(), before.items.len());
    assert!(read.items.iter().any(|g| g.memory_bytes.is_some()));

    // `sys/class/drm` itself a link to a class directory outside, holding a plain card entry whose
    // device names a function by uevent.
    let machine = fixture("i915");
    let root = machine.root();
    let out = outside();
    let class = root.join("sys/class/drm");
    let class_out = move_out(&class, out.path(), "class-drm", Link::Climbing);
    fs::create_dir_all(class_out.join("card9/device")).unwrap();
    fs::write(
        class_out.join("card9/device/uevent"),
        format!("PCI_SLOT_NAME=0000:ee:00.0\nPCI_ID=8086:56c0\nDRIVER={SECRET}\n"),
    )
    .unwrap();
    let read = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
    assert_no_secret("the Intel GPUs", &read);
    assert!(read.items.iter().all(|g| g.drm_card.is_none()));
    assert_eq!(read.items.len(), before.items.len());

    // NVIDIA: the driver's directory of one GPU moved out, its model made the secret.
    let machine = fixture("xeon");
    let root = machine.root();
    let out = outside();
    let gpus = root.join("proc/driver/nvidia/gpus");
    let first = fs::read_dir(&gpus).unwrap().next().unwrap().unwrap().path();
    let address = first.file_name().unwrap().to_str().unwrap().to_owned();
    let moved = move_out(&first, out.path(), "gpu", Link::Absolute);
    let information = fs::read_to_string(moved.join("information")).unwrap();
    let information = information.replace("Model:", &format!("Model: {SECRET}"));
    fs::write(moved.join("information"), information).unwrap();
    let read = SysfsGpu::new(SysfsRoot::new(root)).gpus().unwrap();
    assert_no_secret("the NVIDIA GPUs", &read);
    let gpu = read
        .items
        .iter()
        .find(|g| g.pci_address.to_string() == address)
        .unwrap();
    assert_eq!((gpu.product.as_ref(), gpu.uuid.as_ref()), (None, None));
    assert!(read.items.iter().any(|g| g.uuid.is_some()), "the others");
}

#[test]
fn infiniband_and_net_directory_links_out_of_the_root_are_not_followed() {
    let machine = fixture("xeon");
    let root = machine.root();
    let out = outside();
    let before = SysfsRdma::new(SysfsRoot::new(root)).rdma_devices().unwrap();
    // A function's `infiniband/` moved out: its device's GUID and port made the secret.
    let function = function_with(root, "infiniband");
    let ib = move_out(
        &function.join("infiniband"),
        out.path(),
        "ib",
        Link::Climbing,
    );
    let device = fs::read_dir(&ib).unwrap().next().unwrap().unwrap().path();
    let name = device.file_name().unwrap().to_str().unwrap().to_owned();
    fs::write(device.join("node_guid"), SECRET).unwrap();
    fs::write(device.join("ports/1/rate"), SECRET).unwrap();
    fs::create_dir_all(device.join("ports/1/gid_attrs/ndevs")).unwrap();
    fs::write(device.join("ports/1/gid_attrs/ndevs/0"), SECRET).unwrap();
    // A function's `net/` moved out, holding an interface named as the secret.
    let net_function = function_with(root, "net");
    let net = move_out(&net_function.join("net"), out.path(), "net", Link::Absolute);
    fs::create_dir(net.join(SECRET)).unwrap();

    let read = SysfsRdma::new(SysfsRoot::new(root)).rdma_devices().unwrap();
    assert_no_secret("the RDMA devices", &read);
    let moved = read.items.iter().find(|d| d.name == name).unwrap();
    assert_eq!((&moved.node_guid, moved.ports.len()), (&None, 0));
    assert_eq!(read.items.len(), before.items.len());
    let moved_functions = [&function, &net_function].map(|dir| dir.file_name().unwrap());
    for (now, was) in read.items.iter().zip(&before.items) {
        let address = was.pci_address.unwrap().to_string();
        if !moved_functions.contains(&std::ffi::OsStr::new(&address)) {
            assert_eq!(now, was, "the others are read as before");
        }
    }
    let pci = SysfsPci::new(SysfsRoot::new(root)).pci_functions().unwrap();
    assert_no_secret("the PCI functions", &pci);

    // `sys/class/infiniband` itself a link to a directory outside holding a device.
    let machine = fixture("xeon");
    let root = machine.root();
    let out = outside();
    let class = move_out(
        &root.join("sys/class/infiniband"),
        out.path(),
        "class-ib",
        Link::Absolute,
    );
    fs::create_dir(class.join("evil0")).unwrap();
    fs::write(class.join("evil0/node_guid"), SECRET).unwrap();
    let read = SysfsRdma::new(SysfsRoot::new(root)).rdma_devices().unwrap();
    assert_no_secret("the RDMA devices", &read);
    assert!(read.items.is_empty(), "{read:?}");
}

/// The tests above again, every open taking the component walk (kernels without `openat2`, or a
/// seccomp profile that refuses it): the same answers.
#[test]
fn the_same_holds_through_the_component_walk() {
    super::in_root::forced_walk::with(|| {
        cpu_directory_links_out_of_the_root_are_not_followed();
        numa_node_directory_links_out_of_the_root_are_not_followed();
        drm_and_nvidia_directory_links_out_of_the_root_are_not_followed();
        infiniband_and_net_directory_links_out_of_the_root_are_not_followed();
    });
}
