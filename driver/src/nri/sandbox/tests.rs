//! Pod networking through NRI: the fake runtime delivers the pod sandbox events to the real plugin
//! loop; the claims come from checkpoint records, the NetworkAttachmentDefinitions and the claim
//! status from the fake API server. Without root the CNI plugin is a script that records what it got;
//! as root, the real host-device plugin moves a veth into an `ip netns` namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::*;
use crate::fake_api::FakeApi;
use crate::nri::fake_runtime::{FakeRuntime, PluginConn, pod_in_netns};
use crate::nri::plugin::{CpuSource, NriConfig, run};
use crate::plugin::api::{ClaimRef, PreparedDevice};
use crate::plugin::checkpoint::Phase;
use crate::plugin::prepare::KubeClaims;

pub(super) const DRIVER: &str = "hal.dra.dev";
pub(super) const DEVICE: &str = "nic-0000-3b-02-0";

/// A completed claim record for pod `pod_uid` holding the function 0000:3b:02.0 (netdev `netdev`)
/// with `VfConfig` `ifName: net1` and `netAttachDefName: vf-test1`.
pub(super) fn record(pod_uid: &str, netdev: &str) -> ClaimRecord {
    let env = [
        format!("DRA_HAL_DEVICES={DEVICE}"),
        "DRA_HAL_NIC_0_PCI_ADDRESS=0000:3b:02.0".to_owned(),
        format!("DRA_HAL_NIC_0_NETDEV={netdev}"),
        "DRA_HAL_NIC_0_IFNAME=net1".to_owned(),
        "DRA_HAL_NIC_0_NETWORK=vf-test1".to_owned(),
    ];
    ClaimRecord {
        claim: ClaimRef {
            namespace: "demo".into(),
            uid: "uid-1".into(),
            name: "claim1".into(),
        },
        phase: Phase::Completed,
        boot_id: "b".into(),
        devices: vec![PreparedDevice {
            request_names: vec!["vf".into()],
            pool_name: "node-1".into(),
            device_name: DEVICE.into(),
            cdi_device_ids: vec![],
            share_id: None,
        }],
        cdi_spec: json!({"devices": [{"name": format!("uid-1-{DEVICE}"), "containerEdits": {"env": env}}]}).into(),
        undo: BTreeMap::new(),
        cpus: BTreeMap::new(),
        rt: BTreeMap::new(),
        network: BTreeMap::new(),
        pods: vec![pod_uid.to_owned()],
        admin: Vec::new(),
        recovered: false,
    }
}

/// A fake CNI plugin `rec` in `dir`: appends `COMMAND NETNS IFNAME` to `dir/log`, keeps its stdin in
/// `dir/stdin-COMMAND`, and answers ADD with 192.0.2.44/24 on `$CNI_IFNAME`.
pub(super) fn recorder(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME\" >> {d}/log\ncat > {d}/stdin-$CNI_COMMAND\n\
         [ \"$CNI_COMMAND\" = ADD ] && printf '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"%s\",\"mac\":\"02:aa:bb:cc:dd:ee\",\"sandbox\":\"%s\"}}],\"ips\":[{{\"address\":\"192.0.2.44/24\",\"interface\":0}}]}}' \"$CNI_IFNAME\" \"$CNI_NETNS\"\nexit 0\n"
    );
    let path = dir.join("rec");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub(super) struct Node {
    stop: watch::Sender<bool>,
    plugin: tokio::task::JoinHandle<()>,
    _claims: watch::Sender<BTreeMap<String, crate::nri::policy::ClaimCpus>>,
}

impl Node {
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        self.plugin.await.unwrap();
    }
}

