//! Direct mode against the real kernel: network namespaces made with `ip netns`, veth pairs standing in
//! for VF netdevs. Root only (`cargo test -- --ignored` as root in CI).

use crate::config::{Checked, Cidr};
use crate::direct::{Detached, attach, detach};
use crate::testing::{Netns, sh, veth};

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn demo_config() -> Checked {
    Checked {
        name: Some("net1".into()),
        addresses: vec![cidr("192.0.2.10/24"), cidr("fd00:9::10/64")],
        mtu: Some(1400),
        routes: vec![
            (cidr("198.51.100.0/24"), Some("192.0.2.1".parse().unwrap())),
            (cidr("2001:db8::/32"), Some("fd00:9::1".parse().unwrap())),
        ],
    }
}

/// The netdev `name` on the host, with the MAC it had before the pod (restored), MTU 1500 and up.
fn back_as_before(home: &Netns, name: &str, saved: &crate::direct::Saved) -> serde_json::Value {
    let back = home.link(name).unwrap_or_else(|| panic!("{name} home"));
    assert_eq!(back["address"], saved.mac.as_str(), "its MAC restored");
    assert_eq!(back["mtu"], 1500);
    assert!(back["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    back
}

/// `ip link set NAME address MAC` in `netns`, as a pod with NET_ADMIN may.
fn set_mac(netns: &Netns, name: &str, mac: &str) {
    sh(&["-n", &netns.0, "link", "set", name, "address", mac]);
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn direct_mode_moves_configures_and_returns_a_veth_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf0", "vf0peer");
    let attached = attach(&home.path(), "vf0", &pod.path(), &demo_config()).unwrap();
    assert_eq!(attached.saved.mtu, 1500);
    assert_eq!(
        attached.saved.perm_mac, None,
        "a veth has no permanent address"
    );
    assert!(attached.saved.up);
    let ips: Vec<String> = attached.ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["192.0.2.10/24", "fd00:9::10/64"]);
    // What the pod's namespace sees.
    assert!(home.link("vf0").is_none());
    let link = pod.link("net1").expect("net1 in the pod");
    assert_eq!(link["mtu"], 1400);
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(link["address"], attached.mac.as_str());
    let addrs = pod.json(&["addr", "show", "dev", "net1"]);
    let local: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(local, ["192.0.2.10/24", "fd00:9::10/64"]);
    let routes = pod.json(&["route", "show", "198.51.100.0/24"]);
    assert_eq!(routes[0]["gateway"], "192.0.2.1");
    assert_eq!(routes[0]["dev"], "net1");
    let routes6 = pod.json(&["-6", "route", "show", "2001:db8::/32"]);
    assert_eq!(routes6[0]["gateway"], "fd00:9::1");

    // Sandbox stop: back home under its name, MTU and state; the pod has no net1.
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    assert!(pod.link("net1").is_none());
    let back = home.link("vf0").expect("vf0 home");
    assert_eq!(back["mtu"], 1500);
    assert!(back["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    // Addresses do not follow it home.
    let addrs = home.json(&["addr", "show", "dev", "vf0"]);
    assert!(
        addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["scope"] != "global")
    );
    // A second detach finds it home and changes nothing.
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn direct_mode_restores_a_down_interface_and_its_mtu_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf1", "vf1peer");
    sh(&["-n", &home.0, "link", "set", "vf1", "down", "mtu", "9000"]);
    let config = Checked {
        mtu: Some(1280),
        ..Checked::default()
    };
    let attached = attach(&home.path(), "vf1", &pod.path(), &config).unwrap();
    // No name given: it keeps its host name in the pod.
    assert_eq!(pod.link("vf1").unwrap()["mtu"], 1280);
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    let back = home.link("vf1").unwrap();
    assert_eq!(back["mtu"], 9000);
    assert!(!back["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_veth_destroyed_with_its_namespace_detaches_as_gone_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf2", "vf2peer");
    let attached = attach(&home.path(), "vf2", &pod.path(), &demo_config()).unwrap();
    // The sandbox's namespace is destroyed before the stop event: a veth dies with it (a physical VF
    // would come back to the host).
    pod.delete();
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Gone
    );
    assert!(home.link("vf2").is_none());
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_failed_attach_moves_the_interface_back_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf3", "vf3peer");
    // The same address twice cannot be added: the kernel answers EEXIST on the route.
    let gateway = Some("192.0.2.1".parse().unwrap());
    let config = Checked {
        name: Some("net1".into()),
        addresses: vec![cidr("192.0.2.10/24")],
        mtu: None,
        routes: vec![
            (cidr("198.51.100.0/24"), gateway),
            (cidr("198.51.100.0/24"), gateway),
        ],
    };
    let error = attach(&home.path(), "vf3", &pod.path(), &config).unwrap_err();
    assert_eq!(error.errno, Some(17), "{error}");
    assert!(error.to_string().contains("198.51.100.0/24"), "{error}");
    assert!(pod.link("net1").is_none());
    assert_eq!(home.link("vf3").unwrap()["mtu"], 1500);
    // A missing interface is NotFound, and a missing namespace is a Namespace error.
    let missing = attach(&home.path(), "nope0", &pod.path(), &config).unwrap_err();
    assert_eq!(missing.kind(), crate::error::NetErrorKind::NotFound);
    let no_ns = attach(
        &home.path(),
        "vf3",
        std::path::Path::new("/run/netns/nonexistent-x"),
        &config,
    )
    .unwrap_err();
    assert_eq!(no_ns.kind(), crate::error::NetErrorKind::Namespace);
    assert!(home.link("vf3").is_some());
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_pod_that_renames_its_netdev_and_makes_another_net1_keeps_its_own_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf4", "vf4peer");
    let attached = attach(&home.path(), "vf4", &pod.path(), &demo_config()).unwrap();
    // The pod (NET_ADMIN) renames the function and makes a netdev of its own under its name.
    sh(&["-n", &pod.0, "link", "set", "net1", "down"]);
    sh(&["-n", &pod.0, "link", "set", "net1", "name", "moved"]);
    sh(&[
        "-n", &pod.0, "link", "add", "net1", "type", "veth", "peer", "name", "net1peer",
    ]);
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    // The function is home under its name; the pod's own netdev stayed in the pod.
    let back = home.link("vf4").expect("vf4 home");
    assert_eq!(back["address"], attached.saved.mac.as_str());
    assert!(pod.link("net1").is_some(), "the pod's own net1 stayed");
    assert!(pod.link("moved").is_none());
    assert!(home.link("net1").is_none());
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_netdev_whose_mac_the_pod_changed_is_still_moved_back_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf5", "vf5peer");
    let attached = attach(&home.path(), "vf5", &pod.path(), &demo_config()).unwrap();
    // The pod sets the function's MAC.
    set_mac(&pod, "net1", "02:00:00:00:0b:0b");
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    assert!(pod.link("net1").is_none());
    back_as_before(&home, "vf5", &attached.saved);
}

/// The kernel gives a netdev another index when its own is taken in the pod's namespace: the index
/// recorded is the one in the pod, so a netdev of the pod's own at the host index, renamed to the
/// pod name, is not taken for ours.
#[test]
#[ignore = "needs root: network namespaces and veth"]
fn the_index_recorded_is_the_one_the_netdev_got_in_the_pod_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf6", "vf6peer");
    let host_index = home.link("vf6").unwrap()["ifindex"].as_i64().unwrap();
    let taken = host_index.to_string();
    sh(&[
        "-n",
        &pod.0,
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
    let attached = attach(&home.path(), "vf6", &pod.path(), &demo_config()).unwrap();
    let pod_index = pod.link("net1").unwrap()["ifindex"].as_i64().unwrap();
    assert_ne!(pod_index, host_index);
    assert_eq!(attached.saved.index.map(i64::from), Some(pod_index));
    // The pod renames the function and gives its own netdev, at the host index, the pod name.
    sh(&["-n", &pod.0, "link", "set", "net1", "down"]);
    sh(&["-n", &pod.0, "link", "set", "net1", "name", "moved"]);
    sh(&["-n", &pod.0, "link", "set", "taken", "name", "net1"]);
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    let back = home.link("vf6").expect("vf6 home");
    assert_eq!(back["address"], attached.saved.mac.as_str());
    assert!(pod.link("net1").is_some(), "the pod's own net1 stayed");
    assert!(pod.link("moved").is_none());
}

/// The pod changed the function's MAC, and on the host a netdev took the function's index while it
/// was away: moved home under its host name, it gets another index there, and is still ours (the
/// move fails when its host name is taken).
#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_function_moved_home_is_ours_whatever_its_mac_and_index_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf8", "vf8peer");
    let attached = attach(&home.path(), "vf8", &pod.path(), &demo_config()).unwrap();
    let index = attached.saved.index.unwrap().to_string();
    sh(&[
        "-n",
        &home.0,
        "link",
        "add",
        "holder",
        "index",
        &index,
        "type",
        "veth",
        "peer",
        "name",
        "holderpeer",
    ]);
    sh(&["-n", &pod.0, "link", "set", "net1", "down"]);
    set_mac(&pod, "net1", "02:00:00:00:0b:0b");
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    let back = back_as_before(&home, "vf8", &attached.saved);
    assert_ne!(back["ifindex"].as_i64().map(|i| i.to_string()), Some(index));
    assert!(pod.link("net1").is_none());
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_pod_name_taken_in_the_pod_leaves_the_netdev_on_the_host_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf5", "vf5peer");
    // The pod already has a `net1`: the kernel moves `vf5` in under its own name, then fails the
    // rename (EEXIST).
    veth(&pod, "net1", "other");
    let error = attach(&home.path(), "vf5", &pod.path(), &demo_config()).unwrap_err();
    assert_eq!(error.errno, Some(17), "{error}");
    let list = |ns: &Netns| ns.json(&["link", "show"]).to_string();
    assert!(
        pod.link("vf5").is_none(),
        "left in the pod: {} / home {}",
        list(&pod),
        list(&home)
    );
    assert_eq!(home.link("vf5").unwrap()["mtu"], 1500);
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_host_name_taken_meanwhile_does_not_fail_every_detach_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf6", "vf6peer");
    let attached = attach(&home.path(), "vf6", &pod.path(), &demo_config()).unwrap();
    // Another netdev takes the host name while the pod runs.
    sh(&[
        "-n", &home.0, "link", "add", "vf6", "type", "veth", "peer", "name", "squat6",
    ]);
    // Home under the name it came back with, its MTU and state restored; the other keeps `vf6`.
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Home
    );
    assert!(pod.link("net1").is_none());
    let back = home.link("net1").expect("home as net1");
    assert_eq!(back["mtu"], 1500);
    assert!(back["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_ne!(home.link("vf6").unwrap()["address"], back["address"]);
}

#[test]
#[ignore = "needs root: network namespaces and veth"]
fn a_function_with_a_permanent_address_is_waited_for_before_it_is_gone_needs_root() {
    let home = Netns::new("home");
    let pod = Netns::new("pod");
    veth(&home, "vf7", "vf7peer");
    let mut attached = attach(&home.path(), "vf7", &pod.path(), &demo_config()).unwrap();
    // A physical function (a veth standing in, given a permanent address) whose namespace is
    // destroyed: the kernel gives such a function back asynchronously, so detach waits for it
    // before taking it as gone (a veth without one is gone at once, as above).
    attached.saved.perm_mac = Some("02:00:00:00:77:07".into());
    pod.delete();
    let started = std::time::Instant::now();
    assert_eq!(
        detach(&home.path(), &attached.saved).unwrap(),
        Detached::Gone
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
