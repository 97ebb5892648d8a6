//! The command-line flags that decide the slices, shared by `hal-probe slices` and the kubelet plugin,
//! so both publish exactly the same thing for the same flags.

use hal::CpuSet;

use super::config::{
    ConfigError, CounterLayout, CpuMode, DEFAULT_DRIVER_NAME, Families, SliceConfig,
};

/// How CPUs are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuModeArg {
    /// One device per allocatable CPU.
    Individual,
    /// One shareable device per NUMA node, capacity `cpu`.
    Numa,
    /// One shareable device per socket, capacity `cpu`.
    Socket,
}

/// Where shared counter sets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CounterLayoutArg {
    /// In the slice of the devices that consume them (Kubernetes 1.34).
    SameSlice,
    /// In slices of their own (Kubernetes 1.35 and later).
    OwnSlice,
}

/// A device family that can be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyName {
    /// GPUs (NVIDIA, Intel, AMD).
    Gpus,
    /// Network functions and IB-only RDMA functions.
    Nics,
    /// CPUs.
    Cpus,
}

/// Flags of the slice model.
#[derive(Debug, Clone, clap::Args)]
pub struct SliceArgs {
    /// The driver name: ResourceSlice `spec.driver` and the domain of its attributes.
    #[arg(long, env = "DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME)]
    pub driver_name: String,

    /// Device families to publish (comma-separated). Leave one out to run beside a vendor's driver for it.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "gpus,nics,cpus"
    )]
    pub publish: Vec<FamilyName>,

    /// How CPUs are published: `individual` CPUs, or shareable groups per `numa` node or `socket`.
    #[arg(long, value_enum, default_value = "numa")]
    pub cpu_mode: CpuModeArg,

    /// CPUs never published nor allocated (a cpulist such as `0-1,64-65`; the kubelet's reserved CPUs).
    #[arg(long, value_name = "CPULIST", value_parser = parse_cpulist)]
    pub reserved_cpus: Option<CpuSet>,

    /// Publish each Intel GPU that can make N SR-IOV VFs as the whole GPU plus N partitions sharing its
    /// counters (the first prepared partition creates the VFs); 0 for whole GPUs only.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpu_partitions: u32,

    /// Publish each CPU group's real-time (SCHED_DEADLINE) bandwidth as an `rt-<group>` device with
    /// capacity `rtBandwidth` (the group's CPUs times sched_rt_runtime_us / sched_rt_period_us).
    #[arg(long)]
    pub rt_bandwidth: bool,

    /// Where GPU partitions' shared counter sets go: `same-slice` (Kubernetes 1.34) or `own-slice`
    /// (1.35 and later). Default: the plugin asks the API server's version (and does not use a
    /// layout that version refuses); `hal-probe explain` follows its --kubernetes-version;
    /// `hal-probe slices` and `draw` use same-slice.
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub counter_layout: Option<CounterLayoutArg>,

    /// Other drivers' attribute domains that also get `<domain>/numaNode` (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "dra.net")]
    pub compat_domains: Vec<String>,
}

fn parse_cpulist(text: &str) -> Result<CpuSet, ConfigError> {
    CpuSet::from_cpulist(text).map_err(|source| ConfigError::Parse {
        flag: "--reserved-cpus",
        source,
    })
}

impl SliceArgs {
    /// The configuration for `node_name`, checked.
    pub fn config(&self, node_name: &str) -> Result<SliceConfig, ConfigError> {
        let config = SliceConfig {
            driver_name: self.driver_name.clone(),
            node_name: node_name.to_owned(),
            families: Families {
                gpus: self.publish.contains(&FamilyName::Gpus),
                nics: self.publish.contains(&FamilyName::Nics),
                cpus: self.publish.contains(&FamilyName::Cpus),
            },
            cpu_mode: match self.cpu_mode {
                CpuModeArg::Individual => CpuMode::Individual,
                CpuModeArg::Numa => CpuMode::GroupedByNuma,
                CpuModeArg::Socket => CpuMode::GroupedBySocket,
            },
            reserved_cpus: self.reserved_cpus.clone().unwrap_or_default(),
            compat_domains: self
                .compat_domains
                .iter()
                .filter(|d| !d.is_empty())
                .cloned()
                .collect(),
            gpu_partitions: self.gpu_partitions,
            rt_bandwidth: self.rt_bandwidth,
            counter_layout: match self.counter_layout {
                Some(CounterLayoutArg::OwnSlice) => CounterLayout::OwnSlice,
                _ => CounterLayout::SameSlice,
            },
            // The plugin sets it from the API server's version.
            informational_taints: false,
        };
        config.validate()?;
        Ok(config)
    }
}
