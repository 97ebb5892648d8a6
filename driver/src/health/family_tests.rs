//! Health of network functions, RDMA ports, VFs gone with their PF and CPUs taken offline, on fixture
//! trees changed the way the kernel changes `/sys`: each test reads the tree again after each change,
//! as a rescan does, and checks the published taint and what the kubelet is told.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::plugin::api::HealthStatus;
use crate::slices::{CpuMode, SliceConfig, build_slices};

/// A fixture tree that tests change.
struct Tree {
    machine: hal_mock::MaterializedFixture,
    name: &'static str,
}

impl Tree {
    fn new(name: &'static str) -> Tree {
        let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
        Tree { machine, name }
    }

    fn root(&self) -> &Path {
        self.machine.root()
    }

    /// One rescan: the tree read again, through `health`.
    fn read(&self, health: &mut Health) -> Inventory {
        let mut inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(self.root()), None);
        health.apply(&mut inventory);
        inventory
    }

    fn write(&self, relative: &str, value: &str) {
        fs::write(self.root().join(relative), format!("{value}\n")).unwrap();
    }

    /// Takes CPU `id` offline or brings it back as the kernel does: an offline CPU keeps only its
    /// `online` file and leaves every other CPU's lists (siblings, caches, its node), so the
    /// fixture's CPU tree is rendered again with the new offline set.
    fn set_cpu_online(&self, id: u32, online: bool) {
        let cpu = self.root().join("sys/devices/system/cpu");
        let offline = fs::read_to_string(cpu.join("offline")).unwrap();
        let mut offline = hal::CpuSet::from_cpulist(offline.trim()).unwrap();
        match online {
            true => offline.remove(id),
            false => offline.insert(id),
        }
        let mut layout = hal_mock::by_name(self.name).unwrap().cpu;
        layout.offline = offline.iter().collect();
        fs::remove_dir_all(&cpu).unwrap();
        fs::remove_dir_all(self.root().join("sys/devices/system/node")).unwrap();
        layout.render(self.root()).unwrap();
        let topology = cpu.join(format!("cpu{id}/topology"));
        assert_eq!(topology.exists(), online, "{}", topology.display());
    }

    /// Takes the PCI functions at `addresses` away as hot-removal does: their directories and every
    /// link into them (`bus/pci/devices`, `class/net`, `class/infiniband*`). Returns what to put back.
    fn unplug(&self, addresses: &[&str]) -> Vec<(PathBuf, PathBuf)> {
        let stash = self.root().join(format!("stash-{}", addresses.join("-")));
        fs::create_dir_all(&stash).unwrap();
        let dirs: Vec<PathBuf> = addresses
            .iter()
            .map(|a| {
                fs::canonicalize(self.root().join(format!("sys/bus/pci/devices/{a}"))).unwrap()
            })
            .collect();
        let mut moved = Vec::new();
        for class in [
            "sys/bus/pci/devices",
            "sys/class/net",
            "sys/class/infiniband",
            "sys/class/infiniband_verbs",
            "sys/class/infiniband_mad",
        ] {
            let Ok(entries) = fs::read_dir(self.root().join(class)) else {
                continue;
            };
            for entry in entries {
                let link = entry.unwrap().path();
                let into_unplugged = fs::canonicalize(&link)
                    .is_ok_and(|target| dirs.iter().any(|d| target.starts_with(d)));
                if into_unplugged {
                    moved.push(link);
                }
            }
        }
        moved.extend(dirs);
        moved
            .into_iter()
            .enumerate()
            .map(|(i, from)| {
                let to = stash.join(i.to_string());
                fs::rename(&from, &to).unwrap();
                (from, to)
            })
            .collect()
    }

    fn replug(&self, moved: Vec<(PathBuf, PathBuf)>) {
        // Directories first (they were moved last), then the links into them.
        for (from, to) in moved.into_iter().rev() {
            fs::rename(to, from).unwrap();
        }
    }
}

fn config(informational_taints: bool) -> SliceConfig {
    let mut config = SliceConfig::new("n");
    config.informational_taints = informational_taints;
    config
}

