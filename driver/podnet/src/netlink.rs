//! A small rtnetlink client (links, addresses, routes) on a `NETLINK_ROUTE` socket, with the messages
//! encoded here: no `ip` shell-outs and no netlink crate. A socket opened in a network namespace
//! ([`Rtnl::open_in`]) keeps working in it from any thread.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

use crate::config::Cidr;
use crate::error::{NetError, NetErrorKind};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_PERM_ADDRESS: u16 = 54;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: i32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Hardware address, `aa:bb:...` (empty when it has none).
    pub mac: String,
    /// Permanent hardware address (`IFLA_PERM_ADDRESS`, Linux 5.5+), which its driver sets and
    /// nobody can change; empty when it has none (a veth, a dummy).
    pub perm_mac: String,
}

/// What to change on a link; `None` leaves it.
#[derive(Debug, Default)]
pub struct LinkChange<'a> {
    /// New name (in the target namespace when `netns` is given).
    pub name: Option<&'a str>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// Up or down.
    pub up: Option<bool>,
    /// New hardware address.
    pub mac: Option<&'a [u8]>,
    /// Move into the network namespace of this file (`/proc/<pid>/ns/net`, `/var/run/netns/<name>`).
    pub netns: Option<&'a OwnedFd>,
}

/// A netlink socket: rtnetlink, or another protocol opened with `open_protocol` (RDMA).
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

