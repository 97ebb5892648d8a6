//! Direct mode through the NRI sandbox events, and one lock per sandbox for both modes. Without root:
//! the checks before anything moves, and concurrent teardowns of one sandbox (a CNI plugin script
//! records its calls). As root: a real `ip netns` namespace for the pod, another standing in for the
//! host, and a veth end standing in for the VF netdev.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::tests::{
    DEVICE, api, connect, lines, network, record, recorder, start_network, written_status,
};
use super::*;
use crate::nri::fake_runtime::{FakeRuntime, PluginConn, pod_in_netns};
use crate::podnet::config::NetworkConfig;

/// The claim record of [`record`] in direct mode: no NetworkAttachmentDefinition, the
/// `NetworkConfig` `config` (with `interface.name` as the preparer fills it in) for its device, and
/// the RDMA device `mlx5_9`.
fn direct_record(pod_uid: &str, netdev: &str, config: serde_json::Value) -> ClaimRecord {
    let mut record = record(pod_uid, netdev);
    let spec = json!({"devices": [{"name": format!("uid-1-{DEVICE}"), "containerEdits": {"env": [
        format!("DRA_HAL_DEVICES={DEVICE}"),
        "DRA_HAL_NIC_0_PCI_ADDRESS=0000:3b:02.0".to_owned(),
        format!("DRA_HAL_NIC_0_NETDEV={netdev}"),
        "DRA_HAL_NIC_0_IFNAME=net1".to_owned(),
        // An RDMA device this machine does not have: looked for, not found, the netdev moved anyway.
        "DRA_HAL_RDMA_DEVICE=mlx5_9".to_owned(),
    ]}}]});
    record.cdi_spec = spec.into();
    record
        .network
        .insert(DEVICE.into(), NetworkConfig::decode(config).unwrap());
    record
}

/// The demo's NetworkConfig: `net1`, IPv4 and IPv6 addresses, MTU 1400, a route of each family.
fn demo_config() -> serde_json::Value {
    json!({
        "interface": {"name": "net1", "addresses": ["192.0.2.10/24", "fd00:9::10/64"], "mtu": 1400},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"},
                   {"destination": "2001:db8::/32", "gateway": "fd00:9::1"}]
    })
}

#[tokio::test]
async fn a_direct_mode_function_without_a_namespace_or_netdev_fails_the_sandbox_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&[]);
    let mut record = direct_record("pod-uid-1", "ens1f0v0", demo_config());
    let records: BTreeMap<String, ClaimRecord> = [("uid-1".to_owned(), record.clone())].into();
    let net = network(dir.path(), dir.path(), records, &api);
    let host = crate::nri::fake_runtime::pod("sandbox1", "pod-uid-1");
    let error = net.run_pod_sandbox(&host).await.unwrap_err().to_string();
    assert!(error.contains("has no network namespace"), "{error}");
    assert!(error.contains("NetworkConfig"), "{error}");

    // The function is bound to vfio-pci: the record names no netdev.
    let spec = json!({"devices": [{"name": "uid-1-x", "containerEdits": {"env": [
        "DRA_HAL_NIC_0_PCI_ADDRESS=0000:3b:02.0"]}}]});
    record.cdi_spec = spec.into();
    let net = network(
        dir.path(),
        dir.path(),
        [("uid-1".to_owned(), record)].into(),
        &api,
    );
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/none"));
    let error = net.run_pod_sandbox(&pod).await.unwrap_err();
    assert!(matches!(error, SandboxError::NoNetdev { .. }), "{error:?}");
    assert_eq!(error.kind(), hal::ErrorKind::InvalidInput);
    assert_eq!(
        error.to_string(),
        "claim demo/claim1 device nic-0000-3b-02-0 (0000:3b:02.0): NetworkConfig: the function \
         has no netdev on the host to move"
    );
    // Nothing was recorded as moved.
    assert!(net.direct.moved().unwrap().is_empty());
}

