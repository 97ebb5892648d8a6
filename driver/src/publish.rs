//! This driver's side of the kubelet-plugin kit's ResourceSlice publisher
//! ([`dra_kubelet_plugin::publish`]): the pool is the inventory's slices ([`crate::slices::build_slices`]),
//! under the configured node and driver names ([`publisher`]); the kit checks them against the API
//! server's rules before anything is sent.

pub use dra_kubelet_plugin::publish::{PublishError, PublishReport, Publisher, publish_loop};

use crate::slices::{CounterLayout, SliceConfig};
use dra_kubelet_plugin::slices::KubeVersion;

/// A publisher of `config`'s node and driver, checking the slices for the Kubernetes version they
/// are laid out for ([`kube_version`]).
pub fn publisher(client: kube::Client, config: &SliceConfig) -> Publisher {
    Publisher::new(client, &config.node_name, &config.driver_name)
        .with_kube_version(kube_version(config))
}

/// The Kubernetes version `config`'s slices are laid out for, as the plugin picks the counter layout
/// and the taint effects from the API server's version: 1.35 for counter sets in slices of their own
/// or the taint effect `None`, else 1.34.
pub fn kube_version(config: &SliceConfig) -> KubeVersion {
    match config.counter_layout == CounterLayout::OwnSlice || config.informational_taints {
        true => KubeVersion::V1_35,
        false => KubeVersion::V1_34,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
