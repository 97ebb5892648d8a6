//! The one way attributes are read: bounded, trimmed, parsed, with the path attached to every error.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use hal::{Error, InventoryError, ParseError, Result};
use rustix::fd::OwnedFd;

/// The largest attribute read. sysfs attributes are at most a page (4 KiB) in practice; a dump or a
/// hostile tree may hold anything, so reads stop here.
pub const MAX_ATTRIBUTE_BYTES: u64 = 64 * 1024;

/// A filesystem root under which `sys/...` is looked up: `/` on a real node, a fixture directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot {
    root: PathBuf,
}

impl SysfsRoot {
    /// A root at `root` (the directory that contains `sys/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysfsRoot { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/relative`.
    pub fn join(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

impl Default for SysfsRoot {
    fn default() -> Self {
        SysfsRoot::new("/")
    }
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// How every file the backends read is opened: without blocking. A FIFO put in place of an attribute
/// would block `open(2)` (and then `read(2)`) until a writer came; with `O_NONBLOCK` the open returns
/// at once (and its read finds no data). A terminal's node in its place (a tree unpacked as root can
/// hold one) would become the controlling terminal of a reader that leads a session without one, and
/// send it the terminal's hangups: `O_NOCTTY`. On regular files neither flag changes anything.
pub(crate) fn read_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// Opens `path` for reading without blocking and refuses anything that is not a regular file (a FIFO,
/// a socket, a device, a directory), naming the path, without opening it for reading: it is looked
/// at first (`O_PATH` and `fstat`), as a captured tree's files are. This one follows a link as the last component
/// (the pci.ids database is one on Debian: `/usr/share/misc/pci.ids`); attributes are read with
/// [`read_trimmed`], which does not.
pub fn open_regular(path: &Path) -> Result<fs::File> {
    regular_file(open_looked_at(path, true), path)
}

/// Opens `path` for reading, looked at first, as [`super::tree::Tree`] opens the files of a captured
/// tree: opened `O_PATH` (no side effects: opening is enough for a device to act, a watchdog's node
/// arms it) and `fstat`ed; only a regular file is then opened for reading, through its magic link in
/// `/proc/self/fd` (the same inode, whatever is at `path` by now), or by its path again where there is
/// no `/proc`. Anything else comes back as looked at, so that its reader's `fstat` names what it is.
/// `follow`: whether a link as the last component is followed (else `ELOOP`, as `O_NOFOLLOW` says).
fn open_looked_at(path: &Path, follow: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{FileType, Mode, OFlags};
    let nofollow = if follow {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    };
    let looked = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC | nofollow,
        Mode::empty(),
    )?;
    match FileType::from_raw_mode(rustix::fs::fstat(&looked)?.st_mode) {
        FileType::RegularFile => {
            let fd = rustix::fd::AsRawFd::as_raw_fd(&looked);
            let magic = format!("/proc/self/fd/{fd}");
            match rustix::fs::open(magic.as_str(), read_flags(), Mode::empty()) {
                Err(rustix::io::Errno::NOENT) => Ok(rustix::fs::open(
                    path,
                    read_flags() | nofollow,
                    Mode::empty(),
                )?),
                opened => Ok(opened?),
            }
        }
        FileType::Symlink => Err(rustix::io::Errno::LOOP.into()),
        _ => Ok(looked),
    }
}

/// What an open returned, checked to be a regular file (`fstat`): for files read in full (pci.ids,
/// `/proc/cpuinfo`), not attributes ([`read_attribute`]).
pub(crate) fn regular_file(opened_fd: io::Result<OwnedFd>, path: &Path) -> Result<fs::File> {
    let fd = opened(opened_fd, path)?;
    match not_regular(&fd, path)? {
        Some(error) => Err(error),
        None => Ok(fs::File::from(fd)),
    }
}

/// What an open returned, as an error naming `path` (`O_NOFOLLOW` on a link: not followed).
fn opened(opened: io::Result<OwnedFd>, path: &Path) -> Result<OwnedFd> {
    match opened {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            let source = ParseError::new("file", "", "a symbolic link, not followed");
            let path = path.to_path_buf();
            Err(Error::Parse { path, source })
        }
        Err(e) => Err(io_error("read", path, e)),
    }
}

/// The error for an open file that is not a regular file (`fstat`), or `None` for a regular one.
fn not_regular(fd: &OwnedFd, path: &Path) -> Result<Option<Error>> {
    use rustix::fs::FileType;
    let stat = rustix::fs::fstat(fd).map_err(|e| io_error("read", path, e.into()))?;
    let reason = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => return Ok(None),
        FileType::Fifo => "a FIFO, not a regular file",
        FileType::Socket => "a socket, not a regular file",
        FileType::CharacterDevice => "a character device, not a regular file",
        FileType::BlockDevice => "a block device, not a regular file",
        FileType::Directory => "a directory, not a regular file",
        _ => "not a regular file",
    };
    Ok(Some(Error::Parse {
        path: path.to_path_buf(),
        source: ParseError::new("file", "", reason),
    }))
}

