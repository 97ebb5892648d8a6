//! Who holds a character device open: the processes under `<root>/proc` with a file descriptor on
//! it, as `fuser` finds them.
//!
//! Unbinding a PCI function from some drivers waits in the kernel, for good, while a process holds
//! the function's device node open: `nvidia`'s remove while the GPU's usage count is not zero
//! (`/dev/nvidia<minor>`: dcgm-exporter, nvidia-persistenced, a pod still using the GPU), and
//! `vfio-pci`'s until the VFIO group or device descriptor is closed (`/dev/vfio/<group>`,
//! `/dev/vfio/devices/vfioN`: a QEMU still running). [`holders`] tells who does, so that such an
//! unbind is refused instead.
//!
//! Descriptors are compared by device number (`st_rdev` of a character device), never by path or
//! inode: a container's `/dev` holds its own nodes with the host's numbers, and a descriptor's magic
//! link (`/proc/<pid>/fd/<n>`) is followed by the kernel straight to the open file, whatever mount
//! namespace its process is in. Each is looked at with `statx(AT_STATX_DONT_SYNC)`, which asks no
//! network or FUSE server (a stuck one would otherwise hang the look, as it hangs `fuser`).
//!
//! Only the processes this process's `/proc` shows are seen: in a container, those of its PID
//! namespace (all of the node's with `hostPID: true`); a process whose descriptors it may not read
//! (`EACCES`, without `CAP_SYS_PTRACE` over it) is skipped, as one that exits meanwhile is. A process
//! may open the node after the look: this is a check, not a lock.
//!
//! Bounded: at most [`MAX_PROCESSES`] processes and [`MAX_DESCRIPTORS`] descriptors are looked at,
//! beyond which the look fails (kind `Exhausted`: who holds the node is not known), and it stops at
//! [`MAX_HOLDERS`] holders.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use hal::{Error, ParseError, Result};

use super::SysfsRoot;
use super::tree::Tree;

/// Processes looked at, at most (the numbered entries of `proc/`). Nodes run a few thousand.
pub(crate) const MAX_PROCESSES: usize = 1 << 15;
/// Descriptors looked at, at most, over all processes (with `hostPID`, the whole node's: a few seconds
/// of `statx` calls at most).
pub(crate) const MAX_DESCRIPTORS: usize = 1 << 22;
/// Holders reported, at most: the look stops at this many.
pub(crate) const MAX_HOLDERS: usize = 8;
/// Bytes of a command name read (the kernel's are at most 15 and a newline).
const MAX_COMM_BYTES: u64 = 64;
/// Characters of a command name shown.
const MAX_COMM_CHARS: usize = 32;

/// A character device's number (`major:minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceNumber {
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

impl DeviceNumber {
    /// The number a sysfs `dev` attribute shows (`243:12`).
    pub(crate) fn parse(text: &str) -> Result<DeviceNumber, ParseError> {
        let bad = || ParseError::new("device number", text, "expected <major>:<minor>");
        let (major, minor) = text.trim().split_once(':').ok_or_else(bad)?;
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
        };
        Ok(DeviceNumber {
            major: number(major).ok_or_else(bad)?,
            minor: number(minor).ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A process holding a device open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) pid: u32,
    /// Its command name (`proc/<pid>/comm`), control characters escaped, cut to
    /// [`MAX_COMM_CHARS`]; `?` when it could not be read.
    pub(crate) comm: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// The processes under `root/proc` holding the character device `root/node` open (at most
/// [`MAX_HOLDERS`], by PID). Nothing to check, so none, when `root/node` (links followed) is missing
/// or is not a character device, or when there is no `root/proc`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn holders(root: &Path, node: &Path) -> Result<Vec<Holder>> {
    match device_number(root, node)? {
        Some(number) => holders_of(root, number),
        None => Ok(Vec::new()),
    }
}

/// The number of the character device at `root/node` (links followed): `None` when nothing is there
/// or it is not a character device. Any other failure to look is the error, naming the path.
pub(crate) fn device_number(root: &Path, node: &Path) -> Result<Option<DeviceNumber>> {
    let path = root.join(node);
    match char_device(&path) {
        Ok(number) => Ok(number),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(io_error("stat", &path, source)),
    }
}

/// The processes under `root/proc` with a descriptor on the character device `number` (at most
/// [`MAX_HOLDERS`], by PID); none when there is no `root/proc`. `root/proc` that cannot be listed,
/// or more processes or descriptors than the bounds, is an error naming the path.
pub(crate) fn holders_of(root: &Path, number: DeviceNumber) -> Result<Vec<Holder>> {
    let proc = root.join("proc");
    let entries = match std::fs::read_dir(&proc) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error("list", &proc, source)),
    };
    let tree = Tree::open(&SysfsRoot::new(root));
    let mut processes = 0usize;
    let mut descriptors = 0usize;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error("list", &proc, source))?;
        let Some(pid) = entry.file_name().to_str().and_then(pid_of) else {
            continue;
        };
        processes += 1;
        if processes > MAX_PROCESSES {
            return Err(exhausted(
                &proc,
                format!("more than {MAX_PROCESSES} processes"),
            ));
        }
        let dir = proc.join(pid.to_string());
        if !holds(&dir.join("fd"), number, &mut descriptors)? {
            continue;
        }
        // Gone meanwhile: it holds nothing any more.
        if let Some(comm) = comm(&tree, &dir.join("comm")) {
            found.push(Holder { pid, comm });
        }
        if found.len() >= MAX_HOLDERS {
            break;
        }
    }
    found.sort_by_key(|holder| holder.pid);
    Ok(found)
}

