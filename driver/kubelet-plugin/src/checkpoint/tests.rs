use std::sync::Arc;

use super::*;
use files::Durability::{Synced, Unsynced};

/// A record as a driver might keep one: the claim and some state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestRecord {
    uid: String,
    namespace: String,
    name: String,
    phase: String,
    spec: serde_json::Value,
}

impl Record for TestRecord {
    fn uid(&self) -> &str {
        &self.uid
    }

    fn describe(&self) -> String {
        format!("{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

type TestCheckpoint = Checkpoint<TestRecord>;

fn record(uid: &str, phase: &str) -> TestRecord {
    TestRecord {
        uid: uid.into(),
        namespace: "ns".into(),
        name: format!("claim-{uid}"),
        phase: phase.into(),
        spec: serde_json::json!({"cdiVersion": "0.5.0"}),
    }
}

fn claims(records: &[&TestRecord]) -> BTreeMap<String, TestRecord> {
    records
        .iter()
        .map(|r| (r.uid.clone(), (*r).clone()))
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

/// The on-disk format, byte for byte: a header line with the version, the CRC-32 and the length of
/// the record's compact JSON, then that JSON and a newline. Files written by earlier versions must
/// keep reading.
#[test]
fn the_record_file_format_is_a_header_line_then_the_records_json() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let a = record("a", "started");
    let body = r#"{"uid":"a","namespace":"ns","name":"claim-a","phase":"started","spec":{"cdiVersion":"0.5.0"}}"#;
    let expected = format!(
        "{{\"version\":2,\"checksum\":\"{:08x}\",\"bytes\":{}}}\n{body}\n",
        crc32(body.as_bytes()),
        body.len()
    );
    assert_eq!(
        String::from_utf8(checkpoint.encode(&a).unwrap()).unwrap(),
        expected
    );
    // A file written by hand in that format reads back.
    fs::create_dir(checkpoint.path()).unwrap();
    fs::write(checkpoint.record_path("a"), &expected).unwrap();
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&a]));
}

#[test]
fn one_file_per_claim_round_trips_and_a_missing_directory_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("sub/checkpoint"));
    let loaded = checkpoint.load().unwrap();
    assert!(loaded.claims.is_empty() && loaded.discarded.is_empty() && loaded.missing);
    // Nothing to rebuild from: the rebuild is over at once.
    checkpoint.rebuild_done().unwrap();
    let (a, b) = (record("a", "started"), record("b", "completed"));
    checkpoint.put(&a, Unsynced).unwrap();
    checkpoint.put(&b, Synced).unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a, &b]));
    assert!(!loaded.missing);
    assert_eq!(names_in(checkpoint.path()), ["a.json", "b.json"]);
    assert_eq!(checkpoint.read_valid().unwrap().claims, claims(&[&a, &b]));
    checkpoint.remove("a").unwrap();
    checkpoint.remove("a").unwrap();
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&b]));
    assert_eq!(names_in(&dir.path().join("sub")), ["checkpoint"]);
}

/// The files that say what to rebuild (a record moved aside, a missing directory) are gone after the
/// first load; the mark written before them says it until the driver's rebuild is done.
#[test]
fn a_rebuild_that_does_not_finish_is_reported_at_every_load_until_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let first = checkpoint.load().unwrap();
    assert!(first.missing && !first.rebuild_interrupted);
    // The driver crashes (or its disk is full) before it wrote what it rebuilt.
    let second = checkpoint.load().unwrap();
    assert!(!second.missing && second.rebuild_interrupted);
    checkpoint.rebuild_done().unwrap();
    assert!(!checkpoint.load().unwrap().rebuild_interrupted);
    assert!(names_in(checkpoint.path()).is_empty());

    let (a, b) = (record("a", "completed"), record("b", "completed"));
    checkpoint.put(&a, Synced).unwrap();
    checkpoint.put(&b, Synced).unwrap();
    fs::write(checkpoint.record_path("a"), "garbage").unwrap();
    let first = checkpoint.load().unwrap();
    assert_eq!(first.discarded.len(), 1);
    assert!(!first.rebuild_interrupted);
    let second = checkpoint.load().unwrap();
    assert!(second.discarded.is_empty(), "the bad file is aside");
    assert!(second.rebuild_interrupted, "but the rebuild is still owed");
    assert_eq!(second.claims, claims(&[&b]));
    checkpoint.put(&a, Synced).unwrap();
    checkpoint.rebuild_done().unwrap();
    checkpoint.rebuild_done().unwrap();
    let done = checkpoint.load().unwrap();
    assert!(!done.rebuild_interrupted && done.discarded.is_empty());
    assert_eq!(done.claims, claims(&[&a, &b]));
    // A directory in the mark's place counts as the mark, and goes when the rebuild is done.
    fs::create_dir_all(checkpoint.path().join(".rebuild-pending/inside")).unwrap();
    assert!(checkpoint.load().unwrap().rebuild_interrupted);
    checkpoint.rebuild_done().unwrap();
    assert!(!checkpoint.load().unwrap().rebuild_interrupted);
}

