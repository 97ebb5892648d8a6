//! What `hal-probe` reports: the HAL's view of a machine, as a table for people or as JSON for programs.
//!
//! The JSON form is a stable contract, documented in the crate README.

mod devices_table;
mod table;
mod topology;

use hal::{
    CpuInventory, Discovered, GpuInfo, InventoryError, LogicalCpu, NumaNodeInfo, PciFunction,
    RdmaInfo, SriovState,
};

pub use table::render_table;
pub use topology::{Endpoint, EndpointKind, Link, Topology};

/// The device families `hal-probe` can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// CPUs and NUMA nodes.
    Cpu,
    /// PCI functions.
    Pci,
    /// SR-IOV physical functions and their VFs.
    Sriov,
    /// RDMA devices.
    Rdma,
    /// GPUs.
    Gpus,
    /// The GPU/NIC topology matrix.
    Topology,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 6] = [
        Family::Cpu,
        Family::Pci,
        Family::Sriov,
        Family::Rdma,
        Family::Gpus,
        Family::Topology,
    ];
}

/// Where each family is read from: the inventory's [`Backends`](backends::inventory::Backends).
pub use backends::inventory::Backends as Sources;

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
    /// RDMA devices, when asked for.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_rdma"
    )]
    pub rdma: Option<Vec<RdmaInfo>>,
    /// GPUs, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuInfo>>,
    /// The GPU/NIC topology matrix, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Everything that could not be read; the rest of the report is still valid.
    pub errors: Vec<InventoryError>,
}

/// An RDMA device in JSON: its fields plus `ib_only`, so consumers need not derive it.
#[derive(serde::Serialize)]
struct RdmaJson<'a> {
    #[serde(flatten)]
    device: &'a RdmaInfo,
    ib_only: bool,
}

fn serialize_rdma<S: serde::Serializer>(
    devices: &Option<Vec<RdmaInfo>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let devices: Option<Vec<RdmaJson<'_>>> = devices.as_ref().map(|list| {
        list.iter()
            .map(|device| RdmaJson {
                device,
                ib_only: device.is_ib_only(),
            })
            .collect()
    });
    serde::Serialize::serialize(&devices, serializer)
}

impl Report {
    /// Runs discovery for the families asked for. A family that cannot be read at all becomes an error
    /// entry; the report is still produced.
    pub fn collect(sources: &Sources<'_>, families: &[Family]) -> Report {
        let mut report = Report::default();
        // The topology is built from the PCI, GPU and RDMA inventories, read if not asked for.
        let needs = |family: Family| {
            families.contains(&family)
                || (families.contains(&Family::Topology)
                    && matches!(family, Family::Pci | Family::Gpus | Family::Rdma))
        };
        // One after the other, as `Inventory::read` reads them.
        let (cpu, pci, sriov, rdma, gpus) = (
            needs(Family::Cpu).then(|| sources.cpu.cpu_inventory()),
            needs(Family::Pci).then(|| sources.pci.pci_functions()),
            needs(Family::Sriov).then(|| sources.sriov.sriov_pfs()),
            needs(Family::Rdma).then(|| sources.rdma.rdma_devices()),
            needs(Family::Gpus).then(|| sources.gpus.gpus()),
        );
        match cpu {
            Some(Ok(CpuInventory {
                cpus,
                numa_nodes,
                errors,
            })) => {
                report.cpu = Some(CpuReport { cpus, numa_nodes });
                report.errors.extend(errors);
            }
            Some(Err(e)) => report.errors.push((&e).into()),
            None => {}
        }
        report.pci = pci.and_then(|found| report.take(found));
        report.sriov = sriov.and_then(|found| report.take(found));
        report.rdma = rdma.and_then(|found| report.take(found));
        report.gpus = gpus.and_then(|found| report.take(found));
        if needs(Family::Topology) {
            report.topology = Some(Topology::build(
                report.pci.as_deref().unwrap_or_default(),
                report.gpus.as_deref().unwrap_or_default(),
                report.rdma.as_deref().unwrap_or_default(),
            ));
        }
        // Families read only for the topology are not shown.
        if !families.contains(&Family::Pci) {
            report.pci = None;
        }
        if !families.contains(&Family::Gpus) {
            report.gpus = None;
        }
        if !families.contains(&Family::Rdma) {
            report.rdma = None;
        }
        // GPU discovery reads the PCI functions too: each problem is listed once.
        let mut seen = std::collections::BTreeSet::new();
        report
            .errors
            .retain(|e| seen.insert((e.path.clone(), e.error.clone())));
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
        self.cpu.is_none()
            && self.pci.is_none()
            && self.sriov.is_none()
            && self.rdma.is_none()
            && self.gpus.is_none()
            && self.topology.is_none()
    }

    /// The JSON contract, pretty-printed.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail. C1 controls and bidi controls in the
        // tree's strings are escaped: JSON read on a terminal does not play them.
        allocator::text::json_safe(
            serde_json::to_string_pretty(self).unwrap_or_else(|e| {
                format!("{{\"errors\":[{{\"path\":\"\",\"error\":\"{e}\"}}]}}")
            }),
        )
    }
}

/// `text` made safe for a terminal as a whole: characters that act on it other than newline and tab
/// (an escape sequence, `\r`, a bidi control) are written as `\u{1b}`, so they show instead of
/// acting. A last pass over output whose values were each escaped already ([`cell`]); it cannot tell
/// a value's newline from the output's own, which is why each value is escaped before it goes in.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    allocator::text::lines_safe(text)
}

/// The longest a value from the tree shows in a table: [`allocator::text::MAX_CELL_CHARS`].
pub use allocator::text::MAX_CELL_CHARS;

/// One value from the tree (a kernel string, a directory name, a vendor library's answer) as it goes
/// into a table: every character that acts on a terminal (newline, `\r` and tab, escape sequences,
/// bidi controls) escaped as `\u{a}`, so it cannot start a row of its own or reorder the line, and
/// cut at [`MAX_CELL_CHARS`] ([`allocator::text::cell`]).
pub use allocator::text::cell;

#[cfg(test)]
mod terminal_tests {
    use super::terminal_safe;

    #[test]
    fn escape_sequences_are_shown_not_played() {
        let hostile = "eth\u{1b}[31mRED\u{1b}]0;PWN\u{7}\tok\u{202e}\n";
        assert_eq!(
            terminal_safe(hostile),
            "eth\\u001b[31mRED\\u001b]0;PWN\\u0007\tok\\u202e\n"
        );
        assert!(matches!(
            terminal_safe("cpus: 0-3\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
