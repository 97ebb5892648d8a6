//! The NRI plugin against a runtime that speaks NRI's mux and ttrpc over a Unix socket
//! (`driver::nri::fake_runtime`): registration, configuration, synchronization in chunks, pinning,
//! fail-closed refusals, resource updates, and reconnection after a runtime restart. `locks.rs`:
//! containerd's two locks (no deadlock, churn); `limits.rs`: messages over ttrpc's limit and the
//! reconnection backoff.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use driver::nri::endpoint::{CallError, code};
use driver::nri::fake_runtime::{FakeRuntime, container, pod};
use driver::nri::plugin::{CpuSource, NriConfig, event, run};
use driver::nri::policy::ClaimCpus;
use driver::nri::proto::api;
use hal::CpuSet;
use tokio::sync::watch;

fn set(list: &str) -> CpuSet {
    CpuSet::from_cpulist(list).unwrap()
}

#[path = "nri_runtime/limits.rs"]
mod limits;
#[path = "nri_runtime/locks.rs"]
mod locks;

struct Node {
    claims: watch::Sender<BTreeMap<String, ClaimCpus>>,
    stop: watch::Sender<bool>,
    plugin: tokio::task::JoinHandle<()>,
    stats: Arc<driver::nri::stats::NriStats>,
}

impl Node {
    /// Prepares a claim: `uid` holds `cpus` for `pod`.
    fn prepare(&self, uid: &str, cpus: &str, pod: &str) {
        let claim = ClaimCpus {
            cpus: set(cpus),
            pods: vec![pod.to_owned()],
        };
        self.claims.send_modify(|c| {
            c.insert(uid.to_owned(), claim);
        });
    }

    /// Unprepares a claim.
    fn unprepare(&self, uid: &str) {
        self.claims.send_modify(|c| {
            c.remove(uid);
        });
    }

    /// Stops the plugin and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.plugin.await.unwrap();
    }
}

/// Starts the plugin on `socket` with 8 allocatable CPUs (0-7) and the given claims.
fn start(socket: &Path, claims: &[(&str, &str, &str)]) -> Node {
    start_with(socket, claims, false)
}

/// As [`start`], with unsolicited updates on or off.
fn start_with(socket: &Path, claims: &[(&str, &str, &str)], unsolicited: bool) -> Node {
    let allocatable = Arc::new(std::sync::Mutex::new(set("0-7")));
    start_on(socket, claims, unsolicited, allocatable)
}

/// As [`start_with`], with the allocatable CPUs read from `allocatable` (a test changes them).
fn start_on(
    socket: &Path,
    claims: &[(&str, &str, &str)],
    unsolicited: bool,
    allocatable: Arc<std::sync::Mutex<CpuSet>>,
) -> Node {
    let claims: BTreeMap<String, ClaimCpus> = claims
        .iter()
        .map(|(uid, cpus, pod)| {
            let claim = ClaimCpus {
                cpus: set(cpus),
                pods: vec![(*pod).to_owned()],
            };
            ((*uid).to_owned(), claim)
        })
        .collect();
    let (claims, rx) = watch::channel(claims);
    let source = CpuSource {
        claims: rx,
        allocatable: Arc::new(move || allocatable.lock().unwrap().clone()),
        reserved_again: None,
    };
    let (stop, stopped) = watch::channel(false);
    let mut config = NriConfig::new(socket);
    config.index = "07".into();
    config.unsolicited_updates = unsolicited;
    let stats = config.stats.clone();
    let plugin = tokio::spawn(run(config, source, stopped));
    Node {
        claims,
        stop,
        plugin,
        stats,
    }
}

#[tokio::test]
async fn the_plugin_registers_and_subscribes_to_the_container_events_it_handles() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[]);
    let (conn, configured) = runtime.accept().await.unwrap();
    assert_eq!(conn.registered, ("dra-hal".to_owned(), "07".to_owned()));
    // Bits event-1 of CreateContainer (4), UpdateContainer (8), StopContainer (10), RemoveContainer (11).
    assert_eq!(
        configured.events,
        (1 << 3) | (1 << 7) | (1 << 9) | (1 << 10)
    );
    assert_eq!(
        configured.events,
        event::mask(&[
            event::CREATE_CONTAINER,
            event::UPDATE_CONTAINER,
            event::STOP_CONTAINER,
            event::REMOVE_CONTAINER
        ])
    );
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
}

