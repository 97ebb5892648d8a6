//! The device status of a claim's network functions when the API server fails its write: tried
//! again (2, 4, 8 ... s later, [`status::TRIES`] tries in all) after the prepare answered, keeping
//! the `networkData` the NRI plugin wrote meanwhile; stopped by the claim's unprepare or deletion.
//! Paused time: the waits are the plugin's own.

use super::*;
use crate::plugin::prepare::status;
use crate::podnet::cni::NetworkData;
use std::sync::Arc;
use std::time::Duration;

pub(super) const KEY: &str = "ns/claim-u1";

/// The xeon's VF of claim `u1`, its status write failing `failures` times.
pub(super) fn setup(failures: usize) -> Setup {
    let s = Setup::on("xeon");
    s.claims
        .add("u1", &[("vf", "nic-0000-b1-00-2")], vf_config(None, "net1"));
    s.claims.4.lock().unwrap().insert(KEY.into(), failures);
    s
}

/// The status the prepare plans for `u1`, with `network_data` as its `networkData`.
pub(super) fn planned(network_data: serde_json::Value) -> Vec<serde_json::Value> {
    vec![
        json!({"driver": DRIVER, "pool": NODE, "device": "nic-0000-b1-00-2",
        "networkData": network_data,
        "data": {"pciAddress": "0000:b1:00.2", "netdev": "ens2f0v0", "rdmaDevice": "mlx5_1",
                 "network": "vf-test5/vf-test1"}}),
    ]
}

pub(super) fn written(s: &Setup) -> Option<Vec<serde_json::Value>> {
    s.claims.1.lock().unwrap().get(KEY).cloned()
}

pub(super) fn failures_left(s: &Setup) -> usize {
    s.claims.4.lock().unwrap()[KEY]
}

fn pod_data() -> NetworkData {
    serde_json::from_value(
        json!({"interfaceName": "net1", "ips": ["10.0.0.2/24"], "hardwareAddress": "02:00:00:00:00:01"}),
    )
    .unwrap()
}

/// The first try fails, as the API server answers (the write is lost): the prepare answers (the
/// claim is prepared), and the pod's `networkData` (the NRI plugin's write, through the same source)
/// writes nothing, as the claim has no entry of this driver's. The write is tried again 2 s later.
/// When the first write did land and only its answer was lost, the pod's `networkData` is kept by the
/// try again: the entry written then has both the prepare's `data` and the pod's addresses.
#[tokio::test(start_paused = true)]
async fn a_failed_status_write_is_tried_again_and_keeps_the_network_data_written_meanwhile() {
    let s = setup(1);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(written(&s), None, "the first try failed");
    let claim = reference("u1");
    let nic = "nic-0000-b1-00-2";
    crate::podnet::status::write_network_data(&*s.claims, &claim, DRIVER, nic, &pod_data())
        .await
        .unwrap();
    assert_eq!(written(&s), None, "no entry: the pod's data is not written");

    // The first write landed after all (its answer lost), then the pod's networkData came.
    s.claims
        .set_device_status(&claim, DRIVER, planned(json!({"interfaceName": "net1"})))
        .await
        .unwrap();
    crate::podnet::status::write_network_data(&*s.claims, &claim, DRIVER, nic, &pod_data())
        .await
        .unwrap();
    tokio::time::sleep(status::FIRST_RETRY + Duration::from_millis(500)).await;
    let with_pod = planned(json!({"interfaceName": "net1", "ips": ["10.0.0.2/24"],
                                  "hardwareAddress": "02:00:00:00:00:01"}));
    assert_eq!(written(&s).unwrap(), with_pod);
    // Written: not tried again.
    let reads = s.claims.3.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(s.claims.3.lock().unwrap().len(), reads);
    assert_eq!(written(&s).unwrap(), with_pod);
}

/// Claims whose read-and-write of one claim's status is one step (a lock per claim, as
/// `KubeClaims`), and whose change waits for `gate` between its read and its write (a slow API
/// server).
struct LockedSlow {
    inner: Arc<Claims>,
    locks: dra_kubelet_plugin::locks::KeyedLocks,
    gate: Arc<tokio::sync::Semaphore>,
}

impl ClaimSource for LockedSlow {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, super::super::ClaimReadError>> {
        self.inner.get(namespace, name)
    }

    fn set_device_status(
        &self,
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), super::super::StatusWriteError>> {
        self.inner.set_device_status(claim, driver, devices)
    }

