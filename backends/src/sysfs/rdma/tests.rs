use super::*;
use crate::sysfs::test_tree::{link, write};
use proptest::prelude::*;
use std::fs;

fn devices(root: &Path) -> (BTreeMap<String, RdmaInfo>, Vec<hal::InventoryError>) {
    let found = SysfsRdma::new(SysfsRoot::new(root)).rdma_devices().unwrap();
    let names: Vec<&String> = found.items.iter().map(|d| &d.name).collect();
    assert!(names.is_sorted(), "{names:?}");
    (
        found
            .items
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect(),
        found.errors,
    )
}

fn paths(device: &RdmaInfo) -> Vec<(&str, Option<(u32, u32)>)> {
    device
        .char_devices
        .iter()
        .map(|c| (c.path.as_str(), c.dev))
        .collect()
}

/// An RDMA device under `sys/devices/<parent>` with one port, its class link, verbs and MAD nodes.
fn device(root: &Path, parent: &str, name: &str, index: u32, link_layer: &str) {
    let dir = format!("sys/devices/{parent}/infiniband/{name}");
    write(root, &format!("{dir}/node_type"), "1: CA\n");
    write(root, &format!("{dir}/ports/1/state"), "4: ACTIVE\n");
    write(root, &format!("{dir}/ports/1/phys_state"), "5: LinkUp\n");
    write(
        root,
        &format!("{dir}/ports/1/rate"),
        "200 Gb/sec (4X HDR)\n",
    );
    write(
        root,
        &format!("{dir}/ports/1/link_layer"),
        &format!("{link_layer}\n"),
    );
    link(
        root,
        &format!("{CLASS}/{name}"),
        &format!("../../devices/{parent}/infiniband/{name}"),
    );
    for (class, node, minor) in [
        ("infiniband_verbs", format!("uverbs{index}"), 192 + index),
        ("infiniband_mad", format!("umad{index}"), index),
        ("infiniband_mad", format!("issm{index}"), 64 + index),
    ] {
        let entry = format!("sys/devices/{parent}/{class}/{node}");
        write(root, &format!("{entry}/ibdev"), &format!("{name}\n"));
        write(root, &format!("{entry}/dev"), &format!("231:{minor}\n"));
        link(
            root,
            &format!("sys/class/{class}/{node}"),
            &format!("../../devices/{parent}/{class}/{node}"),
        );
    }
}

#[test]
fn gb300_ib_only_vfs_on_vmbus_get_exactly_their_nodes() {
    let gb300 = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
    let (by, errors) = devices(gb300.root());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]
    );
    for (i, (name, device)) in by.iter().enumerate() {
        let i = i as u32;
        assert_eq!(
            device.pci_address,
            Some(PciAddress::parse(&format!("010{}:00:00.0", i + 1)).unwrap()),
            "{name}"
        );
        assert!(device.is_ib_only(), "{name}: {:?}", device.netdevs);
        assert_eq!(device.node_type.as_deref(), Some("CA"));
        assert_eq!(
            paths(device),
            [
                (
                    format!("/dev/infiniband/uverbs{i}").as_str(),
                    Some((231, 192 + i))
                ),
                (format!("/dev/infiniband/umad{i}").as_str(), Some((231, i))),
                (
                    format!("/dev/infiniband/issm{i}").as_str(),
                    Some((231, 64 + i))
                ),
                ("/dev/infiniband/rdma_cm", None),
            ],
            "{name}"
        );
        let [port] = device.ports.as_slice() else {
            panic!("{name}: {:?}", device.ports)
        };
        assert_eq!(port.number, 1);
        assert_eq!(port.state.as_deref(), Some("ACTIVE"));
        assert_eq!(port.phys_state.as_deref(), Some("LinkUp"));
        assert_eq!(port.link_layer, Some(LinkLayer::Infiniband));
        assert_eq!(port.rate.as_deref(), Some("800 Gb/sec (8X NDR)"));
        assert_eq!(port.rate_mbps, Some(800_000));
    }
}

#[test]
fn xeon_roce_pf_and_vfs_have_their_netdevs() {
    let xeon = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let (by, errors) = devices(xeon.root());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(by.len(), 5, "the PF and 4 VFs: {:?}", by.keys());
    let pf = &by["mlx5_0"];
    assert_eq!(pf.netdevs, ["ens2f0np0"]);
    assert_eq!(pf.ports[0].link_layer, Some(LinkLayer::Ethernet));
    assert_eq!(pf.ports[0].rate_mbps, Some(100_000));
    for device in by.values() {
        assert!(!device.is_ib_only(), "{}", device.name);
        assert_eq!(device.char_devices.len(), 4, "{}", device.name);
    }
    assert_eq!(by["mlx5_1"].netdevs, ["ens2f0v0"]);
}