#[tokio::test]
async fn synchronize_in_chunks_pins_claim_containers_and_confines_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[("claim-a", "2-3", "uid-a")]);
    let (conn, _) = runtime.accept().await.unwrap();
    let (pa, pb) = (pod("sa", "uid-a"), pod("sb", "uid-b"));
    let containers = vec![
        container("a1", &pa, &["DRA_CPUSET_claim-a=2-3"], "0-7"),
        container("a2", &pa, &["HOME=/"], ""),
        container("b1", &pb, &[], "0-1,4-7"),
        container("b2", &pb, &[], "0-7"),
    ];
    // One container per Synchronize call: the plugin answers "more" until the last.
    let answer = conn.synchronize(vec![pa, pb], containers, 1).await.unwrap();
    assert!(!answer.more);
    let ids: Vec<&str> = answer
        .update
        .iter()
        .map(|u| u.container_id.as_str())
        .collect();
    assert_eq!(ids, ["a1", "a2", "b2"], "b1 already runs on the pool");
    for (id, cpus) in [
        ("a1", "2-3"),
        ("a2", "0-1,4-7"),
        ("b1", "0-1,4-7"),
        ("b2", "0-1,4-7"),
    ] {
        assert_eq!(conn.cpus(id).unwrap(), cpus, "{id}");
    }
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
}

#[tokio::test]
async fn an_empty_shared_pool_or_a_bad_claim_env_fails_the_container_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[("big", "0-5", "uid-big")]);
    let (mut conn, _) = runtime.accept().await.unwrap();
    let p = pod("s1", "uid-1");
    conn.synchronize(vec![p.clone()], vec![], 10).await.unwrap();
    conn.create(&p, container("early", &p, &[], ""))
        .await
        .unwrap();
    assert_eq!(conn.cpus("early").unwrap(), "6-7");

    let refused = |e: CallError| match e {
        CallError::Status { code, message, .. } => (code, message),
        other => panic!("{other}"),
    };
    let (status, message) = refused(
        conn.create(&p, container("bad", &p, &["DRA_CPUSET_big=0-1"], ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, code::FAILED_PRECONDITION);
    assert!(
        message.contains("container bad-name: DRA_CPUSET_big=0-1: the claim holds CPUs 0-5"),
        "{message}"
    );

    // The last two CPUs are claimed: the pool is empty. Running containers are left where they are
    // (an empty cpuset would mean "no change" to the runtime), new ones are refused.
    node.prepare("last", "6-7", "uid-last");
    let (status, message) = refused(
        conn.create(&p, container("late", &p, &[], ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, code::FAILED_PRECONDITION);
    assert!(
        message.contains("the shared CPU pool is empty"),
        "{message}"
    );
    assert_eq!(conn.cpus("late"), None);

    // A claim container still starts, and moves nobody to an empty pool.
    let owner = pod("s2", "uid-big");
    let answer = conn
        .create(&owner, container("ok", &owner, &["DRA_CPUSET_big=0-5"], ""))
        .await
        .unwrap();
    assert!(answer.update.is_empty(), "{:?}", answer.update);
    assert_eq!(conn.cpus("ok").unwrap(), "0-5");
    assert_eq!(conn.cpus("early").unwrap(), "6-7");
    // Once the CPUs are free again, so do shared ones; `early` never left 6-7, so nothing moves.
    node.unprepare("last");
    let answer = conn
        .create(&p, container("later", &p, &[], ""))
        .await
        .unwrap();
    assert!(answer.update.is_empty(), "{:?}", answer.update);
    assert_eq!(conn.cpus("later").unwrap(), "6-7");
    assert!(
        conn.next_unsolicited(Duration::ZERO).await.is_none(),
        "no unsolicited update"
    );
    node.stop().await;
}

#[tokio::test]
async fn resource_updates_keep_the_cpus_and_stopped_containers_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[("a", "4-7", "uid-a")]);
    let (conn, _) = runtime.accept().await.unwrap();
    let p = pod("s", "uid-a");
    let c = container("c", &p, &["DRA_CPUSET_a=4-7"], "");
    conn.synchronize(vec![p.clone()], vec![], 10).await.unwrap();
    conn.create(&p, c.clone()).await.unwrap();
    let update = api::UpdateContainerRequest {
        pod: Some(p.clone()),
        container: Some(c.clone()),
        linux_resources: None,
    };
    let answer: api::UpdateContainerResponse = conn.call("UpdateContainer", &update).await.unwrap();
    assert_eq!(answer.update.len(), 1);
    let cpus = answer.update[0]
        .linux
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap();
    assert_eq!(cpus.cpu.as_ref().unwrap().cpus, "4-7");
    conn.remove(&p, &c).await.unwrap();
    let answer: api::UpdateContainerResponse = conn.call("UpdateContainer", &update).await.unwrap();
    assert!(
        answer.update.is_empty(),
        "a removed container is not managed"
    );
    // A method the plugin did not subscribe to is refused, not silently accepted.
    let error = conn
        .call::<api::Empty>("RunPodSandbox", &api::Empty {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CallError::Status {
                code: code::UNIMPLEMENTED,
                ..
            }
        ),
        "{error}"
    );
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
}

#[tokio::test]
async fn after_a_runtime_restart_the_plugin_reconnects_and_synchronizes_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[("a", "0-1", "uid-a")]);
    let (conn, _) = runtime.accept().await.unwrap();
    conn.hang_up().await;
    drop(conn);
    drop(runtime);
    std::fs::remove_file(&socket).unwrap();
    let restarted = FakeRuntime::listen(&socket).unwrap();
    let (conn, _) = restarted.accept().await.unwrap();
    let p = pod("s", "uid-a");
    conn.synchronize(
        vec![p.clone()],
        vec![container("c", &p, &["DRA_CPUSET_a=0-1"], "0-7")],
        10,
    )
    .await
    .unwrap();
    assert_eq!(conn.cpus("c").unwrap(), "0-1");
    assert!(node.stats.connected());
    assert_eq!(node.stats.containers(), (1, 0));
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
    assert!(!node.stats.connected());
}

