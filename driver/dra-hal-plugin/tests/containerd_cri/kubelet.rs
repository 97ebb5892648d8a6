//! The node: a fake API server, a real containerd, the real plugin binary with NRI on containerd's
//! socket, and this test as the kubelet (registration, prepare, unprepare, CRI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver::fake_api::FakeApi;
use driver::plugin::grpc::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use driver::plugin::grpc::v1;
use driver::plugin::grpc::v1::dra_plugin_client::DraPluginClient;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tempfile::TempDir;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::cri::{CallError, Cri, Pod};
use crate::runtime::{self, Containerd};
use crate::watcher;

pub const NODE: &str = "node-1";
const DRIVER: &str = "hal.dra.dev";

/// Fields drop in this order: the plugin (killed by `Drop`), containerd (its containers killed, its
/// mounts unmounted), then the directory.
pub struct Node {
    pub api: Arc<Mutex<FakeApi>>,
    pub containerd: Containerd,
    pub cri: Cri,
    pub plugin: Option<Child>,
    plugin_args: Vec<String>,
    kubeconfig: PathBuf,
    pub dir: TempDir,
}

/// A gRPC channel over the Unix socket at `path`, sending `authority` as `:authority`.
pub async fn channel(path: &Path, authority: &str) -> Channel {
    let path: PathBuf = path.to_owned();
    let origin: Uri = format!("http://{authority}").parse().unwrap();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .origin(origin)
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}

impl Drop for Node {
    /// A failed test's plugin is killed (a passing test stopped it with SIGTERM).
    fn drop(&mut self) {
        self.kill_plugin();
    }
}

