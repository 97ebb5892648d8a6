//! A protocol-level stand-in for containerd's or CRI-O's NRI side, for tests: it listens on a Unix
//! socket, speaks the mux and ttrpc framing, answers `RegisterPlugin` and `UpdateContainers`, calls
//! the plugin's `Configure`, `Synchronize`, `CreateContainer`, ... and keeps its own table of containers
//! with the CPUs the plugin gave them (adjustments and updates applied as a runtime applies them).
//!
//! It holds the plugin to containerd's behaviour: it reads as a Go peer does (frames over its 4 KiB read
//! buffer and stream ids that do not increase end the connection), it serves `UpdateContainers` only
//! between its own calls (containerd takes one lock for both, so a plugin that waits for that answer
//! inside an event handler deadlocks here too), and it answers an error when any update fails, while an
//! update of an unknown container is a success.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use super::endpoint::{CallError, Endpoint, Incoming};
use super::plugin::{PLUGIN_SERVICE, RUNTIME_SERVICE, event};
use super::proto::api;
use super::wire::{PLUGIN_CONN, RUNTIME_CONN};

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

/// A plugin that connected and registered.
pub struct PluginConn {
    endpoint: Endpoint,
    /// The name and index it registered with.
    pub registered: (String, String),
    /// The containers and their CPUs, as the runtime applied them.
    pub table: Table,
    /// Containers whose updates fail until removed from here.
    pub failing: Failing,
    /// Held during each call to the plugin and while an `UpdateContainers` is applied.
    busy: Arc<tokio::sync::Mutex<()>>,
    unsolicited: mpsc::UnboundedReceiver<api::UpdateContainersRequest>,
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
    pub async fn accept(&self) -> Result<(PluginConn, api::ConfigureResponse), String> {
        let (socket, _) = tokio::time::timeout(TIMEOUT, self.listener.accept())
            .await
            .map_err(|_| "no plugin connected".to_owned())?
            .map_err(|e| e.to_string())?;
        let (endpoint, mut incoming) = Endpoint::start_strict(socket, RUNTIME_CONN, PLUGIN_CONN);
        let first = tokio::time::timeout(TIMEOUT, incoming.recv())
            .await
            .map_err(|_| "the plugin did not register".to_owned())?
            .ok_or("the plugin hung up before registering")?;
        if first.request.service != RUNTIME_SERVICE || first.request.method != "RegisterPlugin" {
            return Err(format!(
                "the first call was {}/{}, not RegisterPlugin",
                first.request.service, first.request.method
            ));
        }
        let register = api::RegisterPluginRequest::decode(first.request.payload.as_slice())
            .map_err(|e| e.to_string())?;
        endpoint
            .answer(first.stream, Ok(api::Empty {}.encode_to_vec()))
            .await
            .map_err(|e| e.to_string())?;
        let table: Table = Arc::default();
        let failing: Failing = Arc::default();
        let busy = Arc::new(tokio::sync::Mutex::new(()));
        let (tx, unsolicited) = mpsc::unbounded_channel();
        let runtime = Runtime {
            table: table.clone(),
            failing: failing.clone(),
            busy: busy.clone(),
        };
        tokio::spawn(serve_runtime(endpoint.clone(), incoming, runtime, tx));
        let conn = PluginConn {
            endpoint,
            registered: (register.plugin_name, register.plugin_idx),
            table,
            failing,
            busy,
            unsolicited,
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
            .map_err(|e| e.to_string())?;
        Ok((conn, configured))
    }
}

/// The runtime's state that its answers touch.
struct Runtime {
    table: Table,
    failing: Failing,
    busy: Arc<tokio::sync::Mutex<()>>,
}

/// Answers the plugin's calls after registration: `UpdateContainers` is applied to the table (while
/// no call to the plugin is in flight) and reported; a second `RegisterPlugin` or anything else is
/// refused.
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
                        let _busy = runtime.busy.lock().await;
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
    }
}

impl PluginConn {
    /// Calls a method of the plugin service.
    pub async fn call<R: prost::Message + Default>(
        &self,
        method: &str,
        request: &impl prost::Message,
    ) -> Result<R, CallError> {
        let _busy = self.busy.lock().await;
        self.endpoint
            .call(PLUGIN_SERVICE, method, request, TIMEOUT)
            .await
    }

    /// Reports the runtime's pods and containers (in chunks of `chunk` containers, with `more` set on
    /// all but the last), applies the answer and records the containers.
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
            answer = self.call("Synchronize", &request).await?;
        }
        apply(&self.table, &answer.update);
        Ok(answer)
    }

    /// Creates a container: on success it is in the table with the CPUs the adjustment gave it, and the
    /// other containers' updates are applied.
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
        if let Ok(mut table) = self.table.lock() {
            table.insert(container.id.clone(), adjusted);
        }
        apply(&self.table, &answer.update);
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
        if let Ok(mut table) = self.table.lock() {
            table.remove(&container.id);
        }
        apply(&self.table, &answer.update);
        let removed = api::StateChangeEvent {
            event: event::REMOVE_CONTAINER,
            pod: Some(pod.clone()),
            container: Some(container.clone()),
        };
        self.call::<api::Empty>("StateChange", &removed).await?;
        Ok(())
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
