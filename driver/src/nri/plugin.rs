//! The NRI plugin: connects to the runtime's socket, registers, and keeps every container on the CPUs
//! [`Policy`] gives it. It reconnects when the runtime restarts (a fresh `Synchronize` rebuilds the
//! state) and pushes unsolicited updates when claims are prepared or unprepared, so shared containers
//! leave CPUs as soon as a claim takes them, not when the claim's container starts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hal::CpuSet;
use prost::Message as _;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::endpoint::{CallError, Endpoint, Incoming, code};
use super::policy::{ClaimCpus, Policy, Snapshot, SyncedContainer, Update};
use super::proto::api;
use super::proto::ttrpc::Status;
use super::stats::NriStats;
use super::wire::{PLUGIN_CONN, RUNTIME_CONN};

/// The service the runtime exposes to plugins.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The service a plugin exposes to the runtime.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";

/// NRI event numbers (the `Event` enum); a plugin subscribes with bit `event - 1`.
pub mod event {
    /// CreateContainer.
    pub const CREATE_CONTAINER: i32 = 4;
    /// UpdateContainer.
    pub const UPDATE_CONTAINER: i32 = 8;
    /// StopContainer.
    pub const STOP_CONTAINER: i32 = 10;
    /// RemoveContainer (delivered as a StateChange).
    pub const REMOVE_CONTAINER: i32 = 11;

    /// The subscription mask of `events`.
    pub fn mask(events: &[i32]) -> i32 {
        events.iter().fold(0, |m, e| m | (1 << (e - 1)))
    }
}

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
        }
    }
}

/// Checks an NRI plugin index: two digits.
pub fn parse_index(text: &str) -> Result<String, String> {
    match text.len() == 2 && text.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "NRI plugin index {text:?}: two digits (00-99) expected"
        )),
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

/// Runs the plugin until `stopped` turns true: connects, serves, and reconnects (every second, then
/// backing off to 30 s) while the runtime is away.
pub async fn run(config: NriConfig, source: CpuSource, mut stopped: watch::Receiver<bool>) {
    let mut delay = Duration::from_secs(1);
    let mut reported = false;
    while !*stopped.borrow() {
        match UnixStream::connect(&config.socket).await {
            Ok(socket) => {
                delay = Duration::from_secs(1);
                reported = false;
                tracing::info!(socket = %config.socket.display(), "connected to the NRI runtime");
                let served = serve(socket, &config, source.clone(), stopped.clone()).await;
                config.stats.set_connected(false);
                match served {
                    Ok(()) => tracing::info!("the NRI connection ended"),
                    Err(error) => tracing::warn!(%error, "the NRI connection failed"),
                }
            }
            Err(error) if !reported => {
                tracing::warn!(socket = %config.socket.display(), %error,
                    "cannot reach the NRI runtime (is NRI enabled?); retrying");
                reported = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Serves one connection until it ends or `stopped` turns true.
pub async fn serve(
    socket: UnixStream,
    config: &NriConfig,
    mut source: CpuSource,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
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
    // One pusher, so unsolicited updates reach the runtime in order; what it could not apply comes
    // back, and is sent again at the next retry tick.
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<Vec<Update>>();
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let pusher = {
        let endpoint = endpoint.clone();
        let timeout = config.timeout;
        tokio::spawn(async move {
            while let Some(updates) = push_rx.recv().await {
                let failed = push(&endpoint, updates, timeout).await;
                if !failed.is_empty() && failed_tx.send(failed).is_err() {
                    return;
                }
            }
        })
    };
    let _stop_pusher = AbortOnDrop(pusher);
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            call = incoming.recv() => {
                let Some(Incoming { stream, request }) = call else {
                    return Ok(());
                };
                let answer = handle(&policy, &mut sync, &request.service, &request.method, &request.payload);
                count(&policy, &config.stats, request.method == "CreateContainer" && answer.is_err());
                endpoint.answer(stream, answer).await.map_err(|e| e.to_string())?;
            }
            Some(registered) = async { match registration.as_mut() { Some(r) => Some(r.await), None => None } } => {
                registration = None;
                match registered {
                    Ok(Ok(_)) => {
                        config.stats.set_connected(true);
                        tracing::info!(name = %config.name, index = %config.index, "registered with the NRI runtime")
                    }
                    Ok(Err(error)) => return Err(format!("registering: {error}")),
                    Err(error) => return Err(format!("registering: {error}")),
                }
            }
            changed = source.claims.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let snapshot = source.snapshot();
                let updates = policy.lock().map(|mut p| p.set_snapshot(snapshot)).unwrap_or_default();
                if !updates.is_empty() {
                    // Sent by the pusher task: the runtime may call us before it answers.
                    let _ = push_tx.send(updates);
                }
            }
            Some(failed) = failed_rx.recv() => {
                config.stats.add_update_failures(failed.len());
                if let Ok(mut policy) = policy.lock() {
                    policy.invalidate(&failed);
                }
            }
            _ = retry.tick() => {
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

/// How often updates the runtime did not apply are sent again.
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
/// after a failed Synchronize); an update that did not apply is corrected by the next change or retry.
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
                ]),
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
                .map_err(|e| status(code::FAILED_PRECONDITION, e))?;
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
            policy.forget(&request.container.map(|c| c.id).unwrap_or_default());
            api::StopContainerResponse { update: Vec::new() }.encode_to_vec()
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