/// The device's taints as `key=value:effect`.
fn taints(inventory: &Inventory, config: &SliceConfig, device: &str) -> Vec<String> {
    build_slices(inventory, config, 1)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .find(|d| d.name == device)
        .unwrap_or_else(|| panic!("{device} is not published"))
        .taints
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}={}:{}", t.key, t.value.unwrap_or_default(), t.effect))
        .collect()
}

/// The names of the published devices.
fn published(inventory: &Inventory, config: &SliceConfig) -> Vec<String> {
    build_slices(inventory, config, 1)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .map(|d| d.name)
        .collect()
}

/// What the kubelet hears of `device`.
fn heard(inventory: &Inventory, config: &SliceConfig, device: &str) -> (HealthStatus, String) {
    let report = report(inventory, config, 1_700_000_000, 180);
    let found = report
        .devices
        .into_iter()
        .find(|d| d.device_name == device)
        .unwrap_or_else(|| panic!("{device} is not reported"));
    assert!(found.message.chars().count() <= 1024);
    (found.status, found.message)
}

fn healthy(inventory: &Inventory, device: &str) {
    for informational in [false, true] {
        let config = config(informational);
        assert_eq!(taints(inventory, &config, device), Vec::<String>::new());
        assert_eq!(
            heard(inventory, &config, device),
            (HealthStatus::Healthy, String::new())
        );
    }
}

#[test]
fn a_link_going_down_taints_its_nic_with_effect_none_and_is_reported_until_it_is_back() {
    let tree = Tree::new("xeon");
    let mut health = Health::default();
    let nic = "nic-0000-3b-00-0";
    healthy(&tree.read(&mut health), nic);

    tree.write("sys/class/net/ens1f0/operstate", "down");
    tree.write("sys/class/net/ens1f0/carrier", "0");
    let inventory = tree.read(&mut health);
    // 1.35 and later: the informational effect, which keeps no claim away.
    assert_eq!(
        taints(&inventory, &config(true), nic),
        ["hal.dra.dev/unhealthy=link-down:None"]
    );
    // A driver name in capitals (accepted: the API server checks it lower-cased) keys its taint in
    // lower case, as a taint key must be.
    let mut capitals = config(true);
    capitals.driver_name = "HAL.dra.dev".into();
    assert_eq!(
        taints(&inventory, &capitals, nic),
        ["hal.dra.dev/unhealthy=link-down:None"]
    );
    // 1.34 refuses the effect: no taint, the health stream alone says it.
    assert_eq!(
        taints(&inventory, &config(false), nic),
        Vec::<String>::new()
    );
    for informational in [false, true] {
        let (status, message) = heard(&inventory, &config(informational), nic);
        assert_eq!(status, HealthStatus::Unhealthy);
        assert_eq!(
            message,
            "link down on ens1f0 (operstate down, carrier 0); usable again when the link comes back"
        );
    }
    // The other functions, its VFs included, are fine.
    healthy(&inventory, "nic-0000-3b-01-0");
    // The effect `None` is for Kubernetes 1.35 and later.
    let slices = build_slices(&inventory, &config(true), 1);
    assert_eq!(
        dra_kubelet_plugin::slices::validate_pool(
            &slices,
            dra_kubelet_plugin::slices::KubeVersion::V1_35
        ),
        []
    );

    // The same problem on the next read keeps its time: the slice does not change.
    let again = tree.read(&mut health);
    assert_eq!(
        build_slices(&again, &config(true), 1),
        build_slices(&inventory, &config(true), 1)
    );

    tree.write("sys/class/net/ens1f0/operstate", "up");
    tree.write("sys/class/net/ens1f0/carrier", "1");
    healthy(&tree.read(&mut health), nic);

    // An interface nobody brought up (flags without IFF_UP) says nothing about its link.
    tree.write("sys/class/net/ens1f0/flags", "0x1002");
    tree.write("sys/class/net/ens1f0/operstate", "down");
    tree.write("sys/class/net/ens1f0/carrier", "");
    healthy(&tree.read(&mut health), nic);
}

