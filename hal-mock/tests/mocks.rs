//! The mockall mocks of the `hal` traits driving small pieces of logic written against `&dyn Trait`:
//! exact inputs, exact call counts, and backend errors whose kind reaches the caller.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hal::{
    AttributeWriter, CpuSet, CpuTopology, Discovered, Error, ErrorKind, GpuDevice, GpuInfo,
    GpuVendor, InventoryError, LinkLayer, NumaNode, PciAddress, PciDevice, PciFunction, RdmaDevice,
    RdmaInfo, RdmaPort, SriovPf, SriovState, VirtualFunction,
};
use hal_mock::mocks::{
    MockAttributeWriter, MockCpuTopology, MockGpuDevice, MockPciDevice, MockRdmaDevice, MockSriovPf,
};
use mockall::Sequence;
use mockall::predicate::eq;

// ---- the logic under test: small functions over the traits, as a driver would write them ----

/// Names of the IB-only RDMA devices (no netdev: verbs only) whose PCI function is on `node`.
/// Devices with a netdev or without a PCI function are skipped without asking the PCI backend.
fn ib_only_on_node(
    rdma: &dyn RdmaDevice,
    pci: &dyn PciDevice,
    node: NumaNode,
) -> hal::Result<Vec<String>> {
    let mut picked = Vec::new();
    for dev in rdma.rdma_devices()?.items {
        let Some(address) = dev.pci_address else {
            continue;
        };
        if !dev.is_ib_only() {
            continue;
        }
        if let Some(function) = pci.pci_function(address)?
            && function.numa_node == Some(node)
        {
            picked.push(dev.name);
        }
    }
    Ok(picked)
}

/// Online CPUs local to a PCI function: its `local_cpus` restricted to the online CPUs.
fn local_online_cpus(
    cpus: &dyn CpuTopology,
    pci: &dyn PciDevice,
    address: PciAddress,
) -> hal::Result<CpuSet> {
    let function = pci
        .pci_function(address)?
        .ok_or_else(|| Error::InvalidInput(format!("no PCI function {address}")))?;
    let online = cpus.online_cpus()?;
    Ok(match function.local_cpus {
        Some(local) => local.intersection(&online),
        None => online,
    })
}

/// Enables `count` VFs on `pf` and binds each to `driver`; returns the VF addresses.
fn provision_vfs(
    sriov: &dyn SriovPf,
    pf: PciAddress,
    count: u32,
    driver: &str,
) -> hal::Result<Vec<PciAddress>> {
    sriov.set_num_vfs(pf, count)?;
    let state = sriov
        .sriov_state(pf)?
        .ok_or_else(|| Error::InvalidInput(format!("{pf} is not an SR-IOV PF")))?;
    let mut vfs = Vec::new();
    for vf in state.vfs {
        sriov.bind_driver(vf.address, driver)?;
        vfs.push(vf.address);
    }
    Ok(vfs)
}

/// NVIDIA GPUs' addresses, plus how many parts of the machine discovery could not read.
fn nvidia_gpus(gpus: &dyn GpuDevice) -> hal::Result<(Vec<PciAddress>, usize)> {
    let found = gpus.gpus()?;
    let nvidia = found
        .items
        .iter()
        .filter(|g| g.vendor == GpuVendor::Nvidia)
        .map(|g| g.pci_address)
        .collect();
    Ok((nvidia, found.errors.len()))
}

// ---- data helpers ----

fn addr(text: &str) -> PciAddress {
    text.parse().unwrap()
}

fn rdma(name: &str, pci: Option<&str>, netdevs: &[&str]) -> RdmaInfo {
    RdmaInfo {
        name: name.to_owned(),
        pci_address: pci.map(addr),
        node_guid: None,
        node_type: Some("CA".to_owned()),
        ports: vec![RdmaPort {
            state: Some("ACTIVE".to_owned()),
            phys_state: Some("LinkUp".to_owned()),
            link_layer: Some(if netdevs.is_empty() {
                LinkLayer::Infiniband
            } else {
                LinkLayer::Ethernet
            }),
            rate: Some("400 Gb/sec (4X NDR)".to_owned()),
            rate_mbps: Some(400_000),
            ..RdmaPort::new(1)
        }],
        netdevs: netdevs.iter().map(|n| (*n).to_owned()).collect(),
        char_devices: vec![],
        max_qp: None,
    }
}

