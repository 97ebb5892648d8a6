//! What `hal-probe` reports: the HAL's view of a machine, as a table for people or as JSON for programs.
//!
//! The JSON form is a stable contract, documented in the crate README.

mod table;

use hal::{CpuInventory, CpuTopology, InventoryError, LogicalCpu, NumaNodeInfo};

pub use table::render_table;

/// The device families `hal-probe` can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// CPUs and NUMA nodes.
    Cpu,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// CPUs and NUMA nodes, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
    /// Everything that could not be read; the rest of the report is still valid.
    pub errors: Vec<InventoryError>,
}

impl Report {
    /// Runs discovery for the families asked for. A family that cannot be read at all becomes an error
    /// entry; the report is still produced.
    pub fn collect(cpu: &dyn CpuTopology, families: &[Family]) -> Report {
        let mut report = Report {
            cpu: None,
            errors: Vec::new(),
        };
        if families.contains(&Family::Cpu) {
            match cpu.cpu_inventory() {
                Ok(CpuInventory {
                    cpus,
                    numa_nodes,
                    errors,
                }) => {
                    report.cpu = Some(CpuReport { cpus, numa_nodes });
                    report.errors.extend(errors);
                }
                Err(e) => report.errors.push((&e).into()),
            }
        }
        report
    }

    /// The JSON contract, pretty-printed.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"errors\":[{{\"path\":\"\",\"error\":\"{e}\"}}]}}"))
    }
}
