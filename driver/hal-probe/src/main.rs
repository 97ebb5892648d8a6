//! `hal-probe`: prints what the hardware-abstraction layer sees on this machine, a captured sysfs tree,
//! or an embedded fixture machine.

use std::path::PathBuf;
use std::process::ExitCode;

use allocator::text::{field_safe, json_safe};
use anyhow::{Context, bail};
use backends::sysfs::pciids::default_pci_ids;
use backends::{SysfsCpuTopology, SysfsPci, SysfsRoot, SysfsSriov};
use clap::{Args as _, CommandFactory, FromArgMatches, Parser, ValueEnum};
use dra_kubelet_plugin::slices::validate_pool;
use driver::inventory::{FixtureVendors as _, Inventory};
use driver::slices::args::SliceArgs;
use driver::slices::build_slices;
use hal_probe::report::{Family, Report, Sources, render_table, terminal_safe};
use hal_probe::yaml::to_yaml;
use k8s_openapi::api::resource::v1::ResourceSlice;

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
                  hal-probe --sysfs-root DUMP --format json cpu\n  \
                  hal-probe explain --fixture gb300 CLAIMS.yaml  would these claims fit here? (explain --help)\n  \
                  hal-probe draw --fixture gb300 -o gb300.svg  the node as a picture (draw --help)\n\n\
                  Fixtures: xeon, gb300, i915, hybrid, epyc.\n\
                  Vendor libraries enrich GPUs and RDMA devices: NVML (libnvidia-ml.so.1) always; Level Zero\n\
                  (libze_loader.so.1) and verbs (libibverbs) in builds with --features level-zero / verbs.\n\
                  A missing one is listed under \"errors\"; on fixtures their recorded answers are used; a\n\
                  --sysfs-root tree gets them only when it is this machine's (the same\n\
                  proc/sys/kernel/random/boot_id: the host's /proc and /sys mounted elsewhere).\n\
                  Unreadable files do not stop the probe: they are listed under \"errors\" and only what\n\
                  depends on them is missing. Exit status: 0 on success (even with errors listed), 1 when\n\
                  nothing could be read, 2 on bad usage."
)]
struct Args {
    #[command(flatten)]
    machine: MachineArgs,

    /// Output format: `table` for people, `json` for programs (a stable contract, see the driver README),
    /// `yaml` (for `slices`, the form `kubectl` shows). `slices` takes yaml (its default) or json.
    #[arg(long, value_enum)]
    format: Option<Format>,

    #[command(flatten)]
    slices: SliceArgs,

    #[command(subcommand)]
    command: Option<Command>,

    /// What to report (default: everything but `slices`).
    #[arg(value_enum)]
    families: Vec<FamilyArg>,
}

/// Which machine to look at.
#[derive(Debug, clap::Args)]
struct MachineArgs {
    /// Read sysfs under DIR instead of / (a captured dump or fixture; DIR holds `sys/`).
    #[arg(long, value_name = "DIR", conflicts_with = "fixture")]
    sysfs_root: Option<PathBuf>,

    /// Probe an embedded fixture machine instead of this one.
    #[arg(long, value_name = "NAME")]
    fixture: Option<String>,

    /// Vendor and device names from this pci.ids file (default: the system's, e.g.
    /// /usr/share/misc/pci.ids, if there is one; names are left out otherwise).
    #[arg(long, value_name = "FILE")]
    pci_ids: Option<PathBuf>,

