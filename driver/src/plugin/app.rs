//! The plugin process: flags, and [`run`], which wires the inventory, the ResourceSlice publisher, the
//! claim preparer, the kubelet sockets, metrics and health together until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};

use super::cdi::CdiDir;
use super::checkpoint::CheckpointFile;
use super::grpc::{
    HealthService, PluginSockets, RegistrationService, RegistrationState, acquire_instance_lock,
    serve,
};
use super::metrics::{Metered, Metrics};
use super::prepare::{ClaimSource, KubeClaims, Preparer, PreparerConfig};
use crate::inventory::{FixtureVendors as _, Inventory};
use crate::publish::{Publisher, publish_loop};
use crate::slices::SliceConfig;
use crate::slices::args::SliceArgs;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The plugin's flags. Each has an environment variable fallback, for DaemonSet manifests.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dra-hal-plugin",
    version,
    about = "DRA kubelet plugin: publishes this node's GPUs, NICs, RDMA devices and CPUs as ResourceSlices \
             and prepares claims through CDI",
    after_help = "Try it on a laptop against any API server:\n  \
                  dra-hal-plugin --fixture gb300 --node-name my-node --kubeconfig ~/.kube/config \\\n    \
                  --kubelet-root-dir /tmp/kubelet --cdi-root /tmp/cdi\n\n\
                  Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 1 on a startup or serving error, 2 on bad usage."
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
    #[arg(long, env = "DEVICE_METADATA")]
    pub device_metadata: bool,

    /// A kubeconfig file (any server URL, http:// included); in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Read sysfs under DIR instead of / (a captured tree). NVML, Level Zero and verbs are not used
    /// on it unless DIR is this machine's (the same proc/sys/kernel/random/boot_id).
    #[arg(long, value_name = "DIR", conflicts_with = "fixture")]
    pub sysfs_root: Option<PathBuf>,

    /// Serve an embedded fixture machine (xeon, gb300, i915, hybrid, epyc) instead of this one.
    #[arg(long, value_name = "NAME")]
    pub fixture: Option<String>,

    /// Vendor and device names from this pci.ids file (default: the system's, if any).
    #[arg(long, value_name = "FILE")]
    pub pci_ids: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub slices: SliceArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub node_net: crate::podnet::NodeNetArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub cni: crate::podnet::cni::CniArgs,

    /// Seconds between rescans of the hardware (changes are published; an unchanged rescan costs no API call).
    #[arg(long, env = "RESCAN_INTERVAL", default_value_t = 60)]
    pub rescan_interval: u64,

    /// Address of the HTTP endpoint with /metrics (Prometheus) and /healthz; empty to turn it off.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:9464")]
    pub metrics_address: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// A VF provisioning policy (JSON: PF selector → number of VFs, VF driver), applied at start and
    /// whenever the file changes, to PFs none of whose VFs is prepared.
    #[arg(long, env = "VF_POLICY", value_name = "FILE")]
    pub vf_policy: Option<PathBuf>,

    /// Run the NRI plugin: pin each container carrying a claim's cpuset to it and confine every other
    /// container to the shared CPU pool, through the runtime's NRI socket (containerd 1.7+ or CRI-O
    /// 1.26+, with NRI enabled; see docs/nri.md). The kubelet's cpuManagerPolicy must be `none`.
    #[arg(long)]
    pub nri: bool,

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
          value_parser = crate::nri::plugin::parse_index)]
    pub nri_index: String,

    /// Also move running containers at once when a claim is prepared or unprepared, with unsolicited
    /// NRI UpdateContainers calls. UNSAFE on containerd 1.7.x and 2.1.x (measured on 1.7.24 and
    /// 2.1.9): it deadlocks the runtime's NRI (containerd issue #13733) unless its NRI has
    /// containerd/nri#301. Off: the moves ride on the answers to the runtime's container events.
    #[arg(long, env = "NRI_UNSOLICITED_UPDATES")]
    pub nri_unsolicited_updates: bool,
}

/// Starts logging (`RUST_LOG` filters, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A kube client from `--kubeconfig`, else in-cluster (or the default kubeconfig).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no in-cluster configuration")?,
    };
    // Every response must start within a deadline (`crate::api`): a hung API server fails the call
    // instead of holding it, and with it a claim's Prepare.
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&crate::api::call_timeout_layer())
        .build())
}