#[test]
fn an_rdma_port_not_active_is_degraded_and_healthy_again_when_active() {
    let tree = Tree::new("gb300");
    let mut health = Health::default();
    let device = "rdma-0101-00-00-0";
    healthy(&tree.read(&mut health), device);

    // Cable in, no subnet manager yet.
    tree.write("sys/class/infiniband/mlx5_0/ports/1/state", "2: INIT");
    tree.write(
        "sys/class/infiniband/mlx5_0/ports/1/phys_state",
        "5: LinkUp",
    );
    let inventory = tree.read(&mut health);
    assert_eq!(
        taints(&inventory, &config(true), device),
        ["hal.dra.dev/unhealthy=port-init:None"]
    );
    assert_eq!(
        taints(&inventory, &config(false), device),
        Vec::<String>::new()
    );
    assert_eq!(
        heard(&inventory, &config(false), device),
        (
            HealthStatus::Unhealthy,
            "RDMA device mlx5_0 port 1 is INIT (phys_state LinkUp): the link is up and no subnet manager has made the port ACTIVE yet".to_owned()
        )
    );
    healthy(&inventory, "rdma-0102-00-00-0");

    // Cable out.
    tree.write("sys/class/infiniband/mlx5_0/ports/1/state", "1: DOWN");
    tree.write(
        "sys/class/infiniband/mlx5_0/ports/1/phys_state",
        "2: Polling",
    );
    let inventory = tree.read(&mut health);
    assert_eq!(
        taints(&inventory, &config(true), device),
        ["hal.dra.dev/unhealthy=port-down:None"]
    );
    let (status, message) = heard(&inventory, &config(true), device);
    assert_eq!(status, HealthStatus::Unhealthy);
    assert!(
        message.contains("port 1 is DOWN (phys_state Polling)"),
        "{message}"
    );

    tree.write("sys/class/infiniband/mlx5_0/ports/1/state", "4: ACTIVE");
    tree.write(
        "sys/class/infiniband/mlx5_0/ports/1/phys_state",
        "5: LinkUp",
    );
    healthy(&tree.read(&mut health), device);
}

#[test]
fn vfs_gone_with_their_pf_are_missing_after_two_reads_and_healthy_when_back() {
    let tree = Tree::new("xeon");
    let mut health = Health::default();
    let pf = "nic-0000-b1-00-0";
    let vfs = [
        "nic-0000-b1-00-2",
        "nic-0000-b1-00-3",
        "nic-0000-b1-00-4",
        "nic-0000-b1-00-5",
    ];
    let before = tree.read(&mut health);
    let attributes = |inventory: &Inventory, name: &str| {
        build_slices(inventory, &config(true), 1)
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .find(|d| d.name == name)
            .unwrap()
            .attributes
    };
    for device in vfs.iter().chain([&pf]) {
        healthy(&before, device);
    }

    let moved = tree.unplug(&[
        "0000:b1:00.0",
        "0000:b1:00.2",
        "0000:b1:00.3",
        "0000:b1:00.4",
        "0000:b1:00.5",
    ]);
    // One missed read is not a lost device: still published, untainted.
    let once = tree.read(&mut health);
    assert!(
        once.function(hal::PciAddress::parse("0000:b1:00.0").unwrap())
            .is_some()
    );
    for device in vfs.iter().chain([&pf]) {
        healthy(&once, device);
    }
    let twice = tree.read(&mut health);
    for device in vfs.iter().chain([&pf]) {
        for informational in [false, true] {
            assert_eq!(
                taints(&twice, &config(informational), device),
                ["hal.dra.dev/unhealthy=missing:NoSchedule"],
                "{device}"
            );
        }
        let (status, message) = heard(&twice, &config(false), device);
        assert_eq!(status, HealthStatus::Unhealthy);
        assert!(
            message.starts_with("the network function was seen and is gone from the machine"),
            "{message}"
        );
    }
    // The last-known view: same PCI and RDMA attributes (the RDMA device of a VF went with it).
    assert_eq!(
        attributes(&twice, "nic-0000-b1-00-2").unwrap()["rdmaDevice"],
        attributes(&before, "nic-0000-b1-00-2").unwrap()["rdmaDevice"]
    );
    assert_eq!(
        attributes(&twice, pf).unwrap()["ifName"],
        attributes(&before, pf).unwrap()["ifName"]
    );

    tree.replug(moved);
    let back = tree.read(&mut health);
    for device in vfs.iter().chain([&pf]) {
        healthy(&back, device);
    }
    assert!(back.health.is_empty(), "{:?}", back.health);
}

