//! What `hal-probe` reports: the HAL's view of a machine, as a table for people or as JSON for programs.
//!
//! The JSON form is a stable contract, documented in the crate README.

mod devices_table;
mod table;

use hal::{
    CpuInventory, CpuTopology, Discovered, InventoryError, LogicalCpu, NumaNodeInfo, PciDevice,
    PciFunction, SriovPf, SriovState,
};

pub use table::render_table;

/// The device families `hal-probe` can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// CPUs and NUMA nodes.
    Cpu,
    /// PCI functions.
    Pci,
    /// SR-IOV physical functions and their VFs.
    Sriov,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 3] = [Family::Cpu, Family::Pci, Family::Sriov];
}

/// Where each family is read from.
pub struct Sources<'a> {
    /// CPU topology.
    pub cpu: &'a dyn CpuTopology,
    /// PCI functions.
    pub pci: &'a dyn PciDevice,
    /// SR-IOV.
    pub sriov: &'a dyn SriovPf,
}

/// The CPU part of a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuReport {
    /// Every logical CPU.
    pub cpus: Vec<LogicalCpu>,
    /// Every NUMA node.
    pub numa_nodes: Vec<NumaNodeInfo>,
}

/// Everything `hal-probe` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// CPUs and NUMA nodes, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
    /// PCI functions, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci: Option<Vec<PciFunction>>,
    /// SR-IOV physical functions, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Vec<SriovState>>,
    /// Everything that could not be read; the rest of the report is still valid.
    pub errors: Vec<InventoryError>,
}

impl Report {
    /// Runs discovery for the families asked for. A family that cannot be read at all becomes an error
    /// entry; the report is still produced.
    pub fn collect(sources: &Sources<'_>, families: &[Family]) -> Report {
        let mut report = Report::default();
        for family in Family::ALL.into_iter().filter(|f| families.contains(f)) {
            match family {
                Family::Cpu => match sources.cpu.cpu_inventory() {
                    Ok(CpuInventory {
                        cpus,
                        numa_nodes,
                        errors,
                    }) => {
                        report.cpu = Some(CpuReport { cpus, numa_nodes });
                        report.errors.extend(errors);
                    }
                    Err(e) => report.errors.push((&e).into()),
                },
                Family::Pci => report.pci = report.take(sources.pci.pci_functions()),
                Family::Sriov => report.sriov = report.take(sources.sriov.sriov_pfs()),
            }
        }
        report
    }

    /// Keeps a family's items and moves its errors into the report.
    fn take<T>(&mut self, found: hal::Result<Discovered<T>>) -> Option<Vec<T>> {
        match found {
            Ok(Discovered { items, errors }) => {
                self.errors.extend(errors);
                Some(items)
            }
            Err(e) => {
                self.errors.push((&e).into());
                None
            }
        }
    }

    /// Whether any family asked for was read at all.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.pci.is_none() && self.sriov.is_none()
    }

    /// The JSON contract, pretty-printed.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"errors\":[{{\"path\":\"\",\"error\":\"{e}\"}}]}}"))
    }
}
