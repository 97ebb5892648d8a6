//! `hal-probe draw`: the node as a picture (SVG, or PNG through resvg). Packages, dies, NUMA nodes with
//! their memory, L3 groups and runs of alike cores; under each NUMA node its PCIe roots with the bridges,
//! GPUs, NICs (VFs under their PF), RDMA devices and their char devices, each labelled with the name the
//! driver publishes ([`driver::slices::devices::devices_with_sources`] gives the names: nothing here
//! derives one). `hal-probe explain --draw` highlights the devices each claim would get.
//!
//! The SVG's groups nest as the boxes do and carry classes and `data-*` attributes
//! (`<g class="numa" data-numa="0">` > `<g class="pcie-root" data-root="pci0008:00">` >
//! `<g class="device" data-device="gpu-0008-06-00-0">`), a contract the tests read back.

mod cpus;
mod layout;
mod pcie;
#[cfg(feature = "png")]
mod png;

use std::collections::{BTreeMap, BTreeSet};

use hal::{LogicalCpu, PciAddress, PcieRoot};

use driver::inventory::Inventory;
use driver::slices::SliceConfig;
use driver::slices::devices::{DeviceSource, devices_with_sources};
use layout::{Flow, Node};
use pcie::{Devices, Shown};

pub use layout::escape;
#[cfg(feature = "png")]
pub use png::svg_to_png;

/// PNG needs the `png` feature (resvg); this build has none.
#[cfg(not(feature = "png"))]
pub fn svg_to_png(_svg: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!(
        "this hal-probe is built without PNG support (cargo feature `png`): use --format svg"
    )
}

/// Outline colours of the claims, in legend order (repeating after six claims).
const CLAIM_COLOURS: [&str; 6] = [
    "#d62728", "#1f77b4", "#9467bd", "#ff7f0e", "#17becf", "#e377c2",
];

/// One claim to highlight: the devices it would get and the constraint's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `ResourceClaimTemplate name` or `ResourceClaim ns/name`.
    pub name: String,
    /// `allocated`, `unsatisfiable`, `undecided` or `error`.
    pub status: String,
    /// The device names it would get on this node (this driver's pool).
    pub devices: Vec<String>,
    /// `aligned on NUMA node 0`, `cross-NUMA: ...`, the PCIe root verdict, or why it gets nothing.
    pub verdicts: Vec<String>,
}

impl Claim {
    /// The devices of `outcome` that are `driver`'s in `pool`, and its verdicts.
    pub fn from_outcome(outcome: &allocator::Outcome, driver: &str, pool: &str) -> Claim {
        let status = match outcome.status {
            allocator::Status::Allocated => "allocated",
            allocator::Status::Unsatisfiable => "unsatisfiable",
            allocator::Status::Undecided => "undecided",
            allocator::Status::Error => "error",
        };
        let devices = outcome
            .devices
            .iter()
            .filter(|d| d.driver == driver && d.pool == pool)
            .map(|d| d.device.clone())
            .collect();
        let mut verdicts: Vec<String> = outcome
            .numa
            .iter()
            .chain(&outcome.pcie_root)
            .cloned()
            .collect();
        if outcome.status != allocator::Status::Allocated {
            verdicts.extend(outcome.explanation.iter().take(2).cloned());
        }
        Claim {
            name: outcome.claim.clone(),
            status: status.to_owned(),
            devices,
            verdicts,
        }
    }
}

/// What to draw besides the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The first line of the picture (the node or fixture name).
    pub title: String,
    /// Claims whose devices are highlighted, each in its colour.
    pub claims: Vec<Claim>,
}

/// Which claims hold each device.
#[derive(Debug, Default)]
struct Highlights {
    by_device: BTreeMap<String, Vec<usize>>,
}

