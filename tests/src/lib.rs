//! Helpers for the cross-crate tests: the hwloc corpus and its `lstopo` oracle.

pub mod hwloc;
pub mod index;