#[tokio::test]
async fn answers_longer_than_a_go_read_buffer_reach_a_strict_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[("a", "0-1", "uid-a")]);
    let (conn, _) = runtime.accept().await.unwrap();
    let p = pod("s", "uid-p");
    let ids: Vec<String> = (0..300)
        .map(|i| format!("container-with-a-long-id-{i:04}"))
        .collect();
    let containers = ids.iter().map(|id| container(id, &p, &[], "")).collect();
    // One Synchronize answer with 300 updates: far over 4096 bytes, sent in two frames.
    let answer = conn
        .synchronize(vec![p.clone()], containers, 300)
        .await
        .unwrap();
    assert_eq!(answer.update.len(), 300);
    assert!(ids.iter().all(|id| conn.cpus(id).unwrap() == "2-7"));
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
}

/// With `unsolicited_updates` (off by default: it deadlocks containerd 1.7 and 2.1, see `locks.rs`).
#[tokio::test]
async fn unsolicited_updates_the_runtime_refused_are_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_with(&socket, &[], true);
    let (mut conn, _) = runtime.accept().await.unwrap();
    let p = pod("s", "uid-p");
    conn.synchronize(vec![p.clone()], vec![container("web", &p, &[], "0-7")], 10)
        .await
        .unwrap();
    conn.failing.lock().unwrap().insert("web".into());
    node.claims.send_modify(|c| {
        c.insert(
            "a".into(),
            ClaimCpus {
                cpus: set("0-3"),
                pods: vec![],
            },
        );
    });
    // containerd answers an error when an update fails: the plugin keeps the container as unknown.
    let refused = conn.next_unsolicited(Duration::from_secs(5)).await.unwrap();
    assert_eq!(refused.update[0].container_id, "web");
    assert!(refused.update[0].ignore_failure);
    assert_eq!(conn.cpus("web").unwrap(), "0-7");
    conn.failing.lock().unwrap().clear();
    // The retry (every 5 s) applies it.
    let retried = conn
        .next_unsolicited(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(retried.update[0].container_id, "web");
    assert_eq!(conn.cpus("web").unwrap(), "4-7");
    let _ = node.stop.send(true);
    node.plugin.await.unwrap();
}