/// A route attribute.
pub(crate) fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// The attributes of one message body after a fixed header of `skip` bytes: (type, payload).
pub(crate) fn attributes(body: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    let mut rest = body.get(skip..).unwrap_or_default();
    while rest.len() >= 4 {
        let len = usize::from(u16_at(rest, 0).unwrap_or(0));
        let kind = u16_at(rest, 2).unwrap_or(0) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        found.push((kind, rest.get(4..len).unwrap_or_default()));
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    found
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Reads the messages of one datagram answering the request `seq` into `replies` (others are
/// skipped); `Ok(true)` at its end: an ack, or a dump's `NLMSG_DONE`, both carrying an errno (0 or
/// negative: an error). Sets `interrupted` when the kernel marks a message `NLM_F_DUMP_INTR`.
fn take_answers(
    mut rest: &[u8],
    seq: u32,
    what: &str,
    replies: &mut Vec<Vec<u8>>,
    interrupted: &mut bool,
) -> Result<bool, NetError> {
    while rest.len() >= 16 {
        let len = u32_at(rest, 0).unwrap_or(0) as usize;
        if len < 16 || len > rest.len() {
            let message = format!("{what}: truncated reply");
            return Err(NetError::new(NetErrorKind::Netlink, &message));
        }
        let kind = u16_at(rest, 4).unwrap_or(0);
        let flags = u16_at(rest, 6).unwrap_or(0);
        let reply_seq = u32_at(rest, 8).unwrap_or(0);
        let payload = rest.get(16..len).unwrap_or_default();
        rest = rest
            .get(len.next_multiple_of(4).min(rest.len())..)
            .unwrap_or_default();
        if reply_seq != seq {
            continue;
        }
        *interrupted |= flags & NLM_F_DUMP_INTR != 0;
        match kind {
            NLMSG_ERROR | NLMSG_DONE => {
                let errno = u32_at(payload, 0).map_or(0, |e| (e as i32).unsigned_abs());
                if errno == 0 {
                    return Ok(true);
                }
                return Err(NetError::errno(what, errno as i32));
            }
            _ => replies.push(payload.to_vec()),
        }
    }
    Ok(false)
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl Rtnl {
    /// A socket in this thread's network namespace.
    pub fn open() -> Result<Rtnl, NetError> {
        Rtnl::open_protocol(None)
    }

    /// A netlink socket of `protocol` (none: `NETLINK_ROUTE`) in this thread's network namespace.
    /// Closed on exec: a CNI plugin started meanwhile must not inherit it (one opened in a pod's
    /// namespace would keep that namespace alive as long as the plugin's children live).
    pub(crate) fn open_protocol(protocol: Option<rustix::net::Protocol>) -> Result<Rtnl, NetError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            rustix::net::SocketFlags::CLOEXEC,
            protocol,
        )
        .map_err(|e| NetError::io(NetErrorKind::Netlink, "opening a netlink socket", e))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))
            .map_err(|e| NetError::io(NetErrorKind::Netlink, "binding a netlink socket", e))?;
        Ok(Rtnl { fd, seq: 1 })
    }

    /// A socket in the network namespace of `netns` (a namespace file), opened from a short-lived
    /// thread that joins it, so no thread of the process stays in it.
    pub fn open_in(netns: &Path) -> Result<Rtnl, NetError> {
        Rtnl::open_protocol_in(netns, None)
    }

    /// [`Rtnl::open_in`] for a netlink socket of `protocol`.
    pub(crate) fn open_protocol_in(
        netns: &Path,
        protocol: Option<rustix::net::Protocol>,
    ) -> Result<Rtnl, NetError> {
        let ns = open_netns(netns)?;
        std::thread::scope(|scope| {
            // Builder: a thread that cannot start (EAGAIN) is an error here, not a panic.
            std::thread::Builder::new()
                .name("netns-join".into())
                .spawn_scoped(scope, || {
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| {
                        NetError::io(
                            NetErrorKind::Namespace,
                            &format!("joining {}", netns.display()),
                            e,
                        )
                    })?;
                    Rtnl::open_protocol(protocol)
                })
                .map_err(|e| {
                    NetError::new(NetErrorKind::Namespace, &format!("starting a thread: {e}"))
                })?
                .join()
                .unwrap_or_else(|_| Err(NetError::new(NetErrorKind::Namespace, "thread panicked")))
        })
    }

    /// Sends one request with `NLM_F_ACK` and reads the answer; `what` names it in errors. A dump
    /// the kernel marks interrupted (`NLM_F_DUMP_INTR`: the list changed while it was read, so an
    /// entry may be missing) is asked again, up to three times, then an error: a caller must not
    /// take a partial list for the whole.
    pub(crate) fn request(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        what: &str,
    ) -> Result<Vec<Vec<u8>>, NetError> {
        for _ in 0..3 {
            if let (replies, false) = self.request_once(kind, flags, body, what)? {
                return Ok(replies);
            }
        }
        let what = format!("{what} (the list changed while it was read, three times)");
        Err(NetError::errno(
            &what,
            rustix::io::Errno::INTR.raw_os_error(),
        ))
    }

    /// [`Rtnl::request`] once: the replies, and whether the kernel marked the dump interrupted.
    fn request_once(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        what: &str,
    ) -> Result<(Vec<Vec<u8>>, bool), NetError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        rustix::net::sendto(
            &self.fd,
            &msg,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| NetError::io(NetErrorKind::Netlink, what, e))?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())
                .map_err(|e| NetError::io(NetErrorKind::Netlink, what, e))?;
            let datagram = buf.get(..n).unwrap_or_default();
            if take_answers(datagram, seq, what, &mut replies, &mut interrupted)? {
                return Ok((replies, interrupted));
            }
        }
    }

    fn parse_link(body: &[u8]) -> Option<Link> {
        let index = u32_at(body, 4)? as i32;
        let flags = u32_at(body, 8)?;
        let mut link = Link {
            index,
            name: String::new(),
            mtu: 0,
            up: flags & IFF_UP != 0,
            mac: String::new(),
            perm_mac: String::new(),
        };
        let text = |bytes: &[u8]| {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            hex.join(":")
        };
        for (kind, payload) in attributes(body, 16) {
            match kind {
                IFLA_IFNAME => {
                    link.name = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned();
                }
                IFLA_MTU => link.mtu = u32_at(payload, 0).unwrap_or(0),
                IFLA_ADDRESS => link.mac = text(payload),
                // The kernel sends it only when it is not all zeros.
                IFLA_PERM_ADDRESS if payload.iter().any(|b| *b != 0) => {
                    link.perm_mac = text(payload);
                }
                _ => {}
            }
        }
        Some(link)
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetError> {
        let body = [0u8; 16];
        let replies = self.request(RTM_GETLINK, NLM_F_DUMP, &body, "listing links")?;
        Ok(replies.iter().filter_map(|r| Rtnl::parse_link(r)).collect())
    }

    /// The link called `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Applies `change` to link `index`.
    pub fn set_link(&mut self, index: i32, change: &LinkChange<'_>) -> Result<(), NetError> {
        // ifinfomsg: family, pad, type, index, flags, change mask.
        let (flags, mask) = match change.up {
            Some(true) => (IFF_UP, IFF_UP),
            Some(false) => (0, IFF_UP),
            None => (0, 0),
        };
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&mask.to_ne_bytes());
        if let Some(name) = change.name {
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            attr(&mut body, IFLA_IFNAME, &bytes);
        }
        if let Some(mtu) = change.mtu {
            attr(&mut body, IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(mac) = change.mac {
            attr(&mut body, IFLA_ADDRESS, mac);
        }
        if let Some(ns) = change.netns {
            attr(
                &mut body,
                IFLA_NET_NS_FD,
                &(ns.as_raw_fd() as u32).to_ne_bytes(),
            );
        }
        self.request(RTM_NEWLINK, 0, &body, &format!("changing link {index}"))
            .map(drop)
    }

    /// Adds `cidr` to link `index` (IPv6 without duplicate address detection).
    pub fn add_address(&mut self, index: i32, cidr: &Cidr) -> Result<(), NetError> {
        let flags = match cidr.addr {
            IpAddr::V6(_) => IFA_F_NODAD,
            IpAddr::V4(_) => 0,
        };
        let mut body = vec![family(cidr.addr), cidr.prefix, flags, 0];
        body.extend_from_slice(&(index as u32).to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &ip_bytes(cidr.addr));
        attr(&mut body, IFA_ADDRESS, &ip_bytes(cidr.addr));
        self.request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &body,
            &format!("adding address {cidr}"),
        )
        .map(drop)
    }

    /// The addresses of link `index`.
    pub fn addresses(&mut self, index: i32) -> Result<Vec<Cidr>, NetError> {
        let all = self.all_addresses()?;
        Ok(all
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, c)| c)
            .collect())
    }

    /// Every address of the namespace, with its link's index.
    pub fn all_addresses(&mut self) -> Result<Vec<(i32, Cidr)>, NetError> {
        let replies = self.request(RTM_GETADDR, NLM_F_DUMP, &[0u8; 8], "listing addresses")?;
        let mut found = Vec::new();
        for reply in replies {
            let (Some(&fam), Some(&prefix), Some(index)) =
                (reply.first(), reply.get(1), u32_at(&reply, 4))
            else {
                continue;
            };
            let want = if fam == AF_INET {
                IFA_LOCAL
            } else {
                IFA_ADDRESS
            };
            for (kind, payload) in attributes(&reply, 8) {
                let addr = match (kind == want, payload.len()) {
                    (true, 4) => <[u8; 4]>::try_from(payload).ok().map(IpAddr::from),
                    (true, 16) => <[u8; 16]>::try_from(payload).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(addr) = addr {
                    found.push((index as i32, Cidr { addr, prefix }));
                }
            }
        }
        Ok(found)
    }

    /// Adds a route to `destination` through link `index`, via `gateway` when given (else on-link).
    pub fn add_route(
        &mut self,
        index: i32,
        destination: &Cidr,
        gateway: Option<IpAddr>,
    ) -> Result<(), NetError> {
        const RT_TABLE_MAIN: u8 = 254;
        const RTPROT_STATIC: u8 = 4;
        const RT_SCOPE_UNIVERSE: u8 = 0;
        const RT_SCOPE_LINK: u8 = 253;
        const RTN_UNICAST: u8 = 1;
        let scope = if gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let mut body = vec![
            family(destination.addr),
            destination.prefix,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            scope,
            RTN_UNICAST,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        if destination.prefix > 0 {
            attr(&mut body, RTA_DST, &ip_bytes(destination.addr));
        }
        if let Some(gateway) = gateway {
            attr(&mut body, RTA_GATEWAY, &ip_bytes(gateway));
        }
        attr(&mut body, RTA_OIF, &(index as u32).to_ne_bytes());
        self.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            &body,
            &format!("adding route {destination}"),
        )
        .map(drop)
    }
}

