//! What the tests of the `dra-hal-plugin` binary share: the kubelet's side of its Unix sockets, the
//! fake API server's claims, and [`kubelet_end_to_end`], the whole conversation of a kubelet with one
//! plugin (run by `plugin_e2e` on the bare binary and by `plugin_container` in a restricted container).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::fake_api::FakeApi;
use driver::plugin::grpc::pluginregistration::registration_client::RegistrationClient;
use driver::plugin::grpc::pluginregistration::{InfoRequest, RegistrationStatus};
use driver::plugin::grpc::v1;
use driver::plugin::grpc::v1::dra_plugin_client::DraPluginClient;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

pub const NODE: &str = "node-1";

pub async fn channel(path: &Path) -> Channel {
    let path: PathBuf = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}

pub fn claim(uid: &str, devices: &[(&str, &str)]) -> serde_json::Value {
    let results: Vec<serde_json::Value> = devices
        .iter()
        .map(|(request, device)| {
            json!({"request": request, "driver": "hal.dra.dev", "pool": NODE, "device": device})
        })
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"namespace": "default", "name": format!("claim-{uid}"), "uid": uid},
        "spec": {"devices": {"requests": []}},
        "status": {"allocation": {"devices": {"results": results}}}
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn http_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Waits up to 30 s for `ready`; panics if the plugin exits first (with its standard error, where
/// the test pipes it).
pub async fn wait_for(what: &str, mut ready: impl FnMut() -> bool, child: &mut Child) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(pipe) = child.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(pipe, &mut stderr);
            }
            panic!("the plugin exited ({status}) while waiting for {what}: {stderr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn claim_ref(uid: &str) -> v1::Claim {
    v1::Claim {
        namespace: "default".into(),
        uid: uid.into(),
        name: format!("claim-{uid}"),
    }
}

