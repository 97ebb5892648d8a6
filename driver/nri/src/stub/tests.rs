//! The stub against the fake runtime: subscription, dispatch, refusals, `Synchronize` in parts,
//! `Shutdown`, and the plugin's own work beside the calls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::*;
use crate::endpoint::code;
use crate::fake_runtime::{FakeRuntime, PluginConn, container, pod};
use crate::proto::api;

/// What a test plugin saw.
type Seen = Arc<Mutex<Vec<String>>>;

/// Handles `CreateContainer` only: pins the container to CPUs 2-3 and moves `other` to 0-1.
struct CreateOnly {
    seen: Seen,
}

fn cpus(cpus: &str) -> api::LinuxResources {
    api::LinuxResources {
        cpu: Some(api::LinuxCpu {
            cpus: cpus.into(),
            mems: String::new(),
        }),
    }
}

impl Plugin for CreateOnly {
    fn events(&self) -> EventMask {
        EventMask::of(&[event::CREATE_CONTAINER])
    }

    async fn create_container(
        &mut self,
        pod: api::PodSandbox,
        container: api::Container,
    ) -> Result<(Option<api::ContainerAdjustment>, Vec<api::ContainerUpdate>), Status> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("create {} in {}", container.id, pod.id));
        if container.id == "refused" {
            return Err(status(code::FAILED_PRECONDITION, "no CPUs left"));
        }
        let adjust = api::ContainerAdjustment {
            linux: Some(api::LinuxContainerAdjustment {
                resources: Some(cpus("2-3")),
            }),
        };
        let update = api::ContainerUpdate {
            container_id: "other".into(),
            linux: Some(api::LinuxContainerUpdate {
                resources: Some(cpus("0-1")),
            }),
            ignore_failure: true,
        };
        Ok((Some(adjust), vec![update]))
    }

    async fn shutdown(&mut self) {
        self.seen.lock().unwrap().push("shutdown".into());
    }

    fn answering(&mut self, method: &str, ok: bool) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("answering {method} {ok}"));
    }
}

fn config() -> Config {
    Config {
        name: "stub-test".into(),
        index: "42".into(),
        timeout: Duration::from_secs(5),
        stats: Arc::default(),
    }
}

/// A runtime on a fresh socket and `plugin` serving it; returns the configured connection and the
/// serving task (which gives the plugin back with the outcome).
async fn start<P: Plugin + 'static>(
    plugin: P,
) -> (
    tempfile::TempDir,
    PluginConn,
    api::ConfigureResponse,
    watch::Sender<bool>,
    tokio::task::JoinHandle<(Outcome, P)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&path).unwrap();
    let (stop, stopped) = watch::channel(false);
    let serving = tokio::spawn(async move {
        let mut plugin = plugin;
        let socket = UnixStream::connect(&path).await.unwrap();
        let outcome = serve(socket, &config(), &mut plugin, stopped).await;
        (outcome, plugin)
    });
    let (conn, configured) = runtime.accept().await.unwrap();
    (dir, conn, configured, stop, serving)
}

#[tokio::test]
async fn a_plugin_that_handles_only_create_container_is_subscribed_to_it_alone() {
    let seen = Seen::default();
    let (_dir, conn, configured, stop, serving) = start(CreateOnly { seen: seen.clone() }).await;
    assert_eq!(conn.registered, ("stub-test".to_owned(), "42".to_owned()));
    assert_eq!(configured.events, 1 << (event::CREATE_CONTAINER - 1));

    let p = pod("sandbox", "uid");
    conn.table
        .lock()
        .unwrap()
        .insert("other".into(), "0-7".into());
    let answer = conn.create(&p, container("c", &p, &[], "")).await.unwrap();
    assert_eq!(
        answer.update.len(),
        1,
        "the updates of others ride on the answer"
    );
    assert_eq!(conn.cpus("c").as_deref(), Some("2-3"));
    assert_eq!(conn.cpus("other").as_deref(), Some("0-1"));

    // An event outside the subscription is answered, empty, without reaching the plugin.
    let stopped: api::StopContainerResponse = conn
        .call(
            "StopContainer",
            &api::StopContainerRequest {
                pod: Some(p.clone()),
                container: Some(container("c", &p, &[], "")),
            },
        )
        .await
        .unwrap();
    assert!(stopped.update.is_empty());
    conn.sandbox_event(event::RUN_POD_SANDBOX, &p)
        .await
        .unwrap();

    // A refusal reaches the runtime as the plugin's status.
    let error = conn
        .create(&p, container("refused", &p, &[], ""))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Status { code: code::FAILED_PRECONDITION, message, .. }
            if message == "no CPUs left"),
        "{error}"
    );
    let _ = stop.send(true);
    let (outcome, _) = serving.await.unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(!outcome.synchronized);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "answering Configure true",
            "create c in sandbox",
            "answering CreateContainer true",
            "answering StopContainer true",
            "answering StateChange true",
            "create refused in sandbox",
            "answering CreateContainer false",
        ]
    );
}

