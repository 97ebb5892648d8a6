//! Prepare at scale through the real `dra-hal-plugin` binary's DRA socket, as the kubelet calls it;
//! the claims come from the project's fake API server in this process (HTTPS, offering HTTP/2 as
//! kube-apiserver does; `API=http` for HTTP/1.1 in the clear), which waits `LATENCY_MS` before
//! answering each GET. Claims are of the GB300 fixture's GPU and two RDMA NICs
//! with admin access (so any number of them can be live at once).
//!
//! Figures printed:
//! - one prepare at a time with no API latency (the plugin's own cost: checkpoint, CDI, fsyncs);
//! - 1, 8, 32 and 128 concurrent prepares (one gRPC call per claim, as one per pod) at `LATENCY_MS`:
//!   p50/p99 latency and claims/s;
//! - with `LIVE` claims prepared: CPU time of the plugin per further prepare, and its RSS;
//! - the time from starting the plugin again (SIGTERM, then spawn) to its first answered prepare,
//!   with `LIVE` claims in the checkpoint, beside the same for an empty plugin directory.
//!
//! `cargo bench -p dra-hal-plugin --bench prepare_socket`; knobs: `BENCH_DIR` (where the plugin's
//! kubelet root and CDI directory go: a directory on ext4, or under /dev/shm for tmpfs; default the
//! system temp dir), `LATENCY_MS` (20), `LIVE` (1000), `LEVELS` (`1,8,32,128`), `SAMPLES` (256 per
//! level), `PLUGIN_BIN` (the plugin binary to measure, built with `--features fixture`; default the
//! one cargo builds for this bench), so that binaries of two commits can be measured in turns in one
//! session.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "n={:<4} p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    )
}

fn proc_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

struct Bench {
    plugin: PathBuf,
    api: Arc<Mutex<FakeApi>>,
    kubeconfig: PathBuf,
    root: PathBuf,
}

impl Bench {
    fn add_claims(&self, uids: &[String]) {
        let mut api = self.api.lock().unwrap();
        for uid in uids {
            let results: Vec<serde_json::Value> = DEVICES
                .iter()
                .map(|(request, device)| json!({"request": request, "driver": "hal.dra.dev", "pool": NODE, "device": device, "adminAccess": true}))
                .collect();
            api.claims.insert(
                format!("default/{uid}"),
                json!({"metadata": {"namespace": "default", "name": uid, "uid": uid},
                       "spec": {"devices": {"requests": []}},
                       "status": {"allocation": {"devices": {"results": results}}}}),
            );
        }
    }

    fn set_latency(&self, latency: Duration) {
        self.api.lock().unwrap().get_latency = (!latency.is_zero()).then_some(latency);
    }

