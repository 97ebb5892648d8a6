//! Pod networking with the real containerd: a pod sandbox in its own network namespace (containerd's
//! CNI gives it `eth0`, see `runtime::PodCni`) whose claim holds a VF of the Xeon fixture
//! (`nic-0000-b1-00-2`, netdev `ens2f0v0`) gets `net1` from the plugin's NRI sandbox handler, in CNI
//! mode (a NetworkAttachmentDefinition: the reference `host-device` plugin with `static` IPAM) or in
//! direct mode (the claim's `NetworkConfig`). A veth pair on the host stands in for the VF: its end
//! is named as the fixture's netdev. The container reads `ip addr`, `/sys/class/net` and
//! `/proc/net/fib_trie`; the host must have the netdev back under its name after the pod's removal,
//! also when the plugin was killed (SIGKILL) between the attachment and the removal.

use std::process::Command;
use std::time::Instant;

use serde_json::json;

use crate::cri::Pod;
use crate::kubelet::Node;

/// The fixture's VF and its netdev on the (fixture's) host.
const VF: &str = "nic-0000-b1-00-2";
const NETDEV: &str = "ens2f0v0";

/// The plugin on the Xeon fixture (its NIC VFs; two CPUs as the other tests), with stand-in device
/// nodes (the VF's RDMA device's) under `dev_root`.
async fn start(dev_root: &tempfile::TempDir) -> Node {
    let dev_root = dev_root.path().to_str().unwrap().to_owned();
    let args = [
        "--fixture",
        "xeon",
        "--cpu-mode",
        "individual",
        "--reserved-cpus",
        "2-223",
        "--dev-root",
        &dev_root,
    ];
    crate::kubelet::Node::start(&args).await
}

/// A veth pair on the host, its end named [`NETDEV`] (MTU 1500, up): the VF's netdev. Deleted on
/// drop if still there.
struct StandIn {
    peer: String,
}

impl StandIn {
    fn new() -> StandIn {
        assert!(
            link(NETDEV).is_none(),
            "{NETDEV} already exists on this host: another run of this test, or a real NIC"
        );
        let peer = format!("dhvp{}", std::process::id() % 10_000_000);
        ip(&[
            "link", "add", NETDEV, "mtu", "1500", "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", NETDEV, "up"]);
        ip(&["link", "set", &peer, "up"]);
        StandIn { peer }
    }

