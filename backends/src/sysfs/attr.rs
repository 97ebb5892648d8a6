//! The one way attributes are read: bounded, trimmed, parsed, with the path attached to every error.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use hal::{Error, InventoryError, ParseError, Result};

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
/// at once and [`regular_file`] refuses it. On regular files `O_NONBLOCK` changes nothing.
pub(crate) fn read_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC
}

/// Opens `path` for reading without blocking and refuses anything that is not a regular file (a FIFO,
/// a socket, a device, a directory), naming the path. Every file the sysfs backend reads is opened
/// this way; this one follows a link as the last component (the pci.ids database is one on Debian:
/// `/usr/share/misc/pci.ids`), attributes do not ([`read_trimmed`]).
pub fn open_regular(path: &Path) -> Result<fs::File> {
    let opened = rustix::fs::open(path, read_flags(), rustix::fs::Mode::empty());
    regular_file(opened.map_err(Into::into), path)
}

/// [`open_regular`] of an attribute: a link as the last component is refused (`O_NOFOLLOW`). No
/// kernel attribute is a link; one in a tree points wherever its maker wanted (a secret outside the
/// root), and is never read.
fn open_attribute(path: &Path) -> Result<fs::File> {
    let flags = read_flags() | rustix::fs::OFlags::NOFOLLOW;
    let opened = rustix::fs::open(path, flags, rustix::fs::Mode::empty());
    regular_file(opened.map_err(Into::into), path)
}

/// Checks what an open returned: an open file must be a regular file (`fstat`).
pub(crate) fn regular_file(
    opened: io::Result<rustix::fd::OwnedFd>,
    path: &Path,
) -> Result<fs::File> {
    use rustix::fs::FileType;
    let fd = match opened {
        Ok(fd) => fd,
        // `O_NOFOLLOW` on a link.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            let source = ParseError::new("file", "", "a symbolic link, not followed");
            let path = path.to_path_buf();
            return Err(Error::Parse { path, source });
        }
        Err(e) => return Err(io_error("read", path, e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error("read", path, e.into()))?;
    let reason = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => return Ok(fs::File::from(fd)),
        FileType::Fifo => "a FIFO, not a regular file",
        FileType::Socket => "a socket, not a regular file",
        FileType::CharacterDevice => "a character device, not a regular file",
        FileType::BlockDevice => "a block device, not a regular file",
        FileType::Directory => "a directory, not a regular file",
        _ => "not a regular file",
    };
    Err(Error::Parse {
        path: path.to_path_buf(),
        source: ParseError::new("file", "", reason),
    })
}

/// Reads an attribute as text, trimmed of surrounding whitespace and NULs (`\n\0` ends CPU lists on
/// some arm64 kernels). At most [`MAX_ATTRIBUTE_BYTES`] are
/// read; anything longer is an error rather than a silent truncation. Only regular files are read
/// ([`open_regular`]), and never through a link as the last component.
pub fn read_trimmed(path: &Path) -> Result<String> {
    read_opened(open_attribute(path), path)
}

/// [`read_trimmed`] of a file already opened (or not) as `path`.
pub(crate) fn read_opened(file: Result<fs::File>, path: &Path) -> Result<String> {
    let mut file = file?;
    // A sysfs attribute is at most a page and comes in one read; a short read of a regular file is
    // its end. So the common case costs one read(2), not the two or more of `read_to_end`.
    let mut page = [0u8; 4096];
    let first = loop {
        match file.read(&mut page) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read", path, e)),
        }
    };
    let mut bytes = page.get(..first).unwrap_or_default().to_vec();
    if first == page.len() {
        file.take(MAX_ATTRIBUTE_BYTES + 1 - first as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error("read", path, e))?;
    }
    if bytes.len() as u64 > MAX_ATTRIBUTE_BYTES {
        let source = ParseError::new("attribute", "", "longer than 64 KiB");
        return Err(Error::Parse {
            path: path.to_path_buf(),
            source,
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(hal::text::trim_kernel_text(&text).to_owned()),
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

/// Reads and parses an attribute; a missing file is `Ok(None)`, bad contents an error naming the file.
pub fn parse_optional<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>> {
    parsed(read_optional(path)?, path, parse)
}

/// Like [`parse_optional`], for single values (ids, levels, sizes): an empty file says nothing, as a
/// missing one does. Write-only and root-only attributes read back empty, and captured trees hold them
/// as empty files. (CPU sets are not read this way: an empty cpulist is a real answer.)
pub fn parse_scalar<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>> {
    parsed(
        read_optional(path)?.filter(|text| !text.is_empty()),
        path,
        parse,
    )
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

/// The names in a directory, or `None` when it cannot be listed (missing: an offline CPU's
/// `topology/`). Listing once and opening only what exists is cheaper than probing for files that
/// old kernels lack.
pub fn entry_names(dir: &Path) -> Option<BTreeSet<String>> {
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
    )
}

/// Lists the entries of `dir` named `<prefix><decimal>` and returns their numbers, sorted.
/// Numbers of `max` or more are skipped.
pub fn numbered_entries(dir: &Path, prefix: &str, max: u32) -> Result<Vec<u32>> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        names.push(entry.file_name());
    }
    Ok(numbered_names(
        names.iter().filter_map(|n| n.to_str()),
        prefix,
        max,
    ))
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
        assert_eq!(parse_scalar(&nul, |t| Ok(t.len())).unwrap(), Some(5));

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
        assert_eq!(parse_scalar(&empty, parse_u32).unwrap(), None);
        assert_eq!(parse_optional(&empty, |t| Ok(t.len())).unwrap(), Some(0));
        let err = parse_optional(&ok, parse_u32).unwrap_err();
        assert!(
            err.to_string().starts_with(&ok.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn numbered_entries_filter_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "cpu0",
            "cpu10",
            "cpu2",
            "cpufreq",
            "cpuidle",
            "cpu",
            "cpu99999999",
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(
            numbered_entries(dir.path(), "cpu", 65536).unwrap(),
            [0, 2, 10]
        );
    }

    #[test]
    fn topology_ids() {
        assert_eq!(parse_topology_id("-1").unwrap(), None);
        assert_eq!(parse_topology_id("60").unwrap(), Some(60));
        assert!(parse_topology_id("-2").is_err());
        assert!(parse_topology_id("").is_err());
    }
}
