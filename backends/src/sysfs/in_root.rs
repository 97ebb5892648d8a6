//! Opening files under a root as if the root were `/`: a symlink anywhere on the path (absolute, or
//! climbing with `..`) is resolved inside the root and can never lead out of it, and the last
//! component is never followed when it is a link.
//!
//! The kernel does this itself with `openat2(2)` and `RESOLVE_IN_ROOT` (Linux 5.6). Where that call is
//! missing (`ENOSYS`) or refused by a seccomp profile (`EPERM`, older container runtimes), the path is
//! walked here a component at a time with the same rules, each directory opened `O_PATH | O_NOFOLLOW`
//! relative to the one before, so nothing is resolved by path twice (and at most 256 directories
//! deep). The walk also takes over when `openat2` keeps failing with `EAGAIN` (a rename or mount
//! racing it) after 16 more tries.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The most links one open resolves (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;
/// The deepest directory the walk descends to (each level holds a descriptor until a `..` leaves
/// it). Sysfs paths are some 20 levels deep; a tree of links built to go deeper is `ENAMETOOLONG`
/// rather than thousands of open descriptors.
const MAX_DEPTH: usize = 256;
/// How often an `openat2` that returned `EAGAIN` is tried again before the path is walked instead.
/// With `RESOLVE_IN_ROOT` the kernel returns `EAGAIN` when a rename or a mount anywhere on the node
/// raced the resolution of a `..`, which every sysfs class and bus link holds; its manual page says
/// the caller may retry.
const EAGAIN_RETRIES: usize = 16;

/// A root directory, opened once (`O_PATH`), under which files are opened.
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl RootDir {
    /// Opens the directory `path` as a root.
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(RootDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// Opens `path` (the root's path joined with a relative one) with `flags`, inside the root
    /// ([`open_in_root`]). A path not under the root's path is refused.
    pub fn open_file(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let relative = path.strip_prefix(&self.path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not under the root {}", self.path.display()),
            )
        })?;
        open_in_root(self.fd.as_fd(), relative, flags)
    }

    /// [`Self::open_file`] of a directory: a link as the last component is followed too, inside the
    /// root ([`open_dir_in_root`]).
    pub fn open_dir(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let relative = path.strip_prefix(&self.path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not under the root {}", self.path.display()),
            )
        })?;
        open_dir_in_root(self.fd.as_fd(), relative, flags)
    }
}

/// How a file looked at first (opened `O_PATH`, which has no side effects, and `fstat`ed) is then
/// opened for real: through its magic link in `/proc/self/fd`, which opens the same inode whatever
/// is at its path by now; or, without `/proc`, by its path again, which a rename racing it could
/// swap for another file.
#[derive(Debug)]
pub enum Reopen {
    /// `/proc/self/fd`, opened `O_PATH`.
    Proc(OwnedFd),
    /// No `/proc/self/fd`.
    ByPath,
}

impl Reopen {
    /// `/proc/self/fd` when it opens, else [`Reopen::ByPath`].
    pub fn available() -> Reopen {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open("/proc/self/fd", flags, Mode::empty()).map_or(Reopen::ByPath, Reopen::Proc)
    }

