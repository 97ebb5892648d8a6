//! [`AttributeWriter`]: how backends write sysfs attributes.
//!
//! On a node the writer is a plain write to the file (the `backends` crate's `FileWriter`) and the
//! kernel reacts: `sriov_numvfs` creates VFs, `drivers_probe` binds a driver. In tests the writer is
//! `hal-mock`'s emulated kernel, which makes the same changes to a fixture tree, so the backend code
//! under test is the code that runs on nodes.

use std::io;
use std::path::Path;

/// Writes one value to one sysfs attribute, as `echo value > path` would.
pub trait AttributeWriter: Send + Sync {
    /// Writes `value` to the existing attribute at `path`. The error is what the kernel answered
    /// (`EBUSY`, `EINVAL`, `ENODEV`, ...).
    fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()>;
}
