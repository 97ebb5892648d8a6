//! Real implementations of the `hal` traits.
//!
//! * [`sysfs`]: always on. Every backend takes a root directory (`/` on a node, a fixture or a captured
//!   dump anywhere else), so the same code runs on machines and in tests.
//! * [`nvml`] (feature, default), [`level_zero`] and [`verbs`]: vendor libraries that enrich the sysfs
//!   GPUs and RDMA devices; their seams and merges are always built, the real libraries behind features.
//! * `udev` (feature): hotplug uevents.
//! * [`nvidia_gate`]: this process's NVML users against an unbind from the `nvidia` driver (which
//!   would wait in the kernel for them for good).
//! * [`inventory`]: the whole machine in one call, `Inventory::from_sysfs(&SysfsRoot::new("/"), None)`.

pub(crate) mod enrich;
pub mod inventory;
pub mod level_zero;
pub mod nvidia_gate;
#[cfg(feature = "nvml")]
pub mod nvml;
pub mod sysfs;
#[cfg(feature = "udev")]
pub mod udev;
pub mod verbs;

pub use sysfs::SysfsRoot;
pub use sysfs::cpu::SysfsCpuTopology;
pub use sysfs::gpu::SysfsGpu;
pub use sysfs::pci::SysfsPci;
pub use sysfs::rdma::SysfsRdma;
pub use sysfs::sriov::SysfsSriov;
pub use sysfs::write::FileWriter;
