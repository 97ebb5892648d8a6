//! A protocol-level stand-in for containerd's or CRI-O's NRI side, for tests: it listens on a Unix
//! socket, speaks the mux and ttrpc framing, answers `RegisterPlugin` and `UpdateContainers`, calls
//! the plugin's `Configure`, `Synchronize`, `CreateContainer`, ... and keeps its own table of containers
//! with the CPUs the plugin gave them (adjustments and updates applied as a runtime applies them).
//!
//! It holds the plugin to containerd's behaviour:
//!
//! - it reads as a Go peer does (frames over its 4 KiB read buffer and stream ids that do not
//!   increase end the connection);
//! - it takes containerd's two locks ([`Locks`]) in containerd's orders, so a plugin that sends an
//!   unsolicited `UpdateContainers` while a container event is on its way deadlocks it, as it
//!   deadlocks containerd 1.7 and 2.1 (containerd issue #13733);
//! - it answers an error when any update fails, while an update of an unknown container is a success;
//! - like containerd 1.7 (NRI 0.6.1), it drops the plugin when a `Synchronize` is over ttrpc's limit
//!   (its ttrpc client refuses to send it, and the failed synchronization closes the plugin).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::net::UnixListener;
use tokio::sync::{MutexGuard, mpsc, watch};

use super::endpoint::{CallError, Endpoint, Incoming};
use super::proto::api;
use super::service::{PLUGIN_SERVICE, RUNTIME_SERVICE, event};
use super::wire::{MAX_DATA, PLUGIN_CONN, RUNTIME_CONN};

/// How long the fake runtime waits for the plugin.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime's view of its containers: id → CPUs (a cpulist; empty: unconfined).
pub type Table = Arc<Mutex<BTreeMap<String, String>>>;

/// Containers whose updates fail (as a cgroup write can), for retry tests.
pub type Failing = Arc<Mutex<std::collections::BTreeSet<String>>>;

/// The listening runtime.
pub struct FakeRuntime {
    listener: UnixListener,
}

/// containerd's two locks around NRI (containerd 1.7 `pkg/nri/nri.go` and `pkg/cri/nri`, 2.x
/// `internal/nri`; NRI `pkg/adaptation/adaptation.go` before containerd/nri#301):
///
/// - a container event (`CreateContainer`, `StopContainer`, `UpdateContainer`, `PostCreateContainer`
///   → `StateChange`, ...) takes the CRI plugin's NRI lock, then, to call the plugins, the
///   adaptation's lock; the updates in the plugins' answers are applied under the CRI lock;
/// - a plugin's unsolicited `UpdateContainers` takes the adaptation's lock, then the CRI lock to
///   apply them (`updateContainers` → `updateFn` → `updateFromPlugin`).
///
/// The orders are opposite: an `UpdateContainers` that gets the adaptation lock while an event holds
/// the CRI lock deadlocks both, and every later container event on the node (issue #13733).
#[derive(Clone, Default)]
struct Locks {
    cri: Arc<tokio::sync::Mutex<()>>,
    adaptation: Arc<tokio::sync::Mutex<()>>,
}

/// A plugin that connected and registered.
pub struct PluginConn {
    endpoint: Endpoint,
    /// The name and index it registered with.
    pub registered: (String, String),
    /// The containers and their CPUs, as the runtime applied them.
    pub table: Table,
    /// Containers whose updates fail until removed from here.
    pub failing: Failing,
    locks: Locks,
    unsolicited: mpsc::UnboundedReceiver<api::UpdateContainersRequest>,
    /// `UpdateContainers` calls received, applied or not.
    received: Arc<AtomicUsize>,
    /// `UpdateContainers` calls holding the adaptation lock and waiting for the CRI lock.
    stuck: watch::Receiver<usize>,
}

/// A container event inside containerd's CRI plugin: it holds the CRI plugin's NRI lock until
/// dropped, and calls the plugin under the adaptation lock.
pub struct ContainerEvent<'a> {
    conn: &'a PluginConn,
    _cri: MutexGuard<'a, ()>,
}

