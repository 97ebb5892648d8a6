//! The NRI plugin: registers on the runtime's socket and keeps every container on the CPUs [`Policy`]
//! gives it. It reconnects when the runtime restarts ([`dra_nri::reconnect`]; a fresh `Synchronize`
//! rebuilds the state).
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

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hal::CpuSet;
use prost::Message as _;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::endpoint::{CallError, Ended, Endpoint, Incoming, code};
use super::policy::{ClaimCpus, Policy, Snapshot, SyncedContainer, Update};
use super::proto::api;
use super::proto::ttrpc::Status;
use super::stats::NriStats;
use super::wire::{PLUGIN_CONN, RUNTIME_CONN};

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
    pub pod_network: Option<Arc<super::sandbox::PodNetwork>>,
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
/// CPUs (online minus reserved, read at each change).
#[derive(Clone)]
pub struct CpuSource {
    /// Claim UID → CPUs and pods.
    pub claims: watch::Receiver<std::collections::BTreeMap<String, ClaimCpus>>,
    /// The allocatable CPUs now.
    pub allocatable: Arc<dyn Fn() -> CpuSet + Send + Sync>,
}

impl CpuSource {
    fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            allocatable: (self.allocatable)(),
            claims: self.claims.borrow_and_update().clone(),
        }
    }
}

/// Runs the plugin until `stopped` turns true: connects, serves, and reconnects with backoff
/// ([`dra_nri::reconnect::run`]) while the runtime is away or keeps dropping the plugin.
pub async fn run(config: NriConfig, source: CpuSource, stopped: watch::Receiver<bool>) {
    if config.unsolicited_updates {
        tracing::warn!(
            "NRI unsolicited updates are on: they deadlock containerd 1.7.x and 2.1.x (containerd \
             issue #13733) unless the runtime's NRI has containerd/nri#301"
        );
    }
    let serve_one = |socket, stopped| serve(socket, &config, source.clone(), stopped);
    dra_nri::reconnect::run(&config.socket, &config.stats, serve_one, stopped).await;
}

/// Why a connection to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum NriError {
    /// `RegisterPlugin` failed.
    #[error("registering: {0}")]
    Register(CallError),
    /// The registration task failed.
    #[error("registering: {0}")]
    Task(String),
    /// The connection broke (a message over the limit, bytes that are not NRI, a read error).
    #[error("the NRI connection broke: {0}")]
    Connection(Ended),
    /// An answer could not be written.
    #[error("answering the NRI runtime: {0}")]
    Answer(CallError),
}

impl NriError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            NriError::Register(e) | NriError::Answer(e) => e.kind(),
            NriError::Task(_) => hal::ErrorKind::Io,
            NriError::Connection(e) => e.kind(),
        }
    }
}

impl dra_nri::reconnect::Failure for NriError {
    fn kind(&self) -> hal::ErrorKind {
        NriError::kind(self)
    }
}

/// How a connection ended.
pub type Outcome = dra_nri::reconnect::Outcome<NriError>;

/// Serves one connection until it ends or `stopped` turns true.
pub async fn serve(
    socket: UnixStream,
    config: &NriConfig,
    source: CpuSource,
    stopped: watch::Receiver<bool>,
) -> Outcome {
    let mut synchronized = false;
    let result = serve_inner(socket, config, source, stopped, &mut synchronized).await;
    Outcome {
        synchronized,
        result,
    }
}

