//! The device status writes of a claim are bound to its UID: a claim deleted and re-created under
//! its name (another pod's) between a prepare and its status write, a try again of it, or the
//! unprepare's clear, gets nothing of the old claim written into it nor cleared from it. Through the
//! API server's source (`KubeClaims`) against the fake API server, which answers a status apply
//! whose `metadata.uid` is not the stored claim's with `422 Invalid`, as the real one does. Paused
//! time: the waits are the plugin's own.

use super::*;
use crate::fake_api::FakeApi;
use crate::plugin::prepare::KubeClaims;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(super) const STATUS: &str =
    "PATCH /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-u1/status";
const READ: &str = "GET /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-u1";

/// The xeon's VF of claim `u1`, on a fake API server.
pub(super) fn setup() -> (Setup, Arc<Mutex<FakeApi>>) {
    let s = Setup::on("xeon");
    s.claims
        .add("u1", &[("vf", "nic-0000-b1-00-2")], vf_config(None, "net1"));
    let claim = serde_json::to_value(&s.claims.0.lock().unwrap()["ns/claim-u1"]).unwrap();
    let mut api = FakeApi::with_node(NODE);
    api.claims.insert("ns/claim-u1".into(), claim);
    (s, Arc::new(Mutex::new(api)))
}

pub(super) fn preparer(s: &Setup, claims: Arc<dyn ClaimSource>) -> Preparer {
    let config = s.config("boot-1", SliceConfig::new(NODE));
    Preparer::new(config, claims, s.inventory.clone()).unwrap()
}

pub(super) fn kube_claims(api: &Arc<Mutex<FakeApi>>) -> KubeClaims {
    KubeClaims::new(FakeApi::mock_client(
        api.clone(),
        &crate::api::call_timeout_layer(),
    ))
}

/// Another pod's claim under the same name, whose status this driver wrote on another node (the
/// same field manager): what a write or a clear of the old claim would overwrite.
fn recreate(api: &Arc<Mutex<FakeApi>>) -> serde_json::Value {
    let devices = json!([{"driver": DRIVER, "pool": "node-2", "device": "nic-0000-3b-02-0",
                          "data": {"pciAddress": "0000:3b:02.0"}}]);
    let claim = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "claim-u1", "namespace": "ns", "uid": "u1-again"},
        "spec": {"devices": {"requests": []}}, "status": {"devices": devices}});
    api.lock()
        .unwrap()
        .claims
        .insert("ns/claim-u1".into(), claim.clone());
    claim
}

pub(super) fn stored(api: &Arc<Mutex<FakeApi>>) -> serde_json::Value {
    api.lock().unwrap().claims["ns/claim-u1"].clone()
}

pub(super) fn count(api: &Arc<Mutex<FakeApi>>, request: &str) -> usize {
    let api = api.lock().unwrap();
    api.log.iter().filter(|l| l.short() == request).count()
}

/// The first try fails (a 503); the claim is deleted and re-created before the try again, which
/// reads it, sees another UID and writes nothing, and no try comes after it.
#[tokio::test(start_paused = true)]
async fn a_try_again_writes_nothing_into_a_claim_re_created_under_its_name() {
    let (s, api) = setup();
    api.lock().unwrap().fail_once.push((STATUS.into(), 503));
    let preparer = preparer(&s, Arc::new(kube_claims(&api)));
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    let again = recreate(&api);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        stored(&api),
        again,
        "the re-created claim's status is its own"
    );
    assert_eq!(count(&api, STATUS), 1, "only the first try wrote");
    assert_eq!(
        count(&api, READ),
        2,
        "the prepare's read and one try's: then it ended"
    );
}

/// The API server's source whose first read is followed by the claim's re-creation: the prepare
/// read the claim it prepares, and its status apply finds another one under the name.
struct RecreatedAfterRead {
    inner: KubeClaims,
    api: Arc<Mutex<FakeApi>>,
    done: AtomicBool,
}

impl ClaimSource for RecreatedAfterRead {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, super::super::ClaimReadError>> {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            let read = self.inner.get(&namespace, &name).await;
            if !self.done.swap(true, Ordering::SeqCst) {
                recreate(&self.api);
            }
            read
        })
    }

    fn set_device_status(
        &self,
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), super::super::StatusWriteError>> {
        self.inner.set_device_status(claim, driver, devices)
    }
}

/// Re-created between the prepare's read and its status write: the API server refuses the write
/// (422, another UID), which ends the write with no try again; the prepare answers (the status is
/// not the prepare's to fail on, and the kubelet unprepares the stale claim).
#[tokio::test(start_paused = true)]
async fn a_status_write_to_a_claim_re_created_after_the_prepares_read_writes_nothing() {
    let (s, api) = setup();
    let claims = RecreatedAfterRead {
        inner: kube_claims(&api),
        api: api.clone(),
        done: AtomicBool::new(false),
    };
    let preparer = preparer(&s, Arc::new(claims));
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    tokio::time::sleep(Duration::from_secs(600)).await;
    let again = stored(&api);
    assert_eq!(again["metadata"]["uid"], "u1-again");
    assert_eq!(again["status"]["devices"][0]["pool"], "node-2");
    assert_eq!(again["status"]["devices"].as_array().unwrap().len(), 1);
    assert_eq!(count(&api, STATUS), 1, "refused once, not tried again");
    assert_eq!(count(&api, READ), 1, "no try again read the claim");
}

/// The claim is deleted and re-created while its pod runs; the kubelet then unprepares the old one:
/// its clear leaves the new claim's entries (this driver's, written on another node) alone, and
/// the unprepare succeeds.
#[tokio::test(start_paused = true)]
async fn the_unprepares_clear_leaves_a_claim_re_created_under_its_name_alone() {
    let (s, api) = setup();
    let preparer = preparer(&s, Arc::new(kube_claims(&api)));
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(stored(&api)["status"]["devices"][0]["pool"], NODE);
    let again = recreate(&api);
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_ok());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(stored(&api), again);
    assert_eq!(
        count(&api, STATUS),
        2,
        "the prepare's write and one clear, not tried again"
    );
    assert!(preparer.recorded().await.is_empty());
}