/// Runs the plugin until `shutdown` resolves: the claim handler serves the kubelet, the publisher keeps
/// the slices current. On shutdown the sockets are removed (deregistration) after in-flight calls end,
/// so the checkpoint is left consistent.
pub async fn run(
    args: PluginArgs,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (mut config, root, _fixture) = machine(&args)?;
    let (major, minor) = server_version_of(&client).await;
    if args.slices.counter_layout.is_none() {
        config.counter_layout = counter_layout_for(&major, &minor);
    }
    config.informational_taints = informational_taints_for(&major, &minor);
    tracing::debug!(layout = ?config.counter_layout, informational_taints = config.informational_taints,
        "API server {major}.{minor}");
    let pci_ids = args
        .pci_ids
        .clone()
        .or_else(backends::sysfs::pciids::default_pci_ids);
    // Device health across rescans (critical XIDs, devices gone, links down, CPUs offline),
    // published as taints and to the kubelet's health streams.
    let health = Arc::new(std::sync::Mutex::new(crate::health::Health::with_grace(
        Duration::from_secs(args.rescan_interval.max(1)),
    )));
    // The node's own network (default routes, InternalIP) and --exclude-interfaces/--device-filter.
    let node_guard = crate::podnet::NodeGuard::new(
        root.root(),
        crate::podnet::internal_ips(&client, &config.node_name).await,
        args.node_net.clone(),
    )?;
    let read_inventory = {
        let root = root.clone();
        let fixture = args.fixture.clone();
        let health = health.clone();
        let config = config.clone();
        move || {
            let vendors = crate::inventory::Vendors::for_root(&root, fixture.as_deref());
            let mut inventory = Inventory::from_machine(&root, pci_ids.as_deref(), vendors);
            let withheld = node_guard.apply(&mut inventory, &config);
            if let Ok(mut health) = health.lock() {
                // A function withheld from publishing (the node's own NIC) is not missing.
                health.forget_functions(
                    withheld
                        .keys()
                        .filter_map(|address| hal::PciAddress::parse(address).ok()),
                );
                health.apply(&mut inventory);
            }
            inventory
        }
    };
    let inventory = Arc::new(RwLock::new(read_inventory()));
    let sockets = PluginSockets::new(&args.kubelet_root_dir, &config.driver_name)?;
    let _lock = acquire_instance_lock(sockets.plugin_dir()).await?;
    let boot_id = crate::inventory::boot_id(root.root()).unwrap_or_else(|| "unknown".to_owned());
    let claims: Arc<dyn ClaimSource> = Arc::new(KubeClaims(client.clone()));
    // Writes go to the kernel on a node, and to the fixture's emulated kernel on a fixture.
    let writer: Arc<dyn hal::AttributeWriter> = match &args.fixture {
        Some(name) => Arc::new(
            crate::fixtures::by_name(name)
                .map_err(anyhow::Error::msg)?
                .kernel(root.root()),
        ),
        None => Arc::new(backends::FileWriter::new(root.root())),
    };
    let binder: Arc<dyn hal::SriovPf> =
        Arc::new(backends::SysfsSriov::with_writer(root.clone(), writer));
    // One file per claim; a `checkpoint.json` of earlier versions is moved into it at start.
    let checkpoint = sockets.plugin_dir().join("checkpoint");
    let preparer = Preparer::new(
        PreparerConfig {
            slices: config.clone(),
            // The checkpoint holds each spec and writes it again after a reboot: no fsync needed.
            cdi: CdiDir::new(&args.cdi_root).unsynced(),
            checkpoint: CheckpointFile::new(&checkpoint),
            boot_id,
            binder,
            gpus: Arc::new(backends::SysfsGpu::new(root.clone())),
            dev_root: args.dev_root.clone(),
        },
        claims,
        inventory.clone(),
    )
    .with_context(|| format!("loading the checkpoint {}", checkpoint.display()))?;
    let preparer = match args.device_metadata {
        true => preparer.with_device_metadata(sockets.plugin_dir()),
        false => preparer,
    };
    let cpu_claims = preparer.cpu_claims();
    // CNI mode at pod sandbox start (through NRI): the claims from the checkpoint, read only.
    let pod_network = crate::nri::sandbox::PodNetwork::for_plugin(
        &args.cni,
        sockets.plugin_dir(),
        checkpoint.clone(),
        client.clone(),
        &config.driver_name,
        &config.node_name,
    );
    let metrics = Arc::new(Metrics::default());
    metrics.set_status_forbidden(preparer.status_forbidden());
    let handler = Arc::new(Metered::new(preparer, metrics.clone()));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let changed = Arc::new(tokio::sync::Notify::new());
    let interval = Duration::from_secs(args.rescan_interval.max(1));
    // Every rescan sends every published device's health to the kubelet's streams; a device not
    // reported for three rescans is unknown to the kubelet.
    let health_timeout = i64::try_from(interval.as_secs().saturating_mul(3)).unwrap_or(i64::MAX);
    // A stream opened before the first rescan gets the devices read at start.
    let first_report = inventory.read().ok().map(|inventory| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        crate::health::report(&inventory, &config, now, health_timeout)
    });
    let (health_reports, health_stream) =
        tokio::sync::watch::channel(first_report.unwrap_or_default());
    let health_reports = Arc::new(health_reports);
    let mut tasks = tokio::task::JoinSet::new();
    {
        let handler = handler.clone();
        tasks.spawn(async move {
            let cleaned = handler.inner().clean_stale().await;
            if !cleaned.is_empty() {
                tracing::info!(claims = ?cleaned, "unprepared claims that no longer exist");
            }
        });
    }
    {
        let inventory = inventory.clone();
        let metrics = metrics.clone();
        let slice_config = config.clone();
        let health_reports = health_reports.clone();
        let read = move || {
            let fresh = read_inventory();
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            // One report per published device: its count is the number published.
            let report = crate::health::report(&fresh, &slice_config, now, health_timeout);
            metrics.set_devices_published(report.devices.len());
            health_reports.send_replace(report);
            if let Ok(mut shared) = inventory.write() {
                *shared = fresh.clone();
            }
            fresh
        };
        let publisher = Publisher::new(client, config.clone());
        tasks.spawn(publish_loop(
            publisher,
            read,
            interval,
            changed.clone(),
            stopped.clone(),
        ));
    }
    if args.nri {
        if inventory.read().map(|i| i.cpu.is_none()).unwrap_or(true) {
            bail!(
                "--nri: the CPU topology could not be read, so there is no shared pool to confine containers to"
            );
        }
        let mut nri = crate::nri::plugin::NriConfig::new(&args.nri_socket);
        nri.index = args.nri_index.clone();
        nri.unsolicited_updates = args.nri_unsolicited_updates;
        nri.pod_network = Some(Arc::new(pod_network));
        metrics.set_nri(nri.stats.clone());
        let inventory = inventory.clone();
        let reserved = config.reserved_cpus.clone();
        // Online CPUs minus reserved ones, as the inventory has them now.
        let allocatable = move || {
            inventory
                .read()
                .ok()
                .and_then(|i| {
                    let cpu = i.cpu.as_ref()?;
                    Some(crate::slices::devices::allocatable_cpus(cpu, &reserved))
                })
                .unwrap_or_default()
        };
        let source = crate::nri::plugin::CpuSource {
            claims: cpu_claims,
            allocatable: Arc::new(allocatable),
        };
        tasks.spawn(crate::nri::plugin::run(nri, source, stopped.clone()));
    }
    #[cfg(feature = "udev")]
    spawn_hotplug_watch(changed.clone());
    // NVML's XID events are this node's GPUs': not those of a fixture or another machine's tree.
    if args.fixture.is_none() {
        if crate::inventory::is_this_machine(root.root()) {
            spawn_xid_watch(health, changed.clone(), stopped.clone());
        } else {
            tracing::info!(
                root = %root.root().display(),
                "not this machine's tree (another boot id): NVML, Level Zero, verbs and XID events unused"
            );
        }
    }
    if let Some(path) = &args.vf_policy {
        let handler = handler.clone();
        let changed = changed.clone();
        let mut watch = super::provision::PolicyWatch::new(path);
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            loop {
                match watch.changed() {
                    Some(Ok(policy)) => {
                        for outcome in handler.inner().provision(&policy, watch.path()).await {
                            tracing::info!(?outcome, "VF provisioning");
                        }
                        changed.notify_one();
                    }
                    Some(Err(error)) => tracing::warn!(%error, "VF policy not applied"),
                    None => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
    }
    if !args.metrics_address.is_empty() {
        let address: SocketAddr = args
            .metrics_address
            .parse()
            .with_context(|| format!("--metrics-address {:?}", args.metrics_address))?;
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .with_context(|| format!("listening on {address} for metrics"))?;
        tracing::info!(%address, "serving /metrics and /healthz");
        spawn_metrics_thread(listener, metrics.clone(), stopped.clone())
            .context("starting the metrics thread")?;
    }
    let registration = RegistrationService::new(&sockets).with_health();
    let mut status = registration.status();
    {
        let metrics = metrics.clone();
        tasks.spawn(async move {
            while status.changed().await.is_ok() {
                let state = status.borrow_and_update().clone();
                match &state {
                    RegistrationState::Registered => tracing::info!("registered with the kubelet"),
                    RegistrationState::Failed(error) => {
                        tracing::error!(%error, "the kubelet refused the registration")
                    }
                    RegistrationState::Pending => {}
                }
                metrics.set_healthy(!matches!(state, RegistrationState::Failed(_)));
            }
        });
    }
    metrics.set_healthy(true);
    tracing::info!(
        driver = %config.driver_name,
        node = %config.node_name,
        registration = %sockets.registration().display(),
        dra = %sockets.dra().display(),
        "serving the kubelet"
    );
    let health = HealthService::new(health_stream);
    let served = serve(&sockets, handler, Some(health), registration, shutdown).await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    served.map_err(anyhow::Error::from)
}

/// Serves metrics on a thread and runtime of their own, so that no load on the metrics port (a
/// flood of connections, slow clients) takes CPU time or tasks from the kubelet's sockets.
fn spawn_metrics_thread(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let stop = async move {
                            let _ = stopped.changed().await;
                        };
                        super::metrics::serve(listener, metrics, stop).await;
                    }
                    Err(error) => tracing::error!(%error, "metrics listener unusable"),
                }
            });
        })
        .map(|_| ())
}

