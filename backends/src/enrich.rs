//! What the vendor-library backends (NVML, Level Zero, verbs) share: a library that cannot be used is
//! said once per backend value, as an error entry naming it, and discovery goes on from sysfs alone.

use std::sync::atomic::{AtomicBool, Ordering};

use hal::{ErrorKind, InventoryError};

/// Remembers whether a library's absence has been reported.
#[derive(Debug, Default)]
pub(crate) struct Unavailable(AtomicBool);

impl Unavailable {
    /// The first time: an error naming `library` and why it cannot be used; then nothing.
    pub(crate) fn report(
        &self,
        library: &str,
        why: &str,
        fallback: &str,
    ) -> Option<InventoryError> {
        (!self.0.swap(true, Ordering::Relaxed)).then(|| InventoryError {
            path: library.into(),
            error: format!("{why}; {fallback}"),
            kind: Some(ErrorKind::Unsupported),
        })
    }
}

/// Whose value a disagreement keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// sysfs's (what the kernel works by).
    Sysfs,
    /// The library's.
    Library,
}

/// An error entry for a disagreement between sysfs and `library`, saying whose value is used.
pub(crate) fn disagreement(
    path: String,
    what: &str,
    ours: impl std::fmt::Display,
    theirs: impl std::fmt::Display,
    library: &str,
    kept: Kept,
) -> InventoryError {
    let used = match kept {
        Kept::Sysfs => "sysfs",
        Kept::Library => library,
    };
    InventoryError {
        path,
        error: format!("{what}: sysfs says {ours}, {library} says {theirs}; {used}'s is used"),
        kind: Some(ErrorKind::Malformed),
    }
}

/// An error entry for a device a library reports that sysfs does not show: sysfs decides what exists.
pub(crate) fn not_in_sysfs(path: String, library: &str, what: &str) -> InventoryError {
    InventoryError {
        path,
        error: format!("{library} reports {what} that sysfs does not show; left out"),
        kind: Some(ErrorKind::NotFound),
    }
}
