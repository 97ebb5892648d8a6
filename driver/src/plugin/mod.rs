//! The kubelet plugin: registration and DRA gRPC services on Unix sockets, claim preparation with CDI,
//! and a crash-safe checkpoint.

pub mod api;
pub mod app;
pub mod cdi;
pub mod checkpoint;
pub mod claims;
pub mod cpus;
pub mod fixture_tree;
pub mod grpc;
pub mod metrics;
pub mod partitions;
pub mod prepare;
pub mod provision;
pub mod rt;
