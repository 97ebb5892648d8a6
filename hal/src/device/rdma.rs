//! [`RdmaInfo`] and the [`RdmaDevice`] trait.

use crate::error::Result;
use crate::inventory::Discovered;
use crate::pci::PciAddress;

/// The link layer of an RDMA port (`ports/N/link_layer`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkLayer {
    /// InfiniBand.
    Infiniband,
    /// Ethernet (RoCE).
    Ethernet,
    /// Anything else the kernel prints.
    Other(String),
}

/// One port of an RDMA device (`ports/N/`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RdmaPort {
    /// Port number (from 1; switches use 0).
    pub number: u32,
    /// `state` name without its number (`ACTIVE`, `DOWN`, ...).
    pub state: Option<String>,
    /// `phys_state` name (`LinkUp`, `Disabled`, `Polling`, ...).
    pub phys_state: Option<String>,
    /// `link_layer`.
    pub link_layer: Option<LinkLayer>,
    /// `rate` as the kernel prints it (`400 Gb/sec (4X NDR)`).
    pub rate: Option<String>,
    /// The rate in Mbit/s (`2.5 Gb/sec` is 2500), for capacities.
    pub rate_mbps: Option<u64>,
    /// Active MTU in bytes (256 … 4096), from verbs (`ibv_query_port`).
    #[serde(default)]
    pub active_mtu: Option<u32>,
    /// The port's LID (InfiniBand; 0 on RoCE), from verbs.
    #[serde(default)]
    pub lid: Option<u16>,
    /// The GID table's non-zero entries, by index (`fe80:0000:0000:0000:0215:5dff:fe34:0100`), from verbs.
    #[serde(default)]
    pub gids: Vec<RdmaGid>,
}

/// One GID table entry of a port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RdmaGid {
    /// Index in the port's GID table.
    pub index: u32,
    /// The GID in sysfs's form: eight groups of four hex digits.
    pub gid: String,
}

impl RdmaPort {
    /// Port `number` of which nothing else is known yet.
    pub fn new(number: u32) -> Self {
        RdmaPort {
            number,
            state: None,
            phys_state: None,
            link_layer: None,
            rate: None,
            rate_mbps: None,
            active_mtu: None,
            lid: None,
            gids: Vec::new(),
        }
    }
}

/// What kind of RDMA character device a node is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RdmaCharKind {
    /// `uverbsN` (`class/infiniband_verbs`).
    Verbs,
    /// `umadN` (`class/infiniband_mad`).
    Umad,
    /// `issmN` (`class/infiniband_mad`).
    Issm,
    /// `rdma_cm`, shared by all devices.
    RdmaCm,
}

/// A character device a workload needs to use an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RdmaCharDevice {
    /// Kind.
    pub kind: RdmaCharKind,
    /// Device path (`/dev/infiniband/uverbs0`), relative to the host's `/`.
    pub path: String,
    /// `major:minor` from the class entry's `dev` file, where present.
    pub dev: Option<(u32, u32)>,
}

/// One RDMA device (`/sys/class/infiniband/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RdmaInfo {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// Its PCI function, if it has one (soft-RoCE devices do not).
    pub pci_address: Option<PciAddress>,
    /// `node_guid` (`0002:c903:00f9:bfa0`).
    pub node_guid: Option<String>,
    /// `node_type` name (`CA`, `RNIC`, ...).
    pub node_type: Option<String>,
    /// Ports, by number.
    pub ports: Vec<RdmaPort>,
    /// Network interfaces of the device (RoCE netdevs or IPoIB), sorted; empty means IB-only.
    pub netdevs: Vec<String>,
    /// Its character devices (exactly this device's, plus `rdma_cm`), sorted.
    pub char_devices: Vec<RdmaCharDevice>,
    /// Most queue pairs the device supports, from verbs (`ibv_query_device`).
    #[serde(default)]
    pub max_qp: Option<u32>,
}

impl RdmaInfo {
    /// IB-only: no network interface to move into a pod, only verbs.
    pub fn is_ib_only(&self) -> bool {
        self.netdevs.is_empty()
    }
}

/// Enumerates RDMA devices.
pub trait RdmaDevice: Send + Sync {
    /// Every RDMA device, sorted by name.
    fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>>;
}
