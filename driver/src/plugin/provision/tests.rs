use std::sync::Arc;

use super::*;

struct Machine {
    fixture: hal_mock::MaterializedFixture,
    sriov: backends::SysfsSriov,
}

impl Machine {
    fn xeon() -> Machine {
        let spec = hal_mock::by_name("xeon").unwrap();
        let fixture = spec.materialize().unwrap();
        let root = backends::SysfsRoot::new(fixture.root());
        let sriov = backends::SysfsSriov::with_writer(root, Arc::new(spec.kernel(fixture.root())));
        Machine { fixture, sriov }
    }

    fn inventory(&self) -> Inventory {
        Inventory::from_sysfs(&backends::SysfsRoot::new(self.fixture.root()), None)
    }

    fn num_vfs(&self, pf: &str) -> u32 {
        let pf = PciAddress::parse(pf).unwrap();
        self.inventory()
            .sriov
            .iter()
            .find(|s| s.pf == pf)
            .unwrap()
            .num_vfs
    }

    fn driver_of(&self, address: &str) -> Option<String> {
        let link = self
            .fixture
            .root()
            .join(format!("sys/bus/pci/devices/{address}/driver"));
        std::fs::canonicalize(link)
            .ok()?
            .file_name()?
            .to_str()
            .map(str::to_owned)
    }
}

fn policy(json: &str) -> (tempfile::TempDir, PathBuf, VfPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vf-policy.json");
    std::fs::write(&path, json).unwrap();
    let loaded = VfPolicy::load(&path).unwrap();
    (dir, path, loaded)
}

const E810: &str = "0000:3b:00.0";
const CX6: &str = "0000:b1:00.0";

#[test]
fn policies_change_counts_and_bind_vf_drivers() {
    let m = Machine::xeon();
    let (_dir, path, p) = policy(
        r#"{"pfs": [{"selector": {"pciAddress": "0000:3b:00.0"}, "numVfs": 16},
                    {"selector": {"netdev": "ens2f0np0"}, "numVfs": 2, "vfDriver": "vfio-pci"}]}"#,
    );
    let outcomes = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::new());
    let e810 = PciAddress::parse(E810).unwrap();
    let cx6 = PciAddress::parse(CX6).unwrap();
    assert_eq!(
        outcomes,
        [Outcome::Changed(e810, 8, 16), Outcome::Changed(cx6, 4, 2)]
    );
    assert_eq!((m.num_vfs(E810), m.num_vfs(CX6)), (16, 2));
    assert_eq!(m.driver_of("0000:b1:00.2").as_deref(), Some("vfio-pci"));
    assert_eq!(m.driver_of("0000:b1:00.3").as_deref(), Some("vfio-pci"));
    // Applying again changes nothing.
    let again = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::new());
    assert_eq!(again, [Outcome::Unchanged(e810), Outcome::Unchanged(cx6)]);
}

/// A policy that changes only the VFs' driver asks for a rescan (the published `driver` attribute
/// follows at once, not at the next interval); once the inventory shows it, nothing more.
#[test]
fn a_driver_only_change_rebinds_the_vfs_and_asks_for_a_rescan() {
    let m = Machine::xeon();
    let (_dir, path, p) = policy(
        r#"{"pfs": [{"selector": {"netdev": "ens2f0np0"}, "numVfs": 4, "vfDriver": "vfio-pci"}]}"#,
    );
    let cx6 = PciAddress::parse(CX6).unwrap();
    let vfs: Vec<PciAddress> = m
        .inventory()
        .sriov
        .iter()
        .find(|s| s.pf == cx6)
        .unwrap()
        .vfs
        .iter()
        .map(|v| v.address)
        .collect();
    assert_eq!(vfs.len(), 4);
    let outcomes = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::new());
    assert_eq!(outcomes, [Outcome::Rebound(cx6, vfs.clone())]);
    for vf in &vfs {
        assert_eq!(m.driver_of(&vf.to_string()).as_deref(), Some("vfio-pci"));
    }
    let mut kept = KeptPolicy::new(&path);
    assert_eq!(kept.report(outcomes.clone()), (outcomes, true));
    let again = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::new());
    assert_eq!(again, [Outcome::Unchanged(cx6)]);
    assert_eq!(kept.report(again.clone()), (again, false));
    // A VF the inventory lacks (its read failed) does not ask for a rescan every round.
    let (_dir2, path2, iavf) = policy(
        r#"{"pfs": [{"selector": {"netdev": "ens2f0np0"}, "numVfs": 4, "vfDriver": "mlx5_core"}]}"#,
    );
    let mut lacking = m.inventory();
    lacking.machine.pci.retain(|f| f.address != vfs[0]);
    let outcomes = apply(&iavf, &path2, &lacking, &m.sriov, &BTreeSet::new());
    assert_eq!(outcomes, [Outcome::Rebound(cx6, vfs[1..].to_vec())]);
    let outcomes = apply(&iavf, &path2, &m.inventory(), &m.sriov, &BTreeSet::new());
    assert_eq!(outcomes, [Outcome::Unchanged(cx6)]);
    lacking = m.inventory();
    lacking.machine.pci.retain(|f| f.address != vfs[0]);
    assert_eq!(
        apply(&iavf, &path2, &lacking, &m.sriov, &BTreeSet::new()),
        [Outcome::Unchanged(cx6)]
    );
}