#[test]
fn a_corrupt_record_is_moved_aside_alone_and_named_with_its_claim() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let (a, b) = (record("a", "completed"), record("b", "completed"));
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
            text.replacen("\"version\":2", "\"version\":1", 1)
                .into_bytes(),
            "version 1",
        ),
        (good_a[..cut].to_vec(), "truncated"),
        (good_b.clone(), "holds the record of claim b"),
        (vec![b'x'; MAX_FILE_BYTES + 1], "larger than"),
    ];
    for (bytes, why) in cases {
        checkpoint.put(&b, Synced).unwrap();
        fs::write(checkpoint.record_path("a"), &bytes).unwrap();
        // A reader beside the preparer leaves it out and moves nothing.
        let valid = checkpoint.read_valid().unwrap();
        assert_eq!(valid.claims, claims(&[&b]), "{why}");
        assert!(valid.unreadable.is_empty(), "bad is not unreadable: {why}");
        assert!(checkpoint.record_path("a").exists(), "{why}");
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

/// A checkpoint whose reads of the record of `uid` fail with the OS error `errno`.
fn failing_reads_of(path: &Path, uid: &str, errno: i32) -> TestCheckpoint {
    let failing = TestCheckpoint::new(path).record_path(uid);
    TestCheckpoint::new(path).with_read_fault(Arc::new(move |read: &Path| match read == failing {
        true => Err(io::Error::from_raw_os_error(errno)),
        false => Ok(()),
    }))
}

/// A record file that cannot be read (EIO from a bad block, EACCES) fails neither the load nor a
/// reader's listing: the other records are read, and it is named with its claim and left in place,
/// untouched (it may read later), with no rebuild marked for it.
#[test]
fn a_record_that_cannot_be_read_is_reported_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    let (a, b) = (record("a", "completed"), record("b", "completed"));
    TestCheckpoint::new(&path).put(&a, Synced).unwrap();
    TestCheckpoint::new(&path).put(&b, Synced).unwrap();
    let bytes = fs::read(TestCheckpoint::new(&path).record_path("a")).unwrap();
    for (errno, kind) in [
        (5, io::ErrorKind::Other),
        (13, io::ErrorKind::PermissionDenied),
    ] {
        let checkpoint = failing_reads_of(&path, "a", errno);
        let loaded = checkpoint.load().unwrap();
        assert_eq!(loaded.claims, claims(&[&b]), "{errno}");
        assert!(loaded.discarded.is_empty(), "{errno}: not moved aside");
        assert!(!loaded.rebuild_interrupted && !loaded.missing, "{errno}");
        assert_eq!(loaded.unreadable.len(), 1, "{errno}");
        let unreadable = &loaded.unreadable[0];
        assert_eq!(unreadable.uid, "a");
        assert_eq!(unreadable.path, checkpoint.record_path("a"));
        assert_eq!(unreadable.error.raw_os_error(), Some(errno));
        if kind != io::ErrorKind::Other {
            assert_eq!(unreadable.error.kind(), kind);
        }
        let text = unreadable.to_string();
        assert!(
            text.contains("claim a") && text.contains("a.json"),
            "{text}"
        );
        let valid = checkpoint.read_valid().unwrap();
        assert_eq!(valid.claims, claims(&[&b]), "{errno}");
        assert_eq!(valid.unreadable.len(), 1, "{errno}");
        assert_eq!(valid.unreadable[0].uid, "a");
        assert_eq!(valid.unreadable[0].error.raw_os_error(), Some(errno));
        assert_eq!(names_in(&path), ["a.json", "b.json"], "{errno}");
        assert_eq!(fs::read(checkpoint.record_path("a")).unwrap(), bytes);
    }
    // Read again without the fault: as it was.
    let checkpoint = TestCheckpoint::new(&path);
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a, &b]));
    assert!(loaded.unreadable.is_empty() && !loaded.rebuild_interrupted);
    // A record removed between the listing and its read (unprepared meanwhile) is not unreadable.
    let gone = failing_reads_of(&path, "a", 2);
    assert!(gone.load().unwrap().unreadable.is_empty());
    assert!(gone.read_valid().unwrap().unreadable.is_empty());
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
    let checkpoint = TestCheckpoint::new(&path);
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.discarded.len(), 1);
    assert!(!loaded.missing);
    let bad = &loaded.discarded[0];
    assert!(bad.uid.is_none());
    assert!(bad.why.contains(&path.display().to_string()), "{}", bad.why);
    assert_eq!(
        fs::read_to_string(&bad.moved_to).unwrap(),
        "not a directory"
    );
    let a = record("a", "completed");
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
    let checkpoint = TestCheckpoint::new(dir.path().join("plugin/checkpoint"));
    checkpoint.put(&record("a", "started"), Unsynced).unwrap();
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
    let checkpoint = TestCheckpoint::new(&path).with_write_fault(Arc::new(move || {
        let temps: Vec<String> = names_in(&spy_dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp") && !n.contains(&std::process::id().to_string()))
            .collect();
        spy.lock().unwrap().extend(temps);
        Ok(())
    }));
    checkpoint.put(&record("a", "started"), Synced).unwrap();
    checkpoint.put(&record("a", "completed"), Synced).unwrap();
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
    let checkpoint = TestCheckpoint::new(&path);
    let a = record("a", "completed");
    checkpoint.put(&a, Synced).unwrap();
    fs::write(path.join(".a.json.1.tmp"), "half written").unwrap();
    std::os::unix::fs::symlink(&target, path.join(".b.json.2.tmp")).unwrap();
    fs::write(dir.path().join(".other.json.1.tmp"), "not ours").unwrap();
    let loaded = checkpoint.load().unwrap();
    assert_eq!(loaded.claims, claims(&[&a]));
    assert_eq!(loaded.removed_temps.len(), 2, "{:?}", loaded.removed_temps);
    assert_eq!(names_in(&path), ["a.json"]);
    assert_eq!(names_in(dir.path()), [".other.json.1.tmp", "checkpoint"]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
}

#[test]
fn a_full_disk_keeps_the_old_record_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    let a = record("a", "started");
    TestCheckpoint::new(&path).put(&a, Synced).unwrap();
    let full = TestCheckpoint::new(&path)
        .with_write_fault(Arc::new(|| Err(io::Error::from_raw_os_error(28))));
    let error = full.put(&record("a", "completed"), Synced).unwrap_err();
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
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let mut big = record("big", "started");
    big.spec = serde_json::json!({"env": "x".repeat(MAX_CLAIM_BYTES)});
    let error = checkpoint.check_claim(&big).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("ns/claim-big (big)"), "{error}");
    assert!(checkpoint.check_claim(&record("small", "started")).is_ok());
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
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    for uid in ["../escape", ".hidden", ""] {
        assert!(
            checkpoint.put(&record(uid, "started"), Synced).is_err(),
            "{uid}"
        );
        let bad = record(uid, "started");
        assert_eq!(checkpoint.import([&bad]).unwrap().len(), 1, "{uid}");
        assert!(checkpoint.remove(uid).is_err(), "{uid}");
    }
    assert!(
        names_in(dir.path()).iter().all(|n| n == "checkpoint"),
        "{:?}",
        names_in(dir.path())
    );
}

