//! `hal-probe`'s own code, as a library so that its tests and the workspace's corpus tests reach it.
//!
//! [`report`] is the HAL's view of a machine (the table and the JSON `hal-probe` prints); [`draw`] the
//! node as a picture (SVG, PNG with the `png` feature); [`explain`] runs claims through the allocator
//! against the slices this node would publish; [`yaml`] prints slices as YAML that `kubectl` reads back.
//! The inventory and the slices themselves are the driver's ([`driver::inventory`], [`driver::slices`]):
//! `hal-probe` shows what the plugin publishes, from the same code.

pub mod draw;
pub mod explain;
pub mod report;
pub mod yaml;