/// Whether a descriptor in `fd_dir` is on `number`; a process gone or not readable holds none.
fn holds(fd_dir: &Path, number: DeviceNumber, descriptors: &mut usize) -> Result<bool> {
    let entries = match std::fs::read_dir(fd_dir) {
        Ok(entries) => entries,
        Err(e) if skipped(&e) => return Ok(false),
        Err(source) => return Err(io_error("list", fd_dir, source)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if skipped(&e) => return Ok(false),
            Err(source) => return Err(io_error("list", fd_dir, source)),
        };
        *descriptors += 1;
        if *descriptors > MAX_DESCRIPTORS {
            return Err(exhausted(
                fd_dir,
                format!("more than {MAX_DESCRIPTORS} descriptors over all processes"),
            ));
        }
        let path = entry.path();
        match char_device(&path) {
            Ok(Some(held)) if held == number => return Ok(true),
            Ok(_) => {}
            Err(e) if skipped(&e) => {}
            Err(source) => return Err(io_error("stat", &path, source)),
        }
    }
    Ok(false)
}

/// The device number of `path` (links followed) when it is a character device.
fn char_device(path: &Path) -> io::Result<Option<DeviceNumber>> {
    use rustix::fs::{AtFlags, CWD, FileType, RawMode, StatxFlags};
    let (mode, number) =
        match rustix::fs::statx(CWD, path, AtFlags::STATX_DONT_SYNC, StatxFlags::TYPE) {
            Ok(st) => (
                RawMode::from(st.stx_mode),
                DeviceNumber {
                    major: st.stx_rdev_major,
                    minor: st.stx_rdev_minor,
                },
            ),
            // Kernels before 4.11, old seccomp profiles.
            Err(rustix::io::Errno::NOSYS) => {
                let st = rustix::fs::stat(path)?;
                let number = DeviceNumber {
                    major: rustix::fs::major(st.st_rdev),
                    minor: rustix::fs::minor(st.st_rdev),
                };
                (st.st_mode, number)
            }
            Err(e) => return Err(e.into()),
        };
    Ok((FileType::from_raw_mode(mode) == FileType::CharacterDevice).then_some(number))
}

/// A process that exited (`ENOENT`, `ESRCH`), or whose descriptors this process may not read
/// (`EACCES`, `EPERM`), or a numbered entry that is not a process's directory.
fn skipped(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory
    ) || error.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
}

/// A PID: decimal digits, no sign, below 2^32 (`proc/self` and the rest are not processes).
fn pid_of(name: &str) -> Option<u32> {
    let digits = !name.is_empty() && name.len() <= 10 && name.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| name.parse().ok()).flatten()
}