#[test]
fn vfs_removed_by_a_lower_sriov_numvfs_are_forgotten_and_published_again_when_back() {
    let tree = Tree::new("xeon");
    let machine = hal_mock::by_name(tree.name).unwrap();
    let kernel = machine.kernel(tree.root());
    let numvfs = fs::canonicalize(tree.root().join("sys/bus/pci/devices/0000:3b:00.0"))
        .unwrap()
        .join("sriov_numvfs");
    let mut health = Health::default();
    let vf = "nic-0000-3b-01-0";
    healthy(&tree.read(&mut health), vf);
    hal::AttributeWriter::write_attribute(&kernel, &numvfs, "0").unwrap();
    // One missed read changes nothing.
    healthy(&tree.read(&mut health), vf);
    // The PF is still there: its VFs were removed on purpose, not lost; from the second read without
    // them they are forgotten, not missing.
    for _ in 0..2 {
        let gone = tree.read(&mut health);
        let names = published(&gone, &config(false));
        assert!(!names.iter().any(|n| n == vf), "{names:?}");
        assert!(gone.health.is_empty(), "{:?}", gone.health);
        healthy(&gone, "nic-0000-3b-00-0");
    }
    hal::AttributeWriter::write_attribute(&kernel, &numvfs, "8").unwrap();
    let back = tree.read(&mut health);
    healthy(&back, vf);
    assert!(back.health.is_empty(), "{:?}", back.health);
}

/// The same when the PF is withheld from publishing (the node's own NIC, whose VFs are published):
/// it is still on the node, so its VFs were removed on purpose.
#[test]
fn vfs_of_a_withheld_pf_removed_by_a_lower_sriov_numvfs_are_forgotten() {
    let tree = Tree::new("xeon");
    let machine = hal_mock::by_name(tree.name).unwrap();
    let kernel = machine.kernel(tree.root());
    let address = "0000:3b:00.0";
    let numvfs = fs::canonicalize(tree.root().join(format!("sys/bus/pci/devices/{address}")))
        .unwrap()
        .join("sriov_numvfs");
    let pf = hal::PciAddress::parse(address).unwrap();
    let read = |health: &mut Health| {
        let mut inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(tree.root()), None);
        // As the plugin's guard does (`podnet::withhold`): out of `pci`, into `withheld`.
        let at = inventory.pci.iter().position(|f| f.address == pf).unwrap();
        let function = inventory.machine.pci.remove(at);
        inventory.withheld.push(function);
        health.apply(&mut inventory);
        inventory
    };
    let mut health = Health::default();
    let vf = "nic-0000-3b-01-0";
    healthy(&read(&mut health), vf);
    hal::AttributeWriter::write_attribute(&kernel, &numvfs, "0").unwrap();
    read(&mut health);
    for _ in 0..2 {
        let gone = read(&mut health);
        assert!(gone.health.is_empty(), "{:?}", gone.health);
    }
}

/// The same for an SR-IOV GPU's VFs (published as GPUs): removed with a lower `sriov_numvfs` (the
/// last partition released, an operator) while the GPU stays, they are forgotten, not missing.
#[test]
fn gpu_vfs_removed_by_a_lower_sriov_numvfs_are_forgotten() {
    let tree = Tree::new("i915");
    let machine = hal_mock::by_name(tree.name).unwrap();
    let kernel = machine.kernel(tree.root());
    let numvfs = fs::canonicalize(tree.root().join("sys/bus/pci/devices/0000:4d:00.0"))
        .unwrap()
        .join("sriov_numvfs");
    let mut health = Health::default();
    let before = published(&tree.read(&mut health), &config(false));
    hal::AttributeWriter::write_attribute(&kernel, &numvfs, "2").unwrap();
    let with_vfs = published(&tree.read(&mut health), &config(false));
    let vfs: Vec<&String> = with_vfs.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(vfs.len(), 2, "{with_vfs:?}");
    hal::AttributeWriter::write_attribute(&kernel, &numvfs, "0").unwrap();
    tree.read(&mut health);
    for _ in 0..2 {
        let gone = tree.read(&mut health);
        assert_eq!(published(&gone, &config(false)), before);
        assert!(gone.health.is_empty(), "{:?}", gone.health);
    }
}

