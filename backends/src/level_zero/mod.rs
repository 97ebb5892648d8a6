//! [`LevelZeroGpus`]: the sysfs GPUs enriched with what Intel's Level Zero knows (product name, local
//! memory, tiles, execution units), merged by PCI address. The seam and the merge are always built; the
//! real backend is the `level-zero` feature.
//!
//! As with NVML, sysfs decides what exists: a Level Zero device that sysfs does not show is an error
//! entry, not a GPU. The library sits behind [`LevelZeroApi`]: `RealLevelZero` opens the loader
//! (`libze_loader.so.1`) at run time through bindings generated from Debian's `libze-dev` headers
//! (`bindings.rs`, `scripts/gen-level-zero-bindings.sh`); [`FakeLevelZero`] answers with a fixture's
//! recorded answers. Without the loader or a GPU driver, "unavailable" is said once and discovery goes
//! on from sysfs alone.

use std::collections::BTreeMap;

use hal::{
    Discovered, ErrorKind, GpuDevice, GpuInfo, GpuVendor, InventoryError, PciAddress, Result,
};

use crate::enrich::{Unavailable, disagreement, not_in_sysfs};

#[cfg(feature = "level-zero")]
mod real;

#[cfg(feature = "level-zero")]
pub use real::RealLevelZero;

/// The loader a node needs for the real backend.
pub const LOADER: &str = "libze_loader.so.1";

/// What Level Zero says about one GPU (a root device).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZeGpu {
    /// PCI address from `zeDevicePciGetPropertiesExt` (`0000:4d:00.0`).
    pub pci_address: String,
    /// Device name (`Intel(R) Data Center GPU Flex 170`).
    pub name: String,
    /// PCI vendor id from the device's properties.
    pub vendor_id: u32,
    /// PCI device id from the device's properties.
    pub device_id: u32,
    /// Sum of `zeDeviceGetMemoryProperties` sizes, in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Sub-devices (tiles); 0 for a GPU without any.
    #[serde(default)]
    pub sub_devices: u32,
    /// `numSlices`.
    pub slices: u32,
    /// `numSubslicesPerSlice`.
    pub subslices_per_slice: u32,
    /// `numEUsPerSubslice`.
    pub eus_per_subslice: u32,
}

impl ZeGpu {
    /// Execution units: slices × sub-slices per slice × EUs per sub-slice, `None` on overflow or zero.
    pub fn execution_units(&self) -> Option<u32> {
        self.slices
            .checked_mul(self.subslices_per_slice)?
            .checked_mul(self.eus_per_subslice)
            .filter(|n| *n > 0)
    }
}

/// The seam: the Level Zero calls the backend makes, all at once.
pub trait LevelZeroApi: Send + Sync {
    /// Every GPU root device, or why Level Zero cannot be used.
    fn query(&self) -> std::result::Result<Vec<ZeGpu>, String>;
}

/// Answers given in advance (a fixture's), or an error to play a missing loader.
#[derive(Debug, Clone)]
pub struct FakeLevelZero(pub std::result::Result<Vec<ZeGpu>, String>);

impl LevelZeroApi for FakeLevelZero {
    fn query(&self) -> std::result::Result<Vec<ZeGpu>, String> {
        self.0.clone()
    }
}

/// GPUs from another backend (sysfs), enriched by Level Zero.
pub struct LevelZeroGpus<G> {
    base: G,
    api: Box<dyn LevelZeroApi>,
    unavailable: Unavailable,
}

impl<G: GpuDevice> LevelZeroGpus<G> {
    /// Enriches `base` with `api`.
    pub fn new(base: G, api: Box<dyn LevelZeroApi>) -> Self {
        LevelZeroGpus {
            base,
            api,
            unavailable: Unavailable::default(),
        }
    }
}

impl<G: GpuDevice> GpuDevice for LevelZeroGpus<G> {
    fn gpus(&self) -> Result<Discovered<GpuInfo>> {
        let mut found = self.base.gpus()?;
        // Level Zero is asked only on machines with an Intel GPU.
        if !found.items.iter().any(|g| g.vendor == GpuVendor::Intel) {
            return Ok(found);
        }
        match self.api.query() {
            Ok(gpus) => merge(&mut found, &gpus),
            Err(why) => {
                let fallback = "Intel GPUs are described from sysfs alone";
                found
                    .errors
                    .extend(self.unavailable.report(LOADER, &why, fallback));
            }
        }
        Ok(found)
    }
}

/// Fills in what Level Zero knows, by PCI address. Disagreements and devices sysfs does not show become
/// errors.
pub fn merge(found: &mut Discovered<GpuInfo>, gpus: &[ZeGpu]) {
    let mut by_address: BTreeMap<PciAddress, &ZeGpu> = BTreeMap::new();
    for gpu in gpus {
        match PciAddress::parse(&gpu.pci_address) {
            Ok(address) => {
                by_address.insert(address, gpu);
            }
            Err(e) => found.errors.push(InventoryError {
                path: "level-zero".into(),
                error: format!("Level Zero PCI address {:?}: {e}", gpu.pci_address),
                kind: Some(ErrorKind::Malformed),
            }),
        }
    }
    for gpu in &mut found.items {
        let Some(ze) = by_address.remove(&gpu.pci_address) else {
            continue;
        };
        let path = || format!("level-zero/{}", gpu.pci_address);
        if let Some(ours) = gpu.device_id
            && u32::from(ours) != ze.device_id
        {
            // The function's own config space wins: a device id that differs means the loader's
            // address is wrong, so nothing else of it is used.
            found.errors.push(InventoryError {
                path: path(),
                error: format!(
                    "device id: sysfs says {ours:#06x}, Level Zero says {:#06x} at the same address; \
                     Level Zero's answers for it are not used",
                    ze.device_id
                ),
                kind: Some(ErrorKind::Malformed),
            });
            continue;
        }
        if let (Some(ours), Some(theirs)) = (gpu.memory_bytes, ze.memory_bytes)
            && ours != theirs
        {
            let (ours, theirs) = (ours.to_string(), theirs.to_string());
            found.errors.push(disagreement(
                path(),
                "local memory bytes",
                &ours,
                &theirs,
                "Level Zero",
            ));
        }
        if !ze.name.is_empty() {
            gpu.product = Some(ze.name.clone());
        }
        gpu.memory_bytes = ze.memory_bytes.or(gpu.memory_bytes);
        gpu.tiles = Some(ze.sub_devices.max(1));
        gpu.execution_units = ze.execution_units();
    }
    for address in by_address.keys() {
        let what = format!("a GPU at {address}");
        found.errors.push(not_in_sysfs(
            format!("level-zero/{address}"),
            "Level Zero",
            &what,
        ));
    }
}

#[cfg(feature = "level-zero")]
#[allow(
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_code,
    unsafe_op_in_unsafe_fn,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
mod bindings;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
