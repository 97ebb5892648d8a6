//! One connection: registration, the loop, and the dispatch of the runtime's calls to a [`Plugin`].

use std::time::Duration;

use prost::Message as _;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::{Config, EventMask, Flow, Plugin, Runtime, ServeError, status};
use crate::endpoint::{CallError, Ended, Endpoint, Incoming, code};
use crate::proto::api;
use crate::proto::ttrpc::Status;
use crate::service::{PLUGIN_SERVICE, RUNTIME_SERVICE, event};
use crate::wire::{PLUGIN_CONN, RUNTIME_CONN};

/// How a connection ended.
pub type Outcome = crate::reconnect::Outcome<ServeError>;

/// A connection to the runtime, open and read, not yet registered.
pub struct Connection {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Incoming>,
}

/// What the dispatch of one call leaves behind besides its answer.
#[derive(Default)]
struct State {
    /// The parts of a `Synchronize` so far.
    sync: Vec<api::SynchronizeRequest>,
    /// The subscription answered to `Configure`.
    subscribed: EventMask,
}

/// What one call did to the connection.
enum After {
    /// Nothing more.
    Answered,
    /// The last part of a `Synchronize`, answered with a success.
    Synchronized,
    /// `Shutdown`: the connection ends after the answer.
    Shutdown,
}

impl Connection {
    /// Starts reading `socket`; the runtime's service on it waits `timeout` for its answers.
    pub fn open(socket: UnixStream, timeout: Duration) -> (Connection, Runtime) {
        let (endpoint, incoming) = Endpoint::start(socket, PLUGIN_CONN, RUNTIME_CONN);
        let runtime = Runtime {
            endpoint: endpoint.clone(),
            timeout,
        };
        (Connection { endpoint, incoming }, runtime)
    }

    /// Registers `plugin` and serves the runtime's calls with it until the connection ends, the
    /// runtime shuts down, [`Plugin::background`] says stop, or `stopped` turns true.
    pub async fn serve<P: Plugin>(
        self,
        plugin: &mut P,
        config: &Config,
        stopped: watch::Receiver<bool>,
    ) -> Outcome {
        let mut synchronized = false;
        let result = self
            .serve_inner(plugin, config, stopped, &mut synchronized)
            .await;
        Outcome {
            synchronized,
            result,
        }
    }

    async fn serve_inner<P: Plugin>(
        self,
        plugin: &mut P,
        config: &Config,
        mut stopped: watch::Receiver<bool>,
        synchronized: &mut bool,
    ) -> Result<(), ServeError> {
        let Connection {
            endpoint,
            mut incoming,
        } = self;
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
        let mut state = State::default();
        loop {
            tokio::select! {
                call = incoming.recv() => {
                    let Some(Incoming { stream, request }) = call else {
                        return match endpoint.ended() {
                            None | Some(Ended::Closed) => Ok(()),
                            Some(ended) => Err(ServeError::Connection(ended)),
                        };
                    };
                    let (answer, after) = match request.service.as_str() {
                        PLUGIN_SERVICE => {
                            dispatch(plugin, &mut state, &request.method, &request.payload).await
                        }
                        service => (
                            Err(status(code::UNIMPLEMENTED, format!("no service {service}"))),
                            After::Answered,
                        ),
                    };
                    plugin.answering(&request.method, answer.is_ok());
                    if matches!(after, After::Synchronized) {
                        *synchronized = true;
                    }
                    match endpoint.answer(stream, answer).await {
                        Ok(()) => {}
                        // Logged, and refused to the runtime with a status: the connection goes on.
                        Err(CallError::TooLarge { .. }) => plugin.undelivered(&request.method),
                        Err(error) => return Err(ServeError::Answer(error)),
                    }
                    if matches!(after, After::Shutdown) {
                        endpoint.close().await;
                        return Ok(());
                    }
                }
                Some(registered) = async { match registration.as_mut() { Some(r) => Some(r.await), None => None } } => {
                    registration = None;
                    match registered {
                        Ok(Ok(_)) => {
                            config.stats.set_connected(true);
                            tracing::info!(name = %config.name, index = %config.index, "registered with the NRI runtime")
                        }
                        Ok(Err(error)) => return Err(ServeError::Register(error)),
                        Err(error) => return Err(ServeError::Task(error.to_string())),
                    }
                }
                flow = plugin.background() => {
                    if flow == Flow::Stop {
                        endpoint.close().await;
                        return Ok(());
                    }
                }
                _ = stopped.changed() => {
                    endpoint.close().await;
                    return Ok(());
                }
            }
        }
    }
}

