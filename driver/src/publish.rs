//! This driver's side of the kubelet-plugin kit's ResourceSlice publisher
//! ([`dra_kubelet_plugin::publish`]): the pool is the inventory's slices ([`crate::slices::build_slices`]), checked with
//! the driver's rules of the API server ([`validate_pool`]) before anything is sent ([`publisher`]).

pub use dra_kubelet_plugin::publish::{PublishError, PublishReport, Publisher, publish_loop};

use crate::slices::SliceConfig;
use crate::slices::validate::validate_pool;

/// A publisher of `config`'s node and driver whose slices must pass [`validate_pool`].
pub fn publisher(client: kube::Client, config: &SliceConfig) -> Publisher {
    Publisher::new(client, &config.node_name, &config.driver_name).with_check(|slices| {
        validate_pool(slices)
            .iter()
            .map(ToString::to_string)
            .collect()
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