#[test]
fn imported_records_are_written_without_the_write_fault_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"))
        .with_write_fault(Arc::new(|| Err(io::Error::from_raw_os_error(28))));
    let (a, b) = (record("a", "completed"), record("b", "started"));
    assert!(checkpoint.import([&a, &b]).unwrap().is_empty());
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&a, &b]));
}

#[test]
fn an_import_writes_the_records_it_can_and_returns_the_others_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let mut big = record("big", "completed");
    big.spec = serde_json::json!({"env": "x".repeat(MAX_CLAIM_BYTES)});
    let (good, escape) = (
        record("good", "completed"),
        record("../escape", "completed"),
    );
    let refused = checkpoint.import([&big, &good, &escape]).unwrap();
    let refused: Vec<(&str, ErrorKind)> = refused
        .iter()
        .map(|(record, why)| (record.uid.as_str(), why.kind()))
        .collect();
    assert_eq!(
        refused,
        [
            ("big", ErrorKind::InvalidInput),
            ("../escape", ErrorKind::Malformed)
        ]
    );
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&good]));
    assert_eq!(names_in(dir.path()), ["checkpoint"]);
}

#[test]
fn an_import_of_nothing_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("absent"));
    assert!(checkpoint.import([]).unwrap().is_empty());
    assert!(names_in(dir.path()).is_empty());
}

