//! The real SR-IOV backend against the emulated kernel: VF creation and removal, the 0-first rule,
//! driver binding and its restoration, and the kernel's refusals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io;
use std::path::Path;
use std::sync::Arc;

use backends::{SysfsPci, SysfsRoot, SysfsSriov};
use hal::{AttributeWriter, ErrorKind, NumaNode, PciAddress, PciDevice, SriovPf};
use hal_mock::{EmulatedKernel, PciFunctionSpec, SriovSpec};

fn addr(text: &str) -> PciAddress {
    PciAddress::parse(text).unwrap()
}

/// An Intel E810 PF (ice) on NUMA 0, as in the xeon fixture: up to 8 VFs of device 0x1889 at
/// routing-id offset 8, autoprobed to iavf.
fn e810(root: &Path) -> Arc<EmulatedKernel> {
    PciFunctionSpec {
        address: addr("0000:3b:00.0"),
        root_dir: "pci0000:3a".into(),
        bridges: vec![addr("0000:3a:00.0")],
        vendor: 0x8086,
        device: 0x1592,
        class: 0x020000,
        numa_node: Some(0),
        local_cpus: "0-55,112-167".parse().unwrap(),
        driver: Some("ice".into()),
        netdevs: vec![],
        iommu_group: Some(20),
        sriov: Some(SriovSpec {
            total_vfs: 8,
            vf_device: 0x1889,
            offset: 8,
            stride: 1,
            autoprobe: true,
            enabled: 0,
            vf_netdevs: vec![],
        }),
    }
    .render(root)
    .unwrap();
    std::fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
    Arc::new(EmulatedKernel::new(root).with_default_driver(0x8086, 0x1889, "iavf"))
}

#[test]
fn creating_vfs_makes_functions_the_pci_backend_sees() {
    let dir = hal_mock::scratch_dir("sriov-").unwrap();
    let kernel = e810(dir.path());
    let sriov = SysfsSriov::with_writer(SysfsRoot::new(dir.path()), kernel.clone());
    sriov.set_num_vfs(addr("0000:3b:00.0"), 4).unwrap();

    let state = sriov.sriov_state(addr("0000:3b:00.0")).unwrap().unwrap();
    assert_eq!(
        (
            state.total_vfs,
            state.num_vfs,
            state.drivers_autoprobe,
            state.vf_device_id
        ),
        (8, 4, Some(true), Some(0x1889))
    );
    let vfs: Vec<String> = state
        .vfs
        .iter()
        .map(|v| format!("{}={}", v.index, v.address))
        .collect();
    assert_eq!(
        vfs,
        [
            "0=0000:3b:01.0",
            "1=0000:3b:01.1",
            "2=0000:3b:01.2",
            "3=0000:3b:01.3"
        ]
    );

    let pci = SysfsPci::new(SysfsRoot::new(dir.path()))
        .pci_functions()
        .unwrap();
    assert!(pci.errors.is_empty(), "{:?}", pci.errors);
    let vf = pci
        .items
        .iter()
        .find(|f| f.address == addr("0000:3b:01.2"))
        .unwrap();
    assert_eq!(vf.physfn, Some(addr("0000:3b:00.0")));
    assert_eq!((vf.vendor_id, vf.device_id), (0x8086, 0x1889));
    assert_eq!(
        vf.driver.as_deref(),
        Some("iavf"),
        "autoprobe bound the default driver"
    );
    assert_eq!(vf.numa_node, Some(NumaNode(0)));
    assert_eq!(vf.pcie_root.unwrap().to_string(), "pci0000:3a");
    let groups: std::collections::BTreeSet<Option<u32>> =
        pci.items.iter().map(|f| f.iommu_group).collect();
    assert_eq!(groups.len(), 5, "every VF has its own IOMMU group");
}

#[test]
fn changing_a_nonzero_count_goes_through_zero() {
    let dir = hal_mock::scratch_dir("sriov-").unwrap();
    let kernel = e810(dir.path());
    let sriov = SysfsSriov::with_writer(SysfsRoot::new(dir.path()), kernel.clone());
    let pf = addr("0000:3b:00.0");
    sriov.set_num_vfs(pf, 4).unwrap();
    sriov.set_num_vfs(pf, 2).unwrap();
    sriov.set_num_vfs(pf, 2).unwrap(); // already there: no write
    let writes: Vec<String> = kernel.writes().iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(writes, ["4", "0", "2"]);
    assert_eq!(sriov.sriov_state(pf).unwrap().unwrap().vfs.len(), 2);
    assert!(
        !dir.path().join("sys/bus/pci/devices/0000:3b:01.3").exists(),
        "removed VFs leave no entry"
    );

    // The kernel itself refuses a direct change between two non-zero counts, and counts above total.
    let numvfs = dir
        .path()
        .join("sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs");
    assert_eq!(
        kernel
            .write_attribute(&numvfs, "3")
            .unwrap_err()
            .raw_os_error(),
        Some(16)
    );
    let too_many = sriov.set_num_vfs(pf, 9).unwrap_err();
    assert_eq!(too_many.kind(), ErrorKind::InvalidInput);
    assert!(too_many.to_string().contains("at most 8"), "{too_many}");
    sriov.set_num_vfs(pf, 0).unwrap();
    assert_eq!(
        SysfsPci::new(SysfsRoot::new(dir.path()))
            .pci_functions()
            .unwrap()
            .items
            .len(),
        1
    );
}