#[test]
fn matching_is_exact_and_soft_devices_have_no_pci_function() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    device(
        root,
        "pci0000:00/0000:00:01.0/0000:01:00.0",
        "mlx5_1",
        1,
        "InfiniBand",
    );
    device(
        root,
        "pci0000:00/0000:00:02.0/0000:02:00.0",
        "mlx5_10",
        10,
        "InfiniBand",
    );
    device(root, "virtual/net/eth0", "rxe0", 2, "Ethernet");
    write(root, "sys/class/infiniband_mad/abi_version", "5\n");
    write(root, "sys/class/infiniband_verbs/abi_version", "6\n");
    write(root, RDMA_CM_DEV, "10:58\n");
    // IPoIB on the mlx5_1 function.
    fs::create_dir_all(root.join("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/net/ib0"))
        .unwrap();
    let (by, errors) = devices(root);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        paths(&by["mlx5_1"]),
        [
            ("/dev/infiniband/uverbs1", Some((231, 193))),
            ("/dev/infiniband/umad1", Some((231, 1))),
            ("/dev/infiniband/issm1", Some((231, 65))),
            ("/dev/infiniband/rdma_cm", Some((10, 58))),
        ]
    );
    assert_eq!(
        paths(&by["mlx5_10"]),
        [
            ("/dev/infiniband/uverbs10", Some((231, 202))),
            ("/dev/infiniband/umad10", Some((231, 10))),
            ("/dev/infiniband/issm10", Some((231, 74))),
            ("/dev/infiniband/rdma_cm", Some((10, 58))),
        ]
    );
    assert_eq!(by["mlx5_1"].netdevs, ["ib0"]);
    assert!(by["mlx5_10"].is_ib_only());
    assert_eq!(
        by["mlx5_10"].pci_address,
        Some(PciAddress::parse("0000:02:00.0").unwrap())
    );
    assert_eq!(by["rxe0"].pci_address, None);
    assert_eq!(by["rxe0"].ports[0].link_layer, Some(LinkLayer::Ethernet));
}

/// An mlx5 scalable function (SF) is an auxiliary device on its PF with an RDMA device, netdev and
/// verbs nodes of its own: they are not the PF's (the PF's NIC must not get the SF's uverbs).
#[test]
fn a_scalable_functions_rdma_device_is_not_its_pfs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pf = "pci0000:00/0000:00:01.0/0000:01:00.0";
    device(root, pf, "mlx5_0", 0, "Ethernet");
    device(
        root,
        &format!("{pf}/mlx5_core.sf.2"),
        "mlx5_2",
        2,
        "Ethernet",
    );
    for netdev in ["net/ens1f0np0", "mlx5_core.sf.2/net/enp1s0f0s2"] {
        fs::create_dir_all(root.join(format!("sys/devices/{pf}/{netdev}"))).unwrap();
    }
    let (by, errors) = devices(root);
    assert!(errors.is_empty(), "{errors:?}");
    let pf_address = Some(PciAddress::parse("0000:01:00.0").unwrap());
    assert_eq!(by["mlx5_0"].pci_address, pf_address);
    assert_eq!(by["mlx5_0"].netdevs, ["ens1f0np0"]);
    assert_eq!(by["mlx5_2"].pci_address, None, "{:?}", by["mlx5_2"]);
    assert!(
        by["mlx5_2"].netdevs.is_empty(),
        "{:?}",
        by["mlx5_2"].netdevs
    );
    let sf_entry = root.join(CLASS).join("mlx5_2");
    fs::remove_file(&sf_entry).unwrap();
    fs::create_dir_all(&sf_entry).unwrap();
    link(
        root,
        &format!("{CLASS}/mlx5_2/device"),
        &format!("../../../devices/{pf}/mlx5_core.sf.2"),
    );
    let pf_entry = root.join(CLASS).join("mlx5_0");
    fs::remove_file(&pf_entry).unwrap();
    fs::create_dir_all(&pf_entry).unwrap();
    link(
        root,
        &format!("{CLASS}/mlx5_0/device"),
        &format!("../../../devices/{pf}"),
    );
    let (by, _) = devices(root);
    assert_eq!(by["mlx5_0"].pci_address, pf_address);
    assert_eq!(by["mlx5_2"].pci_address, None);
}

#[test]
fn bad_values_are_errors_naming_the_file_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    device(
        root,
        "pci0000:00/0000:00:01.0/0000:01:00.0",
        "mlx5_0",
        0,
        "InfiniBand",
    );
    let port = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/mlx5_0/ports/1";
    write(root, &format!("{port}/rate"), "fast\n");
    write(
        root,
        "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband_verbs/uverbs0/dev",
        "231-192\n",
    );
    let (by, errors) = devices(root);
    let device = &by["mlx5_0"];
    assert_eq!(device.ports[0].rate.as_deref(), Some("fast"));
    assert_eq!(device.ports[0].rate_mbps, None);
    assert_eq!(device.ports[0].state.as_deref(), Some("ACTIVE"));
    assert_eq!(device.char_devices[0].dev, None);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].path.ends_with("uverbs0/dev"), "{errors:?}");
    assert!(errors[1].path.ends_with("ports/1/rate"), "{errors:?}");
}

#[test]
fn no_rdma_stack_is_an_empty_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let (by, errors) = devices(dir.path());
    assert!(by.is_empty() && errors.is_empty());
}

