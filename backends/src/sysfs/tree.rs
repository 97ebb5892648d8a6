//! [`Tree`]: how the sysfs readers reach every file and directory under their root. Each path is
//! opened inside the root ([`super::in_root`]): a link anywhere on it (a CPU, NUMA node, DRM or
//! InfiniBand directory, a class entry, a PCI function's parent) is resolved as if the root were `/`,
//! so it can never lead out of the root, and nothing read outside the root reaches an inventory or an
//! error message. Links that stay inside the root (`sys/class/net/eth0` → `../../devices/...`, on a
//! node or in a captured tree) work as they do on the machine.
//!
//! Attributes are read as [`super::attr`] reads them (bounded, never through a link as the last
//! component, only regular files); directories may be links themselves (`sys/bus/pci/devices/<f>`),
//! resolved inside the root as well.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use hal::{Error, ParseError, Result};
use rustix::fd::OwnedFd;
use rustix::fs::OFlags;

use super::SysfsRoot;
use super::attr::{self, ErrorLog};
use super::in_root::{Reopen, RootDir};

/// A sysfs root opened for reading inside it. Opened once per reading of a family (one `open(2)`,
/// and for a root whose `sys` is not the kernel's sysfs, two more: see [`Tree::open`]).
#[derive(Debug)]
pub struct Tree {
    root: SysfsRoot,
    /// The root directory, or the errno of opening it (then every read fails with it).
    dir: std::result::Result<RootDir, i32>,
    /// How files are opened after they are looked at, when they are: see [`Tree::open`].
    look_first: Option<Reopen>,
}

/// `SYSFS_MAGIC` (`include/uapi/linux/magic.h`): the `f_type` of the kernel's sysfs.
const SYSFS_MAGIC: i128 = 0x6265_6572;

impl Tree {
    /// Opens `root`. A root that cannot be opened is not an error here: every read reports it,
    /// naming the path it wanted.
    ///
    /// When the root's `sys` (resolved inside the root) is not the kernel's sysfs (a captured or
    /// unpacked tree), every file is first opened `O_PATH`, which has no side effects, and reopened
    /// through `/proc/self/fd` only if it is a regular file. A tree unpacked as root can hold device
    /// nodes, and opening one is enough to act: a watchdog's node arms the watchdog, and the machine
    /// reboots when it is not fed. The kernel's sysfs holds no such nodes, so it is read with one
    /// `open(2)` per attribute. Without `/proc`, a regular file is opened again by its path, which
    /// a rename racing the look could swap for a device node.
    pub fn open(root: &SysfsRoot) -> Tree {
        let dir = RootDir::open(root.root()).map_err(|e| e.raw_os_error().unwrap_or(libc_einval()));
        let kernel_sysfs = dir.as_ref().is_ok_and(|dir| {
            let sys = dir.open_dir(&root.root().join("sys"), OFlags::PATH | OFlags::DIRECTORY);
            sys.and_then(|fd| Ok(rustix::fs::fstatfs(fd)?))
                .is_ok_and(|fs| i128::from(fs.f_type) == SYSFS_MAGIC)
        });
        Tree {
            root: root.clone(),
            dir,
            look_first: (!kernel_sysfs).then(Reopen::available),
        }
    }

    /// The root directory's path.
    pub fn root(&self) -> &Path {
        self.root.root()
    }

    /// The sysfs root.
    pub fn sysfs_root(&self) -> &SysfsRoot {
        &self.root
    }

