//! A rebound function's `driver_override` is put back as the claim found it (unset, or its value)
//! by the unprepare, the rollback of a failed prepare and the rollback at start; records of earlier
//! versions, which do not say what it was, leave it as those versions did.

use super::*;
use crate::plugin::checkpoint::files::Durability;

const VF: &str = "0000:3b:01.1";
const DEVICE: &str = "nic-0000-3b-01-1";

fn vf() -> hal::PciAddress {
    hal::PciAddress::parse(VF).unwrap()
}

/// The VF's `driver_override` as the kernel shows it.
fn override_of(s: &Setup) -> String {
    let path = format!("sys/bus/pci/devices/{VF}/driver_override");
    let text = std::fs::read_to_string(s.machine.root().join(path)).unwrap();
    text.trim().to_owned()
}

/// Sets the VF's `driver_override` behind the driver's back (an operator), and reads the inventory
/// again.
fn set_override(s: &Setup, value: &str) {
    let path = format!("sys/bus/pci/devices/{VF}/driver_override");
    std::fs::write(s.machine.root().join(path), format!("{value}\n")).unwrap();
    s.reread_inventory();
}

/// The inventory's idea of the VF's override.
fn inventory_override(s: &Setup) -> Option<String> {
    let inventory = s.inventory.read().unwrap();
    inventory.function(vf()).unwrap().driver_override.clone()
}

/// A claim `uid` that binds the VF to vfio-pci.
fn vfio_claim(s: &Setup, uid: &str) {
    s.claims
        .add(uid, &[("vf", DEVICE)], vf_config(Some("vfio-pci"), "net1"));
}

#[tokio::test]
async fn an_unprepare_puts_the_override_back_unset_or_as_it_was() {
    let s = Setup::on("xeon");
    assert_eq!(override_of(&s), "(null)");
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    vfio_claim(&s, "u1");
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(s.driver_of(VF).as_deref(), Some("vfio-pci"));
    assert_eq!(override_of(&s), "vfio-pci");
    assert_eq!(
        preparer.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "(null)", "unset, as it was: not iavf");
    assert_eq!(inventory_override(&s), None);

    // Set before the claim (an override an operator left, naming no driver): that value again.
    set_override(&s, "none");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(s.driver_of(VF).as_deref(), Some("vfio-pci"));
    assert_eq!(
        preparer.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "none");
    assert_eq!(inventory_override(&s).as_deref(), Some("none"));
}

/// A function that had no driver and an override naming one that is not loaded: left without a
/// driver, with that override.
#[tokio::test]
async fn an_unprepare_of_a_function_that_had_no_driver_puts_its_override_back() {
    let s = Setup::on("xeon");
    s.binder.unbind_driver(vf(), "iavf").unwrap();
    set_override(&s, "mlx5_vfio_pci");
    assert_eq!(s.driver_of(VF), None);
    vfio_claim(&s, "u1");
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(s.driver_of(VF).as_deref(), Some("vfio-pci"));
    assert_eq!(
        preparer.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(s.driver_of(VF), None);
    assert_eq!(override_of(&s), "mlx5_vfio_pci");
}

/// A prepare that fails after the bind (its CDI spec cannot be written) is rolled back: driver and
/// override as they were.
#[tokio::test]
async fn the_rollback_of_a_failed_prepare_puts_the_override_back() {
    let s = Setup::on("xeon");
    vfio_claim(&s, "u1");
    std::fs::write(s.cdi_dir(), "not a directory").unwrap();
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(error.starts_with("writing the CDI spec: "), "{error}");
    assert!(preparer.recorded().await.is_empty());
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "(null)");
    assert_eq!(inventory_override(&s), None);
}

