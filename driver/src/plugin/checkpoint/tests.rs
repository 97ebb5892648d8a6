use std::path::Path;

use super::*;

#[test]
fn records_without_rt_tasks_serialize_as_before_so_old_checkpoints_keep_their_checksum() {
    let json = serde_json::to_value(record("u1", Phase::Completed)).unwrap();
    assert!(json.get("rt").is_none(), "{json}");
    let old: ClaimRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(old).unwrap(), json);
}

#[test]
fn a_record_written_before_network_configs_existed_still_reads_and_one_with_them_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    // A record file as the previous version wrote it: header and JSON with no `network` key.
    let old = record("old", Phase::Completed);
    let bytes = checkpoint.encode(&old).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("network"));
    fs::create_dir_all(checkpoint.path()).unwrap();
    fs::write(checkpoint.record_path("old"), &bytes).unwrap();
    // One with a direct-mode config.
    let mut new = record("new", Phase::Completed);
    let config = crate::podnet::config::NetworkConfig::decode(serde_json::json!({
        "interface": {"name": "net1", "addresses": ["192.0.2.10/24"], "mtu": 1400},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]
    }))
    .unwrap();
    new.network.insert("nic-0000-3b-02-0".into(), config);
    checkpoint.put(&new, Synced).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert!(loaded.discarded.is_empty(), "{:?}", loaded.discarded);
    assert_eq!(loaded.claims, claims(&[&old, &new]));
    assert!(loaded.claims["old"].network.is_empty());
    let text = fs::read_to_string(checkpoint.record_path("new")).unwrap();
    assert!(text.contains(r#""network":{"nic-0000-3b-02-0":"#), "{text}");
}

fn record(uid: &str, phase: Phase) -> ClaimRecord {
    ClaimRecord {
        claim: ClaimRef {
            namespace: "ns".into(),
            uid: uid.into(),
            name: format!("claim-{uid}"),
        },
        phase,
        boot_id: "boot-1".into(),
        devices: vec![PreparedDevice {
            request_names: vec!["gpu".into()],
            pool_name: "node-1".into(),
            device_name: "gpu-0008-06-00-0".into(),
            cdi_device_ids: vec![format!("hal.dra.dev/device={uid}-gpu-0008-06-00-0")],
            share_id: None,
        }],
        cdi_spec: serde_json::json!({"cdiVersion": "0.5.0"}).into(),
        undo: BTreeMap::new(),
        rt: BTreeMap::new(),
        network: BTreeMap::new(),
        pods: Vec::new(),
        cpus: BTreeMap::new(),
        admin: Vec::new(),
        recovered: false,
    }
}

fn claims(records: &[&ClaimRecord]) -> BTreeMap<String, ClaimRecord> {
    records
        .iter()
        .map(|r| (r.claim.uid.clone(), (*r).clone()))
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

use files::Durability::{Synced, Unsynced};

#[test]
fn the_cdi_spec_is_kept_as_text_and_stored_as_the_object_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let a = record("a", Phase::Started);
    checkpoint.put(&a, Unsynced).unwrap();
    let text = fs::read_to_string(checkpoint.record_path("a")).unwrap();
    assert!(
        text.contains(r#""cdiSpec":{"cdiVersion":"0.5.0"}"#),
        "{text}"
    );
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&a]));
}

#[test]
fn temp_files_of_the_single_file_of_earlier_versions_are_removed_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let a = record("a", Phase::Completed);
    checkpoint.put(&a, Synced).unwrap();
    fs::write(checkpoint.path().join(".a.json.1.tmp"), "half written").unwrap();
    fs::write(dir.path().join(".checkpoint.json.3.tmp"), "half written").unwrap();
    fs::write(dir.path().join(".other.json.1.tmp"), "not ours").unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a]));
    assert_eq!(loaded.removed_temps.len(), 2, "{:?}", loaded.removed_temps);
    assert_eq!(names_in(dir.path()), [".other.json.1.tmp", "checkpoint"]);
}

#[test]
fn the_single_file_of_earlier_versions_is_moved_into_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let legacy = dir.path().join("checkpoint.json");
    let (a, b) = (record("a", Phase::Completed), record("b", Phase::Started));
    // A crash during an earlier migration left a stale record: the legacy file wins.
    checkpoint
        .put(&record("a", Phase::Started), Synced)
        .unwrap();
    fs::write(&legacy, legacy::encode(&claims(&[&a, &b]))).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a, &b]));
    assert_eq!(loaded.migrated, 2);
    assert!(loaded.discarded.is_empty() && !loaded.missing);
    assert!(!legacy.exists(), "removed once moved");
    let again = checkpoint.load().unwrap();
    assert_eq!(again.claims, claims(&[&a, &b]));
    assert_eq!(again.migrated, 0);
}

