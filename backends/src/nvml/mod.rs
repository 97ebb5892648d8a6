//! [`NvmlGpus`]: the sysfs GPUs enriched with what only NVML knows (architecture, CUDA compute
//! capability, driver and CUDA versions, memory, MIG mode), merged by PCI address.
//!
//! sysfs stays the source of truth for what exists and where it sits: a GPU NVML reports that sysfs
//! does not show is an error entry, not a device. NVML is reached through a small internal seam,
//! [`NvmlApi`]: [`RealNvml`] (nvml-wrapper, `libnvidia-ml.so.1` loaded at run time, so building needs
//! nothing) on nodes, [`FakeNvml`] (answers given by a fixture) in tests. When the library or the
//! driver is missing, the backend says "unavailable" once in the errors and goes on from sysfs alone.

use nvml_wrapper::error::NvmlError;

use hal::{CpuSet, Discovered, ErrorKind, GpuDevice, GpuInfo, InventoryError, PciAddress, Result};
use std::collections::BTreeMap;

use crate::enrich::{Kept, Unavailable, disagreement, not_in_sysfs};

/// What NVML says about one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NvmlGpu {
    /// PCI bus id as NVML prints it (`00000008:06:00.0`, 8-digit domain, upper case).
    pub pci_bus_id: String,
    /// `GPU-...`.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Architecture (`Blackwell`).
    #[serde(default)]
    pub architecture: Option<String>,
    /// CUDA compute capability `major.minor`.
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// `/dev/nvidiaN` minor.
    #[serde(default)]
    pub minor: Option<u32>,
    /// NUMA node NVML reports (Grace: the GPU's own memory node is another).
    #[serde(default)]
    pub numa_node: Option<u32>,
    /// CPUs NVML considers local.
    #[serde(default)]
    pub cpu_affinity: Option<CpuSet>,
    /// MIG mode enabled.
    #[serde(default)]
    pub mig_enabled: Option<bool>,
    /// NVLink fabric clique, `<cluster UUID>.<clique id>` (see [`fabric::clique`]).
    #[serde(default)]
    pub nvlink_clique: Option<String>,
    /// Why the GPU has no clique although it has a fabric (registration not complete, an error).
    #[serde(default)]
    pub fabric_error: Option<String>,
    /// Queries that failed for another reason than "not supported" (`memory: GPU is lost`): the
    /// field is left out, and the failure is an error entry naming the GPU.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// What NVML says about the system.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NvmlSystem {
    /// Kernel driver version (`580.105.08`).
    pub driver_version: String,
    /// CUDA driver API version (`13.0`).
    pub cuda_driver_version: String,
    /// Every GPU NVML could read.
    pub gpus: Vec<NvmlGpu>,
    /// The GPUs NVML could not open or place (`GPU 2: GPU is lost`): one error entry each; the
    /// others are described.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// The seam: the NVML calls the backend makes, all at once.
pub trait NvmlApi: Send + Sync {
    /// The system and its GPUs, or why NVML cannot be used.
    fn query(&self) -> std::result::Result<NvmlSystem, String>;
}

/// Answers given in advance (a fixture's), or an error to play a missing library.
#[derive(Debug, Clone)]
pub struct FakeNvml(pub std::result::Result<NvmlSystem, String>);

impl NvmlApi for FakeNvml {
    fn query(&self) -> std::result::Result<NvmlSystem, String> {
        self.0.clone()
    }
}

/// NVML itself, through nvml-wrapper.
#[derive(Debug, Default)]
pub struct RealNvml;