    /// The MAC address of the stand-in, while on the host.
    fn mac(&self) -> String {
        link(NETDEV).expect("the stand-in is on the host")["address"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for name in [NETDEV, &self.peer] {
            let _ = Command::new("ip")
                .args(["link", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// The host's link `name` as `ip -j link show` has it.
fn link(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-j", "link", "show", "dev", name])
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    links.get(0).cloned()
}

fn vf_config(fields: serde_json::Value) -> serde_json::Value {
    let mut parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig"});
    for (k, v) in fields.as_object().unwrap() {
        parameters[k] = v.clone();
    }
    json!({"source": "FromClaim", "requests": ["vf"],
           "opaque": {"driver": "hal.dra.dev", "parameters": parameters}})
}

/// CNI mode: the demo's `VfConfig` naming the NetworkAttachmentDefinition `vf-test1`, whose
/// `host-device` moves the netdev in and `static` gives it 192.0.2.20/24 and a route.
fn cni_mode(node: &Node) -> serde_json::Value {
    let nad = json!({
        "cniVersion": "1.0.0", "name": "vf-test1", "type": "host-device", "device": NETDEV,
        "ipam": {"type": "static", "addresses": [{"address": "192.0.2.20/24", "gateway": "192.0.2.1"}],
                 "routes": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}]}
    });
    node.add_nad("vf-test1", &nad);
    json!([vf_config(
        json!({"ifName": "net1", "netAttachDefName": "vf-test1"})
    )])
}

/// Direct mode: this driver's `NetworkConfig`, 192.0.2.30/24, MTU 1400, a route.
fn direct_mode() -> serde_json::Value {
    let parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "NetworkConfig",
        "interface": {"name": "net1", "addresses": ["192.0.2.30/24"], "mtu": 1400},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]});
    json!([{"source": "FromClaim", "requests": ["vf"],
            "opaque": {"driver": "hal.dra.dev", "parameters": parameters}}])
}

/// What the container sees of its network: `ip addr`, `/sys/class/net`, `net1`'s MTU, and the
/// local addresses of `/proc/net/fib_trie`.
const LOOK: &str = "ip addr; echo '# /sys/class/net:' $(ls /sys/class/net); \
                    echo '# net1 mtu' $(cat /sys/class/net/net1/mtu); \
                    echo '# fib_trie:'; cat /proc/net/fib_trie";

/// Prepares the claim `uid` with `config` for the pod `name`, runs the pod in its own network
/// namespace and a busybox container in it (with the claim's CDI devices); what it saw of its
/// network (printed, for the report).
async fn run_attached(
    node: &Node,
    dev_root: &std::path::Path,
    uid: &str,
    name: &str,
    config: serde_json::Value,
) -> (Pod, String, String) {
    let pod_uid = format!("uid-{name}");
    node.add_claim_with_config(uid, &[("vf", VF)], config, &pod_uid);
    let cdi = node.prepare(uid).await;
    node.make_device_nodes(uid, dev_root);
    let started = Instant::now();
    let pod = node
        .pod_on_network(name, &pod_uid)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {name}: {e}\nplugin log {}\ncontainerd log {}",
                node.plugin_log(),
                node.containerd.log()
            )
        });
    let took = started.elapsed();
    eprintln!(
        "containerd {}: RunPodSandbox {name} with net1 took {took:?}",
        node.containerd.major
    );
    let container = node
        .cri
        .start_container(&pod, "main", &["sleep", "100000"], &cdi)
        .await
        .unwrap();
    let seen = node
        .cri
        .exec(&container, &["sh", "-c", LOOK])
        .await
        .unwrap();
    eprintln!(
        "--- containerd {} pod {name}: the container sees\n{seen}---",
        node.containerd.major
    );
    (pod, container, seen)
}

/// `net1` with `address` (and `eth0` from containerd's CNI) as the container saw them.
fn assert_net1(seen: &str, address: &str, mtu: u32) {
    assert!(
        seen.lines()
            .any(|l| l.contains(&format!("inet {address}")) && l.ends_with("net1")),
        "net1 with {address} in {seen}"
    );
    let class = seen
        .lines()
        .find(|l| l.starts_with("# /sys/class/net:"))
        .unwrap();
    let mut names: Vec<&str> = class.split_whitespace().skip(2).collect();
    names.sort_unstable();
    assert_eq!(names, ["eth0", "lo", "net1"], "{seen}");
    assert!(seen.contains(&format!("# net1 mtu {mtu}")), "{seen}");
    // fib_trie: the address is a local /32 of the pod's namespace.
    let local = seen.lines().skip_while(|l| !l.contains("fib_trie"));
    let host = address.split('/').next().unwrap();
    let lines: Vec<&str> = local.collect();
    assert!(
        lines
            .windows(2)
            .any(|w| w[0].trim_start().starts_with(&format!("|-- {host}"))
                && w[1].contains("/32 host LOCAL")),
        "{host} local in fib_trie: {seen}"
    );
}

/// Removes the pod's container, then the pod (StopPodSandbox, RemovePodSandbox); prints how long
/// StopPodSandbox took (the plugin's teardown is in it).
async fn remove(node: &Node, pod: &Pod, container: &str) {
    node.cri.remove_container(container).await.unwrap();
    let started = Instant::now();
    node.cri.stop_pod(pod).await.unwrap();
    eprintln!(
        "containerd {}: StopPodSandbox {} took {:?}",
        node.containerd.major,
        pod.name,
        started.elapsed()
    );
    node.cri.remove_pod(pod).await.unwrap();
}

/// A pod in its own network namespace without claims, run and removed: how long containerd's own
/// CNI (`eth0`) takes, to compare with a pod that also gets `net1`.
async fn baseline(node: &Node) {
    let started = Instant::now();
    let pod = node.pod_on_network("plain", "uid-plain").await.unwrap();
    let run = started.elapsed();
    let started = Instant::now();
    node.cri.stop_pod(&pod).await.unwrap();
    let stop = started.elapsed();
    node.cri.remove_pod(&pod).await.unwrap();
    eprintln!(
        "containerd {}: a pod without claims: RunPodSandbox {run:?}, StopPodSandbox {stop:?}",
        node.containerd.major
    );
}