    /// Opens `looked` (`root`'s `path`, opened `O_PATH`) with `flags`.
    pub fn open(
        &self,
        root: &RootDir,
        path: &Path,
        looked: &OwnedFd,
        flags: OFlags,
    ) -> io::Result<OwnedFd> {
        match self {
            Reopen::Proc(dir) => {
                let name = rustix::fd::AsRawFd::as_raw_fd(looked).to_string();
                // The magic link, followed: no `O_NOFOLLOW` here.
                Ok(rustix::fs::openat(
                    dir,
                    name.as_str(),
                    flags | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            }
            Reopen::ByPath => root.open_file(path, flags),
        }
    }
}

/// Opens `relative` under the directory `root` as if `root` were `/`, with `flags` and `O_NOFOLLOW`
/// (a link as the last component is `ELOOP`) and `O_CLOEXEC`.
pub fn open_in_root(root: BorrowedFd<'_>, relative: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    open_inside(root, relative, flags | OFlags::NOFOLLOW, false)
}

/// [`open_in_root`] where the last component may be a link too (a directory such as
/// `sys/bus/pci/devices/0000:3b:00.0`): it is followed, inside the root, as every other one is.
pub fn open_dir_in_root(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
) -> io::Result<OwnedFd> {
    open_inside(root, relative, flags, true)
}

fn open_inside(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
    follow_last: bool,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let path: &Path = match relative.as_os_str().is_empty() {
        true => Path::new("."),
        false => relative,
    };
    #[cfg(test)]
    if forced_walk::on() {
        return walk(root, path, flags, follow_last);
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let openat2 = || rustix::fs::openat2(root, path, flags, Mode::empty(), resolve);
    match retry_eagain(openat2) {
        Err(Errno::NOSYS | Errno::PERM | Errno::AGAIN) => walk(root, path, flags, follow_last),
        opened => Ok(opened?),
    }
}

/// Calls `open` again while it fails with `EAGAIN`, at most [`EAGAIN_RETRIES`] times more.
fn retry_eagain(
    mut open: impl FnMut() -> rustix::io::Result<OwnedFd>,
) -> rustix::io::Result<OwnedFd> {
    let mut opened = open();
    for _ in 0..EAGAIN_RETRIES {
        match opened {
            Err(Errno::AGAIN) => opened = open(),
            _ => break,
        }
    }
    opened
}

/// Tests: every open of the calling thread takes the component walk, as on a kernel without
/// `openat2`, so the suites of hostile trees run against both paths.
#[cfg(test)]
pub(crate) mod forced_walk {
    use std::cell::Cell;

    thread_local! {
        static WALKS: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Whether the walk is forced on this thread (and counts it).
    pub(super) fn on() -> bool {
        WALKS.with(|walks| match walks.get() {
            Some(n) => {
                walks.set(Some(n + 1));
                true
            }
            None => false,
        })
    }

    /// Runs `f` with the walk forced; fails when `f` opened nothing.
    pub(crate) fn with<T>(f: impl FnOnce() -> T) -> T {
        WALKS.with(|walks| walks.set(Some(0)));
        let out = f();
        let walks = WALKS.with(|walks| walks.replace(None)).unwrap_or(0);
        assert!(walks > 0, "nothing was opened through the walk");
        out
    }
}

/// [`open_in_root`] without `openat2`: the path walked a component at a time.
#[cfg(test)]
pub(crate) fn walk_in_root(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
) -> io::Result<OwnedFd> {
    walk(root, relative, flags | OFlags::NOFOLLOW, false)
}

/// The walk of [`open_inside`]; with `follow_last`, a link as the last component is followed as
/// every other one is (and `flags` carries no `O_NOFOLLOW`).
fn walk(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
    follow_last: bool,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // The directories opened so far below the root; the last is the current one.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, relative);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        let current = dirs.last().map_or(root, |fd| fd.as_fd());
        match name.as_bytes() {
            b"/" => dirs.clear(),
            b"." => {}
            b".." => {
                dirs.pop();
            }
            _ if pending.is_empty() && !follow_last => {
                return Ok(rustix::fs::openat(current, &name, flags, Mode::empty())?);
            }
            _ if dirs.len() >= MAX_DEPTH => return Err(Errno::NAMETOOLONG.into()),
            _ => match rustix::fs::openat(current, &name, dir_flags, Mode::empty()) {
                Ok(fd) => dirs.push(fd),
                // A link (or not a directory): follow the link inside the root.
                Err(Errno::NOTDIR) => {
                    let target = match rustix::fs::readlinkat(current, &name, Vec::new()) {
                        Ok(target) => target,
                        Err(Errno::INVAL) => return Err(Errno::NOTDIR.into()),
                        Err(e) => return Err(e.into()),
                    };
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                    push_components(&mut pending, &target);
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    // The path named a directory (or the root itself).
    let current = dirs.last().map_or(root, |fd| fd.as_fd());
    Ok(rustix::fs::openat(
        current,
        ".",
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Puts `path`'s components on the stack `pending` so that its first component is popped first.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .map(|c| match c {
            Component::RootDir | Component::Prefix(_) => OsString::from("/"),
            Component::CurDir => OsString::from("."),
            Component::ParentDir => OsString::from(".."),
            Component::Normal(name) => name.to_os_string(),
        })
        .collect();
    pending.extend(names.into_iter().rev());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    /// What opening `relative` for reading gives: the text, or the errno.
    fn read(
        open: fn(BorrowedFd<'_>, &Path, OFlags) -> io::Result<OwnedFd>,
        root: &RootDir,
        relative: &str,
    ) -> Result<String, Errno> {
        let fd = open(root.fd.as_fd(), Path::new(relative), OFlags::RDONLY)
            .map_err(|e| Errno::from_io_error(&e).unwrap())?;
        let mut text = String::new();
        fs::File::from(fd).read_to_string(&mut text).unwrap();
        Ok(text)
    }

    #[test]
    fn links_resolve_inside_the_root_with_and_without_openat2() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "SECRET").unwrap();
        let root = tmp.path().join("root");
        let pf = root.join("sys/devices/pci0000:00/0000:3b:00.0");
        fs::create_dir_all(&pf).unwrap();
        fs::write(pf.join("vendor"), "0x8086\n").unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        let bus = root.join("sys/bus/pci/devices");
        symlink(
            "../../../devices/pci0000:00/0000:3b:00.0",
            bus.join("0000:3b:00.0"),
        )
        .unwrap();
        // An absolute link is taken from the root, as on the machine it was captured on.
        symlink("/sys/devices/pci0000:00", bus.join("absolute")).unwrap();
        // Hostile: links to the secret, a directory outside, and a climb far above the root.
        symlink(outside.join("secret"), pf.join("numa_node")).unwrap();
        symlink(&outside, pf.join("subsystem")).unwrap();
        symlink("../../../../../../../..", pf.join("up")).unwrap();
        symlink("loop", pf.join("loop")).unwrap();
        let secret_from_root = format!("{}/secret", outside.display());
        let up_to_secret = format!("sys/devices/pci0000:00/0000:3b:00.0/up{}", secret_from_root);

        let root = RootDir::open(&root).unwrap();
        let cases: [(&str, Result<String, Errno>); 8] = [
            (
                "sys/bus/pci/devices/0000:3b:00.0/vendor",
                Ok("0x8086\n".into()),
            ),
            (
                "sys/bus/pci/devices/absolute/0000:3b:00.0/vendor",
                Ok("0x8086\n".into()),
            ),
            (
                "sys/../../../sys/devices/pci0000:00/0000:3b:00.0/vendor",
                Ok("0x8086\n".into()),
            ),
            // The attribute itself a link: refused (ELOOP), whatever it points to.
            (
                "sys/bus/pci/devices/0000:3b:00.0/numa_node",
                Err(Errno::LOOP),
            ),
            // A directory link to outside: looked up inside the root, where there is nothing.
            (
                "sys/bus/pci/devices/0000:3b:00.0/subsystem/secret",
                Err(Errno::NOENT),
            ),
            (&up_to_secret, Err(Errno::NOENT)),
            (
                "sys/devices/pci0000:00/0000:3b:00.0/loop/x",
                Err(Errno::LOOP),
            ),
            (
                "sys/devices/pci0000:00/0000:3b:00.0/vendor/x",
                Err(Errno::NOTDIR),
            ),
        ];
        for (relative, expected) in &cases {
            assert_eq!(
                &read(open_in_root, &root, relative),
                expected,
                "openat2: {relative}"
            );
            assert_eq!(
                &read(walk_in_root, &root, relative),
                expected,
                "walked: {relative}"
            );
        }
        // Paths outside the root's path are refused.
        let err = root
            .open_file(&outside.join("secret"), OFlags::RDONLY)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_directory_link_as_the_last_component_is_followed_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "SECRET").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("sys/devices/pci0000:00/0000:3b:00.0/net/eth0")).unwrap();
        fs::create_dir_all(root.join("sys/class/net")).unwrap();
        let class = root.join("sys/class/net");
        symlink(
            "../../devices/pci0000:00/0000:3b:00.0/net/eth0",
            class.join("eth0"),
        )
        .unwrap();
        symlink(&outside, class.join("out")).unwrap();
        let root = RootDir::open(&root).unwrap();
        let list = |fd: OwnedFd| -> Vec<String> {
            rustix::fs::Dir::new(fd)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
                .filter(|n| n != "." && n != "..")
                .collect()
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        type Open = fn(BorrowedFd<'_>, &Path, OFlags) -> io::Result<OwnedFd>;
        let walked: Open = |root, path, flags| walk(root, path, flags, true);
        for (how, open) in [("openat2", open_dir_in_root as Open), ("walked", walked)] {
            let eth0 = open(root.fd.as_fd(), Path::new("sys/class/net/eth0"), flags).unwrap();
            assert_eq!(
                list(eth0),
                Vec::<String>::new(),
                "{how}: the interface's directory"
            );
            let net = open(root.fd.as_fd(), Path::new("sys/class/net/eth0/.."), flags).unwrap();
            assert_eq!(
                list(net),
                ["eth0"],
                "{how}: .. after a link is the target's parent"
            );
            let out = open(root.fd.as_fd(), Path::new("sys/class/net/out"), flags);
            assert_eq!(
                out.map(drop).map_err(|e| e.kind()),
                Err(io::ErrorKind::NotFound),
                "{how}: the link's target is looked up inside the root"
            );
        }
    }

    #[test]
    fn an_openat2_raced_by_a_rename_is_tried_again_then_left_to_the_walk() {
        let fd = || rustix::fs::open(".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty());
        let mut calls = 0;
        let opened = retry_eagain(|| {
            calls += 1;
            if calls <= 3 { Err(Errno::AGAIN) } else { fd() }
        });
        assert!(opened.is_ok());
        assert_eq!(calls, 4);
        let mut calls = 0;
        let opened = retry_eagain(|| {
            calls += 1;
            Err(Errno::AGAIN)
        });
        assert_eq!(
            opened.map(drop),
            Err(Errno::AGAIN),
            "then the walk opens it"
        );
        assert_eq!(calls, 1 + EAGAIN_RETRIES);
        let mut calls = 0;
        let opened = retry_eagain(|| {
            calls += 1;
            Err(Errno::NOENT)
        });
        assert_eq!(
            (opened.map(drop), calls),
            (Err(Errno::NOENT), 1),
            "other errors are final"
        );
    }

    #[test]
    fn opens_through_parent_links_succeed_while_another_thread_renames() {
        // Every rename on the node moves the kernel's rename sequence, which RESOLVE_IN_ROOT checks
        // after each `..`: without the retry (or the walk after it) such opens failed with EAGAIN.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let function = root.join("sys/devices/pci0000:00/0000:3b:00.0");
        fs::create_dir_all(&function).unwrap();
        fs::write(function.join("vendor"), "0x8086\n").unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:3b:00.0",
            root.join("sys/bus/pci/devices/0000:3b:00.0"),
        )
        .unwrap();
        let root = RootDir::open(&root).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let (stop, dir) = (stop.clone(), tmp.path().to_path_buf());
            std::thread::spawn(move || {
                let (a, b) = (dir.join("a"), dir.join("b"));
                fs::write(&a, "").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs::rename(&a, &b).unwrap();
                    fs::rename(&b, &a).unwrap();
                }
            })
        };
        let path = "sys/bus/pci/devices/0000:3b:00.0/../0000:3b:00.0/vendor";
        let failures = (0..20_000)
            .filter(|_| read(open_in_root, &root, path).as_deref() != Ok("0x8086\n"))
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamer.join().unwrap();
        assert_eq!(failures, 0);
    }

    #[test]
    fn the_walk_stops_at_its_depth_limit_instead_of_holding_a_descriptor_per_level() {
        let tmp = tempfile::tempdir().unwrap();
        let deep: PathBuf = std::iter::repeat_n("d", MAX_DEPTH + 1).collect();
        fs::create_dir_all(tmp.path().join(&deep)).unwrap();
        fs::write(tmp.path().join(&deep).join("attr"), "1").unwrap();
        let root = RootDir::open(tmp.path()).unwrap();
        let relative = deep.join("attr");
        assert_eq!(
            read(walk_in_root, &root, relative.to_str().unwrap()),
            Err(Errno::NAMETOOLONG)
        );
        // Within the limit the walk reads it.
        let shallow: PathBuf = std::iter::repeat_n("d", MAX_DEPTH).collect();
        fs::write(tmp.path().join(&shallow).join("attr"), "2").unwrap();
        let relative = shallow.join("attr");
        assert_eq!(
            read(walk_in_root, &root, relative.to_str().unwrap()).as_deref(),
            Ok("2")
        );
    }
}
