use std::sync::Arc;

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
fn one_file_per_claim_round_trips_and_a_missing_directory_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("sub/checkpoint"));
    let loaded = checkpoint.load().unwrap();
    assert!(loaded.claims.is_empty() && loaded.discarded.is_empty() && loaded.missing);
    let (a, b) = (record("a", Phase::Started), record("b", Phase::Completed));
    checkpoint.put(&a, Unsynced).unwrap();
    checkpoint.put(&b, Synced).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a, &b]));
    assert!(!loaded.missing);
    assert_eq!(names_in(checkpoint.path()), ["a.json", "b.json"]);
    // The spec is kept as text in memory and stored as the object it is.
    let text = fs::read_to_string(checkpoint.record_path("a")).unwrap();
    assert!(
        text.contains(r#""cdiSpec":{"cdiVersion":"0.5.0"}"#),
        "{text}"
    );
    checkpoint.remove("a").unwrap();
    checkpoint.remove("a").unwrap();
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&b]));
    assert_eq!(names_in(&dir.path().join("sub")), ["checkpoint"]);
}

#[test]
fn a_corrupt_record_is_moved_aside_alone_and_named_with_its_claim() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let (a, b) = (record("a", Phase::Completed), record("b", Phase::Completed));
    let good_a = checkpoint.encode(&a).unwrap();
    let good_b = checkpoint.encode(&b).unwrap();
    let text = String::from_utf8(good_a.clone()).unwrap();
    let cut = good_a.len() - 10;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A changed byte inside the record: valid JSON, wrong checksum.
        (text.replace("claim-a", "claim-x").into_bytes(), "checksum"),
        (Vec::new(), "no header line"),
        (b"{\n".to_vec(), "not a record header"),
        (b"null\n{}".to_vec(), "not a record header"),
        (
            text.replacen("\"version\":2", "\"version\":9", 1)
                .into_bytes(),
            "version 9",
        ),
        (good_a[..cut].to_vec(), "truncated"),
        (good_b.clone(), "holds the record of claim b"),
        (vec![b'x'; MAX_FILE_BYTES + 1], "larger than"),
    ];
    for (bytes, why) in cases {
        checkpoint.put(&b, Synced).unwrap();
        fs::write(checkpoint.record_path("a"), &bytes).unwrap();
        let loaded = checkpoint.load().unwrap();
        assert_eq!(loaded.claims, claims(&[&b]), "{why}");
        assert_eq!(loaded.discarded.len(), 1, "{why}");
        let bad = &loaded.discarded[0];
        assert_eq!(bad.uid.as_deref(), Some("a"), "{why}");
        assert!(bad.why.contains(why), "{why}: {}", bad.why);
        assert!(bad.why.contains("a.json"), "{}", bad.why);
        assert_eq!(fs::read(&bad.moved_to).unwrap(), bytes, "kept as it was");
        assert!(!checkpoint.record_path("a").exists(), "moved, not copied");
    }
    let kept = names_in(checkpoint.path())
        .into_iter()
        .filter(|n| n.starts_with("a.json.bad-"))
        .count();
    assert_eq!(kept, files::KEEP_ASIDE, "only the newest are kept");
    checkpoint.put(&a, Synced).unwrap();
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&a, &b]));
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn a_file_at_the_directory_path_or_a_directory_at_a_record_path_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    fs::write(&path, "not a directory").unwrap();
    let checkpoint = CheckpointFile::new(&path);
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.discarded.len(), 1);
    let bad = &loaded.discarded[0];
    assert!(bad.uid.is_none());
    assert!(bad.why.contains(&path.display().to_string()), "{}", bad.why);
    assert_eq!(
        fs::read_to_string(&bad.moved_to).unwrap(),
        "not a directory"
    );
    let a = record("a", Phase::Completed);
    checkpoint.put(&a, Synced).unwrap();
    fs::create_dir(checkpoint.record_path("b")).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a]));
    assert_eq!(loaded.discarded[0].uid.as_deref(), Some("b"));
    assert!(loaded.discarded[0].why.contains("is a directory"));
}