#[tokio::test]
async fn an_unknown_method_or_an_undecodable_request_is_refused_and_the_connection_goes_on() {
    let seen = Seen::default();
    let (_dir, conn, _, stop, serving) = start(CreateOnly { seen: seen.clone() }).await;
    let error = conn
        .call::<api::Empty>("Frobnicate", &api::Empty {})
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Status { code: code::UNIMPLEMENTED, message, .. }
            if message.contains("Frobnicate")),
        "{error}"
    );
    // An undecodable request: INVALID_ARGUMENT, naming the method.
    let error = conn
        .call::<api::Empty>(
            "CreateContainer",
            &api::RegisterPluginRequest {
                plugin_name: "x".repeat(3),
                plugin_idx: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Status { code: code::INVALID_ARGUMENT, message, .. }
            if message.starts_with("CreateContainer: ")),
        "{error}"
    );
    let p = pod("sandbox", "uid");
    conn.create(&p, container("c", &p, &[], "")).await.unwrap();
    let _ = stop.send(true);
    let (outcome, _) = serving.await.unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"answering Frobnicate false".to_owned())
    );
}

#[tokio::test]
async fn shutdown_is_answered_and_ends_serve() {
    let seen = Seen::default();
    let (_dir, conn, _, _stop, serving) = start(CreateOnly { seen: seen.clone() }).await;
    let _: api::Empty = conn.call("Shutdown", &api::Empty {}).await.unwrap();
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve ends after Shutdown")
        .unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some("answering Shutdown true")
    );
    assert!(seen.lock().unwrap().contains(&"shutdown".to_owned()));
}

/// Synchronizes, narrows its subscription at `Configure`, and pushes an unsolicited update from
/// its background work when told to, then stops.
struct Syncing {
    seen: Seen,
    runtime: Runtime,
    push: mpsc::UnboundedReceiver<&'static str>,
}

impl Plugin for Syncing {
    fn events(&self) -> EventMask {
        EventMask::of(&[event::CREATE_CONTAINER, event::REMOVE_CONTAINER])
    }

    async fn configure(
        &mut self,
        request: api::ConfigureRequest,
    ) -> Result<Option<EventMask>, Status> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("configure by {}", request.runtime_name));
        Ok(Some(EventMask::of(&[event::REMOVE_CONTAINER])))
    }

    async fn synchronize(
        &mut self,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
    ) -> Result<Vec<api::ContainerUpdate>, Status> {
        let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.seen
            .lock()
            .unwrap()
            .push(format!("synchronize {} pods, {ids:?}", pods.len()));
        Ok(Vec::new())
    }

    async fn background(&mut self) -> Flow {
        match self.push.recv().await {
            Some(id) => {
                // In a task of its own, as unsolicited updates must be sent.
                let runtime = self.runtime.clone();
                let update = api::ContainerUpdate {
                    container_id: id.into(),
                    linux: Some(api::LinuxContainerUpdate {
                        resources: Some(cpus("5")),
                    }),
                    ignore_failure: false,
                };
                tokio::spawn(async move { runtime.update_containers(vec![update]).await });
                Flow::Continue
            }
            None => Flow::Stop,
        }
    }
}

