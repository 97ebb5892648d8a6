//! The plugin process: flags, and [`run`], which wires the inventory, the ResourceSlice publisher, the
//! claim preparer, the kubelet sockets, metrics and health together until shutdown. The driver's
//! policy is the `driver` library's; the generic plumbing (sockets, gRPC services, the API client,
//! metrics) is the kit `dra-kubelet-plugin`'s, reached through `driver::plugin` and `driver::api`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use driver::api::server_version_of;
use driver::inventory::{FixtureVendors as _, Inventory};
use driver::plugin::cdi::CdiDir;
use driver::plugin::checkpoint::CheckpointFile;
use driver::plugin::grpc::{
    HealthService, PluginSockets, RegistrationService, RegistrationState, acquire_instance_lock,
    serve,
};
use driver::plugin::metrics::{Metered, Metrics};
use driver::plugin::prepare::{ClaimSource, KubeClaims, Preparer, PreparerConfig};
use driver::publish::{publish_loop, publisher};
use driver::slices::SliceConfig;
use driver::slices::api_version::{counter_layout_for, informational_taints_for};

mod args;
mod fixture_tree;
mod log;
mod watch;

pub use args::{LogFormat, PluginArgs};
use fixture_tree::FixtureTree;
use watch::first_panic;
#[cfg(feature = "udev")]
use watch::spawn_hotplug_watch;
use watch::spawn_xid_watch;
use watch::version_moved;

/// A flag's value (or `RUST_LOG`) refused at start, before any work: exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Starts logging to stderr, one line per event with control characters escaped (`app/log.rs`),
/// filtered by `RUST_LOG` (default `info`). A `RUST_LOG` that does not parse, or a bare word in it
/// that is not a level (`warning`), is refused: nothing is logged then.
pub fn init_logging(format: LogFormat) -> Result<(), Usage> {
    use tracing_subscriber::util::SubscriberInitExt;
    let rust_log = match std::env::var("RUST_LOG") {
        Ok(text) => Some(text),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Usage("RUST_LOG: not UTF-8".to_owned()));
        }
    };
    let filter = log::filter(rust_log.as_deref()).map_err(Usage)?;
    let _ = log::subscriber(format, filter, || log::SafeLines(std::io::stderr())).try_init();
    Ok(())
}

/// What the flags name that is checked before the API server is asked (a bad value there would
/// otherwise be told only once the server answers, and never while it is down).
pub struct Checked {
    /// `--vf-policy`, loaded once.
    vf_policy: Option<driver::plugin::provision::KeptPolicy>,
}

/// Checks `--device-filter` (compiled), `--vf-policy` (loaded) and `--pci-ids` (opened, when
/// named), each a [`Usage`] error naming the flag and its value.
pub fn check_flags(args: &PluginArgs) -> Result<Checked, Usage> {
    if let Some(expression) = &args.node_net.device_filter {
        // The error names the flag (`--device-filter: CEL syntax error: ...`).
        driver::podnet::filter::DeviceFilter::new(expression)
            .map_err(|error| Usage(error.to_string()))?;
    }
    if let Some(path) = &args.pci_ids {
        backends::sysfs::pciids::PciNames::load(path, &Default::default())
            .map_err(|error| Usage(format!("--pci-ids {}: {error}", path.display())))?;
    }
    let vf_policy = match &args.vf_policy {
        Some(path) => {
            let mut kept = driver::plugin::provision::KeptPolicy::new(path);
            kept.policy()
                .map_err(|error| Usage(format!("--vf-policy {error}")))?;
            Some(kept)
        }
        None => None,
    };
    Ok(Checked { vf_policy })
}

/// A kube client from `--kubeconfig`, else the default kubeconfig, else in-cluster, with the kit's
/// per-call deadline (`dra_kubelet_plugin::client::connect`).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    Ok(driver::api::connect(kubeconfig).await?)
}