#[test]
fn records_are_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("plugin/checkpoint"));
    checkpoint
        .put(&record("a", Phase::Started), Unsynced)
        .unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&checkpoint.record_path("a")), 0o600);
    assert_eq!(mode(checkpoint.path()), 0o700);
    assert_eq!(mode(&dir.path().join("plugin")), 0o700);
}

#[test]
fn temp_files_are_unpredictable_and_never_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, "untouched").unwrap();
    let path = dir.path().join("checkpoint");
    fs::create_dir(&path).unwrap();
    // A pid-based name: a link there must not be followed.
    let old_name = path.join(format!(".a.json.{}.tmp", std::process::id()));
    std::os::unix::fs::symlink(&target, &old_name).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spy = seen.clone();
    let spy_dir = path.clone();
    let checkpoint = CheckpointFile::new(&path).with_write_fault(Arc::new(move || {
        let temps: Vec<String> = names_in(&spy_dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp") && !n.contains(&std::process::id().to_string()))
            .collect();
        spy.lock().unwrap().extend(temps);
        Ok(())
    }));
    checkpoint
        .put(&record("a", Phase::Started), Synced)
        .unwrap();
    checkpoint
        .put(&record("a", Phase::Completed), Synced)
        .unwrap();
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "a new name each write");
    assert!(seen.iter().all(|n| n.starts_with(".a.json.")));
}

#[test]
fn stale_temp_files_are_removed_at_load_without_following_links() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, "untouched").unwrap();
    let path = dir.path().join("checkpoint");
    let checkpoint = CheckpointFile::new(&path);
    let a = record("a", Phase::Completed);
    checkpoint.put(&a, Synced).unwrap();
    fs::write(path.join(".a.json.1.tmp"), "half written").unwrap();
    std::os::unix::fs::symlink(&target, path.join(".b.json.2.tmp")).unwrap();
    // The single file of earlier versions had its temp files beside it.
    fs::write(dir.path().join(".checkpoint.json.3.tmp"), "half written").unwrap();
    fs::write(dir.path().join(".other.json.1.tmp"), "not ours").unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a]));
    assert_eq!(loaded.removed_temps.len(), 3, "{:?}", loaded.removed_temps);
    assert_eq!(names_in(&path), ["a.json"]);
    assert_eq!(names_in(dir.path()), [".other.json.1.tmp", "checkpoint"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
}

#[test]
fn a_full_disk_keeps_the_old_record_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    let a = record("a", Phase::Started);
    CheckpointFile::new(&path).put(&a, Synced).unwrap();
    let full = CheckpointFile::new(&path)
        .with_write_fault(Arc::new(|| Err(io::Error::from_raw_os_error(28))));
    let error = full
        .put(&record("a", Phase::Completed), Synced)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io);
    assert!(
        matches!(&error, CheckpointError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    );
    assert!(error.to_string().contains("a.json"), "{error}");
    assert!(full.remove("a").is_err());
    assert_eq!(full.load().unwrap().claims, claims(&[&a]));
    assert_eq!(names_in(&path), ["a.json"]);
}

#[test]
fn an_oversized_claim_is_refused_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    let mut big = record("big", Phase::Started);
    big.cdi_spec = serde_json::json!({"env": "x".repeat(MAX_CLAIM_BYTES)}).into();
    let error = checkpoint.check_claim(&big).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("ns/claim-big (big)"), "{error}");
    assert!(
        checkpoint
            .check_claim(&record("small", Phase::Started))
            .is_ok()
    );
    let error = checkpoint.put(&big, Synced).unwrap_err();
    assert!(
        matches!(error, CheckpointError::ClaimTooLarge { .. }),
        "{error}"
    );
    assert!(!checkpoint.record_path("big").exists());
}

#[test]
fn a_uid_that_is_not_a_file_name_never_names_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = CheckpointFile::new(dir.path().join("checkpoint"));
    for uid in ["../escape", ".hidden", ""] {
        assert!(
            checkpoint
                .put(&record(uid, Phase::Started), Synced)
                .is_err(),
            "{uid}"
        );
        assert!(checkpoint.remove(uid).is_err(), "{uid}");
    }
    assert!(
        names_in(dir.path()).iter().all(|n| n == "checkpoint"),
        "{:?}",
        names_in(dir.path())
    );
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