    /// The node name: the pool of `slices`, and for `explain` the node whose slices count (default:
    /// NODE_NAME, else the fixture's name, else this host's name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Would these claims fit on this node? Which devices would they get, and if not, why?
    ///
    /// Runs each ResourceClaim and ResourceClaimTemplate of the files through Kubernetes' structured
    /// allocation (resource.k8s.io/v1, as the scheduler of --kubernetes-version does it, 1.36 by
    /// default: class and request CEL selectors,
    /// count and allocationMode All, firstAvailable, matchAttribute and distinctAttribute, adminAccess,
    /// consumable capacity, shared counters, taints) against the slices this node would publish, and
    /// prints the allocation, or the smallest reason there is none.
    #[command(after_help = "Examples:\n  \
        hal-probe explain --fixture gb300 deployments/examples/gb300-templates.yaml\n  \
        hal-probe explain --fixture xeon --format json claim.yaml\n  \
        hal-probe explain --slices gpus.yaml --slices nics.yaml --class classes.yaml templates.yaml\n\n\
        Without --fixture, --sysfs-root or --slices: this machine's slices. With only --slices: just those.\n\
        This driver's DeviceClasses (deployments/deviceclasses) are built in. Each claim is explained\n\
        on its own, against the devices that --allocated claims hold; a Pod's (or workload's) claims,\n\
        those its resourceClaims name and the implicit one of its extended resources, are searched\n\
        together, as the scheduler allocates them.\n\
        Exit status: 0 when every claim fits, 3 when one does not, the search gave up (--max-steps) or the scheduler would fail it with an error, 1 on bad input, 2 on bad usage.")]
    Explain(ExplainArgs),
    /// The node as a picture: CPUs, NUMA nodes, PCIe roots and the devices the driver publishes.
    ///
    /// Packages, dies, NUMA nodes (with memory), L3 groups and runs of alike cores; under each NUMA
    /// node its PCIe roots with the bridges, GPUs, NICs (VFs under their PF, folded when more than
    /// four), RDMA devices and their char devices, each labelled with its published device name.
    #[command(after_help = "Examples:\n  \
        hal-probe draw --fixture gb300 -o gb300.svg\n  \
        hal-probe draw --format png -o node.png          this machine\n  \
        hal-probe draw --sysfs-root DUMP > dump.svg\n\n\
        SVG goes to stdout without -o; PNG needs -o or a stdout that is not a terminal.\n\
        `hal-probe explain --draw FILE ...` highlights the devices the claims would get.")]
    Draw(DrawArgs),
}

#[derive(Debug, clap::Args)]
struct DrawArgs {
    #[command(flatten)]
    machine: MachineArgs,

    /// Picture format.
    #[arg(long, value_enum, default_value = "svg")]
    format: DrawFormat,

    /// Write the picture to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    slice_flags: SliceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DrawFormat {
    Svg,
    Png,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    machine: MachineArgs,

