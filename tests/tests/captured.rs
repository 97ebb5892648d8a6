//! Captured trees: a real machine read back through the backends, and the capture script round trip
//! (capturing a fixture's tree must not change what the backends see).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use backends::{SysfsCpuTopology, SysfsPci, SysfsRoot, SysfsSriov};
use hal::{CpuTopology, NumaNode, PciAddress, PciDevice, SriovPf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn captured_dev_vm_reads_as_the_machine_it_was() {
    let root = SysfsRoot::new(workspace().join("testdata/captured/dev-vm"));
    let cpu = SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap();
    assert!(cpu.errors.is_empty(), "{:?}", cpu.errors);
    assert_eq!(cpu.online().to_string(), "0-1");
    assert_eq!(cpu.numa_nodes.len(), 1);
    assert!(
        cpu.cpus
            .iter()
            .all(|c| c.numa_node == Some(NumaNode(0)) && c.package == Some(0))
    );

    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap();
    assert!(pci.errors.is_empty(), "{:?}", pci.errors);
    assert_eq!(pci.items.len(), 6);
    let net = pci
        .items
        .iter()
        .find(|f| f.address == PciAddress::parse("0000:00:03.0").unwrap())
        .unwrap();
    assert_eq!(
        (net.vendor_id, net.device_id, net.class),
        (0x1af4, 0x1041, 0x020000)
    );
    assert_eq!(
        net.netdevs,
        ["eth0"],
        "virtio-net's interface hangs under virtio0/"
    );
    assert_eq!(net.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(net.numa_node, None, "a one-node VM says -1");
    assert_eq!(net.pcie_root.unwrap().to_string(), "pci0000:00");
    assert!(SysfsSriov::new(root).sriov_pfs().unwrap().items.is_empty());
}

/// What the backends see in a tree, with paths made relative so two trees compare.
fn view(root: &Path) -> String {
    let root = SysfsRoot::new(root);
    let cpu = SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap();
    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap();
    let sriov = SysfsSriov::new(root).sriov_pfs().unwrap();
    format!(
        "{:?}\n{:?}\n{:?}",
        (cpu.cpus, cpu.numa_nodes, cpu.errors),
        pci,
        sriov
    )
}

#[test]
fn capturing_a_fixture_changes_nothing_the_backends_see_runs_capture_script() {
    let script = workspace().join("scripts/capture-fixture.sh");
    for name in hal_mock::FIXTURES {
        let fixture = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let scratch = hal_mock::scratch_dir("capture-").unwrap();
        let out = scratch.path().join(name);
        let status = Command::new("bash")
            .arg(&script)
            .arg("--root")
            .arg(fixture.root())
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        assert_eq!(view(&out), view(fixture.root()), "{name}");
    }
    let refuse = Command::new("bash")
        .arg(&script)
        .arg(workspace().join("testdata"))
        .output()
        .unwrap();
    assert!(
        !refuse.status.success(),
        "an existing output directory is refused"
    );
}