/// Why [`FakeRuntime::accept`] got no configured plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// Nothing happened in time: what was awaited, and how long.
    #[error("{0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// Accepting the connection failed.
    #[error("accepting a plugin connection: {0}")]
    Accept(#[source] std::io::Error),
    /// The plugin closed the connection before registering.
    #[error("the plugin hung up before registering")]
    HungUp,
    /// The plugin's first call was not `RegisterPlugin`.
    #[error("the first call was {service}/{method}, not RegisterPlugin")]
    NotRegistration {
        /// The service called.
        service: String,
        /// The method called.
        method: String,
    },
    /// The registration does not decode.
    #[error("RegisterPlugin request: {0}")]
    Decode(#[source] prost::DecodeError),
    /// Answering or configuring the plugin failed.
    #[error("{0}")]
    Call(#[source] CallError),
}

impl AcceptError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            AcceptError::Timeout(..) | AcceptError::HungUp => hal::ErrorKind::Io,
            AcceptError::Accept(error) => hal::ErrorKind::from_io(error),
            AcceptError::NotRegistration { .. } | AcceptError::Decode(_) => {
                hal::ErrorKind::Malformed
            }
            AcceptError::Call(error) => error.kind(),
        }
    }
}

impl FakeRuntime {
    /// Listens on `path`.
    pub fn listen(path: &Path) -> std::io::Result<FakeRuntime> {
        Ok(FakeRuntime {
            listener: UnixListener::bind(path)?,
        })
    }

    /// Waits for a plugin to connect and register, then configures it. Fails when the plugin does not
    /// register first, or registers twice.
    pub async fn accept(&self) -> Result<(PluginConn, api::ConfigureResponse), AcceptError> {
        self.accept_within(TIMEOUT).await
    }

    /// As [`FakeRuntime::accept`], waiting up to `wait` for the plugin to connect.
    pub async fn accept_within(
        &self,
        wait: Duration,
    ) -> Result<(PluginConn, api::ConfigureResponse), AcceptError> {
        let (socket, _) = tokio::time::timeout(wait, self.listener.accept())
            .await
            .map_err(|_| AcceptError::Timeout("no plugin connected", wait))?
            .map_err(AcceptError::Accept)?;
        let (endpoint, mut incoming) = Endpoint::start_strict(socket, RUNTIME_CONN, PLUGIN_CONN);
        let first = tokio::time::timeout(TIMEOUT, incoming.recv())
            .await
            .map_err(|_| AcceptError::Timeout("the plugin did not register", TIMEOUT))?
            .ok_or(AcceptError::HungUp)?;
        if first.request.service != RUNTIME_SERVICE || first.request.method != "RegisterPlugin" {
            return Err(AcceptError::NotRegistration {
                service: first.request.service.clone(),
                method: first.request.method.clone(),
            });
        }
        let register = api::RegisterPluginRequest::decode(first.request.payload.as_slice())
            .map_err(AcceptError::Decode)?;
        endpoint
            .answer(first.stream, Ok(api::Empty {}.encode_to_vec()))
            .await
            .map_err(AcceptError::Call)?;
        let table: Table = Arc::default();
        let failing: Failing = Arc::default();
        let locks = Locks::default();
        let received = Arc::new(AtomicUsize::new(0));
        let (stuck_tx, stuck) = watch::channel(0);
        let (tx, unsolicited) = mpsc::unbounded_channel();
        let runtime = Runtime {
            table: table.clone(),
            failing: failing.clone(),
            locks: locks.clone(),
            received: received.clone(),
            stuck: stuck_tx,
        };
        tokio::spawn(serve_runtime(endpoint.clone(), incoming, runtime, tx));
        let conn = PluginConn {
            endpoint,
            registered: (register.plugin_name, register.plugin_idx),
            table,
            failing,
            locks,
            unsolicited,
            received,
            stuck,
        };
        let configured = conn
            .call(
                "Configure",
                &api::ConfigureRequest {
                    config: String::new(),
                    runtime_name: "fake-runtime".into(),
                    runtime_version: "0.0.0".into(),
                    registration_timeout: 5000,
                    request_timeout: 2000,
                },
            )
            .await
            .map_err(AcceptError::Call)?;
        Ok((conn, configured))
    }
}

