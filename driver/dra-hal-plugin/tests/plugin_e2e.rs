//! The real `dra-hal-plugin` binary on the GB300 fixture, with the project's fake API server (over TLS,
//! offering HTTP/2 as kube-apiserver does, in the main test; plain HTTP in the others), and this test
//! acting as the kubelet over the real Unix sockets: registration, prepare and unprepare of good and bad claims, CDI files, the checkpoint,
//! published slices (and published again after the kubelet deletes them), a hung API server (Prepare
//! fails after the call deadline), metrics and health, SIGTERM; and ([`health`]) a link that goes down
//! and up on a fixture tree the test changes. The main test's conversation is
//! [`common::kubelet_end_to_end`], which `plugin_container` holds in a restricted container too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::fake_api::FakeApi;
use driver::plugin::grpc::v1;
use driver::plugin::grpc::v1::dra_plugin_client::DraPluginClient;
use serde_json::json;

mod common;
use common::{NODE, channel, claim, claim_ref, free_port, http_get, terminate, wait_for};

#[path = "plugin_e2e/health.rs"]
mod health;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_binary_serves_the_kubelet_end_to_end() {
    common::kubelet_end_to_end(
        |_| Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin")),
        || {},
    )
    .await;
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