/// A crash after the bind is rolled back at the next start, from the record: the override too. The
/// inventory read at that start saw the claim's override; the rollback corrects it, or the next
/// claim would take it for the function's own and put it back at its unprepare.
#[tokio::test]
async fn the_rollback_at_start_puts_the_override_back() {
    let s = Setup::on("xeon");
    vfio_claim(&s, "u1");
    let crashing = s.preparer("boot-1").with_faults(Arc::new(|at| {
        if at == Step::DevicesPrepared {
            Err("crash".into())
        } else {
            Ok(())
        }
    }));
    assert!(crashing.prepare(vec![reference("u1")]).await["u1"].is_err());
    drop(crashing);
    assert_eq!(override_of(&s), "vfio-pci");
    s.reread_inventory();
    assert_eq!(inventory_override(&s).as_deref(), Some("vfio-pci"));
    let restarted = s.preparer("boot-1");
    assert!(restarted.recorded().await.is_empty());
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "(null)");
    assert_eq!(inventory_override(&s), None);
    // The claim again, prepared and unprepared by the restarted plugin: unset still.
    assert!(restarted.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(
        restarted.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(override_of(&s), "(null)");
}

/// The claim's record as an earlier version wrote it: no `originalOverride` in its undo entries.
fn as_written_before(s: &Setup, uid: &str) {
    let checkpoint = CheckpointFile::new(s.checkpoint_path());
    let mut record = checkpoint.load().unwrap().claims.remove(uid).unwrap();
    let mut stripped = 0;
    for value in record.undo.values_mut() {
        if let Some(entry) = value.as_object_mut() {
            stripped += usize::from(entry.remove("originalOverride").is_some());
        }
    }
    assert_eq!(stripped, 1);
    checkpoint.put(&record, Durability::Synced).unwrap();
}

/// A record of an earlier version does not say what the override was: its unprepare leaves it as
/// that version did (naming the original driver: clearing it could drop an override an operator set
/// to keep the function on its driver). Its rollback at start no longer leaves an override naming
/// the claim's driver on a function still on its own (a crash between the bind's override write
/// and its unbind): the next probe of the function would have bound it to the claim's driver.
#[tokio::test]
async fn a_record_of_an_earlier_version_is_undone_as_that_version_did() {
    let s = Setup::on("xeon");
    vfio_claim(&s, "u1");
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    drop(preparer);
    as_written_before(&s, "u1");
    let upgraded = s.preparer("boot-1");
    assert_eq!(
        upgraded.recorded().await,
        BTreeMap::from([("u1".to_owned(), Phase::Completed)])
    );
    assert_eq!(
        upgraded.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "iavf", "as earlier versions left it");
    drop(upgraded);

    // Started, and the crash came after the bind wrote the override but before it unbound iavf.
    let crashing = s.preparer("boot-1").with_faults(Arc::new(|at| match at {
        Step::Started => Err("crash".into()),
        _ => Ok(()),
    }));
    assert!(crashing.prepare(vec![reference("u1")]).await["u1"].is_err());
    drop(crashing);
    as_written_before(&s, "u1");
    set_override(&s, "vfio-pci");
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    let restarted = s.preparer("boot-1");
    assert!(restarted.recorded().await.is_empty(), "rolled back");
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
    assert_eq!(override_of(&s), "iavf", "not vfio-pci");
}

/// An override the undo could not write back as it was (the kernel keeps an override up to its
/// first newline; sysfs shows at most a page) refuses the rebind: nothing is changed.
#[tokio::test]
async fn a_function_whose_override_could_not_be_put_back_is_not_rebound() {
    let s = Setup::on("xeon");
    vfio_claim(&s, "u1");
    let preparer = s.preparer("boot-1");
    let long = "x".repeat(hal::device::sriov::MAX_DRIVER_OVERRIDE + 1);
    for odd in ["iavf\nvfio-pci", long.as_str()] {
        set_override(&s, odd);
        let error = preparer.prepare(vec![reference("u1")]).await["u1"]
            .clone()
            .unwrap_err();
        assert!(
            error.contains(&format!("{DEVICE}: {VF} is not bound to vfio-pci"))
                && error.contains("cannot be put back as it was")
                && error.len() < 400,
            "{error}"
        );
        assert!(preparer.recorded().await.is_empty());
        assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
        assert_eq!(override_of(&s), odd);
    }
}

/// An undo entry this version does not know (a later version's kind of entry, or a function's entry
/// that is not a rebind), in the record of a claim (a rollback of the plugin): the unprepare fails
/// before it changes anything and keeps the record, for the later version to undo it all; skipped,
/// the change it undoes would stay for good.
#[tokio::test]
async fn an_undo_entry_this_version_does_not_know_fails_the_unprepare_and_keeps_the_record() {
    let s = Setup::on("xeon");
    vfio_claim(&s, "u1");
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    drop(preparer);
    let checkpoint = CheckpointFile::new(s.checkpoint_path());
    let written = checkpoint.load().unwrap().claims.remove("u1").unwrap();
    let later_entries = [
        ("sriovNumvfs:0000:3b:00.0", serde_json::json!({"was": 4})),
        (VF, serde_json::json!("a later kind of entry")),
    ];
    for (key, value) in later_entries {
        let mut record = written.clone();
        record.undo.insert(key.to_owned(), value);
        checkpoint.put(&record, Durability::Synced).unwrap();
        let restarted = s.preparer("boot-1");
        let error = restarted.unprepare(vec![reference("u1")]).await["u1"]
            .clone()
            .unwrap_err();
        assert!(
            error.contains(&format!("the undo entry {key:?}"))
                && error.contains("not one this version of the plugin knows"),
            "{error}"
        );
        assert_eq!(
            s.driver_of(VF).as_deref(),
            Some("vfio-pci"),
            "nothing undone"
        );
        assert_eq!(
            restarted.recorded().await,
            BTreeMap::from([("u1".to_owned(), Phase::Completed)])
        );
        assert!(checkpoint.load().unwrap().claims.contains_key("u1"));
        drop(restarted);
    }
    // The record as this version wrote it: undone.
    checkpoint.put(&written, Durability::Synced).unwrap();
    let restarted = s.preparer("boot-1");
    assert_eq!(
        restarted.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(s.driver_of(VF).as_deref(), Some("iavf"));
}
