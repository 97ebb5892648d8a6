//! `hal-fixture NAME DIR` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

fn hal_fixture(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hal-fixture"))
        .args(args)
        .output()
        .expect("run hal-fixture")
}

#[test]
fn writes_a_fixture_tree_once_and_refuses_a_non_empty_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("gb300");
    let out = hal_fixture(&["gb300", root.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = root.join("sys/class/infiniband/mlx5_0");
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.to_str().unwrap().contains("VMBUS:00"), "{target:?}");

    let again = hal_fixture(&["gb300", root.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let unknown = hal_fixture(&["nope", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known fixtures"));
    assert_eq!(hal_fixture(&[]).status.code(), Some(2));
}