/// Runs the plugin until `shutdown` turns true: the claim handler serves the kubelet, the publisher
/// keeps the slices current. On shutdown the sockets are removed (deregistration) after in-flight
/// calls end, so the checkpoint is left consistent. A shutdown during the waits of the startup
/// (another instance's lock, the API server's version) ends it there, before the kubelet is served
/// (`/healthz` is, from the lock on).
pub async fn run(
    args: PluginArgs,
    checked: Checked,
    client: kube::Client,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopping = |mut shutdown: tokio::sync::watch::Receiver<bool>| async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let (mut config, root, _fixture) = machine(&args)?;
    let sockets = PluginSockets::new(&args.kubelet_root_dir, &config.driver_name)?;
    let _lock = tokio::select! {
        lock = acquire_instance_lock(sockets.plugin_dir()) => lock?,
        () = stopping(shutdown.clone()) => {
            tracing::info!("stopped before serving (waiting for another instance's lock)");
            return Ok(());
        }
    };
    let metrics = Arc::new(Metrics::default());
    // The heartbeat `/healthz` waits for: a runtime that stops running tasks (its workers lost or
    // blocked) is restarted by the liveness probe (dra_kubelet_plugin::metrics::HEARTBEAT_STALE).
    let heartbeat = tokio::spawn(metrics.clone().keep_beating(Duration::from_secs(2)));
    let _heartbeat = AbortOnDrop(heartbeat);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Served from here on: alive (`/healthz`) while the startup waits for the API server (its
    // version, the Node's InternalIPs, claims to check), ready (`/readyz`) once the kubelet
    // registered the plugin. A startup probe counting only until the API server answers would
    // restart a plugin that waits for an API server down longer than the probe allows.
    if !args.metrics_address.is_empty() {
        let address: SocketAddr = args
            .metrics_address
            .parse()
            .with_context(|| format!("--metrics-address {:?}", args.metrics_address))?;
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .with_context(|| format!("listening on {address} for metrics"))?;
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
        // A thread and runtime of their own: no load on the metrics port takes CPU time or tasks
        // from the kubelet's sockets.
        let mut stopped = stopped.clone();
        let stop = async move {
            let _ = stopped.changed().await;
        };
        driver::plugin::metrics::serve_on_thread(listener, metrics.clone(), stop)
            .context("starting the metrics thread")?;
    }
    metrics.set_healthy(true);
    let (major, minor) = tokio::select! {
        version = server_version_of(&client) => version?,
        () = stopping(shutdown.clone()) => {
            tracing::info!("stopped before serving (waiting for the API server's version)");
            return Ok(());
        }
    };
    let started_version = (major.clone(), minor.clone());
    let layout = counter_layout_for(&major, &minor);
    if args.slices.counter_layout.is_some() && config.counter_layout != layout {
        tracing::warn!(asked = ?config.counter_layout, used = ?layout,
            "--counter-layout is ignored by the plugin: it publishes the layout of the API server's \
             version ({major}.{minor})");
    }
    config.counter_layout = layout;
    config.informational_taints = informational_taints_for(&major, &minor);
    tracing::debug!(layout = ?config.counter_layout, informational_taints = config.informational_taints,
        "API server {major}.{minor}");
    let pci_ids = args
        .pci_ids
        .clone()
        .or_else(backends::sysfs::pciids::default_pci_ids);
    // Device health across rescans (critical XIDs, devices gone, links down, CPUs offline),
    // published as taints and to the kubelet's health streams.
    // The grace is 9/10 of the interval: periodic reads start an interval apart but are timed when
    // they end, so a faster second read must not need a third one to make a device gone.
    let health = Arc::new(std::sync::Mutex::new(driver::health::Health::with_grace(
        Duration::from_secs(args.rescan_interval).mul_f64(0.9),
    )));
    // The node's own network (default routes, InternalIP) and --exclude-interfaces/--device-filter.
    // The InternalIPs are read again while the plugin runs (a task below); until read once, every
    // netdev is withheld (which one carries them is not known).
    let first_ips = driver::podnet::internal_ips(&client, &config.node_name, true).await;
    let node_guard = Arc::new(driver::podnet::NodeGuard::new(
        root.root(),
        first_ips.clone(),
        args.node_net.clone(),
    )?);
    let inventory_errors = Arc::new(LoggedOnce::default());
    let read_inventory = {
        let node_guard = node_guard.clone();
        let inventory_errors = inventory_errors.clone();
        let root = root.clone();
        let fixture = args.fixture.clone();
        let health = health.clone();
        let config = config.clone();
        move || {
            let vendors = driver::inventory::Vendors::for_root(&root, fixture.as_deref());
            let mut inventory = Inventory::from_machine(&root, pci_ids.as_deref(), vendors);
            // Each problem once (not at every rescan): a pci.ids file or sysfs files that cannot
            // be read, a backend that fails.
            let (new, filled) = inventory_errors.new_ones(&inventory.errors);
            for error in new {
                tracing::warn!(path = %error.path, error = %error.error, "inventory: not read");
            }
            if filled {
                tracing::warn!(
                    logged = LoggedOnce::MAX,
                    "inventory: more distinct errors than are logged; the others are not"
                );
            }
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
    let boot_id = driver::inventory::boot_id(root.root()).unwrap_or_default();
    if boot_id.is_empty() {
        tracing::warn!(root = %root.root().display(), "no boot id under the root \
            (proc/sys/kernel/random/boot_id): a reboot cannot be told from a restart, so claims \
            are answered from their records after either");
    }
    let claims: Arc<dyn ClaimSource> = Arc::new(KubeClaims::new(client.clone()));
    // Writes go to the kernel on a node, and to the fixture's emulated kernel on a fixture.
    let writer: Arc<dyn hal::AttributeWriter> = match &args.fixture {
        Some(name) => Arc::new(
            driver::fixtures::by_name(name)
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
            pod_networking: args.pod_networking,
        },
        claims.clone(),
        inventory.clone(),
    )
    .with_context(|| format!("loading the checkpoint {}", checkpoint.display()))?;
    let preparer = match args.device_metadata {
        true => preparer.with_device_metadata(sockets.plugin_dir()),
        false => preparer,
    };
    let cpu_claims = preparer.cpu_claims();
    // CNI mode at pod sandbox start (through NRI): the claims from the checkpoint, read only.
    let pod_network = driver::nri::sandbox::PodNetwork::for_plugin(
        &args.cni,
        sockets.plugin_dir(),
        checkpoint.clone(),
        client.clone(),
        claims,
        &config.driver_name,
        &config.node_name,
    );
    metrics.set_status_forbidden(preparer.status_forbidden());
    let handler = Arc::new(Metered::new(preparer, metrics.clone()));

    let changed = Arc::new(tokio::sync::Notify::new());
    let interval = Duration::from_secs(args.rescan_interval);
    // Every rescan sends every published device's health to the kubelet's streams; a device not
    // reported for three rescans is unknown to the kubelet.
    let health_timeout = i64::try_from(interval.as_secs().saturating_mul(3)).unwrap_or(i64::MAX);
    // A stream opened before the first rescan gets the devices read at start.
    let first_report = inventory.read().ok().map(|inventory| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        driver::health::report(&inventory, &config, now, health_timeout)
    });
    let (health_reports, health_stream) =
        tokio::sync::watch::channel(first_report.unwrap_or_default());
    let health_reports = Arc::new(health_reports);
    let mut tasks = tokio::task::JoinSet::new();
    {
        // The Node's InternalIPs: every 10 minutes (they may change), every 30 s until read.
        let (retry, period) = (Duration::from_secs(30), Duration::from_secs(600));
        let client = client.clone();
        let node = config.node_name.clone();
        let mut stopped = stopped.clone();
        let changed = changed.clone();
        tasks.spawn(async move {
            let keep = async {
                tokio::time::sleep(if first_ips.is_some() { period } else { retry }).await;
                let ips = driver::podnet::keep_internal_ips(
                    &node_guard,
                    &client,
                    &node,
                    retry,
                    period,
                    &changed,
                );
                ips.await;
            };
            tokio::select! {
                () = keep => {}
                _ = stopped.changed() => {}
            }
        });
    }
    {
        // Until every recorded claim was checked: an API server that does not answer at start
        // would otherwise leave deleted claims' devices held, and rebuilt claims' CPUs open to
        // any pod, until the kubelet's next call for them. Then once an hour (a GET per recorded
        // claim), for claims the kubelet lost without unpreparing them.
        let handler = handler.clone();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            let (first, most) = (Duration::from_secs(1), Duration::from_secs(60));
            let period = Duration::from_secs(3600);
            tokio::select! {
                () = handler.inner().keep_clean(first, most, period) => {}
                _ = stopped.changed() => {}
            }
        });
    }
    {
        let inventory = inventory.clone();
        let metrics = metrics.clone();
        let slice_config = config.clone();
        let health_reports = health_reports.clone();
        let read = move || {
            // Off the async workers: a rescan walks sysfs and opens NVML (seconds per GPU without
            // persistence mode, up to `nvidia_gate::SHARE_WAIT` while a GPU is unbound), and would
            // stall the kubelet's and NRI's calls on this worker meanwhile (one worker under a CPU
            // limit of one).
            let fresh = tokio::task::block_in_place(&read_inventory);
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            // The published devices are built once per rescan, for the health report and the slices.
            let devices = driver::slices::devices::devices_with_sources(&fresh, &slice_config);
            // One report per published device: its count is the number published.
            let report =
                driver::health::report_of(&devices, &fresh, &slice_config, now, health_timeout);
            metrics.set_devices_published(report.devices.len());
            health_reports.send_replace(report);
            let devices = devices.into_iter().map(|(device, _)| device).collect();
            let slices = driver::slices::build_slices_of(devices, &fresh, &slice_config, 0);
            if let Ok(mut shared) = inventory.write() {
                *shared = fresh;
            }
            slices
        };
        tasks.spawn(publish_loop(
            publisher(client.clone(), &config),
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
        let mut nri = driver::nri::plugin::NriConfig::new(&args.nri_socket);
        nri.index = args.nri_index.clone();
        nri.unsolicited_updates = args.nri_unsolicited_updates;
        nri.pod_network = args.pod_networking.then(|| Arc::new(pod_network));
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
                    Some(driver::slices::devices::allocatable_cpus(cpu, &reserved))
                })
                .unwrap_or_default()
        };
        let source = driver::nri::plugin::CpuSource {
            claims: cpu_claims,
            allocatable: Arc::new(allocatable),
            reserved_again: Some(Preparer::reserved_again(handler.clone(), Metered::inner)),
        };
        tasks.spawn(driver::nri::plugin::run(nri, source, stopped.clone()));
    }
    #[cfg(feature = "udev")]
    spawn_hotplug_watch(changed.clone());
    // NVML's XID events are this node's GPUs': not those of a fixture or another machine's tree.
    if args.fixture.is_none() {
        if driver::inventory::is_this_machine(root.root()) {
            spawn_xid_watch(health, inventory.clone(), changed.clone(), stopped.clone());
        } else {
            tracing::info!(
                root = %root.root().display(),
                "not this machine's tree (another boot id): NVML, Level Zero, verbs and XID events unused"
            );
        }
    }
    if let Some(mut kept) = checked.vf_policy {
        let handler = handler.clone();
        let changed = changed.clone();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            loop {
                match kept.policy() {
                    Ok(Some(policy)) => {
                        let outcomes = handler.inner().provision(&policy, kept.path()).await;
                        let (new, rescan) = kept.report(outcomes);
                        for outcome in new {
                            tracing::info!(?outcome, "VF provisioning");
                        }
                        if rescan {
                            changed.notify_one();
                        }
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "VF policy not applied"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
    }
    let registration = RegistrationService::new(&sockets).with_health();
    let mut status = registration.status();
    {
        // The kubelet registers a plugin within seconds of its socket appearing in the directory it
        // watches; a minute without it is a plugin the kubelet does not see.
        let status = registration.status();
        let registry = sockets.registration().to_path_buf();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stopped.changed() => return,
            }
            if matches!(*status.borrow(), RegistrationState::Pending) {
                tracing::error!(socket = %registry.display(), "the kubelet has not registered the \
                    plugin after 60 s: is --kubelet-root-dir the kubelet's root directory? (not ready \
                    until it does)");
            }
        });
    }
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
                metrics.set_registered(matches!(state, RegistrationState::Registered));
            }
        });
    }
    tracing::info!(
        driver = %config.driver_name,
        node = %config.node_name,
        registration = %sockets.registration().display(),
        dra = %sockets.dra().display(),
        "serving the kubelet"
    );
    let health = HealthService::new(health_stream);
    // Served until SIGTERM, or until the API server's version crosses 1.35 (an upgraded control
    // plane): then the plugin exits with an error, and the kubelet starts it again to publish for
    // that version (prepared claims are in the checkpoint).
    // Or until a task panics: the plugin exits with an error rather than run without it.
    let moved = std::sync::OnceLock::new();
    let panicked = std::sync::OnceLock::new();
    let until = async {
        tokio::select! {
            () = stopping(shutdown) => {}
            Some(version) = version_moved(client.clone(), started_version, stopped.clone()) => {
                let _ = moved.set(version);
            }
            panic = first_panic(&mut tasks) => {
                tracing::error!(%panic, "a task of the plugin panicked; stopping");
                let _ = panicked.set(panic);
            }
        }
    };
    let served = serve(&sockets, handler, Some(health), registration, until).await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    if let Some(panic) = panicked.get() {
        bail!("a task of the plugin panicked ({panic}): the plugin exits to start again");
    }
    if let Some(version) = moved.get() {
        bail!(
            "the API server is now version {version} (it was {major}.{minor} at start): the slices' \
             counter layout and taint effects depend on it, so the plugin exits to start again"
        );
    }
    served.map_err(anyhow::Error::from)
}

