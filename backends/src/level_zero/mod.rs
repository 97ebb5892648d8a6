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

use crate::enrich::{Unavailable, not_in_sysfs};

#[cfg(feature = "level-zero")]
mod real;

#[cfg(feature = "level-zero")]
pub use real::RealLevelZero;

/// The loader a node needs for the real backend.
pub const LOADER: &str = "libze_loader.so.1";

/// What Level Zero says about one root device: a whole GPU, or one tile of it when the runtime exposes
/// tiles as devices (`ZE_FLAT_DEVICE_HIERARCHY=FLAT`, the default of recent runtimes; the tiles of one
/// GPU share its PCI address and are added up by [`merge`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZeGpu {
    /// PCI address from `zeDevicePciGetPropertiesExt` (`0000:4d:00.0`); empty when it could not be read.
    pub pci_address: String,
    /// Device name (`Intel(R) Data Center GPU Flex 170`).
    #[serde(default)]
    pub name: String,
    /// PCI vendor id from the device's properties.
    #[serde(default)]
    pub vendor_id: u32,
    /// PCI device id from the device's properties.
    #[serde(default)]
    pub device_id: u32,
    /// Integrated with the host (`ZE_DEVICE_PROPERTY_FLAG_INTEGRATED`): its memory is the host's.
    #[serde(default)]
    pub integrated: bool,
    /// Sum of `zeDeviceGetMemoryProperties` sizes, in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Sub-devices (tiles); 0 for a device without any.
    #[serde(default)]
    pub sub_devices: u32,
    /// Execution units: `ze_eu_count_ext_t`'s total where the driver gives it, else slices × sub-slices
    /// per slice × EUs per sub-slice (maxima, so an upper bound on cut-down parts).
    #[serde(default)]
    pub execution_units: Option<u32>,
    /// Why this device could not be read, when it could not.
    #[serde(default)]
    pub error: Option<String>,
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

/// Fills in what Level Zero knows, by PCI address: the tiles of one GPU (devices at one address) are
/// added up. Devices that could not be read, device id disagreements and devices sysfs does not show
/// become errors.
pub fn merge(found: &mut Discovered<GpuInfo>, gpus: &[ZeGpu]) {
    let mut by_address: BTreeMap<PciAddress, Vec<&ZeGpu>> = BTreeMap::new();
    // Addresses with a device (a tile) that could not be read: the GPU's sums would be short, so
    // none of Level Zero's answers for it are used.
    let mut incomplete = std::collections::BTreeSet::new();
    for gpu in gpus {
        if let Some(why) = &gpu.error {
            let address = PciAddress::parse(&gpu.pci_address).ok();
            incomplete.extend(address);
            let left_out = match address {
                Some(_) => "; Level Zero's answers for this GPU are not used",
                None => "",
            };
            found.errors.push(InventoryError {
                path: format!("level-zero/{}", gpu.pci_address),
                error: format!("Level Zero could not read a device: {why}{left_out}"),
                kind: Some(ErrorKind::Io),
            });
            continue;
        }
        match PciAddress::parse(&gpu.pci_address) {
            Ok(address) => by_address.entry(address).or_default().push(gpu),
            Err(e) => found.errors.push(InventoryError {
                path: "level-zero".into(),
                error: format!("Level Zero PCI address {:?}: {e}", gpu.pci_address),
                kind: Some(ErrorKind::Malformed),
            }),
        }
    }
    for gpu in &mut found.items {
        let Some(devices) = by_address.remove(&gpu.pci_address) else {
            continue;
        };
        if incomplete.remove(&gpu.pci_address) {
            continue;
        }
        let Some(first) = devices.first() else {
            continue;
        };
        if let Some(ours) = gpu.device_id
            && let Some(theirs) = devices
                .iter()
                .map(|d| d.device_id)
                .find(|d| *d != u32::from(ours))
        {
            // The function's own config space wins: a device id that differs means the loader's
            // address is wrong, so nothing else of it is used.
            found.errors.push(InventoryError {
                path: format!("level-zero/{}", gpu.pci_address),
                error: format!(
                    "device id: sysfs says {ours:#06x}, Level Zero says {theirs:#06x} at the same \
                     address; Level Zero's answers for it are not used"
                ),
                kind: Some(ErrorKind::Malformed),
            });
            continue;
        }
        if !first.name.is_empty() {
            gpu.product = Some(first.name.clone());
        }
        // Tiles: one device with sub-devices (composite hierarchy), or several devices (flat).
        gpu.tiles = Some(match devices.len() {
            1 => first.sub_devices.max(1),
            n => u32::try_from(n).unwrap_or(u32::MAX),
        });
        gpu.execution_units = devices
            .iter()
            .try_fold(0u32, |sum, d| sum.checked_add(d.execution_units?))
            .filter(|n| *n > 0);
        // sysfs's local memory (what the kernel manages) wins over Level Zero's (what the runtime
        // offers); an integrated GPU's memory is the host's, not its own.
        if gpu.memory_bytes.is_none() && !first.integrated {
            gpu.memory_bytes = devices
                .iter()
                .try_fold(0u64, |sum, d| sum.checked_add(d.memory_bytes?));
        }
    }
    for address in by_address.keys().filter(|a| !incomplete.contains(*a)) {
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
