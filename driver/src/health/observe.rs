//! What each family says of its devices at one read: who they are, whether they can be used, and
//! what sysfs says is wrong with them now; and the last-known view ([`Snapshot`]) put back for a
//! device that is gone or offline.

use hal::{GpuInfo, LogicalCpu, PciFunction, RdmaInfo};

use super::{DeviceKey, OFFLINE, Severity, Unhealthy};
use crate::inventory::Inventory;

/// One device as one read found it.
#[derive(Debug)]
pub(super) struct Observed {
    pub(super) key: DeviceKey,
    /// Its UUID (GPUs).
    pub(super) identity: Option<String>,
    pub(super) snapshot: Snapshot,
    /// Whether it can be used as it is (a CPU offline cannot: its view is not kept).
    pub(super) usable: bool,
    /// What is wrong with it now.
    pub(super) problem: Option<Unhealthy>,
}

/// A device's last-known view, as the inventory had it.
#[derive(Debug, Clone)]
pub(super) enum Snapshot {
    /// A GPU and its PCI function.
    Gpu {
        /// The GPU.
        gpu: Box<GpuInfo>,
        /// Its PCI function.
        function: Option<Box<PciFunction>>,
    },
    /// A network function and its RDMA device.
    Function {
        /// The PCI function.
        function: Box<PciFunction>,
        /// Its RDMA device.
        rdma: Option<Box<RdmaInfo>>,
    },
    /// A logical CPU with its topology.
    Cpu(LogicalCpu),
}

impl Snapshot {
    /// The PF of a VF's view: a network function's, or a GPU's (an SR-IOV GPU's VFs are GPUs too).
    pub(super) fn pf(&self) -> Option<hal::PciAddress> {
        match self {
            Snapshot::Function { function, .. } => function.physfn,
            Snapshot::Gpu {
                function: Some(function),
                ..
            } => function.physfn,
            _ => None,
        }
    }

    /// Puts the view back into `inventory` where the device is not (a CPU: in place of its entry,
    /// offline). The caller sorts afterwards ([`sort`]).
    pub(super) fn restore(&self, inventory: &mut Inventory) {
        match self {
            Snapshot::Gpu { gpu, function } => {
                if !inventory
                    .gpus
                    .iter()
                    .any(|g| g.pci_address == gpu.pci_address)
                {
                    inventory.gpus.push(gpu.as_ref().clone());
                }
                if let Some(function) = function {
                    restore_function(inventory, function);
                }
            }
            Snapshot::Function { function, rdma } => {
                restore_function(inventory, function);
                if let Some(rdma) = rdma
                    && !inventory.rdma.iter().any(|r| r.name == rdma.name)
                {
                    inventory.rdma.push(rdma.as_ref().clone());
                }
            }
            Snapshot::Cpu(cpu) => {
                let Some(cpus) = inventory.cpu.as_mut() else {
                    return;
                };
                let offline = LogicalCpu {
                    online: false,
                    ..cpu.clone()
                };
                match cpus.cpus.iter_mut().find(|c| c.id == cpu.id) {
                    Some(entry) => *entry = offline,
                    None => cpus.cpus.push(offline),
                }
            }
        }
    }
}

fn restore_function(inventory: &mut Inventory, function: &PciFunction) {
    if !inventory.pci.iter().any(|f| f.address == function.address) {
        inventory.pci.push(function.clone());
    }
}

/// Sorts what [`Snapshot::restore`] pushed, as the inventory keeps it (lookups search by key).
pub(super) fn sort(inventory: &mut Inventory) {
    inventory.gpus.sort_by_key(|g| g.pci_address);
    inventory.pci.sort_by_key(|f| f.address);
    inventory.rdma.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(cpu) = inventory.cpu.as_mut() {
        cpu.cpus.sort_by_key(|c| c.id);
    }
}

/// Every GPU, network function (network class or with an RDMA device, as published) and CPU of
/// `inventory`.
pub(super) fn observe(inventory: &Inventory) -> Vec<Observed> {
    let mut out = Vec::new();
    for gpu in &inventory.gpus {
        out.push(Observed {
            key: DeviceKey::Gpu(gpu.pci_address),
            identity: gpu.uuid.clone(),
            snapshot: Snapshot::Gpu {
                gpu: Box::new(gpu.clone()),
                function: inventory
                    .function(gpu.pci_address)
                    .map(|f| Box::new(f.clone())),
            },
            usable: true,
            problem: None,
        });
    }
    let is_gpu = |f: &PciFunction| inventory.gpus.iter().any(|g| g.pci_address == f.address);
    for function in &inventory.pci {
        let rdma = inventory
            .rdma
            .iter()
            .find(|r| r.pci_address == Some(function.address));
        if !(function.is_network() || rdma.is_some()) || is_gpu(function) {
            continue;
        }
        out.push(Observed {
            key: DeviceKey::Function(function.address),
            identity: None,
            snapshot: Snapshot::Function {
                function: Box::new(function.clone()),
                rdma: rdma.map(|r| Box::new(r.clone())),
            },
            usable: true,
            problem: link_problem(function, inventory).or_else(|| rdma.and_then(port_problem)),
        });
    }
    for cpu in inventory.cpu.iter().flat_map(|c| &c.cpus) {
        out.push(Observed {
            key: DeviceKey::Cpu(cpu.id),
            identity: None,
            snapshot: Snapshot::Cpu(cpu.clone()),
            usable: cpu.online,
            problem: (!cpu.online).then(|| {
                let message = format!(
                    "CPU {} was online and is offline now (cpu{}/online is 0)",
                    cpu.id, cpu.id
                );
                Unhealthy::now(OFFLINE, message, Severity::Unusable)
            }),
        });
    }
    out
}

/// The first interface of `function` that is up with its link down.
fn link_problem(function: &PciFunction, inventory: &Inventory) -> Option<Unhealthy> {
    function.netdevs.iter().find_map(|name| {
        let link = inventory.net_link(name).filter(|l| l.is_down())?;
        let message = format!(
            "link down on {name} ({}); usable again when the link comes back",
            link.describe()
        );
        Some(Unhealthy::now("link-down", message, Severity::Degraded))
    })
}

/// The first port of `rdma` that is not ACTIVE.
fn port_problem(rdma: &RdmaInfo) -> Option<Unhealthy> {
    rdma.ports.iter().find_map(|port| {
        let state = port.state.as_deref()?.to_ascii_uppercase();
        let (reason, why) = match state.as_str() {
            "ACTIVE" | "ACTIVE_DEFER" => return None,
            "DOWN" => ("port-down", "no link"),
            "INIT" => (
                "port-init",
                "the link is up and no subnet manager has made the port ACTIVE yet",
            ),
            "ARMED" => (
                "port-armed",
                "the subnet manager has not yet made the port ACTIVE",
            ),
            _ => ("port-not-active", "the port does not pass traffic"),
        };
        let message = format!(
            "RDMA device {} port {} is {state} (phys_state {}): {why}",
            rdma.name,
            port.number,
            port.phys_state.as_deref().unwrap_or("unknown")
        );
        Some(Unhealthy::now(reason, message, Severity::Degraded))
    })
}
