//! `hal-probe`: prints what the hardware-abstraction layer sees on this machine, a captured sysfs tree,
//! or an embedded fixture machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use backends::sysfs::pciids::default_pci_ids;
use backends::{SysfsCpuTopology, SysfsGpu, SysfsPci, SysfsRdma, SysfsRoot, SysfsSriov};
use clap::{Parser, ValueEnum};
use driver::inventory::Inventory;
use driver::probe::{Family, Report, Sources, render_table};
use driver::slices::args::SliceArgs;
use driver::slices::build_slices;
use driver::slices::validate::validate_pool;
use driver::yaml::to_yaml;

#[derive(Debug, Parser)]
#[command(
    name = "hal-probe",
    version,
    about = "Show what the DRA hardware-abstraction layer sees: CPUs, caches, NUMA nodes, PCI functions, SR-IOV, RDMA, GPUs and their topology",
    after_help = "Examples:\n  hal-probe                           the real machine (reads /sys)\n  \
                  hal-probe --fixture xeon cpu        an embedded fixture machine\n  \
                  hal-probe pci sriov                 only PCI functions and SR-IOV\n  \
                  hal-probe --fixture gb300 topology  GPU/NIC matrix like nvidia-smi topo -m\n  \
                  hal-probe --fixture gb300 slices    the ResourceSlices the driver would publish\n  \
                  hal-probe --sysfs-root DUMP --format json cpu\n\n\
                  Fixtures: xeon, gb300, i915, hybrid, epyc.\n\
                  Unreadable files do not stop the probe: they are listed under \"errors\" and only what\n\
                  depends on them is missing. Exit status: 0 on success (even with errors listed), 1 when\n\
                  nothing could be read, 2 on bad usage."
)]
struct Args {
    /// Read sysfs under DIR instead of / (a captured dump or fixture; DIR holds `sys/`).
    #[arg(long, value_name = "DIR", conflicts_with = "fixture")]
    sysfs_root: Option<PathBuf>,

    /// Probe an embedded fixture machine instead of this one.
    #[arg(long, value_name = "NAME")]
    fixture: Option<String>,

    /// Output format: `table` for people, `json` for programs (a stable contract, see the driver README),
    /// `yaml` (for `slices`, the form `kubectl` shows). `slices` defaults to yaml.
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Vendor and device names from this pci.ids file (default: the system's, e.g.
    /// /usr/share/misc/pci.ids, if there is one; names are left out otherwise).
    #[arg(long, value_name = "FILE")]
    pci_ids: Option<PathBuf>,

    /// The node name of `slices` (the pool name; default: NODE_NAME, else the fixture's name, else this
    /// host's name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,

    #[command(flatten)]
    slices: SliceArgs,

    /// What to report (default: everything but `slices`).
    #[arg(value_enum)]
    families: Vec<FamilyArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FamilyArg {
    /// CPUs, cores, L3 caches, core types and NUMA nodes.
    Cpu,
    /// PCI functions: ids, class, driver, NUMA node, PCIe root, interfaces.
    Pci,
    /// SR-IOV physical functions and their VFs.
    Sriov,
    /// RDMA devices: PCI function, ports, netdevs (none: IB-only), char devices.
    Rdma,
    /// GPUs: PCI function, driver, DRM nodes, NVIDIA minor and UUID, memory.
    Gpus,
    /// GPU/NIC pairs: same PCIe root (PIX/PXB/PHB), same NUMA node (NODE) or not (SYS).
    Topology,
    /// The ResourceSlices the driver would publish on this node (alone; see the slice flags).
    Slices,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hal-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let want_slices = args.families.contains(&FamilyArg::Slices);
    if want_slices && args.families.len() > 1 {
        bail!("`slices` cannot be combined with other families");
    }
    let families: Vec<Family> = if args.families.is_empty() || want_slices {
        Family::ALL.to_vec()
    } else {
        args.families
            .iter()
            .map(|f| match f {
                FamilyArg::Cpu => Family::Cpu,
                FamilyArg::Pci => Family::Pci,
                FamilyArg::Sriov => Family::Sriov,
                FamilyArg::Rdma => Family::Rdma,
                FamilyArg::Gpus => Family::Gpus,
                FamilyArg::Topology => Family::Topology,
                FamilyArg::Slices => Family::Topology,
            })
            .collect()
    };

    // Keeps a materialized fixture alive (its directory is removed on drop).
    let mut _fixture = None;
    let root = match (&args.fixture, &args.sysfs_root) {
        (Some(name), _) => {
            let machine = hal_mock::by_name(name).map_err(anyhow::Error::msg)?;
            let materialized = machine
                .materialize()
                .with_context(|| format!("writing fixture {name}"))?;
            let root = SysfsRoot::new(materialized.root());
            _fixture = Some(materialized);
            root
        }
        (None, Some(dir)) => {
            if !dir.is_dir() {
                bail!("--sysfs-root {}: not a directory", dir.display());
            }
            if !dir.join("sys").is_dir() {
                bail!(
                    "--sysfs-root {}: no sys/ directory inside (give the directory that contains sys/)",
                    dir.display()
                );
            }
            SysfsRoot::new(dir)
        }
        (None, None) => SysfsRoot::default(),
    };

    let pci_ids = args.pci_ids.clone().or_else(default_pci_ids);
    if want_slices {
        let node = args
            .node_name
            .clone()
            .or_else(|| args.fixture.clone())
            .or_else(hostname)
            .unwrap_or_else(|| "node".to_owned());
        let config = args.slices.config(&node).map_err(anyhow::Error::msg)?;
        let nvml = driver::inventory::nvml_for(args.fixture.as_deref());
        let inventory = Inventory::from_machine(&root, pci_ids.as_deref(), Some(nvml));
        for e in &inventory.errors {
            eprintln!("hal-probe: {}", e.error);
        }
        let slices = build_slices(&inventory, &config, 0);
        let problems = validate_pool(&slices);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("hal-probe: {p}");
            }
            bail!("the slices would be rejected by the API server (a bug: please report it)");
        }
        match args.format.unwrap_or(Format::Yaml) {
            Format::Json => println!("{}", serde_json::to_string_pretty(&slices)?),
            Format::Yaml | Format::Table => {
                for slice in &slices {
                    print!("---\n{}", to_yaml(&serde_json::to_value(slice)?));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let topology = SysfsCpuTopology::new(root.clone());
    let mut pci = SysfsPci::new(root.clone());
    if let Some(ids) = pci_ids {
        pci = pci.with_pci_ids(ids);
    }
    let sriov = SysfsSriov::new(root.clone());
    let rdma = SysfsRdma::new(root.clone());
    let gpus = backends::nvml::NvmlGpus::new(
        SysfsGpu::new(root),
        driver::inventory::nvml_for(args.fixture.as_deref()),
    );
    let sources = Sources {
        cpu: &topology,
        pci: &pci,
        sriov: &sriov,
        rdma: &rdma,
        gpus: &gpus,
    };
    let report = Report::collect(&sources, &families);
    if report.is_empty() {
        for e in &report.errors {
            eprintln!("hal-probe: {}", e.error);
        }
        bail!("nothing could be read");
    }
    match args.format.unwrap_or(Format::Table) {
        Format::Json => println!("{}", report.to_json()),
        Format::Yaml => print!("{}", to_yaml(&serde_json::to_value(&report)?)),
        Format::Table => print!("{}", render_table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// This host's name, lower-cased, from the kernel.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}
