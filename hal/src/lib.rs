//! The vocabulary of the hardware-abstraction stack: domain types that parse and print exactly what the
//! Linux kernel does, the device traits backends implement, and one error type with a kind.
//!
//! No I/O happens here: see the `backends` crate for implementations and `hal-mock` for fakes.

pub mod cpu;
pub mod cpuset;
pub mod device;
pub mod error;
pub mod forward;
pub mod inventory;
pub mod numa;
pub mod pci;
pub mod quantity;
pub mod text;
pub mod write;

pub use cpu::{CoreKey, CoreType, CpuInventory, CpuTopology, LogicalCpu, NumaNodeInfo};
pub use cpuset::CpuSet;
pub use device::gpu::{GpuDevice, GpuInfo, GpuVendor};
pub use device::pci::{PciDevice, PciFunction};
pub use device::rdma::{
    LinkLayer, RdmaCharDevice, RdmaCharKind, RdmaDevice, RdmaGid, RdmaInfo, RdmaPort,
};
pub use device::sriov::{SriovPf, SriovState, VirtualFunction};
pub use error::{Error, ErrorKind, ParseError, Result};
pub use inventory::{Discovered, InventoryError};
pub use numa::NumaNode;
pub use pci::{PciAddress, PcieRoot};
pub use write::AttributeWriter;