async fn serve_inner(
    socket: UnixStream,
    config: &NriConfig,
    mut source: CpuSource,
    mut stopped: watch::Receiver<bool>,
    synchronized: &mut bool,
) -> Result<(), NriError> {
    let (endpoint, mut incoming) = Endpoint::start(socket, PLUGIN_CONN, RUNTIME_CONN);
    let policy = Arc::new(Mutex::new(Policy::new(source.snapshot())));
    let register = api::RegisterPluginRequest {
        plugin_name: config.name.clone(),
        plugin_idx: config.index.clone(),
    };
    // Registration runs beside the loop: the runtime may call Configure before it answers.
    let registration = {
        let endpoint = endpoint.clone();
        let timeout = config.timeout;
        tokio::spawn(async move {
            endpoint
                .call::<api::Empty>(RUNTIME_SERVICE, "RegisterPlugin", &register, timeout)
                .await
        })
    };
    let mut registration = Some(registration);
    let mut sync = Vec::new();
    // Pod sandboxes named by the Synchronize calls so far.
    let mut alive = std::collections::BTreeSet::new();
    // Only with `unsolicited_updates`: one pusher, so unsolicited updates reach the runtime in
    // order; what it could not apply comes back, and is sent again at the next retry tick.
    let (push_tx, push_rx) = mpsc::unbounded_channel::<Vec<Update>>();
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let _stop_pusher = config.unsolicited_updates.then(|| {
        AbortOnDrop(tokio::spawn(pusher(
            endpoint.clone(),
            config.timeout,
            push_rx,
            failed_tx,
        )))
    });
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            call = incoming.recv() => {
                let Some(Incoming { stream, request }) = call else {
                    return match endpoint.ended() {
                        None | Some(Ended::Closed) => Ok(()),
                        Some(ended) => Err(NriError::Connection(ended)),
                    };
                };
                // Claims prepared since the last event: this event's answer carries the moves.
                if source.claims.has_changed().unwrap_or(false) {
                    let snapshot = source.snapshot();
                    if let Ok(mut policy) = policy.lock() {
                        policy.replace_snapshot(snapshot);
                    }
                }
                let net = config.pod_network.as_deref().filter(|_| request.service == PLUGIN_SERVICE);
                if let (Some(net), "Synchronize") = (net, request.method.as_str())
                    && let Ok(part) = api::SynchronizeRequest::decode(request.payload.as_slice())
                {
                    alive.extend(part.pods.iter().map(|p| p.id.clone()));
                    if !part.more {
                        // Off the loop: the state directory's listing may block, the teardowns take
                        // long; the events meanwhile are answered (see `PodNetwork::del_vanished`).
                        let alive = std::mem::take(&mut alive);
                        // Before any later event: a sandbox started after this point is kept.
                        let mark = net.sandboxes.mark();
                        let net = net.clone();
                        tokio::spawn(async move { net.clean_up_vanished(alive, mark).await });
                    }
                }
                let sandbox = match (net, request.method.as_str()) {
                    (Some(net), "StateChange") => net.on_state_change(&request.payload).await,
                    _ => None,
                };
                let extra: &[i32] = if net.is_some() { super::sandbox::EVENTS } else { &[] };
                let answer = match sandbox {
                    Some(answer) => answer,
                    None => handle(&policy, &mut sync, extra, &request.service, &request.method, &request.payload),
                };
                count(&policy, &config.stats, request.method == "CreateContainer" && answer.is_err());
                if request.method == "Synchronize" && sync.is_empty() && answer.is_ok() {
                    *synchronized = true;
                }
                match endpoint.answer(stream, answer).await {
                    Ok(()) => {}
                    // Logged, and refused to the runtime with a status: the connection goes on, and
                    // the moves that answer carried are owed again.
                    Err(CallError::TooLarge { .. }) => {
                        if let Ok(mut policy) = policy.lock() {
                            policy.invalidate_all();
                        }
                    }
                    Err(error) => return Err(NriError::Answer(error)),
                }
            }
            Some(registered) = async { match registration.as_mut() { Some(r) => Some(r.await), None => None } } => {
                registration = None;
                match registered {
                    Ok(Ok(_)) => {
                        config.stats.set_connected(true);
                        tracing::info!(name = %config.name, index = %config.index, "registered with the NRI runtime")
                    }
                    Ok(Err(error)) => return Err(NriError::Register(error)),
                    Err(error) => return Err(NriError::Task(error.to_string())),
                }
            }
            changed = source.claims.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let snapshot = source.snapshot();
                let Ok(mut policy) = policy.lock() else { continue };
                if config.unsolicited_updates {
                    let updates = policy.set_snapshot(snapshot);
                    if !updates.is_empty() {
                        // Sent by the pusher task: the runtime may call us before it answers.
                        let _ = push_tx.send(updates);
                    }
                } else {
                    // Owed until the runtime's next event (see the module's doc).
                    policy.replace_snapshot(snapshot);
                }
            }
            Some(failed) = failed_rx.recv() => {
                config.stats.add_update_failures(failed.len());
                if let Ok(mut policy) = policy.lock() {
                    policy.invalidate(&failed);
                }
            }
            _ = retry.tick(), if config.unsolicited_updates => {
                let updates = policy.lock().map(|mut p| p.retry()).unwrap_or_default();
                if !updates.is_empty() {
                    let _ = push_tx.send(updates);
                }
            }
            _ = stopped.changed() => {
                endpoint.close().await;
                return Ok(());
            }
        }
    }
}