#[test]
fn rates_and_states() {
    for (text, mbps) in [
        ("400 Gb/sec (4X NDR)", 400_000),
        ("800 Gb/sec (8X NDR)", 800_000),
        ("56 Gb/sec (4X FDR)", 56_000),
        ("2.5 Gb/sec (1X SDR)", 2_500),
        ("10 Gb/sec (4X)", 10_000),
        ("25 Gb/sec", 25_000),
        ("13.125 Gb/sec (1X)", 13_125),
    ] {
        assert_eq!(parse_rate_mbps(text).unwrap(), mbps, "{text}");
    }
    for bad in [
        "",
        "Gb/sec",
        "fast",
        "-1 Gb/sec",
        "1.2.3 Gb/sec",
        "100 Mb/sec",
        "1.0625 Gb/sec",
    ] {
        assert!(parse_rate_mbps(bad).is_err(), "{bad}");
    }
    assert_eq!(numbered_name("4: ACTIVE").as_deref(), Some("ACTIVE"));
    assert_eq!(numbered_name("5: LinkUp").as_deref(), Some("LinkUp"));
    assert_eq!(numbered_name("ACTIVE").as_deref(), Some("ACTIVE"));
    assert_eq!(numbered_name("4: "), None);
    assert_eq!(parse_dev("231:192").unwrap(), (231, 192));
    for bad in ["231", ":1", "a:b", "1:2:3", "99999999999:1"] {
        assert!(parse_dev(bad).is_err(), "{bad}");
    }
    assert!(is_numbered("umad12", "umad") && !is_numbered("umad", "umad"));
    assert!(!is_numbered("abi_version", "uverbs"));
}

proptest! {
    #[test]
    fn parsers_never_panic(text in ".{0,40}") {
        let _ = parse_rate_mbps(&text);
        let _ = parse_dev(&text);
        let _ = numbered_name(&text);
    }

    #[test]
    fn whole_rates_round_trip(gbps in 0u64..1_000_000, lanes in 1u8..16) {
        let text = format!("{gbps} Gb/sec ({lanes}X NDR)");
        prop_assert_eq!(parse_rate_mbps(&text).unwrap(), gbps * 1000);
    }
}

#[test]
fn captures_without_char_device_classes_use_the_parent_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    device(
        root,
        "pci0000:40/0000:40:03.0/0000:43:00.0",
        "qib0",
        0,
        "InfiniBand",
    );
    fs::remove_dir_all(root.join("sys/class/infiniband_verbs")).unwrap();
    fs::remove_dir_all(root.join("sys/class/infiniband_mad")).unwrap();
    let (by, errors) = devices(root);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        paths(&by["qib0"]),
        [
            ("/dev/infiniband/uverbs0", Some((231, 192))),
            ("/dev/infiniband/umad0", Some((231, 0))),
            ("/dev/infiniband/issm0", Some((231, 64))),
            ("/dev/infiniband/rdma_cm", None),
        ]
    );
}

#[test]
fn attributes_the_kernel_cannot_show_read_as_absent() {
    let path = Path::new("sys/class/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0");
    let failed = |errno: rustix::io::Errno| {
        Err(hal::Error::Io {
            path: path.to_path_buf(),
            op: "read",
            source: std::io::Error::from_raw_os_error(errno.raw_os_error()),
        })
    };
    use crate::sysfs::attr::unshown_is_none;
    assert_eq!(
        unshown_is_none(failed(rustix::io::Errno::INVAL)).unwrap(),
        None
    );
    assert_eq!(
        unshown_is_none(failed(rustix::io::Errno::NODATA)).unwrap(),
        None
    );
    assert_eq!(
        unshown_is_none(failed(rustix::io::Errno::NOENT)).unwrap(),
        None
    );
    assert!(unshown_is_none(failed(rustix::io::Errno::ACCESS)).is_err());
    assert!(unshown_is_none(failed(rustix::io::Errno::IO)).is_err());
    assert_eq!(
        unshown_is_none(Ok("ib0".into())).unwrap().as_deref(),
        Some("ib0")
    );
}

/// Needs root: bind-mounts the loopback's `speed` (the kernel answers EINVAL, as it does for
/// `gid_attrs/ndevs/0` of an InfiniBand port) over the port's netdev attribute of a built tree.
#[test]
#[ignore = "needs root (bind mount)"]
fn an_infiniband_port_without_a_netdev_is_no_error_needs_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let parent = "pci0000:00/0000:00:01.0/0000:01:00.0";
    device(root, parent, "mlx5_0", 0, "InfiniBand");
    let ndev = format!("sys/devices/{parent}/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0");
    write(root, &ndev, "");
    let target = root.join(&ndev);
    let kernel = Path::new("/sys/class/net/lo/speed");
    assert!(
        fs::read(kernel).is_err_and(|e| e.raw_os_error() == Some(22)),
        "lo/speed answers EINVAL"
    );
    rustix::mount::mount_bind(kernel, &target).expect("bind mount");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(&target);
    let (by, errors) = devices(root);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(by["mlx5_0"].netdevs.is_empty(), "{:?}", by["mlx5_0"]);
    assert_eq!(by["mlx5_0"].ports[0].state.as_deref(), Some("ACTIVE"));
}
