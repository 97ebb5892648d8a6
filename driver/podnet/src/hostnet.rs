//! The node's own network: the interfaces that carry the default route (IPv4 or IPv6) or the node's
//! InternalIP, and the bridge/bond/VLAN lower devices below them. Their PCI functions are never
//! published, so no claim can rebind them to another driver or move them into a pod.
//!
//! Everything is read under a root (`/` on a node, a captured tree in `hal-probe --sysfs-root` and
//! tests) through the caller's [`NetworkFiles`]: `proc/net/route`, `proc/net/ipv6_route`,
//! `proc/net/if_inet6` and `sys/class/net/<name>/{lower_*,brif,bonding/slaves}`, and on a live node
//! the addresses the kernel lists (netlink), which name an InternalIP's interface where routes cannot.
//! Malformed lines are skipped (the files are the kernel's, but a captured tree is not); a file or
//! directory that is there but cannot be read withholds every interface ([`Reason::Unread`]): which
//! are the node's is then not known. So does a missing `proc/net/route`: every kernel with IPv4 has
//! it (a header line when the table is empty), so only a tree that left it out (a capture, a
//! fixture) lacks it, and such a tree does not say which interface carries the default route.
//! `ipv6_route` and `if_inet6` are optional (absent where IPv6 is disabled).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Why an interface is part of the node's own network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// It carries the IPv4 default route.
    DefaultRouteV4,
    /// It carries the IPv6 default route.
    DefaultRouteV6,
    /// It holds (or its connected route holds) the node's InternalIP.
    InternalIp(IpAddr),
    /// It is a lower device (bridge port, bond slave, VLAN parent) of a protected interface.
    Below(String),
    /// `--exclude-interfaces` names it.
    Excluded(String),
    /// The routes name interfaces (these) that `sys/class/net` does not show: they were read in
    /// another network namespace than the host's (a pod without `hostNetwork`), so which
    /// interfaces are the node's is not known, and none is taken to be free.
    Unseen(Vec<String>),
    /// Files of the node's network (these, with why) are there but could not be read, or
    /// `proc/net/route` is missing: which interfaces are the node's is not known, and none is
    /// taken to be free.
    Unread(Vec<String>),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::DefaultRouteV4 => write!(f, "carries the IPv4 default route"),
            Reason::DefaultRouteV6 => write!(f, "carries the IPv6 default route"),
            Reason::InternalIp(ip) => write!(f, "carries the node's InternalIP {ip}"),
            Reason::Below(upper) => write!(f, "is a member or lower device of {upper}"),
            Reason::Excluded(glob) => write!(f, "matches --exclude-interfaces {glob}"),
            Reason::Unseen(names) => write!(
                f,
                "may be the node's: its routes name {}, which /sys does not show (the plugin is \
                 not in the host's network namespace: run it with hostNetwork)",
                names.join(", ")
            ),
            Reason::Unread(files) => write!(
                f,
                "may be the node's: the node's network could not be read ({})",
                files.join("; ")
            ),
        }
    }
}

/// How the node's network is read under its root. A captured tree is untrusted, so a driver gives
/// one that stays inside the root, never blocks on a FIFO nor opens a device node, and reads at
/// most [`MAX_FILE_BYTES`] of a file (this project's driver reads through its sysfs backend).
pub trait NetworkFiles {
    /// The text of the file at `relative` (`proc/net/route`), at most its first [`MAX_FILE_BYTES`]
    /// (whole lines); `Ok(None)` when it is missing; `Err` saying why when it is there but cannot
    /// be read (the node's network is then not known, and every interface is withheld).
    fn read(&self, relative: &Path) -> Result<Option<String>, String>;
    /// The names in the directory at `relative`; none when it is missing (or not a directory);
    /// `Err` saying why when it is there but cannot be listed (as for [`NetworkFiles::read`]).
    fn list(&self, relative: &Path) -> Result<Vec<String>, String>;
    /// Each address of the node with the interface holding it, when the reader can ask the kernel
    /// (a node's own network namespace, over netlink); `None` for a captured tree, or when the
    /// kernel cannot be asked. Without it, the holder of an IPv4 InternalIP is found by its
    /// connected routes, which a `/32` address does not have.
    fn addresses(&self) -> Option<Vec<(String, IpAddr)>> {
        None
    }
}

/// Why every interface is withheld from a tree without `proc/net/route`.
pub const MISSING_ROUTE: &str = "proc/net/route: missing (every kernel with IPv4 has it: this tree \
     does not say which interface carries the default route)";

