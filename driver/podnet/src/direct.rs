//! Direct mode (dranet's way): the network function's netdev is moved into the pod's network
//! namespace, renamed, given its MTU, addresses and routes, and brought up; on sandbox stop it is moved
//! back under its original name with its original MTU and state. What is needed to move it back is
//! returned as [`Saved`], to be kept across plugin restarts.

use std::path::{Path, PathBuf};

use crate::config::{Checked, Cidr};
use crate::error::{NetError, NetErrorKind};
use crate::netlink::{LinkChange, Rtnl, open_netns};
use crate::rdma::{RdmaMove, move_rdma};

/// The host side of a moved netdev: enough to move it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    /// Its name on the host.
    pub host_name: String,
    /// Its MTU on the host.
    pub mtu: u32,
    /// Whether it was up on the host.
    pub up: bool,
    /// Its hardware address (to recognise it on the host if it comes back under another name).
    pub mac: String,
    /// Its name in the pod.
    pub pod_name: String,
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// The function's RDMA device, moved with it when the kernel's RDMA netns mode is exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma: Option<String>,
    /// Its interface index in the pod, once [`attach_surveyed`] moved and configured it (the kernel
    /// keeps its host index when that is free in the pod's namespace, and gives another when not).
    /// What tells it apart in the pod when the pod renamed it or set its MAC, and on the
    /// host when its namespace died: the kernel brings it back with that index when it is free.
    /// `None` before (a [`survey`], an attach that failed or did not finish: the pod has not run, so
    /// its MAC tells it apart, while an index guessed from the host's may be another netdev's of
    /// the pod) and in the state of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i32>,
    /// Its interface index on the host before the move. Where it equals `index` (the kernel kept
    /// it at the move), `index` alone may identify it on the host when it comes back from a dead
    /// namespace with the MAC the pod gave it; where not, `index` is a number of the pod's
    /// namespace, which a netdev of the host may hold. `None` in the state of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_index: Option<i32>,
    /// Its permanent hardware address, when it has one (a real NIC's function; a veth has none):
    /// what identifies it wherever it is, since a pod can change its name, MAC and index but not
    /// this. `None` in the state of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm_mac: Option<String>,
}

/// A netdev now in a pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// How to move it back.
    pub saved: Saved,
    /// Its addresses in the pod.
    pub ips: Vec<Cidr>,
    /// Its hardware address.
    pub mac: String,
}

/// `EEXIST`: a netdev of that name is already there.
const EEXIST: i32 = 17;

/// How long a detach waits for a physical function whose namespace cannot be opened to come back.
const RETURN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How a detach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Back on the host under its name (or, when another netdev took that name meanwhile, the name
    /// it came back with: logged), MTU and state.
    Home,
    /// Neither in the pod nor on the host: destroyed with the namespace (a veth, a VF whose driver was
    /// unbound).
    Gone,
}

/// Moves `host_name` from the namespace `home` into `netns` and configures it with `config`. On any
/// failure after the move, it is moved back before the error is returned.
pub fn attach(
    home: &Path,
    host_name: &str,
    netns: &Path,
    config: &Checked,
) -> Result<Attached, NetError> {
    let saved = survey(home, host_name, netns, config)?;
    attach_surveyed(home, &saved, config)
}

/// What moving `host_name` from `home` into `netns` under `config` will have to undo: its name, MTU,
/// state and hardware address now (to be kept before it moves).
pub fn survey(
    home: &Path,
    host_name: &str,
    netns: &Path,
    config: &Checked,
) -> Result<Saved, NetError> {
    let mut host = Rtnl::open_in(home)?;
    let link = host.link(host_name)?.ok_or_else(|| {
        NetError::new(
            NetErrorKind::NotFound,
            &format!("no interface {host_name} on the host"),
        )
    })?;
    Ok(Saved {
        host_name: host_name.to_owned(),
        mtu: link.mtu,
        up: link.up,
        mac: link.mac,
        pod_name: config.name.clone().unwrap_or_else(|| host_name.to_owned()),
        netns: netns.to_owned(),
        rdma: None,
        index: None,
        host_index: Some(link.index),
        perm_mac: Some(link.perm_mac).filter(|p| !p.is_empty()),
    })
}