/// The API server with the claim (its status as the preparer wrote it) and the NADs `nads`.
pub(super) fn api(nads: &[(&str, &str)]) -> Arc<Mutex<FakeApi>> {
    let mut api = FakeApi::with_node("node-1");
    api.claims.insert(
        "demo/claim1".into(),
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
               "metadata": {"name": "claim1", "namespace": "demo", "uid": "uid-1"},
               "spec": {},
               "status": {"devices": [{"driver": DRIVER, "pool": "node-1", "device": DEVICE,
                                        "data": {"pciAddress": "0000:3b:02.0"},
                                        "networkData": {"interfaceName": "net1"}}]}}),
    );
    for (name, config) in nads {
        api.add_nad("demo", name, config);
    }
    Arc::new(Mutex::new(api))
}

/// Pod networking over the plugin directory `state`: CNI plugins from `bin`, the claims `records`,
/// NADs and status through `api`; direct mode moves netdevs from the plugin's own namespace.
pub(super) fn network(
    bin: &Path,
    state: &Path,
    records: BTreeMap<String, ClaimRecord>,
    api: &Arc<Mutex<FakeApi>>,
) -> PodNetwork {
    let client = FakeApi::mock_client(api.clone(), &crate::api::call_timeout_layer());
    PodNetwork {
        cni: Cni {
            bin_dirs: vec![bin.to_owned()],
            cache_dir: state.join("cni/results"),
            timeout: Duration::from_secs(30),
        },
        prepared: Arc::new(move || Ok(records.clone())),
        nads: kube_nads(client.clone()),
        claims: Some(Arc::new(KubeClaims::new(client))),
        driver: DRIVER.into(),
        pool: "node-1".into(),
        direct: direct::DirectMode::new(state),
        sandboxes: Arc::default(),
    }
}

fn start(
    socket: &Path,
    bin: &Path,
    state: &Path,
    records: BTreeMap<String, ClaimRecord>,
    api: &Arc<Mutex<FakeApi>>,
) -> Node {
    start_network(socket, network(bin, state, records, api))
}

/// The plugin loop with `network`, on the fake runtime's `socket`.
pub(super) fn start_network(socket: &Path, network: PodNetwork) -> Node {
    let (claims, rx) = watch::channel(BTreeMap::new());
    let source = CpuSource {
        claims: rx,
        allocatable: Arc::new(|| hal::CpuSet::from_cpulist("0-7").unwrap()),
        reserved_again: None,
    };
    let (stop, stopped) = watch::channel(false);
    let mut config = NriConfig::new(socket);
    config.pod_network = Some(Arc::new(network));
    let plugin = tokio::spawn(run(config, source, stopped));
    Node {
        stop,
        plugin,
        _claims: claims,
    }
}

pub(super) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(super) fn status_devices(api: &Arc<Mutex<FakeApi>>) -> Value {
    api.lock().unwrap().claims["demo/claim1"]["status"]["devices"].clone()
}