fn decode<M: prost::Message + Default>(method: &str, payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| status(code::INVALID_ARGUMENT, format!("{method}: {e}")))
}

/// Answers one call of the plugin service.
async fn dispatch<P: Plugin>(
    plugin: &mut P,
    state: &mut State,
    method: &str,
    payload: &[u8],
) -> (Result<Vec<u8>, Status>, After) {
    match method {
        "Synchronize" => match synchronize(plugin, state, payload).await {
            Ok((answer, true)) => (Ok(answer), After::Synchronized),
            other => (other.map(|(answer, _)| answer), After::Answered),
        },
        "Shutdown" => {
            tracing::info!("the NRI runtime is shutting down");
            plugin.shutdown().await;
            (Ok(api::Empty {}.encode_to_vec()), After::Shutdown)
        }
        method => (
            answer_event(plugin, state, method, payload).await,
            After::Answered,
        ),
    }
}

/// The most parts of one `Synchronize`, and pods and containers in all of them, kept before its last
/// part. A node runs at most a few hundred pods (the kubelet's `--max-pods`, 110 by default) and
/// containerd splits a node's state into parts of up to 4 MiB; past these, the runtime is refused
/// rather than followed until memory runs out.
const MAX_SYNC_PARTS: usize = 1024;
const MAX_SYNC_OBJECTS: usize = 100_000;

/// A `Synchronize` part; `true` with the answer to the last one.
async fn synchronize<P: Plugin>(
    plugin: &mut P,
    state: &mut State,
    payload: &[u8],
) -> Result<(Vec<u8>, bool), Status> {
    let request: api::SynchronizeRequest = decode("Synchronize", payload)?;
    let more = request.more;
    state.sync.push(request);
    let objects: usize = state
        .sync
        .iter()
        .map(|part| part.pods.len() + part.containers.len())
        .sum();
    if state.sync.len() > MAX_SYNC_PARTS || objects > MAX_SYNC_OBJECTS {
        let parts = std::mem::take(&mut state.sync).len();
        return Err(status(
            code::RESOURCE_EXHAUSTED,
            format!(
                "Synchronize: {parts} parts with {objects} pods and containers, over this plugin's \
                 limits ({MAX_SYNC_PARTS} parts, {MAX_SYNC_OBJECTS} pods and containers)"
            ),
        ));
    }
    if more {
        let answer = api::SynchronizeResponse {
            update: Vec::new(),
            more: true,
        };
        return Ok((answer.encode_to_vec(), false));
    }
    let parts = std::mem::take(&mut state.sync);
    let (mut pods, mut containers) = (Vec::new(), Vec::new());
    for part in parts {
        pods.extend(part.pods);
        containers.extend(part.containers);
    }
    let update = plugin.synchronize(pods, containers).await?;
    let answer = api::SynchronizeResponse {
        update,
        more: false,
    };
    Ok((answer.encode_to_vec(), true))
}

