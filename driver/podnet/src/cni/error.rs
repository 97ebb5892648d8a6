//! Errors of CNI mode, each with a kind; every message names the object, field or plugin.

/// What kind of [`CniError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniErrorKind {
    /// The NetworkAttachmentDefinition or its config is invalid (names the field).
    Config,
    /// The NetworkAttachmentDefinition, or the plugin binary, does not exist.
    NotFound,
    /// The API server could not be asked.
    Api,
    /// The plugin could not be run, or its output is not CNI.
    Exec,
    /// The plugin ran and answered a CNI error.
    Plugin,
    /// The plugin did not finish in time (it was killed).
    Timeout,
    /// The result cache could not be read or written.
    Cache,
}

/// A CNI-mode failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CniError {
    kind: CniErrorKind,
    message: String,
}

impl CniError {
    /// An error of `kind`.
    pub fn new(kind: CniErrorKind, message: impl Into<String>) -> CniError {
        CniError {
            kind,
            message: message.into(),
        }
    }

    /// A config problem: `field: problem`.
    pub fn config(field: &str, problem: impl std::fmt::Display) -> CniError {
        CniError::new(CniErrorKind::Config, format!("{field}: {problem}"))
    }

    /// The same error with `context: ` before its message.
    pub fn context(self, context: impl std::fmt::Display) -> CniError {
        CniError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> CniErrorKind {
        self.kind
    }
}
