//! The NRI plugin (the Node Resource Interface of containerd 1.7+ and CRI-O 1.26+): pins containers
//! that carry a claim's cpuset to it and confines every other container to the shared CPU pool.
//!
//! - [`wire`]: the mux and ttrpc framing on the runtime's socket;
//! - [`endpoint`]: calls and answers over it, for either side;
//! - [`policy`]: which CPUs each container gets, apart from the protocol;
//! - [`plugin`]: the event handlers, a [`dra_nri::stub::Plugin`] (their answers carry the shared
//!   pool's moves); the kit's stub registers it and dispatches the runtime's calls;
//! - `reconnect` (the kit's [`dra_nri::reconnect`]): reconnection, with backoff;
//! - [`sandbox`]: pod networking on pod sandbox events (CNI mode);
//! - [`stats`]: what it reports on `/metrics`;
//! - `fake_runtime` (feature `fake-nri`): the runtime side, for tests.
//!
//! How to turn NRI on in the runtime, and what a workload sees: `docs/nri.md`.

pub mod plugin;
pub mod policy;
pub mod sandbox;

#[cfg(feature = "fake-nri")]
pub use dra_nri::fake_runtime;
pub use dra_nri::{endpoint, proto, reconnect, stats, wire};