/// A CNI plugin `rec` whose DEL takes 300 ms, so that two teardowns of one sandbox overlap.
fn slow_recorder(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    recorder(dir);
    let path = dir.join("rec");
    let script = std::fs::read_to_string(&path).unwrap().replacen(
        "cat > ",
        "[ \"$CNI_COMMAND\" = DEL ] && sleep 0.3\ncat > ",
        1,
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_teardowns_of_one_sandbox_run_del_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    slow_recorder(&bin);
    let nad = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;
    let api = api(&[("vf-test1", nad)]);
    let records: BTreeMap<String, ClaimRecord> =
        [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let net = network(&bin, dir.path(), records, &api);
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));

    // A stop and a remove at once.
    net.run_pod_sandbox(&pod).await.unwrap();
    let (stop, remove) = tokio::join!(net.stop_pod_sandbox(&pod), net.stop_pod_sandbox(&pod));
    stop.unwrap();
    remove.unwrap();
    let dels = |log: Vec<String>| log.iter().filter(|l| l.starts_with("DEL")).count();
    assert_eq!(
        dels(lines(&bin.join("log"))),
        1,
        "{:?}",
        lines(&bin.join("log"))
    );

    // A Synchronize cleanup (the sandbox is not among the runtime's) and a stop at once.
    net.run_pod_sandbox(&pod).await.unwrap();
    let mark = net.sandboxes.mark();
    let (vanished, unlisted) = net.vanished(&["sandbox0".to_owned()].into());
    assert_eq!(vanished, ["sandbox1".to_owned()].into());
    assert!(unlisted.is_empty(), "{unlisted:?}");
    let ((), stop) = tokio::join!(net.del_vanished(vanished, mark), net.stop_pod_sandbox(&pod));
    stop.unwrap();
    assert_eq!(
        dels(lines(&bin.join("log"))),
        2,
        "{:?}",
        lines(&bin.join("log"))
    );
    assert!(net.cni.cached().unwrap().is_empty());
    // No lock is left behind.
    assert_eq!(net.sandboxes.len(), 0);
}

#[test]
fn the_recorded_network_config_of_a_device_reaches_its_pod_function() {
    let record = direct_record("pod-uid-1", "ens1f0v0", demo_config());
    let functions = of_pod(&[("uid-1".to_owned(), record)].into(), "pod-uid-1");
    assert_eq!(functions.len(), 1);
    let config = functions[0].direct.as_ref().expect("direct mode");
    assert_eq!(config.name.as_deref(), Some("net1"));
    assert_eq!(config.mtu, Some(1400));
    assert_eq!(functions[0].network, None);
    assert_eq!(functions[0].rdma.as_deref(), Some("mlx5_9"));
}

mod root {
    use super::*;
    use dra_podnet::testing::{Netns, sh, veth};

