//! The plugin's flags.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use driver::slices::args::SliceArgs;

/// The longest `--rescan-interval`: a day.
pub const MAX_RESCAN_INTERVAL: u64 = 86_400;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The plugin's flags. Those with `env` also read that environment variable (`[env: ...]` in
/// `--help`); the others are flags only. A boolean one read from its variable takes
/// [`BoolishValueParser`]'s words (true: `true`, `yes`, `y`, `on`, `1`, `t`; false: `false`, `no`,
/// `n`, `off`, `0`, `f`; any case).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dra-hal-plugin",
    version,
    about = "DRA kubelet plugin: publishes this node's GPUs, NICs, RDMA devices and CPUs as ResourceSlices \
             and prepares claims through CDI",
    after_help = "Try it on a laptop against any API server (a build with the `fixture` feature):\n  \
                  dra-hal-plugin --fixture gb300 --node-name my-node --kubeconfig ~/.kube/config \\\n    \
                  --kubelet-root-dir /tmp/kubelet --cdi-root /tmp/cdi\n\n\
                  Boolean environment variables (DEVICE_METADATA, POD_NETWORKING, NRI_UNSOLICITED_UPDATES) take\n  \
                  true, yes, y, on, 1 or false, no, n, off, 0 (any case).\n\n\
                  Logging: RUST_LOG filters the log on stderr: a level (trace, debug, info, warn, error, off;\n  \
                  default info) or directives such as info,driver=debug. One that does not parse, or a bare word\n  \
                  that is not a level (warning), is refused at start.\n\n\
                  --counter-layout: ignored by the plugin (a warning when it differs), which publishes the layout\n  \
                  of the API server's version; it is read by hal-probe.\n\n\
                  Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 1 on a startup or serving error or a\n  \
                  second SIGTERM/SIGINT during the shutdown, 2 on bad usage (a flag's value or RUST_LOG refused\n  \
                  at start, before the API server is asked).",
    mut_arg("counter_layout", |arg| arg.help(
        "Ignored by the plugin, which always publishes the layout of the API server's version \
         (same-slice before 1.35, own-slice from 1.35) and warns when this differs; kept so that \
         deployed values that set it still start. hal-probe reads it"
    ))
)]
pub struct PluginArgs {
    /// This node's name: the pool name and the slices' nodeName.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The kubelet's root directory (sockets go to `plugins_registry/` and `plugins/<driver>/` below it).
    #[arg(long, env = "KUBELET_ROOT_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_root_dir: PathBuf,

    /// Where CDI specs are written (the runtime's dynamic CDI directory).
    #[arg(long, env = "CDI_ROOT", default_value = "/var/run/cdi")]
    pub cdi_root: PathBuf,

    /// Where the device nodes the CDI specs name are on the host, when not at their own paths (`/dev/...`):
    /// specs then carry `hostPath` DIR/dev/... (with `--fixture`, a directory of stand-in nodes).
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,

    /// Device metadata (Kubernetes 1.36+, KEP-5304): each prepared request's devices and their attributes
    /// in `/var/run/kubernetes.io/dra-device-attributes/.../<driver>-metadata.json` inside the containers
    /// that use it (a read-only CDI bind mount of a file under the plugin's data directory).
    #[arg(long, env = "DEVICE_METADATA", value_parser = BoolishValueParser::new())]
    pub device_metadata: bool,

    /// A kubeconfig file (any server URL, http:// included): a single file, KUBECONFIG is not read as
    /// a ':'-separated list. Without it: ~/.kube/config if there, else the in-cluster configuration.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Read sysfs under DIR instead of / (a captured tree). NVML, Level Zero and verbs are not used
    /// on it unless DIR is this machine's (the same proc/sys/kernel/random/boot_id).
    #[arg(long, value_name = "DIR", conflicts_with = "fixture")]
    pub sysfs_root: Option<PathBuf>,

    /// Serve an embedded fixture machine (xeon, gb300, i915, hybrid, epyc) instead of this one. Only
    /// in a build with the `fixture` feature (not the default image's).
    #[arg(long, value_name = "NAME")]
    pub fixture: Option<String>,

