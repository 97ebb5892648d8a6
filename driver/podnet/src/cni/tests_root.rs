//! CNI mode against the real kernel and the real reference plugins (Debian's
//! `containernetworking-plugins`: `host-device`, `static`, `tuning`): a veth end in the host namespace
//! stands in for a VF netdev and is moved into an `ip netns` namespace as `net1`. Root only.

use std::process::Command;
use std::time::Duration;

use super::*;
use crate::testing::{HostVeth, Netns, bin_dir};

fn runtime(state: &std::path::Path) -> Cni {
    Cni {
        bin_dirs: vec![bin_dir()],
        cache_dir: state.join("cni/results"),
        timeout: Duration::from_secs(30),
    }
}

fn attachment(pod: &Netns, sandbox: &str) -> Attachment {
    Attachment {
        container_id: sandbox.into(),
        netns: pod.path(),
        if_name: "net1".into(),
        // A veth has no PCI address; host-device ignores a top-level deviceID without the capability.
        device_id: Some("0000:00:00.0".into()),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "demo".into()),
            ("K8S_POD_NAME".into(), "p".into()),
        ],
        labels: Default::default(),
    }
}

/// The global addresses of `dev` in `pod` as `a/len`.
fn addresses(pod: &Netns, dev: &str) -> Vec<String> {
    let addrs = pod.json(&["addr", "show", "dev", dev]);
    addrs[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["scope"] == "global")
                .map(|a| {
                    format!(
                        "{}/{}",
                        a["local"].as_str().unwrap_or_default(),
                        a["prefixlen"]
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and the CNI reference plugins (containernetworking-plugins)"]
fn host_device_with_static_ipam_moves_the_netdev_in_as_net1_and_del_brings_it_back_needs_root() {
    let state = tempfile::tempdir().unwrap();
    let cni = runtime(state.path());
    let pod = Netns::new("cni");
    let vf = HostVeth::new(1400);
    let host_mac = vf.on_host().unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = ConfList::parse(&format!(
        r#"{{"cniVersion": "1.0.0", "name": "vf-test1", "type": "host-device", "device": "{}",
            "ipam": {{"type": "static",
                      "addresses": [{{"address": "192.0.2.20/24", "gateway": "192.0.2.1"}},
                                    {{"address": "fd00:9::20/64"}}],
                      "routes": [{{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}}]}}}}"#,
        vf.0
    ))
    .unwrap();
    let added = cni.add(&list, &attachment(&pod, "sandboxa")).unwrap();
    // What the pod's namespace sees: net1, the NAD's addresses and route, the host's MAC and MTU.
    assert!(vf.on_host().is_none(), "the netdev left the host");
    let link = pod.link("net1").expect("net1 in the pod");
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], host_mac.as_str());
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(addresses(&pod, "net1"), ["192.0.2.20/24", "fd00:9::20/64"]);
    let routes = pod.json(&["route", "show", "198.51.100.0/24"]);
    assert_eq!(routes[0]["gateway"], "192.0.2.1");
    assert_eq!(routes[0]["dev"], "net1");
    // The result, and what goes into networkData.
    assert_eq!(added.network.interface_name, "net1");
    assert_eq!(added.network.ips, ["192.0.2.20/24", "fd00:9::20/64"]);
    assert_eq!(added.network.hardware_address, host_mac);
    assert_eq!(added.result["cniVersion"], "1.0.0");

    // Sandbox stop: DEL with the cached inputs brings it home under its name.
    let (_, entry) = cni.cached().unwrap().pop().unwrap();
    cni.del(&entry.unwrap()).unwrap();
    assert!(pod.link("net1").is_none());
    let back = vf.on_host().expect("back on the host under its name");
    assert_eq!(back["address"], host_mac.as_str());
    assert_eq!(back["mtu"], 1400);
    assert!(cni.cached().unwrap().is_empty());
}