/// `Configure` and the events: a request decoded, the plugin's handler when the event is
/// subscribed, the answer encoded.
async fn answer_event<P: Plugin>(
    plugin: &mut P,
    state: &mut State,
    method: &str,
    payload: &[u8],
) -> Result<Vec<u8>, Status> {
    let subscribed = state.subscribed;
    let on = |event| subscribed.contains(event);
    let answer = match method {
        "Configure" => {
            let request: api::ConfigureRequest = decode(method, payload)?;
            let (runtime, version) = (
                request.runtime_name.clone(),
                request.runtime_version.clone(),
            );
            let handled = plugin.events();
            let events = plugin.configure(request).await?.unwrap_or(handled);
            if !handled.covers(events) {
                return Err(status(
                    code::INVALID_ARGUMENT,
                    format!(
                        "the plugin subscribes to events it does not handle (mask {:#x} of {:#x})",
                        events.bits(),
                        handled.bits()
                    ),
                ));
            }
            state.subscribed = events;
            tracing::info!(%runtime, %version, events = events.bits(), "configured by the NRI runtime");
            api::ConfigureResponse {
                events: events.bits(),
            }
            .encode_to_vec()
        }
        "CreateContainer" => {
            let request: api::CreateContainerRequest = decode(method, payload)?;
            let (adjust, update) = match on(event::CREATE_CONTAINER) {
                true => {
                    let (pod, container) = (request.pod, request.container);
                    plugin
                        .create_container(pod.unwrap_or_default(), container.unwrap_or_default())
                        .await?
                }
                false => (None, Vec::new()),
            };
            api::CreateContainerResponse {
                adjust,
                update,
                evict: Vec::new(),
            }
            .encode_to_vec()
        }
        "UpdateContainer" => {
            let request: api::UpdateContainerRequest = decode(method, payload)?;
            let update = match on(event::UPDATE_CONTAINER) {
                true => {
                    let pod = request.pod.unwrap_or_default();
                    let container = request.container.unwrap_or_default();
                    plugin
                        .update_container(pod, container, request.linux_resources)
                        .await?
                }
                false => Vec::new(),
            };
            api::UpdateContainerResponse {
                update,
                evict: Vec::new(),
            }
            .encode_to_vec()
        }
        "StopContainer" => {
            let request: api::StopContainerRequest = decode(method, payload)?;
            let update = match on(event::STOP_CONTAINER) {
                true => {
                    let (pod, container) = (request.pod, request.container);
                    plugin
                        .stop_container(pod.unwrap_or_default(), container.unwrap_or_default())
                        .await?
                }
                false => Vec::new(),
            };
            api::StopContainerResponse { update }.encode_to_vec()
        }
        "RemoveContainer" => {
            let request: api::RemoveContainerRequest = decode(method, payload)?;
            if on(event::REMOVE_CONTAINER) {
                let (pod, container) = (request.pod, request.container);
                plugin
                    .remove_container(pod.unwrap_or_default(), container.unwrap_or_default())
                    .await?;
            }
            api::Empty {}.encode_to_vec()
        }
        "StateChange" => {
            let request: api::StateChangeEvent = decode(method, payload)?;
            if on(request.event) {
                state_change(plugin, request).await?;
            }
            api::Empty {}.encode_to_vec()
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

/// A `StateChange` of a subscribed event, to its handler.
async fn state_change<P: Plugin>(
    plugin: &mut P,
    request: api::StateChangeEvent,
) -> Result<(), Status> {
    let pod = request.pod.unwrap_or_default();
    let container = request.container.unwrap_or_default();
    match request.event {
        event::RUN_POD_SANDBOX => plugin.run_pod_sandbox(pod).await,
        event::STOP_POD_SANDBOX => plugin.stop_pod_sandbox(pod).await,
        event::REMOVE_POD_SANDBOX => plugin.remove_pod_sandbox(pod).await,
        event::POST_CREATE_CONTAINER => plugin.post_create_container(pod, container).await,
        event::START_CONTAINER => plugin.start_container(pod, container).await,
        event::POST_START_CONTAINER => plugin.post_start_container(pod, container).await,
        event::POST_UPDATE_CONTAINER => plugin.post_update_container(pod, container).await,
        event::REMOVE_CONTAINER => plugin.remove_container(pod, container).await,
        // CreateContainer, UpdateContainer and StopContainer come as calls of their own.
        _ => Ok(()),
    }
}