/// The slice configuration, the sysfs root, and the fixture directory to keep alive.
fn machine(
    args: &PluginArgs,
) -> anyhow::Result<(SliceConfig, backends::SysfsRoot, Option<FixtureTree>)> {
    let node = match (&args.node_name, &args.fixture) {
        (Some(node), _) => node.clone(),
        (None, Some(fixture)) => fixture.clone(),
        (None, None) => bail!("--node-name (or NODE_NAME) is required"),
    };
    let config = args.slices.config(&node).map_err(anyhow::Error::msg)?;
    let (root, fixture) = match (&args.fixture, &args.sysfs_root) {
        (Some(name), _) => {
            let machine = driver::fixtures::by_name(name).map_err(anyhow::Error::msg)?;
            let parent = fixture_tree::scratch_parent();
            let materialized = FixtureTree::create(&machine, &parent)
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

/// Aborts its task when dropped (the heartbeat ends with [`run`]).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The distinct inventory errors already logged: at most [`LoggedOnce::MAX`]. Past that many, new
/// ones are not logged (a node whose sysfs refuses hundreds of files would otherwise log them all
/// again at every rescan, the oldest forgotten first); the caller says so once.
#[derive(Default)]
struct LoggedOnce {
    seen: std::sync::Mutex<(Vec<hal::InventoryError>, bool)>,
}

impl LoggedOnce {
    /// The most errors remembered.
    const MAX: usize = 256;

    /// Those of `errors` not logged yet, now remembered; and whether the memory filled up just now
    /// (the errors past it are not returned, now or later).
    fn new_ones<'a>(
        &self,
        errors: &'a [hal::InventoryError],
    ) -> (Vec<&'a hal::InventoryError>, bool) {
        let mut guard = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seen, full) = &mut *guard;
        let mut new = Vec::new();
        let mut filled = false;
        for error in errors {
            let known = (seen.iter()).any(|k| k.path == error.path && k.error == error.error);
            if known || *full {
                continue;
            }
            if seen.len() == Self::MAX {
                *full = true;
                filled = true;
                continue;
            }
            seen.push(error.clone());
            new.push(error);
        }
        (new, filled)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn error(path: &str, text: &str) -> hal::InventoryError {
        hal::InventoryError {
            path: path.to_owned(),
            error: text.to_owned(),
            kind: None,
        }
    }

    #[test]
    fn each_inventory_error_is_logged_once_and_the_memory_is_bounded() {
        let logged = LoggedOnce::default();
        let first = [error("/p/pci.ids", "not found"), error("/sys/x", "EACCES")];
        assert_eq!(logged.new_ones(&first), (vec![&first[0], &first[1]], false));
        // The next rescan finds the same problems: nothing new to log.
        assert_eq!(logged.new_ones(&first), (vec![], false));
        let later = [error("/sys/x", "EACCES"), error("/sys/x", "EIO")];
        assert_eq!(logged.new_ones(&later), (vec![&later[1]], false));
        let many: Vec<_> = (0..LoggedOnce::MAX + 10)
            .map(|i| error(&format!("/sys/{i}"), "EIO"))
            .collect();
        // Up to the memory's size (3 taken above), then said once.
        let (new, filled) = logged.new_ones(&many);
        assert_eq!((new.len(), filled), (LoggedOnce::MAX - 3, true));
        assert_eq!(logged.seen.lock().unwrap().0.len(), LoggedOnce::MAX);
        // The next rescan with the same errors logs nothing: no flood at every rescan.
        assert_eq!(logged.new_ones(&many), (vec![], false));
    }
}