#[test]
fn a_pf_whose_vfs_are_prepared_is_left_alone() {
    let m = Machine::xeon();
    let (_dir, path, p) = policy(
        r#"{"pfs": [{"selector": {"vendorId": "0x8086", "deviceId": "0x1592"}, "numVfs": 2}]}"#,
    );
    let vf = PciAddress::parse("0000:3b:01.1").unwrap();
    let outcomes = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::from([vf]));
    assert_eq!(
        outcomes,
        [Outcome::Busy(PciAddress::parse(E810).unwrap(), vec![vf])]
    );
    assert_eq!(m.num_vfs(E810), 8);
}

#[test]
fn a_refused_write_names_the_pf_and_the_policy_and_leaves_the_pf_as_it_was() {
    let m = Machine::xeon();
    let (_dir, path, p) =
        policy(r#"{"pfs": [{"selector": {"pciAddress": "0000:3b:00.0"}, "numVfs": 500}]}"#);
    let outcomes = apply(&p, &path, &m.inventory(), &m.sriov, &BTreeSet::new());
    let [Outcome::Failed(pf, why)] = outcomes.as_slice() else {
        panic!("{outcomes:?}")
    };
    assert_eq!(pf.to_string(), E810);
    assert!(
        why.contains("setting 500 VFs") && why.contains("at most 128"),
        "{why}"
    );
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert_eq!(m.num_vfs(E810), 8);
}

#[test]
fn bad_policies_are_errors_that_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    for (text, expected) in [
        (
            r#"{"pfs": [{"selector": {"pciAdress": "0000:3b:00.0"}, "numVfs": 1}]}"#,
            "pfs[0].selector.pciAdress",
        ),
        (
            r#"{"pfs": [{"selector": {}, "numVfs": 1}]}"#,
            "pfs[0].selector: selects every PF",
        ),
        (
            r#"{"pfs": [{"selector": {"vendorId": "intel"}, "numVfs": 1}]}"#,
            "pfs[0].selector.vendorId",
        ),
        (
            r#"{"pfs": [{"selector": {"netdev": "x"}, "numVfs": -1}]}"#,
            "pfs[0].numVfs",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let error = VfPolicy::load(&path).unwrap_err();
        assert_eq!(error.kind(), hal::ErrorKind::Malformed);
        let error = error.to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains(expected), "{expected}: {error}");
    }
    let missing = VfPolicy::load(&dir.path().join("missing.json")).unwrap_err();
    assert_eq!(missing.kind(), hal::ErrorKind::NotFound);
    assert!(missing.to_string().contains("missing.json"));
}

#[test]
fn the_watch_reports_a_policy_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, r#"{"pfs": []}"#).unwrap();
    let mut watch = PolicyWatch::new(&path);
    assert_eq!(watch.changed(), Some(Ok(VfPolicy::default())));
    assert_eq!(watch.changed(), None);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::write(
        &path,
        r#"{"pfs": [{"selector": {"netdev": "x"}, "numVfs": 1}]}"#,
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(watch.changed().unwrap().unwrap().pfs.len(), 1);
}

/// A PF the kernel refused is not tried again every round (each try goes through 0 VFs or unbinds
/// a VF's driver), until the policy file changes.
#[test]
fn a_refused_pf_is_left_alone_until_the_policy_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let policy = r#"{"pfs": [{"selector": {"netdev": "x"}, "numVfs": 1}]}"#;
    std::fs::write(&path, policy).unwrap();
    let mut kept = KeptPolicy::new(&path);
    let pf = PciAddress::parse("0000:3b:00.0").unwrap();
    assert!(kept.policy().unwrap().unwrap().skip.is_empty());
    let refused = Outcome::Failed(pf, "EBUSY".into());
    assert_eq!(kept.report(vec![refused.clone()]), (vec![refused], false));
    assert!(kept.policy().unwrap().unwrap().skip.contains(&pf));
    // Busy is tried again (nothing is written while busy): not skipped.
    let other = PciAddress::parse("0000:5e:00.0").unwrap();
    kept.report(vec![Outcome::Busy(other, vec![])]);
    assert!(!kept.policy().unwrap().unwrap().skip.contains(&other));
    // The file changes: every PF is tried again.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::write(&path, policy.replace("\"numVfs\": 1", "\"numVfs\": 2")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(kept.policy().unwrap().unwrap().skip.is_empty());
}