/// The slice configuration, the sysfs root, and the fixture directory to keep alive.
fn machine(
    args: &PluginArgs,
) -> anyhow::Result<(
    SliceConfig,
    backends::SysfsRoot,
    Option<super::fixture_tree::FixtureTree>,
)> {
    let node = match (&args.node_name, &args.fixture) {
        (Some(node), _) => node.clone(),
        (None, Some(fixture)) => fixture.clone(),
        (None, None) => bail!("--node-name (or NODE_NAME) is required"),
    };
    let config = args.slices.config(&node).map_err(anyhow::Error::msg)?;
    let (root, fixture) = match (&args.fixture, &args.sysfs_root) {
        (Some(name), _) => {
            let machine = crate::fixtures::by_name(name).map_err(anyhow::Error::msg)?;
            let parent = super::fixture_tree::scratch_parent();
            let materialized = super::fixture_tree::FixtureTree::create(&machine, &parent)
                .with_context(|| format!("writing fixture {name} in {}", parent.display()))?;
            (
                backends::SysfsRoot::new(materialized.root()),
                Some(materialized),
            )
        }
        (None, Some(dir)) => {
            if !dir.join("sys").is_dir() {
                bail!("--sysfs-root {}: no sys/ directory inside", dir.display());
            }
            (backends::SysfsRoot::new(dir), None)
        }
        (None, None) => (backends::SysfsRoot::default(), None),
    };
    Ok((config, root, fixture))
}

