//! The real `dra-hal-plugin` binary on the GB300 fixture, with the project's fake API server (over TLS,
//! offering HTTP/2 as kube-apiserver does, in the main test; plain HTTP in the others), and this test
//! acting as the kubelet over the real Unix sockets: registration, prepare and unprepare of good and bad claims, CDI files, the checkpoint,
//! published slices (and published again after the kubelet deletes them), a hung API server (Prepare
//! fails after the call deadline), metrics and health, SIGTERM; and ([`health`]) a link that goes down
//! and up on a fixture tree the test changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

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

#[path = "plugin_e2e/health.rs"]
mod health;

const NODE: &str = "node-1";

async fn channel(path: &Path) -> Channel {
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

fn claim(uid: &str, devices: &[(&str, &str)]) -> serde_json::Value {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> String {
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

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool, child: &mut Child) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the plugin exited ({status}) while waiting for {what}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn claim_ref(uid: &str) -> v1::Claim {
    v1::Claim {
        namespace: "default".into(),
        uid: uid.into(),
        name: format!("claim-{uid}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_binary_serves_the_kubelet_end_to_end() {
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
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
}

/// SIGTERM while the startup waits for an API server that does not answer (nothing listens on its
/// port): a clean exit at once, not the signal's default action (which PID 1, as in the image, would
/// not even get: the kernel drops a signal without a handler for it) nor the grace period.
#[test]
fn sigterm_during_the_startup_is_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(free_port())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
        .args(["--fixture", "xeon", "--node-name", NODE])
        .arg("--kubelet-root-dir")
        .arg(dir.path().join("kubelet"))
        .arg("--cdi-root")
        .arg(dir.path().join("cdi"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the handlers' installation, into the version read's retries.
    std::thread::sleep(Duration::from_secs(2));
    terminate(&child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopped before serving"), "{stderr}");
}

#[test]
fn bad_flags_fail_with_clear_messages() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
            .args(args)
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--node-name",
        "--kubelet-root-dir",
        "--cdi-root",
        "--kubeconfig",
        "--driver-name",
        "--sysfs-root",
        "--fixture",
        "--cpu-mode",
        "--reserved-cpus",
        "--compat-domains",
        "--publish",
        "--nri",
        "--nri-socket",
        "--nri-index",
        "--nri-unsolicited-updates",
        "--pod-networking",
    ] {
        assert!(text.contains(flag), "{flag}");
    }
    // Pod networking runs at NRI's pod sandbox events: refused without --nri.
    let bad = run(&["--pod-networking", "--node-name", "n"]);
    assert_eq!(bad.status.code(), Some(2));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("--nri"), "{text}");
    let bad = run(&["--cpu-mode", "sideways"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = run(&["--nri-index", "7"]);
    assert_eq!(bad.status.code(), Some(2));
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        text.contains("NRI plugin index \"7\": two digits (00-99) expected"),
        "{text}"
    );
}

/// The binary with `--nri` on the 2-socket Xeon fixture: it registers with an NRI runtime (the
/// protocol-level fake), and a CPU claim prepared through the kubelet socket pins the claim's
/// container to its CPUs and, in the answer to that container's creation, moves the running
/// containers off them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_binary_pins_containers_through_nri() {
    use driver::nri::fake_runtime::{FakeRuntime, container, pod};

    let dir = tempfile::tempdir().unwrap();
    let mut api = FakeApi::with_node(NODE);
    api.claims.insert(
        "default/claim-cpus".into(),
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": "default", "name": "claim-cpus", "uid": "cpus"},
            "spec": {"devices": {"requests": []}},
            "status": {
                "allocation": {"devices": {"results": [{
                    "request": "cpus", "driver": "hal.dra.dev", "pool": NODE,
                    "device": "cpus-numa-1", "shareID": "share-1",
                    "consumedCapacity": {"cpu": "2"}}]}},
                "reservedFor": [{"resource": "pods", "name": "worker", "uid": "uid-worker"}]
            }
        }),
    );
    let state = Arc::new(Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_http(state.clone(), listener));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(api_port)).unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();

    let kubelet = dir.path().join("kubelet");
    let metrics_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
        .args(["--fixture", "xeon", "--node-name", NODE])
        .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
        .args(["--reserved-cpus", "0,112", "--nri", "--nri-index", "05"])
        .arg("--nri-socket")
        .arg(&socket)
        .arg("--kubelet-root-dir")
        .arg(&kubelet)
        .arg("--cdi-root")
        .arg(dir.path().join("cdi"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let (conn, _) = runtime.accept().await.unwrap();
    assert_eq!(conn.registered, ("dra-hal".to_owned(), "05".to_owned()));
    let other = pod("sandbox-web", "uid-web");
    conn.synchronize(
        vec![other.clone()],
        vec![container("web", &other, &[], "")],
        10,
    )
    .await
    .unwrap();
    // Every online CPU but the reserved ones.
    assert_eq!(conn.cpus("web").unwrap(), "1-111,113-223");

    let dra = kubelet.join("plugins/hal.dra.dev/dra.sock");
    // The socket file appears at bind(), a moment before listen(): wait until it accepts.
    wait_for(
        "the DRA socket",
        || std::os::unix::net::UnixStream::connect(&dra).is_ok(),
        &mut child,
    )
    .await;
    let mut dra_client = DraPluginClient::new(channel(&dra).await);
    let response = dra_client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![claim_ref("cpus")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.claims["cpus"].error.is_empty(), "{response:?}");
    let spec = dir.path().join("cdi/hal.dra.dev-device_cpus.json");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    let env: Vec<String> = spec["devices"][0]["containerEdits"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    let cpuset = env
        .iter()
        .find_map(|e| e.strip_prefix("DRA_CPUSET_cpus="))
        .unwrap()
        .to_owned();
    // The claim's container is created: the answer pins it and moves `web` off the claim's CPUs.
    let worker = pod("sandbox-worker", "uid-worker");
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let answer = conn
        .create(&worker, container("worker", &worker, &env, ""))
        .await
        .unwrap();
    assert_eq!(answer.update.len(), 1);
    assert_eq!(conn.cpus("worker").unwrap(), cpuset);
    let pool = conn.cpus("web").unwrap();
    let pool = hal::CpuSet::from_cpulist(&pool).unwrap();
    let claimed = hal::CpuSet::from_cpulist(&cpuset).unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        pool.intersection(&claimed).is_empty(),
        "{pool} and {claimed}"
    );
    assert_eq!(pool.len(), 222 - 2);
    assert_eq!(conn.unsolicited_received(), 0);
    let metrics = http_get(metrics_port, "/metrics").await;
    for line in [
        "dra_hal_nri_connected 1",
        "dra_hal_nri_containers{placement=\"exclusive\"} 1",
        "dra_hal_nri_containers{placement=\"shared\"} 1",
        "dra_hal_nri_refused_containers_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    terminate(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("registered with the NRI runtime"),
        "{stderr}"
    );
}

/// SIGTERM, as the kubelet stops a pod.
fn terminate(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

/// The `hal-fixture-*` trees in `dir`.
fn fixture_trees(dir: &Path) -> Vec<PathBuf> {
    let mut trees: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hal-fixture-"))
        })
        .collect();
    trees.sort();
    trees
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugins_fixture_tree_is_removed_by_the_next_one_and_a_clean_exit_removes_its_own()
{
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(Mutex::new(FakeApi::with_node(NODE)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_http(state, listener));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(api_port)).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let start = |run: &str| {
        Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
            .args([
                "--fixture",
                "gb300",
                "--node-name",
                NODE,
                "--metrics-address",
                "",
            ])
            .arg("--kubelet-root-dir")
            .arg(dir.path().join(run))
            .arg("--cdi-root")
            .arg(dir.path().join("cdi"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("TMPDIR", &scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let registration = |run: &str| {
        dir.path()
            .join(run)
            .join("plugins_registry/hal.dra.dev-reg.sock")
    };

    let mut first = start("one");
    wait_for(
        "the first plugin",
        || registration("one").exists(),
        &mut first,
    )
    .await;
    let killed = fixture_trees(&scratch);
    assert_eq!(killed.len(), 1, "{killed:?}");
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(killed[0].is_dir(), "a kill leaves the tree");

    let mut second = start("two");
    wait_for(
        "the second plugin",
        || registration("two").exists(),
        &mut second,
    )
    .await;
    let trees = fixture_trees(&scratch);
    assert_eq!(trees.len(), 1, "{trees:?}");
    assert_ne!(
        trees, killed,
        "the dead plugin's tree is gone, the new one is its own"
    );

    terminate(&second);
    let status = second.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        fixture_trees(&scratch).is_empty(),
        "a clean exit removes its tree"
    );
}

/// 1100 idle connections to the metrics port of a plugin limited to 256 descriptors (as a pod's
/// limit would be) do not stop it from serving the kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_metrics_connections_does_not_starve_the_kubelet_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = FakeApi::with_node(NODE);
    let good = claim("good", &[("gpu", "gpu-0008-06-00-0")]);
    api.claims.insert("default/claim-good".into(), good);
    let state = Arc::new(Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_http(state, listener));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(api_port)).unwrap();
    let metrics_port = free_port();
    let kubelet = dir.path().join("kubelet");
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_dra-hal-plugin"))
        .args(["--fixture", "gb300", "--node-name", NODE])
        .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
        .arg("--kubelet-root-dir")
        .arg(&kubelet)
        .arg("--cdi-root")
        .arg(dir.path().join("cdi"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dra = kubelet.join("plugins/hal.dra.dev/dra.sock");
    wait_for("the DRA socket", || dra.exists(), &mut child).await;

    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..1100 {
        flood.spawn(async move {
            // Held open, silent, until the test ends.
            let _idle = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await;
            std::future::pending::<()>().await;
        });
    }
    let mut client = DraPluginClient::new(channel(&dra).await);
    let response = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![claim_ref("good")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.claims["good"].error, "", "{response:?}");
    // The health check is answered within the kubelet's probe timeout (1 s) during the flood.
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(1), probe).await;
    let answer = answer.expect("/healthz answered within 1 s").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(child.try_wait().unwrap().is_none(), "the plugin still runs");
    flood.abort_all();
    terminate(&child);
    assert!(child.wait().unwrap().success());
}
