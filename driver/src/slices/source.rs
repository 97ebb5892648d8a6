//! [`DeviceSource`]: what a published device is on the machine (kept apart from `devices`, which
//! builds them, and `partitions`, which both use it, so neither module needs the other's).

use hal::{CpuSet, GpuInfo, PciFunction, RdmaInfo};

/// What a published device is on the machine: what preparing it needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSource {
    /// A GPU.
    Gpu(GpuInfo),
    /// One of the SR-IOV partitions (VFs) an Intel GPU is published with (`--gpu-partitions`): VF
    /// `index` of `count`, created on demand by the first prepare.
    GpuPartition {
        /// The whole GPU (the PF).
        pf: Box<GpuInfo>,
        /// Which VF (`virtfn<index>`).
        index: u32,
        /// How many VFs the PF is split into.
        count: u32,
    },
    /// A network function (or IB-only RDMA function), with its RDMA device if it has one.
    Nic {
        /// The PCI function.
        function: Box<PciFunction>,
        /// Its RDMA device.
        rdma: Option<RdmaInfo>,
    },
    /// One CPU (individual mode).
    Cpu(u32),
    /// A group of CPUs (grouped mode): the allocatable CPUs of the group.
    CpuGroup(CpuSet),
    /// The real-time bandwidth of a CPU group (`--rt-bandwidth`): its CPUs and the limit per CPU.
    RtGroup {
        /// The allocatable CPUs of the group.
        cpus: CpuSet,
        /// What each CPU may give to real-time tasks, in millionths of a CPU.
        per_cpu: u64,
    },
}
