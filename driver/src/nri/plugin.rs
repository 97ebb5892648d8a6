//! The NRI plugin: registers on the runtime's socket and keeps every container on the CPUs [`Policy`]
//! gives it. It reconnects when the runtime restarts ([`dra_nri::reconnect`]; a fresh `Synchronize`
//! rebuilds the state).
//!
//! [`CpuPlugin`] is a [`dra_nri::stub::Plugin`]: the kit's stub registers it, answers `Configure` with
//! its events (the container events, and the pod sandbox events with pod networking), collects the
//! parts of a `Synchronize`, decodes the runtime's calls and encodes the answers, one call at a time on
//! the connection's loop. The plugin's own work beside the calls (claims prepared or unprepared,
//! unsolicited updates that failed, their retry tick) is its `background`. After each `Synchronize`
//! the sandboxes of pod networking the runtime no longer has are torn down off the loop, from the
//! mark taken on the loop ([`super::sandbox::SyncMark`]); and while the connection lasts, a task of
//! its own tries again the pod network teardowns that failed, each when its backoff is over
//! ([`super::sandbox::PodNetwork::retry_teardowns`]), ending with the connection's plugin. The
//! teardowns that failed are not the connection's: kept in the pod networking the connections share
//! (in memory, for the life of the process), those left when one connection ends are tried by the
//! next one's task.
//!
//! It never calls into the runtime while the runtime may be calling it: containerd 1.7 and 2.1 take
//! two locks in opposite orders for a plugin's unsolicited `UpdateContainers` (the adaptation lock,
//! then the CRI plugin's NRI lock) and for container events (the CRI plugin's lock, then the
//! adaptation lock), and deadlock when both meet (containerd issue #13733, fixed by containerd/nri#301,
//! which those releases do not have). So when claims are prepared or unprepared, the moves of other
//! containers ride on the answers to the runtime's own events: NRI lets the answers to
//! `CreateContainer`, `UpdateContainer` and `StopContainer` carry updates of any container. The
//! kubelet creates a claim's container right after preparing the claim, so shared containers leave
//! the claim's CPUs in the answer to that creation, before the container starts. A pool that grows
//! (a claim unprepared, after its containers stopped) reaches the shared containers with the next
//! container event on the node. Unsolicited updates remain, off by default
//! ([`NriConfig::unsolicited_updates`]), for runtimes that have the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dra_nri::stub::{self, EventMask, Flow, Plugin};
use hal::CpuSet;
use tokio::sync::{mpsc, oneshot, watch};

use super::endpoint::code;
use super::policy::{ClaimCpus, Policy, Snapshot, SyncedContainer, Update};
use super::proto::api;
use super::proto::ttrpc::Status;
use super::sandbox::PodNetwork;
use super::stats::NriStats;

pub use dra_nri::service::{PLUGIN_SERVICE, RUNTIME_SERVICE, event};

/// How the plugin reaches the runtime.
#[derive(Debug, Clone)]
pub struct NriConfig {
    /// The runtime's NRI socket (`/var/run/nri/nri.sock`).
    pub socket: PathBuf,
    /// The name to register.
    pub name: String,
    /// The two-digit index to register (plugins are called in ascending order).
    pub index: String,
    /// How long to wait for the runtime's answers.
    pub timeout: Duration,
    /// Where the plugin reports what it does (`/metrics`).
    pub stats: Arc<NriStats>,
    /// Also push shared-pool changes at once with unsolicited `UpdateContainers` (and retry the
    /// ones that fail). Off by default: it deadlocks containerd 1.7.x and 2.1.x (measured on 1.7.24
    /// and 2.1.9; containerd issue #13733), safe only on a runtime whose NRI has containerd/nri#301.
    pub unsolicited_updates: bool,
    /// Pod networking on pod sandbox events (`--nri` with CNI mode); none: the events are not
    /// subscribed.
    pub pod_network: Option<Arc<PodNetwork>>,
}

