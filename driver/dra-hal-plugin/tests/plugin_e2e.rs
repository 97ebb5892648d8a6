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

/// The plugin binary with `args` and `env`, none of the environment variables it reads inherited,
/// killed if it has not exited after 20 s; its exit status (`None`: killed) and stderr.
fn run_briefly(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"));
    for name in [
        "NODE_NAME",
        "KUBECONFIG",
        "RUST_LOG",
        "POD_NETWORKING",
        "DEVICE_METADATA",
        "NRI_UNSOLICITED_UPDATES",
        "DEVICE_FILTER",
        "VF_POLICY",
        "RESCAN_INTERVAL",
        "CNI_TIMEOUT",
        "LOG_FORMAT",
    ] {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn bad_flags_fail_with_clear_messages() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
            .args(args)
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .env_remove("POD_NETWORKING")
            .env_remove("RUST_LOG")
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
    // Bounded, not raised to 1 in silence nor past the clock (`Instant + u64::MAX s` panicked).
    for (flag, value, range) in [
        ("--rescan-interval", "0", "1..=86400"),
        ("--rescan-interval", "18446744073709551615", "1..=86400"),
        ("--cni-timeout", "0", "1..=3600"),
        ("--cni-timeout", "3601", "1..=3600"),
    ] {
        let bad = run(&[flag, value, "--node-name", "n"]);
        assert_eq!(bad.status.code(), Some(2), "{flag} {value}");
        let text = String::from_utf8_lossy(&bad.stderr);
        assert!(
            text.contains(&format!("{value} is not in {range}")),
            "{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    // --help names RUST_LOG, what boolean variables take, and what the plugin does with
    // --counter-layout.
    for words in [
        "RUST_LOG filters the log",
        "true, yes, y, on, 1 or false, no, n, off, 0",
        "--counter-layout: ignored by the plugin",
        "Ignored by the plugin, which always publishes the layout of the API server's version",
        "KUBECONFIG is not read as a ':'-separated list",
    ] {
        assert!(text_of(&help.stdout).contains(words), "{words}");
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A boolean variable takes the usual words, and one that is false requires nothing
/// (`POD_NETWORKING=false` was refused for want of --nri).
#[test]
fn boolean_variables_take_the_usual_words() {
    let missing = [
        "--node-name",
        "n",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ];
    for value in ["false", "0", "no", "off", "FALSE", "n"] {
        let (status, stderr) = run_briefly(&missing, &[("POD_NETWORKING", value)]);
        // Past the flags, to the kubeconfig.
        assert_eq!(status, Some(1), "POD_NETWORKING={value}: {stderr}");
        assert!(stderr.contains("reading kubeconfig"), "{stderr}");
    }
    for value in ["true", "1", "yes", "on", "TRUE"] {
        let (status, stderr) = run_briefly(&missing, &[("POD_NETWORKING", value)]);
        assert_eq!(status, Some(2), "POD_NETWORKING={value}: {stderr}");
        assert!(
            stderr.contains("--pod-networking (or POD_NETWORKING true) needs --nri"),
            "{stderr}"
        );
    }
    let (status, stderr) = run_briefly(&missing, &[("DEVICE_METADATA", "1")]);
    assert_eq!(status, Some(1), "{stderr}");
    let (status, stderr) = run_briefly(&missing, &[("DEVICE_METADATA", "maybe")]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'maybe'"), "{stderr}");
}

/// `RUST_LOG=warning` turned every event off (tracing reads it as a target), and a filter that
/// did not parse fell back to `info` in silence: both refused, naming RUST_LOG.
#[test]
fn a_rust_log_that_is_not_a_filter_is_refused() {
    let args = [
        "--node-name",
        "n",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ];
    let (status, stderr) = run_briefly(&args, &[("RUST_LOG", "warning")]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("RUST_LOG \"warning\": \"warning\" is not a level")
            && stderr.contains("did you mean \"warn\"?"),
        "{stderr}"
    );
    let (status, stderr) = run_briefly(&args, &[("RUST_LOG", "driver=loud")]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("RUST_LOG \"driver=loud\": "), "{stderr}");
    let (status, stderr) = run_briefly(&args, &[("RUST_LOG", "warn")]);
    assert_eq!(status, Some(1), "{stderr}");
}

/// The error that ends the process is told once: one log line (one JSON object with
/// `--log-format json`), or one plain line on stderr when the log shows no errors.
#[test]
fn a_fatal_error_is_told_once() {
    let args = [
        "--node-name",
        "n",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ];
    let (status, stderr) = run_briefly(&[&args[..], &["--log-format", "json"]].concat(), &[]);
    assert_eq!(status, Some(1));
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["level"], "ERROR", "{stderr}");
    let message = event["fields"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "reading kubeconfig /nonexistent/kubeconfig: No such file or directory (os error 2)"
    );
    let (_, stderr) = run_briefly(&args, &[]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(" ERROR "), "{stderr}");
    let (status, stderr) = run_briefly(&args, &[("RUST_LOG", "off")]);
    assert_eq!(status, Some(1));
    assert_eq!(
        stderr,
        "dra-hal-plugin: reading kubeconfig /nonexistent/kubeconfig: No such file or directory (os error 2)\n"
    );
}

/// A kubeconfig that does not parse: named with the line and column, never its text (kube's parse
/// error quotes the lines around the error, a token among them).
#[test]
fn a_malformed_kubeconfig_is_told_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {token: SECRET-TOKEN-abc123}\nclusters: 5\n",
    )
    .unwrap();
    let path = kubeconfig.to_str().unwrap();
    for format in ["text", "json"] {
        let (status, stderr) = run_briefly(
            &["--node-name", "n1", "--log-format", format],
            &[("KUBECONFIG", path)],
        );
        assert_eq!(status, Some(1), "{stderr}");
        assert!(!stderr.contains("SECRET-TOKEN"), "{stderr}");
        assert!(
            stderr.contains(&format!("kubeconfig {path}, line 6, column 11: ")),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// Flags whose values are checked before the API server is asked: a bad one is told at once (exit
/// 2), not after the server answers, nor never while it is down (nothing listens on its port here).
#[test]
fn bad_flag_values_are_told_before_the_api_server_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(free_port())).unwrap();
    let kubelet = dir.path().join("kubelet");
    let base = [
        "--fixture",
        "xeon",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--kubelet-root-dir",
        kubelet.to_str().unwrap(),
        "--metrics-address",
        "",
    ];
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, "{\"pfs\": 5}").unwrap();
    for (flag, value, told) in [
        ("--device-filter", "(", "--device-filter: CEL syntax error"),
        (
            "--pci-ids",
            "/nonexistent/pci.ids",
            "--pci-ids /nonexistent/pci.ids: ",
        ),
        (
            "--vf-policy",
            "/nonexistent/policy.json",
            "--vf-policy /nonexistent/policy.json: ",
        ),
        ("--vf-policy", policy.to_str().unwrap(), "--vf-policy "),
    ] {
        let start = Instant::now();
        let (status, stderr) = run_briefly(&[&base[..], &[flag, value]].concat(), &[]);
        assert_eq!(status, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(told), "{stderr}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{flag}: {:?}",
            start.elapsed()
        );
    }
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
