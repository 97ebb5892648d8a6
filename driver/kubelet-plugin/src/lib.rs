//! A kubelet-plugin kit for Dynamic Resource Allocation: what every DRA driver's node plugin needs
//! apart from its own devices.
//!
//! - [`grpc`]: plugin registration and the DRA `v1`/`v1beta1` services on their Unix sockets, the
//!   instance lock, and the device health (`DRAResourceHealth`) service;
//! - [`handler`]: the seam a driver implements ([`DraHandler`](handler::DraHandler): prepare,
//!   unprepare, health);
//! - [`checkpoint`]: the checkpoint of prepared claims, one crash-safe file per claim, generic over
//!   the driver's record;
//! - [`cdi`]: the CDI spec writer and validator;
//! - [`client`]: the API client wrapper (timeouts, error kinds), the client from a kubeconfig or
//!   in-cluster, and the API server's version read at start;
//! - [`locks`]: one async lock per key (claim UID, pod sandbox), entries gone once released;
//! - [`metadata`]: device metadata files (KEP-5304) and their CDI mounts;
//! - [`claims`]: a driver's ResourceClaims: read one, write its device status (bound to the claim's
//!   UID, kept going after the kubelet gives up, tried again after a failure);
//! - [`metrics`]: `/metrics` and `/healthz`;
//! - [`publish`]: the ResourceSlice publisher (list + watch, repair of other actors' changes);
//! - [`slices`]: the API server's rules for ResourceSlices (limits, names, a check of a whole pool),
//!   which the publisher applies before anything is sent;
//! - `fake_api` (feature `testing`): an in-memory API server behind `kube::Client`, for tests.

pub mod cdi;
pub mod checkpoint;
pub mod claims;
pub mod client;
#[cfg(any(test, feature = "testing"))]
pub mod fake_api;
pub mod files;
pub mod grpc;
pub mod handler;
pub mod locks;
pub mod metadata;
pub mod metrics;
pub mod publish;
pub mod slices;