impl NriConfig {
    /// The defaults: `/var/run/nri/nri.sock`, `dra-hal`, index `10`, 5 s (the runtime's default
    /// registration timeout; it serves connecting plugins one at a time).
    pub fn new(socket: impl Into<PathBuf>) -> NriConfig {
        NriConfig {
            socket: socket.into(),
            name: "dra-hal".into(),
            index: "10".into(),
            timeout: Duration::from_secs(5),
            stats: Arc::default(),
            unsolicited_updates: false,
            pod_network: None,
        }
    }
}

/// An NRI plugin index that is not two digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NRI plugin index {0:?}: two digits (00-99) expected")]
pub struct BadIndex(pub String);

/// Checks an NRI plugin index: two digits.
pub fn parse_index(text: &str) -> Result<String, BadIndex> {
    match text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(text.to_owned()),
        false => Err(BadIndex(text.to_owned())),
    }
}

/// Where the snapshot comes from: the prepared claims (published by the preparer) and the allocatable
/// CPUs (online minus reserved, read at each event: the closure must be cheap).
#[derive(Clone)]
pub struct CpuSource {
    /// Claim UID → CPUs and pods.
    pub claims: watch::Receiver<BTreeMap<String, ClaimCpus>>,
    /// The allocatable CPUs now.
    pub allocatable: Arc<dyn Fn() -> CpuSet + Send + Sync>,
    /// Reads a claim's pods again, from its ResourceClaim, when a container's pod is not among them
    /// (`Preparer::add_reserved_pods`): a pod that came to share a claim prepared for another pod gets
    /// no prepare of its own. What it adds reaches `claims`. `None`: the pods are never read again.
    pub reserved_again: Option<ReservedAgain>,
}

/// Reads the pods of the claim with this UID again ([`CpuSource::reserved_again`]).
pub type ReservedAgain = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// How long a container event waits for its claims' pods to be read again: well within the
/// runtime's 2 s for a plugin's answer (containerd's default `plugin_request_timeout`).
const RESERVED_AGAIN_WAIT: Duration = Duration::from_secs(1);

impl CpuSource {
    fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            allocatable: (self.allocatable)(),
            claims: self.claims.borrow_and_update().clone(),
        }
    }
}

/// Runs the plugin until `stopped` turns true: connects, serves, and reconnects with backoff
/// ([`dra_nri::stub::run`] over [`dra_nri::reconnect::run`]) while the runtime is away or keeps
/// dropping the plugin. Each connection gets a fresh [`CpuPlugin`] (a fresh `Synchronize` rebuilds
/// the state).
pub async fn run(config: NriConfig, source: CpuSource, stopped: watch::Receiver<bool>) {
    if config.unsolicited_updates {
        tracing::warn!(
            "NRI unsolicited updates are on: they deadlock containerd 1.7.x and 2.1.x (containerd \
             issue #13733) unless the runtime's NRI has containerd/nri#301"
        );
    }
    let stub = stub::Config {
        name: config.name.clone(),
        index: config.index.clone(),
        timeout: config.timeout,
        stats: config.stats.clone(),
    };
    let make = |runtime| CpuPlugin::new(&config, source.clone(), runtime);
    stub::run(&config.socket, stub, make, stopped).await;
}

/// The plugin's state on one connection: the CPU policy, the claims it follows, pod networking, and
/// (with unsolicited updates) the pusher that sends them.
pub struct CpuPlugin {
    policy: Policy,
    source: CpuSource,
    stats: Arc<NriStats>,
    unsolicited: bool,
    pod_network: Option<Arc<PodNetwork>>,
    /// Only with `unsolicited_updates`: to one pusher, so unsolicited updates reach the runtime in
    /// order; what it could not apply comes back, and is sent again at the next retry tick.
    push: mpsc::UnboundedSender<Vec<Update>>,
    failed: mpsc::UnboundedReceiver<Vec<String>>,
    retry: tokio::time::Interval,
    _pusher: Option<AbortOnDrop>,
    /// Only with pod networking: dropped with this plugin (its connection ended), it ends the task
    /// that tries failed teardowns again, after the round under way (never amid a teardown).
    _teardowns: Option<oneshot::Sender<()>>,
}

