//! The NRI plugin (the Node Resource Interface of containerd 1.7+ and CRI-O 1.26+): pins containers
//! that carry a claim's cpuset to it and confines every other container to the shared CPU pool.
//!
//! - [`wire`]: the mux and ttrpc framing on the runtime's socket;
//! - [`endpoint`]: calls and answers over it, for either side;
//! - [`policy`]: which CPUs each container gets, apart from the protocol;
//! - [`plugin`]: registration and the event handlers (whose answers carry the shared pool's moves);
//! - [`reconnect`]: reconnection, with backoff;
//! - [`stats`]: what it reports on `/metrics`;
//! - `fake_runtime` (feature `fake-nri`): the runtime side, for tests.
//!
//! How to turn NRI on in the runtime, and what a workload sees: `docs/nri.md`.

pub mod endpoint;
#[cfg(any(test, feature = "fake-nri"))]
pub mod fake_runtime;
pub mod plugin;
pub mod policy;
pub mod reconnect;
pub mod stats;
pub mod wire;

/// Generated message types.
pub mod proto {
    /// NRI's messages (`nri.pkg.api.v1alpha1`, the subset this plugin uses).
    #[allow(
        missing_docs,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rust_2018_idioms
    )]
    #[allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    pub mod api {
        tonic::include_proto!("nri.pkg.api.v1alpha1");
    }

    /// ttrpc's request and response envelopes.
    #[allow(
        missing_docs,
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        rust_2018_idioms
    )]
    #[allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    pub mod ttrpc {
        tonic::include_proto!("ttrpc");
    }
}

impl proto::api::LinuxResources {
    /// The cpuset (`cpu.cpus`, a cpulist); empty when not set.
    pub fn cpus(&self) -> &str {
        self.cpu.as_ref().map_or("", |c| c.cpus.as_str())
    }
}

impl proto::api::Container {
    /// The container's cpuset; empty when not set.
    pub fn cpus(&self) -> &str {
        self.linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map_or("", proto::api::LinuxResources::cpus)
    }
}

impl proto::api::ContainerUpdate {
    /// The cpuset the update sets; empty when it sets none.
    pub fn cpus(&self) -> &str {
        self.linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map_or("", proto::api::LinuxResources::cpus)
    }
}