impl Node {
    /// Starts containerd and the plugin (with `args`) and registers the plugin. Without
    /// `DRA_HAL_CONTAINERD_BIN` the test fails, saying what to set (`.ci/run` runs these tests in a
    /// step of their own, once per containerd).
    pub async fn start(args: &[&str]) -> Node {
        let Some(bin) = runtime::bin_dir() else {
            panic!(
                "DRA_HAL_CONTAINERD_BIN is not set: this test needs a real containerd. Run, as \
                 root, scripts/containerd-fetch.sh, which prints \"<suite> <version> <dir>\" per \
                 containerd, and set DRA_HAL_CONTAINERD_BIN=<dir>/usr/bin (as .ci/run does)"
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("dra-ctd")
            .tempdir_in("/tmp")
            .unwrap();
        let cdi = dir.path().join("cdi");
        let ctd_dir = dir.path().join("ctd");
        std::fs::create_dir_all(&cdi).unwrap();
        std::fs::create_dir_all(&ctd_dir).unwrap();
        let containerd = Containerd::start(&bin, &ctd_dir, &cdi).await;
        let cri = Cri::new(channel(&containerd.cri_socket(), "localhost").await);
        let version = cri.version().await;
        eprintln!(
            "containerd {} (CRI {}, config version {})",
            version.runtime_version,
            version.runtime_api_version,
            if containerd.major == 1 { 2 } else { 3 }
        );
        let api = Arc::new(Mutex::new(FakeApi::with_node(NODE)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(FakeApi::serve_http(api.clone(), listener));
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, driver::fake_api::kubeconfig(port)).unwrap();
        let mut node = Node {
            dir,
            api,
            containerd,
            cri,
            plugin: None,
            plugin_args: args.iter().map(|s| (*s).to_owned()).collect(),
            kubeconfig,
        };
        node.start_plugin().await;
        node
    }

    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// Starts the plugin, waits until it is registered with containerd's NRI and serves, and
    /// registers it as the kubelet's plugin watcher does.
    pub async fn start_plugin(&mut self) {
        // The log is appended to across restarts: this start's registration is one more.
        let nri_before = self.nri_registrations();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plugin.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dra-hal-plugin"))
            .args(&self.plugin_args)
            .args(["--node-name", NODE, "--metrics-address", "127.0.0.1:0"])
            .args([
                "--nri",
                "--pod-networking",
                "--nri-index",
                "05",
                "--nri-socket",
            ])
            .arg(self.containerd.nri_socket())
            .arg("--kubelet-root-dir")
            .arg(self.kubelet_root())
            .arg("--cdi-root")
            .arg(self.dir.path().join("cdi"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cni-bin-dir")
            .arg(&self.containerd.cni.bin_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.plugin = Some(child);
        let registration = self
            .kubelet_root()
            .join(format!("plugins_registry/{DRIVER}-reg.sock"));
        let dra = self.dra_socket();
        self.wait("the plugin's sockets and NRI registration", |node| {
            std::os::unix::net::UnixStream::connect(&registration).is_ok()
                && std::os::unix::net::UnixStream::connect(&dra).is_ok()
                && node.nri_registrations() > nri_before
        })
        .await;
        let registered = self
            .plugin_log()
            .matches("registered with the kubelet")
            .count();
        // As the kubelet's plugin watcher dials: grpc-go's percent-encoded socket path.
        let info: PluginInfo = watcher::call(
            &registration,
            "/pluginregistration.Registration/GetInfo",
            &InfoRequest {},
        )
        .await
        .unwrap();
        assert_eq!(info.name, DRIVER);
        let _: RegistrationStatusResponse = watcher::call(
            &registration,
            "/pluginregistration.Registration/NotifyRegistrationStatus",
            &RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            },
        )
        .await
        .unwrap();
        self.wait("the plugin to take the registration", |node| {
            node.plugin_log()
                .matches("registered with the kubelet")
                .count()
                > registered
        })
        .await;
    }

    /// SIGKILL to the plugin.
    pub fn kill_plugin(&mut self) {
        if let Some(mut child) = self.plugin.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// How many times the plugin has registered with containerd's NRI so far.
    pub fn nri_registrations(&self) -> usize {
        self.plugin_log()
            .matches("registered with the NRI runtime")
            .count()
    }

    /// Kills containerd (SIGKILL), starts it again, and waits until the plugin has reconnected.
    pub async fn restart_containerd(&mut self) {
        let before = self.nri_registrations();
        self.containerd.kill();
        self.containerd.spawn().await;
        self.wait("the plugin to register with the new containerd", |node| {
            node.nri_registrations() > before
        })
        .await;
    }

    /// The kubelet's slice wipe at its start: it deletes every ResourceSlice of the node; the plugin
    /// publishes them again within 5 s.
    pub async fn wipe_slices(&mut self) {
        let wipe =
            format!("/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D{NODE}");
        let published = {
            let mut api = self.api.lock().unwrap();
            let published = api.slices.clone();
            assert!(!published.is_empty(), "the plugin published slices");
            assert_eq!(api.handle("DELETE", &wipe, b"").status(), Some(200));
            assert!(api.slices.is_empty());
            published
        };
        let wiped = Instant::now();
        let count = published.len();
        self.wait("the slices to come back", |node| {
            node.api.lock().unwrap().slices.len() == count
        })
        .await;
        assert!(
            wiped.elapsed() < Duration::from_secs(5),
            "{:?}",
            wiped.elapsed()
        );
        let api = self.api.lock().unwrap();
        for (name, slice) in &published {
            assert_eq!(api.slices[name]["spec"], slice["spec"], "{name}");
        }
    }

    pub fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plugin.log")).unwrap_or_default()
    }

    fn dra_socket(&self) -> PathBuf {
        self.kubelet_root()
            .join(format!("plugins/{DRIVER}/dra.sock"))
    }

    pub async fn wait(&mut self, what: &str, mut ready: impl FnMut(&Node) -> bool) {
        let started = Instant::now();
        while !ready(self) {
            if let Some(status) = self.plugin.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the plugin exited ({status}): {}", self.plugin_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}: plugin log {}\ncontainerd log {}",
                self.plugin_log(),
                self.containerd.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An allocated claim `uid` of one device per request, reserved for the pod `pod_uid`.
    pub fn add_claim(&self, uid: &str, devices: &[(&str, &str)], pod_uid: &str) {
        self.add_claim_with_config(uid, devices, json!([]), pod_uid);
    }

    /// [`Node::add_claim`] with the allocation's `config` (opaque parameters of this driver).
    pub fn add_claim_with_config(
        &self,
        uid: &str,
        devices: &[(&str, &str)],
        config: serde_json::Value,
        pod_uid: &str,
    ) {
        let results: Vec<serde_json::Value> = devices
            .iter()
            .map(|(request, device)| {
                json!({"request": request, "driver": DRIVER, "pool": NODE, "device": device})
            })
            .collect();
        let claim = json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": "default", "name": format!("claim-{uid}"), "uid": uid},
            "spec": {"devices": {"requests": []}},
            "status": {
                "allocation": {"devices": {"results": results, "config": config}},
                "reservedFor": [{"resource": "pods", "name": pod_uid, "uid": pod_uid}]
            }
        });
        self.api
            .lock()
            .unwrap()
            .claims
            .insert(format!("default/claim-{uid}"), claim);
    }

    pub fn add_cpu_claim(&self, uid: &str, device: &str, pod_uid: &str) {
        self.add_claim(uid, &[("cpus", device)], pod_uid);
    }

    fn claim_ref(uid: &str) -> v1::Claim {
        v1::Claim {
            namespace: "default".into(),
            uid: uid.into(),
            name: format!("claim-{uid}"),
        }
    }

    async fn dra(&self) -> DraPluginClient<Channel> {
        // The kubelet's DRA client dials `unix:` targets: grpc-go sends `localhost`.
        DraPluginClient::new(channel(&self.dra_socket(), "localhost").await)
    }

    /// NodePrepareResources for `uid`: the CDI device ids, as the kubelet passes them to the runtime.
    pub async fn prepare(&self, uid: &str) -> Vec<String> {
        let response = self
            .dra()
            .await
            .node_prepare_resources(v1::NodePrepareResourcesRequest {
                claims: vec![Node::claim_ref(uid)],
            })
            .await
            .unwrap()
            .into_inner();
        let result = &response.claims[uid];
        assert!(result.error.is_empty(), "prepare {uid}: {}", result.error);
        result
            .devices
            .iter()
            .flat_map(|d| d.cdi_device_ids.clone())
            .collect()
    }

    pub async fn unprepare(&self, uid: &str) {
        let response = self
            .dra()
            .await
            .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![Node::claim_ref(uid)],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            response.claims[uid].error.is_empty(),
            "unprepare {uid}: {}",
            response.claims[uid].error
        );
    }

    /// Runs a pod sandbox on the host network.
    pub async fn pod(&self, name: &str, uid: &str) -> Pod {
        self.run_pod(name, uid, false)
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.containerd.log()))
    }

    /// Runs a pod sandbox in its own network namespace (containerd's CNI gives it `eth0`); the
    /// plugin's NRI handler attaches the network functions of the pod's claims.
    pub async fn pod_on_network(&self, name: &str, uid: &str) -> Result<Pod, CallError> {
        self.run_pod(name, uid, true).await
    }

    async fn run_pod(&self, name: &str, uid: &str, own_network: bool) -> Result<Pod, CallError> {
        let logs = self.dir.path().join("pods").join(uid);
        std::fs::create_dir_all(&logs).unwrap();
        let mut pod = Pod {
            id: String::new(),
            name: name.into(),
            uid: uid.into(),
            logs: logs.to_str().unwrap().to_owned(),
            cgroup: format!("/{}/pod{uid}", self.containerd.cgroup_root()),
            own_network,
        };
        pod.id = self.cri.run_pod(&pod).await?;
        Ok(pod)
    }

    /// Makes the device nodes the CDI spec of the claim `uid` names (all under `dev_root`: the
    /// plugin's `--dev-root`), as character devices with their numbers (else 1:3, `/dev/null`'s);
    /// nodes already there are kept.
    pub fn make_device_nodes(&self, uid: &str, dev_root: &Path) {
        let spec = self
            .dir
            .path()
            .join(format!("cdi/{DRIVER}-device_{uid}.json"));
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
        for device in spec["devices"].as_array().unwrap() {
            let nodes = device["containerEdits"]["deviceNodes"].as_array();
            for dev in nodes.into_iter().flatten() {
                let host = Path::new(dev["hostPath"].as_str().unwrap());
                assert!(host.starts_with(dev_root), "{host:?}");
                if host.exists() {
                    continue;
                }
                std::fs::create_dir_all(host.parent().unwrap()).unwrap();
                let major = dev["major"].as_i64().unwrap_or(1).to_string();
                let minor = dev["minor"].as_i64().unwrap_or(3).to_string();
                let made = Command::new("mknod")
                    .arg(host)
                    .args(["c", &major, &minor])
                    .status()
                    .unwrap();
                assert!(made.success(), "mknod {host:?}");
            }
        }
    }

    /// A NetworkAttachmentDefinition `default/<name>` holding the CNI `config`.
    pub fn add_nad(&self, name: &str, config: &serde_json::Value) {
        self.api
            .lock()
            .unwrap()
            .add_nad("default", name, &config.to_string());
    }

    /// Stops the plugin with SIGTERM, as the kubelet stops its pod; it exits cleanly.
    pub async fn finish(mut self) {
        // DRA_HAL_TEST_LOGS=DIR keeps both logs of the last test (for CI's artifacts).
        if let Some(keep) = std::env::var_os("DRA_HAL_TEST_LOGS") {
            let keep = PathBuf::from(keep);
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::write(keep.join("plugin.log"), self.plugin_log()).unwrap();
            std::fs::write(keep.join("containerd.log"), self.containerd.log()).unwrap();
        }
        if let Some(mut child) = self.plugin.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "{status}: {}", self.plugin_log());
        }
    }
}
