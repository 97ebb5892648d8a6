//! Discovery results: what was found, and what could not be read.
//!
//! Partial inventories beat failed inventories: one unreadable device yields an [`InventoryError`]
//! naming its file, and discovery goes on.

use crate::error::{Error, ErrorKind};

/// A problem met during discovery that degraded part of the result but not all of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryError {
    /// The file or directory concerned.
    pub path: String,
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs.
    #[serde(skip)]
    pub kind: Option<ErrorKind>,
}

impl From<&Error> for InventoryError {
    fn from(error: &Error) -> Self {
        InventoryError {
            path: error
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            error: error.to_string(),
            kind: Some(error.kind()),
        }
    }
}

/// Items found by a discovery pass, with the problems that left parts of the machine out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discovered<T> {
    /// What was found, sorted by the family's natural key (address, name).
    pub items: Vec<T>,
    /// What could not be read.
    pub errors: Vec<InventoryError>,
}

impl<T> Default for Discovered<T> {
    fn default() -> Self {
        Discovered {
            items: Vec::new(),
            errors: Vec::new(),
        }
    }
}