#[test]
#[ignore = "needs root and the CNI reference plugins (containernetworking-plugins)"]
fn a_0_4_0_conflist_chains_host_device_and_tuning_and_a_restart_still_runs_del_needs_root() {
    let state = tempfile::tempdir().unwrap();
    let pod = Netns::new("cni");
    let vf = HostVeth::new(1500);
    let list = ConfList::parse(&format!(
        r#"{{"cniVersion": "0.4.0", "name": "vf-chain", "plugins": [
            {{"type": "host-device", "device": "{}",
              "ipam": {{"type": "static", "addresses": [{{"address": "203.0.113.5/24"}}]}}}},
            {{"type": "tuning", "mtu": 1280, "sysctl": {{"net.ipv4.conf.net1.arp_ignore": "1"}}}}]}}"#,
        vf.0
    ))
    .unwrap();
    let added = runtime(state.path())
        .add(&list, &attachment(&pod, "sandboxb"))
        .unwrap();
    // tuning needs prevResult: its having run shows in the MTU and the sysctl inside the pod.
    let link = pod.link("net1").expect("net1 in the pod");
    assert_eq!(link["mtu"], 1280);
    assert_eq!(addresses(&pod, "net1"), ["203.0.113.5/24"]);
    let sysctl = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.0,
            "cat",
            "/proc/sys/net/ipv4/conf/net1/arp_ignore",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");
    assert_eq!(added.result["cniVersion"], "0.4.0");
    assert_eq!(added.result["ips"][0]["version"], "4");
    assert_eq!(added.network.ips, ["203.0.113.5/24"]);

    // The plugin restarts (a fresh runtime over the same cache); the sandbox is gone from the runtime:
    // DEL runs from the cache alone, in reverse (tuning restores the MTU, host-device moves it home).
    let restarted = runtime(state.path());
    let done = restarted.del_vanished(&|_| false).unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].1.is_ok(), "{done:?}");
    assert!(pod.link("net1").is_none());
    let back = vf.on_host().expect("home");
    assert_eq!(back["mtu"], 1500);
    assert!(restarted.cached().unwrap().is_empty());
}

#[test]
#[ignore = "needs root and the CNI reference plugins (containernetworking-plugins)"]
fn del_after_the_namespace_is_gone_succeeds_and_a_failed_add_leaves_the_host_as_it_was_needs_root()
{
    let state = tempfile::tempdir().unwrap();
    let cni = runtime(state.path());
    let pod = Netns::new("cni");
    let vf = HostVeth::new(1500);
    let list = ConfList::parse(&format!(
        r#"{{"cniVersion": "1.0.0", "name": "vf-gone", "type": "host-device", "device": "{}",
            "ipam": {{"type": "static", "addresses": [{{"address": "192.0.2.30/24"}}]}}}}"#,
        vf.0
    ))
    .unwrap();
    cni.add(&list, &attachment(&pod, "sandboxc")).unwrap();
    // The namespace dies first (a veth dies with it; a VF would come home): DEL still completes.
    pod.delete();
    let (_, entry) = cni.cached().unwrap().pop().unwrap();
    cni.del(&entry.unwrap()).unwrap();
    assert!(cni.cached().unwrap().is_empty());
    assert!(vf.on_host().is_none());

    // A NAD naming a device that is not there: ADD fails with host-device's own message, nothing cached.
    let pod = Netns::new("cni");
    let list = ConfList::parse(
        r#"{"cniVersion": "1.0.0", "name": "vf-none", "type": "host-device", "device": "nosuchdev0",
            "ipam": {"type": "static", "addresses": [{"address": "192.0.2.31/24"}]}}"#,
    )
    .unwrap();
    let error = cni.add(&list, &attachment(&pod, "sandboxd")).unwrap_err();
    assert_eq!(error.kind(), CniErrorKind::Plugin, "{error}");
    assert!(
        error.to_string().contains("failed to find host device"),
        "{error}"
    );
    assert!(cni.cached().unwrap().is_empty());
    assert!(pod.link("net1").is_none());
}