fn function(address: &str, node: Option<u32>, local_cpus: Option<&str>) -> PciFunction {
    PciFunction {
        address: addr(address),
        vendor_id: 0x15b3,
        device_id: 0x1021,
        subsystem_vendor_id: None,
        subsystem_device_id: None,
        class: 0x020700,
        revision: None,
        vendor_name: None,
        device_name: None,
        driver: Some("mlx5_core".to_owned()),
        driver_override: None,
        numa_node: node.map(NumaNode),
        local_cpus: local_cpus.map(|c| c.parse().unwrap()),
        iommu_group: None,
        physical_slot: None,
        pcie_root: None,
        parent: None,
        physfn: None,
        netdevs: vec![],
        sysfs_path: format!("sys/devices/pci0000:00/{address}"),
    }
}

fn gpu(address: &str, vendor: GpuVendor) -> GpuInfo {
    GpuInfo::new(addr(address), vendor)
}

fn discovered<T>(items: Vec<T>) -> Discovered<T> {
    Discovered {
        items,
        errors: vec![],
    }
}

fn io_error(op: &'static str, path: &str, kind: io::ErrorKind) -> Error {
    Error::Io {
        op,
        path: PathBuf::from(path),
        source: io::Error::from(kind),
    }
}

// ---- tests ----

#[test]
fn picks_ib_only_rdma_devices_on_the_node() {
    let mut rdma_mock = MockRdmaDevice::new();
    rdma_mock.expect_rdma_devices().times(1).returning(|| {
        Ok(discovered(vec![
            rdma("mlx5_0", Some("0000:03:00.0"), &[]), // IB-only, node 0: picked
            rdma("mlx5_1", Some("0000:83:00.0"), &[]), // IB-only, node 1
            rdma("mlx5_2", Some("0000:04:00.0"), &["ens4"]), // RoCE on node 0: not IB-only
            rdma("mlx5_3", Some("0000:05:00.0"), &[]), // IB-only, node 0: picked
            rdma("mlx5_4", Some("0000:06:00.0"), &[]), // IB-only, function vanished
            rdma("rxe0", None, &[]),                   // soft-RoCE: no PCI function
        ]))
    });

    let mut pci = MockPciDevice::new();
    for (address, node) in [
        ("0000:03:00.0", Some(0)),
        ("0000:83:00.0", Some(1)),
        ("0000:05:00.0", Some(0)),
    ] {
        pci.expect_pci_function()
            .with(eq(addr(address)))
            .times(1)
            .returning(move |_| Ok(Some(function(address, node, None))));
    }
    pci.expect_pci_function()
        .with(eq(addr("0000:06:00.0")))
        .times(1)
        .returning(|_| Ok(None));
    // The RoCE device and the soft-RoCE device must not reach the PCI backend, and nothing may scan
    // every function.
    pci.expect_pci_function()
        .with(eq(addr("0000:04:00.0")))
        .never();
    pci.expect_pci_functions().never();

    let picked = ib_only_on_node(&rdma_mock, &pci, NumaNode(0)).unwrap();
    assert_eq!(picked, ["mlx5_0", "mlx5_3"]);
}