/// The claim's status devices once the first one's `networkData` has `ips` (the NRI plugin's write,
/// which the `RunPodSandbox` answer does not wait for), up to 10 s.
pub(super) async fn written_status(api: &Arc<Mutex<FakeApi>>) -> Value {
    for _ in 0..400 {
        let devices = status_devices(api);
        if !devices[0]["networkData"]["ips"].is_null() {
            return devices;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("networkData never written: {}", status_devices(api));
}

pub(super) async fn connect(runtime: &FakeRuntime) -> PluginConn {
    let (conn, configured) = runtime.accept().await.unwrap();
    // The pod sandbox events are subscribed besides the container events.
    for e in EVENTS {
        assert_ne!(
            configured.events & (1 << (e - 1)),
            0,
            "event {e} subscribed"
        );
    }
    // One running container of another pod (the fake runtime sends no Synchronize without one).
    let other = crate::nri::fake_runtime::pod("sandbox0", "pod-uid-0");
    let running = crate::nri::fake_runtime::container("c0", &other, &[], "0-7");
    conn.synchronize(vec![other], vec![running], 100)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn run_pod_sandbox_adds_the_claims_functions_with_their_nad_and_stop_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let api = api(&[(
        "vf-test1",
        r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec", "ipam": {"type": "static"}}"#,
    )]);
    let records = [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &bin, dir.path(), records, &api);
    let conn = connect(&runtime).await;

    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1234"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap();
    assert_eq!(
        lines(&bin.join("log")),
        ["ADD sandbox1 /run/netns/cni-1234 net1"]
    );
    let stdin: Value =
        serde_json::from_slice(&std::fs::read(bin.join("stdin-ADD")).unwrap()).unwrap();
    assert_eq!(stdin["deviceID"], "0000:3b:02.0");
    assert_eq!(stdin["name"], "vf-test1");
    // networkData in the claim's status, the preparer's data kept.
    let devices = written_status(&api).await;
    assert_eq!(
        devices[0]["networkData"],
        json!({"interfaceName": "net1", "ips": ["192.0.2.44/24"],
                                                  "hardwareAddress": "02:aa:bb:cc:dd:ee"})
    );
    assert_eq!(devices[0]["data"]["pciAddress"], "0000:3b:02.0");

    // Another pod's sandbox: nothing to attach.
    let other = pod_in_netns("sandbox2", "pod-uid-2", Path::new("/run/netns/cni-5678"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &other)
        .await
        .unwrap();
    assert_eq!(lines(&bin.join("log")).len(), 1);

    conn.sandbox_event(event::STOP_POD_SANDBOX, &pod)
        .await
        .unwrap();
    conn.sandbox_event(event::REMOVE_POD_SANDBOX, &pod)
        .await
        .unwrap();
    let log = lines(&bin.join("log"));
    // DEL once (the remove finds nothing left); the namespace path no longer exists: passed empty.
    assert_eq!(
        log,
        [
            "ADD sandbox1 /run/netns/cni-1234 net1",
            "DEL sandbox1  net1"
        ]
    );
    let del: Value =
        serde_json::from_slice(&std::fs::read(bin.join("stdin-DEL")).unwrap()).unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "192.0.2.44/24");
    node.stop().await;
}

#[tokio::test]
async fn a_missing_nad_or_namespace_fails_the_sandbox_naming_the_claim_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let api = api(&[]);
    let records = [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &bin, dir.path(), records, &api);
    let conn = connect(&runtime).await;
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    let error = conn
        .sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("claim demo/claim1 device nic-0000-3b-02-0 (0000:3b:02.0): VfConfig.netAttachDefName: NetworkAttachmentDefinition demo/vf-test1 does not exist"),
        "{text}"
    );
    // A sandbox without a network namespace (hostNetwork).
    let host = crate::nri::fake_runtime::pod("sandbox3", "pod-uid-1");
    let error = conn
        .sandbox_event(event::RUN_POD_SANDBOX, &host)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("has no network namespace"),
        "{error}"
    );
    assert!(lines(&bin.join("log")).is_empty());
    node.stop().await;
}

#[tokio::test]
async fn a_sandbox_gone_while_the_plugin_was_down_gets_its_del_at_the_next_synchronize() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let nad = r#"{"cniVersion": "0.4.0", "name": "vf-test1", "type": "rec"}"#;
    let api = api(&[("vf-test1", nad)]);
    let records: BTreeMap<String, ClaimRecord> =
        [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &bin, dir.path(), records.clone(), &api);
    let conn = connect(&runtime).await;
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-9"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap();
    // The plugin dies (no stop event), the sandbox goes meanwhile; a new plugin synchronizes.
    node.stop().await;
    drop(conn);
    let node = start(&socket, &bin, dir.path(), records, &api);
    let conn = connect(&runtime).await;
    let cache = dir.path().join("cni/results");
    for _ in 0..200 {
        if std::fs::read_dir(&cache).unwrap().next().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        lines(&bin.join("log")),
        ["ADD sandbox1 /run/netns/cni-9 net1", "DEL sandbox1  net1"]
    );
    drop(conn);
    node.stop().await;
}

