//! Errors of pod networking, each with a kind.

/// What kind of [`NetError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// The claim's network configuration is invalid (names the field).
    Config,
    /// A network namespace could not be opened or joined.
    Namespace,
    /// The netlink socket failed, or the kernel refused a request.
    Netlink,
    /// The interface to move is not where it should be.
    NotFound,
    /// The interface belongs to the node's own network.
    Protected,
    /// Saved state could not be read or written.
    State,
}

/// A pod networking failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NetError {
    kind: NetErrorKind,
    message: String,
    /// The errno the kernel answered, when it did.
    pub errno: Option<i32>,
}

impl NetError {
    /// An error of `kind`.
    pub fn new(kind: NetErrorKind, message: &str) -> NetError {
        NetError {
            kind,
            message: message.to_owned(),
            errno: None,
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(kind: NetErrorKind, what: &str, e: rustix::io::Errno) -> NetError {
        NetError {
            kind,
            message: format!("{what}: {e}"),
            errno: Some(e.raw_os_error()),
        }
    }

    /// The kernel refused `what` with `errno`.
    pub fn errno(what: &str, errno: i32) -> NetError {
        let text = std::io::Error::from_raw_os_error(errno);
        NetError {
            kind: NetErrorKind::Netlink,
            message: format!("{what}: {text}"),
            errno: Some(errno),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> NetErrorKind {
        self.kind
    }
}
