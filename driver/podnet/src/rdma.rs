//! RDMA devices and network namespaces, as `rdma system` and `rdma dev set <dev> netns <ns>` do it: the
//! RDMA netlink (`NETLINK_RDMA`, the nldev client) messages encoded and decoded here. In the kernel's
//! *exclusive* netns mode an RDMA device belongs to one network namespace, and direct mode moves a
//! function's RDMA device into the pod's with its netdev (dranet does this for RoCE and InfiniBand);
//! in *shared* mode every namespace sees every RDMA device, and it is left where it is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::error::{NetError, NetErrorKind};
use crate::netlink::{NLM_F_DUMP, Rtnl, attr, attributes, open_netns, u32_at};

/// `RDMA_NL_NLDEV`: the nldev client of RDMA netlink.
const RDMA_NL_NLDEV: u16 = 5;
/// `RDMA_NLDEV_CMD_GET`.
const CMD_GET: u16 = 1;
/// `RDMA_NLDEV_CMD_SET`.
const CMD_SET: u16 = 2;
/// `RDMA_NLDEV_CMD_SYS_GET`.
const CMD_SYS_GET: u16 = 6;
/// `RDMA_NLDEV_ATTR_DEV_INDEX` (u32).
const ATTR_DEV_INDEX: u16 = 1;
/// `RDMA_NLDEV_ATTR_DEV_NAME` (string).
const ATTR_DEV_NAME: u16 = 2;
/// `RDMA_NLDEV_SYS_ATTR_NETNS_MODE` (u8: 1 shared, 0 exclusive).
const SYS_ATTR_NETNS_MODE: u16 = 66;
/// `RDMA_NLDEV_NET_NS_FD` (u32).
const NET_NS_FD: u16 = 68;

/// `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`: the netlink message type of nldev command `op`.
pub const fn message_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

/// The kernel's RDMA network namespace mode (`rdma system show netns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsMode {
    /// Every namespace sees every RDMA device (the default).
    Shared,
    /// An RDMA device belongs to one namespace.
    Exclusive,
}

/// The netns mode in a `RDMA_NLDEV_CMD_SYS_GET` reply (its attributes follow the netlink header
/// directly); `None` when the reply has none.
pub fn parse_netns_mode(reply: &[u8]) -> Option<NetnsMode> {
    attributes(reply, 0)
        .into_iter()
        .find(|(kind, _)| *kind == SYS_ATTR_NETNS_MODE)
        .and_then(|(_, payload)| payload.first().copied())
        .map(|mode| match mode {
            0 => NetnsMode::Exclusive,
            _ => NetnsMode::Shared,
        })
}

/// The index and name of the device in one `RDMA_NLDEV_CMD_GET` reply.
pub fn parse_device(reply: &[u8]) -> Option<(u32, String)> {
    let mut index = None;
    let mut name = None;
    for (kind, payload) in attributes(reply, 0) {
        match kind {
            ATTR_DEV_INDEX => index = u32_at(payload, 0),
            ATTR_DEV_NAME => {
                name = Some(
                    String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned(),
                )
            }
            _ => {}
        }
    }
    Some((index?, name?))
}

/// The body of `RDMA_NLDEV_CMD_SET` moving device `index` into the namespace of the file `netns_fd`.
pub fn set_netns_body(index: u32, netns_fd: u32) -> Vec<u8> {
    let mut body = Vec::new();
    attr(&mut body, ATTR_DEV_INDEX, &index.to_ne_bytes());
    attr(&mut body, NET_NS_FD, &netns_fd.to_ne_bytes());
    body
}

/// An RDMA netlink socket.
pub struct RdmaNl(Rtnl);

/// What happened to a function's RDMA device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaMove {
    /// Moved (exclusive mode).
    Moved,
    /// Left where it is: the kernel shares RDMA devices among namespaces.
    LeftShared,
    /// Not found where it should be (gone with its namespace, or never there).
    NotFound,
}