impl CpuPlugin {
    /// The plugin for one connection, whose runtime service is `runtime`.
    pub fn new(config: &NriConfig, mut source: CpuSource, runtime: stub::Runtime) -> CpuPlugin {
        let policy = Policy::new(source.snapshot());
        let (push, push_rx) = mpsc::unbounded_channel::<Vec<Update>>();
        let (failed_tx, failed) = mpsc::unbounded_channel::<Vec<String>>();
        let pusher = config
            .unsolicited_updates
            .then(|| AbortOnDrop(tokio::spawn(pusher(runtime, push_rx, failed_tx))));
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Off the loop: a teardown runs CNI plugins and waits for sandbox locks.
        let teardowns = config.pod_network.clone().map(|net| {
            let (ended, rx) = oneshot::channel();
            tokio::spawn(async move { net.retry_teardowns(rx).await });
            ended
        });
        CpuPlugin {
            policy,
            source,
            stats: config.stats.clone(),
            unsolicited: config.unsolicited_updates,
            pod_network: config.pod_network.clone(),
            push,
            failed,
            retry,
            _pusher: pusher,
            _teardowns: teardowns,
        }
    }

    /// Claims prepared since the last event, or allocatable CPUs changed since (a CPU taken offline
    /// or brought online, seen by the inventory's rescan): this event's answer carries the moves.
    fn refresh(&mut self) {
        let claims_changed = self.source.claims.has_changed().unwrap_or(false);
        let allocatable = (self.source.allocatable)();
        if claims_changed || allocatable != self.policy.snapshot().allocatable {
            let claims = self.source.claims.borrow_and_update().clone();
            self.policy.replace_snapshot(Snapshot {
                allocatable,
                claims,
            });
        }
    }

    /// Reads again the pods of the claims `env` names that are prepared for other pods than
    /// `pod_uid`, all at once and for at most [`RESERVED_AGAIN_WAIT`], then takes what changed.
    async fn read_reserved_pods<'a>(
        &mut self,
        wanted: impl Iterator<Item = (&'a str, &'a [String])>,
    ) {
        let Some(again) = self.source.reserved_again.clone() else {
            return;
        };
        let mut uids: BTreeSet<String> = BTreeSet::new();
        for (pod_uid, env) in wanted {
            uids.extend(super::policy::reserved_for_others(
                self.policy.snapshot(),
                pod_uid,
                env,
            ));
        }
        if uids.is_empty() {
            return;
        }
        // Tasks of their own: a read still running at the deadline finishes and is recorded, so the
        // kubelet's next try of the container finds it.
        let reads =
            futures_util::future::join_all(uids.into_iter().map(|uid| tokio::spawn(again(uid))));
        if tokio::time::timeout(RESERVED_AGAIN_WAIT, reads)
            .await
            .is_err()
        {
            tracing::warn!("reading claims' pods again took over {RESERVED_AGAIN_WAIT:?}");
        }
        self.refresh();
    }

    /// A pod sandbox event, to pod networking (`--nri` in CNI mode only subscribes them).
    async fn sandbox(&mut self, event: i32, pod: api::PodSandbox) -> Result<(), Status> {
        self.refresh();
        match &self.pod_network {
            Some(net) => net.on_event(event, &pod).await,
            None => Ok(()),
        }
    }
}

impl Plugin for CpuPlugin {
    fn events(&self) -> EventMask {
        let cpus = EventMask::of(&[
            event::CREATE_CONTAINER,
            event::UPDATE_CONTAINER,
            event::STOP_CONTAINER,
            event::REMOVE_CONTAINER,
        ]);
        match self.pod_network {
            Some(_) => cpus.union(EventMask::of(super::sandbox::EVENTS)),
            None => cpus,
        }
    }

    async fn configure(
        &mut self,
        request: api::ConfigureRequest,
    ) -> Result<Option<EventMask>, Status> {
        if let Some(net) = &self.pod_network
            && let Some(warning) = net.request_timeout_warning(request.request_timeout)
        {
            tracing::warn!("{warning}");
        }
        Ok(None)
    }