impl NvmlApi for RealNvml {
    fn query(&self) -> std::result::Result<NvmlSystem, String> {
        // Held until NVML is shut down (`nvml` is dropped first: declared after).
        let _share = crate::nvidia_gate::gate().share(crate::nvidia_gate::SHARE_WAIT)?;
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        let driver_version = nvml.sys_driver_version().map_err(|e| e.to_string())?;
        let cuda = nvml.sys_cuda_driver_version().map_err(|e| e.to_string())?;
        let cuda_driver_version = format!(
            "{}.{}",
            nvml_wrapper::cuda_driver_version_major(cuda),
            nvml_wrapper::cuda_driver_version_minor(cuda)
        );
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        let mut gpus = Vec::new();
        let mut unreadable = Vec::new();
        for index in 0..count {
            // One GPU fallen off the bus (XID 79) must not hide the others.
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(e) => {
                    unreadable.push(format!("GPU {index}: {e}"));
                    continue;
                }
            };
            let pci = match device.pci_info() {
                Ok(pci) => pci,
                Err(e) => {
                    unreadable.push(format!("GPU {index}: its PCI address: {e}"));
                    continue;
                }
            };
            let (nvlink_clique, fabric_error) = match fabric::clique(&nvml, &device) {
                Ok(clique) => (clique, None),
                Err(why) => (None, Some(why)),
            };
            let mut failed = Vec::new();
            let uuid = supported("UUID", device.uuid(), &mut failed).unwrap_or_default();
            let name = supported("name", device.name(), &mut failed).unwrap_or_default();
            let architecture = supported("architecture", device.architecture(), &mut failed)
                .map(|a| a.to_string());
            let compute_capability = supported(
                "compute capability",
                device.cuda_compute_capability(),
                &mut failed,
            )
            .map(|c| format!("{}.{}", c.major, c.minor));
            let memory_mib = supported("memory", device.memory_info(), &mut failed)
                .map(|m| m.total / (1024 * 1024));
            let minor = supported("minor", device.minor_number(), &mut failed);
            let numa_node = supported("NUMA node", device.numa_node_id(), &mut failed);
            let mig_enabled =
                supported("MIG mode", device.mig_mode(), &mut failed).map(|m| m.current == 1);
            gpus.push(NvmlGpu {
                pci_bus_id: pci.bus_id,
                uuid,
                name,
                architecture,
                compute_capability,
                memory_mib,
                minor,
                numa_node,
                cpu_affinity: cpu_affinity(&device),
                mig_enabled,
                nvlink_clique,
                fabric_error,
                failed,
            });
        }
        Ok(NvmlSystem {
            driver_version,
            cuda_driver_version,
            gpus,
            unreadable,
        })
    }
}

/// The value of an NVML query; `None` when the GPU does not support it, and also when it failed,
/// which is added to `failed` (`memory: GPU is lost`).
fn supported<T>(
    what: &str,
    result: std::result::Result<T, NvmlError>,
    failed: &mut Vec<String>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        // Not on this GPU, or not in this driver's library (an older one lacks newer calls), or a
        // value newer than nvml-wrapper knows (an architecture after Blackwell).
        Err(
            NvmlError::NotSupported
            | NvmlError::FunctionNotFound
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::NoData
            | NvmlError::UnexpectedVariant(_),
        ) => None,
        Err(e) => {
            failed.push(format!("{what}: {e}"));
            None
        }
    }
}

/// The CPUs NVML considers local to `device` (`nvmlDeviceGetCpuAffinity`: C `unsigned long` words, CPU 0
/// in the lowest bit of the first).
fn cpu_affinity(device: &nvml_wrapper::Device<'_>) -> Option<CpuSet> {
    // 1024 words: 65536 CPUs on 64-bit machines.
    let words = device.cpu_affinity(1024).ok()?;
    // `c_ulong` is u64 here but u32 on 32-bit machines.
    #[allow(clippy::useless_conversion)]
    let set = cpus_of_mask(
        words.iter().map(|w| u64::from(*w)),
        std::os::raw::c_ulong::BITS,
    );
    (!set.is_empty()).then_some(set)
}

/// The CPUs whose bits are set in `words` of `bits` bits each.
pub fn cpus_of_mask(words: impl Iterator<Item = u64>, bits: u32) -> CpuSet {
    let mut cpus = Vec::new();
    for (index, word) in (0u32..).zip(words) {
        for bit in 0..bits.min(64) {
            if word & (1 << bit) != 0
                && let Some(cpu) = index.checked_mul(bits).and_then(|c| c.checked_add(bit))
            {
                cpus.push(cpu);
            }
        }
    }
    cpus.into_iter().collect()
}

/// GPUs from another backend (sysfs), enriched by NVML.
pub struct NvmlGpus<G> {
    base: G,
    api: Box<dyn NvmlApi>,
    unavailable: Unavailable,
}

impl<G: GpuDevice> NvmlGpus<G> {
    /// Enriches `base` with `api`.
    pub fn new(base: G, api: Box<dyn NvmlApi>) -> Self {
        NvmlGpus {
            base,
            api,
            unavailable: Unavailable::default(),
        }
    }
}

impl<G: GpuDevice> GpuDevice for NvmlGpus<G> {
    fn gpus(&self) -> Result<Discovered<GpuInfo>> {
        let mut found = self.base.gpus()?;
        // NVML has nothing to say about a machine without NVIDIA GPUs: not even "unavailable".
        if !found
            .items
            .iter()
            .any(|g| g.vendor == hal::GpuVendor::Nvidia)
        {
            return Ok(found);
        }
        let system = match self.api.query() {
            Ok(system) => system,
            Err(why) => {
                let fallback = "GPUs are described from sysfs alone";
                found
                    .errors
                    .extend(self.unavailable.report("libnvidia-ml.so.1", &why, fallback));
                return Ok(found);
            }
        };
        merge(&mut found, &system);
        Ok(found)
    }
}