/// Upgraded, downgraded (the earlier build writes only `checkpoint.json`; claim `gone` was
/// unprepared meanwhile, its device perhaps given to `new`), then upgraded again: the file is the
/// newer state, and the record of `gone` is moved aside, not undone over `new`'s device.
#[test]
fn records_older_than_the_single_file_of_a_downgrade_are_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let legacy = dir.path().join("checkpoint.json");
    let (kept, gone, new) = (
        record("kept", Phase::Completed),
        record("gone", Phase::Completed),
        record("new", Phase::Completed),
    );
    checkpoint.put(&kept, Synced).unwrap();
    checkpoint.put(&gone, Synced).unwrap();
    fs::write(&legacy, legacy::encode(&claims(&[&kept, &new]))).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&kept, &new]));
    let [discarded] = loaded.discarded.as_slice() else {
        panic!("{:?}", loaded.discarded)
    };
    assert_eq!(discarded.uid.as_deref(), Some("gone"));
    assert!(
        discarded.why.contains("unprepared since"),
        "{}",
        discarded.why
    );
    assert!(discarded.moved_to.exists());
    assert!(!checkpoint.record_path("gone").exists());
    assert!(!legacy.exists());
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&kept, &new]));
}

/// The same when the records beside the single file cannot be read (EIO): the file is the newer
/// state still. A record it lists is written over by its claim (no longer unreadable); one it does
/// not list is of a claim unprepared since, moved aside as well.
#[test]
fn unreadable_records_beside_the_single_file_of_a_downgrade_give_way_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    let legacy = dir.path().join("checkpoint.json");
    let (kept, gone) = (
        record("kept", Phase::Completed),
        record("gone", Phase::Completed),
    );
    CheckpointFile::new(&path).put(&kept, Synced).unwrap();
    CheckpointFile::new(&path).put(&gone, Synced).unwrap();
    fs::write(&legacy, legacy::encode(&claims(&[&kept]))).unwrap();
    let failing = [path.join("kept.json"), path.join("gone.json")];
    let checkpoint =
        CheckpointFile::new(&path).with_read_fault(std::sync::Arc::new(move |read: &Path| {
            match failing.iter().any(|f| f == read) {
                true => Err(std::io::Error::from_raw_os_error(5)),
                false => Ok(()),
            }
        }));
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&kept]));
    assert!(loaded.unreadable.is_empty(), "{:?}", loaded.unreadable);
    let [discarded] = loaded.discarded.as_slice() else {
        panic!("{:?}", loaded.discarded)
    };
    assert_eq!(discarded.uid.as_deref(), Some("gone"));
    assert!(!checkpoint.record_path("gone").exists());
    assert!(!legacy.exists());
    assert_eq!(
        CheckpointFile::new(&path).load().unwrap().claims,
        claims(&[&kept])
    );
}

#[test]
fn claims_of_earlier_versions_that_cannot_be_records_are_reported_and_the_file_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let legacy = dir.path().join("checkpoint.json");
    let good = record("good", Phase::Completed);
    let mut big = record("big", Phase::Completed);
    big.cdi_spec = serde_json::json!({"env": "x".repeat(MAX_CLAIM_BYTES)}).into();
    let mut listed = claims(&[&good, &big]);
    // Listed under another key than its own UID (a hand edit, or a bug of an earlier version).
    listed.insert("other-key".into(), record("elsewhere", Phase::Completed));
    fs::write(&legacy, legacy::encode(&listed)).unwrap();

    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&good]));
    assert_eq!(loaded.migrated, 1);
    let mut lost: Vec<&str> = loaded
        .discarded
        .iter()
        .map(|d| d.uid.as_deref().unwrap())
        .collect();
    lost.sort_unstable();
    assert_eq!(lost, ["big", "elsewhere"]);
    for discarded in &loaded.discarded {
        assert!(
            discarded.why.contains("checkpoint.json"),
            "{}",
            discarded.why
        );
        assert!(discarded.moved_to.exists(), "kept for inspection");
    }
    assert!(
        loaded.discarded[0].why.contains("other-key")
            || loaded.discarded[1].why.contains("other-key")
    );
    assert!(!legacy.exists());
    // The next start finds only the good claim's record, and nothing more to move.
    let again = checkpoint.load().unwrap();
    assert_eq!(again.claims, claims(&[&good]));
    assert_eq!(again.migrated, 0);
    assert!(again.discarded.is_empty());
}

#[test]
fn a_corrupt_file_of_earlier_versions_is_moved_aside_and_reported_as_the_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let legacy = dir.path().join("checkpoint.json");
    let a = record("a", Phase::Completed);
    let text = String::from_utf8(legacy::encode(&claims(&[&a]))).unwrap();
    for garbage in [
        String::new(),
        "{".to_owned(),
        text.replace("claim-a", "claim-x"),
        "{\"version\": 9, \"checksum\": \"\", \"claims\": {}}".to_owned(),
    ] {
        fs::write(&legacy, &garbage).unwrap();
        let loaded = checkpoint.load().unwrap();
        assert!(loaded.claims.is_empty(), "{garbage}");
        assert_eq!(loaded.discarded.len(), 1, "{garbage}");
        assert!(loaded.discarded[0].uid.is_none());
        assert!(!loaded.missing);
        assert_eq!(
            fs::read_to_string(&loaded.discarded[0].moved_to).unwrap(),
            garbage
        );
    }
    fs::create_dir(&legacy).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert!(
        loaded.discarded[0].why.contains("is a directory"),
        "{:?}",
        loaded.discarded
    );
}
