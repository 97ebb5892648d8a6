//! The kubelet plugin: registration and DRA gRPC services on Unix sockets, claim preparation with CDI,
//! and a crash-safe checkpoint.

pub mod checkpoint;
pub mod claims;
pub mod cpus;
pub mod partitions;
pub mod prepare;
pub mod provision;
pub mod rt;

pub use dra_kubelet_plugin::{cdi, grpc, handler as api, metrics};