/// The claim's `status.devices` entry of the VF: its `networkData`.
fn network_data(node: &Node, uid: &str) -> serde_json::Value {
    let api = node.api.lock().unwrap();
    let claim = &api.claims[&format!("default/claim-{uid}")];
    claim["status"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["device"] == VF)
        .map(|d| d["networkData"].clone())
        .unwrap_or_default()
}

/// Waits up to 10 s for the stand-in to be back on the host with `mac`; its link.
async fn back_home(node: &Node, mac: &str) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(back) = link(NETDEV) {
            assert_eq!(back["address"], mac, "{back}");
            return back;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{NETDEV} is not back on the host: plugin log {}\ncontainerd log {}",
        node.plugin_log(),
        node.containerd.log()
    );
}

/// CNI mode: the pod's container sees `net1` with the NAD's address; after the pod's removal the
/// host has the netdev back under its name (host-device's DEL, run at StopPodSandbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, containerd (DRA_HAL_CONTAINERD_BIN) and the CNI reference plugins"]
async fn containerd_pod_gets_net1_from_its_network_attachment_definition_needs_root_and_containerd()
{
    let dev_root = tempfile::tempdir().unwrap();
    let node = start(&dev_root).await;
    let vf = StandIn::new();
    let mac = vf.mac();
    baseline(&node).await;
    let config = cni_mode(&node);
    let (pod, container, seen) =
        run_attached(&node, dev_root.path(), "vfcni", "vfcni", config).await;
    assert_net1(&seen, "192.0.2.20/24", 1500);
    assert!(link(NETDEV).is_none(), "the netdev left the host");
    let data = network_data(&node, "vfcni");
    assert_eq!(data["interfaceName"], "net1", "{data}");
    assert_eq!(data["ips"], json!(["192.0.2.20/24"]), "{data}");
    assert_eq!(data["hardwareAddress"], mac.as_str(), "{data}");

    remove(&node, &pod, &container).await;
    let back = back_home(&node, &mac).await;
    assert_eq!(back["mtu"], 1500);
    node.unprepare("vfcni").await;
    node.finish().await;
}

