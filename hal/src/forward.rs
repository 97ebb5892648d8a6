//! The HAL traits forwarded through `&T`, `Box<T>` and `Arc<T>` (`T` may be `dyn Trait`), so a
//! caller can hand out a shared or boxed backend wherever a backend is expected. Every method is
//! forwarded, the provided ones too: an implementation that overrides a provided method (a cheaper
//! single lookup) keeps its override behind a pointer.

use std::sync::Arc;

use crate::cpu::{CpuInventory, CpuTopology};
use crate::cpuset::CpuSet;
use crate::device::gpu::{GpuDevice, GpuInfo};
use crate::device::pci::{PciDevice, PciFunction};
use crate::device::rdma::{RdmaDevice, RdmaInfo};
use crate::device::sriov::{SriovPf, SriovState};
use crate::error::Result;
use crate::inventory::Discovered;
use crate::pci::PciAddress;

macro_rules! forward {
    ($($pointer:ty),+) => {$(
        impl<T: CpuTopology + ?Sized> CpuTopology for $pointer {
            fn cpu_inventory(&self) -> Result<CpuInventory> {
                (**self).cpu_inventory()
            }
            fn online_cpus(&self) -> Result<CpuSet> {
                (**self).online_cpus()
            }
        }

        impl<T: PciDevice + ?Sized> PciDevice for $pointer {
            fn pci_functions(&self) -> Result<Discovered<PciFunction>> {
                (**self).pci_functions()
            }
            fn pci_function(&self, address: PciAddress) -> Result<Option<PciFunction>> {
                (**self).pci_function(address)
            }
        }

        impl<T: SriovPf + ?Sized> SriovPf for $pointer {
            fn sriov_pfs(&self) -> Result<Discovered<SriovState>> {
                (**self).sriov_pfs()
            }
            fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()> {
                (**self).set_num_vfs(pf, count)
            }
            fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
                (**self).bind_driver(function, driver)
            }
            fn unbind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
                (**self).unbind_driver(function, driver)
            }
            fn restore_driver(
                &self,
                function: PciAddress,
                driver: &str,
                original: Option<&str>,
                original_override: Option<&str>,
            ) -> Result<()> {
                (**self).restore_driver(function, driver, original, original_override)
            }
            fn sriov_state(&self, pf: PciAddress) -> Result<Option<SriovState>> {
                (**self).sriov_state(pf)
            }
        }

        impl<T: RdmaDevice + ?Sized> RdmaDevice for $pointer {
            fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>> {
                (**self).rdma_devices()
            }
        }

        impl<T: GpuDevice + ?Sized> GpuDevice for $pointer {
            fn gpus(&self) -> Result<Discovered<GpuInfo>> {
                (**self).gpus()
            }
        }
    )+};
}

