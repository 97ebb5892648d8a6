//! Hotplug: kernel uevents (add, remove, bind, unbind, change, move on `pci`, `infiniband*`, `drm`,
//! `net`) turned into "the inventory changed" calls, debounced so a burst (64 VFs created by one
//! `sriov_numvfs` write) is one rescan.
//!
//! The uevent socket is opened directly (`AF_NETLINK`, `NETLINK_KOBJECT_UEVENT`, the kernel's multicast
//! group 1) through rustix's safe wrappers instead of linking libudev: the driver needs only "something
//! changed", not udev's rules or database, and this keeps the build free of system packages and the
//! process free of a C library. Messages are parsed from the kernel's format
//! (`action@devpath\0KEY=value\0...`); udevd's re-broadcasts (group 2, `libudev` magic) are not read.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, netlink};

/// Subsystems whose events change what the driver publishes.
pub const SUBSYSTEMS: [&str; 6] = [
    "pci",
    "infiniband",
    "infiniband_verbs",
    "infiniband_mad",
    "drm",
    "net",
];
/// Actions that change it.
pub const ACTIONS: [&str; 6] = ["add", "remove", "bind", "unbind", "change", "move"];
/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;
/// A uevent is at most a page plus headers; larger reads are cut.
const MAX_MESSAGE: usize = 8192;
/// The receive buffer asked for: room for a burst of about a thousand uevents (creating 256 VFs sends
/// several per VF). The kernel's default (`net.core.rmem_default`, often 208 KiB) overflows on large
/// bursts; udevd asks for 128 MiB. With `CAP_NET_ADMIN` it is forced past `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `ACTION`.
    pub action: String,
    /// `DEVPATH` (`/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0`).
    pub devpath: String,
    /// `SUBSYSTEM`.
    pub subsystem: String,
    /// Every `KEY=value` of the message.
    pub vars: BTreeMap<String, String>,
}

impl Uevent {
    /// Whether it changes the inventory.
    pub fn is_relevant(&self) -> bool {
        SUBSYSTEMS.contains(&self.subsystem.as_str()) && ACTIONS.contains(&self.action.as_str())
    }
}

/// Parses a kernel uevent message; `None` for anything else (udevd's `libudev` messages, garbage).
pub fn parse_uevent(message: &[u8]) -> Option<Uevent> {
    let mut fields = message.split(|b| *b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (_, header_path) = header.split_once('@')?;
    let mut vars = BTreeMap::new();
    for field in fields {
        let Ok(text) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some((key, value)) = text.split_once('=') {
            vars.insert(key.to_owned(), value.to_owned());
        }
    }
    let action = vars.get("ACTION")?.clone();
    let subsystem = vars.get("SUBSYSTEM")?.clone();
    let devpath = vars
        .get("DEVPATH")
        .cloned()
        .unwrap_or_else(|| header_path.to_owned());
    Some(Uevent {
        action,
        devpath,
        subsystem,
        vars,
    })
}

/// Coalesces a burst of events: due once no relevant event came for `quiet`, or `max_wait` after the
/// first one of the burst, whichever is first.
#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max_wait: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// A debouncer.
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Debounce {
            quiet,
            max_wait,
            first: None,
            last: None,
        }
    }

    /// A relevant event at `now`.
    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Whether the burst is over at `now`; if so, the debouncer starts afresh.
    pub fn due(&mut self, now: Instant) -> bool {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return false;
        };
        let due =
            now.duration_since(last) >= self.quiet || now.duration_since(first) >= self.max_wait;
        if due {
            self.first = None;
            self.last = None;
        }
        due
    }

    /// How long to wait for the next event before checking [`Self::due`]: the quiet time while a burst
    /// is pending, else indefinitely (`None`).
    pub fn timeout(&self) -> Option<Duration> {
        self.first.map(|_| self.quiet)
    }
}

/// The kernel's uevent socket.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Opens and binds it. Needs no privilege on most kernels, but some sandboxes refuse netlink.
    pub fn open() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        // Best effort: a smaller buffer only means an overflow sooner, which `watch` survives.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, RECEIVE_BUFFER).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RECEIVE_BUFFER);
        }
        Ok(UeventSocket { fd })
    }

    /// The next uevent, waiting at most `timeout` (`None`: forever). `Ok(None)` on a timeout or a
    /// message that is not a kernel uevent (or not from the kernel). When the receive buffer overflowed, the kernel dropped
    /// uevents and this returns the error `ENOBUFS` once (see [`is_overflow`]); the socket goes on.
    pub fn next(&self, timeout: Option<Duration>) -> io::Result<Option<Uevent>> {
        rustix::net::sockopt::set_socket_timeout(
            &self.fd,
            rustix::net::sockopt::Timeout::Recv,
            timeout,
        )?;
        let mut buffer = vec![0u8; MAX_MESSAGE];
        match rustix::net::recvfrom(&self.fd, &mut buffer, RecvFlags::empty()) {
            // Only the kernel's (port 0): a process with CAP_NET_ADMIN may send to the group too.
            Ok((n, _, sender)) => match from_kernel(sender) {
                true => Ok(parse_uevent(buffer.get(..n).unwrap_or_default())),
                false => Ok(None),
            },
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a message came from the kernel: netlink port 0 (a process's messages carry its port).
pub fn from_kernel(sender: Option<rustix::net::SocketAddrAny>) -> bool {
    sender
        .and_then(|address| SocketAddrNetlink::try_from(address).ok())
        .is_some_and(|address| address.pid() == 0)
}

/// Whether a read error says the receive buffer overflowed (`ENOBUFS`): uevents were lost, so
/// anything may have changed, and the socket still works.
pub fn is_overflow(error: &io::Error) -> bool {
    error.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error())
}

/// Watches uevents on a thread and calls `changed` once per debounced burst of relevant events, until
/// `changed` returns false. An overflow of the socket's buffer (a burst larger than it, or a slow
/// rescan) counts as a relevant event: the lost uevents may have been. Returns the error that stopped
/// the watch (reading the socket).
pub fn watch(
    socket: UeventSocket,
    quiet: Duration,
    max_wait: Duration,
    changed: impl FnMut() -> bool,
) -> io::Error {
    watch_source(|timeout| socket.next(timeout), quiet, max_wait, changed)
}

/// [`watch`] over any source of uevents (the socket, or a script in tests).
fn watch_source(
    mut next: impl FnMut(Option<Duration>) -> io::Result<Option<Uevent>>,
    quiet: Duration,
    max_wait: Duration,
    mut changed: impl FnMut() -> bool,
) -> io::Error {
    let mut debounce = Debounce::new(quiet, max_wait);
    loop {
        match next(debounce.timeout()) {
            Ok(Some(event)) if event.is_relevant() => debounce.event(Instant::now()),
            Ok(_) => {}
            Err(e) if is_overflow(&e) => debounce.event(Instant::now()),
            Err(e) => return e,
        }
        if debounce.due(Instant::now()) && !changed() {
            return io::Error::other("watch stopped");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