    async fn synchronize(
        &mut self,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
    ) -> Result<Vec<api::ContainerUpdate>, Status> {
        self.refresh();
        if let Some(net) = &self.pod_network {
            // Off the loop: the state directory's listing may block, the teardowns take long; the
            // events meanwhile are answered (see `PodNetwork::del_vanished`).
            let alive: BTreeSet<String> = pods.iter().map(|p| p.id.clone()).collect();
            // Before any later event: a sandbox started after this point is kept.
            let mark = net.sandboxes.mark();
            let net = net.clone();
            tokio::spawn(async move { net.clean_up_vanished(alive, mark).await });
        }
        let uids: BTreeMap<String, String> = pods.into_iter().map(|p| (p.id, p.uid)).collect();
        let containers: Vec<SyncedContainer> = containers
            .into_iter()
            .filter(|c| c.state != CONTAINER_STOPPED)
            .map(|c| SyncedContainer {
                cpus: current_cpus(&c),
                pod_uid: uids.get(&c.pod_sandbox_id).cloned().unwrap_or_default(),
                id: c.id,
                name: c.name,
                env: c.env,
            })
            .collect();
        self.read_reserved_pods(
            containers
                .iter()
                .map(|c| (c.pod_uid.as_str(), c.env.as_slice())),
        )
        .await;
        let updates = self.policy.synchronize(containers);
        tracing::info!(
            containers = self.policy.containers().len(),
            updates = updates.len(),
            "synchronized with the NRI runtime"
        );
        Ok(updates.into_iter().map(container_update).collect())
    }

    async fn run_pod_sandbox(&mut self, pod: api::PodSandbox) -> Result<(), Status> {
        self.sandbox(event::RUN_POD_SANDBOX, pod).await
    }

    async fn stop_pod_sandbox(&mut self, pod: api::PodSandbox) -> Result<(), Status> {
        self.sandbox(event::STOP_POD_SANDBOX, pod).await
    }

    async fn remove_pod_sandbox(&mut self, pod: api::PodSandbox) -> Result<(), Status> {
        self.sandbox(event::REMOVE_POD_SANDBOX, pod).await
    }

    async fn create_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> Result<(Option<api::ContainerAdjustment>, Vec<api::ContainerUpdate>), Status> {
        self.refresh();
        self.read_reserved_pods(std::iter::once((
            pod.uid.as_str(),
            container.env.as_slice(),
        )))
        .await;
        let (cpus, updates) = self
            .policy
            .create(&container.id, &container.name, &pod.uid, &container.env)
            .map_err(|e| stub::status(code::FAILED_PRECONDITION, e.to_string()))?;
        tracing::debug!(container = %container.name, pod = %pod.name, cpus = %cpus, "pinned");
        let adjust = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                resources: Some(resources(&cpus)),
            }),
        };
        Ok((
            Some(adjust),
            updates.into_iter().map(container_update).collect(),
        ))
    }

    async fn update_container(
        &mut self,
        _pod: api::PodSandbox,
        container: api::Container,
        _resources: Option<api::LinuxResources>,
    ) -> Result<Vec<api::ContainerUpdate>, Status> {
        self.refresh();
        let updates = self.policy.update(&container.id);
        Ok(updates.into_iter().map(container_update).collect())
    }

    async fn stop_container(
        &mut self,
        _pod: api::PodSandbox,
        container: api::Container,
    ) -> Result<Vec<api::ContainerUpdate>, Status> {
        self.refresh();
        let updates = self.policy.stop(&container.id);
        Ok(updates.into_iter().map(container_update).collect())
    }

    async fn remove_container(
        &mut self,
        _pod: api::PodSandbox,
        container: api::Container,
    ) -> Result<(), Status> {
        self.refresh();
        self.policy.forget(&container.id);
        Ok(())
    }

    /// The claims changed (the moves are owed until the runtime's next event, or pushed at once
    /// with unsolicited updates), unsolicited updates failed, or it is time to retry them. Each
    /// branch acts after its only `.await`.
    async fn background(&mut self) -> Flow {
        tokio::select! {
            changed = self.source.claims.changed() => {
                if changed.is_err() {
                    return Flow::Stop;
                }
                let snapshot = self.source.snapshot();
                if self.unsolicited {
                    let updates = self.policy.set_snapshot(snapshot);
                    if !updates.is_empty() {
                        // Sent by the pusher task: the runtime may call us before it answers.
                        let _ = self.push.send(updates);
                    }
                } else {
                    // Owed until the runtime's next event (see the module's doc).
                    self.policy.replace_snapshot(snapshot);
                }
            }
            Some(failed) = self.failed.recv() => {
                self.stats.add_update_failures(failed.len());
                self.policy.invalidate(&failed);
            }
            _ = self.retry.tick(), if self.unsolicited => {
                let updates = self.policy.retry();
                if !updates.is_empty() {
                    let _ = self.push.send(updates);
                }
            }
        }
        Flow::Continue
    }

    /// Reports the containers managed, and a refused creation.
    fn answering(&mut self, method: &str, ok: bool) {
        if method == "CreateContainer" && !ok {
            self.stats.add_refused();
        }
        let exclusive = self
            .policy
            .containers()
            .values()
            .filter(|t| matches!(t.placement, super::policy::Placement::Exclusive(_)))
            .count();
        self.stats
            .set_containers(exclusive, self.policy.containers().len() - exclusive);
    }

    /// The moves that answer carried are owed again.
    fn undelivered(&mut self, _method: &str) {
        self.policy.invalidate_all();
    }
}