/// Sends the unsolicited updates it receives, one call at a time, and reports the ones that failed.
async fn pusher(
    endpoint: Endpoint,
    timeout: Duration,
    mut updates: mpsc::UnboundedReceiver<Vec<Update>>,
    failed: mpsc::UnboundedSender<Vec<String>>,
) {
    while let Some(batch) = updates.recv().await {
        let refused = push(&endpoint, batch, timeout).await;
        if !refused.is_empty() && failed.send(refused).is_err() {
            return;
        }
    }
}

/// Reports the containers managed, and a refused creation.
fn count(policy: &Mutex<Policy>, stats: &NriStats, refused: bool) {
    if refused {
        stats.add_refused();
    }
    if let Ok(policy) = policy.lock() {
        let exclusive = policy
            .containers()
            .values()
            .filter(|t| matches!(t.placement, super::policy::Placement::Exclusive(_)))
            .count();
        stats.set_containers(exclusive, policy.containers().len() - exclusive);
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
async fn push(endpoint: &Endpoint, updates: Vec<Update>, timeout: Duration) -> Vec<String> {
    let ids: Vec<String> = updates.iter().map(|(id, _)| id.clone()).collect();
    let request = api::UpdateContainersRequest {
        update: updates.into_iter().map(container_update).collect(),
        evict: Vec::new(),
    };
    let result: Result<api::UpdateContainersResponse, CallError> = endpoint
        .call(RUNTIME_SERVICE, "UpdateContainers", &request, timeout)
        .await;
    match result {
        Ok(response) if response.failed.is_empty() => {
            tracing::info!(
                containers = ids.len(),
                "moved containers to the new shared CPU pool"
            );
            Vec::new()
        }
        Ok(response) => {
            let failed: Vec<String> = response
                .failed
                .into_iter()
                .map(|u| u.container_id)
                .collect();
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

fn status(code: i32, message: impl Into<String>) -> Status {
    Status {
        code,
        message: message.into(),
    }
}

fn decode<M: prost::Message + Default>(method: &str, payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| status(code::INVALID_ARGUMENT, format!("{method}: {e}")))
}

/// The CPUs a container runs on, from its Linux resources.
fn current_cpus(container: &api::Container) -> Option<CpuSet> {
    CpuSet::from_cpulist(container.cpus())
        .ok()
        .filter(|c| !c.is_empty())
}

/// Answers one call of the runtime.
fn handle(
    policy: &Mutex<Policy>,
    sync: &mut Vec<api::SynchronizeRequest>,
    extra_events: &[i32],
    service: &str,
    method: &str,
    payload: &[u8],
) -> Result<Vec<u8>, Status> {
    if service != PLUGIN_SERVICE {
        return Err(status(code::UNIMPLEMENTED, format!("no service {service}")));
    }
    let mut policy = policy
        .lock()
        .map_err(|_| status(code::UNKNOWN, "the plugin's state is poisoned"))?;
    let answer = match method {
        "Configure" => {
            let request: api::ConfigureRequest = decode(method, payload)?;
            tracing::info!(runtime = %request.runtime_name, version = %request.runtime_version,
                "configured by the NRI runtime");
            api::ConfigureResponse {
                events: event::mask(&[
                    event::CREATE_CONTAINER,
                    event::UPDATE_CONTAINER,
                    event::STOP_CONTAINER,
                    event::REMOVE_CONTAINER,
                ]) | event::mask(extra_events),
            }
            .encode_to_vec()
        }
        "Synchronize" => {
            let request: api::SynchronizeRequest = decode(method, payload)?;
            let more = request.more;
            sync.push(request);
            if more {
                return Ok(api::SynchronizeResponse {
                    update: Vec::new(),
                    more: true,
                }
                .encode_to_vec());
            }
            let parts = std::mem::take(sync);
            let pods: std::collections::BTreeMap<String, String> = parts
                .iter()
                .flat_map(|p| p.pods.iter())
                .map(|p| (p.id.clone(), p.uid.clone()))
                .collect();
            let containers = parts
                .into_iter()
                .flat_map(|p| p.containers)
                .filter(|c| c.state != CONTAINER_STOPPED)
                .map(|c| SyncedContainer {
                    cpus: current_cpus(&c),
                    pod_uid: pods.get(&c.pod_sandbox_id).cloned().unwrap_or_default(),
                    id: c.id,
                    name: c.name,
                    env: c.env,
                })
                .collect();
            let updates = policy.synchronize(containers);
            tracing::info!(
                containers = policy.containers().len(),
                updates = updates.len(),
                "synchronized with the NRI runtime"
            );
            api::SynchronizeResponse {
                update: updates.into_iter().map(container_update).collect(),
                more: false,
            }
            .encode_to_vec()
        }
        "CreateContainer" => {
            let request: api::CreateContainerRequest = decode(method, payload)?;
            let pod = request.pod.unwrap_or_default();
            let container = request.container.unwrap_or_default();
            let (cpus, updates) = policy
                .create(&container.id, &container.name, &pod.uid, &container.env)
                .map_err(|e| status(code::FAILED_PRECONDITION, e.to_string()))?;
            tracing::debug!(container = %container.name, pod = %pod.name, cpus = %cpus, "pinned");
            api::CreateContainerResponse {
                adjust: Some(api::ContainerAdjustment {
                    linux: Some(api::LinuxContainerAdjustment {
                        resources: Some(resources(&cpus)),
                    }),
                }),
                update: updates.into_iter().map(container_update).collect(),
                evict: Vec::new(),
            }
            .encode_to_vec()
        }
        "UpdateContainer" => {
            let request: api::UpdateContainerRequest = decode(method, payload)?;
            let id = request.container.map(|c| c.id).unwrap_or_default();
            api::UpdateContainerResponse {
                update: policy
                    .update(&id)
                    .into_iter()
                    .map(container_update)
                    .collect(),
                evict: Vec::new(),
            }
            .encode_to_vec()
        }
        "StopContainer" => {
            let request: api::StopContainerRequest = decode(method, payload)?;
            let id = request.container.map(|c| c.id).unwrap_or_default();
            api::StopContainerResponse {
                update: policy.stop(&id).into_iter().map(container_update).collect(),
            }
            .encode_to_vec()
        }
        "RemoveContainer" => {
            let request: api::RemoveContainerRequest = decode(method, payload)?;
            policy.forget(&request.container.map(|c| c.id).unwrap_or_default());
            Vec::new()
        }
        "StateChange" => {
            let request: api::StateChangeEvent = decode(method, payload)?;
            if request.event == event::REMOVE_CONTAINER {
                policy.forget(&request.container.map(|c| c.id).unwrap_or_default());
            }
            Vec::new()
        }
        "Shutdown" => {
            tracing::info!("the NRI runtime is shutting down");
            Vec::new()
        }
        other => {
            return Err(status(
                code::UNIMPLEMENTED,
                format!("{PLUGIN_SERVICE}/{other} is not handled by this plugin"),
            ));
        }
    };
    Ok(answer)
}

/// `ContainerState` CONTAINER_STOPPED.
const CONTAINER_STOPPED: i32 = 4;