impl Highlights {
    fn new(claims: &[Claim]) -> Highlights {
        let mut by_device: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, claim) in claims.iter().enumerate() {
            for device in &claim.devices {
                by_device.entry(device.clone()).or_default().push(i);
            }
        }
        Highlights { by_device }
    }

    /// Outlines the box of device `name` in its first claim's colour and lists its claims.
    fn apply(&self, mut node: Node, name: &str) -> Node {
        let Some(claims) = self.by_device.get(name) else {
            return node;
        };
        let list: Vec<String> = claims.iter().map(usize::to_string).collect();
        node.class.push_str(" highlight");
        node.data.push(("claims", list.join(" ")));
        node.stroke = colour(claims.first().copied().unwrap_or(0)).to_owned();
        node.stroke_width = 3.0;
        if claims.len() > 1 {
            let numbers: Vec<String> = claims.iter().map(|c| (c + 1).to_string()).collect();
            node = node.line(format!("claims {}", numbers.join(", ")));
        }
        node
    }
}

fn colour(claim: usize) -> &'static str {
    CLAIM_COLOURS
        .get(claim % CLAIM_COLOURS.len())
        .copied()
        .unwrap_or("#d62728")
}

/// The picture of `inventory` as SVG text, its devices named as `config` publishes them.
pub fn draw_svg(inventory: &Inventory, config: &SliceConfig, options: &Options) -> String {
    layout::to_svg(scene(inventory, config, options))
}

/// CPU devices (groups, RT groups, single CPUs) by where they go: NUMA node or package.
#[derive(Default)]
struct CpuDevices {
    by_numa: BTreeMap<u32, Vec<String>>,
    by_package: BTreeMap<u32, Vec<String>>,
    elsewhere: Vec<String>,
}