#[test]
fn no_rdma_devices_means_no_pci_lookups() {
    let mut rdma_mock = MockRdmaDevice::new();
    rdma_mock
        .expect_rdma_devices()
        .times(1)
        .returning(|| Ok(Discovered::default()));
    let mut pci = MockPciDevice::new();
    pci.expect_pci_function().never();

    assert!(
        ib_only_on_node(&rdma_mock, &pci, NumaNode(1))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn pci_backend_error_propagates_with_its_kind_and_path() {
    let mut rdma_mock = MockRdmaDevice::new();
    rdma_mock.expect_rdma_devices().times(1).returning(|| {
        Ok(discovered(vec![
            rdma("mlx5_0", Some("0000:03:00.0"), &[]),
            rdma("mlx5_1", Some("0000:83:00.0"), &[]),
        ]))
    });
    let mut pci = MockPciDevice::new();
    pci.expect_pci_function()
        .with(eq(addr("0000:03:00.0")))
        .times(1)
        .returning(|_| {
            Err(io_error(
                "read",
                "/sys/bus/pci/devices/0000:03:00.0/numa_node",
                io::ErrorKind::PermissionDenied,
            ))
        });
    // The first error stops the scan.
    pci.expect_pci_function()
        .with(eq(addr("0000:83:00.0")))
        .never();

    let err = ib_only_on_node(&rdma_mock, &pci, NumaNode(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(
        err.path(),
        Some(Path::new("/sys/bus/pci/devices/0000:03:00.0/numa_node"))
    );
    assert!(
        err.to_string()
            .starts_with("failed to read /sys/bus/pci/devices/0000:03:00.0")
    );
}

#[test]
fn rdma_backend_error_propagates_before_any_pci_lookup() {
    let mut rdma_mock = MockRdmaDevice::new();
    rdma_mock
        .expect_rdma_devices()
        .times(1)
        .returning(|| Err(Error::Unsupported("no RDMA subsystem".to_owned())));
    let mut pci = MockPciDevice::new();
    pci.expect_pci_function().never();

    let err = ib_only_on_node(&rdma_mock, &pci, NumaNode(0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(err.path(), None);
}

#[test]
fn local_cpus_are_restricted_to_online_cpus() {
    let mut pci = MockPciDevice::new();
    pci.expect_pci_function()
        .with(eq(addr("0000:03:00.0")))
        .times(1)
        .returning(|_| Ok(Some(function("0000:03:00.0", Some(0), Some("0-15")))));
    let mut cpus = MockCpuTopology::new();
    // The provided `online_cpus` is mocked itself: the full inventory is never read.
    cpus.expect_online_cpus()
        .times(1)
        .returning(|| Ok("0-7,12,16-31".parse().unwrap()));
    cpus.expect_cpu_inventory().never();

    let local = local_online_cpus(&cpus, &pci, addr("0000:03:00.0")).unwrap();
    assert_eq!(local.to_cpulist(), "0-7,12");
}

#[test]
fn missing_function_is_invalid_input_and_skips_the_cpu_backend() {
    let mut pci = MockPciDevice::new();
    pci.expect_pci_function().times(1).returning(|_| Ok(None));
    let mut cpus = MockCpuTopology::new();
    cpus.expect_online_cpus().never();

    let err = local_online_cpus(&cpus, &pci, addr("0000:99:00.0")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("0000:99:00.0"));
}

#[test]
fn provisioning_sets_the_count_then_binds_every_vf_in_order() {
    let pf = addr("0000:3b:00.0");
    let vf0 = addr("0000:3b:00.2");
    let vf1 = addr("0000:3b:00.3");
    let mut seq = Sequence::new();
    let mut sriov = MockSriovPf::new();
    sriov
        .expect_set_num_vfs()
        .with(eq(pf), eq(2))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    sriov
        .expect_sriov_state()
        .with(eq(pf))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |pf| {
            Ok(Some(SriovState {
                pf,
                total_vfs: 8,
                num_vfs: 2,
                drivers_autoprobe: Some(false),
                vf_device_id: Some(0x101e),
                vfs: vec![
                    VirtualFunction {
                        index: 0,
                        address: vf0,
                    },
                    VirtualFunction {
                        index: 1,
                        address: vf1,
                    },
                ],
            }))
        });
    for vf in [vf0, vf1] {
        sriov
            .expect_bind_driver()
            .withf(move |function, driver| *function == vf && driver == "vfio-pci")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
    }
    sriov.expect_sriov_pfs().never();

    let vfs = provision_vfs(&sriov, pf, 2, "vfio-pci").unwrap();
    assert_eq!(vfs, [vf0, vf1]);
}

#[test]
fn busy_refusal_stops_provisioning_with_kind_busy() {
    let pf = addr("0000:3b:00.0");
    let mut sriov = MockSriovPf::new();
    sriov
        .expect_set_num_vfs()
        .with(eq(pf), eq(4))
        .times(1)
        .returning(|_, _| {
            Err(Error::Refused {
                path: PathBuf::from("/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs"),
                value: "4".to_owned(),
                source: io::Error::from_raw_os_error(16), // EBUSY
            })
        });
    sriov.expect_sriov_state().never();
    sriov.expect_bind_driver().never();

    let err = provision_vfs(&sriov, pf, 4, "vfio-pci").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.path().unwrap().ends_with("sriov_numvfs"));
}

#[test]
fn gpu_inventory_errors_are_counted_not_fatal() {
    let mut gpus = MockGpuDevice::new();
    gpus.expect_gpus().times(1).returning(|| {
        Ok(Discovered {
            items: vec![
                gpu("0000:00:02.0", GpuVendor::Intel),
                gpu("0000:18:00.0", GpuVendor::Nvidia),
                gpu("0000:9a:00.0", GpuVendor::Nvidia),
            ],
            errors: vec![InventoryError::from(&io_error(
                "read",
                "/sys/bus/pci/devices/0000:c3:00.0/vendor",
                io::ErrorKind::PermissionDenied,
            ))],
        })
    });

    let (nvidia, errors) = nvidia_gpus(&gpus).unwrap();
    assert_eq!(nvidia, [addr("0000:18:00.0"), addr("0000:9a:00.0")]);
    assert_eq!(errors, 1);
}

#[test]
fn attribute_writer_mock_reports_kernel_errors() {
    let mut writer = MockAttributeWriter::new();
    writer
        .expect_write_attribute()
        .withf(|path, value| path.ends_with("sriov_numvfs") && value == "0")
        .times(1)
        .returning(|_, _| Ok(()));
    writer
        .expect_write_attribute()
        .withf(|path, _| path.ends_with("bind"))
        .times(1)
        .returning(|_, _| Err(io::Error::from_raw_os_error(19))); // ENODEV

    let w: &dyn AttributeWriter = &writer;
    w.write_attribute(
        Path::new("/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs"),
        "0",
    )
    .unwrap();
    let err = w
        .write_attribute(
            Path::new("/sys/bus/pci/drivers/vfio-pci/bind"),
            "0000:3b:00.2",
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(19));
}

#[test]
fn mocks_are_shareable_trait_objects() {
    // The traits are `Send + Sync`; the mocks go wherever a backend does (`Arc<dyn Trait>` across
    // threads).
    let mut gpus = MockGpuDevice::new();
    gpus.expect_gpus()
        .times(2)
        .returning(|| Ok(discovered(vec![gpu("0000:18:00.0", GpuVendor::Nvidia)])));
    let shared: Arc<dyn GpuDevice> = Arc::new(gpus);
    let other = Arc::clone(&shared);
    let handle = std::thread::spawn(move || other.gpus().unwrap().items.len());
    assert_eq!(handle.join().unwrap(), 1);
    assert_eq!(shared.gpus().unwrap().items.len(), 1);
}

#[test]
#[should_panic(expected = "No matching expectation found")]
fn provided_methods_do_not_fall_back_to_the_default_body() {
    // `pci_function` has a default body over `pci_functions`, but the mock mocks it too: a call with
    // no expectation fails the test instead of silently scanning the list.
    let mut pci = MockPciDevice::new();
    pci.expect_pci_functions()
        .returning(|| Ok(discovered(vec![function("0000:03:00.0", Some(0), None)])));
    let _ = pci.pci_function(addr("0000:03:00.0"));
}
