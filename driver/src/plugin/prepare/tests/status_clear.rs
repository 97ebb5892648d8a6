//! The unprepare's clear of the driver's `status.devices` entries survives the kubelet's cancel (its
//! deadline drops the unprepare's future; the record is gone by then, so the kubelet's retry would
//! not clear) and a failure of the API server: a task of its own, tried again 2, 4, 8 ... s later as
//! the prepare's write is, until the claim's next prepare stops it. Paused time: the waits are the
//! plugin's own.

use super::status_retry::{KEY, failures_left, planned, setup, written};
use super::status_uid::{STATUS, count, kube_claims, preparer, stored};
use super::*;
use crate::plugin::prepare::status;
use std::sync::Arc;
use std::time::Duration;

/// The API server does not answer the clear; the kubelet gives up on the unprepare after 5 s and
/// calls it again, which answers once the clear's first try is over (timed out). The clear is tried
/// again and lands: the entries do not stay until the claim is deallocated.
#[tokio::test(start_paused = true)]
async fn the_unprepares_clear_survives_the_kubelets_cancel() {
    let (s, api) = super::status_uid::setup();
    let preparer = preparer(&s, Arc::new(kube_claims(&api)));
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(stored(&api)["status"]["devices"][0]["pool"], NODE);

    api.lock().unwrap().set_hung(true);
    let deadline = Duration::from_secs(5);
    let dropped = tokio::time::timeout(deadline, preparer.unprepare(vec![reference("u1")])).await;
    assert!(
        dropped.is_err(),
        "the unprepare waits for the clear's answer"
    );
    assert_eq!(count(&api, STATUS), 2, "the clear was sent");
    api.lock().unwrap().set_hung(false);

    // The kubelet's retry: no record left, done once the clear's first try is over.
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert!(preparer.recorded().await.is_empty());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        stored(&api)["status"]["devices"],
        json!([]),
        "cleared by a try again"
    );
    assert_eq!(count(&api, STATUS), 3);
}

/// A clear the API server fails (a 503) is tried again 2 s later, and lands; one that keeps failing
/// is tried [`status::TRIES`] times, 2, 4, 8, 16, 32, 60 and 60 s apart, as the write is, then
/// given up. The unprepare answers after the first try either way.
#[tokio::test(start_paused = true)]
async fn a_failed_clear_is_tried_again_as_the_write_is() {
    let s = setup(0);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.4.lock().unwrap().insert(KEY.into(), 1);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(failures_left(&s), 0, "the first try failed");
    assert_eq!(
        written(&s).unwrap(),
        planned(json!({"interfaceName": "net1"}))
    );
    tokio::time::sleep(status::FIRST_RETRY - Duration::from_millis(100)).await;
    assert_eq!(
        written(&s).unwrap(),
        planned(json!({"interfaceName": "net1"}))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(written(&s), Some(Vec::new()), "cleared by the try again");

    let s = setup(0);
    let start = tokio::time::Instant::now();
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.4.lock().unwrap().insert(KEY.into(), 100);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    let mut at = Duration::ZERO;
    let mut tries = 1;
    for wait in [2, 4, 8, 16, 32, 60, 60] {
        at += Duration::from_secs(wait);
        tokio::time::sleep_until(start + at - Duration::from_millis(100)).await;
        assert_eq!(100 - failures_left(&s), tries, "before {at:?}");
        tokio::time::sleep_until(start + at + Duration::from_millis(100)).await;
        tries += 1;
        assert_eq!(100 - failures_left(&s), tries, "at {at:?}");
    }
    assert_eq!(tries, status::TRIES as usize);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(100 - failures_left(&s), tries, "given up");
    assert_eq!(
        written(&s).unwrap(),
        planned(json!({"interfaceName": "net1"}))
    );
}

/// The claim is prepared again (a new pod) while the clear of its unprepare waits to be tried
/// again: the prepare stops the clear before it writes the status, which stays.
#[tokio::test(start_paused = true)]
async fn the_claims_next_prepare_stops_the_clears_tries_again() {
    let s = setup(0);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.4.lock().unwrap().insert(KEY.into(), 1);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    let with_status = planned(json!({"interfaceName": "net1"}));
    assert_eq!(written(&s).unwrap(), with_status);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        written(&s).unwrap(),
        with_status,
        "not cleared after the prepare"
    );
}

/// The claim's next prepare fails before it writes the status (a fault after its start) while the
/// clear of its unprepare waits to be tried again: the clear goes on and lands, so the unprepared
/// claim's entries do not stay (the next unprepare finds no record and would not clear).
#[tokio::test(start_paused = true)]
async fn a_prepare_that_fails_before_its_write_leaves_the_clear_trying() {
    let s = setup(0);
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = fail.clone();
    let preparer = s.preparer("boot-1").with_faults(Arc::new(move |at| {
        match failing.load(std::sync::atomic::Ordering::SeqCst) && at == Step::DevicesPrepared {
            true => Err("injected".into()),
            false => Ok(()),
        }
    }));
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.4.lock().unwrap().insert(KEY.into(), 1);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(
        written(&s).unwrap(),
        planned(json!({"interfaceName": "net1"})),
        "the first clear failed"
    );
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(written(&s), Some(Vec::new()), "cleared by the try again");
}

/// An unprepare whose record removal fails (EIO) after it started the clear, and whose clear's first
/// try failed: the kubelet calls it again, which starts a second clear. The first is stopped, not left
/// trying untracked: else its try again, 2 s later, would clear the status the claim's next prepare
/// wrote meanwhile.
#[tokio::test(start_paused = true)]
async fn a_clear_replaced_by_the_next_unprepares_is_stopped() {
    let s = setup(0);
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let mut config = s.config("boot-1", SliceConfig::new(NODE));
    config.checkpoint = config.checkpoint.with_write_fault(Arc::new(move || {
        match fail.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(std::io::Error::from_raw_os_error(5)),
            false => Ok(()),
        }
    }));
    let preparer = Preparer::new(config, s.claims.clone(), s.inventory.clone()).unwrap();
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.4.lock().unwrap().insert(KEY.into(), 1);
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_err());
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(written(&s), Some(Vec::new()), "cleared by the second clear");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    let with_status = planned(json!({"interfaceName": "net1"}));
    assert_eq!(written(&s).unwrap(), with_status);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        written(&s).unwrap(),
        with_status,
        "not cleared by the first clear's try again"
    );
}
