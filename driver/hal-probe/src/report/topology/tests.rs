use super::*;
use backends::{SysfsGpu, SysfsPci, SysfsRdma, SysfsRoot};
use hal::{GpuDevice, PciDevice, RdmaDevice};

fn fixture_topology(name: &str) -> Topology {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let root = SysfsRoot::new(machine.root());
    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap().items;
    let gpus = SysfsGpu::new(root.clone()).gpus().unwrap().items;
    let rdma = SysfsRdma::new(root).rdma_devices().unwrap().items;
    Topology::build(&pci, &gpus, &rdma)
}

fn names(topology: &Topology) -> Vec<String> {
    topology
        .devices
        .iter()
        .map(|d| format!("{}={}", d.label, d.name.as_deref().unwrap_or("-")))
        .collect()
}

/// The row of `label`, as legend names.
fn row(topology: &Topology, label: &str) -> Vec<&'static str> {
    let i = topology
        .devices
        .iter()
        .position(|d| d.label == label)
        .unwrap();
    topology.links[i]
        .iter()
        .map(|l| l.map_or("?", Link::name))
        .collect()
}

#[test]
fn gb300_shows_the_seed_matrix() {
    let t = fixture_topology("gb300");
    assert_eq!(
        names(&t),
        [
            "GPU0=-",
            "GPU1=-",
            "GPU2=-",
            "GPU3=-",
            "NIC0=mlx5_0",
            "NIC1=mlx5_1",
            "NIC2=mlx5_2",
            "NIC3=mlx5_3"
        ]
    );
    //                           GPU0    GPU1    GPU2    GPU3    NIC0    NIC1    NIC2    NIC3
    assert_eq!(
        row(&t, "GPU0"),
        ["X", "NODE", "SYS", "SYS", "NODE", "NODE", "SYS", "SYS"]
    );
    assert_eq!(
        row(&t, "GPU1"),
        ["NODE", "X", "SYS", "SYS", "NODE", "NODE", "SYS", "SYS"]
    );
    assert_eq!(
        row(&t, "GPU2"),
        ["SYS", "SYS", "X", "NODE", "SYS", "SYS", "NODE", "NODE"]
    );
    assert_eq!(
        row(&t, "GPU3"),
        ["SYS", "SYS", "NODE", "X", "SYS", "SYS", "NODE", "NODE"]
    );
    // Each NIC sits on its own VMBUS PCIe root, which the matrix shows.
    assert_eq!(
        t.devices[4].pcie_root.map(|r| r.to_string()).as_deref(),
        Some("pci0101:00")
    );
    for i in 0..t.devices.len() {
        for j in 0..t.devices.len() {
            assert_eq!(t.links[i][j], t.links[j][i], "symmetric");
        }
    }
    let mut text = String::new();
    t.render(&mut text);
    assert!(text.contains("NIC0: mlx5_0 0101:00:00.0"), "{text}");
}

#[test]
fn xeon_pf_and_vfs_share_a_bridge_and_gpus_align_by_numa() {
    let t = fixture_topology("xeon");
    let labels = names(&t);
    // Two GPUs; NICs: the E810 PF, the ConnectX PF and its 4 RDMA VFs (the iavf VFs have no RDMA).
    assert_eq!(labels.len(), 2 + 6, "{labels:?}");
    let nic = |name: &str| {
        t.devices
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
            .unwrap()
            .label
            .clone()
    };
    let link = |a: &str, b: &str| {
        let i = t.devices.iter().position(|d| d.label == a).unwrap();
        let j = t.devices.iter().position(|d| d.label == b).unwrap();
        t.links[i][j]
    };
    assert_eq!(link(&nic("mlx5_0"), &nic("mlx5_1")), Some(Link::Pix));
    assert_eq!(link("GPU0", &nic("ens1f0")), Some(Link::Node));
    assert_eq!(link("GPU0", &nic("mlx5_0")), Some(Link::Sys));
    // The second H100 hangs off another root port of the ConnectX's host bridge.
    assert_eq!(link("GPU1", &nic("mlx5_0")), Some(Link::Phb));
    assert_eq!(link("GPU1", &nic("mlx5_2")), Some(Link::Phb));
}

fn function(address: &str, parent: Option<&str>, root: &str, numa: Option<u32>) -> PciFunction {
    PciFunction {
        address: PciAddress::parse(address).unwrap(),
        vendor_id: 0x15b3,
        device_id: 0x1021,
        subsystem_vendor_id: None,
        subsystem_device_id: None,
        class: 0x020000,
        revision: None,
        vendor_name: None,
        device_name: None,
        driver: None,
        driver_override: None,
        numa_node: numa.map(NumaNode),
        local_cpus: None,
        iommu_group: None,
        physical_slot: None,
        pcie_root: Some(PcieRoot::parse(root).unwrap()),
        parent: parent.map(|p| PciAddress::parse(p).unwrap()),
        physfn: None,
        netdevs: Vec::new(),
        sysfs_path: String::new(),
    }
}