/// Reads an attribute as text, trimmed of surrounding whitespace and NULs (`\n\0` ends CPU lists on
/// some arm64 kernels). At most [`MAX_ATTRIBUTE_BYTES`] are read; anything longer is an error rather
/// than a silent truncation. Never read through a link as the last component (`O_NOFOLLOW`: no kernel
/// attribute is a link; one in a tree points wherever its maker wanted, a secret outside the root).
pub fn read_trimmed(path: &Path) -> Result<String> {
    read_attribute(open_looked_at(path, false), path)
}

/// The one way an attribute is read, once opened (by [`read_trimmed`] or inside a root by
/// [`super::tree::Tree`]): `open`, one `read`, `close`.
///
/// A sysfs attribute is at most a page and comes in one read, and a short read of a regular file is
/// its end; so the common case costs one `read(2)` and no `fstat(2)`. Only a read that is empty, fails
/// or fills the page (the odd files) asks `fstat` what the file is: a FIFO (empty: `O_NONBLOCK`), a
/// directory (`EISDIR`) or a device (a full page) is refused, naming the path, and a regular file that
/// fills the page is read on to [`MAX_ATTRIBUTE_BYTES`]. A non-regular file that answers a short read
/// (a FIFO with a writer) is taken as its text: bounded, and it cannot block.
pub(crate) fn read_attribute(opened_fd: io::Result<OwnedFd>, path: &Path) -> Result<String> {
    let fd = opened(opened_fd, path)?;
    let mut page = [0u8; 4096];
    let first = loop {
        match rustix::io::read(&fd, &mut page) {
            Ok(n) => break Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => break Err(e),
        }
    };
    let filled = match first {
        Ok(n) if n > 0 && n < page.len() => {
            return text_of(page.get(..n).unwrap_or_default(), path);
        }
        Ok(n) => n,
        Err(e) => {
            return Err(not_regular(&fd, path)?.unwrap_or_else(|| io_error("read", path, e.into())));
        }
    };
    if let Some(error) = not_regular(&fd, path)? {
        return Err(error);
    }
    let mut bytes = page.get(..filled).unwrap_or_default().to_vec();
    if filled == page.len() {
        fs::File::from(fd)
            .take(MAX_ATTRIBUTE_BYTES + 1 - filled as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error("read", path, e))?;
    }
    text_of(&bytes, path)
}

