//! The kubelet-facing gRPC side of the plugin: the DRA service (`v1.DRAPlugin` and `v1beta1.DRAPlugin`)
//! and the plugin-registration service, each on its Unix socket.
//!
//! The message and service types are generated at build time from `driver/kubelet-plugin/proto/` (protox + tonic),
//! servers for the plugin and clients for tests that play the kubelet. Everything kubelet-facing is
//! here; the claim logic only implements [`DraHandler`](crate::handler::DraHandler).
//!
//! A binary puts the pieces together like this:
//!
//! ```no_run
//! # use std::{path::Path, sync::Arc};
//! # use dra_kubelet_plugin::handler::DraHandler;
//! use dra_kubelet_plugin::grpc::{PluginSockets, RegistrationService, acquire_instance_lock, serve};
//!
//! # async fn run(handler: Arc<dyn DraHandler>) -> Result<(), Box<dyn std::error::Error>> {
//! let sockets = PluginSockets::new(Path::new("/var/lib/kubelet"), "gpu.example.com")?;
//! // Wait for an older instance on this node to exit (rolling update) before touching sockets.
//! let _lock = acquire_instance_lock(sockets.plugin_dir()).await?;
//! let registration = RegistrationService::new(&sockets);
//! let mut status = registration.status();
//! tokio::spawn(async move {
//!     while status.changed().await.is_ok() {
//!         tracing::info!("{}", *status.borrow_and_update());
//!     }
//! });
//! serve(&sockets, handler, None, registration, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

mod authority;
mod dra;
mod health;
mod limits;
mod registration;
mod server;
mod sockets;

pub use authority::{AuthorityFix, MAX_HEADER_BLOCK, MAX_HEADER_LIST};
pub use dra::DraService;
pub use health::{HEALTH_VERSIONS, HealthService};
pub use limits::{ConnectionLimits, Limited};
pub use registration::{PLUGIN_TYPE, RegistrationService, RegistrationState, SUPPORTED_VERSIONS};
pub use server::{serve, serve_with_limits};
pub use sockets::{
    INSTANCE_LOCK_FILE, InstanceLock, MAX_SOCKET_PATH_BYTES, PluginSockets, SocketError,
    acquire_instance_lock,
};

/// A module of code generated from `proto/` (by `build.rs`), exempt from the workspace's lints.
macro_rules! generated {
    ($(#[doc = $doc:literal])* $name:ident, $package:literal) => {
        $(#[doc = $doc])*
        #[allow(
            missing_docs,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            rust_2018_idioms,
            clippy::unwrap_used,
            clippy::expect_used,
            clippy::indexing_slicing,
            clippy::panic
        )]
        pub mod $name {
            tonic::include_proto!($package);
        }
    };
}

generated!(
    /// Generated: the kubelet's DRA API `k8s.io.kubelet.pkg.apis.dra.v1` (messages, `DRAPlugin` server
    /// and client).
    v1,
    "k8s.io.kubelet.pkg.apis.dra.v1"
);
generated!(
    /// Generated: the kubelet's DRA API `k8s.io.kubelet.pkg.apis.dra.v1beta1` (as v1 without
    /// `Device.share_id`).
    v1beta1,
    "k8s.io.kubelet.pkg.apis.dra.v1beta1"
);
generated!(
    /// Generated: the kubelet's plugin-registration API (proto package `pluginregistration`).
    pluginregistration,
    "pluginregistration"
);
generated!(
    /// Generated: the kubelet's DRA resource-health API, proto package `v1alpha1` (Kubernetes 1.34+).
    health_v1alpha1,
    "v1alpha1"
);
generated!(
    /// Generated: the kubelet's DRA resource-health API, proto package `v1` (newer kubelets); the same
    /// messages as `v1alpha1`.
    health_v1,
    "v1"
);