    fn clear_device_status<'a>(
        &'a self,
        claim: &'a ClaimRef,
        driver: &'a str,
    ) -> BoxFuture<'a, Result<(), super::super::StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.locks.lock(&claim.name).await;
            self.inner
                .set_device_status(claim, driver, Vec::new())
                .await
        })
    }

    fn change_device_status<'a>(
        &'a self,
        claim: &'a ClaimRef,
        driver: &'a str,
        change: super::super::StatusChange,
    ) -> BoxFuture<'a, Result<(), super::super::StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.locks.lock(&claim.name).await;
            let current = self
                .inner
                .get(&claim.namespace, &claim.name)
                .await
                .unwrap()
                .unwrap();
            let _slow = self.gate.acquire().await.unwrap();
            let mine = dra_kubelet_plugin::claims::entries_of(current, driver);
            match change(mine) {
                Some(devices) => self.inner.set_device_status(claim, driver, devices).await,
                None => Ok(()),
            }
        })
    }
}

/// The pod's `networkData` write (the NRI plugin's, in a task of its own) read the claim before its
/// unprepare, and lands slowly: the unprepare's clear comes after it (ordered by the source), and a
/// write of the pod's data after the clear writes nothing: no entry comes back to a claim no longer
/// prepared here.
#[tokio::test(start_paused = true)]
async fn the_pods_network_data_never_lands_after_the_unprepares_clear() {
    let s = setup(0);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let claims = Arc::new(LockedSlow {
        inner: s.claims.clone(),
        locks: Default::default(),
        gate: gate.clone(),
    });
    let config = s.config("boot-1", SliceConfig::new(NODE));
    let preparer = Arc::new(Preparer::new(config, claims.clone(), s.inventory.clone()).unwrap());
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert!(written(&s).is_some_and(|w| !w.is_empty()));
    let nic = "nic-0000-b1-00-2";
    let pod_write = |claims: Arc<LockedSlow>| {
        tokio::spawn(async move {
            crate::podnet::status::write_network_data(
                &*claims,
                &reference("u1"),
                DRIVER,
                nic,
                &pod_data(),
            )
            .await
        })
    };
    let nri = pod_write(claims.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The pod goes; the kubelet unprepares the claim while the pod's write waits for its answer.
    let unprepare = tokio::spawn({
        let preparer = preparer.clone();
        async move { preparer.unprepare(vec![reference("u1")]).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.add_permits(100);
    nri.await.unwrap().unwrap();
    assert!(unprepare.await.unwrap()["u1"].is_ok());
    assert_eq!(written(&s), Some(Vec::new()), "cleared last");
    // A pod write that comes after the clear writes nothing.
    pod_write(claims.clone()).await.unwrap().unwrap();
    assert_eq!(written(&s), Some(Vec::new()));
}

/// A write that keeps failing is tried [`status::TRIES`] times, 2, 4, 8, 16, 32, 60 and 60 s apart,
/// then given up; one that fails twice is written at the third try, 6 s after the first.
#[tokio::test(start_paused = true)]
async fn a_status_write_is_tried_again_after_doubling_waits_then_given_up() {
    let s = setup(100);
    let start = tokio::time::Instant::now();
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
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
    assert_eq!(written(&s), None);

    let s = setup(2);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    tokio::time::sleep(Duration::from_millis(5900)).await;
    assert_eq!(written(&s), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        written(&s).unwrap(),
        planned(json!({"interfaceName": "net1"}))
    );
}

/// The claim's unprepare stops the tries again (its clear comes after them, and nothing writes the
/// status after it); a claim deleted meanwhile ends them at the next try's read.
#[tokio::test(start_paused = true)]
async fn the_unprepare_or_the_claims_deletion_stops_the_tries_again() {
    let s = setup(2);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(failures_left(&s), 0, "tried again once");
    let before = tokio::time::Instant::now();
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "the unprepare waited for the next try: {:?}",
        before.elapsed()
    );
    assert_eq!(written(&s), Some(Vec::new()), "cleared");
    let reads = |s: &Setup| {
        s.claims
            .3
            .lock()
            .unwrap()
            .iter()
            .filter(|k| *k == KEY)
            .count()
    };
    assert_eq!(reads(&s), 2, "the prepare's read and one try's");
    // The third try would have come 6 s after the first, and succeeded.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(written(&s), Some(Vec::new()), "written after the unprepare");
    assert_eq!(reads(&s), 2);

    let s = setup(1);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    s.claims.remove("u1");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(reads(&s), 2, "the prepare's read and one try's");
    assert_eq!(written(&s), None);
}