/// The trimmed text of an attribute's bytes.
fn text_of(bytes: &[u8], path: &Path) -> Result<String> {
    if bytes.len() as u64 > MAX_ATTRIBUTE_BYTES {
        let source = ParseError::new("attribute", "", "longer than 64 KiB");
        return Err(Error::Parse {
            path: path.to_path_buf(),
            source,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(hal::text::trim_kernel_text(text).to_owned()),
        Err(_) => Err(Error::Parse {
            path: path.to_path_buf(),
            source: ParseError::new("attribute", "", "not UTF-8 text"),
        }),
    }
}

/// Like [`read_trimmed`], but a missing file is `Ok(None)`.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    missing_is_none(read_trimmed(path))
}

pub(crate) fn missing_is_none(read: Result<String>) -> Result<Option<String>> {
    match read {
        Ok(text) => Ok(Some(text)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Like [`missing_is_none`], and also `None` for an attribute the kernel has but cannot show for
/// this object: `EINVAL` or `ENODATA` on read (`gid_attrs/ndevs/<n>` of an InfiniBand port, which has
/// no netdev; an empty GID entry).
pub(crate) fn unshown_is_none(read: Result<String>) -> Result<Option<String>> {
    match missing_is_none(read) {
        Err(Error::Io { source, .. })
            if [rustix::io::Errno::INVAL, rustix::io::Errno::NODATA]
                .iter()
                .any(|errno| source.raw_os_error() == Some(errno.raw_os_error())) =>
        {
            Ok(None)
        }
        other => other,
    }
}

pub(crate) fn parsed<T>(
    text: Option<String>,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>> {
    match text {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses a topology id where the kernel uses -1 for "not supported" (`die_id`, `physical_package_id`).
pub fn parse_topology_id(text: &str) -> Result<Option<u32>, ParseError> {
    match text.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| ParseError::new("topology id", text, "out of range")),
        Err(_) => Err(ParseError::new(
            "topology id",
            text,
            "not a decimal integer",
        )),
    }
}

/// Parses a non-negative decimal integer.
pub fn parse_u32(text: &str) -> Result<u32, ParseError> {
    text.parse()
        .map_err(|_| ParseError::new("unsigned integer", text, "not a decimal integer below 2^32"))
}

/// The numbers of the names `<prefix><decimal>` below `max`, sorted.
pub(crate) fn numbered_names<'a>(
    names: impl Iterator<Item = &'a str>,
    prefix: &str,
    max: u32,
) -> Vec<u32> {
    let mut ids = Vec::new();
    for name in names {
        let Some(number) = name.strip_prefix(prefix) else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(id) = number.parse::<u32>()
            && id < max
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids
}

/// Collects per-file problems while discovery goes on.
#[derive(Default)]
pub(crate) struct ErrorLog(pub(crate) Vec<InventoryError>);

impl ErrorLog {
    pub(crate) fn keep<T>(&mut self, result: Result<Option<T>>) -> Option<T> {
        match result {
            Ok(value) => value,
            Err(e) => {
                self.0.push((&e).into());
                None
            }
        }
    }

    pub(crate) fn note(&mut self, path: &Path, error: String) {
        self.0.push(InventoryError {
            path: path.display().to_string(),
            error,
            kind: Some(hal::ErrorKind::Malformed),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hal::ErrorKind;

    #[test]
    fn reads_are_trimmed_bounded_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        fs::write(&ok, "  0-3\n").unwrap();
        assert_eq!(read_trimmed(&ok).unwrap(), "0-3");
        let nul = dir.path().join("nul");
        fs::write(&nul, "0-127\n\0").unwrap();
        assert_eq!(read_trimmed(&nul).unwrap(), "0-127");

        let big = dir.path().join("big");
        fs::write(&big, vec![b'1'; 70_000]).unwrap();
        let err = read_trimmed(&big).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed);
        assert!(err.to_string().contains("big"), "{err}");

        let binary = dir.path().join("bin");
        fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert!(
            read_trimmed(&binary)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );

        assert_eq!(read_optional(&dir.path().join("missing")).unwrap(), None);
        let empty = dir.path().join("empty");
        fs::write(&empty, "\n").unwrap();
        assert_eq!(read_optional(&empty).unwrap().as_deref(), Some(""));
        let err = parsed(Some(read_trimmed(&ok).unwrap()), &ok, parse_u32).unwrap_err();
        assert!(
            err.to_string().starts_with(&ok.display().to_string()),
            "{err}"
        );
    }

    /// A page exactly (the odd case: `fstat`, then read on), a page and one byte, and the bound.
    #[test]
    fn reads_of_a_page_and_more_are_whole() {
        let dir = tempfile::tempdir().unwrap();
        for len in [4095, 4096, 4097, 8192, 65536] {
            let path = dir.path().join(format!("len{len}"));
            fs::write(&path, vec![b'7'; len]).unwrap();
            assert_eq!(read_trimmed(&path).unwrap().len(), len, "{len} bytes");
        }
        let path = dir.path().join("over");
        fs::write(&path, vec![b'7'; 65537]).unwrap();
        assert!(read_trimmed(&path).is_err());
    }

    /// The odd files are refused by what they are, whichever way their read went: a FIFO without a
    /// writer (an empty read), a directory (`EISDIR`), a device filling the page (`/dev/zero`).
    #[test]
    fn odd_files_are_named_by_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        let err = read_trimmed(&fifo).unwrap_err();
        assert!(
            err.to_string().contains("a FIFO, not a regular file"),
            "{err}"
        );
        let err = read_trimmed(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("a directory, not a regular file"),
            "{err}"
        );
        let err = read_trimmed(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        let err = read_trimmed(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
    }

    /// Nothing but a regular file is opened for reading (opening is enough for a device to act): a
    /// FIFO here, which any user can make; the tree's root test does the same with a device node.
    #[test]
    fn special_files_are_looked_at_not_opened() {
        use crate::sysfs::hostile_tests::opened_during;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pci.ids");
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        let opened = opened_during(&fifo, || {
            let err = open_regular(&fifo).unwrap_err();
            assert!(err.to_string().contains("a FIFO"), "{err}");
            let err = read_trimmed(&fifo).unwrap_err();
            assert!(err.to_string().contains("a FIFO"), "{err}");
        });
        assert!(!opened, "the FIFO was opened");
        // A regular file is opened, also through a link for `open_regular`, and the watch sees it.
        let file = dir.path().join("names");
        fs::write(&file, "8086  Intel Corporation\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(opened_during(&file, || {
            let mut text = String::new();
            open_regular(&link)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "8086  Intel Corporation\n");
        }));
        let err = read_trimmed(&link).unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");
    }

    #[test]
    fn numbered_names_filter_names() {
        let names = [
            "cpu0",
            "cpu10",
            "cpu2",
            "cpufreq",
            "cpuidle",
            "cpu",
            "cpu99999999",
            "cpu+1",
        ];
        assert_eq!(numbered_names(names.into_iter(), "cpu", 65536), [0, 2, 10]);
    }

    #[test]
    fn topology_ids() {
        assert_eq!(parse_topology_id("-1").unwrap(), None);
        assert_eq!(parse_topology_id("60").unwrap(), Some(60));
        assert!(parse_topology_id("-2").is_err());
        assert!(parse_topology_id("").is_err());
    }
}
