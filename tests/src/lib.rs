//! Helpers for the cross-crate tests: the hwloc corpus and its `lstopo` oracle, INDEX tables, ttar trees.

pub mod hwloc;
pub mod index;
pub mod k8s_schema;
pub mod ttar;
