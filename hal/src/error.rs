//! Errors with a [`ErrorKind`] the caller can branch on.

use std::io;
use std::path::PathBuf;

/// What went wrong, coarsely: the part of an error a driver branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file, device or object does not exist.
    NotFound,
    /// The kernel or the filesystem refused access.
    PermissionDenied,
    /// The machine, kernel or library does not offer this.
    Unsupported,
    /// The resource is in use (e.g. `EBUSY` from a sysfs write).
    Busy,
    /// Input (kernel text, a file, user config) did not have the expected format.
    Malformed,
    /// The caller asked for something invalid.
    InvalidInput,
    /// The process or the system ran out of a resource (`EMFILE`, `ENFILE`, `ENOMEM`, `ENOBUFS`):
    /// the same call may work later, and what it did not read is not known to be absent.
    Exhausted,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    /// Classifies an I/O error.
    pub fn from_io(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            io::ErrorKind::ResourceBusy => ErrorKind::Busy,
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => ErrorKind::Malformed,
            io::ErrorKind::OutOfMemory => ErrorKind::Exhausted,
            _ => match error.raw_os_error() {
                Some(16) => ErrorKind::Busy,                   // EBUSY
                Some(95) | Some(38) => ErrorKind::Unsupported, // EOPNOTSUPP, ENOSYS
                // EMFILE, ENFILE, ENOBUFS (ENOMEM is `OutOfMemory` above)
                Some(24) | Some(23) | Some(105) => ErrorKind::Exhausted,
                _ => ErrorKind::Io,
            },
        }
    }
}

/// A value that did not parse: what it was meant to be, the text, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseError {
    /// What the text should have been (`cpulist`, `PCI address`, ...).
    pub what: &'static str,
    /// The offending text, cut to 64 characters.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl ParseError {
    /// Builds a parse error; `value` is cut to 64 characters so hostile input cannot flood logs.
    pub fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        let value = match value.char_indices().nth(64) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_owned(),
        };
        ParseError {
            what,
            value,
            reason,
        }
    }
}

/// The error type of the HAL and its backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// `read`, `write`, `list` or `resolve`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file held text that did not parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with its contents.
        source: ParseError,
    },
    /// The kernel refused a write (with the errno it gave) at `path`.
    #[error("the kernel refused writing {value:?} to {}: {source}", path.display())]
    Refused {
        /// The attribute written.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// The operation is not available on this machine or build.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller asked for something invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } | Error::Refused { source, .. } => ErrorKind::from_io(source),
            Error::Parse { .. } => ErrorKind::Malformed,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
        }
    }

    /// The file this error is about, where there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. } | Error::Parse { path, .. } | Error::Refused { path, .. } => {
                Some(path)
            }
            _ => None,
        }
    }
}

/// Result alias of the HAL.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_os_error() {
        let e = Error::Io {
            op: "read",
            path: "/x".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "failed to read /x: entity not found");
        let busy = Error::Refused {
            path: "/s".into(),
            value: "4".into(),
            source: io::Error::from_raw_os_error(16),
        };
        assert_eq!(busy.kind(), ErrorKind::Busy);
        assert!(busy.to_string().contains("/s"));
        let p = Error::Parse {
            path: "/p".into(),
            source: ParseError::new("cpulist", "zz", "bad"),
        };
        assert_eq!(p.kind(), ErrorKind::Malformed);
        assert_eq!(p.to_string(), "/p: invalid cpulist \"zz\": bad");
        // Out of a resource (EMFILE, ENFILE, ENOMEM, ENOBUFS): may work later; EIO may not.
        for errno in [24, 23, 12, 105] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(ErrorKind::from_io(&e), ErrorKind::Exhausted, "{errno}");
        }
        let eio = io::Error::from_raw_os_error(5);
        assert_eq!(ErrorKind::from_io(&eio), ErrorKind::Io);
    }

    #[test]
    fn parse_error_value_is_bounded() {
        let long = "é".repeat(500);
        let e = ParseError::new("x", &long, "r");
        assert_eq!(e.value.chars().count(), 67);
    }
}
