use std::sync::Arc;

use super::*;

#[test]
fn records_without_rt_tasks_serialize_as_before_so_old_checkpoints_keep_their_checksum() {
    let json = serde_json::to_value(record("u1", Phase::Completed)).unwrap();
    assert!(json.get("rt").is_none(), "{json}");
    let old: ClaimRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(old).unwrap(), json);
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
        cdi_spec: serde_json::json!({"cdiVersion": "0.5.0"}),
        undo: BTreeMap::new(),
        rt: BTreeMap::new(),
        pods: Vec::new(),
        cpus: BTreeMap::new(),
        recovered: false,
    }
}

#[test]
fn round_trip_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = CheckpointFile::new(dir.path().join("sub/checkpoint.json"));
    let loaded = file.load().unwrap();
    assert!(loaded.claims.is_empty() && loaded.discarded.is_none());
    let mut claims = BTreeMap::new();
    claims.insert("a".to_owned(), record("a", Phase::Started));
    claims.insert("b".to_owned(), record("b", Phase::Completed));
    file.store(&claims).unwrap();
    assert_eq!(file.load().unwrap().claims, claims);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["checkpoint.json"]);
}

#[test]
fn corruption_is_reported_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    let file = CheckpointFile::new(&path);
    let mut claims = BTreeMap::new();
    claims.insert("a".to_owned(), record("a", Phase::Completed));
    file.store(&claims).unwrap();

    // A flipped byte inside the content: valid JSON, wrong checksum.
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("claim-a", "claim-x");
    fs::write(&path, text).unwrap();
    let loaded = file.load().unwrap();
    assert!(loaded.claims.is_empty());
    assert!(loaded.discarded.unwrap().contains("checksum"));

    for garbage in [
        "",
        "{",
        "null",
        "{\"version\": 9, \"checksum\": \"\", \"claims\": {}}",
    ] {
        fs::write(&path, garbage).unwrap();
        let loaded = file.load().unwrap();
        assert!(loaded.claims.is_empty(), "{garbage}");
        assert!(loaded.discarded.is_some(), "{garbage}");
    }
    file.store(&claims).unwrap();
    assert_eq!(
        file.load().unwrap().claims,
        claims,
        "replaced by the next store"
    );
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

fn one_claim() -> BTreeMap<String, ClaimRecord> {
    BTreeMap::from([("a".to_owned(), record("a", Phase::Completed))])
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_at_the_checkpoint_path_is_moved_aside_named_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), "kept").unwrap();
    let file = CheckpointFile::new(&path);
    let loaded = file.load().unwrap();
    let why = loaded.discarded.unwrap();
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert!(why.contains("is a directory"), "{why}");
    let aside = loaded.moved_to.unwrap();
    assert_eq!(fs::read_to_string(aside.join("inside")).unwrap(), "kept");
    file.store(&one_claim()).unwrap();
    assert_eq!(file.load().unwrap().claims, one_claim());
}

#[test]
fn a_corrupt_checkpoint_is_kept_aside_and_only_the_newest_three_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    let file = CheckpointFile::new(&path);
    let mut asides = Vec::new();
    for i in 0..5 {
        let garbage = format!("{{ truncated {i}");
        fs::write(&path, &garbage).unwrap();
        let loaded = file.load().unwrap();
        assert!(loaded.claims.is_empty());
        let aside = loaded.moved_to.unwrap();
        assert_eq!(
            fs::read_to_string(&aside).unwrap(),
            garbage,
            "kept as it was"
        );
        assert!(!path.exists(), "moved, not copied");
        asides.push(aside);
    }
    let left: Vec<_> = asides.iter().filter(|a| a.exists()).collect();
    assert_eq!(left.len(), files::KEEP_ASIDE, "{left:?}");
    assert!(asides[4].exists(), "the newest is kept");
}

#[test]
fn the_checkpoint_is_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin/sub/checkpoint.json");
    CheckpointFile::new(&path).store(&one_claim()).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("plugin")), 0o700);
}

#[test]
fn temp_files_are_unpredictable_and_never_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, "untouched").unwrap();
    let path = dir.path().join("checkpoint.json");
    // The name the plugin used to write (pid-based): a link there must not be followed.
    let old_name = dir
        .path()
        .join(format!(".checkpoint.json.{}.tmp", std::process::id()));
    std::os::unix::fs::symlink(&target, &old_name).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spy = seen.clone();
    let spy_dir = dir.path().to_owned();
    let file = CheckpointFile::new(&path).with_write_fault(Arc::new(move || {
        let temps: Vec<String> = names_in(&spy_dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp") && !n.contains(&std::process::id().to_string()))
            .collect();
        spy.lock().unwrap().extend(temps);
        Ok(())
    }));
    file.store(&one_claim()).unwrap();
    file.store(&one_claim()).unwrap();
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "a new name each write");
    assert!(seen.iter().all(|n| n.starts_with(".checkpoint.json.")));
}

#[test]
fn stale_temp_files_are_removed_at_load_without_following_links() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, "untouched").unwrap();
    let path = dir.path().join("checkpoint.json");
    let file = CheckpointFile::new(&path);
    file.store(&one_claim()).unwrap();
    fs::write(dir.path().join(".checkpoint.json.1.tmp"), "half written").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".checkpoint.json.2.tmp")).unwrap();
    fs::write(dir.path().join(".other.json.1.tmp"), "not ours").unwrap();
    let loaded = file.load().unwrap();
    assert_eq!(loaded.claims, one_claim());
    assert_eq!(loaded.removed_temps.len(), 2);
    assert_eq!(
        names_in(dir.path()),
        [".other.json.1.tmp", "checkpoint.json"]
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
}

#[test]
fn a_full_disk_keeps_the_old_file_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    CheckpointFile::new(&path).store(&one_claim()).unwrap();
    let full = CheckpointFile::new(&path)
        .with_write_fault(Arc::new(|| Err(io::Error::from_raw_os_error(28))));
    let mut more = one_claim();
    more.insert("b".into(), record("b", Phase::Started));
    let error = full.store(&more).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io);
    assert!(
        matches!(&error, CheckpointError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(full.load().unwrap().claims, one_claim());
    assert_eq!(names_in(dir.path()), ["checkpoint.json"]);
}

#[test]
fn an_oversized_claim_is_refused_and_a_checkpoint_over_the_limit_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.json");
    let file = CheckpointFile::new(&path);
    let mut big = record("big", Phase::Started);
    big.cdi_spec = serde_json::json!({"env": "x".repeat(MAX_CLAIM_BYTES)});
    let error = file.check_claim(&big).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("ns/claim-big (big)"), "{error}");
    assert!(file.check_claim(&record("small", Phase::Started)).is_ok());

    file.store(&one_claim()).unwrap();
    let mut huge = one_claim();
    huge.insert("huge".into(), {
        let mut r = record("huge", Phase::Started);
        r.cdi_spec = serde_json::json!({"env": "x".repeat(MAX_BYTES)});
        r
    });
    let error = file.store(&huge).unwrap_err();
    assert!(matches!(error, CheckpointError::TooLarge { .. }), "{error}");
    assert_eq!(
        file.load().unwrap().claims,
        one_claim(),
        "the old file stays"
    );
}
