//! This driver's side of the kubelet-plugin kit's ResourceSlice publisher
//! ([`dra_kubelet_plugin::publish`]): the pool is the inventory's slices ([`crate::slices::build_slices`]),
//! under the configured node and driver names ([`publisher`]); the kit checks them against the API
//! server's rules before anything is sent.

pub use dra_kubelet_plugin::publish::{PublishError, PublishReport, Publisher, publish_loop};

use crate::slices::SliceConfig;

/// A publisher of `config`'s node and driver.
pub fn publisher(client: kube::Client, config: &SliceConfig) -> Publisher {
    Publisher::new(client, &config.node_name, &config.driver_name)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