forward!(&T, Box<T>, Arc<T>);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records every call, and overrides each provided method with an answer the default would
    /// not give: forwarding to the default instead of the override is caught.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn log(&self, call: impl Into<String>) {
            self.calls.lock().unwrap().push(call.into());
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    fn address() -> PciAddress {
        "0000:3b:00.1".parse().unwrap()
    }

    impl CpuTopology for Recorder {
        fn cpu_inventory(&self) -> Result<CpuInventory> {
            self.log("cpu_inventory");
            Ok(CpuInventory::default())
        }
        fn online_cpus(&self) -> Result<CpuSet> {
            self.log("online_cpus");
            Ok(CpuSet::from_iter([7]))
        }
    }

    impl PciDevice for Recorder {
        fn pci_functions(&self) -> Result<Discovered<PciFunction>> {
            self.log("pci_functions");
            Ok(Discovered::default())
        }
        fn pci_function(&self, address: PciAddress) -> Result<Option<PciFunction>> {
            self.log(format!("pci_function {address}"));
            Ok(None)
        }
    }

    impl SriovPf for Recorder {
        fn sriov_pfs(&self) -> Result<Discovered<SriovState>> {
            self.log("sriov_pfs");
            Ok(Discovered::default())
        }
        fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()> {
            self.log(format!("set_num_vfs {pf} {count}"));
            Ok(())
        }
        fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
            self.log(format!("bind_driver {function} {driver}"));
            Ok(())
        }
        fn unbind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
            self.log(format!("unbind_driver {function} {driver}"));
            Ok(())
        }
        fn restore_driver(
            &self,
            function: PciAddress,
            driver: &str,
            original: Option<&str>,
            original_override: Option<&str>,
        ) -> Result<()> {
            self.log(format!(
                "restore_driver {function} {driver} {original:?} {original_override:?}"
            ));
            Ok(())
        }
        fn sriov_state(&self, pf: PciAddress) -> Result<Option<SriovState>> {
            self.log(format!("sriov_state {pf}"));
            Ok(None)
        }
    }

    impl RdmaDevice for Recorder {
        fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>> {
            self.log("rdma_devices");
            Ok(Discovered::default())
        }
    }

    impl GpuDevice for Recorder {
        fn gpus(&self) -> Result<Discovered<GpuInfo>> {
            self.log("gpus");
            Ok(Discovered::default())
        }
    }

    /// Calls every method of the five traits through `backend`, generically (as a consumer would).
    fn use_all<B: CpuTopology + PciDevice + SriovPf + RdmaDevice + GpuDevice>(backend: B) {
        backend.cpu_inventory().unwrap();
        assert_eq!(backend.online_cpus().unwrap(), CpuSet::from_iter([7]));
        backend.pci_functions().unwrap();
        backend.pci_function(address()).unwrap();
        backend.sriov_pfs().unwrap();
        backend.set_num_vfs(address(), 4).unwrap();
        backend.bind_driver(address(), "vfio-pci").unwrap();
        backend.unbind_driver(address(), "vfio-pci").unwrap();
        backend
            .restore_driver(address(), "vfio-pci", Some("iavf"), None)
            .unwrap();
        backend.sriov_state(address()).unwrap();
        backend.rdma_devices().unwrap();
        backend.gpus().unwrap();
    }

    const EXPECTED: [&str; 12] = [
        "cpu_inventory",
        "online_cpus",
        "pci_functions",
        "pci_function 0000:3b:00.1",
        "sriov_pfs",
        "set_num_vfs 0000:3b:00.1 4",
        "bind_driver 0000:3b:00.1 vfio-pci",
        "unbind_driver 0000:3b:00.1 vfio-pci",
        "restore_driver 0000:3b:00.1 vfio-pci Some(\"iavf\") None",
        "sriov_state 0000:3b:00.1",
        "rdma_devices",
        "gpus",
    ];

    #[test]
    fn every_method_is_forwarded_through_references_boxes_and_arcs() {
        let recorder = Arc::new(Recorder::default());
        use_all(&*recorder);
        assert_eq!(recorder.take(), EXPECTED, "&T");
        use_all(Box::new(&*recorder));
        assert_eq!(recorder.take(), EXPECTED, "Box<&T>");
        use_all(Arc::clone(&recorder));
        assert_eq!(recorder.take(), EXPECTED, "Arc<T>");
        use_all(Box::new(Arc::clone(&recorder)));
        assert_eq!(recorder.take(), EXPECTED, "Box<Arc<T>>");
    }

    #[test]
    fn trait_objects_are_forwarded_too() {
        let recorder = Arc::new(Recorder::default());
        let gpu: Box<dyn GpuDevice> = Box::new(Arc::clone(&recorder));
        let rdma: Arc<dyn RdmaDevice> = recorder.clone();
        let pci: &dyn PciDevice = &*recorder;
        let cpu: Arc<dyn CpuTopology> = recorder.clone();
        let sriov: Box<dyn SriovPf> = Box::new(Arc::clone(&recorder));
        fn gpus(b: impl GpuDevice) {
            b.gpus().unwrap();
        }
        fn rdma_devices(b: impl RdmaDevice) {
            b.rdma_devices().unwrap();
        }
        fn pci_function(b: impl PciDevice) {
            b.pci_function(address()).unwrap();
        }
        fn online(b: impl CpuTopology) -> CpuSet {
            b.online_cpus().unwrap()
        }
        fn state(b: impl SriovPf) {
            b.sriov_state(address()).unwrap();
        }
        gpus(gpu);
        rdma_devices(rdma);
        pci_function(pci);
        assert_eq!(online(cpu), CpuSet::from_iter([7]));
        state(sriov);
        assert_eq!(
            recorder.take(),
            [
                "gpus",
                "rdma_devices",
                "pci_function 0000:3b:00.1",
                "online_cpus",
                "sriov_state 0000:3b:00.1"
            ]
        );
    }
}