impl RdmaNl {
    /// A socket in the namespace of `netns`; `None` when the kernel has no RDMA netlink (no RDMA
    /// core loaded: then there is no RDMA device either).
    pub fn open_in(netns: &Path) -> Result<Option<RdmaNl>, NetError> {
        match Rtnl::open_protocol_in(netns, Some(rustix::net::netlink::RDMA)) {
            Ok(socket) => Ok(Some(RdmaNl(socket))),
            Err(e) if e.errno == Some(rustix::io::Errno::PROTONOSUPPORT.raw_os_error()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The kernel's netns mode (`rdma system`).
    pub fn netns_mode(&mut self) -> Result<NetnsMode, NetError> {
        let what = "reading the RDMA netns mode";
        let replies = self.0.request(message_type(CMD_SYS_GET), 0, &[], what)?;
        replies
            .iter()
            .find_map(|r| parse_netns_mode(r))
            .ok_or_else(|| NetError::new(NetErrorKind::Netlink, &format!("{what}: no answer")))
    }

    /// The index of the RDMA device `name` in this namespace, if it is there.
    pub fn device_index(&mut self, name: &str) -> Result<Option<u32>, NetError> {
        let replies = self.0.request(
            message_type(CMD_GET),
            NLM_F_DUMP,
            &[],
            "listing RDMA devices",
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| parse_device(r))
            .find(|(_, n)| n == name)
            .map(|(index, _)| index))
    }

    /// Moves device `index` into the namespace `target`.
    pub fn move_device(&mut self, index: u32, target: &OwnedFd) -> Result<(), NetError> {
        let body = set_netns_body(index, target.as_raw_fd() as u32);
        self.0
            .request(
                message_type(CMD_SET),
                0,
                &body,
                &format!("moving RDMA device {index}"),
            )
            .map(drop)
    }
}

/// Moves the RDMA device `name` from the namespace `from` into `to` when the kernel's RDMA netns mode
/// is exclusive; in shared mode it is left (and said so in the log).
pub fn move_rdma(from: &Path, to: &Path, name: &str) -> Result<RdmaMove, NetError> {
    let Some(mut socket) = RdmaNl::open_in(from)? else {
        return Ok(RdmaMove::NotFound);
    };
    if socket.netns_mode()? == NetnsMode::Shared {
        tracing::info!(
            rdma = name,
            "RDMA netns mode is shared: the RDMA device is left in the host namespace, where every pod sees it"
        );
        return Ok(RdmaMove::LeftShared);
    }
    let Some(index) = socket.device_index(name)? else {
        return Ok(RdmaMove::NotFound);
    };
    let target = open_netns(to)?;
    socket.move_device(index, &target)?;
    Ok(RdmaMove::Moved)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: joins a network namespace"]
    fn the_kernels_rdma_netlink_is_asked_or_found_missing_needs_root() {
        let here = Path::new("/proc/self/ns/net");
        let socket = RdmaNl::open_in(here).unwrap();
        if Path::new("/sys/module/ib_core").exists() {
            // An RDMA core: the mode is read (`rdma system show netns`).
            let mode = socket.unwrap().netns_mode().unwrap();
            println!("RDMA netns mode: {mode:?}");
        } else {
            // None (this project's CI machine): no RDMA netlink, so no device to move.
            assert!(socket.is_none());
            assert_eq!(move_rdma(here, here, "mlx5_9").unwrap(), RdmaMove::NotFound);
        }
    }

    /// A netlink attribute as the kernel lays it out (length, type, payload padded to 4 bytes).
    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn message_types_are_rdma_nl_get_type_of_nldev() {
        // RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op) from <rdma/rdma_netlink.h>: (5 << 10) + op.
        assert_eq!(message_type(CMD_SYS_GET), 5126);
        assert_eq!(message_type(CMD_GET), 5121);
        assert_eq!(message_type(CMD_SET), 5122);
    }

    #[test]
    fn the_netns_mode_is_read_from_a_sys_get_reply() {
        // What the kernel answers: NETNS_MODE (u8), then COPY_ON_FORK (67, u8).
        let mut exclusive = nla(SYS_ATTR_NETNS_MODE, &[0]);
        exclusive.extend(nla(67, &[1]));
        assert_eq!(parse_netns_mode(&exclusive), Some(NetnsMode::Exclusive));
        let mut shared = nla(67, &[1]);
        shared.extend(nla(SYS_ATTR_NETNS_MODE, &[1]));
        assert_eq!(parse_netns_mode(&shared), Some(NetnsMode::Shared));
        assert_eq!(parse_netns_mode(&nla(67, &[1])), None);
        // A truncated attribute is no answer, never a panic.
        assert_eq!(parse_netns_mode(&exclusive[..3]), None);
        assert_eq!(parse_netns_mode(&nla(SYS_ATTR_NETNS_MODE, &[])), None);
    }

    #[test]
    fn a_device_is_read_from_a_get_reply() {
        let mut reply = nla(ATTR_DEV_INDEX, &3u32.to_ne_bytes());
        reply.extend(nla(ATTR_DEV_NAME, b"mlx5_1\0"));
        reply.extend(nla(3, &1u32.to_ne_bytes()));
        assert_eq!(parse_device(&reply), Some((3, "mlx5_1".to_owned())));
        assert_eq!(parse_device(&nla(ATTR_DEV_NAME, b"mlx5_1\0")), None);
    }

    #[test]
    fn a_set_moves_a_device_index_into_a_namespace_fd() {
        let body = set_netns_body(3, 17);
        let mut expected = nla(ATTR_DEV_INDEX, &3u32.to_ne_bytes());
        expected.extend(nla(NET_NS_FD, &17u32.to_ne_bytes()));
        assert_eq!(body, expected);
        // Byte for byte, as `rdma dev set mlx5_1 netns <ns>` sends it (little-endian).
        if cfg!(target_endian = "little") {
            assert_eq!(body, [8, 0, 1, 0, 3, 0, 0, 0, 8, 0, 68, 0, 17, 0, 0, 0]);
        }
    }
}