/// Rescans on hotplug: a thread reads kernel uevents and wakes the publisher once per burst.
#[cfg(feature = "udev")]
fn spawn_hotplug_watch(changed: Arc<tokio::sync::Notify>) {
    use backends::udev::{UeventSocket, watch};
    match UeventSocket::open() {
        Ok(socket) => {
            let spawned = std::thread::Builder::new()
                .name("uevents".into())
                .spawn(move || {
                    let error = watch(
                        socket,
                        Duration::from_millis(500),
                        Duration::from_secs(5),
                        || {
                            changed.notify_one();
                            true
                        },
                    );
                    tracing::warn!(%error, "hotplug watch stopped; the periodic rescan goes on");
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no hotplug watch");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot open the uevent socket; only the periodic rescan")
        }
    }
}

/// Waits for NVML's critical XID events on a thread of its own (NVML blocks) and republishes when a GPU
/// turns unhealthy. Without NVML (no NVIDIA GPU, no library) it logs why once and stops.
fn spawn_xid_watch(
    health: Arc<std::sync::Mutex<crate::health::Health>>,
    changed: Arc<tokio::sync::Notify>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    use backends::nvml::xid::{RealXid, XidSource};
    std::thread::spawn(move || {
        let mut source = match RealXid::open() {
            Ok(source) => source,
            Err(error) => {
                tracing::info!(%error, "no XID events; GPU health comes from rescans only");
                return;
            }
        };
        while !*stopped.borrow() {
            match source.wait(Duration::from_secs(5)) {
                Ok(events) => {
                    let turned = events
                        .iter()
                        .filter(|e| health.lock().is_ok_and(|mut h| h.record_xid(e)))
                        .count();
                    if turned > 0 {
                        changed.notify_one();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "waiting for XID events failed; stopping the XID watch");
                    return;
                }
            }
        }
    });
}

/// The API server's version (`major`, `minor`), which decides the counter layout and the taint
/// effects: asked until it answers, never guessed.
async fn server_version_of(client: &kube::Client) -> (String, String) {
    let mut backoff = crate::api::Backoff::default();
    loop {
        match client.apiserver_version().await {
            Ok(info) => return (info.major, info.minor),
            Err(error) => {
                let delay = backoff.next_delay();
                // Guessing the 1.34 layout would make every partitioned GPU invisible to a 1.35+
                // scheduler, which reads a slice with counters as counters only.
                tracing::warn!(%error, retry_in_ms = delay.as_millis(),
                    "cannot read the API server's version, which decides the counter layout and taint effects; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether API server version `major.minor` is 1.35 or later: where counter sets get slices of their
/// own and the taint effect `None` is accepted.
fn at_least_1_35(major: &str, minor: &str) -> bool {
    let minor: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    matches!((major, minor), ("1", m) if m >= 35)
}

/// The counter layout the scheduler of API server version `major.minor` reads: counter sets in
/// their own slice from 1.35 on.
fn counter_layout_for(major: &str, minor: &str) -> crate::slices::CounterLayout {
    use crate::slices::CounterLayout;
    match at_least_1_35(major, minor) {
        true => CounterLayout::OwnSlice,
        false => CounterLayout::SameSlice,
    }
}

/// Whether API server version `major.minor` accepts the informational taint effect `None` (1.35
/// and later): degraded devices are tainted with it there, and not at all on 1.34, whose API
/// server refuses the effect.
fn informational_taints_for(major: &str, minor: &str) -> bool {
    at_least_1_35(major, minor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{counter_layout_for, informational_taints_for, server_version_of};
    use crate::fake_api::FakeApi;
    use crate::slices::CounterLayout;

    #[test]
    fn counter_sets_get_slices_of_their_own_from_1_35() {
        assert_eq!(counter_layout_for("1", "34"), CounterLayout::SameSlice);
        assert_eq!(counter_layout_for("1", "35"), CounterLayout::OwnSlice);
        assert_eq!(counter_layout_for("1", "37+"), CounterLayout::OwnSlice);
    }

    #[test]
    fn the_informational_taint_effect_is_used_from_1_35() {
        assert!(!informational_taints_for("1", "34"));
        assert!(informational_taints_for("1", "35"));
        assert!(informational_taints_for("1", "36+"));
        assert!(!informational_taints_for("2", "x"));
    }

    /// The layout is never guessed: an API server that fails the version read is asked again, after
    /// a backoff, until it answers (the fake answers 1.34).
    #[tokio::test(start_paused = true)]
    async fn the_counter_layout_waits_for_the_api_servers_version() {
        let mut api = FakeApi::with_node("n");
        api.fail_once.push(("GET /version".into(), 503));
        api.fail_once.push(("GET /version".into(), 503));
        let state = Arc::new(Mutex::new(api));
        let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
        let started = tokio::time::Instant::now();
        let (major, minor) = server_version_of(&client).await;
        assert_eq!(counter_layout_for(&major, &minor), CounterLayout::SameSlice);
        let asked = state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.short() == "GET /version")
            .count();
        assert_eq!(asked, 3);
        assert!(
            started.elapsed() >= crate::api::Backoff::START * 3,
            "{:?}",
            started.elapsed()
        );
    }
}