/// The most read of one file: `proc/net/ipv6_route` lines are 150 bytes, so about 100,000 routes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The interfaces of the node's own network, each with the first reason found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Interface name → why it is protected.
    pub interfaces: BTreeMap<String, Reason>,
    /// The routes' interfaces, when none of them is in `sys/class/net`: the routes were read in
    /// another network namespace, and every interface is protected ([`Reason::Unseen`]).
    pub unseen: Option<Vec<String>>,
    /// The files that are there but could not be read (or `proc/net/route`, missing), and why:
    /// which interfaces are the node's is not known, and every interface is protected
    /// ([`Reason::Unread`]).
    pub unread: Vec<String>,
}

impl NodeNetwork {
    /// Reads the node's network through `files`: default-route interfaces, the interfaces of
    /// `internal_ips`, and everything below them.
    pub fn read(files: &dyn NetworkFiles, internal_ips: &[IpAddr]) -> NodeNetwork {
        let mut unread = Vec::new();
        let mut read = |name: &str| {
            let path = Path::new("proc/net").join(name);
            files.read(&path).unwrap_or_else(|why| {
                unread.push(format!("{}: {why}", path.display()));
                Some(String::new())
            })
        };
        // A missing IPv4 table is not an empty one (that is a header line): the tree does not say
        // which interface carries the default route. IPv6 may be disabled.
        let v4 = read("route");
        let v6 = read("ipv6_route").unwrap_or_default();
        let inet6 = read("if_inet6").unwrap_or_default();
        let v4 = v4.unwrap_or_else(|| {
            unread.push(MISSING_ROUTE.to_owned());
            String::new()
        });
        let mut found = BTreeMap::new();
        for name in default_v4(&v4) {
            found.entry(name).or_insert(Reason::DefaultRouteV4);
        }
        for name in default_v6(&v6) {
            found.entry(name).or_insert(Reason::DefaultRouteV6);
        }
        let addresses = match internal_ips.is_empty() {
            true => None,
            false => files.addresses(),
        };
        for ip in internal_ips {
            // The interfaces holding it, as the kernel says; else as the files say.
            let mut holders: Vec<String> = addresses
                .iter()
                .flatten()
                .filter(|(name, held)| held == ip && is_interface_name(name))
                .map(|(name, _)| name.clone())
                .collect();
            if holders.is_empty() {
                holders = match ip {
                    IpAddr::V4(ip) => connected_v4(&v4, *ip),
                    IpAddr::V6(ip) => holder_v6(&inet6, *ip).into_iter().collect(),
                };
            }
            for name in holders {
                found.entry(name).or_insert(Reason::InternalIp(*ip));
            }
        }
        // In a pod without hostNetwork, `proc/net` is the pod's namespace while a host `/sys`
        // shows the host's interfaces: the pod's routes name none of them.
        let class = Path::new("sys/class/net");
        let host = files.list(class).unwrap_or_else(|why| {
            unread.push(format!("{}: {why}", class.display()));
            Vec::new()
        });
        let unseen = (!found.is_empty() && !found.keys().any(|name| host.contains(name)))
            .then(|| found.keys().cloned().collect());
        let mut network = NodeNetwork {
            interfaces: found,
            unseen,
            unread,
        };
        network.add_lower_devices(files);
        network
    }

    /// Whether `name` is protected, by the node's network or by one of `globs`; the reason if so.
    pub fn protects(&self, name: &str, globs: &[String]) -> Option<Reason> {
        if let Some(reason) = self.interfaces.get(name) {
            return Some(reason.clone());
        }
        if !self.unread.is_empty() {
            return Some(Reason::Unread(self.unread.clone()));
        }
        if let Some(names) = &self.unseen {
            return Some(Reason::Unseen(names.clone()));
        }
        globs
            .iter()
            .find(|g| glob_match(g, name))
            .map(|g| Reason::Excluded(g.clone()))
    }

    /// Adds every bridge port, bond slave and lower device (`lower_*` links) below the protected
    /// interfaces, transitively.
    fn add_lower_devices(&mut self, files: &dyn NetworkFiles) {
        let mut todo: Vec<String> = self.interfaces.keys().cloned().collect();
        let mut seen: BTreeSet<String> = todo.iter().cloned().collect();
        while let Some(upper) = todo.pop() {
            for lower in lower_devices(files, &upper, &mut self.unread) {
                if seen.insert(lower.clone()) {
                    self.interfaces
                        .entry(lower.clone())
                        .or_insert_with(|| Reason::Below(upper.clone()));
                    todo.push(lower);
                }
            }
        }
    }
}

/// Each address of this process's network namespace with the name of the interface holding it,
/// as the kernel lists them (netlink): what [`NetworkFiles::addresses`] answers on a live node.
pub fn kernel_addresses() -> Result<Vec<(String, IpAddr)>, crate::error::NetError> {
    let mut rtnl = crate::netlink::Rtnl::open()?;
    let names: BTreeMap<i32, String> = rtnl
        .links()?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let addresses = rtnl.all_addresses()?;
    Ok(addresses
        .into_iter()
        .filter_map(|(index, cidr)| Some((names.get(&index)?.clone(), cidr.addr)))
        .collect())
}