#[test]
fn bridges_decide_pix_pxb_and_phb() {
    // A switch under root port 00:01.0: upstream 01:00.0, downstream 02:00.0 and 02:01.0.
    let mut functions = vec![
        function("0000:00:01.0", None, "pci0000:00", Some(0)),
        function("0000:01:00.0", Some("0000:00:01.0"), "pci0000:00", Some(0)),
        function("0000:02:00.0", Some("0000:01:00.0"), "pci0000:00", Some(0)),
        function("0000:02:01.0", Some("0000:01:00.0"), "pci0000:00", Some(0)),
        function("0000:03:00.0", Some("0000:02:00.0"), "pci0000:00", Some(0)),
        function("0000:03:00.1", Some("0000:02:00.0"), "pci0000:00", Some(0)),
        function("0000:04:00.0", Some("0000:02:01.0"), "pci0000:00", Some(0)),
        function("0000:00:02.0", None, "pci0000:00", Some(0)),
        function("0000:05:00.0", Some("0000:00:02.0"), "pci0000:00", Some(0)),
        function("0001:00:00.0", None, "pci0001:00", None),
    ];
    for f in functions.iter_mut().take(5) {
        f.class = 0x060400;
    }
    let by: BTreeMap<PciAddress, &PciFunction> = functions.iter().map(|f| (f.address, f)).collect();
    let at = |a: &str| {
        endpoint(
            a.into(),
            EndpointKind::Nic,
            None,
            PciAddress::parse(a).unwrap(),
            &by,
        )
    };
    let l = |a: &str, b: &str| link(&at(a), &at(b), &by);
    assert_eq!(l("0000:03:00.0", "0000:03:00.0"), Some(Link::Same));
    assert_eq!(l("0000:03:00.0", "0000:03:00.1"), Some(Link::Pix));
    assert_eq!(l("0000:03:00.0", "0000:04:00.0"), Some(Link::Pxb));
    assert_eq!(l("0000:03:00.0", "0000:05:00.0"), Some(Link::Phb));
    assert_eq!(l("0000:03:00.0", "0001:00:00.0"), None, "unknown NUMA node");
}

#[test]
fn functions_behind_one_switch_are_pxb_on_a_fixture() {
    // The i915 fixture's first Flex 170 sits behind a switch: root port 4a:02.0, upstream port
    // 4b:00.0, downstream port 4c:01.0. A NIC on another downstream port of that switch shares the
    // root port and the upstream port with the GPU.
    let mut machine = hal_mock::by_name("i915").unwrap();
    let gpu = machine
        .pci
        .iter()
        .find(|f| f.address.to_string() == "0000:4d:00.0")
        .unwrap()
        .clone();
    let port = PciAddress::parse("0000:4c:02.0").unwrap();
    machine.bridges.push(hal_mock::BridgeSpec {
        address: port,
        vendor: 0x8086,
        device: 0x4fa4,
        driver: Some("pcieport".into()),
    });
    machine.pci.push(hal_mock::PciFunctionSpec {
        address: PciAddress::parse("0000:4e:00.0").unwrap(),
        bridges: vec![gpu.bridges[0], gpu.bridges[1], port],
        vendor: 0x15b3,
        device: 0x101d,
        class: 0x020000,
        netdevs: vec!["ens5np0".into()],
        driver: Some("mlx5_core".into()),
        iommu_group: Some(34),
        sriov: None,
        ..gpu
    });
    let fixture = machine.materialize().unwrap();
    let root = SysfsRoot::new(fixture.root());
    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap().items;
    let gpus = SysfsGpu::new(root.clone()).gpus().unwrap().items;
    let rdma = SysfsRdma::new(root).rdma_devices().unwrap().items;

    // The bridges are functions of their own, as the kernel lists them.
    let bridge = |a: &str| {
        pci.iter()
            .find(|f| f.address.to_string() == a)
            .unwrap_or_else(|| panic!("bridge {a} not listed"))
    };
    for a in [
        "0000:4a:02.0",
        "0000:4b:00.0",
        "0000:4c:01.0",
        "0000:4c:02.0",
        "0000:c7:02.0",
        "0000:00:1c.5",
    ] {
        let b = bridge(a);
        assert_eq!(b.class >> 8, 0x0604, "{a}");
        assert_eq!(b.driver.as_deref(), Some("pcieport"), "{a}");
        assert!(b.iommu_group.is_some(), "{a}");
    }
    // The BMC's PCIe-to-PCI bridge has no port driver.
    assert_eq!(bridge("0000:02:00.0").class >> 8, 0x0604);
    assert_eq!(bridge("0000:02:00.0").driver, None);
    assert_eq!(
        bridge("0000:4c:01.0").parent,
        PciAddress::parse("0000:4b:00.0").ok()
    );
    assert_eq!(bridge("0000:4c:01.0").numa_node, Some(NumaNode(0)));

    let t = Topology::build(&pci, &gpus, &rdma);
    assert_eq!(names(&t), ["GPU0=-", "GPU1=-", "GPU2=-", "NIC0=ens5np0"]);
    // GPU1 is the Flex at 4d:00.0; GPU2 the one on the other socket.
    assert_eq!(t.devices[1].pci_address.to_string(), "0000:4d:00.0");
    assert_eq!(row(&t, "NIC0"), ["NODE", "PXB", "SYS", "X"]);
}