fn scene(inventory: &Inventory, config: &SliceConfig, options: &Options) -> Node {
    let highlights = Highlights::new(&options.claims);
    let cpu_list: Vec<&LogicalCpu> = inventory
        .cpu
        .iter()
        .flat_map(|c| c.cpus.iter())
        .filter(|c| c.online)
        .collect();
    let cpu_of = |id: u32| cpu_list.iter().find(|c| c.id == id).copied();

    // The published devices, from the one function that names them.
    let mut shown: BTreeMap<PciAddress, Shown> = BTreeMap::new();
    let mut cpu_devices = CpuDevices::default();
    for (device, source) in devices_with_sources(inventory, config) {
        let name = device.name;
        match source {
            DeviceSource::Gpu(g) => shown.entry(g.pci_address).or_default().name = Some(name),
            DeviceSource::Nic { function, .. } => {
                shown.entry(function.address).or_default().name = Some(name);
            }
            DeviceSource::GpuPartition { pf, index, .. } => {
                let entry = shown.entry(pf.pci_address).or_default();
                entry.partitions.push((index, name));
            }
            DeviceSource::Cpu(id) => place_cpu_device(&mut cpu_devices, cpu_of(id), name, config),
            DeviceSource::CpuGroup(set) | DeviceSource::RtGroup { cpus: set, .. } => {
                let first = set.first().and_then(cpu_of);
                place_cpu_device(&mut cpu_devices, first, name, config);
            }
        }
    }
    // Unpublished GPUs (a BMC's VGA) and RDMA functions are drawn too, without a name.
    for g in &inventory.gpus {
        let vf = inventory.function(g.pci_address).and_then(|f| f.physfn);
        if vf.is_none() {
            shown.entry(g.pci_address).or_default();
        }
    }
    for r in &inventory.rdma {
        if let Some(a) = r.pci_address {
            shown.entry(a).or_default();
        }
    }
    let devices = Devices {
        inventory,
        shown,
        highlights: &highlights,
    };
    let mut roots_by_numa: BTreeMap<Option<u32>, Vec<Node>> = BTreeMap::new();
    let mut by_root: BTreeMap<(Option<u32>, Option<PcieRoot>), Vec<PciAddress>> = BTreeMap::new();
    for ((numa, root), addresses) in devices.by_place() {
        by_root.entry((numa, root)).or_default().extend(addresses);
    }
    for ((numa, root), addresses) in by_root {
        roots_by_numa
            .entry(numa)
            .or_default()
            .push(devices.root_node(root, &addresses));
    }

    // NUMA nodes: the inventory's, and any a device names.
    let memory: BTreeMap<u32, Option<u64>> = inventory
        .cpu
        .iter()
        .flat_map(|c| c.numa_nodes.iter())
        .map(|n| (n.id.id(), n.memory_bytes))
        .collect();
    let mut numa_ids: BTreeSet<u32> = memory.keys().copied().collect();
    let mut state = State {
        cpu_devices,
        roots_by_numa,
        memory,
        highlights: &highlights,
    };
    numa_ids.extend(state.roots_by_numa.keys().flatten().copied());
    numa_ids.extend(cpu_list.iter().filter_map(|c| c.numa_node.map(|n| n.id())));

    // Packages, each with its dies (when several) and the NUMA nodes whose first CPU it holds.
    let mut packages: BTreeMap<Option<u32>, Vec<&LogicalCpu>> = BTreeMap::new();
    for c in &cpu_list {
        packages.entry(c.package).or_default().push(c);
    }
    let mut placed: BTreeSet<u32> = BTreeSet::new();
    let mut top = Vec::new();
    for (package, members) in &packages {
        let dies: BTreeSet<Option<u32>> = members.iter().map(|c| c.die).collect();
        let show_die = dies.len() > 1;
        // NUMA node -> its CPUs (all of them, wherever they are), for the nodes this package holds first.
        let mut mine: BTreeMap<Option<u32>, (Option<u32>, Vec<&LogicalCpu>)> = BTreeMap::new();
        for c in members {
            let numa = c.numa_node.map(|n| n.id());
            if let Some(id) = numa
                && placed.contains(&id)
            {
                continue;
            }
            mine.entry(numa).or_insert((c.die, Vec::new()));
        }
        for (numa, (_, cpus)) in mine.iter_mut() {
            cpus.extend(cpu_list.iter().filter(|c| {
                c.numa_node.map(|n| n.id()) == *numa && (numa.is_some() || c.package == *package)
            }));
            if let Some(id) = numa {
                placed.insert(*id);
            }
        }
        let label = package.map_or_else(|| "Package ?".to_owned(), |p| format!("Package {p}"));
        let mut node = Node::new("package", "#fbfbf3")
            .data(
                "package",
                package.map_or_else(|| "none".to_owned(), |p| p.to_string()),
            )
            .line(format!("{label} · {} CPUs", members.len()))
            .flow(Flow::Rows(4));
        let socket_devices = package.and_then(|p| state.cpu_devices.by_package.remove(&p));
        node = node.children(cpu_device_row(socket_devices, &highlights));
        let mut by_die: BTreeMap<Option<u32>, Vec<Node>> = BTreeMap::new();
        for (numa, (die, cpus)) in mine {
            let child = match numa {
                Some(id) => numa_box(id, &cpus, show_die, &mut state),
                None => Node::new("cpus-no-numa", "#ffffff")
                    .line("CPUs without a NUMA node")
                    .children(cpus::cpu_box(&cpus, show_die)),
            };
            by_die
                .entry(if show_die { die } else { None })
                .or_default()
                .push(child);
        }
        for (die, children) in by_die {
            match die {
                Some(d) if show_die => {
                    node = node.child(
                        Node::new("die", "#f9f9ee")
                            .data("die", d.to_string())
                            .line(format!("Die {d}"))
                            .flow(Flow::Rows(4))
                            .children(children),
                    );
                }
                _ => node = node.children(children),
            }
        }
        top.push(node);
    }
    // NUMA nodes without CPUs (GPU memory, CXL) or only named by devices.
    for id in numa_ids.difference(&placed).copied().collect::<Vec<_>>() {
        top.push(numa_box(id, &[], false, &mut state));
    }
    let mut no_numa = state.roots_by_numa.remove(&None).unwrap_or_default();
    no_numa.extend(cpu_device_row(
        Some(std::mem::take(&mut state.cpu_devices.elsewhere)).filter(|d| !d.is_empty()),
        &highlights,
    ));
    no_numa.extend(pcie::unattached_rdma(inventory));
    if !no_numa.is_empty() {
        top.push(
            Node::new("numa", "#ffffff")
                .data("numa", "none")
                .line("no NUMA node")
                .children(no_numa),
        );
    }

    Node::new("picture", "#ffffff")
        .child(title(inventory, &cpu_list, &options.title))
        .child(
            Node::new("machine", "#ffffff")
                .flow(Flow::Rows(4))
                .children(top),
        )
        .child(legend(&options.claims))
}