proptest::proptest! {
    /// One check of claim UIDs: a UID that names a record also names a CDI spec, and one refused
    /// for either is refused for both, so a claim never gets a record but no spec (or the reverse).
    #[test]
    fn a_uid_names_a_record_exactly_when_it_names_a_cdi_spec(uid in "[a-z0-9._/-]{0,12}") {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
        let cdi = crate::cdi::CdiDir::new(dir.path().join("cdi"));
        let recorded = checkpoint.put(&record(&uid, "started"), Unsynced).is_ok();
        let spec_named = cdi.claim_spec_path("example.com/device", &uid).is_ok();
        proptest::prop_assert_eq!(recorded, spec_named, "{:?}", uid);
        proptest::prop_assert_eq!(recorded, crate::handler::check_claim_uid(&uid).is_ok());
        if recorded {
            proptest::prop_assert!(checkpoint.load().unwrap().claims.contains_key(&uid));
        }
    }
}

/// A record of a later version of the plugin (rolled back to this one): a later record format, or an
/// intact record with a field this version does not know. It holds what undoing its claim needs, so
/// it is left in place and reported as unreadable (the claim's calls fail until that version is back),
/// never moved aside as a corrupt one; a header field this version does not know is let through.
#[test]
fn a_record_of_a_later_version_is_left_in_place_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = TestCheckpoint::new(dir.path().join("checkpoint"));
    let (a, b) = (record("a", "completed"), record("b", "completed"));
    checkpoint.put(&b, Synced).unwrap();
    let file = |version: u32, header_extra: &str, body: &str| {
        format!(
            "{{\"version\":{version},\"checksum\":\"{:08x}\",\"bytes\":{}{header_extra}}}\n{body}\n",
            crc32(body.as_bytes()),
            body.len()
        )
    };
    let body = serde_json::to_string(&a).unwrap();
    let with_field = body.replacen('{', "{\"rtTasks\":[1],", 1);
    let later = format!("record format {}", VERSION + 1);
    let cases = [
        (file(VERSION + 1, "", &body), later.as_str()),
        (file(VERSION, "", &with_field), "unknown field `rtTasks`"),
    ];
    for (text, why) in cases {
        fs::write(checkpoint.record_path("a"), &text).unwrap();
        let loaded = checkpoint.load().unwrap();
        assert_eq!(loaded.claims, claims(&[&b]), "{why}");
        assert!(loaded.discarded.is_empty(), "{why}: not moved aside");
        assert!(!loaded.rebuild_interrupted, "{why}");
        assert_eq!(loaded.unreadable.len(), 1, "{why}");
        let unreadable = loaded.unreadable[0].to_string();
        assert!(unreadable.contains(why), "{unreadable}");
        assert!(unreadable.contains("later"), "{unreadable}");
        assert_eq!(
            fs::read_to_string(checkpoint.record_path("a")).unwrap(),
            text
        );
        assert!(checkpoint.read_again("a").is_err(), "{why}");
        let valid = checkpoint.read_valid().unwrap();
        assert_eq!(valid.unreadable.len(), 1, "{why}");
    }
    // A header field this version does not know, of the current format: read.
    fs::write(
        checkpoint.record_path("a"),
        file(VERSION, ",\"minReader\":2", &body),
    )
    .unwrap();
    assert_eq!(checkpoint.load().unwrap().claims, claims(&[&a, &b]));
}