/// [`attach`] of a netdev [`survey`]ed before: moved from `home` into `saved.netns` as
/// `saved.pod_name`, and configured; its RDMA device `saved.rdma` follows it when the kernel's RDMA
/// netns mode is exclusive ([`move_rdma`]).
pub fn attach_surveyed(home: &Path, saved: &Saved, config: &Checked) -> Result<Attached, NetError> {
    let mut host = Rtnl::open_in(home)?;
    let link = host
        .link(&saved.host_name)?
        .filter(|link| link.mac == saved.mac)
        .ok_or_else(|| {
            NetError::new(
                NetErrorKind::NotFound,
                &format!(
                    "no interface {} ({}) on the host",
                    saved.host_name, saved.mac
                ),
            )
        })?;
    let target = open_netns(&saved.netns)?;
    // The kernel moves it first (under its host name, when the pod has none of that name) and
    // renames it after (`do_setlink`): a pod name taken in the pod fails the rename with the netdev
    // already moved, so a failed call is undone too.
    let moved = host.set_link(
        link.index,
        &LinkChange {
            name: Some(&saved.pod_name),
            netns: Some(&target),
            ..Default::default()
        },
    );
    let configured = moved.and_then(|()| configure(&saved.netns, &saved.pod_name, config));
    let configured = configured.and_then(|done| {
        if let Some(rdma) = &saved.rdma {
            match move_rdma(home, &saved.netns, rdma)? {
                RdmaMove::NotFound => {
                    tracing::warn!(%rdma, "the function's RDMA device is not on the host: not moved")
                }
                RdmaMove::Moved | RdmaMove::LeftShared => {}
            }
        }
        Ok(done)
    });
    match configured {
        Ok((ips, mac, index)) => Ok(Attached {
            saved: Saved {
                index: Some(index),
                ..saved.clone()
            },
            ips,
            mac,
        }),
        Err(e) => {
            if let Err(back) = detach(home, saved) {
                tracing::error!(error = %back, interface = %saved.host_name, "moving back after a failed attach");
            }
            Err(e)
        }
    }
}

/// Configures `name` in `netns`; returns its addresses from `config`, its MAC and its index there.
fn configure(
    netns: &Path,
    name: &str,
    config: &Checked,
) -> Result<(Vec<Cidr>, String, i32), NetError> {
    let mut pod = Rtnl::open_in(netns)?;
    let link = pod.link(name)?.ok_or_else(|| {
        NetError::new(
            NetErrorKind::NotFound,
            &format!("{name} did not arrive in {}", netns.display()),
        )
    })?;
    if let Some(mtu) = config.mtu {
        pod.set_link(
            link.index,
            &LinkChange {
                mtu: Some(mtu),
                ..Default::default()
            },
        )?;
    }
    for cidr in &config.addresses {
        pod.add_address(link.index, cidr)?;
    }
    pod.set_link(
        link.index,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )?;
    for (destination, gateway) in &config.routes {
        pod.add_route(link.index, destination, *gateway)?;
    }
    let ips = pod.addresses(link.index)?;
    let ips = ips
        .into_iter()
        .filter(|c| config.addresses.contains(c))
        .collect();
    Ok((ips, link.mac, link.index))
}

/// The netdev of `saved` among the host's `links`: by its permanent address when it has one
/// ([`by_perm_mac`]); else under its host name with its MAC (another netdev
/// may have taken the name meanwhile: it is not ours to reconfigure); else, returned by the kernel
/// when its namespace died, under its pod name with its MAC, or under a name the kernel chose
/// (`dev<N>`, when its pod name was taken) as the one link with its MAC; else (the pod changed its
/// MAC) at its index under one of those two names, when the kernel kept its host index at the move
/// (an index of the pod's namespace alone may be a host netdev's).
fn find_home(links: Vec<crate::netlink::Link>, saved: &Saved) -> Option<crate::netlink::Link> {
    let links = match by_perm_mac(links, saved) {
        Ok(found) => return found,
        Err(links) => links,
    };
    // Its MAC, or its index (back under its host name, with the MAC the pod set).
    let ours = |l: &&crate::netlink::Link| {
        saved.mac.is_empty() || l.mac == saved.mac || Some(l.index) == saved.index
    };
    if let Some(link) = links
        .iter()
        .filter(ours)
        .find(|l| l.name == saved.host_name)
    {
        return Some(link.clone());
    }
    let same_mac: Vec<&crate::netlink::Link> = links
        .iter()
        .filter(|l| !saved.mac.is_empty() && l.mac == saved.mac)
        .collect();
    match same_mac.iter().find(|l| l.name == saved.pod_name) {
        Some(link) => Some((*link).clone()),
        None => match same_mac.as_slice() {
            [only] => Some((*only).clone()),
            [] if saved.index.is_some() && saved.index == saved.host_index => {
                links.into_iter().find(|l| {
                    Some(l.index) == saved.index
                        && (l.name == saved.pod_name || kernel_named(&l.name))
                })
            }
            _ => None,
        },
    }
}

