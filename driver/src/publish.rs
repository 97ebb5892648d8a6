//! This driver's side of the kubelet-plugin kit's ResourceSlice publisher
//! ([`dra_kubelet_plugin::publish`]): the pool is the inventory's slices ([`desired`]), checked with
//! the driver's rules of the API server ([`validate_pool`]) before anything is sent ([`publisher`]).

use k8s_openapi::api::resource::v1::ResourceSlice;

pub use dra_kubelet_plugin::publish::{PublishError, PublishReport, Publisher, publish_loop};

use crate::inventory::Inventory;
use crate::slices::validate::validate_pool;
use crate::slices::{SliceConfig, build_slices};

/// A publisher of `config`'s node and driver whose slices must pass [`validate_pool`].
pub fn publisher(client: kube::Client, config: &SliceConfig) -> Publisher {
    Publisher::new(client, &config.node_name, &config.driver_name).with_check(|slices| {
        validate_pool(slices)
            .iter()
            .map(ToString::to_string)
            .collect()
    })
}

/// The slices to publish for `inventory` (the publisher sets their generation).
pub fn desired(inventory: &Inventory, config: &SliceConfig) -> Vec<ResourceSlice> {
    build_slices(inventory, config, 0)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