#[test]
fn a_cpu_taken_offline_stays_published_tainted_and_is_healthy_online_again() {
    let tree = Tree::new("xeon");
    let mut health = Health::default();
    let mut individual = config(true);
    individual.cpu_mode = CpuMode::Individual;
    let seen = tree.read(&mut health);
    let view = taints(&seen, &individual, "cpu-5");
    assert_eq!(view, Vec::<String>::new());
    let group_of_5 = format!(
        "cpus-numa-{}",
        seen.cpu
            .as_ref()
            .unwrap()
            .cpu(5)
            .unwrap()
            .numa_node
            .unwrap()
            .id()
    );
    let capacity = |inventory: &Inventory| {
        build_slices(inventory, &config(true), 1)
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .find(|d| d.name == group_of_5)
            .unwrap()
            .capacity
            .unwrap()["cpu"]
            .value
            .0
            .clone()
    };
    let online_capacity = capacity(&seen);

    tree.set_cpu_online(5, false);
    let offline = tree.read(&mut health);
    // Individual CPUs: still published (its last-known topology), NoSchedule, refused by Prepare.
    for informational in [false, true] {
        let mut config = individual.clone();
        config.informational_taints = informational;
        assert_eq!(
            taints(&offline, &config, "cpu-5"),
            ["hal.dra.dev/unhealthy=offline:NoSchedule"]
        );
    }
    let (status, message) = heard(&offline, &individual, "cpu-5");
    assert_eq!(status, HealthStatus::Unhealthy);
    assert_eq!(
        message,
        "CPU 5 was online and is offline now (cpu5/online is 0)"
    );
    assert!(offline.health[&DeviceKey::Cpu(5)].refuses_prepare());
    assert!(
        !offline.cpu.as_ref().unwrap().online().contains(5),
        "not given to containers"
    );
    // A group: degraded (one CPU fewer in its capacity), informational on 1.35+.
    assert_eq!(
        taints(&offline, &config(true), &group_of_5),
        ["hal.dra.dev/unhealthy=cpus-offline:None"]
    );
    assert_eq!(
        taints(&offline, &config(false), &group_of_5),
        Vec::<String>::new()
    );
    let (status, message) = heard(&offline, &config(false), &group_of_5);
    assert_eq!(status, HealthStatus::Unhealthy);
    assert!(
        message.starts_with("CPUs 5 of this group were online and are offline now"),
        "{message}"
    );
    assert_ne!(capacity(&offline), online_capacity);

    tree.set_cpu_online(5, true);
    let online = tree.read(&mut health);
    assert_eq!(taints(&online, &individual, "cpu-5"), Vec::<String>::new());
    assert_eq!(
        heard(&online, &individual, "cpu-5").0,
        HealthStatus::Healthy
    );
    healthy(&online, &group_of_5);
    assert_eq!(capacity(&online), online_capacity);
}

#[test]
fn a_cpu_offline_since_the_start_is_not_one_of_ours() {
    let tree = Tree::new("xeon");
    tree.set_cpu_online(5, false);
    let mut health = Health::default();
    let mut individual = config(true);
    individual.cpu_mode = CpuMode::Individual;
    for _ in 0..3 {
        let inventory = tree.read(&mut health);
        assert!(inventory.health.is_empty(), "{:?}", inventory.health);
        let report = report(&inventory, &individual, 0, 180);
        assert!(report.devices.iter().all(|d| d.device_name != "cpu-5"));
        assert!(
            report
                .devices
                .iter()
                .all(|d| d.status == HealthStatus::Healthy)
        );
    }
}