#[tokio::test]
#[ignore = "needs root and the CNI reference plugins (containernetworking-plugins)"]
async fn through_nri_the_pod_gets_net1_from_host_device_and_stop_brings_it_home_needs_root() {
    use dra_podnet::testing::Netns;
    use dra_podnet::testing::{HostVeth, bin_dir};
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new("nri");
    let vf = HostVeth::new(1450);
    let mac = vf.on_host().unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let nad = format!(
        r#"{{"cniVersion": "1.0.0", "name": "vf-test1", "type": "host-device", "device": "{}",
            "ipam": {{"type": "static", "addresses": [{{"address": "10.56.217.10/24"}}]}}}}"#,
        vf.0
    );
    let api = api(&[("vf-test1", &nad)]);
    let records = [("uid-1".to_owned(), record("pod-uid-1", &vf.0))].into();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &bin_dir(), dir.path(), records, &api);
    let conn = connect(&runtime).await;
    let pod = pod_in_netns("sandboxr", "pod-uid-1", &netns.path());
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap();
    // What the pod's namespace sees.
    let link = netns.link("net1").expect("net1 in the pod");
    assert_eq!(link["mtu"], 1450);
    assert_eq!(link["address"], mac.as_str());
    let addrs = netns.json(&["addr", "show", "dev", "net1"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.56.217.10");
    assert!(vf.on_host().is_none());
    assert_eq!(
        written_status(&api).await[0]["networkData"],
        json!({"interfaceName": "net1", "ips": ["10.56.217.10/24"], "hardwareAddress": mac})
    );
    conn.sandbox_event(event::STOP_POD_SANDBOX, &pod)
        .await
        .unwrap();
    assert!(netns.link("net1").is_none());
    assert_eq!(vf.on_host().unwrap()["mtu"], 1450);
    node.stop().await;
}

#[test]
fn only_completed_claims_reserved_for_the_pod_give_it_functions() {
    let mine = record("pod-uid-1", "ens1f0v0");
    let functions = of_pod(&[("uid-1".to_owned(), mine.clone())].into(), "pod-uid-1");
    assert_eq!(functions.len(), 1);
    assert_eq!(functions[0].device, DEVICE);
    assert_eq!(functions[0].pci, "0000:3b:02.0");
    assert_eq!(functions[0].netdev.as_deref(), Some("ens1f0v0"));
    assert_eq!(functions[0].if_name.as_deref(), Some("net1"));
    // The NAD's namespace defaults to the claim's.
    assert_eq!(
        functions[0].network,
        Some(("demo".into(), "vf-test1".into()))
    );
    // Another pod, a record naming no pods (older checkpoints), a claim still being prepared: none.
    assert!(of_pod(&[("uid-1".to_owned(), mine.clone())].into(), "pod-uid-2").is_empty());
    let mut anyone = mine.clone();
    anyone.pods.clear();
    assert!(of_pod(&[("uid-1".to_owned(), anyone)].into(), "pod-uid-1").is_empty());
    let mut started = mine;
    started.phase = Phase::Started;
    assert!(of_pod(&[("uid-1".to_owned(), started)].into(), "pod-uid-1").is_empty());
}

/// containerd drops a plugin whose call runs past its `plugin_request_timeout` (2 s by default) and
/// starts the sandbox without it: the plugin says so at `Configure` when a CNI call may take longer.
#[tokio::test]
async fn a_runtime_that_waits_less_than_a_cni_call_may_take_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let net = network(dir.path(), dir.path(), BTreeMap::new(), &api(&[]));
    let short = net.request_timeout_warning(2_000).unwrap();
    assert!(
        short.contains("waits 2000 ms") && short.contains("allowed 30s (--cni-timeout)"),
        "{short}"
    );
    let unsaid = net.request_timeout_warning(0).unwrap();
    assert!(unsaid.contains("2 s by default"), "{unsaid}");
    assert!(net.request_timeout_warning(-5).is_some());
    assert_eq!(net.request_timeout_warning(30_000), None);
    assert_eq!(net.request_timeout_warning(90_000), None);
}