    /// Vendor and device names from this pci.ids file (default: the system's, if any). A file named
    /// here that cannot be read stops the start.
    #[arg(long, value_name = "FILE")]
    pub pci_ids: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub slices: SliceArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub node_net: driver::podnet::NodeNetArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub cni: driver::podnet::cni::CniArgs,

    /// Seconds between rescans of the hardware, 1 to 86400 (changes are published; an unchanged rescan
    /// costs no API call).
    #[arg(long, env = "RESCAN_INTERVAL", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RESCAN_INTERVAL))]
    pub rescan_interval: u64,

    /// Address of the HTTP endpoint with /metrics (Prometheus) and /healthz; empty to turn it off.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:9464")]
    pub metrics_address: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// A VF provisioning policy (JSON: PF selector → number of VFs, VF driver), applied at start and
    /// again at every rescan interval (read again when the file changes), to PFs none of whose VFs
    /// is prepared. A file that cannot be read or is not a policy at start stops the start.
    #[arg(long, env = "VF_POLICY", value_name = "FILE")]
    pub vf_policy: Option<PathBuf>,

    /// Run the NRI plugin: pin each container carrying a claim's cpuset to it and confine every other
    /// container to the shared CPU pool, through the runtime's NRI socket (containerd 1.7+ or CRI-O
    /// 1.26+, with NRI enabled; see docs/nri.md). The kubelet's cpuManagerPolicy must be `none`.
    #[arg(long)]
    pub nri: bool,

    /// With --nri, attach claims' network functions to their pods at pod sandbox start: CNI mode (a
    /// VfConfig's netAttachDefName, plugins from --cni-bin-dir) and direct mode (a NetworkConfig).
    /// It needs the pods' network namespaces (/var/run/netns) and CAP_NET_ADMIN and CAP_SYS_ADMIN
    /// (the chart's cni.enabled gives them). Without it, a claim that asks for its function's netdev
    /// in the pod is refused at prepare, rather than its pod failing at sandbox start.
    #[arg(long, env = "POD_NETWORKING", value_parser = BoolishValueParser::new())]
    pub pod_networking: bool,

    /// The runtime's NRI socket.
    #[arg(
        long,
        env = "NRI_SOCKET",
        value_name = "PATH",
        default_value = "/var/run/nri/nri.sock"
    )]
    pub nri_socket: PathBuf,

    /// The NRI plugin index: two digits; the runtime calls plugins in ascending order.
    #[arg(long, env = "NRI_INDEX", value_name = "NN", default_value = "10",
          value_parser = driver::nri::plugin::parse_index)]
    pub nri_index: String,

    /// Also move running containers at once when a claim is prepared or unprepared, with unsolicited
    /// NRI UpdateContainers calls. UNSAFE on containerd 1.7.x and 2.1.x (measured on 1.7.24 and
    /// 2.1.9): it deadlocks the runtime's NRI (containerd issue #13733) unless its NRI has
    /// containerd/nri#301. Off: the moves ride on the answers to the runtime's container events.
    #[arg(long, env = "NRI_UNSOLICITED_UPDATES", value_parser = BoolishValueParser::new())]
    pub nri_unsolicited_updates: bool,
}

impl PluginArgs {
    /// The flags of the command line and the environment, checked ([`PluginArgs::checked`]); on an
    /// error clap's message and exit status 2.
    pub fn parse_checked() -> PluginArgs {
        use clap::Parser as _;
        PluginArgs::parse()
            .checked()
            .unwrap_or_else(|error| error.exit())
    }

    /// What clap's attributes cannot say: `--pod-networking` needs `--nri` only when it is true
    /// (`requires` would also refuse `POD_NETWORKING=false`).
    pub fn checked(self) -> Result<PluginArgs, clap::Error> {
        use clap::CommandFactory as _;
        if self.pod_networking && !self.nri {
            let mut command = PluginArgs::command();
            return Err(command.error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--pod-networking (or POD_NETWORKING true) needs --nri: pods' networks are \
                 attached at NRI's pod sandbox events",
            ));
        }
        Ok(self)
    }
}
