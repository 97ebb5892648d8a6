//! The DRA driver built on the HAL and the `hal-probe` diagnostics it shares its view with.
//!
//! [`inventory`] reads every device family once; [`slices`] turns it into the ResourceSlices the driver
//! publishes; [`probe`] is the report `hal-probe` prints. The kubelet plugin (gRPC, CDI) is built on the
//! same inventory.

pub use dra_kubelet_plugin::client as api;
#[cfg(feature = "explain")]
pub mod explain;
#[cfg(any(test, feature = "fake-api"))]
pub use dra_kubelet_plugin::fake_api;
/// The embedded fixture machines (`hal-mock`) behind `--fixture`, with the `fixture` feature.
#[cfg(feature = "fixture")]
pub use hal_mock as fixtures;
#[cfg(not(feature = "fixture"))]
pub mod fixtures;
pub mod health;
pub mod inventory;
pub mod nri;
pub mod plugin;
pub mod podnet;
pub mod probe;
pub mod publish;
pub mod slices;
pub mod unhealthy;
pub mod yaml;