/// Fills in what NVML knows, by PCI address. Disagreements and NVML-only GPUs become errors.
pub fn merge(found: &mut Discovered<GpuInfo>, system: &NvmlSystem) {
    for why in &system.unreadable {
        found.errors.push(InventoryError {
            path: "nvml".into(),
            error: format!("{why}; its NVML facts are left out"),
            kind: Some(ErrorKind::Io),
        });
    }
    let mut by_address: BTreeMap<PciAddress, &NvmlGpu> = BTreeMap::new();
    for gpu in &system.gpus {
        match PciAddress::parse(&gpu.pci_bus_id.to_ascii_lowercase()) {
            Ok(address) => {
                by_address.insert(address, gpu);
            }
            Err(e) => found.errors.push(InventoryError {
                path: "nvml".into(),
                error: format!("NVML bus id {:?}: {e}", gpu.pci_bus_id),
                kind: Some(ErrorKind::Malformed),
            }),
        }
    }
    for gpu in &mut found.items {
        let Some(nvml) = by_address.remove(&gpu.pci_address) else {
            continue;
        };
        let mut disagree = |what: &str, ours: String, theirs: String| {
            let path = format!("nvml/{}", gpu.pci_address);
            found.errors.push(disagreement(
                path,
                what,
                ours,
                theirs,
                "NVML",
                Kept::Library,
            ));
        };
        // An empty UUID is one NVML could not read (in `failed`), not another GPU.
        if let Some(uuid) = gpu
            .uuid
            .as_ref()
            .filter(|u| !nvml.uuid.is_empty() && **u != nvml.uuid)
        {
            disagree("UUID", uuid.clone(), nvml.uuid.clone());
        }
        if let (Some(ours), Some(theirs)) = (gpu.nvidia_minor, nvml.minor)
            && ours != theirs
        {
            disagree("minor", ours.to_string(), theirs.to_string());
        }
        if !nvml.uuid.is_empty() {
            gpu.uuid = Some(nvml.uuid.clone());
        }
        if !nvml.name.is_empty() {
            gpu.product = Some(nvml.name.clone());
        }
        gpu.nvidia_minor = nvml.minor.or(gpu.nvidia_minor);
        if let (Some(ours), Some(theirs)) = (&gpu.local_cpus, &nvml.cpu_affinity)
            && ours != theirs
        {
            // sysfs's is kept: it is what the kernel schedules by.
            let path = format!("nvml/{}", gpu.pci_address);
            found.errors.push(disagreement(
                path,
                "local CPUs",
                ours,
                theirs,
                "NVML",
                Kept::Sysfs,
            ));
        }
        gpu.local_cpus = gpu.local_cpus.take().or_else(|| nvml.cpu_affinity.clone());
        // Not compared: on Grace, NVML may name the GPU memory's own node.
        gpu.numa_node = gpu.numa_node.or(nvml.numa_node.map(hal::NumaNode));
        gpu.architecture = nvml.architecture.clone();
        gpu.nvlink_clique = nvml.nvlink_clique.clone();
        gpu.mig_enabled = nvml.mig_enabled;
        for why in &nvml.failed {
            found.errors.push(InventoryError {
                path: format!("nvml/{}", gpu.pci_address),
                error: format!("NVML query failed: {why}; left out"),
                kind: Some(ErrorKind::Io),
            });
        }
        if let Some(why) = &nvml.fabric_error {
            found.errors.push(InventoryError {
                path: format!("nvml/{}", gpu.pci_address),
                error: format!("NVLink fabric: {why}; published without a clique"),
                kind: Some(ErrorKind::Unsupported),
            });
        }
        gpu.compute_capability = nvml.compute_capability.clone();
        gpu.driver_version = Some(system.driver_version.clone());
        gpu.cuda_driver_version = Some(system.cuda_driver_version.clone());
        if let Some(bytes) = nvml.memory_mib.and_then(|mib| mib.checked_mul(1024 * 1024)) {
            gpu.memory_bytes = Some(bytes);
        }
    }
    for address in by_address.keys() {
        let what = format!("a GPU at {address}");
        found
            .errors
            .push(not_in_sysfs(format!("nvml/{address}"), "NVML", &what));
    }
}

pub mod fabric;
pub mod xid;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
