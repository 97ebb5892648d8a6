//! The plugin binary on a fixture tree this test changes (`--sysfs-root`), with a 1.36 API server:
//! a link that goes down and up again reaches two kubelet health streams (`v1` and `v1alpha1`) and
//! the published slice (a `None` taint while it is down).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::fake_api::FakeApi;
use driver::plugin::grpc::{health_v1, health_v1alpha1};

use super::{NODE, channel, terminate, wait_for};

/// The NIC whose link the test takes down: ens1f0 of the Xeon fixture.
const NIC: &str = "nic-0000-3b-00-0";

/// Reads a stream until `NIC` has `health` (1 healthy, 2 unhealthy); returns its message.
macro_rules! until_nic {
    ($stream:expr, $health:expr) => {{
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the stream never said {} for {NIC}",
                $health
            );
            let message = tokio::time::timeout(Duration::from_secs(10), $stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let found = message
                .devices
                .iter()
                .find(|d| d.device.as_ref().is_some_and(|id| id.device_name == NIC))
                .map(|d| (d.health, d.message.clone()));
            if let Some((health, text)) = found
                && health == $health
            {
                break text;
            }
        }
    }};
}

/// The taints of `NIC` in the published slices, as `value:effect`.
fn published_taints(state: &Mutex<FakeApi>) -> Vec<String> {
    let api = state.lock().unwrap();
    api.slices
        .values()
        .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == NIC)
        .flat_map(|d| d["taints"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            format!(
                "{}:{}",
                t["value"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_going_down_and_up_reaches_every_health_stream_and_the_slice() {
    let dir = tempfile::tempdir().unwrap();
    let tree = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let mut api = FakeApi::with_node(NODE);
    api.server_minor = Some(36);
    let state = Arc::new(Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_http(state.clone(), listener));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(api_port)).unwrap();
    let kubelet = dir.path().join("kubelet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
        .arg("--sysfs-root")
        .arg(tree.root())
        .args(["--node-name", NODE, "--rescan-interval", "1"])
        .args(["--metrics-address", ""])
        .arg("--kubelet-root-dir")
        .arg(&kubelet)
        .arg("--cdi-root")
        .arg(dir.path().join("cdi"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dra = kubelet.join("plugins/hal.dra.dev/dra.sock");
    wait_for(
        "the DRA socket",
        || std::os::unix::net::UnixStream::connect(&dra).is_ok(),
        &mut child,
    )
    .await;

    // Two kubelet streams at once, one per health API version.
    let mut v1 =
        health_v1::dra_resource_health_client::DraResourceHealthClient::new(channel(&dra).await)
            .node_watch_resources(health_v1::NodeWatchResourcesRequest {})
            .await
            .unwrap()
            .into_inner();
    let mut v1alpha1 = health_v1alpha1::dra_resource_health_client::DraResourceHealthClient::new(
        channel(&dra).await,
    )
    .node_watch_resources(health_v1alpha1::NodeWatchResourcesRequest {})
    .await
    .unwrap()
    .into_inner();
    until_nic!(v1, 1);
    until_nic!(v1alpha1, 1);
    wait_for(
        "the slices",
        || !state.lock().unwrap().slices.is_empty(),
        &mut child,
    )
    .await;
    assert_eq!(published_taints(&state), Vec::<String>::new());

    // The cable is pulled.
    let net = tree.root().join("sys/class/net/ens1f0");
    std::fs::write(net.join("operstate"), "down\n").unwrap();
    std::fs::write(net.join("carrier"), "0\n").unwrap();
    let expected =
        "link down on ens1f0 (operstate down, carrier 0); usable again when the link comes back";
    assert_eq!(until_nic!(v1, 2), expected);
    assert_eq!(until_nic!(v1alpha1, 2), expected);
    wait_for(
        "the link-down taint",
        || published_taints(&state) == ["link-down:None"],
        &mut child,
    )
    .await;

    // And put back.
    std::fs::write(net.join("operstate"), "up\n").unwrap();
    std::fs::write(net.join("carrier"), "1\n").unwrap();
    assert_eq!(until_nic!(v1, 1), "");
    assert_eq!(until_nic!(v1alpha1, 1), "");
    wait_for(
        "the taint to go",
        || published_taints(&state).is_empty(),
        &mut child,
    )
    .await;
    terminate(&child);
    assert!(child.wait().unwrap().success());
}
