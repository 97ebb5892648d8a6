//! A plugin stub shaped like NRI's own (`github.com/containerd/nri`, `pkg/stub`): a plugin implements
//! [`Plugin`], whose handlers (`configure`, `synchronize`, `shutdown`, the pod sandbox and container
//! events) do nothing unless overridden, and [`serve`] (or [`Connection::serve`]) registers it with
//! the runtime, answers `Configure` with its subscription, and dispatches the runtime's calls to it
//! one at a time until the connection ends; [`run`] does that again after each disconnection
//! ([`crate::reconnect::run`]).
//!
//! What the stub does for the plugin, as Go's does:
//!
//! - registration (`RegisterPlugin`, beside the loop: the runtime may call `Configure` before it
//!   answers), within [`Config::timeout`];
//! - the subscription: [`Plugin::events`], or the subset [`Plugin::configure`] returns. Rust cannot
//!   see which handlers a type overrides, so the plugin names its events; an event outside the
//!   subscription is answered with an empty success and never reaches the plugin;
//! - `Synchronize` in parts (`more`): each part but the last is answered at once, and the plugin gets
//!   the pods and containers of all of them in one [`Plugin::synchronize`];
//! - decoding requests (an undecodable one: `INVALID_ARGUMENT`), encoding answers, refusing an unknown
//!   service or method (`UNIMPLEMENTED`);
//! - `Shutdown`: answered, then the connection ends (this stub's choice: Go's returns after the
//!   handler and leaves closing to the runtime);
//! - an answer over ttrpc's limit: the runtime gets `RESOURCE_EXHAUSTED`, and the plugin is told
//!   ([`Plugin::undelivered`]): the updates of other containers that answer carried never arrived.
//!
//! The runtime's calls are handled one at a time, in order, on the connection's loop; between them the
//! loop also waits for [`Plugin::background`] (the plugin's own work: a watch that changed, a retry
//! tick). A plugin must not call into the runtime ([`Runtime::update_containers`]) from a handler, or
//! from anything the runtime's events may wait for: containerd 1.7 and 2.1 take two locks in opposite
//! orders for a plugin's unsolicited `UpdateContainers` and for container events, and deadlock when
//! both meet (containerd issue #13733). The updates of other containers belong in the answers to
//! `CreateContainer`, `UpdateContainer` and `StopContainer`, which may carry any container's.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::endpoint::{CallError, Ended, Endpoint};
use crate::proto::api;
use crate::proto::ttrpc::Status;
use crate::service::{RUNTIME_SERVICE, event};
use crate::stats::NriStats;

mod serve;
#[cfg(test)]
mod tests;

pub use serve::{Connection, Outcome};

/// A set of NRI events (the `Event` numbers of [`crate::service::event`]), as the subscription mask of
/// `ConfigureResponse`: bit `e - 1` for event `e`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventMask(i32);

impl EventMask {
    /// No event.
    pub const NONE: EventMask = EventMask(0);

    /// The mask of `events`.
    pub fn of(events: &[i32]) -> EventMask {
        EventMask(event::mask(events))
    }

    /// The mask as it travels (`ConfigureResponse.events`).
    pub fn bits(self) -> i32 {
        self.0
    }

    /// Whether `event` is in the set.
    pub fn contains(self, event: i32) -> bool {
        (1..=31).contains(&event) && self.0 & (1 << (event - 1)) != 0
    }

    /// Whether every event of `other` is in this set.
    pub fn covers(self, other: EventMask) -> bool {
        other.0 & !self.0 == 0
    }

    /// Both sets together.
    pub fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }
}

/// What [`Plugin::background`] says to the connection's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on serving.
    Continue,
    /// End the connection (closed, as at `stopped`).
    Stop,
}

/// An error status for an answer: a gRPC `code` ([`crate::endpoint::code`]) and a message.
pub fn status(code: i32, message: impl Into<String>) -> Status {
    Status {
        code,
        message: message.into(),
    }
}

/// A plugin's handlers. Every handler but [`Plugin::events`] has a default that does nothing and
/// succeeds; a plugin overrides those of the events it names in [`Plugin::events`]. An `Err` is the
/// status the runtime gets (a refused `CreateContainer` fails the container's creation).
///
/// The handlers run one at a time on the connection's loop, and no other call of the runtime is
/// answered meanwhile; a handler that takes long (a CNI plugin at `RunPodSandbox`) holds up the
/// runtime's other events, and work that may wait belongs in a task of its own.
pub trait Plugin: Send {
    /// The events this plugin handles: its subscription, unless [`Plugin::configure`] narrows it.
    fn events(&self) -> EventMask;

    /// The runtime configures the plugin (after registration). `Ok(None)`: subscribe to
    /// [`Plugin::events`]; `Ok(Some(mask))`: to `mask`, which must lie within them.
    fn configure(
        &mut self,
        request: api::ConfigureRequest,
    ) -> impl Future<Output = Result<Option<EventMask>, Status>> + Send {
        let _ = request;
        async { Ok(None) }
    }

    /// The runtime's pods and containers (all the parts of a `Synchronize` together); the answer
    /// may update any of the containers.
    fn synchronize(
        &mut self,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
    ) -> impl Future<Output = Result<Vec<api::ContainerUpdate>, Status>> + Send {
        let _ = (pods, containers);
        async { Ok(Vec::new()) }
    }