    /// `root/relative`.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.root().join(relative)
    }

    fn open_with(&self, path: &Path, flags: OFlags, follow_last: bool) -> io::Result<OwnedFd> {
        match &self.dir {
            Ok(dir) if follow_last => dir.open_dir(path, flags),
            Ok(dir) => dir.open_file(path, flags),
            Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
        }
    }

    /// A file to read: looked at first, in a tree that is not the kernel's sysfs ([`Tree::open`]).
    /// Anything but a regular file comes back as its `O_PATH` descriptor, never opened: reading that
    /// fails, and the reader's `fstat` then names what it is.
    fn open_to_read(&self, path: &Path) -> io::Result<OwnedFd> {
        let (Some(reopen), Ok(dir)) = (&self.look_first, &self.dir) else {
            return self.open_with(path, attr::read_flags(), false);
        };
        let looked = dir.open_file(path, OFlags::PATH)?;
        use rustix::fs::FileType;
        match FileType::from_raw_mode(rustix::fs::fstat(&looked)?.st_mode) {
            FileType::RegularFile => reopen.open(dir, path, &looked, attr::read_flags()),
            // What `O_NOFOLLOW` answers a link with.
            FileType::Symlink => Err(rustix::io::Errno::LOOP.into()),
            _ => Ok(looked),
        }
    }

    /// [`attr::open_regular`] of `path`, opened inside the root (and not through a link as its last
    /// component). For a file read in full (`/proc/cpuinfo`), not an attribute.
    pub fn open_regular(&self, path: &Path) -> Result<std::fs::File> {
        attr::regular_file(self.open_to_read(path), path)
    }

    /// [`attr::read_trimmed`] of `path`, opened inside the root (`attr::read_attribute`).
    pub fn read_trimmed(&self, path: &Path) -> Result<String> {
        attr::read_attribute(self.open_to_read(path), path)
    }

    /// [`attr::read_optional`] of `path`, opened inside the root.
    pub fn read_optional(&self, path: &Path) -> Result<Option<String>> {
        attr::missing_is_none(self.read_trimmed(path))
    }

    /// Reads `path` inside the root; a missing file, or one the kernel refuses to show for this
    /// object (`EINVAL`, `ENODATA`, as `gid_attrs/ndevs` does for unused GIDs), is `Ok(None)`.
    pub fn read_if_shown(&self, path: &Path) -> Result<Option<String>> {
        attr::unshown_is_none(self.read_trimmed(path))
    }

    /// Reads and parses an attribute inside the root; a missing file is `Ok(None)`, bad contents an
    /// error naming the file.
    pub fn parse_optional<T>(
        &self,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<Option<T>> {
        attr::parsed(self.read_optional(path)?, path, parse)
    }

    /// Like [`Self::parse_optional`], for single values (ids, levels, sizes): an empty file says
    /// nothing, as a missing one does. Write-only and root-only attributes read back empty, and
    /// captured trees hold them as empty files. (CPU sets are not read this way: an empty cpulist is a
    /// real answer.)
    pub fn parse_scalar<T>(
        &self,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<Option<T>> {
        let text = self.read_optional(path)?.filter(|text| !text.is_empty());
        attr::parsed(text, path, parse)
    }

    /// The names in the directory `dir` (not `.` and `..`), listed inside the root.
    pub fn list(&self, dir: &Path) -> io::Result<BTreeSet<String>> {
        let fd = self.open_with(dir, OFlags::RDONLY | OFlags::DIRECTORY, true)?;
        let mut names = BTreeSet::new();
        for entry in rustix::fs::Dir::new(fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name != "." && name != ".." {
                names.insert(name.to_owned());
            }
        }
        Ok(names)
    }

    /// [`Tree::list`], with a directory that is not there (missing, or not a directory) as `Ok(None)`:
    /// any other failure is the error.
    pub fn list_if_there(&self, dir: &Path) -> io::Result<Option<BTreeSet<String>>> {
        match self.list(dir) {
            Ok(names) => Ok(Some(names)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The names in a directory, or `None` when it is not there (missing: an offline CPU's
    /// `topology/`; not a directory: `<entry>/net` looked for under each entry of a device). Any
    /// other failure (`EACCES`, `EIO`, a link loop) is also `None`, and an error entry naming the
    /// directory: what it holds is left out. Listing once and opening only what exists is cheaper
    /// than probing for files that old kernels lack.
    pub(crate) fn entry_names(
        &self,
        dir: &Path,
        errors: &mut ErrorLog,
    ) -> Option<BTreeSet<String>> {
        match self.list_if_there(dir) {
            Ok(names) => names,
            Err(source) => {
                errors.keep::<()>(Err(Error::Io {
                    op: "list",
                    path: dir.to_path_buf(),
                    source,
                }));
                None
            }
        }
    }

    /// Lists the entries of `dir` named `<prefix><decimal>` and returns their numbers, sorted.
    /// Numbers of `max` or more are skipped.
    pub fn numbered_entries(&self, dir: &Path, prefix: &str, max: u32) -> Result<Vec<u32>> {
        let names = self.list(dir).map_err(|source| Error::Io {
            op: "list",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(attr::numbered_names(
            names.iter().map(String::as_str),
            prefix,
            max,
        ))
    }

    /// Whether `path` exists inside the root (a link as its last component counts, as itself).
    pub fn exists(&self, path: &Path) -> bool {
        self.open_with(path, OFlags::PATH, false).is_ok()
    }

    /// [`Tree::exists`] that tells a missing `path` (`Ok(false)`) from a failed look-up (no file
    /// descriptors left, a root that could not be opened): the error.
    pub fn try_exists(&self, path: &Path) -> io::Result<bool> {
        if let Err(errno) = &self.dir {
            let root = self.root().display();
            let error = io::Error::from_raw_os_error(*errno);
            return Err(io::Error::other(format!("the root {root}: {error}")));
        }
        match self.open_with(path, OFlags::PATH, false) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The text of the link `path`, or `None` when it is not a link (or missing, or cannot be looked
    /// up). One look: an `O_PATH | O_NOFOLLOW` open inside the root (the link's own directory cannot
    /// be outside it) and `readlinkat` of that descriptor, which fails on anything but a link.
    pub fn read_link(&self, path: &Path) -> Option<PathBuf> {
        let fd = self.open_with(path, OFlags::PATH, false).ok()?;
        // An empty path: the link `fd` itself (it was opened `O_PATH | O_NOFOLLOW`).
        let text = rustix::fs::readlinkat(&fd, "", Vec::new()).ok()?;
        let text: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(text.into_bytes());
        Some(PathBuf::from(text))
    }

    /// [`super::link::resolve_link_text`] of the link at `relative` (under the root): its target
    /// relative to the root, `Ok(None)` when there is no link there (a plain directory of an old
    /// capture, or nothing), and an error for a link that points above the root.
    pub fn resolve_link(&self, relative: &Path) -> Result<Option<PathBuf>> {
        let link = self.join(relative);
        match self.read_link(&link) {
            Some(text) => super::link::resolve_link_text(&link, relative, &text).map(Some),
            None => Ok(None),
        }
    }

    /// The name the link `path` points to (`driver` → `../../../bus/pci/drivers/ice` gives `ice`),
    /// read inside the root; `None` when there is no link.
    pub fn link_name(&self, path: &Path) -> Option<String> {
        let target = self.read_link(path)?;
        target.file_name()?.to_str().map(str::to_owned)
    }
}

/// `EINVAL`: why a root whose error carries no errno could not be opened.
fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hal::ErrorKind;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A PCI function's attributes as `read_function` reads them: by path, inside the root, through
    /// the `sys/bus/pci/devices/<f>` link.
    #[test]
    fn attributes_are_read_by_path_bounded_and_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join("sys/devices/pci0000:00/0000:3b:00.0");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x8086\n").unwrap();
        fs::write(dir.join("revision"), "").unwrap();
        fs::write(dir.join("big"), vec![b'1'; 70_000]).unwrap();
        symlink("../../../bus/pci/drivers/ice", dir.join("driver")).unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:3b:00.0",
            root.join("sys/bus/pci/devices/0000:3b:00.0"),
        )
        .unwrap();
        let tree = Tree::open(&SysfsRoot::new(root));
        let hex = |t: &str| {
            u32::from_str_radix(t.trim_start_matches("0x"), 16)
                .map_err(|_| ParseError::new("hex", t, "bad"))
        };
        for dir in [dir.clone(), tree.join("sys/bus/pci/devices/0000:3b:00.0")] {
            let attr = |name: &str| dir.join(name);
            assert_eq!(
                tree.parse_scalar(&attr("vendor"), hex).unwrap(),
                Some(0x8086)
            );
            assert_eq!(
                tree.parse_scalar(&attr("revision"), hex).unwrap(),
                None,
                "empty"
            );
            assert_eq!(tree.read_optional(&attr("absent")).unwrap(), None);
            assert_eq!(tree.link_name(&attr("driver")).as_deref(), Some("ice"));
            assert_eq!(tree.link_name(&attr("vendor")), None, "not a link");
            let err = tree.read_trimmed(&attr("big")).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Malformed);
            assert!(err.to_string().contains(&attr("big").display().to_string()));
            // A link as the last component is not read through.
            let err = tree.read_trimmed(&attr("driver")).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        // A missing directory: optional reads are `None`, required ones name the path.
        let gone = tree.join("sys/devices/gone");
        assert_eq!(tree.read_optional(&gone.join("vendor")).unwrap(), None);
        let err = tree.read_trimmed(&gone.join("vendor")).unwrap_err();
        assert!(
            err.to_string()
                .contains(&gone.join("vendor").display().to_string())
        );
        assert_eq!(tree.link_name(&gone.join("driver")), None);
    }
}
