//! The link state of network interfaces (`sys/class/net/<name>/{flags,operstate,carrier}`), read at
//! each rescan for the health of the network functions the driver publishes.
//!
//! Three small attributes per interface, each through the bounded readers of [`attr`](super::attr).
//! Each is read through [`Tree`], inside the root: the link `sys/class/net/<name>` and any other on
//! the way resolve as if the root were `/`, so a tree can never make the reader leave it.

use hal::{Error, ParseError, Result};
use rustix::io::Errno;

const EINVAL: Errno = Errno::INVAL;

use super::tree::Tree;
use crate::SysfsRoot;

/// `IFF_UP` in `flags`: the interface was brought up (administratively).
const IFF_UP: u32 = 0x1;

/// What the kernel says of one interface's link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetLink {
    /// The interface (`ens1f0`).
    pub name: String,
    /// Whether it is up administratively (`flags` & `IFF_UP`); `None` when `flags` is missing.
    pub admin_up: Option<bool>,
    /// `operstate` (`up`, `down`, `lowerlayerdown`, `dormant`, `unknown`, ...), lower case.
    pub operstate: Option<String>,
    /// `carrier`: whether the physical link is up. The kernel refuses to read it (EINVAL) on an
    /// interface that is down administratively: `None` then, as when the file is missing.
    pub carrier: Option<bool>,
}

impl NetLink {
    /// Whether the link is down while the interface is up administratively (or its `flags` could
    /// not be read): no carrier, or an operational state of `down`, `lowerlayerdown` or `notpresent`.
    /// An interface nobody brought up (an unused VF) says nothing about its cable and is not down in
    /// this sense.
    pub fn is_down(&self) -> bool {
        if self.admin_up == Some(false) {
            return false;
        }
        let state_down = matches!(
            self.operstate.as_deref(),
            Some("down" | "lowerlayerdown" | "notpresent")
        );
        state_down || self.carrier == Some(false)
    }

    /// `operstate down, carrier 0`: the values read, for people.
    pub fn describe(&self) -> String {
        let operstate = self.operstate.as_deref().unwrap_or("unreadable");
        let carrier = match self.carrier {
            Some(true) => "1",
            Some(false) => "0",
            None => "unreadable",
        };
        format!("operstate {operstate}, carrier {carrier}")
    }
}

/// Reads the link state of interface `name` under `root`. A missing interface or a tree without
/// these attributes (a capture that left them out) reads as unknown values, not as an error; an
/// unparsable value is an error naming its file.
pub fn read_link_state(root: &SysfsRoot, name: &str) -> Result<NetLink> {
    read_link_state_in(&Tree::open(root), name)
}

/// [`read_link_state`] in a tree already opened (one open of the root for many interfaces).
pub fn read_link_state_in(tree: &Tree, name: &str) -> Result<NetLink> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Parse {
            path: tree.join("sys/class/net"),
            source: ParseError::new("interface name", name, "not a file name"),
        });
    }
    let dir = tree.join(format!("sys/class/net/{name}"));
    let admin_up = tree
        .parse_scalar(&dir.join("flags"), parse_flags)?
        .map(|flags| flags & IFF_UP != 0);
    let operstate = tree
        .read_optional(&dir.join("operstate"))?
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase());
    // EINVAL on an interface that is down administratively: unknown, not an error. Any other
    // failure (EIO, EACCES) is one: "unknown" would read as a link that is not down.
    let carrier = tree
        .parse_scalar(&dir.join("carrier"), parse_carrier)
        .or_else(|e| match e {
            Error::Io { source, .. } if source.raw_os_error() == Some(EINVAL.raw_os_error()) => {
                Ok(None)
            }
            other => Err(other),
        })?;
    Ok(NetLink {
        name: name.to_owned(),
        admin_up,
        operstate,
        carrier,
    })
}

/// `0x1003` → 0x1003.
fn parse_flags(text: &str) -> std::result::Result<u32, ParseError> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(hex, 16)
        .map_err(|_| ParseError::new("interface flags", text, "expected a hex number"))
}

