//! Device families: PCI functions, SR-IOV, RDMA and GPUs. Each module holds the plain types a backend
//! returns and the trait it implements.

pub mod gpu;
pub mod pci;
pub mod rdma;
pub mod sriov;
