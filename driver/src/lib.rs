//! The DRA driver built on the HAL and the `hal-probe` diagnostics it shares its view with.
//!
//! Today this crate holds [`probe`], the report `hal-probe` prints. The kubelet plugin (ResourceSlices,
//! gRPC, CDI) is built on the same inventory in later steps.

pub mod probe;