    /// `ip -n <ns> <args>` as text, for the log of what the pod saw.
    fn ip_text(ns: &Netns, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.0])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip_addr(ns: &Netns, name: &str) -> String {
        ip_text(ns, &["addr", "show", "dev", name])
    }

    fn global_addresses(ns: &Netns, name: &str) -> Vec<String> {
        let addrs = ns.json(&["addr", "show", "dev", name]);
        addrs[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["scope"] == "global")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_up(link: &serde_json::Value) -> bool {
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
    }

    /// A "host" namespace with the veth `vf0` (MTU 1500, up) standing in for the VF, a pod
    /// namespace, and pod networking over `dir` moving netdevs from that host.
    fn setup(dir: &Path, api: &Arc<Mutex<crate::fake_api::FakeApi>>) -> (Netns, Netns, PodNetwork) {
        let home = Netns::new("dhome");
        let pod = Netns::new("dpod");
        veth(&home, "vf0", "vf0peer");
        let records = [(
            "uid-1".to_owned(),
            direct_record("pod-uid-1", "vf0", demo_config()),
        )]
        .into();
        let mut net = network(dir, dir, records, api);
        net.direct.home = home.path();
        (home, pod, net)
    }

    use std::sync::{Arc, Mutex};

    /// The plugin loop with `net`, on a fake runtime listening in `dir`, connected and synchronized.
    async fn plugin_with(
        dir: &Path,
        net: PodNetwork,
    ) -> (FakeRuntime, super::super::tests::Node, PluginConn) {
        let socket = dir.join("nri.sock");
        let runtime = FakeRuntime::listen(&socket).unwrap();
        let node = start_network(&socket, net);
        let conn = connect(&runtime).await;
        (runtime, node, conn)
    }

    #[tokio::test]
    #[ignore = "needs root: network namespaces and veth"]
    async fn direct_mode_through_nri_gives_the_pod_net1_and_stop_brings_it_home_needs_root() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&[]);
        let (home, pod_ns, net) = setup(dir.path(), &api);
        let mac = home.link("vf0").unwrap()["address"]
            .as_str()
            .unwrap()
            .to_owned();
        // vf0's index is taken in the pod's namespace: the kernel gives it another at the move.
        let host_index = home.link("vf0").unwrap()["ifindex"].as_i64().unwrap();
        let taken = host_index.to_string();
        sh(&[
            "-n",
            &pod_ns.0,
            "link",
            "add",
            "taken",
            "index",
            &taken,
            "type",
            "veth",
            "peer",
            "name",
            "takenpeer",
        ]);
        let (_runtime, node, conn) = plugin_with(dir.path(), net.clone()).await;
        let pod = pod_in_netns("sandboxd1", "pod-uid-1", &pod_ns.path());
        let started = std::time::Instant::now();
        conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
            .await
            .unwrap();
        // Well inside containerd's NRI request timeout (2 s by default).
        println!("RunPodSandbox answered in {:?}", started.elapsed());
        // What the pod's namespace sees.
        println!(
            "ip -n {0} addr show dev net1:\n{1}ip -n {0} route; ip -n {0} -6 route:\n{2}{3}",
            pod_ns.0,
            ip_addr(&pod_ns, "net1"),
            ip_text(&pod_ns, &["route"]),
            ip_text(&pod_ns, &["-6", "route"])
        );
        assert!(home.link("vf0").is_none());
        let link = pod_ns.link("net1").expect("net1 in the pod");
        assert_eq!(link["mtu"], 1400);
        assert!(is_up(&link));
        assert_eq!(link["address"], mac.as_str());
        assert_eq!(
            global_addresses(&pod_ns, "net1"),
            ["192.0.2.10/24", "fd00:9::10/64"]
        );
        let routes = pod_ns.json(&["route", "show", "198.51.100.0/24"]);
        assert_eq!(routes[0]["gateway"], "192.0.2.1");
        assert_eq!(routes[0]["dev"], "net1");
        let routes6 = pod_ns.json(&["-6", "route", "show", "2001:db8::/32"]);
        assert_eq!(routes6[0]["gateway"], "fd00:9::1");
        // networkData in the claim's status, the preparer's data kept.
        let devices = written_status(&api).await;
        assert_eq!(
            devices[0]["networkData"],
            json!({"interfaceName": "net1", "ips": ["192.0.2.10/24", "fd00:9::10/64"],
                   "hardwareAddress": mac})
        );
        assert_eq!(devices[0]["data"]["pciAddress"], "0000:3b:02.0");
        // Its state is on disk until it is home.
        let moved = net.direct.moved().unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0, "sandboxd1-net1");
        let saved = &moved[0].1.as_ref().unwrap().saved;
        assert_eq!(
            (
                saved.host_name.as_str(),
                saved.mtu,
                saved.up,
                saved.rdma.as_deref()
            ),
            ("vf0", 1500, true, Some("mlx5_9"))
        );
        let pod_index = link["ifindex"].as_i64().unwrap();
        assert_ne!(pod_index, host_index);
        assert_eq!(
            saved.index.map(i64::from),
            Some(pod_index),
            "its index in the pod"
        );

        let stopping = std::time::Instant::now();
        conn.sandbox_event(event::STOP_POD_SANDBOX, &pod)
            .await
            .unwrap();
        println!("StopPodSandbox answered in {:?}", stopping.elapsed());
        assert!(pod_ns.link("net1").is_none());
        let back = home.link("vf0").expect("vf0 back on the host");
        println!(
            "after stop, ip -n {} link show vf0: mtu {} flags {}",
            home.0, back["mtu"], back["flags"]
        );
        assert_eq!(back["mtu"], 1500);
        assert!(is_up(&back));
        assert!(global_addresses(&home, "vf0").is_empty());
        assert!(net.direct.moved().unwrap().is_empty());
        // The remove finds nothing left.
        conn.sandbox_event(event::REMOVE_POD_SANDBOX, &pod)
            .await
            .unwrap();
        assert!(home.link("vf0").is_some());
        node.stop().await;
    }

    #[tokio::test]
    #[ignore = "needs root: network namespaces and veth"]
    async fn after_a_plugin_restart_synchronize_moves_a_vanished_sandboxs_netdev_home_needs_root() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&[]);
        let (home, pod_ns, net) = setup(dir.path(), &api);
        let (runtime, node, conn) = plugin_with(dir.path(), net.clone()).await;
        let pod = pod_in_netns("sandboxd2", "pod-uid-1", &pod_ns.path());
        conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
            .await
            .unwrap();
        assert!(pod_ns.link("net1").is_some());
        // The plugin goes without a stop event (what a kill leaves: the state file), the sandbox
        // goes meanwhile; a new plugin over the same directory synchronizes without it.
        node.stop().await;
        drop(conn);
        let mut fresh = network(dir.path(), dir.path(), BTreeMap::new(), &api);
        fresh.direct.home = home.path();
        let node = start_network(&dir.path().join("nri.sock"), fresh.clone());
        let conn = connect(&runtime).await;
        for _ in 0..200 {
            if fresh.direct.moved().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(fresh.direct.moved().unwrap().is_empty());
        assert!(pod_ns.link("net1").is_none());
        let back = home.link("vf0").expect("vf0 back on the host");
        assert_eq!(back["mtu"], 1500);
        assert!(is_up(&back));
        drop(conn);
        node.stop().await;
    }

    #[tokio::test]
    #[ignore = "needs root: network namespaces and veth"]
    async fn a_plugin_killed_after_writing_the_state_leaves_no_netdev_behind_needs_root() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&[]);
        let (home, pod_ns, net) = setup(dir.path(), &api);
        veth(&home, "vf1", "vf1peer");
        let config = NetworkConfig::decode(demo_config()).unwrap();
        let state = |host_name: &str, pod_name: &str| {
            let mut config = config.clone();
            config.name = Some(pod_name.to_owned());
            let saved =
                crate::podnet::direct::survey(&home.path(), host_name, &pod_ns.path(), &config)
                    .unwrap();
            let entry = Moved {
                kind: crate::podnet::moved::MOVED_KIND.into(),
                sandbox: "sandboxd5".into(),
                claim: "demo/claim1".into(),
                device: DEVICE.into(),
                saved,
            };
            crate::podnet::moved::store(&net.direct.state_dir, &entry).unwrap();
        };
        // Killed after the state of vf0 was written, before it moved; and after vf1 moved (as
        // net2, down, MTU 1280), before it was configured.
        state("vf0", "net1");
        state("vf1", "net2");
        dra_podnet::testing::sh(&[
            "-n", &home.0, "link", "set", "vf1", "netns", &pod_ns.0, "name", "net2",
        ]);
        dra_podnet::testing::sh(&[
            "-n", &pod_ns.0, "link", "set", "net2", "down", "mtu", "1280",
        ]);
        assert_eq!(net.direct.moved().unwrap().len(), 2);
        // The next plugin's Synchronize does not list the sandbox.
        let (vanished, _) = net.vanished(&["sandbox0".to_owned()].into());
        assert_eq!(vanished, ["sandboxd5".to_owned()].into());
        net.del_vanished(vanished, net.sandboxes.mark()).await;
        assert!(net.direct.moved().unwrap().is_empty());
        assert!(pod_ns.link("net2").is_none());
        for name in ["vf0", "vf1"] {
            let back = home
                .link(name)
                .unwrap_or_else(|| panic!("{name} on the host"));
            assert_eq!(back["mtu"], 1500, "{name}");
            assert!(is_up(&back), "{name}");
        }
    }

    #[tokio::test]
    #[ignore = "needs root: network namespaces and veth"]
    async fn a_namespace_deleted_before_stop_is_reported_gone_and_forgotten_needs_root() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&[]);
        let (home, pod_ns, net) = setup(dir.path(), &api);
        let pod = pod_in_netns("sandboxd3", "pod-uid-1", &pod_ns.path());
        net.run_pod_sandbox(&pod).await.unwrap();
        assert!(pod_ns.link("net1").is_some());
        // The namespace goes first: the veth is destroyed with it (a physical VF would come back).
        pod_ns.delete();
        let done = net.teardown(&pod.id).await;
        assert!(done.cni.is_empty());
        assert_eq!(done.direct.len(), 1);
        assert_eq!(done.direct[0].0, "sandboxd3-net1");
        assert_eq!(done.direct[0].1.as_ref().unwrap(), &Detached::Gone);
        assert!(
            net.direct.moved().unwrap().is_empty(),
            "the state is dropped"
        );
        assert!(home.link("vf0").is_none());
        // Stop and remove events after that succeed: nothing is left to do.
        net.stop_pod_sandbox(&pod).await.unwrap();
        net.stop_pod_sandbox(&pod).await.unwrap();
    }

    #[tokio::test]
    #[ignore = "needs root: network namespaces and veth"]
    async fn a_direct_attach_the_kernel_refuses_fails_the_sandbox_and_leaves_the_netdev_home_needs_root()
     {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&[]);
        let (home, pod_ns, mut net) = setup(dir.path(), &api);
        // The same route twice: the kernel answers EEXIST on the second.
        let config = json!({
            "interface": {"name": "net1", "addresses": ["192.0.2.10/24"]},
            "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"},
                       {"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]
        });
        let records: BTreeMap<String, ClaimRecord> = [(
            "uid-1".to_owned(),
            direct_record("pod-uid-1", "vf0", config),
        )]
        .into();
        net.prepared = Arc::new(move || Ok(records.clone()));
        let pod = pod_in_netns("sandboxd4", "pod-uid-1", &pod_ns.path());
        let error = net.run_pod_sandbox(&pod).await.unwrap_err().to_string();
        assert!(
            error.starts_with(
                "claim demo/claim1 device nic-0000-3b-02-0 (0000:3b:02.0): NetworkConfig: adding route 198.51.100.0/24"
            ),
            "{error}"
        );
        assert!(pod_ns.link("net1").is_none());
        assert_eq!(home.link("vf0").unwrap()["mtu"], 1500);
        assert!(net.direct.moved().unwrap().is_empty());
    }
}
