//! The node's own network ([`crate::hostnet`]) read from a captured tree and from made-up ones.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::hostnet::*;

const DEV_VM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/captured/dev-vm"
);

#[test]
fn dev_vm_ipv6_default_route_and_addresses_are_read() {
    let text = std::fs::read_to_string(Path::new(DEV_VM).join("proc/net/ipv6_route")).unwrap();
    // The fixture has a `::/0 via fd00::1` route on eth0 and the reject route `::/0` on lo.
    assert_eq!(default_v6(&text), ["eth0"]);
    let inet6 = std::fs::read_to_string(Path::new(DEV_VM).join("proc/net/if_inet6")).unwrap();
    assert_eq!(
        holder_v6(&inet6, "fd00::2".parse().unwrap()).as_deref(),
        Some("eth0")
    );
    assert_eq!(holder_v6(&inet6, "fd00::3".parse().unwrap()), None);
}

/// Plain reads of a trusted tree made by the test.
struct Plain(PathBuf);

impl NetworkFiles for Plain {
    fn read(&self, relative: &Path) -> Result<Option<String>, String> {
        match std::fs::read_to_string(self.0.join(relative)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn list(&self, relative: &Path) -> Result<Vec<String>, String> {
        match std::fs::read_dir(self.0.join(relative)) {
            Ok(entries) => Ok(entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A tree with `proc/net/*` and `sys/class/net/*` as given.
fn tree(route: &str, ipv6_route: &str, if_inet6: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("proc/net");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("route"), route).unwrap();
    std::fs::write(net.join("ipv6_route"), ipv6_route).unwrap();
    std::fs::write(net.join("if_inet6"), if_inet6).unwrap();
    let root = dir.path().to_owned();
    (dir, root)
}

const HEADER: &str =
    "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";

#[test]
fn the_interface_of_the_internal_ip_is_protected_without_a_default_route() {
    // Only connected routes: 192.0.2.0/24 on ens5, 10.0.0.0/8 and 10.1.0.0/16 on two others.
    let route = format!(
        "{HEADER}ens5\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
         wide\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
         narrow\t0000010A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    );
    let inet6 = "fd000000000000000000000000000007 04 40 00 80     ens6\n";
    let (_dir, root) = tree(&route, "", inet6);
    let ips: Vec<IpAddr> = ["192.0.2.9", "10.1.2.3", "fd00::7", "203.0.113.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let node = NodeNetwork::read(&Plain(root.clone()), &ips);
    let names: Vec<&String> = node.interfaces.keys().collect();
    assert_eq!(names, ["ens5", "ens6", "narrow"], "longest prefix wins");
    assert_eq!(
        node.interfaces["ens5"],
        Reason::InternalIp("192.0.2.9".parse().unwrap())
    );
    // No InternalIP: nothing (no default route either).
    assert!(
        NodeNetwork::read(&Plain(root.clone()), &[])
            .interfaces
            .is_empty()
    );
}

/// [`Plain`] reads, and the addresses a live node's kernel would list.
struct WithAddresses(Plain, Vec<(String, IpAddr)>);

impl NetworkFiles for WithAddresses {
    fn read(&self, relative: &Path) -> Result<Option<String>, String> {
        self.0.read(relative)
    }
    fn list(&self, relative: &Path) -> Result<Vec<String>, String> {
        self.0.list(relative)
    }
    fn addresses(&self) -> Option<Vec<(String, IpAddr)>> {
        Some(self.1.clone())
    }
}

#[test]
fn two_ports_on_the_internal_ips_subnet_are_both_protected_unless_the_kernel_names_one() {
    // 10.0.0.0/24 on two ports; the default route on a third.
    let route = format!(
        "{HEADER}mgmt\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
         ens1f0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
         ens1f1\t0000000A\t00000000\t0001\t0\t0\t101\t00FFFFFF\t0\t0\t0\n"
    );
    let (_dir, root) = tree(&route, "", "");
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    let node = NodeNetwork::read(&Plain(root.clone()), &[ip]);
    let names: Vec<&String> = node.interfaces.keys().collect();
    assert_eq!(
        names,
        ["ens1f0", "ens1f1", "mgmt"],
        "the routes cannot tell"
    );
    // The kernel says which holds it: that one only.
    let held = vec![
        ("ens1f1".to_owned(), ip),
        ("mgmt".to_owned(), "192.168.0.9".parse().unwrap()),
    ];
    let node = NodeNetwork::read(&WithAddresses(Plain(root.clone()), held), &[ip]);
    let names: Vec<&String> = node.interfaces.keys().collect();
    assert_eq!(names, ["ens1f1", "mgmt"]);
    assert_eq!(node.interfaces["ens1f1"], Reason::InternalIp(ip));
    // A /32 InternalIP has no connected route: only the kernel's addresses name its interface.
    let only_default =
        format!("{HEADER}mgmt\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
    let (_dir2, root2) = tree(&only_default, "", "");
    let lone: IpAddr = "10.9.9.9".parse().unwrap();
    let node = NodeNetwork::read(&Plain(root2.clone()), &[lone]);
    assert!(!node.interfaces.contains_key("ens2"));
    let held = vec![("ens2".to_owned(), lone)];
    let node = NodeNetwork::read(&WithAddresses(Plain(root2), held), &[lone]);
    assert_eq!(node.interfaces["ens2"], Reason::InternalIp(lone));
}

#[test]
fn bridge_ports_bond_slaves_and_vlan_parents_of_the_default_route_are_protected() {
    let route = format!("{HEADER}br0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
    let ipv6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                fd000000000000000000000000000001 00000400 00000003 00000000 00000003 bond0.7\n";
    let (_dir, root) = tree(&route, ipv6, "");
    let class = root.join("sys/class/net");
    for dir in ["br0/brif/ens1", "bond0.7", "bond0/bonding", "ens9"] {
        std::fs::create_dir_all(class.join(dir)).unwrap();
    }
    std::fs::write(class.join("bond0/bonding/slaves"), "ens2 ens3\n").unwrap();
    std::os::unix::fs::symlink("../bond0", class.join("bond0.7/lower_bond0")).unwrap();
    // A name that is no interface name is ignored.
    std::fs::create_dir_all(class.join("br0/brif/a b")).unwrap();
    let node = NodeNetwork::read(&Plain(root.clone()), &[]);
    let names: Vec<&String> = node.interfaces.keys().collect();
    assert_eq!(names, ["bond0", "bond0.7", "br0", "ens1", "ens2", "ens3"]);
    assert_eq!(node.interfaces["ens1"], Reason::Below("br0".into()));
    assert_eq!(node.interfaces["ens3"], Reason::Below("bond0".into()));
    assert_eq!(node.interfaces["bond0.7"], Reason::DefaultRouteV6);
    assert_eq!(node.protects("ens9", &[]), None);
    // A bridge whose ports cannot be listed (a link loop: ELOOP): which are below it is not known,
    // so every interface is withheld, not the ports left free.
    std::fs::remove_dir_all(class.join("br0/brif")).unwrap();
    std::os::unix::fs::symlink("brif", class.join("br0/brif")).unwrap();
    let node = NodeNetwork::read(&Plain(root.clone()), &[]);
    assert!(!node.interfaces.contains_key("ens1"));
    assert!(
        matches!(node.protects("ens9", &[]), Some(Reason::Unread(ref f)) if f[0].contains("br0/brif")),
        "{:?}",
        node.unread
    );
}

#[test]
fn malformed_route_files_do_not_panic_and_yield_nothing() {
    let junk = "x\n\u{0}\u{1}\teth0\tZZ\n../../etc 00000000 0 0003 0 0 0 00000000\n\
                lo\t00000000\t0\t0003\t0\t0\t0\t00000000\n \n";
    assert!(default_v4(junk).is_empty());
    assert!(default_v6("00 00 00\n::: 0 0 0 0 0 0 0 1 eth0\n").is_empty());
    assert!(connected_v4(junk, "10.0.0.1".parse().unwrap()).is_empty());
    let (_dir, root) = tree(junk, junk, junk);
    assert!(
        NodeNetwork::read(&Plain(root.clone()), &["::1".parse().unwrap()])
            .interfaces
            .is_empty()
    );
}

#[test]
fn globs_match_like_a_shell() {
    assert!(glob_match("eth*", "eth0"));
    assert!(glob_match("ens1f?v*", "ens1f0v3"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "axxbyyc"));
    assert!(!glob_match("a*b*c", "axxbyy"));
    assert!(!glob_match("eth?", "eth10"));
    assert!(!glob_match("ens1f0", "ens1f0v0"));
}

/// A pod without hostNetwork reads its own routes (`/proc/net` is the reader's namespace) while a
/// host `/sys` shows the host's interfaces: the routes name none of them, so which are the node's
/// is not known and every interface is protected, saying why.
#[test]
fn routes_of_another_network_namespace_protect_every_interface() {
    let route = format!("{HEADER}eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
    let (_dir, root) = tree(&route, "", "");
    for host in ["ens1f0", "ens2f0np0"] {
        std::fs::create_dir_all(root.join("sys/class/net").join(host)).unwrap();
    }
    let node = NodeNetwork::read(&Plain(root.clone()), &[]);
    assert_eq!(node.unseen, Some(vec!["eth0".to_owned()]));
    let why = node.protects("ens1f0", &[]).unwrap();
    assert_eq!(why, Reason::Unseen(vec!["eth0".to_owned()]));
    assert!(why.to_string().contains("run it with hostNetwork"), "{why}");
    // In the host's namespace the routed interface is there: only it is protected.
    std::fs::create_dir_all(root.join("sys/class/net/eth0")).unwrap();
    let node = NodeNetwork::read(&Plain(root), &[]);
    assert_eq!(node.unseen, None);
    assert_eq!(node.protects("ens1f0", &[]), None);
    assert_eq!(node.protects("eth0", &[]), Some(Reason::DefaultRouteV4));
}

/// A tree without `proc/net/route` (a capture that left it out; every kernel with IPv4 has it):
/// which interface carries the default route is not known, so every interface is protected,
/// naming the file. The kernel's empty table (its header line) protects nothing, and IPv6's
/// files are optional (IPv6 may be disabled).
#[test]
fn a_tree_without_the_ipv4_routes_protects_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    std::fs::create_dir_all(root.join("sys/class/net/eth0")).unwrap();
    let node = NodeNetwork::read(&Plain(root.clone()), &[]);
    assert!(node.interfaces.is_empty());
    assert_eq!(node.unread, [MISSING_ROUTE]);
    let why = node.protects("eth0", &[]).unwrap();
    assert_eq!(why, Reason::Unread(vec![MISSING_ROUTE.to_owned()]));
    assert!(why.to_string().contains("proc/net/route: missing"), "{why}");
    std::fs::create_dir_all(root.join("proc/net")).unwrap();
    std::fs::write(root.join("proc/net/route"), HEADER).unwrap();
    let node = NodeNetwork::read(&Plain(root), &[]);
    assert_eq!(node, NodeNetwork::default());
    assert_eq!(node.protects("eth0", &[]), None);
}