    /// Output format (default: table).
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Files of DeviceClasses (other drivers'; they override built-in classes of the same name).
    #[arg(long = "class", value_name = "FILE")]
    classes: Vec<PathBuf>,

    /// Files of extra ResourceSlices (other drivers' on this node; a `kubectl get -o yaml` List works).
    #[arg(long = "slices", value_name = "FILE")]
    slices: Vec<PathBuf>,

    /// Files of allocated ResourceClaims (`kubectl get resourceclaims -A -o yaml`): their devices are in use.
    #[arg(long = "allocated", value_name = "FILE")]
    allocated: Vec<PathBuf>,

    /// Leave out this driver's built-in DeviceClasses.
    #[arg(long)]
    no_builtin_classes: bool,

    /// Device tries before the search gives up on a claim.
    #[arg(long, value_name = "N", default_value_t = allocator::DEFAULT_STEP_LIMIT)]
    max_steps: u64,

    /// Allocate as the scheduler of this Kubernetes version does (1.34, 1.35 or 1.36; `v1.35.2`
    /// works too). It also decides where this node's slices put shared counters unless
    /// --counter-layout says.
    #[arg(long, value_name = "VERSION", default_value_t = allocator::KubernetesVersion::NEWEST.to_string())]
    kubernetes_version: String,

    /// DRA feature gates that differ from the version's defaults, as the kube-scheduler and API
    /// server take them (`DRAPartitionableDevices=true,DRAConsumableCapacity=true`). With a gate
    /// off, the fields behind it are dropped from slices and claims as the API server drops them.
    /// Modeled: DRAPartitionableDevices, DRADeviceTaints, DRAConsumableCapacity,
    /// DRADeviceBindingConditions, DRAExtendedResource (alpha, off, in 1.34 and 1.35),
    /// DRAAdminAccess, DRAPrioritizedList
    #[arg(long, value_name = "GATES")]
    feature_gates: Option<String>,

    /// The node's labels (`rack=r1,zone=a`), for slices and devices that select nodes by label
    /// (`kubernetes.io/hostname` is the node name unless given).
    #[arg(long, value_name = "LABELS", value_parser = hal_probe::explain::parse_labels)]
    node_labels: Option<std::collections::BTreeMap<String, String>>,

    #[command(flatten)]
    slice_flags: SliceArgs,

    /// Also draw the node with the devices each claim would get highlighted (PNG when FILE ends in
    /// `.png`, SVG otherwise; see `hal-probe draw`).
    #[arg(long, value_name = "FILE")]
    draw: Option<PathBuf>,

    /// ResourceClaim and ResourceClaimTemplate files (YAML or JSON, several documents each); Pods
    /// and workloads (Deployment, Job, ...) are explained with their claims (`resourceClaims`) and
    /// extended resources in one search, Namespaces for adminAccess.
    #[arg(required = true, value_name = "CLAIMS.yaml")]
    claims: Vec<PathBuf>,
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
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            say(format!("{e:#} (see --help)"));
            ExitCode::from(2)
        }
        Err(e) => {
            say(format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stderr as `hal-probe: text`, with control characters written out: errors and
/// notes quote names from the tree and the input files.
fn say(text: impl AsRef<str>) {
    eprintln!("hal-probe: {}", terminal_safe(text.as_ref()));
}

/// Bad usage found after parsing: exit status 2, as for what clap finds.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The slice flags given before a subcommand, which only the subcommand's own take
/// (`hal-probe explain --cpu-mode individual ...`); and `--format` before `draw`, which has its own.
fn misplaced_flags(matches: &clap::ArgMatches, args: &Args) -> Vec<String> {
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let slice_flags = SliceArgs::augment_args(clap::Command::new("slices"));
    let mut misplaced: Vec<String> = slice_flags
        .get_arguments()
        .filter(|a| given(a.get_id().as_str()))
        .filter_map(|a| a.get_long().map(|long| format!("--{long}")))
        .collect();
    if matches!(args.command, Some(Command::Draw(_))) && given("format") {
        misplaced.push("--format".to_owned());
    }
    misplaced
}

fn run() -> anyhow::Result<ExitCode> {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(command) = &args.command {
        let misplaced = misplaced_flags(&matches, &args);
        if !misplaced.is_empty() {
            let name = match command {
                Command::Explain(_) => "explain",
                Command::Draw(_) => "draw",
            };
            return Err(usage(format!(
                "{} must come after `{name}` (hal-probe {name} {} ...)",
                misplaced.join(", "),
                misplaced.join(" ")
            )));
        }
    }
    if let Some(Command::Explain(mut explain)) = args.command {
        // `hal-probe --fixture gb300 explain ...` means the same as `hal-probe explain --fixture gb300 ...`.
        merge_machine(args.machine, &mut explain.machine)?;
        explain.format = explain.format.or(args.format);
        // Selectors are parsed and evaluated recursively: on a thread with the stack the
        // allocator needs for the deepest expression it accepts.
        return std::thread::Builder::new()
            .name("explain".into())
            .stack_size(allocator::STACK_BYTES)
            .spawn(move || run_explain(explain))?
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the explain thread panicked")));
    }
    if let Some(Command::Draw(mut draw)) = args.command {
        merge_machine(args.machine, &mut draw.machine)?;
        return run_draw(draw);
    }
    let want_slices = args.families.contains(&FamilyArg::Slices);
    if want_slices && args.families.len() > 1 {
        return Err(usage("`slices` cannot be combined with other families"));
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

    if want_slices && args.format == Some(Format::Table) {
        return Err(usage(
            "--format table: `slices` prints yaml (the default) or json, not a table",
        ));
    }
    let machine = Machine::open(&args.machine)?;
    if want_slices {
        let slices = machine.slices(&args.machine, &args.slices)?;
        match args.format.unwrap_or(Format::Yaml) {
            Format::Json => emit(&(json_safe(serde_json::to_string_pretty(&slices)?) + "\n"))?,
            // Table is refused above.
            Format::Yaml | Format::Table => {
                let mut text = String::new();
                for slice in &slices {
                    text.push_str("---\n");
                    text.push_str(&to_yaml(&serde_json::to_value(slice)?));
                }
                emit(&text)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let root = machine.root.clone();
    let topology = SysfsCpuTopology::new(root.clone());
    let mut pci = SysfsPci::new(root.clone());
    if let Some(ids) = machine.pci_ids.clone() {
        pci = pci.with_pci_ids(ids);
    }
    let sriov = SysfsSriov::new(root.clone());
    let vendors = driver::inventory::Vendors::for_root(&root, args.machine.fixture.as_deref());
    let (gpus, rdma) = vendors.enrich(&root);
    let sources = Sources {
        cpu: &topology,
        pci: &pci,
        sriov: &sriov,
        rdma: rdma.as_ref(),
        gpus: gpus.as_ref(),
    };
    let report = Report::collect(&sources, &families);
    if report.is_empty() {
        for e in &report.errors {
            say(field_safe(&e.error));
        }
        bail!("nothing could be read");
    }
    match args.format.unwrap_or(Format::Table) {
        Format::Json => emit(&(report.to_json() + "\n"))?,
        Format::Yaml => emit(&to_yaml(&serde_json::to_value(&report)?))?,
        Format::Table => emit(&terminal_safe(&render_table(&report)))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills what `inner` (a subcommand's flags) leaves unset from `outer` (the flags before it).
fn merge_machine(outer: MachineArgs, inner: &mut MachineArgs) -> anyhow::Result<()> {
    inner.fixture = inner.fixture.take().or(outer.fixture);
    inner.sysfs_root = inner.sysfs_root.take().or(outer.sysfs_root);
    inner.pci_ids = inner.pci_ids.take().or(outer.pci_ids);
    inner.node_name = inner.node_name.take().or(outer.node_name);
    if inner.fixture.is_some() && inner.sysfs_root.is_some() {
        return Err(usage("--fixture and --sysfs-root cannot be used together"));
    }
    Ok(())
}

/// `hal-probe draw`.
fn run_draw(args: DrawArgs) -> anyhow::Result<ExitCode> {
    let machine = Machine::open(&args.machine)?;
    let svg = machine.draw(&args.machine, &args.slice_flags, Vec::new())?;
    write_picture(&svg, args.format == DrawFormat::Png, args.output.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a picture to `path`, or to stdout (PNG only when stdout is not a terminal).
fn write_picture(svg: &str, png: bool, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let bytes = match png {
        true => hal_probe::draw::svg_to_png(svg)?,
        false => svg.as_bytes().to_vec(),
    };
    match path {
        Some(path) => std::fs::write(path, &bytes)
            .with_context(|| format!("writing the picture to {}", path.display())),
        None if png && std::io::stdout().is_terminal() => Err(usage(
            "a PNG is not written to a terminal: give -o FILE or redirect stdout",
        )),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(&bytes).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("writing to stdout"))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Writes the output to stdout in one go. A reader that has gone (`hal-probe | head`) ends the output
/// quietly, as it does for other Unix tools, instead of a panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// `hal-probe explain`.
fn run_explain(mut args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let version = allocator::KubernetesVersion::parse(&args.kubernetes_version)
        .map_err(|e| usage(format!("--kubernetes-version: {e}")))?;
    let mut gates = allocator::FeatureGates::defaults(version);
    if let Some(list) = &args.feature_gates {
        gates
            .set(list)
            .map_err(|e| usage(format!("--feature-gates: {e}")))?;
    }
    // This node's slices in the layout the version's API server accepts.
    if args.slice_flags.counter_layout.is_none() {
        args.slice_flags.counter_layout = Some(match version.counters_beside_devices() {
            true => driver::slices::args::CounterLayoutArg::SameSlice,
            false => driver::slices::args::CounterLayoutArg::OwnSlice,
        });
    }
    let m = &args.machine;
    // With only --slices, just those; otherwise this node's slices too.
    let machine = match (&m.fixture, &m.sysfs_root, args.slices.is_empty()) {
        (None, None, false) => None,
        _ => Some(Machine::open(m)?),
    };
    if args.draw.is_some() && machine.is_none() {
        return Err(usage(
            "--draw needs a machine: --fixture, --sysfs-root, or this one (without only --slices)",
        ));
    }
    let node_slices = match &machine {
        None => Vec::new(),
        Some(machine) => machine.slices(m, &args.slice_flags)?,
    };
    let node = match node_slices.is_empty() {
        true => m.node_name.clone().filter(|name| !name.is_empty()),
        false => Some(node_name(m)),
    };
    let request = hal_probe::explain::Request {
        claims: args.claims.clone(),
        classes: args.classes,
        slices: args.slices,
        allocated: args.allocated,
        node,
        node_labels: args.node_labels.unwrap_or_default(),
        no_builtin_classes: args.no_builtin_classes,
        driver_name: args.slice_flags.driver_name.clone(),
        step_limit: Some(args.max_steps),
        version,
        gates,
    };
    let report = hal_probe::explain::explain(&request, node_slices)?;
    // Notes are one line each, and name pods, nodes and documents of the user's files.
    for note in &report.notes {
        say(field_safe(note));
    }
    match args.format.unwrap_or(Format::Table) {
        Format::Json => emit(&(json_safe(serde_json::to_string_pretty(&report.claims)?) + "\n"))?,
        Format::Yaml => emit(&to_yaml(&serde_json::to_value(&report.claims)?))?,
        Format::Table => emit(&terminal_safe(&allocator::render_table(&report.claims)))?,
    }
    if let (Some(path), Some(machine)) = (&args.draw, &machine) {
        let pool = node_name(m);
        let claims = report
            .claims
            .iter()
            .map(|o| hal_probe::draw::Claim::from_outcome(o, &args.slice_flags.driver_name, &pool))
            .collect();
        let svg = machine.draw(m, &args.slice_flags, claims)?;
        let png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        write_picture(&svg, png, Some(path))?;
    }
    let all_fit = report
        .claims
        .iter()
        .all(|c| c.status == allocator::Status::Allocated);
    Ok(if all_fit {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The machine a command looks at: a sysfs root (a materialized fixture is kept alive here).
struct Machine {
    root: SysfsRoot,
    pci_ids: Option<PathBuf>,
    _fixture: Option<hal_mock::MaterializedFixture>,
}

impl Machine {
    fn open(args: &MachineArgs) -> anyhow::Result<Machine> {
        let mut fixture = None;
        let root = match (&args.fixture, &args.sysfs_root) {
            (Some(name), _) => {
                let machine = hal_mock::by_name(name).map_err(anyhow::Error::msg)?;
                let materialized = machine
                    .materialize()
                    .with_context(|| format!("writing fixture {name}"))?;
                let root = SysfsRoot::new(materialized.root());
                fixture = Some(materialized);
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
        Ok(Machine {
            root,
            pci_ids: args.pci_ids.clone().or_else(default_pci_ids),
            _fixture: fixture,
        })
    }

    /// The inventory the driver would publish from, its errors printed.
    fn inventory(&self, args: &MachineArgs) -> Inventory {
        let vendors = driver::inventory::Vendors::for_root(&self.root, args.fixture.as_deref());
        let inventory = Inventory::from_machine(&self.root, self.pci_ids.as_deref(), vendors);
        for e in &inventory.errors {
            say(&e.error);
        }
        inventory
    }

    /// The picture of this machine (SVG), with the devices of `claims` highlighted.
    fn draw(
        &self,
        args: &MachineArgs,
        flags: &SliceArgs,
        claims: Vec<hal_probe::draw::Claim>,
    ) -> anyhow::Result<String> {
        let node = node_name(args);
        let config = flags.config(&node).map_err(anyhow::Error::msg)?;
        let options = hal_probe::draw::Options {
            title: node,
            claims,
        };
        Ok(hal_probe::draw::draw_svg(
            &self.inventory(args),
            &config,
            &options,
        ))
    }

    /// The ResourceSlices the driver would publish here, checked as the API server of the
    /// Kubernetes version they are laid out for would: 1.35 for counter sets in slices of their own
    /// (`--counter-layout own-slice`, or `explain --kubernetes-version` 1.35 and later), else 1.34.
    fn slices(&self, args: &MachineArgs, flags: &SliceArgs) -> anyhow::Result<Vec<ResourceSlice>> {
        let config = flags.config(&node_name(args)).map_err(anyhow::Error::msg)?;
        let mut inventory = self.inventory(args);
        // As the plugin does: the node's own network (default-route interfaces and their members)
        // is never published. The InternalIP needs the API server, which hal-probe does not ask.
        let files = driver::podnet::TreeFiles(backends::sysfs::tree::Tree::open(&self.root));
        let node = driver::podnet::hostnet::NodeNetwork::read(&files, &[]);
        for (address, why) in driver::podnet::withhold(&mut inventory, &config, &node, &[], None) {
            say(format!("{address} not published: {why}"));
        }
        let slices = build_slices(&inventory, &config, 0);
        let version = driver::publish::kube_version(&config);
        let problems = validate_pool(&slices, version);
        if !problems.is_empty() {
            for p in &problems {
                say(p.to_string());
            }
            bail!(
                "the slices would be rejected by the API server of Kubernetes {version} (a bug: \
                 please report it)"
            );
        }
        Ok(slices)
    }
}

/// The node name: --node-name or NODE_NAME, else the fixture's name, else this host's.
fn node_name(args: &MachineArgs) -> String {
    // An empty NODE_NAME (set but blank in a shell) is no name.
    args.node_name
        .clone()
        .filter(|name| !name.is_empty())
        .or_else(|| args.fixture.clone())
        .or_else(hostname)
        .unwrap_or_else(|| "node".to_owned())
}

/// This host's name, lower-cased, from the kernel.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}