/// The runtime's state that its answers touch.
struct Runtime {
    table: Table,
    failing: Failing,
    locks: Locks,
    received: Arc<AtomicUsize>,
    stuck: watch::Sender<usize>,
}

/// Answers the plugin's calls after registration: `UpdateContainers` is applied to the table under
/// the adaptation lock and then the CRI lock (see [`Locks`]) and reported; a second `RegisterPlugin`
/// or anything else is refused.
async fn serve_runtime(
    endpoint: Endpoint,
    mut incoming: mpsc::Receiver<Incoming>,
    runtime: Runtime,
    unsolicited: mpsc::UnboundedSender<api::UpdateContainersRequest>,
) {
    while let Some(Incoming { stream, request }) = incoming.recv().await {
        let answer = match (request.service.as_str(), request.method.as_str()) {
            (RUNTIME_SERVICE, "UpdateContainers") => {
                match api::UpdateContainersRequest::decode(request.payload.as_slice()) {
                    Ok(update) => {
                        runtime.received.fetch_add(1, Ordering::SeqCst);
                        let _adaptation = runtime.locks.adaptation.lock().await;
                        runtime.stuck.send_modify(|n| *n += 1);
                        let _cri = runtime.locks.cri.lock().await;
                        runtime.stuck.send_modify(|n| *n -= 1);
                        let failing = runtime
                            .failing
                            .lock()
                            .map(|f| f.clone())
                            .unwrap_or_default();
                        let (ok, bad): (Vec<_>, Vec<_>) = update
                            .update
                            .iter()
                            .cloned()
                            .partition(|u| !failing.contains(&u.container_id));
                        apply(&runtime.table, &ok);
                        let _ = unsolicited.send(update);
                        match bad.first() {
                            None => Ok(api::UpdateContainersResponse { failed: Vec::new() }
                                .encode_to_vec()),
                            Some(first) => Err(super::proto::ttrpc::Status {
                                code: 2,
                                message: format!(
                                    "failed to update container {}: cgroup write refused",
                                    first.container_id
                                ),
                            }),
                        }
                    }
                    Err(e) => Err(super::proto::ttrpc::Status {
                        code: 3,
                        message: e.to_string(),
                    }),
                }
            }
            (service, method) => Err(super::proto::ttrpc::Status {
                code: 12,
                message: format!("{service}/{method} not served here"),
            }),
        };
        let _ = endpoint.answer(stream, answer).await;
    }
}

/// Applies updates as containerd does: an unknown container is skipped, an empty cpuset changes
/// nothing.
fn apply(table: &Table, updates: &[api::ContainerUpdate]) {
    let Ok(mut table) = table.lock() else {
        return;
    };
    for update in updates {
        let cpus = update.cpus().to_owned();
        if let Some(current) = table.get_mut(&update.container_id)
            && !cpus.is_empty()
        {
            *current = cpus;
        }
    }
}

/// A container to create or report.
pub fn container(id: &str, pod: &api::PodSandbox, env: &[&str], cpus: &str) -> api::Container {
    api::Container {
        id: id.into(),
        pod_sandbox_id: pod.id.clone(),
        name: format!("{id}-name"),
        state: 3,
        env: env.iter().map(|e| (*e).to_owned()).collect(),
        linux: Some(api::LinuxContainer {
            resources: Some(api::LinuxResources {
                cpu: Some(api::LinuxCpu {
                    cpus: cpus.into(),
                    mems: String::new(),
                }),
            }),
        }),
    }
}

