//! The sysfs backend: reads `/sys` (or any directory laid out like it).

pub mod attr;
pub mod core_type;
pub mod cpu;
mod cpu_groups;
pub mod gpu;
mod holders;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod hostile_tests;
pub mod in_root;
pub mod link;
pub mod net;
pub mod numa;
pub mod pci;
pub mod pciids;
pub mod rdma;
pub mod sriov;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod symlink_tests;
#[cfg(test)]
#[allow(clippy::expect_used)]
mod test_tree;
pub mod tree;
pub mod write;

pub use attr::SysfsRoot;
