//! The DRA driver built on the HAL.
//!
//! [`inventory`] reads every device family once; [`slices`] turns it into the ResourceSlices the driver
//! publishes. The kubelet plugin (gRPC, CDI) is built on the same inventory, and so is `hal-probe` (a
//! crate of its own, `driver/hal-probe`: its report, picture and explain are not in this library).

pub use dra_kubelet_plugin::client as api;
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
pub mod publish;
pub mod slices;
pub mod unhealthy;