    /// The runtime is shutting down; the connection ends after the answer.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// `RunPodSandbox` (event [`event::RUN_POD_SANDBOX`]); an error fails the sandbox.
    fn run_pod_sandbox(
        &mut self,
        pod: api::PodSandbox,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// `StopPodSandbox` (event [`event::STOP_POD_SANDBOX`]).
    fn stop_pod_sandbox(
        &mut self,
        pod: api::PodSandbox,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// `RemovePodSandbox` (event [`event::REMOVE_POD_SANDBOX`]).
    fn remove_pod_sandbox(
        &mut self,
        pod: api::PodSandbox,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = pod;
        async { Ok(()) }
    }

    /// `CreateContainer` (event [`event::CREATE_CONTAINER`]): an adjustment of the container being
    /// created, and updates of other containers.
    fn create_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<
        Output = Result<(Option<api::ContainerAdjustment>, Vec<api::ContainerUpdate>), Status>,
    > + Send {
        let _ = (pod, container);
        async { Ok((None, Vec::new())) }
    }

    /// `PostCreateContainer` (event [`event::POST_CREATE_CONTAINER`]).
    fn post_create_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// `StartContainer` (event [`event::START_CONTAINER`]).
    fn start_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// `PostStartContainer` (event [`event::POST_START_CONTAINER`]).
    fn post_start_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// `UpdateContainer` (event [`event::UPDATE_CONTAINER`]) with the resources asked for: updates
    /// of this container (replacing the update asked for) or of others.
    fn update_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
        resources: Option<api::LinuxResources>,
    ) -> impl Future<Output = Result<Vec<api::ContainerUpdate>, Status>> + Send {
        let _ = (pod, container, resources);
        async { Ok(Vec::new()) }
    }

    /// `PostUpdateContainer` (event [`event::POST_UPDATE_CONTAINER`]).
    fn post_update_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// `StopContainer` (event [`event::STOP_CONTAINER`]): updates of other containers.
    fn stop_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<Vec<api::ContainerUpdate>, Status>> + Send {
        let _ = (pod, container);
        async { Ok(Vec::new()) }
    }

    /// `RemoveContainer` (event [`event::REMOVE_CONTAINER`]).
    fn remove_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (pod, container);
        async { Ok(()) }
    }

    /// The plugin's own work beside the runtime's calls: the loop waits for this future while it
    /// waits for the next call, and drops it when a call comes first (it is made again after the
    /// call), so it must lose nothing when dropped at an `.await`: wait, then act without awaiting
    /// again. The default never finishes.
    fn background(&mut self) -> impl Future<Output = Flow> + Send {
        std::future::pending()
    }

    /// After each call of the runtime (`method`, the ttrpc method's name), before its answer goes
    /// out; `ok`: the answer is a success.
    fn answering(&mut self, method: &str, ok: bool) {
        let _ = (method, ok);
    }

    /// The answer to `method` was over ttrpc's limit: the runtime got `RESOURCE_EXHAUSTED` instead,
    /// and the updates the answer carried never reached it.
    fn undelivered(&mut self, method: &str) {
        let _ = method;
    }
}

/// How the stub registers and how long it waits for the runtime.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name to register.
    pub name: String,
    /// The two-digit index to register (plugins are called in ascending order).
    pub index: String,
    /// How long to wait for the runtime's answers (`RegisterPlugin`, `UpdateContainers`).
    pub timeout: Duration,
    /// Told when the plugin is registered (and by [`run`], when a connection is gone).
    pub stats: Arc<NriStats>,
}

/// The runtime's service on one connection, for the plugin's own calls.
#[derive(Clone)]
pub struct Runtime {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Runtime {
    /// Unsolicited updates (`UpdateContainers`); returns the updates the runtime could not apply.
    /// Never from a handler, nor from anything a runtime's event may wait for (see the module's
    /// doc): send them from a task of its own.
    pub async fn update_containers(
        &self,
        update: Vec<api::ContainerUpdate>,
    ) -> Result<Vec<api::ContainerUpdate>, CallError> {
        let request = api::UpdateContainersRequest {
            update,
            evict: Vec::new(),
        };
        let response: api::UpdateContainersResponse = self
            .endpoint
            .call(RUNTIME_SERVICE, "UpdateContainers", &request, self.timeout)
            .await?;
        Ok(response.failed)
    }
}

/// Why a connection to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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

impl ServeError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            ServeError::Register(e) | ServeError::Answer(e) => e.kind(),
            ServeError::Task(_) => hal::ErrorKind::Io,
            ServeError::Connection(e) => e.kind(),
        }
    }
}

impl crate::reconnect::Failure for ServeError {
    fn kind(&self) -> hal::ErrorKind {
        ServeError::kind(self)
    }
}

/// Serves one connection with `plugin` until it ends, the runtime shuts down, or `stopped` turns
/// true: [`Connection::open`], then [`Connection::serve`].
pub async fn serve<P: Plugin>(
    socket: UnixStream,
    config: &Config,
    plugin: &mut P,
    stopped: watch::Receiver<bool>,
) -> Outcome {
    let (connection, _runtime) = Connection::open(socket, config.timeout);
    connection.serve(plugin, config, stopped).await
}

/// Runs a plugin until `stopped` turns true: connects to the runtime's `socket`, makes a plugin for
/// the connection with `make` (given the runtime's service on it), serves it, and reconnects with
/// backoff ([`crate::reconnect::run`]) while the runtime is away or keeps dropping the plugin.
pub async fn run<P, F>(socket: &Path, config: Config, mut make: F, stopped: watch::Receiver<bool>)
where
    P: Plugin,
    F: FnMut(Runtime) -> P,
{
    let config = &config;
    let serve_one = |socket, stopped| {
        let (connection, runtime) = Connection::open(socket, config.timeout);
        let mut plugin = make(runtime);
        async move { connection.serve(&mut plugin, config, stopped).await }
    };
    crate::reconnect::run(socket, &config.stats, serve_one, stopped).await;
}