#[test]
fn binding_to_vfio_and_back() {
    let dir = hal_mock::scratch_dir("sriov-").unwrap();
    let kernel = e810(dir.path());
    let sriov = SysfsSriov::with_writer(SysfsRoot::new(dir.path()), kernel.clone());
    sriov.set_num_vfs(addr("0000:3b:00.0"), 1).unwrap();
    let vf = addr("0000:3b:01.0");
    let driver = |root: &Path| {
        let link = root.join("sys/bus/pci/devices/0000:3b:01.0/driver");
        let tree = backends::sysfs::tree::Tree::open(&SysfsRoot::new(root));
        tree.link_name(&link)
    };

    sriov.bind_driver(vf, "vfio-pci").unwrap();
    assert_eq!(driver(dir.path()).as_deref(), Some("vfio-pci"));
    let tail: Vec<(String, String)> = kernel.writes().into_iter().skip(1).collect();
    assert_eq!(
        tail,
        [
            (
                "sys/bus/pci/devices/0000:3b:01.0/driver_override".to_owned(),
                "vfio-pci".to_owned()
            ),
            (
                "sys/bus/pci/devices/0000:3b:01.0/driver/unbind".to_owned(),
                "0000:3b:01.0".to_owned()
            ),
            (
                "sys/bus/pci/drivers_probe".to_owned(),
                "0000:3b:01.0".to_owned()
            ),
        ]
    );
    sriov.bind_driver(vf, "iavf").unwrap();
    assert_eq!(
        driver(dir.path()).as_deref(),
        Some("iavf"),
        "the original driver is restored"
    );

    for bad in ["", "../x", "vfio pci"] {
        assert_eq!(
            sriov.bind_driver(vf, bad).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    let missing = sriov.bind_driver(addr("0000:99:00.0"), "iavf").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(
        sriov.set_num_vfs(vf, 1).unwrap_err().kind(),
        ErrorKind::Unsupported,
        "a VF is not a PF"
    );
}

/// A kernel that refuses every write, as a busy device does.
struct Refusing;

impl AttributeWriter for Refusing {
    fn write_attribute(&self, _: &Path, _: &str) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(16))
    }
}

#[test]
fn kernel_refusals_name_the_attribute() {
    let dir = hal_mock::scratch_dir("sriov-").unwrap();
    e810(dir.path());
    let sriov = SysfsSriov::with_writer(SysfsRoot::new(dir.path()), Arc::new(Refusing));
    let err = sriov.set_num_vfs(addr("0000:3b:00.0"), 4).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    let text = err.to_string();
    assert!(
        text.contains("sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs") && text.contains("\"4\""),
        "{text}"
    );
}

/// The kernel's `sriov_numvfs_store` answers ENOENT when no driver is bound to the PF: said as
/// such (`Unsupported`), not as a file not found, and nothing is created.
#[test]
fn a_pf_without_driver_cannot_change_its_vf_count() {
    let dir = hal_mock::scratch_dir("sriov-").unwrap();
    let kernel = e810(dir.path());
    let function = dir.path().join("sys/bus/pci/devices/0000:3b:00.0");
    let sriov = SysfsSriov::with_writer(SysfsRoot::new(dir.path()), kernel.clone());
    // VFs stay when the PF's driver is unbound (the kernel only warns): 2 to 4 goes through 0,
    // which the kernel refuses the same way.
    sriov.set_num_vfs(addr("0000:3b:00.0"), 2).unwrap();
    std::fs::remove_file(function.join("driver")).unwrap();
    for count in [4, 0] {
        let err = sriov.set_num_vfs(addr("0000:3b:00.0"), count).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("0000:3b:00.0") && text.contains("no driver is bound"),
            "{text}"
        );
    }
    assert!(function.join("virtfn1").exists() && !function.join("virtfn2").exists());
    // The emulated kernel's own answers, in the kernel's order: ERANGE above the total comes
    // before the driver check; the count it already has is no change.
    let numvfs = function.join("sriov_numvfs");
    let above = kernel.write_attribute(&numvfs, "9").unwrap_err();
    assert_eq!(above.raw_os_error(), Some(34), "ERANGE");
    kernel.write_attribute(&numvfs, "2").unwrap();
}