/// Sends the unsolicited updates it receives, one call at a time, and reports the ones that failed.
async fn pusher(
    runtime: stub::Runtime,
    mut updates: mpsc::UnboundedReceiver<Vec<Update>>,
    failed: mpsc::UnboundedSender<Vec<String>>,
) {
    while let Some(batch) = updates.recv().await {
        let refused = push(&runtime, batch).await;
        if !refused.is_empty() && failed.send(refused).is_err() {
            return;
        }
    }
}

/// How often unsolicited updates the runtime did not apply are sent again.
const RETRY: Duration = Duration::from_secs(5);

/// Aborts a task when dropped (the pusher ends with its connection).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends unsolicited updates; returns the containers whose update did not apply (all of them when
/// the call failed: containerd answers an error when any update fails, and a timeout says nothing).
async fn push(runtime: &stub::Runtime, updates: Vec<Update>) -> Vec<String> {
    let ids: Vec<String> = updates.iter().map(|(id, _)| id.clone()).collect();
    let update = updates.into_iter().map(container_update).collect();
    match runtime.update_containers(update).await {
        Ok(failed) if failed.is_empty() => {
            tracing::info!(
                containers = ids.len(),
                "moved containers to the new shared CPU pool"
            );
            Vec::new()
        }
        Ok(failed) => {
            let failed: Vec<String> = failed.into_iter().map(|u| u.container_id).collect();
            tracing::warn!(
                ?failed,
                "the runtime did not update these containers' CPUs; retrying"
            );
            failed
        }
        Err(error) => {
            tracing::warn!(%error, containers = ?ids, "updating containers' CPUs failed; retrying");
            ids
        }
    }
}

fn resources(cpus: &CpuSet) -> api::LinuxResources {
    api::LinuxResources {
        cpu: Some(api::LinuxCpu {
            cpus: cpus.to_cpulist(),
            mems: String::new(),
        }),
    }
}

/// An update of another container's CPUs. `ignore_failure`: a container that exits at that moment must
/// not fail the event (some containerd releases fail the container being created, or drop the plugin
/// after a failed Synchronize); an update that did not apply is corrected at the next `Synchronize`
/// (or, with unsolicited updates, by the next retry).
fn container_update((id, cpus): Update) -> api::ContainerUpdate {
    api::ContainerUpdate {
        container_id: id,
        linux: Some(api::LinuxContainerUpdate {
            resources: Some(resources(&cpus)),
        }),
        ignore_failure: true,
    }
}

/// The CPUs a container runs on, from its Linux resources.
fn current_cpus(container: &api::Container) -> Option<CpuSet> {
    CpuSet::from_cpulist(container.cpus())
        .ok()
        .filter(|c| !c.is_empty())
}

/// `ContainerState` CONTAINER_STOPPED.
const CONTAINER_STOPPED: i32 = 4;