/// The kubelet's whole conversation with one plugin on the GB300 fixture, with the fake API server over
/// TLS (offering HTTP/2 as kube-apiserver does): registration, published slices (and published again
/// after the kubelet deletes them), the health stream, prepare and unprepare of good and bad claims
/// (a GPU with an RDMA NIC), CDI files, the checkpoint, the claim's device status, metrics and health,
/// a hung API server (Prepare fails after the call deadline), and SIGTERM: a clean exit that removes
/// both sockets. `plugin` makes the command that starts the plugin given the test's directory (which
/// holds the kubeconfig, the kubelet's and the CDI directories); the plugin's arguments and pipes are
/// added to it. `serving` is called once the plugin has registered and published its slice. Returns
/// the plugin's standard error (JSON logs, checked to be one object per line).
pub async fn kubelet_end_to_end(
    plugin: impl FnOnce(&Path) -> Command,
    serving: impl FnOnce(),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut api = FakeApi::with_node(NODE);
    api.claims.insert(
        "default/claim-good".into(),
        claim(
            "good",
            &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        ),
    );
    api.claims.insert(
        "default/claim-ghost".into(),
        claim("ghost", &[("gpu", "gpu-0fff-00-00-0")]),
    );
    let state = Arc::new(Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    // Over TLS, as a real API server: the plugin speaks HTTP/2 to it.
    let tls = driver::fake_api::FakeTls::new().unwrap();
    tokio::spawn(FakeApi::serve_https(state.clone(), listener, tls.clone()));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, tls.kubeconfig(api_port)).unwrap();

    let kubelet = dir.path().join("kubelet");
    let cdi = dir.path().join("cdi");
    let metrics_port = free_port();
    let mut child = plugin(dir.path())
        .args([
            "--fixture",
            "gb300",
            "--node-name",
            NODE,
            "--log-format",
            "json",
        ])
        .arg("--kubelet-root-dir")
        .arg(&kubelet)
        .arg("--cdi-root")
        .arg(&cdi)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let registration = kubelet.join("plugins_registry/hal.dra.dev-reg.sock");
    let dra = kubelet.join("plugins/hal.dra.dev/dra.sock");
    wait_for(
        "the registration socket",
        // The socket file appears at bind(), a moment before listen(): wait until it accepts.
        || std::os::unix::net::UnixStream::connect(&registration).is_ok(),
        &mut child,
    )
    .await;

    // Registration, as the kubelet's plugin watcher does it.
    let mut reg = RegistrationClient::new(channel(&registration).await);
    let info = reg.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, "hal.dra.dev");
    assert_eq!(Path::new(&info.endpoint), dra);
    assert_eq!(
        info.supported_versions,
        [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1alpha1.DRAResourceHealth",
            "v1.DRAResourceHealth"
        ]
    );
    reg.notify_registration_status(RegistrationStatus {
        plugin_registered: true,
        error: String::new(),
    })
    .await
    .unwrap();

    // The slices are published on the fake API server.
    wait_for(
        "the ResourceSlice",
        || {
            state
                .lock()
                .unwrap()
                .slices
                .contains_key("node-1-hal-dra-dev-0")
        },
        &mut child,
    )
    .await;
    {
        let api = state.lock().unwrap();
        let slice = &api.slices["node-1-hal-dra-dev-0"];
        assert_eq!(slice["spec"]["devices"].as_array().unwrap().len(), 10);
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "uid-node-1");
    }
    serving();

    // The kubelet's health stream: every published device, healthy, in the node's pool.
    let mut health =
        driver::plugin::grpc::health_v1::dra_resource_health_client::DraResourceHealthClient::new(
            channel(&dra).await,
        )
        .node_watch_resources(driver::plugin::grpc::health_v1::NodeWatchResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), health.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.devices.len(), 10);
    for device in &first.devices {
        assert_eq!(device.device.as_ref().unwrap().pool_name, "node-1");
        assert_eq!(device.health, 1, "{device:?}");
        assert!(device.health_check_timeout_seconds > 0);
    }
    drop(health);

    // The kubelet deletes all of the node's slices at its start: the plugin's watch sees it and
    // publishes them again, the same, within 5 s.
    let published = state.lock().unwrap().slices["node-1-hal-dra-dev-0"]["spec"].clone();
    let wipe = "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3Dnode-1";
    let wiped = {
        let mut api = state.lock().unwrap();
        assert_eq!(api.handle("DELETE", wipe, b"").status(), Some(200));
        assert!(api.slices.is_empty());
        Instant::now()
    };
    wait_for(
        "the ResourceSlice to come back",
        || {
            state
                .lock()
                .unwrap()
                .slices
                .contains_key("node-1-hal-dra-dev-0")
        },
        &mut child,
    )
    .await;
    assert!(
        wiped.elapsed() < Duration::from_secs(5),
        "{:?}",
        wiped.elapsed()
    );
    assert_eq!(
        state.lock().unwrap().slices["node-1-hal-dra-dev-0"]["spec"],
        published
    );

    // Prepare: one good claim, one with a device this node does not have, one unknown.
    let mut dra_client = DraPluginClient::new(channel(&dra).await);
    let response = dra_client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![claim_ref("good"), claim_ref("ghost"), claim_ref("unknown")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.claims.len(), 3);
    let good = &response.claims["good"];
    assert_eq!(good.error, "");
    let ids: Vec<&str> = good
        .devices
        .iter()
        .flat_map(|d| d.cdi_device_ids.iter().map(String::as_str))
        .collect();
    assert_eq!(
        ids,
        [
            "hal.dra.dev/device=good-gpu-0008-06-00-0",
            "hal.dra.dev/device=good-rdma-0101-00-00-0"
        ]
    );
    assert_eq!(good.devices[1].pool_name, NODE);
    assert!(
        response.claims["ghost"]
            .error
            .contains("gpu-0fff-00-00-0 is not published")
    );
    assert!(response.claims["unknown"].error.contains("not found"));
    let spec = cdi.join("hal.dra.dev-device_good.json");
    assert!(spec.exists());
    let checkpoint =
        std::fs::read_to_string(kubelet.join("plugins/hal.dra.dev/checkpoint/good.json")).unwrap();
    assert!(checkpoint.contains("\"completed\""), "{checkpoint}");

    // The IB-only NIC is described in the claim's device status (server-side apply on /status).
    {
        let api = state.lock().unwrap();
        let devices = api.claims["default/claim-good"]["status"]["devices"].clone();
        assert_eq!(devices[0]["device"], "rdma-0101-00-00-0", "{devices}");
        assert_eq!(devices[0]["data"]["rdmaDevice"], "mlx5_0");
        assert!(api.log.iter().any(|l| l.method == "PATCH"
            && l.uri.starts_with(
                "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/claim-good/status?"
            )
            && l.uri.contains("fieldManager=hal.dra.dev")));
    }

    // Metrics and health.
    let metrics = http_get(metrics_port, "/metrics").await;
    assert!(
        metrics.contains("dra_hal_prepared_claims_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dra_hal_prepare_errors_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dra_hal_devices_published 10"),
        "{metrics}"
    );
    assert!(http_get(metrics_port, "/healthz").await.ends_with("ok\n"));

    // Unprepare (the unknown claim too: it succeeds).
    let response = dra_client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![claim_ref("good"), claim_ref("unknown")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        response.claims.values().all(|r| r.error.is_empty()),
        "{response:?}"
    );
    assert!(!spec.exists());

    // A hung API server (it accepts the connection and never answers): a Prepare that reads its claim
    // fails with the plugin's call deadline (10 s), well before the kubelet's (45 s), instead of
    // holding the kubelet; the plugin keeps serving.
    state.lock().unwrap().set_hung(true);
    let asked = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        dra_client.node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![claim_ref("good")],
        }),
    )
    .await
    .expect("Prepare answered")
    .unwrap()
    .into_inner();
    let waited = asked.elapsed();
    let error = &response.claims["good"].error;
    assert!(error.contains("timed out"), "{error}");
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    state.lock().unwrap().set_hung(false);
    assert!(http_get(metrics_port, "/healthz").await.ends_with("ok\n"));
    assert!(
        http_get(metrics_port, "/readyz").await.ends_with("ok\n"),
        "registered"
    );
    // Every call of the run (version, slices and their watch, claims, the hung ones) went over one
    // HTTP/2 connection.
    assert_eq!(state.lock().unwrap().connections, 1);

    // SIGTERM: a clean exit that removes both sockets.
    terminate(&child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!registration.exists() && !dra.exists(), "sockets removed");
    // JSON logs, one object per line.
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    assert!(stderr.contains("registered with the kubelet"), "{stderr}");
    stderr
}

/// SIGTERM, as the kubelet stops a pod.
pub fn terminate(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}
