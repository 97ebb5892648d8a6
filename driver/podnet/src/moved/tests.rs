//! The listing of a state directory fails loudly (never "nothing there" from a directory that could
//! not be read), and the temp files of interrupted writes are swept, nothing else.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use super::*;
use crate::direct::Saved;

fn entry(sandbox: &str, pod_name: &str) -> Moved {
    Moved {
        kind: MOVED_KIND.into(),
        sandbox: sandbox.into(),
        claim: "demo/claim1".into(),
        device: "nic-0".into(),
        saved: Saved {
            host_name: "ens1f0v0".into(),
            mtu: 1500,
            up: true,
            mac: "02:00:00:00:00:01".into(),
            pod_name: pod_name.into(),
            netns: "/run/netns/pod".into(),
            rdma: None,
            index: None,
            host_index: None,
            perm_mac: None,
        },
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_missing_directory_lists_as_empty_and_an_unreadable_one_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    assert!(list(&dir.path().join("direct")).unwrap().is_empty());
    // ENOTDIR: the directory is a file (as EIO or EMFILE would, it hides what is there).
    let file = dir.path().join("direct");
    std::fs::write(&file, "").unwrap();
    let error = list(&file).unwrap_err();
    assert_eq!(error.kind(), NetErrorKind::State);
    assert!(
        error
            .to_string()
            .contains(&format!("listing {}", file.display())),
        "{error}"
    );
    // Below a file: not "missing" either.
    assert!(list(&file.join("sub")).is_err());
}

#[test]
fn an_entry_that_fails_to_read_fails_the_whole_listing() {
    let entries: Vec<io::Result<OsString>> = vec![
        Ok("a-net1".into()),
        Err(io::Error::from_raw_os_error(5)),
        Ok("b-net1".into()),
    ];
    let error = entry_names(entries.into_iter()).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(5));
    let entries: Vec<io::Result<OsString>> = vec![
        Ok("b-net1".into()),
        Ok(".b-net1.0123456789abcdef.tmp".into()),
        Ok("a-net1".into()),
    ];
    assert_eq!(
        entry_names(entries.into_iter()).unwrap(),
        ["b-net1", "a-net1"]
    );
    // Past the bound: an error, not the first 4096 as if they were all.
    let many = (0..=super::MAX_ENTRIES).map(|i| Ok(OsString::from(format!("s{i}-net1"))));
    let error = entry_names(many).unwrap_err();
    assert!(
        error.to_string().contains("more than 4096 entries"),
        "{error}"
    );
}

#[test]
fn entries_list_with_their_names_and_temp_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir_under(dir.path());
    store(&state, &entry("sandbox1", "net1")).unwrap();
    std::fs::write(state.join(".sandbox1-net2.0123456789abcdef.tmp"), "{").unwrap();
    let listed = list(&state).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "sandbox1-net1");
    assert_eq!(listed[0].1.as_ref().unwrap().sandbox, "sandbox1");
}

/// A plugin killed while writing leaves `.<entry>.<random>.tmp` (its name holds the sandbox id, so
/// no later write replaces it): swept at start, the entries and anything else kept.
#[test]
fn stale_temp_files_are_swept_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        remove_stale_temps(&dir.path().join("missing"))
            .unwrap()
            .is_empty()
    );
    let state = dir_under(dir.path());
    store(&state, &entry("sandbox1", "net1")).unwrap();
    // Left by writes killed before their rename: of an entry that exists, and of one never renamed.
    let stale = [
        ".sandbox1-net1.0123456789abcdef.tmp",
        ".sandbox2-net1.fedcba9876543210.tmp",
    ];
    for name in stale {
        std::fs::write(state.join(name), vec![b'x'; 1024]).unwrap();
    }
    // A directory of the temp naming goes too (as the kit's sweep removes it).
    std::fs::create_dir(state.join(".sandbox3-net1.00000000000000aa.tmp")).unwrap();
    // Not of this code's temp naming: kept.
    let others = [
        ".hidden",
        ".sandbox4-net1.tmp",
        ".sandbox4-net1.xyz.tmp",
        "sandbox4-net1.0123456789abcdef.tmp",
        "notes.tmp",
        ".sandbox5.0123456789abcde.tmp",
    ];
    for name in others {
        std::fs::write(state.join(name), "").unwrap();
    }
    let mut removed: Vec<String> = remove_stale_temps(&state)
        .unwrap()
        .into_iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            ".sandbox1-net1.0123456789abcdef.tmp",
            ".sandbox2-net1.fedcba9876543210.tmp",
            ".sandbox3-net1.00000000000000aa.tmp",
        ]
    );
    let mut left: Vec<String> = others.iter().map(|s| (*s).to_owned()).collect();
    left.push("sandbox1-net1".into());
    left.sort();
    assert_eq!(names(&state), left);
    assert!(load(&state.join("sandbox1-net1")).is_ok());
    // A directory that cannot be read is an error.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert!(remove_stale_temps(&file).is_err());
}

#[test]
fn only_the_temp_naming_names_an_entry() {
    assert_eq!(temp_of(".a-b-net1.0123456789abcdef.tmp"), Some("a-b-net1"));
    assert_eq!(temp_of(".eth0.100.0123456789ABCDEF.tmp"), Some("eth0.100"));
    for name in [
        "a.0123456789abcdef.tmp",
        ".a.0123456789abcdef",
        ".a.0123456789abcde.tmp",
        ".a.0123456789abcdeg.tmp",
        "..0123456789abcdef.tmp",
        "...0123456789abcdef.tmp",
        ".0123456789abcdef.tmp",
    ] {
        assert_eq!(temp_of(name), None, "{name}");
    }
}