/// Direct mode: the plugin moves the netdev in as `net1` with the NetworkConfig's address and MTU,
/// and back under its name with its MTU at StopPodSandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, containerd (DRA_HAL_CONTAINERD_BIN) and the CNI reference plugins"]
async fn containerd_pod_gets_net1_from_its_claims_network_config_needs_root_and_containerd() {
    let dev_root = tempfile::tempdir().unwrap();
    let node = start(&dev_root).await;
    let vf = StandIn::new();
    let mac = vf.mac();
    baseline(&node).await;
    let (pod, container, seen) = run_attached(
        &node,
        dev_root.path(),
        "vfdirect",
        "vfdirect",
        direct_mode(),
    )
    .await;
    assert_net1(&seen, "192.0.2.30/24", 1400);
    assert!(
        seen.lines()
            .any(|l| l.contains("link/ether") && l.contains(&mac)),
        "net1 keeps its MAC {mac}: {seen}"
    );
    assert!(link(NETDEV).is_none(), "the netdev left the host");
    let data = network_data(&node, "vfdirect");
    assert_eq!(data["interfaceName"], "net1", "{data}");
    assert_eq!(data["ips"], json!(["192.0.2.30/24"]), "{data}");

    remove(&node, &pod, &container).await;
    let back = back_home(&node, &mac).await;
    assert_eq!(back["mtu"], 1500, "the MTU restored: {back}");
    assert!(
        back["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{back}"
    );
    node.unprepare("vfdirect").await;
    node.finish().await;
}

/// CNI mode with the plugin killed (SIGKILL) after the attachment: started again, it still runs the
/// DEL when the pod is removed (from its CNI cache on disk), and the netdev is home. Then the same
/// with the pod removed while the plugin is down: containerd deletes the namespace, which destroys a
/// veth (a VF would fall back to the host); the restarted plugin finds the sandbox gone at its
/// Synchronize and runs the DEL of its cached attachment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, containerd (DRA_HAL_CONTAINERD_BIN) and the CNI reference plugins"]
async fn containerd_plugin_killed_between_add_and_removal_still_runs_del_needs_root_and_containerd()
{
    let dev_root = tempfile::tempdir().unwrap();
    let mut node = start(&dev_root).await;
    let vf = StandIn::new();
    let mac = vf.mac();
    let config = cni_mode(&node);
    let (pod, container, seen) =
        run_attached(&node, dev_root.path(), "vfkill", "vfkill", config.clone()).await;
    assert_net1(&seen, "192.0.2.20/24", 1500);

    node.kill_plugin();
    node.start_plugin().await;
    remove(&node, &pod, &container).await;
    back_home(&node, &mac).await;
    node.unprepare("vfkill").await;

    // Removed while the plugin is down.
    let (pod, container, seen) =
        run_attached(&node, dev_root.path(), "vfgone", "vfgone", config).await;
    assert_net1(&seen, "192.0.2.20/24", 1500);
    node.kill_plugin();
    remove(&node, &pod, &container).await;
    assert!(
        link(NETDEV).is_none(),
        "the veth went with the pod's namespace"
    );
    let dels = |node: &Node| {
        node.plugin_log()
            .matches("CNI DEL for a sandbox gone while the plugin was down")
            .count()
    };
    assert_eq!(dels(&node), 0);
    let cache = state(&node, "cni/results");
    assert_eq!(files_in(&cache).len(), 1, "the attachment is cached");
    node.start_plugin().await;
    node.wait("the DEL of the vanished sandbox", |node| dels(node) == 1)
        .await;
    assert_eq!(
        files_in(&cache),
        Vec::<String>::new(),
        "CNI cache after the DEL"
    );
    node.unprepare("vfgone").await;
    drop(vf);
    node.finish().await;
}

/// A directory of the plugin's pod networking state (`cni/results`, `direct`).
fn state(node: &Node, under: &str) -> std::path::PathBuf {
    node.kubelet_root().join("plugins/hal.dra.dev").join(under)
}

/// The names of the files in `dir` (which must exist).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Direct mode with the plugin killed (SIGKILL) after the move, while the pod runs with `net1`, and
/// started again: the pod's removal moves the netdev home (from the state file), MTU restored. Then a
/// pod removed while the plugin is down: the veth goes with the namespace; the restarted plugin's
/// Synchronize finds the sandbox gone, reports the netdev gone and forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, containerd (DRA_HAL_CONTAINERD_BIN) and the CNI reference plugins"]
async fn containerd_plugin_killed_after_a_direct_move_still_brings_the_netdev_home_needs_root_and_containerd()
 {
    let dev_root = tempfile::tempdir().unwrap();
    let mut node = start(&dev_root).await;
    let vf = StandIn::new();
    let mac = vf.mac();
    let (pod, container, seen) =
        run_attached(&node, dev_root.path(), "vfdkill", "vfdkill", direct_mode()).await;
    assert_net1(&seen, "192.0.2.30/24", 1400);

    node.kill_plugin();
    node.start_plugin().await;
    remove(&node, &pod, &container).await;
    let back = back_home(&node, &mac).await;
    assert_eq!(back["mtu"], 1500, "the MTU restored: {back}");
    node.unprepare("vfdkill").await;

    // Removed while the plugin is down.
    let (pod, container, seen) =
        run_attached(&node, dev_root.path(), "vfdgone", "vfdgone", direct_mode()).await;
    assert_net1(&seen, "192.0.2.30/24", 1400);
    node.kill_plugin();
    remove(&node, &pod, &container).await;
    assert!(
        link(NETDEV).is_none(),
        "the veth went with the pod's namespace"
    );
    let moved = state(&node, "direct");
    assert_eq!(files_in(&moved).len(), 1, "the move is recorded");
    let gone = |node: &Node| {
        node.plugin_log()
            .matches("direct-mode netdev gone with the namespace")
            .count()
    };
    assert_eq!(gone(&node), 0);
    node.start_plugin().await;
    node.wait("the vanished sandbox's netdev reported gone", |node| {
        gone(node) == 1
    })
    .await;
    assert_eq!(files_in(&moved), Vec::<String>::new(), "direct-mode state");
    node.unprepare("vfdgone").await;
    drop(vf);
    node.finish().await;
}
