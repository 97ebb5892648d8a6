//! 1000 claims (GB300: 1 GPU + 2 RDMA NICs each) prepared and unprepared through the real
//! `dra-hal-plugin` binary's DRA socket, as the kubelet does; the claims come from a fake API server over
//! HTTP in this process. Prints p50/p90/p99/max latency of each call and the plugin's resident memory
//! (VmRSS now, VmHWM peak) read from /proc.
//!
//! `cargo bench -p driver --bench prepare_socket` (CLAIMS=N to change the count).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::fake_api::FakeApi;
use driver::plugin::grpc::v1;
use driver::plugin::grpc::v1::dra_plugin_client::DraPluginClient;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

const NODE: &str = "node-1";
const DEVICES: [(&str, &str); 3] = [
    ("gpu", "gpu-0008-06-00-0"),
    ("nic", "rdma-0101-00-00-0"),
    ("nic", "rdma-0102-00-00-0"),
];

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<10} n={}  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::var("CLAIMS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut api = FakeApi::with_node(NODE);
    for i in 0..count {
        let results: Vec<serde_json::Value> = DEVICES
            .iter()
            .map(|(request, device)| json!({"request": request, "driver": "hal.dra.dev", "pool": NODE, "device": device}))
            .collect();
        api.claims.insert(
            format!("default/claim-{i}"),
            json!({"metadata": {"namespace": "default", "name": format!("claim-{i}"), "uid": format!("uid-{i}")},
                   "spec": {"devices": {"requests": []}},
                   "status": {"allocation": {"devices": {"results": results}}}}),
        );
    }
    let state = Arc::new(Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_http(state.clone(), listener));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(port)).unwrap();
    let kubelet = dir.path().join("kubelet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
        .args([
            "--fixture",
            "gb300",
            "--node-name",
            NODE,
            "--metrics-address",
            "",
        ])
        .arg("--kubelet-root-dir")
        .arg(&kubelet)
        .arg("--cdi-root")
        .arg(dir.path().join("cdi"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let registration = kubelet.join("plugins_registry/hal.dra.dev-reg.sock");
    let start = Instant::now();
    while !registration.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the plugin did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client =
        DraPluginClient::new(channel(&kubelet.join("plugins/hal.dra.dev/dra.sock")).await);
    let (mut prepare, mut unprepare) = (Vec::new(), Vec::new());
    for i in 0..count {
        let claim = v1::Claim {
            namespace: "default".into(),
            uid: format!("uid-{i}"),
            name: format!("claim-{i}"),
        };
        let t = Instant::now();
        let response = client
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: vec![claim.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        prepare.push(t.elapsed());
        assert_eq!(response.claims[&claim.uid].error, "", "claim {i}");
        let t = Instant::now();
        client
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![claim],
            })
            .await
            .unwrap();
        unprepare.push(t.elapsed());
    }
    let (rss, hwm) = memory_kib(child.id());
    println!(
        "dra-hal-plugin on the gb300 fixture, {count} claims of 1 GPU + 2 RDMA NICs, one at a time:"
    );
    report("prepare", prepare);
    report("unprepare", unprepare);
    println!(
        "plugin memory after the run: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "(prepare includes the GET of the claim from the API server over HTTP, the CDI write and two checkpoint writes with fsync)"
    );
    terminate(&child);
    let _ = child.wait();
}

/// SIGTERM, as the kubelet stops a pod.
fn terminate(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}