/// The command name in `path` (`proc/<pid>/comm`), read inside the root: bounded, control
/// characters escaped; `None` when the process is gone, `?` when it cannot be read otherwise.
fn comm(tree: &Tree, path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    let read = tree.open_regular(path).and_then(|file| {
        file.take(MAX_COMM_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|source| io_error("read", path, source))
    });
    match read {
        Ok(_) => {}
        Err(Error::Io { source, .. }) if skipped(&source) && !permission(&source) => return None,
        Err(_) => return Some("?".to_owned()),
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let shown = hal::text::escape_where(text, hal::text::acts_on_terminal, MAX_COMM_CHARS);
    Some(if shown.is_empty() {
        "?".to_owned()
    } else {
        shown.into_owned()
    })
}

fn permission(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A bound reached: kind `Exhausted` (`io::ErrorKind::OutOfMemory`), saying what was not looked at.
fn exhausted(path: &Path, what: String) -> Error {
    let message = format!("{what}: stopped looking");
    io_error(
        "list",
        path,
        io::Error::new(io::ErrorKind::OutOfMemory, message),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sysfs::test_tree::{link, write};

    /// `/dev/null`: a character device every machine has (1:3), that anyone may stat.
    const NULL: &str = "/dev/null";

    fn holder(pid: u32, comm: &str) -> Holder {
        Holder {
            pid,
            comm: comm.to_owned(),
        }
    }

    #[test]
    fn a_process_with_a_descriptor_on_the_node_holds_it_others_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        link(root, "dev/nvidia0", NULL);
        // The holder: one descriptor among others (a file, a dangling link as a socket's is here).
        link(root, "proc/4321/fd/0", "/");
        link(root, "proc/4321/fd/1", "socket:[1234]");
        link(root, "proc/4321/fd/3", NULL);
        write(root, "proc/4321/comm", "dcgm-exporter\n");
        // Not holders: other descriptors only, no descriptors, no fd directory (a zombie).
        link(root, "proc/12/fd/0", "/");
        write(root, "proc/12/comm", "bash\n");
        std::fs::create_dir_all(root.join("proc/13/fd")).unwrap();
        std::fs::create_dir_all(root.join("proc/14")).unwrap();
        // Not processes.
        link(root, "proc/self", "4321");
        link(root, "proc/x1/fd/3", NULL);
        link(root, "proc/-1/fd/3", NULL);
        link(root, "proc/99999999999/fd/3", NULL);
        let found = holders(root, Path::new("dev/nvidia0")).unwrap();
        assert_eq!(found, [holder(4321, "dcgm-exporter")]);
        assert_eq!(found[0].to_string(), "pid 4321 (dcgm-exporter)");
        // The same by number.
        let null = device_number(root, Path::new("dev/nvidia0"))
            .unwrap()
            .unwrap();
        assert_eq!(null, DeviceNumber { major: 1, minor: 3 });
        assert_eq!(holders_of(root, null).unwrap(), found);
        // Another number: nobody.
        let other = DeviceNumber {
            major: 195,
            minor: 0,
        };
        assert_eq!(holders_of(root, other).unwrap(), []);
    }

    /// A node that is not a character device, or not there, has nothing to check: no holders, even
    /// where descriptors are on a character device.
    #[test]
    fn a_node_that_is_not_a_character_device_has_nothing_to_check() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "dev/nvidia0", "");
        link(root, "dev/nvidia1", "/");
        link(root, "dev/nvidia2", "nowhere");
        link(root, "proc/4321/fd/3", NULL);
        link(
            root,
            "proc/4321/fd/4",
            &root.join("dev/nvidia0").display().to_string(),
        );
        write(root, "proc/4321/comm", "dcgm-exporter\n");
        for node in [
            "dev/nvidia0",
            "dev/nvidia1",
            "dev/nvidia2",
            "dev/nvidia3",
            "x/y",
        ] {
            assert_eq!(holders(root, Path::new(node)).unwrap(), [], "{node}");
            assert_eq!(device_number(root, Path::new(node)).unwrap(), None);
        }
    }

    /// Without `proc/` (a fixture tree), nobody is seen; a `proc/` that cannot be listed is an
    /// error naming it.
    #[test]
    fn no_proc_is_no_holders_and_an_unlistable_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        link(root, "dev/nvidia0", NULL);
        assert_eq!(holders(root, Path::new("dev/nvidia0")).unwrap(), []);
        write(root, "proc", "not a directory");
        let err = holders(root, Path::new("dev/nvidia0")).unwrap_err();
        assert_eq!(err.path(), Some(root.join("proc").as_path()), "{err}");
    }

    /// Processes that are gone are skipped: the fd directory gone (`ENOENT`), a descriptor closed
    /// (a dangling link), the command name gone after the descriptor was seen.
    #[test]
    fn processes_gone_meanwhile_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        link(root, "dev/vfio/12", NULL);
        // Gone before its descriptors were listed: `fd` missing.
        write(root, "proc/5/comm", "qemu-kvm\n");
        // A descriptor closed meanwhile: its link leads nowhere.
        link(root, "proc/6/fd/9", "/nonexistent/dev/vfio/12");
        write(root, "proc/6/comm", "qemu-kvm\n");
        // Seen holding it, gone before its name was read.
        link(root, "proc/7/fd/9", NULL);
        // A holder whose name cannot be read as text: shown as `?` and escaped bytes.
        link(root, "proc/8/fd/9", NULL);
        std::fs::create_dir_all(root.join("proc/8/comm")).unwrap();
        link(root, "proc/77/fd/9", NULL);
        write(root, "proc/77/comm", "qemu\u{1b}[31m\tkvm\u{202e}\n");
        link(root, "proc/78/fd/9", NULL);
        write(root, "proc/78/comm", &"x".repeat(200));
        let found = holders(root, Path::new("dev/vfio/12")).unwrap();
        let long = format!("{}…", "x".repeat(MAX_COMM_CHARS));
        assert_eq!(
            found,
            [
                holder(8, "?"),
                holder(77, "qemu\\u001b[31m\\u0009kvm\\u202e"),
                holder(78, &long),
            ]
        );
    }

    /// At most [`MAX_HOLDERS`] are reported; the look stops there.
    #[test]
    fn at_most_max_holders_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        link(root, "dev/nvidia0", NULL);
        for pid in 100..100 + 3 * MAX_HOLDERS as u32 {
            link(root, &format!("proc/{pid}/fd/3"), NULL);
            write(root, &format!("proc/{pid}/comm"), "cuda-app\n");
        }
        let found = holders(root, Path::new("dev/nvidia0")).unwrap();
        assert_eq!(found.len(), MAX_HOLDERS);
        assert!(found.windows(2).all(|w| w[0].pid < w[1].pid), "{found:?}");
        assert!(found.iter().all(|h| (100..124).contains(&h.pid)));
    }

    /// A process that cannot be read (`EACCES`: here a directory without permission, looked at by
    /// a thread without the capabilities that pass over it, so as root too) is skipped, not an
    /// error, and the others are still looked at.
    #[test]
    fn a_process_that_cannot_be_read_is_skipped() {
        use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        link(root, "dev/nvidia0", NULL);
        link(root, "proc/1/fd/3", NULL);
        write(root, "proc/1/comm", "init\n");
        link(root, "proc/2/fd/4", NULL);
        write(root, "proc/2/comm", "qemu\n");
        let fd = root.join("proc/1/fd");
        std::fs::set_permissions(&fd, std::fs::Permissions::from_mode(0o000)).unwrap();
        let found = std::thread::scope(|s| {
            s.spawn(|| {
                let mut sets = capabilities(None).unwrap();
                sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
                set_capabilities(None, sets).unwrap();
                assert!(std::fs::read_dir(&fd).is_err(), "not denied");
                holders(root, Path::new("dev/nvidia0")).unwrap()
            })
            .join()
            .unwrap()
        });
        std::fs::set_permissions(&fd, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(found, [holder(2, "qemu")]);
    }

    #[test]
    fn device_numbers_parse_from_sysfs_dev_attributes() {
        assert_eq!(
            DeviceNumber::parse("243:12\n").unwrap(),
            DeviceNumber {
                major: 243,
                minor: 12
            }
        );
        for bad in [
            "",
            ":",
            "243",
            "243:",
            ":12",
            "-1:3",
            "1:+3",
            "1:3:4",
            "99999999999:1",
        ] {
            assert!(DeviceNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            DeviceNumber { major: 1, minor: 3 }.to_string(),
            "1:3".to_owned()
        );
    }

    #[test]
    fn pids_are_decimal_numbers_only() {
        assert_eq!(pid_of("4321"), Some(4321));
        assert_eq!(pid_of("4294967295"), Some(u32::MAX));
        for bad in ["", "self", "+1", "-1", "1 ", "4294967296", "00000000001"] {
            assert_eq!(pid_of(bad), None, "{bad:?}");
        }
    }
}
