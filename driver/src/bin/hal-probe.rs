//! `hal-probe`: prints what the hardware-abstraction layer sees on this machine, a captured sysfs tree,
//! or an embedded fixture machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use backends::sysfs::pciids::default_pci_ids;
use backends::{SysfsCpuTopology, SysfsGpu, SysfsPci, SysfsRdma, SysfsRoot, SysfsSriov};
use clap::{Parser, ValueEnum};
use driver::probe::{Family, Report, Sources, render_table};

#[derive(Debug, Parser)]
#[command(
    name = "hal-probe",
    version,
    about = "Show what the DRA hardware-abstraction layer sees: CPUs, caches, NUMA nodes, PCI functions, SR-IOV, RDMA, GPUs and their topology",
    after_help = "Examples:\n  hal-probe                           the real machine (reads /sys)\n  \
                  hal-probe --fixture xeon cpu        an embedded fixture machine\n  \
                  hal-probe pci sriov                 only PCI functions and SR-IOV\n  \
                  hal-probe --fixture gb300 topology  GPU/NIC matrix like nvidia-smi topo -m\n  \
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

    /// Output format: `table` for people, `json` for programs (a stable contract, see the driver README).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Vendor and device names from this pci.ids file (default: the system's, e.g.
    /// /usr/share/misc/pci.ids, if there is one; names are left out otherwise).
    #[arg(long, value_name = "FILE")]
    pci_ids: Option<PathBuf>,

    /// What to report (default: everything).
    #[arg(value_enum)]
    families: Vec<FamilyArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
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
    let families: Vec<Family> = if args.families.is_empty() {
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

    let topology = SysfsCpuTopology::new(root.clone());
    let mut pci = SysfsPci::new(root.clone());
    if let Some(ids) = args.pci_ids.clone().or_else(default_pci_ids) {
        pci = pci.with_pci_ids(ids);
    }
    let sriov = SysfsSriov::new(root.clone());
    let rdma = SysfsRdma::new(root.clone());
    let gpus = SysfsGpu::new(root);
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
    match args.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Table => print!("{}", render_table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