/// The netdev of `saved` among `links` by its permanent address, when it has one: `Ok` with the one
/// link that has it, or `Ok(None)` when none has (it is not among them). `Err` gives the links back
/// to be told apart otherwise: without a recorded permanent address, or when several links have it
/// (upper devices that copy their lower's), only those.
fn by_perm_mac(
    links: Vec<crate::netlink::Link>,
    saved: &Saved,
) -> Result<Option<crate::netlink::Link>, Vec<crate::netlink::Link>> {
    let Some(perm) = &saved.perm_mac else {
        return Err(links);
    };
    let mut with_perm: Vec<_> = links.into_iter().filter(|l| l.perm_mac == *perm).collect();
    match with_perm.len() {
        0 => Ok(None),
        1 => Ok(with_perm.pop()),
        _ => Err(with_perm),
    }
}

/// The bytes of a MAC as the kernel prints it (`02:00:5e:10:00:01`, 6 bytes, or 20 for InfiniBand);
/// `None` when empty or malformed.
fn mac_bytes(text: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = text
        .split(':')
        .map(|b| match b.len() {
            2 => u8::from_str_radix(b, 16).ok(),
            _ => None,
        })
        .collect();
    bytes.filter(|b| b.len() >= 6)
}

/// Whether `name` is one the kernel gives a netdev it brings back from a dead namespace when the
/// netdev's own name is taken: `dev` and a number (`default_device_exit_net` in net/core/dev.c).
fn kernel_named(name: &str) -> bool {
    name.strip_prefix("dev")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The netdev of `saved` among its pod's `links`: by its permanent address when it has one
/// ([`by_perm_mac`]). Else first the one at its index that still has its pod name or its MAC (the
/// pod may have changed the other: its MAC with `ip link set address`, its name with a rename; two
/// checks, as the kernel gives a moved netdev another index when its own is taken). Else the one
/// with its MAC, preferring the one under its pod name: the pod may have renamed it and made another
/// netdev under its name, and moving that one would hand the pod's own netdev to the host, so a
/// link under the pod name with another MAC is not it (logged). Without a recorded MAC (the state of
/// earlier versions), by name.
fn find_in_pod(links: Vec<crate::netlink::Link>, saved: &Saved) -> Option<crate::netlink::Link> {
    let links = match by_perm_mac(links, saved) {
        Ok(found) => return found,
        Err(links) => links,
    };
    let same_mac = |l: &crate::netlink::Link| !saved.mac.is_empty() && l.mac == saved.mac;
    if let Some(link) = links
        .iter()
        .find(|l| Some(l.index) == saved.index && (l.name == saved.pod_name || same_mac(l)))
    {
        return Some(link.clone());
    }
    if saved.mac.is_empty() {
        return links.into_iter().find(|l| l.name == saved.pod_name);
    }
    let (ours, others): (Vec<_>, Vec<_>) = links.into_iter().partition(|l| l.mac == saved.mac);
    if let Some(named) = others.iter().find(|l| l.name == saved.pod_name) {
        tracing::warn!(pod_name = %saved.pod_name, mac = %named.mac, expected = %saved.mac,
            "the pod's interface of that name has another MAC: not moved to the host");
    }
    match ours.iter().position(|l| l.name == saved.pod_name) {
        Some(i) => ours.into_iter().nth(i),
        None if ours.len() == 1 => ours.into_iter().next(),
        None => None,
    }
}

/// Moves the netdev of `saved` back from its pod into `home`, under its host name, with its MTU and
/// state (and its RDMA device, when it was moved). When its namespace cannot be opened, or it is no
/// longer in it, it is looked for on the host (a physical function returns there when its namespace
/// is destroyed, but asynchronously: one with a permanent address is waited for a little). Not
/// found anywhere: [`Detached::Gone`] (a veth dies with its namespace, a VF whose driver was unbound
/// with it).
pub fn detach(home: &Path, saved: &Saved) -> Result<Detached, NetError> {
    // Its RDMA device first (exclusive mode); a namespace gone has given it back to the host.
    if let Some(rdma) = &saved.rdma {
        match move_rdma(&saved.netns, home, rdma) {
            Ok(_) => {}
            Err(e) if e.kind() == NetErrorKind::Namespace => {}
            Err(e) => return Err(e),
        }
    }
    // The namespace cannot be opened: destroyed (its physical functions come back to the host, a
    // veth dies with it), or its path removed while something still holds it.
    let mut unopened = None;
    let in_pod = match Rtnl::open_in(&saved.netns) {
        Ok(mut pod) => find_in_pod(pod.links()?, saved).map(|link| (pod, link)),
        Err(e) if e.kind() == NetErrorKind::Namespace => {
            unopened = Some(e);
            None
        }
        Err(e) => return Err(e),
    };
    let mut moved_home = false;
    // The move failed with the host name taken: the kernel moves first and renames after
    // (`do_setlink`), so it may be home under its pod name (found below), or still in the pod (the
    // error then stands).
    let mut name_taken = None;
    if let Some((mut pod, link)) = in_pod {
        let home_fd = open_netns(home)?;
        pod.set_link(
            link.index,
            &LinkChange {
                up: Some(false),
                ..Default::default()
            },
        )?;
        let moved = pod.set_link(
            link.index,
            &LinkChange {
                name: Some(&saved.host_name),
                netns: Some(&home_fd),
                ..Default::default()
            },
        );
        match moved {
            Ok(()) => moved_home = true,
            Err(e) if e.errno == Some(EEXIST) => name_taken = Some(e),
            Err(e) => return Err(e),
        }
    }
    let mut host = Rtnl::open_in(home)?;
    // Just moved home and renamed to its host name: it is that one, whatever its MAC and the index
    // the kernel gave it there.
    let mut links = host.links()?;
    // A physical function comes back when its namespace is destroyed, but the kernel does that
    // after the namespace's last user is gone (`cleanup_net`, a work queue): wait a little for it.
    if unopened.is_some() && saved.perm_mac.is_some() {
        let deadline = std::time::Instant::now() + RETURN_WAIT;
        while find_home(links.clone(), saved).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            links = host.links()?;
        }
    }
    let just_moved = links
        .iter()
        .find(|l| moved_home && l.name == saved.host_name);
    let found = match just_moved {
        Some(link) => Some(link.clone()),
        None => find_home(links, saved),
    };
    let Some(link) = found else {
        if let Some(error) = name_taken {
            return Err(error);
        }
        // Not back after the wait: destroyed (its VF removed, its driver unbound), or still in a
        // namespace something holds after its path was removed, which cannot be told apart here;
        // kept, it would fail every later try.
        if let (Some(error), Some(perm_mac)) = (unopened, &saved.perm_mac) {
            tracing::warn!(netdev = %saved.host_name, %perm_mac, %error,
                "not back on the host {} s after its namespace could not be opened: taken as gone \
                 (if a process still holds that namespace, it is there)", RETURN_WAIT.as_secs());
        }
        return Ok(Detached::Gone);
    };
    if link.up {
        host.set_link(
            link.index,
            &LinkChange {
                up: Some(false),
                ..Default::default()
            },
        )?;
    }
    // The MAC it had, when the pod set another, while it is down. Not fatal: a VF whose MAC its PF set
    // refuses it, and the netdev is home either way.
    if link.mac != saved.mac
        && let Some(mac) = mac_bytes(&saved.mac)
    {
        let restored = host.set_link(
            link.index,
            &LinkChange {
                mac: Some(&mac),
                ..Default::default()
            },
        );
        if let Err(error) = restored {
            tracing::warn!(%error, interface = %saved.host_name, mac = %saved.mac, "its MAC could not be restored");
        }
    }
    // Its host name back, unless another netdev took it meanwhile: then it stays under the name it
    // came back with (logged), as no retry would free the name.
    if link.name != saved.host_name {
        let renamed = host.set_link(
            link.index,
            &LinkChange {
                name: Some(&saved.host_name),
                ..Default::default()
            },
        );
        match renamed {
            Ok(()) => {}
            Err(e) if e.errno == Some(EEXIST) => tracing::warn!(
                interface = %link.name, host_name = %saved.host_name,
                "its host name is taken by another interface: left under the name it came back with"
            ),
            Err(e) => return Err(e),
        }
    }
    host.set_link(
        link.index,
        &LinkChange {
            mtu: Some(saved.mtu),
            ..Default::default()
        },
    )?;
    if saved.up {
        host.set_link(
            link.index,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )?;
    }
    Ok(Detached::Home)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::netlink::Link;

    fn link(index: i32, name: &str, mac: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: 1500,
            up: true,
            mac: mac.into(),
            perm_mac: String::new(),
        }
    }

    fn saved() -> Saved {
        Saved {
            host_name: "ens1f0v3".into(),
            mtu: 9000,
            up: true,
            mac: "02:00:00:00:00:03".into(),
            pod_name: "net1".into(),
            netns: PathBuf::from("/run/netns/gone"),
            rdma: None,
            index: Some(4),
            host_index: Some(4),
            perm_mac: None,
        }
    }

    #[test]
    fn the_netdev_in_the_pod_is_found_by_its_mac_not_by_its_name_alone() {
        let found = |links: Vec<Link>, saved: &Saved| find_in_pod(links, saved).map(|l| l.index);
        let ours = saved();
        // Under its pod name with its MAC.
        assert_eq!(
            found(
                vec![link(1, "lo", ""), link(4, "net1", "02:00:00:00:00:03")],
                &ours
            ),
            Some(4)
        );
        // The pod renamed it and made its own net1: the pod's net1 stays, ours is found.
        assert_eq!(
            found(
                vec![
                    link(5, "net1", "02:00:00:00:00:09"),
                    link(4, "renamed", "02:00:00:00:00:03")
                ],
                &ours
            ),
            Some(4)
        );
        // Only another netdev under its name: not ours, never moved to the host.
        assert_eq!(
            found(vec![link(5, "net1", "02:00:00:00:00:09")], &ours),
            None
        );
        // Two with its MAC, neither under its name: not guessed.
        assert_eq!(
            found(
                vec![
                    link(5, "a", "02:00:00:00:00:03"),
                    link(6, "b", "02:00:00:00:00:03")
                ],
                &ours
            ),
            None
        );
        // The pod set its MAC: its index and pod name tell it.
        assert_eq!(
            found(vec![link(4, "net1", "02:00:00:00:00:0b")], &ours),
            Some(4)
        );
        // At its index, but neither its name nor its MAC (it got another index at the move): not it.
        assert_eq!(
            found(vec![link(4, "eth0", "02:00:00:00:00:0c")], &ours),
            None
        );
        // A record without a MAC or index (earlier versions): by name.
        let unknown = Saved {
            mac: String::new(),
            index: None,
            ..saved()
        };
        assert_eq!(
            found(vec![link(5, "net1", "02:00:00:00:00:09")], &unknown),
            Some(5)
        );
    }

    #[test]
    fn macs_are_read_as_the_kernel_prints_them() {
        assert_eq!(
            mac_bytes("02:00:5e:10:0a:FF"),
            Some(vec![2, 0, 0x5e, 0x10, 0x0a, 0xff])
        );
        assert_eq!(mac_bytes(&["80"; 20].join(":")), Some(vec![0x80; 20]));
        for bad in [
            "",
            "02:00:5e:10:0a",
            "02:00:5e:10:0a:f",
            "02:00:5e:10:0a:fg",
            "2:00:5e:10:0a:ff:",
        ] {
            assert_eq!(mac_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_netdev_back_from_a_dead_namespace_is_found_by_name_then_by_mac() {
        let found = |links: Vec<Link>| find_home(links, &saved()).map(|l| l.index);
        // Home under its name.
        assert_eq!(
            found(vec![
                link(1, "eth0", "02:00:00:00:00:01"),
                link(7, "ens1f0v3", "02:00:00:00:00:03")
            ]),
            Some(7)
        );
        // Returned under its pod name, with its MAC; another net1 of another MAC is not it.
        assert_eq!(found(vec![link(8, "net1", "02:00:00:00:00:03")]), Some(8));
        assert_eq!(found(vec![link(8, "net1", "02:00:00:00:00:09")]), None);
        // Returned as dev<N> (its pod name was taken on the host): the one link with its MAC.
        assert_eq!(
            found(vec![
                link(2, "net1", "02:00:00:00:00:09"),
                link(9, "dev9", "02:00:00:00:00:03")
            ]),
            Some(9)
        );
        // Two links with its MAC and neither under its names: not guessed.
        assert_eq!(
            found(vec![
                link(9, "dev9", "02:00:00:00:00:03"),
                link(10, "vlan5", "02:00:00:00:00:03")
            ]),
            None
        );
        // Nowhere: gone.
        assert_eq!(found(vec![link(1, "eth0", "02:00:00:00:00:01")]), None);
        // The pod set its MAC: at its index, under its pod name or as dev<N>.
        assert_eq!(found(vec![link(4, "net1", "02:00:00:00:0b:0b")]), Some(4));
        assert_eq!(found(vec![link(4, "dev4", "02:00:00:00:0b:0b")]), Some(4));
        // At its index under another name, or under its pod name at another index: not it.
        assert_eq!(found(vec![link(4, "eth7", "02:00:00:00:0b:0b")]), None);
        assert_eq!(found(vec![link(4, "devices", "02:00:00:00:0b:0b")]), None);
        assert_eq!(found(vec![link(6, "net1", "02:00:00:00:0b:0b")]), None);
        // The kernel gave it another index in the pod (4, where it had 3): on the host, 4 may be
        // a netdev of the host's, so the index alone does not tell it.
        let renumbered = Saved {
            host_index: Some(3),
            ..saved()
        };
        let found = |links: Vec<Link>| find_home(links, &renumbered).map(|l| l.index);
        assert_eq!(found(vec![link(4, "net1", "02:00:00:00:0b:0b")]), None);
        assert_eq!(found(vec![link(4, "dev4", "02:00:00:00:0b:0b")]), None);
        assert_eq!(found(vec![link(4, "net1", "02:00:00:00:00:03")]), Some(4));
        // A record of an earlier version (no host index): not by the index alone either.
        let earlier = Saved {
            host_index: None,
            ..saved()
        };
        assert_eq!(
            find_home(vec![link(4, "net1", "02:00:00:00:0b:0b")], &earlier),
            None
        );
    }

    /// A function with a permanent address is found by it, in the pod and on the host, whatever
    /// name, MAC and index the pod gave it; a pod's netdev with the function's name, MAC and index
    /// but without its permanent address is not it.
    #[test]
    fn a_function_with_a_permanent_address_is_found_by_it() {
        let hardware = Saved {
            perm_mac: Some("0c:42:a1:00:00:03".into()),
            ..saved()
        };
        let with_perm = |index: i32, name: &str, mac: &str| Link {
            perm_mac: "0c:42:a1:00:00:03".into(),
            ..link(index, name, mac)
        };
        let fake = link(4, "net1", "02:00:00:00:00:03");
        let renamed = with_perm(9, "other", "02:00:00:00:0b:0b");
        for find in [find_in_pod, find_home] {
            let found = |links: Vec<Link>| find(links, &hardware).map(|l| l.index);
            assert_eq!(found(vec![fake.clone(), renamed.clone()]), Some(9));
            assert_eq!(found(vec![fake.clone()]), None);
            // Several with it (an upper device that copies it): told apart among those only.
            let upper = with_perm(12, "net1.7", "02:00:00:00:00:03");
            let own = with_perm(4, "net1", "02:00:00:00:00:03");
            assert_eq!(found(vec![fake.clone(), upper, own]), Some(4));
        }
    }
}
