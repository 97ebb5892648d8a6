//! An NRI kit (the Node Resource Interface of containerd 1.7+ and CRI-O 1.26+): the protocol a
//! plugin speaks on the runtime's socket, apart from any policy.
//!
//! - [`wire`]: the mux and ttrpc framing on the runtime's socket;
//! - [`endpoint`]: calls and answers over it, for either side;
//! - [`reconnect`]: staying connected to the runtime, with backoff;
//! - [`service`]: the service names and event numbers of NRI's API;
//! - [`stats`]: what a plugin reports on `/metrics`;
//! - [`stub`]: a plugin trait shaped like NRI's Go stub, and the registration and dispatch that serve
//!   it over one connection;
//! - `fake_runtime` (feature `testing`): the runtime side, for tests.
//!
//! The DRA driver's CPU-pinning plugin (`driver::nri`) is a [`stub::Plugin`].

pub mod endpoint;
#[cfg(any(test, feature = "testing"))]
pub mod fake_runtime;
pub mod reconnect;
pub mod service;
pub mod stats;
pub mod stub;
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