/// A pod.
pub fn pod(id: &str, uid: &str) -> api::PodSandbox {
    api::PodSandbox {
        id: id.into(),
        name: format!("{id}-name"),
        uid: uid.into(),
        namespace: "default".into(),
        linux: None,
    }
}

/// A pod whose sandbox's network namespace is `netns`.
pub fn pod_in_netns(id: &str, uid: &str, netns: &Path) -> api::PodSandbox {
    api::PodSandbox {
        linux: Some(api::LinuxPodSandbox {
            namespaces: vec![api::LinuxNamespace {
                r#type: "network".into(),
                path: netns.to_string_lossy().into_owned(),
            }],
        }),
        ..pod(id, uid)
    }
}

impl PluginConn {
    /// Starts a container event: waits for the CRI plugin's NRI lock, and holds it until the event
    /// is dropped.
    pub async fn event(&self) -> ContainerEvent<'_> {
        ContainerEvent {
            conn: self,
            _cri: self.locks.cri.lock().await,
        }
    }

    /// Calls a method of the plugin service, as an event of its own.
    pub async fn call<R: prost::Message + Default>(
        &self,
        method: &str,
        request: &impl prost::Message,
    ) -> Result<R, CallError> {
        self.event().await.call(method, request).await
    }

    /// Creates a container (see [`ContainerEvent::create`]), as an event of its own.
    pub async fn create(
        &self,
        pod: &api::PodSandbox,
        container: api::Container,
    ) -> Result<api::CreateContainerResponse, CallError> {
        self.event().await.create(pod, container).await
    }

    /// Stops and removes a container (see [`ContainerEvent::remove`]), as an event of its own.
    pub async fn remove(
        &self,
        pod: &api::PodSandbox,
        container: &api::Container,
    ) -> Result<(), CallError> {
        self.event().await.remove(pod, container).await
    }

    /// A pod sandbox event (`RUN_POD_SANDBOX`, `STOP_POD_SANDBOX`, `REMOVE_POD_SANDBOX`), as the
    /// runtime delivers it: a `StateChange`; an error fails the sandbox's creation.
    pub async fn sandbox_event(&self, event: i32, pod: &api::PodSandbox) -> Result<(), CallError> {
        let request = api::StateChangeEvent {
            event,
            pod: Some(pod.clone()),
            container: None,
        };
        self.call::<api::Empty>("StateChange", &request)
            .await
            .map(|_| ())
    }

    /// How many `UpdateContainers` the plugin sent, applied or not.
    pub fn unsolicited_received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Waits (up to `wait`) until an `UpdateContainers` holds the adaptation lock and waits for
    /// the CRI lock: with a container event holding the CRI lock, containerd is deadlocked.
    pub async fn update_waits_for_the_cri_lock(&self, wait: Duration) -> bool {
        let mut stuck = self.stuck.clone();
        tokio::time::timeout(wait, stuck.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Reports the runtime's pods and containers (in chunks of `chunk` containers, with `more` set on
    /// all but the last), applies the answer and records the containers. A chunk over ttrpc's limit
    /// is not sent: the runtime hangs up, as containerd 1.7 (NRI 0.6.1, which sends one chunk) does.
    pub async fn synchronize(
        &self,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
        chunk: usize,
    ) -> Result<api::SynchronizeResponse, CallError> {
        if let Ok(mut table) = self.table.lock() {
            for c in &containers {
                table.insert(c.id.clone(), c.cpus().to_owned());
            }
        }
        let chunks: Vec<Vec<api::Container>> = containers
            .chunks(chunk.max(1))
            .map(<[api::Container]>::to_vec)
            .collect();
        let last = chunks.len().saturating_sub(1);
        let mut answer = api::SynchronizeResponse::default();
        for (i, part) in chunks.into_iter().enumerate() {
            let request = api::SynchronizeRequest {
                pods: if i == 0 { pods.clone() } else { Vec::new() },
                containers: part,
                more: i < last,
            };
            let size = envelope_len("Synchronize", &request);
            if size > MAX_DATA {
                self.hang_up().await;
                return Err(CallError::TooLarge {
                    size,
                    limit: MAX_DATA,
                });
            }
            answer = self.call("Synchronize", &request).await?;
        }
        apply(&self.table, &answer.update);
        Ok(answer)
    }

    /// The next unsolicited `UpdateContainers` the plugin sent, if one comes within `wait`.
    pub async fn next_unsolicited(
        &mut self,
        wait: Duration,
    ) -> Option<api::UpdateContainersRequest> {
        tokio::time::timeout(wait, self.unsolicited.recv())
            .await
            .ok()
            .flatten()
    }

    /// The CPUs the runtime runs `id` on.
    pub fn cpus(&self, id: &str) -> Option<String> {
        self.table.lock().ok()?.get(id).cloned()
    }

    /// Hangs up, as a runtime that exits.
    pub async fn hang_up(&self) {
        self.endpoint.close().await;
    }
}

impl ContainerEvent<'_> {
    /// Calls a method of the plugin service under the adaptation lock.
    pub async fn call<R: prost::Message + Default>(
        &self,
        method: &str,
        request: &impl prost::Message,
    ) -> Result<R, CallError> {
        let _adaptation = self.conn.locks.adaptation.lock().await;
        self.conn
            .endpoint
            .call(PLUGIN_SERVICE, method, request, TIMEOUT)
            .await
    }

    /// Creates a container: on success it is in the table with the CPUs the adjustment gave it, and the
    /// other containers' updates are applied (under the CRI lock this event holds, as containerd's
    /// `applyUpdates`).
    pub async fn create(
        &self,
        pod: &api::PodSandbox,
        container: api::Container,
    ) -> Result<api::CreateContainerResponse, CallError> {
        let request = api::CreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(container.clone()),
        };
        let answer: api::CreateContainerResponse = self.call("CreateContainer", &request).await?;
        let adjusted = answer
            .adjust
            .as_ref()
            .and_then(|a| a.linux.as_ref())
            .and_then(|l| l.resources.as_ref())
            .map(api::LinuxResources::cpus)
            .filter(|c| !c.is_empty())
            .unwrap_or(container.cpus())
            .to_owned();
        if let Ok(mut table) = self.conn.table.lock() {
            table.insert(container.id.clone(), adjusted);
        }
        apply(&self.conn.table, &answer.update);
        Ok(answer)
    }

    /// Stops and removes a container (StopContainer, then RemoveContainer as a StateChange).
    pub async fn remove(
        &self,
        pod: &api::PodSandbox,
        container: &api::Container,
    ) -> Result<(), CallError> {
        let stop = api::StopContainerRequest {
            pod: Some(pod.clone()),
            container: Some(container.clone()),
        };
        let answer: api::StopContainerResponse = self.call("StopContainer", &stop).await?;
        if let Ok(mut table) = self.conn.table.lock() {
            table.remove(&container.id);
        }
        apply(&self.conn.table, &answer.update);
        let removed = api::StateChangeEvent {
            event: event::REMOVE_CONTAINER,
            pod: Some(pod.clone()),
            container: Some(container.clone()),
        };
        self.call::<api::Empty>("StateChange", &removed).await?;
        Ok(())
    }
}

/// The size of a call's ttrpc envelope, as the runtime's ttrpc client measures it.
fn envelope_len(method: &str, request: &impl prost::Message) -> usize {
    super::proto::ttrpc::Request {
        service: PLUGIN_SERVICE.to_owned(),
        method: method.to_owned(),
        payload: request.encode_to_vec(),
        timeout_nano: i64::try_from(TIMEOUT.as_nanos()).unwrap_or(i64::MAX),
        metadata: Vec::new(),
    }
    .encoded_len()
}