/// A runtime that sends `Synchronize` parts without end, or one part of countless empty containers
/// (2 bytes each on the wire, about 150 in memory), is refused before memory runs out; the parts so
/// far are dropped, and a proper `Synchronize` then works.
#[tokio::test]
async fn a_synchronize_over_the_limits_is_refused_and_its_parts_dropped() {
    let seen = Seen::default();
    let (_dir, conn, _configured, _stop, _serving) = start(CreateOnly { seen }).await;
    let part = |containers: usize| api::SynchronizeRequest {
        pods: Vec::new(),
        containers: vec![api::Container::default(); containers],
        more: true,
    };
    let refused = |error: CallError| {
        matches!(&error, CallError::Status { code: code::RESOURCE_EXHAUSTED, message, .. }
            if message.contains("over this plugin's limits"))
    };
    for _ in 0..1024 {
        let answer: api::SynchronizeResponse = conn.call("Synchronize", &part(0)).await.unwrap();
        assert!(answer.more);
    }
    let error = conn
        .call::<api::SynchronizeResponse>("Synchronize", &part(0))
        .await
        .unwrap_err();
    assert!(refused(error));
    let error = conn
        .call::<api::SynchronizeResponse>("Synchronize", &part(100_001))
        .await
        .unwrap_err();
    assert!(refused(error));
    let p = pod("sandbox", "uid");
    let containers = ["a", "b"].map(|id| container(id, &p, &[], "0-7"));
    let answer = conn.synchronize(vec![p.clone()], containers.to_vec(), 1);
    assert!(!answer.await.unwrap().more);
}

#[tokio::test]
async fn synchronize_in_parts_reaches_the_plugin_once_and_background_work_runs_beside_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&path).unwrap();
    let (_stop, stopped) = watch::channel(false);
    let (push, pushes) = mpsc::unbounded_channel();
    let seen = Seen::default();
    let plugin_seen = seen.clone();
    let serving = tokio::spawn(async move {
        let socket = UnixStream::connect(&path).await.unwrap();
        let config = config();
        let (connection, runtime) = Connection::open(socket, config.timeout);
        let mut plugin = Syncing {
            seen: plugin_seen,
            runtime,
            push: pushes,
        };
        connection.serve(&mut plugin, &config, stopped).await
    });
    let (mut conn, configured) = runtime.accept().await.unwrap();
    assert_eq!(configured.events, 1 << (event::REMOVE_CONTAINER - 1));
    let p = pod("sandbox", "uid");
    let containers = ["a", "b", "c"].map(|id| container(id, &p, &[], "0-7"));
    conn.synchronize(vec![p.clone()], containers.to_vec(), 2)
        .await
        .unwrap();
    push.send("b").unwrap();
    let pushed = conn.next_unsolicited(Duration::from_secs(5)).await.unwrap();
    assert_eq!(pushed.update[0].container_id, "b");
    assert_eq!(conn.cpus("b").as_deref(), Some("5"));
    // Its background work says stop: serve ends, after a complete Synchronize.
    drop(push);
    let outcome = tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve ends when the background work says stop")
        .unwrap();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(outcome.synchronized);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "configure by fake-runtime",
            r#"synchronize 1 pods, ["a", "b", "c"]"#,
        ]
    );
}

/// Subscribes, at `Configure`, to an event it does not handle.
struct Overreaching;

impl Plugin for Overreaching {
    fn events(&self) -> EventMask {
        EventMask::of(&[event::CREATE_CONTAINER])
    }

    async fn configure(&mut self, _: api::ConfigureRequest) -> Result<Option<EventMask>, Status> {
        Ok(Some(EventMask::of(&[event::STOP_CONTAINER])))
    }
}

#[tokio::test]
async fn a_subscription_beyond_the_events_handled_fails_configure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&path).unwrap();
    let (_stop, stopped) = watch::channel(false);
    let _serving = tokio::spawn(async move {
        let socket = UnixStream::connect(&path).await.unwrap();
        serve(socket, &config(), &mut Overreaching, stopped).await
    });
    let Err(error) = runtime.accept().await else {
        panic!("Configure succeeded");
    };
    assert!(error.to_string().contains("does not handle"), "{error}");
}

#[test]
fn event_masks() {
    let mask = EventMask::of(&[event::RUN_POD_SANDBOX, event::REMOVE_CONTAINER]);
    assert_eq!(mask.bits(), 1 | (1 << 10));
    assert!(mask.contains(event::REMOVE_CONTAINER));
    assert!(!mask.contains(event::CREATE_CONTAINER));
    assert!(!mask.contains(0) && !mask.contains(-1) && !mask.contains(99));
    assert!(mask.covers(EventMask::of(&[event::RUN_POD_SANDBOX])));
    assert!(!mask.covers(EventMask::of(&[event::STOP_POD_SANDBOX])));
    assert_eq!(
        mask.union(EventMask::of(&[event::STOP_POD_SANDBOX])).bits(),
        mask.bits() | 2
    );
}
