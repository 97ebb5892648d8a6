//! [`mockall`] mocks of the `hal` traits, for narrow unit tests of logic that sits above the traits.
//!
//! A fixture ([`crate::FixtureMachine`]) runs the real backends over a rendered sysfs tree; a mock runs
//! nothing and returns what the test says. Use a mock to pin down a small piece of logic (a filter, a
//! policy, an error path) with exact inputs and call counts; use a fixture for anything that reads sysfs.
//!
//! Every method of each trait is mocked, the provided ones included (`PciDevice::pci_function`,
//! `SriovPf::sriov_state`, `CpuTopology::online_cpus`): a mock never falls back to a trait's default
//! body, so a test sets an expectation for exactly the method the code under test calls, and a call
//! without a matching expectation panics.
//!
//! ```
//! use hal::{ErrorKind, GpuDevice};
//! use hal_mock::mocks::MockGpuDevice;
//!
//! let mut gpus = MockGpuDevice::new();
//! gpus.expect_gpus()
//!     .times(1)
//!     .returning(|| Err(hal::Error::Unsupported("no NVML".into())));
//! let dyn_gpus: &dyn GpuDevice = &gpus;
//! assert!(matches!(dyn_gpus.gpus(), Err(e) if e.kind() == ErrorKind::Unsupported));
//! ```

// `mock!` generates public expectation types and methods without doc comments.
#![allow(missing_docs)]

use std::io;
use std::path::Path;

use hal::{
    CpuInventory, CpuSet, Discovered, GpuInfo, PciAddress, PciFunction, RdmaInfo, Result,
    SriovState,
};
use mockall::mock;

mock! {
    /// A mock [`hal::CpuTopology`]: `expect_cpu_inventory`, `expect_online_cpus`.
    pub CpuTopology {}

    impl hal::CpuTopology for CpuTopology {
        fn cpu_inventory(&self) -> Result<CpuInventory>;
        fn online_cpus(&self) -> Result<CpuSet>;
    }
}

mock! {
    /// A mock [`hal::PciDevice`]: `expect_pci_functions`, `expect_pci_function`.
    pub PciDevice {}

    impl hal::PciDevice for PciDevice {
        fn pci_functions(&self) -> Result<Discovered<PciFunction>>;
        fn pci_function(&self, address: PciAddress) -> Result<Option<PciFunction>>;
    }
}

mock! {
    /// A mock [`hal::SriovPf`]: `expect_sriov_pfs`, `expect_set_num_vfs`, `expect_bind_driver`,
    /// `expect_unbind_driver`, `expect_sriov_state`.
    pub SriovPf {}

    impl hal::SriovPf for SriovPf {
        fn sriov_pfs(&self) -> Result<Discovered<SriovState>>;
        fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()>;
        fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()>;
        fn unbind_driver(&self, function: PciAddress, driver: &str) -> Result<()>;
        fn sriov_state(&self, pf: PciAddress) -> Result<Option<SriovState>>;
    }
}

mock! {
    /// A mock [`hal::RdmaDevice`]: `expect_rdma_devices`.
    pub RdmaDevice {}

    impl hal::RdmaDevice for RdmaDevice {
        fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>>;
    }
}

mock! {
    /// A mock [`hal::GpuDevice`]: `expect_gpus`.
    pub GpuDevice {}

    impl hal::GpuDevice for GpuDevice {
        fn gpus(&self) -> Result<Discovered<GpuInfo>>;
    }
}

mock! {
    /// A mock [`hal::AttributeWriter`]: `expect_write_attribute`. To see what a backend writes while
    /// the fixture tree changes as on a node, use [`crate::EmulatedKernel`] instead.
    pub AttributeWriter {}

    impl hal::AttributeWriter for AttributeWriter {
        fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()>;
    }
}
