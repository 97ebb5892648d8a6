//! The sysfs backend: reads `/sys` (or any directory laid out like it).

pub mod attr;
pub mod cpu;
mod numa;

pub use attr::SysfsRoot;