#[tokio::test]
async fn a_prepared_claim_moves_shared_containers_in_the_answer_to_its_containers_creation() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[]);
    let (conn, _) = runtime.accept().await.unwrap();
    let (web, worker) = (pod("s-web", "uid-web"), pod("s-worker", "uid-worker"));
    let shared = container("web", &web, &[], "");
    conn.synchronize(vec![web.clone()], vec![shared.clone()], 10)
        .await
        .unwrap();
    assert_eq!(conn.cpus("web").unwrap(), "0-7");

    // The kubelet prepares the claim, then creates its container: that creation's answer moves
    // `web` off the claim's CPUs, before the claim's container starts.
    node.prepare("a", "0-1", "uid-worker");
    let pinned = container("pinned", &worker, &["DRA_CPUSET_a=0-1"], "");
    let answer = conn.create(&worker, pinned.clone()).await.unwrap();
    let moved: Vec<(&str, &str)> = answer
        .update
        .iter()
        .map(|u| (u.container_id.as_str(), u.cpus()))
        .collect();
    assert_eq!(moved, [("web", "2-7")]);
    assert!(answer.update.iter().all(|u| u.ignore_failure));
    assert_eq!(conn.cpus("pinned").unwrap(), "0-1");
    assert_eq!(conn.cpus("web").unwrap(), "2-7");

    // The kubelet stops the claim's container, then unprepares the claim: the grown pool reaches
    // `web` with the next container event on the node (here the kubelet updating its resources).
    conn.remove(&worker, &pinned).await.unwrap();
    node.unprepare("a");
    let update = api::UpdateContainerRequest {
        pod: Some(web.clone()),
        container: Some(shared),
        linux_resources: None,
    };
    let answer: api::UpdateContainerResponse = conn.call("UpdateContainer", &update).await.unwrap();
    let moved: Vec<(&str, &str)> = answer
        .update
        .iter()
        .map(|u| (u.container_id.as_str(), u.cpus()))
        .collect();
    assert_eq!(moved, [("web", "0-7")]);
    // The runtime was never called by the plugin.
    assert_eq!(conn.unsolicited_received(), 0);
    node.stop().await;
}

#[tokio::test]
async fn cpus_taken_offline_leave_the_shared_pool_at_the_next_container_event() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let allocatable = Arc::new(std::sync::Mutex::new(set("0-7")));
    let node = start_on(
        &socket,
        &[("a", "0-1", "uid-worker")],
        false,
        allocatable.clone(),
    );
    let (conn, _) = runtime.accept().await.unwrap();
    let (web, worker) = (pod("s-web", "uid-web"), pod("s-worker", "uid-worker"));
    let shared = container("web", &web, &[], "");
    let pinned = container("pinned", &worker, &["DRA_CPUSET_a=0-1"], "");
    conn.synchronize(
        vec![web.clone(), worker.clone()],
        vec![shared.clone(), pinned],
        10,
    )
    .await
    .unwrap();
    assert_eq!(conn.cpus("web").unwrap(), "2-7");

    // CPUs 6 and 7 go offline (the inventory's rescan saw it); no claim changed. The next container
    // event's answer moves `web` off them; a CPU brought back online returns to the pool the same way.
    *allocatable.lock().unwrap() = set("0-5");
    let update = api::UpdateContainerRequest {
        pod: Some(web.clone()),
        container: Some(shared.clone()),
        linux_resources: None,
    };
    let answer: api::UpdateContainerResponse = conn.call("UpdateContainer", &update).await.unwrap();
    let moved: Vec<(&str, &str)> = answer
        .update
        .iter()
        .map(|u| (u.container_id.as_str(), u.cpus()))
        .collect();
    assert_eq!(moved, [("web", "2-5")]);

    *allocatable.lock().unwrap() = set("0-6");
    let answer: api::UpdateContainerResponse = conn.call("UpdateContainer", &update).await.unwrap();
    let moved: Vec<(&str, &str)> = answer
        .update
        .iter()
        .map(|u| (u.container_id.as_str(), u.cpus()))
        .collect();
    assert_eq!(moved, [("web", "2-6")]);
    // The claim's container keeps its CPUs throughout (the answers above moved only `web`).
    assert_eq!(conn.cpus("pinned").unwrap(), "0-1");
    node.stop().await;
}
