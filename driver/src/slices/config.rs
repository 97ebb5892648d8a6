//! [`SliceConfig`]: what the driver publishes and under which names.

use hal::CpuSet;

use dra_kubelet_plugin::slices::names::{is_dns_subdomain, is_driver_name};

/// Most partitions per GPU: one GPU's group (whole + partitions) must fit a 64-device slice, and
/// Intel's Flex and Max GPUs make at most 63 VFs.
pub const MAX_GPU_PARTITIONS: u32 = 31;

/// The driver name used everywhere by default: ResourceSlices, the attribute domain, the kubelet
/// plugin sockets, CDI kinds.
pub const DEFAULT_DRIVER_NAME: &str = "hal.dra.dev";

/// Compatibility domains are few: each adds one attribute to every device.
pub const MAX_COMPAT_DOMAINS: usize = 4;

/// How CPUs are published (the two modes of dra-driver-cpu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuMode {
    /// One device per allocatable CPU, with its topology.
    Individual,
    /// One shareable device per NUMA node with consumable capacity `cpu`.
    #[default]
    GroupedByNuma,
    /// One shareable device per socket with consumable capacity `cpu`.
    GroupedBySocket,
}

/// Where shared counter sets go: Kubernetes 1.34 wants them in the slice of the devices that consume
/// them; 1.35 and later want them in slices of their own (no devices there), referenced pool-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterLayout {
    /// Kubernetes 1.34: sets in the slice of their devices.
    #[default]
    SameSlice,
    /// Kubernetes 1.35 and later: sets in slices of their own, at most 8 per slice.
    OwnSlice,
}

/// Which device families are published. A family off is never published, so the driver can run
/// beside a vendor's driver for that family without publishing a device twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// GPUs (NVIDIA, Intel, AMD).
    pub gpus: bool,
    /// Network functions (PFs and VFs, with or without RDMA) and IB-only RDMA functions.
    pub nics: bool,
    /// CPUs.
    pub cpus: bool,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            gpus: true,
            nics: true,
            cpus: true,
        }
    }
}

/// Everything that decides the slices besides the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceConfig {
    /// `spec.driver` and the domain of unqualified attribute names.
    pub driver_name: String,
    /// The node: `spec.nodeName` and the pool name.
    pub node_name: String,
    /// Families to publish.
    pub families: Families,
    /// How CPUs are published.
    pub cpu_mode: CpuMode,
    /// CPUs never published nor allocated (the kubelet's reserved CPUs).
    pub reserved_cpus: CpuSet,
    /// Other drivers' domains that also get `<domain>/numaNode` (e.g. `dra.net`), so claims can
    /// `matchAttribute` across drivers.
    pub compat_domains: Vec<String>,
    /// SR-IOV partitions published per Intel GPU that can make that many VFs (0: none); see
    /// the `partitions` module.
    pub gpu_partitions: u32,
    /// Publish each CPU group's real-time bandwidth as an `rt-<group>` device (grouped CPU modes only).
    pub rt_bandwidth: bool,
    /// Where shared counter sets (GPU partitions) are published.
    pub counter_layout: CounterLayout,
    /// Whether the API server accepts the informational taint effect `None` (Kubernetes 1.35 and
    /// later): degraded devices (a link down) are tainted with it; without it they get no taint and
    /// are reported through the kubelet's health stream only (`health`).
    pub informational_taints: bool,
}

impl SliceConfig {
    /// The defaults for `node_name`: every family, CPUs grouped by NUMA node, no reserved CPUs, `dra.net`
    /// as the compatibility domain (dranet, dra-driver-cpu and the SR-IOV driver publish it).
    pub fn new(node_name: &str) -> Self {
        SliceConfig {
            driver_name: DEFAULT_DRIVER_NAME.to_owned(),
            node_name: node_name.to_owned(),
            families: Families::default(),
            cpu_mode: CpuMode::default(),
            reserved_cpus: CpuSet::new(),
            compat_domains: vec!["dra.net".to_owned()],
            gpu_partitions: 0,
            rt_bandwidth: false,
            counter_layout: CounterLayout::SameSlice,
            informational_taints: false,
        }
    }

    /// Checks the names and limits: a bad driver name, node name or domain is an error naming it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_driver_name(&self.driver_name) {
            return Err(ConfigError::DriverName(self.driver_name.clone()));
        }
        if !is_dns_subdomain(&self.node_name, 253) {
            return Err(ConfigError::NodeName(self.node_name.clone()));
        }
        if self.compat_domains.len() > MAX_COMPAT_DOMAINS {
            return Err(ConfigError::TooMany {
                field: "compatibility domains",
                count: self.compat_domains.len(),
                max: MAX_COMPAT_DOMAINS,
            });
        }
        if self.gpu_partitions > MAX_GPU_PARTITIONS {
            return Err(ConfigError::TooMany {
                field: "GPU partitions",
                count: usize::try_from(self.gpu_partitions).unwrap_or(usize::MAX),
                max: MAX_GPU_PARTITIONS as usize,
            });
        }
        if self.rt_bandwidth && self.cpu_mode == CpuMode::Individual {
            return Err(ConfigError::RtBandwidthPerCpu);
        }
        for domain in &self.compat_domains {
            if !is_driver_name(domain) || domain == &self.driver_name {
                return Err(ConfigError::CompatDomain(domain.clone()));
            }
        }
        Ok(())
    }
}

/// Why a [`SliceConfig`] (or the flags it comes from) is refused; the message names the flag's field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The driver name is not a DNS subdomain of at most 63 characters.
    #[error(
        "driver name {0:?}: must be a DNS subdomain of at most 63 characters (e.g. {DEFAULT_DRIVER_NAME})"
    )]
    DriverName(String),
    /// The node name is not a DNS subdomain.
    #[error("node name {0:?}: must be a DNS subdomain (lower case, at most 253 characters)")]
    NodeName(String),
    /// A compatibility domain is not a DNS subdomain, or is the driver name.
    #[error("compatibility domain {0:?}: must be a DNS subdomain other than the driver name")]
    CompatDomain(String),
    /// More of something than a slice can carry.
    #[error("{count} {field}: at most {max}")]
    TooMany {
        /// What (`compatibility domains`, `GPU partitions`).
        field: &'static str,
        /// How many were asked for.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// `--rt-bandwidth` with individual CPUs.
    #[error("RT bandwidth is published per CPU group: use it with --cpu-mode numa or socket")]
    RtBandwidthPerCpu,
    /// A flag's value does not parse (`--reserved-cpus`).
    #[error("{flag}: {source}")]
    Parse {
        /// The flag.
        flag: &'static str,
        /// Why.
        #[source]
        source: hal::ParseError,
    },
}

impl ConfigError {
    /// Always [`hal::ErrorKind::InvalidInput`]: the operator's flags, not the machine, are wrong.
    pub fn kind(&self) -> hal::ErrorKind {
        hal::ErrorKind::InvalidInput
    }
}
