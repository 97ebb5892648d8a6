//! `hal-probe`: prints what the hardware-abstraction layer sees on this machine, a captured sysfs tree,
//! or an embedded fixture machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use backends::{SysfsCpuTopology, SysfsRoot};
use clap::{Parser, Subcommand, ValueEnum};
use driver::probe::{Family, Report, render_table};

#[derive(Debug, Parser)]
#[command(
    name = "hal-probe",
    version,
    about = "Show what the DRA hardware-abstraction layer sees: CPUs, cores, caches and NUMA nodes",
    after_help = "Examples:\n  hal-probe                           the real machine (reads /sys)\n  \
                  hal-probe --fixture xeon cpu     an embedded fixture machine\n  \
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

    #[command(subcommand)]
    family: Option<FamilyArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum FamilyArg {
    /// CPUs, cores, L3 caches, core types and NUMA nodes (the default).
    Cpu,
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
    let families = match args.family {
        None | Some(FamilyArg::Cpu) => vec![Family::Cpu],
    };

    // Keeps a materialized fixture alive (its directory is removed on drop).
    let mut _fixture = None;
    let root = match (&args.fixture, &args.sysfs_root) {
        (Some(name), _) => {
            let Some(machine) = hal_mock::by_name(name) else {
                bail!(
                    "unknown fixture {name:?}; known fixtures: {}",
                    hal_mock::FIXTURES.join(", ")
                );
            };
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
            SysfsRoot::new(dir)
        }
        (None, None) => SysfsRoot::default(),
    };

    let topology = SysfsCpuTopology::new(root);
    let report = Report::collect(&topology, &families);
    if report.cpu.is_none() {
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