    fn spawn(&self) -> Child {
        let kubelet = self.root.join("kubelet");
        Command::new(&self.plugin)
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
            .arg(self.root.join("cdi"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Polls the DRA socket until a prepare of `probe` is answered; returns the client.
    async fn serving(&self, probe: &str) -> DraPluginClient<Channel> {
        let socket = self.root.join("kubelet/plugins/hal.dra.dev/dra.sock");
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the plugin did not serve"
            );
            if socket.exists()
                && let Ok(stream) = UnixStream::connect(&socket).await
            {
                drop(stream);
                let mut client = DraPluginClient::new(channel(&socket).await);
                if let Ok(answer) = prepare(&mut client, probe).await {
                    assert_eq!(answer, "", "{probe}");
                    return client;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn claim(uid: &str) -> v1::Claim {
    v1::Claim {
        namespace: "default".into(),
        uid: uid.into(),
        name: uid.into(),
    }
}

/// Prepares one claim; its error text ("" when prepared).
async fn prepare(
    client: &mut DraPluginClient<Channel>,
    uid: &str,
) -> Result<String, tonic::Status> {
    let response = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![claim(uid)],
        })
        .await?
        .into_inner();
    Ok(response.claims[uid].error.clone())
}

async fn unprepare(client: &mut DraPluginClient<Channel>, uids: &[String]) {
    for chunk in uids.chunks(100) {
        let response = client
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: chunk.iter().map(|u| claim(u)).collect(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.claims.values().all(|c| c.error.is_empty()));
    }
}

/// Prepares `uids` all at once, one call each; the latency of each and the wall time of all.
async fn burst(client: &DraPluginClient<Channel>, uids: &[String]) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = uids
        .iter()
        .map(|uid| {
            let mut client = client.clone();
            let uid = uid.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let error = prepare(&mut client, &uid).await.unwrap();
                assert_eq!(error, "", "{uid}");
                t.elapsed()
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.push(task.await.unwrap());
    }
    (samples, start.elapsed())
}

/// How long the plugin is left idle before its settled RSS is read.
const SETTLE: Duration = Duration::from_secs(3);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let latency = Duration::from_millis(env_or("LATENCY_MS", 20));
    let live: usize = env_or("LIVE", 1000);
    let samples_per_level: usize = env_or("SAMPLES", 256);
    let levels: Vec<usize> = std::env::var("LEVELS")
        .unwrap_or_else(|_| "1,8,32,128".into())
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let state = Arc::new(Mutex::new(FakeApi::with_node(NODE)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let api = std::env::var("API").unwrap_or_else(|_| "https".into());
    let config = if api == "http" {
        tokio::spawn(FakeApi::serve_http(state.clone(), listener));
        driver::fake_api::kubeconfig(port)
    } else {
        let tls = driver::fake_api::FakeTls::new().unwrap();
        tokio::spawn(FakeApi::serve_https(state.clone(), listener, tls.clone()));
        tls.kubeconfig(port)
    };
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, config).unwrap();
    let plugin = std::env::var_os("PLUGIN_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_dra-hal-plugin")),
        PathBuf::from,
    );
    let bench = Bench {
        plugin,
        api: state,
        kubeconfig,
        root: dir.path().to_owned(),
    };
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "{} (gb300 fixture), claims of 1 GPU + 2 RDMA NICs, API server over {api}, in {} ({fs})",
        bench.plugin.display(),
        dir.path().display()
    );

    bench.add_claims(&["probe".to_owned()]);
    let t = Instant::now();
    let mut child = bench.spawn();
    let mut client = bench.serving("probe").await;
    let first_start = t.elapsed();
    let rss_start = proc_field(child.id(), "VmRSS:");

    // One at a time, no API latency: the plugin's own cost.
    let uids: Vec<String> = (0..64).map(|i| format!("one-{i}")).collect();
    bench.add_claims(&uids);
    let mut one = Vec::new();
    for uid in &uids {
        let t = Instant::now();
        assert_eq!(prepare(&mut client, uid).await.unwrap(), "");
        one.push(t.elapsed());
    }
    unprepare(&mut client, &uids).await;
    println!("1 prepare, API latency 0:      {}", summary(one));

    bench.set_latency(latency);
    for &level in &levels {
        let rounds = samples_per_level.div_ceil(level).max(1);
        let (mut all, mut wall) = (Vec::new(), Duration::ZERO);
        for round in 0..rounds {
            let uids: Vec<String> = (0..level)
                .map(|i| format!("c{level}-{round}-{i}"))
                .collect();
            bench.add_claims(&uids);
            let (samples, took) = burst(&client, &uids).await;
            all.extend(samples);
            wall += took;
            unprepare(&mut client, &uids).await;
        }
        let rate = all.len() as f64 / wall.as_secs_f64();
        println!(
            "{level:>3} concurrent, API {:>3} ms: {}  {rate:7.1} claims/s",
            latency.as_millis(),
            summary(all)
        );
    }

    // LIVE claims prepared and kept.
    bench.set_latency(Duration::ZERO);
    let rss_before = proc_field(child.id(), "VmRSS:");
    let live_uids: Vec<String> = (0..live).map(|i| format!("live-{i}")).collect();
    bench.add_claims(&live_uids);
    for chunk in live_uids.chunks(32) {
        burst(&client, chunk).await;
    }
    let extra: Vec<String> = (0..100).map(|i| format!("extra-{i}")).collect();
    bench.add_claims(&extra);
    let ticks = cpu_ticks(child.id());
    let t = Instant::now();
    for uid in &extra {
        assert_eq!(prepare(&mut client, uid).await.unwrap(), "");
    }
    let took = t.elapsed();
    let cpu_ms = (cpu_ticks(child.id()) - ticks) as f64 * 10.0 / extra.len() as f64;
    unprepare(&mut client, &extra).await;
    let rss = proc_field(child.id(), "VmRSS:");
    let hwm = proc_field(child.id(), "VmHWM:");
    let (anon, file) = (
        proc_field(child.id(), "RssAnon:"),
        proc_field(child.id(), "RssFile:"),
    );
    // Settled: idle blocking threads end after their keep-alive (1 s), the allocator has had its chance
    // to give memory back; what a node's monitoring sees between bursts.
    tokio::time::sleep(SETTLE).await;
    let settled = proc_field(child.id(), "VmRSS:");
    let (settled_anon, settled_file) = (
        proc_field(child.id(), "RssAnon:"),
        proc_field(child.id(), "RssFile:"),
    );
    println!(
        "VmRSS: {:.1} MiB serving, no claims; {:.1} MiB with {live} live claims {} s after the last call (anonymous {:.1}, file-backed {:.1})",
        rss_start as f64 / 1024.0,
        settled as f64 / 1024.0,
        SETTLE.as_secs(),
        settled_anon as f64 / 1024.0,
        settled_file as f64 / 1024.0,
    );
    println!(
        "{live} live claims: CPU per prepare {cpu_ms:.2} ms (wall {:.2} ms each), VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}; peak {:.1} MiB; {:.1} MiB before them: {:.1} KiB per claim)",
        ms(took) / extra.len() as f64,
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss.saturating_sub(rss_before) as f64 / live.max(1) as f64
    );

    terminate(&child);
    let _ = child.wait();
    let t = Instant::now();
    child = bench.spawn();
    let mut client = bench.serving("live-0").await;
    let restart = t.elapsed();
    println!(
        "start to serving: {:.1} ms with {live} live claims, {:.1} ms with an empty plugin directory",
        ms(restart),
        ms(first_start)
    );
    unprepare(&mut client, &live_uids).await;
    terminate(&child);
    let _ = child.wait();
}

/// SIGTERM, as the kubelet stops a pod.
fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}