/// A kernel interface name: 1 to 15 bytes, no `/`, no whitespace, not `.` or `..`.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// One line of `/proc/net/route`: name, destination, flags, mask (addresses in the kernel's byte
/// order, printed as a native integer: little-endian on every architecture this runs on).
fn route_v4(line: &str) -> Option<(&str, Ipv4Addr, u32, Ipv4Addr)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let name = *fields.first()?;
    let hex = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
    let addr = |v: u32| Ipv4Addr::from(v.to_le_bytes());
    Some((name, addr(hex(1)?), hex(3)?, addr(hex(7)?)))
}

/// Interfaces with an IPv4 default route that is up.
pub fn default_v4(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(route_v4)
        .filter(|(name, dest, flags, mask)| {
            dest.is_unspecified() && mask.is_unspecified() && flags & RTF_UP != 0 && *name != "lo"
        })
        .filter(|(name, ..)| is_interface_name(name))
        .map(|(name, ..)| name.to_owned())
        .collect()
}

/// The interfaces whose connected (gatewayless) IPv4 route holds `ip`, the longest prefix winning:
/// every one of them when several have it (two ports on one subnet: which holds the address the
/// routes do not say).
pub fn connected_v4(text: &str, ip: Ipv4Addr) -> Vec<String> {
    let connected: Vec<(&str, u32)> = text
        .lines()
        .skip(1)
        .filter_map(route_v4)
        .filter(|(name, dest, flags, mask)| {
            flags & RTF_UP != 0
                && flags & RTF_GATEWAY == 0
                && !mask.is_unspecified()
                && is_interface_name(name)
                && u32::from(ip) & u32::from(*mask) == u32::from(*dest)
        })
        .map(|(name, _, _, mask)| (name, u32::from(mask).count_ones()))
        .collect();
    let longest = connected.iter().map(|(_, len)| *len).max();
    let mut names: Vec<String> = connected
        .iter()
        .filter(|(_, len)| Some(*len) == longest)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    names.dedup();
    names
}

fn ipv6_hex(text: &str) -> Option<Ipv6Addr> {
    if text.len() != 32 {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(Ipv6Addr::from)
}

/// Interfaces with an IPv6 default route (`::/0`, up, not the `lo` reject route).
pub fn default_v6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = ipv6_hex(fields.first()?)?;
            let len = u8::from_str_radix(fields.get(1)?, 16).ok()?;
            let flags = u32::from_str_radix(fields.get(8)?, 16).ok()?;
            let name = *fields.get(9)?;
            let default = dest.is_unspecified() && len == 0 && flags & RTF_UP != 0;
            (default && name != "lo" && is_interface_name(name)).then(|| name.to_owned())
        })
        .collect()
}

/// The interface holding the IPv6 address `ip` (`/proc/net/if_inet6`).
pub fn holder_v6(text: &str, ip: Ipv6Addr) -> Option<String> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let addr = ipv6_hex(fields.first()?)?;
        let name = *fields.get(5)?;
        (addr == ip && is_interface_name(name)).then(|| name.to_owned())
    })
}

/// The lower devices of `upper`: `lower_<name>` links, bridge ports (`brif/`), bond slaves
/// (`bonding/slaves`).
fn lower_devices(files: &dyn NetworkFiles, upper: &str, unread: &mut Vec<String>) -> Vec<String> {
    if !is_interface_name(upper) {
        return Vec::new();
    }
    let dir = Path::new("sys/class/net").join(upper);
    let mut list = |dir: &Path| {
        files.list(dir).unwrap_or_else(|why| {
            unread.push(format!("{}: {why}", dir.display()));
            Vec::new()
        })
    };
    let mut found: Vec<String> = list(&dir)
        .iter()
        .filter_map(|name| name.strip_prefix("lower_"))
        .map(str::to_owned)
        .collect();
    found.extend(list(&dir.join("brif")));
    let slaves = dir.join("bonding/slaves");
    match files.read(&slaves) {
        Ok(Some(slaves)) => found.extend(slaves.split_whitespace().map(str::to_owned)),
        Ok(None) => {}
        Err(why) => unread.push(format!("{}: {why}", slaves.display())),
    }
    found.retain(|n| is_interface_name(n));
    found
}

/// A shell-style glob: `*` any run of characters, `?` one character, everything else literal.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point (the last `*`).
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(c) if *c == '?' || Some(c) == name.get(n) => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    g = sg + 1;
                    n = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob.get(g..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}