/// `1` or `0`.
fn parse_carrier(text: &str) -> std::result::Result<bool, ParseError> {
    match text {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(ParseError::new("carrier", text, "expected 0 or 1")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn interface(root: &Path, files: &[(&str, &str)]) {
        let dir = root.join("sys/devices/pci0000:00/0000:00:03.0/net/eth0");
        fs::create_dir_all(&dir).unwrap();
        for (name, value) in files {
            fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
        fs::create_dir_all(root.join("sys/class/net")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/0000:00:03.0/net/eth0",
            root.join("sys/class/net/eth0"),
        )
        .unwrap();
    }

    #[test]
    fn a_link_without_carrier_on_an_interface_that_is_up_is_down() {
        let dir = tempfile::tempdir().unwrap();
        interface(
            dir.path(),
            &[("flags", "0x1003"), ("operstate", "down"), ("carrier", "0")],
        );
        let link = read_link_state(&SysfsRoot::new(dir.path()), "eth0").unwrap();
        assert_eq!(link.admin_up, Some(true));
        assert_eq!(link.carrier, Some(false));
        assert!(link.is_down());
        assert_eq!(link.describe(), "operstate down, carrier 0");
    }

    #[test]
    fn a_link_that_is_up_or_an_interface_nobody_brought_up_is_not_down() {
        let dir = tempfile::tempdir().unwrap();
        interface(
            dir.path(),
            &[("flags", "0x1003"), ("operstate", "up"), ("carrier", "1")],
        );
        let root = SysfsRoot::new(dir.path());
        assert!(!read_link_state(&root, "eth0").unwrap().is_down());
        // Down administratively: `carrier` cannot be read (EINVAL, here an empty file), and the
        // link state says nothing about the cable.
        let eth0 = dir.path().join("sys/class/net/eth0");
        fs::write(eth0.join("flags"), "0x1002\n").unwrap();
        fs::write(eth0.join("operstate"), "down\n").unwrap();
        fs::write(eth0.join("carrier"), "").unwrap();
        let link = read_link_state(&root, "eth0").unwrap();
        assert_eq!((link.admin_up, link.carrier), (Some(false), None));
        assert!(!link.is_down());
        // A tree without these attributes: nothing known, nothing down.
        let link = read_link_state(&root, "eth9").unwrap();
        assert_eq!(
            (link.admin_up, &link.operstate, link.carrier),
            (None, &None, None)
        );
        assert!(!link.is_down());
    }

    #[test]
    fn bad_values_and_names_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        interface(dir.path(), &[("flags", "up"), ("operstate", "up")]);
        let root = SysfsRoot::new(dir.path());
        let error = read_link_state(&root, "eth0").unwrap_err();
        assert!(error.to_string().contains("flags"), "{error}");
        assert!(read_link_state(&root, "../eth0").is_err());
        assert!(read_link_state(&root, "..").is_err());
    }

    #[test]
    fn an_interface_linked_out_of_the_root_is_read_inside_it() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("eth0");
        fs::create_dir_all(&secret).unwrap();
        fs::write(secret.join("operstate"), "down\n").unwrap();
        fs::write(secret.join("carrier"), "0\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/class/net")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("sys/class/net/eth0")).unwrap();
        let link = read_link_state(&SysfsRoot::new(dir.path()), "eth0").unwrap();
        assert_eq!((&link.operstate, link.carrier), (&None, None), "{link:?}");
        assert!(!link.is_down());
    }

    /// Needs root: the kernel's own answers bind-mounted over `carrier` of a built tree. EINVAL
    /// (the loopback's `speed`, as `carrier` of an interface that is down) is "unknown"; EIO
    /// (`/proc/self/mem` at offset 0) is an error naming the file, not "unknown", which would read
    /// as a link that is not down.
    #[test]
    #[ignore = "needs root (bind mount)"]
    fn only_einval_on_carrier_reads_as_unknown_needs_root() {
        struct Unmount<'a>(&'a std::path::Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        interface(
            dir.path(),
            &[("flags", "0x1003"), ("operstate", "down"), ("carrier", "0")],
        );
        let root = SysfsRoot::new(dir.path());
        let carrier = dir.path().join("sys/class/net/eth0/carrier");
        for (kernel, unknown) in [("/sys/class/net/lo/speed", true), ("/proc/self/mem", false)] {
            rustix::mount::mount_bind(kernel, &carrier).expect("bind mount");
            let _unmount = Unmount(&carrier);
            match read_link_state(&root, "eth0") {
                Ok(link) => assert!(unknown && link.carrier.is_none(), "{kernel}: {link:?}"),
                Err(error) => {
                    assert!(!unknown, "{kernel}: {error}");
                    assert!(error.to_string().contains("carrier"), "{error}");
                }
            }
        }
    }
}
