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

    /// One PF's state.
    fn sriov_state(&self, pf: PciAddress) -> Result<Option<SriovState>> {
        Ok(self.sriov_pfs()?.items.into_iter().find(|s| s.pf == pf))
    }
}
