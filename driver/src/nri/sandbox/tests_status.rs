//! The claim status write of `networkData` (a read and a server-side apply of the claim, each
//! allowed 20 s) runs beside the NRI event loop: the `RunPodSandbox` answer, which containerd waits
//! for only `plugin_request_timeout` (2 s by default) before it drops the plugin, does not wait for
//! a slow API server; the `networkData` lands once the server answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use serde_json::json;
use tokio::sync::Semaphore;

use super::tests::{api, connect, network, record, recorder, start_network, status_devices};
use super::*;
use crate::nri::fake_runtime::{FakeRuntime, pod_in_netns};
use crate::plugin::api::{BoxFuture, ClaimRef};
use crate::plugin::prepare::{ClaimReadError, KubeClaims, StatusWriteError};

/// The claims of the fake API server, whose status writes each wait for a permit of `gate` (an API
/// server that does not answer until the test lets it).
struct SlowStatus {
    inner: KubeClaims,
    gate: Arc<Semaphore>,
}

impl ClaimSource for SlowStatus {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>> {
        self.inner.get(namespace, name)
    }

    fn set_device_status(
        &self,
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        let (claim, driver) = (claim.clone(), driver.to_owned());
        Box::pin(async move {
            let _permit = self.gate.acquire().await.unwrap();
            self.inner.set_device_status(&claim, &driver, devices).await
        })
    }
}

#[tokio::test]
async fn run_pod_sandbox_answers_without_waiting_for_the_status_write_which_lands_later() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let nad = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;
    let api = api(&[("vf-test1", nad)]);
    let records = [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let mut net = network(&bin, dir.path(), records, &api);
    let client =
        crate::fake_api::FakeApi::mock_client(api.clone(), &crate::api::call_timeout_layer());
    let gate = Arc::new(Semaphore::new(0));
    net.claims = Some(Arc::new(SlowStatus {
        inner: KubeClaims::new(client),
        gate: gate.clone(),
    }));
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_network(&socket, net);
    let conn = connect(&runtime).await;

    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    // Before: the answer waited for the status write (here for ever; with containerd, past its
    // request timeout, which drops the plugin).
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        conn.sandbox_event(event::RUN_POD_SANDBOX, &pod),
    )
    .await
    .expect("RunPodSandbox answered while the status write waits");
    answer.unwrap();
    // The status as the preparer wrote it, until the API server answers.
    assert_eq!(
        status_devices(&api)[0]["networkData"],
        json!({"interfaceName": "net1"})
    );
    // Another event is answered meanwhile too.
    conn.sandbox_event(
        event::STOP_POD_SANDBOX,
        &pod_in_netns("sandbox9", "pod-uid-9", Path::new("/run/netns/cni-9")),
    )
    .await
    .unwrap();

    gate.add_permits(1);
    let mut devices = status_devices(&api);
    for _ in 0..400 {
        if !devices[0]["networkData"]["ips"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        devices = status_devices(&api);
    }
    assert_eq!(
        devices[0]["networkData"],
        json!({"interfaceName": "net1", "ips": ["192.0.2.44/24"],
               "hardwareAddress": "02:aa:bb:cc:dd:ee"})
    );
    assert_eq!(devices[0]["data"]["pciAddress"], "0000:3b:02.0");
    drop(conn);
    node.stop().await;
}
