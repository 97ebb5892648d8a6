//! [`SriovState`] and the [`SriovPf`] trait.

use crate::error::Result;
use crate::inventory::Discovered;
use crate::pci::PciAddress;

/// One enabled virtual function of a PF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtualFunction {
    /// VF index (`virtfnN`).
    pub index: u32,
    /// The VF's address.
    pub address: PciAddress,
}

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SriovState {
    /// The physical function.
    pub pf: PciAddress,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
    /// `sriov_drivers_autoprobe`: whether new VFs get a driver bound automatically.
    pub drivers_autoprobe: Option<bool>,
    /// `sriov_vf_device`: the device id the VFs will have.
    pub vf_device_id: Option<u16>,
    /// The enabled VFs, by index.
    pub vfs: Vec<VirtualFunction>,
}

/// Reads and changes SR-IOV state and driver binding.
pub trait SriovPf: Send + Sync {
    /// The PFs with SR-IOV capability, sorted by address.
    fn sriov_pfs(&self) -> Result<Discovered<SriovState>>;

    /// Sets the number of VFs of `pf`. The kernel refuses to change a non-zero count directly, so a
    /// change goes through 0 first.
    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()>;

    /// Binds `function` to `driver` (`driver_override`, `unbind`, `drivers_probe`).
    fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()>;

    /// Gives `function` back from `driver`, leaving it without one: its `driver_override` cleared
    /// when it names `driver` (or a later probe would bind it again), and `driver` unbound when bound.
    /// A function on another driver (bound by someone else since) is left as it is. How a function
    /// that had no driver before [`SriovPf::bind_driver`] bound `driver` is given back.
    fn unbind_driver(&self, function: PciAddress, driver: &str) -> Result<()>;

    /// Gives `function` back after [`SriovPf::bind_driver`] bound it to `driver`: to `original`
    /// (through [`SriovPf::bind_driver`]; `None`: left without a driver, through
    /// [`SriovPf::unbind_driver`]), then its `driver_override` as it was before the bind
    /// (`original_override`; `None`: unset, which the kernel shows as `(null)`). The override is
    /// put back only while the function is on `original` (or on none, as it had none) and its
    /// override is one the bind or the give-back left (naming `driver` or `original`; unset, when
    /// `original` is none): a function or an override someone else changed since is left as it
    /// is. An `original_override` that [`check_driver_override`] refuses is refused before anything
    /// changes.
    ///
    /// The provided implementation gives the driver back only, leaving the override as those two
    /// leave it (naming `original`, or unset); the sysfs backend puts the override back too.
    fn restore_driver(
        &self,
        function: PciAddress,
        driver: &str,
        original: Option<&str>,
        original_override: Option<&str>,
    ) -> Result<()> {
        if let Some(value) = original_override {
            check_driver_override(value)?;
        }
        match original {
            Some(original) => self.bind_driver(function, original),
            None => self.unbind_driver(function, driver),
        }
    }

    /// One PF's state.
    fn sriov_state(&self, pf: PciAddress) -> Result<Option<SriovState>> {
        Ok(self.sriov_pfs()?.items.into_iter().find(|s| s.pf == pf))
    }
}

/// The longest `driver_override` put back: the kernel refuses a write of `PAGE_SIZE - 1` bytes or
/// more (`driver_set_override`, `drivers/base/driver.c`), 4094 bytes with 4 KiB pages (the
/// smallest).
pub const MAX_DRIVER_OVERRIDE: usize = 4094;

/// Whether `value` is a `driver_override` the kernel stores exactly as written, and that reads back
/// as itself: not empty (the kernel takes an empty write, or one starting with a newline, as
/// "clear"), at most [`MAX_DRIVER_OVERRIDE`] bytes, without control characters (the kernel keeps
/// the text up to the first newline or NUL only), without whitespace at either end (sysfs is read
/// trimmed), and not `(null)` (what the kernel shows for an unset override: written, it would bind
/// no driver while it looks unset).
pub fn check_driver_override(value: &str) -> Result<()> {
    let why = if value.is_empty() {
        "empty"
    } else if value.len() > MAX_DRIVER_OVERRIDE {
        "longer than the kernel takes"
    } else if value.chars().any(char::is_control) {
        "has a control character (the kernel keeps it up to a newline or NUL)"
    } else if value.trim() != value {
        "has whitespace at an end"
    } else if value == "(null)" {
        "is what the kernel shows for none"
    } else {
        return Ok(());
    };
    let shown: String = value.chars().take(64).collect();
    Err(crate::error::Error::InvalidInput(format!(
        "driver_override {shown:?}{} {why}: it cannot be put back as it was",
        if shown.len() < value.len() { "..." } else { "" }
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_overrides_the_kernel_keeps_as_written_are_put_back() {
        for good in [
            "vfio-pci",
            "iavf",
            "none",
            "a b",
            &"x".repeat(MAX_DRIVER_OVERRIDE),
        ] {
            check_driver_override(good).unwrap();
        }
        let long = "x".repeat(MAX_DRIVER_OVERRIDE + 1);
        for bad in [
            "",
            "vfio-pci\n",
            "a\nb",
            "a\0b",
            " iavf",
            "iavf ",
            "(null)",
            &long,
        ] {
            let err = check_driver_override(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
        let err = check_driver_override(&long).unwrap_err().to_string();
        assert!(err.len() < 200 && err.contains("longer"), "{err}");
    }
}