/// What the NUMA boxes take their parts from.
struct State<'a> {
    cpu_devices: CpuDevices,
    roots_by_numa: BTreeMap<Option<u32>, Vec<Node>>,
    memory: BTreeMap<u32, Option<u64>>,
    highlights: &'a Highlights,
}

/// A NUMA node's box: its memory, CPU devices, L3 groups and PCIe roots.
fn numa_box(id: u32, cpus: &[&LogicalCpu], show_die: bool, state: &mut State<'_>) -> Node {
    let mem = state.memory.get(&id).copied().flatten().map(cpus::gib);
    let mut label = format!("NUMA node {id}");
    if let Some(mem) = mem {
        label.push_str(&format!(" · {mem}"));
    }
    if cpus.is_empty() {
        label.push_str(" · no CPUs");
    }
    Node::new("numa", "#ffffff")
        .data("numa", id.to_string())
        .line(label)
        .children(cpu_device_row(
            state.cpu_devices.by_numa.remove(&id),
            state.highlights,
        ))
        .children(cpus::cpu_box(cpus, show_die))
        .children(state.roots_by_numa.remove(&Some(id)).unwrap_or_default())
}

fn place_cpu_device(
    out: &mut CpuDevices,
    cpu: Option<&LogicalCpu>,
    name: String,
    config: &SliceConfig,
) {
    let by_socket = config.cpu_mode == driver::slices::CpuMode::GroupedBySocket;
    match cpu {
        Some(c) if by_socket && c.package.is_some() => {
            out.by_package
                .entry(c.package.unwrap_or_default())
                .or_default()
                .push(name);
        }
        Some(c) if !by_socket && c.numa_node.is_some() => {
            let id = c.numa_node.map(|n| n.id()).unwrap_or_default();
            out.by_numa.entry(id).or_default().push(name);
        }
        _ => out.elsewhere.push(name),
    }
}

/// The CPU devices of a box as small tags, eight to a row.
fn cpu_device_row(names: Option<Vec<String>>, highlights: &Highlights) -> Option<Node> {
    let names = names.filter(|n| !n.is_empty())?;
    let tags = names.into_iter().map(|name| {
        let node = Node::new("device", "#eef7f7")
            .data("device", name.clone())
            .line(name.clone());
        highlights.apply(node, &name)
    });
    Some(
        Node::new("cpu-devices", "#ffffff")
            .flow(Flow::Rows(8))
            .children(tags),
    )
}

fn title(inventory: &Inventory, cpus: &[&LogicalCpu], name: &str) -> Node {
    let numa = inventory.cpu.as_ref().map_or(0, |c| c.numa_nodes.len());
    let packages: BTreeSet<Option<u32>> = cpus.iter().map(|c| c.package).collect();
    let nics = inventory
        .pci
        .iter()
        .filter(|f| f.is_network() && f.physfn.is_none())
        .count();
    let vfs = inventory.pci.iter().filter(|f| f.physfn.is_some()).count();
    Node::new("title", "#ffffff")
        .line(format!("hal-probe draw: {name}"))
        .long_line(format!(
            "{} CPUs online, {} packages, {numa} NUMA nodes; {} GPUs, {nics} network PFs, {vfs} VFs, {} RDMA devices",
            cpus.len(),
            packages.len(),
            inventory.gpus.len(),
            inventory.rdma.len(),
        ))
}

fn legend(claims: &[Claim]) -> Node {
    let mut node = Node::new("legend", "#ffffff")
        .line("legend")
        .long_line(
            "green: GPU · orange: NIC, VF, RDMA function · blue: PCIe root · teal: CPU devices",
        )
        .long_line("a box's first line is the device name the driver publishes");
    for (i, claim) in claims.iter().enumerate() {
        let mut c = Node::new("claim", "#ffffff")
            .data("claim", i.to_string())
            .long_line(format!("claim {}: {}: {}", i + 1, claim.name, claim.status));
        c.stroke = colour(i).to_owned();
        c.stroke_width = 3.0;
        for v in &claim.verdicts {
            c = c.long_line(v.clone());
        }
        if !claim.devices.is_empty() {
            c = c.long_line(format!("devices: {}", claim.devices.join(", ")));
        }
        node = node.child(c);
    }
    node
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests;