/// Opens a network namespace file.
pub fn open_netns(path: &Path) -> Result<OwnedFd, NetError> {
    std::fs::File::open(path).map(OwnedFd::from).map_err(|e| {
        NetError::new(
            NetErrorKind::Namespace,
            &format!("opening {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn netlink_sockets_are_closed_on_exec() {
        let rtnl = Rtnl::open().unwrap();
        let flags = rustix::io::fcntl_getfd(&rtnl.fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "{flags:?}");
    }

    /// One netlink message: header (`kind`, `flags`, `seq`) and payload.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_dump_marked_interrupted_or_ended_with_an_errno_is_not_taken_whole() {
        let link = [0u8; 16];
        let done = |errno: i32| message(NLMSG_DONE, 0x2, 5, &errno.to_ne_bytes());
        let take = |datagram: &[u8]| {
            let (mut replies, mut interrupted) = (Vec::new(), false);
            let done = take_answers(datagram, 5, "listing links", &mut replies, &mut interrupted);
            done.map(|done| (done, replies.len(), interrupted))
        };
        // A whole dump: two links (one of another request, skipped), then its end.
        let whole = [
            message(RTM_NEWLINK, 0x2, 5, &link),
            message(RTM_NEWLINK, 0x2, 4, &link),
            done(0),
        ]
        .concat();
        assert_eq!(take(&whole).unwrap(), (true, 1, false));
        // The list changed while it was read: marked, to be asked again.
        let changed = [
            message(RTM_NEWLINK, 0x2 | NLM_F_DUMP_INTR, 5, &link),
            done(0),
        ]
        .concat();
        assert_eq!(take(&changed).unwrap(), (true, 1, true));
        // The dump ended with an error (`NLMSG_DONE` carrying -EMSGSIZE): not a shorter list.
        let failed = [message(RTM_NEWLINK, 0x2, 5, &link), done(-90)].concat();
        assert_eq!(take(&failed).unwrap_err().errno, Some(90));
        // More to come.
        assert_eq!(
            take(&message(RTM_NEWLINK, 0x2, 5, &link)).unwrap(),
            (false, 1, false)
        );
    }

    /// An `RTM_NEWLINK` body: `ifinfomsg` (index 7, up), then its attributes.
    fn body(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        for (kind, payload) in attrs {
            attr(&mut body, *kind, payload);
        }
        body
    }

    #[test]
    fn a_link_is_read_with_its_permanent_address_when_it_has_one() {
        let mac = [2, 0, 0, 0, 0, 3];
        let perm = [0x0c, 0x42, 0xa1, 0, 0, 3];
        let link = Rtnl::parse_link(&body(&[
            (IFLA_IFNAME, b"ens1f0v3\0"),
            (IFLA_MTU, &9000u32.to_ne_bytes()),
            (IFLA_ADDRESS, &mac),
            (IFLA_PERM_ADDRESS, &perm),
        ]))
        .unwrap();
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu, link.up),
            (7, "ens1f0v3", 9000, true)
        );
        assert_eq!(link.mac, "02:00:00:00:00:03");
        assert_eq!(link.perm_mac, "0c:42:a1:00:00:03");
        let zeros = Rtnl::parse_link(&body(&[(IFLA_PERM_ADDRESS, &[0; 6])])).unwrap();
        assert_eq!(zeros.perm_mac, "");
        // Cut short: no panic.
        assert!(Rtnl::parse_link(&[0u8; 6]).is_none());
    }
}
