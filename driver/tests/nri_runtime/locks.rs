//! containerd's two NRI locks, taken in opposite orders by container events and by a plugin's
//! unsolicited `UpdateContainers` (containerd issue #13733; fixed by containerd/nri#301, which
//! containerd 1.7.x and 2.1.x do not have). The fake runtime takes them as containerd does, so the
//! deadlock that hangs real nodes hangs it too; each wait here is bounded and fails the test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use driver::nri::fake_runtime::{FakeRuntime, PluginConn, container, pod};
use driver::nri::proto::api;
use hal::CpuSet;
use tokio::time::timeout;

use super::{set, start, start_with};

/// Long enough for any answer on a loaded machine; a deadlock never ends.
const BOUND: Duration = Duration::from_secs(10);

/// The old behaviour, kept behind `unsolicited_updates`: a claim prepared while a container event is
/// inside the CRI plugin makes the plugin send `UpdateContainers`, which takes the adaptation lock and
/// waits for the CRI lock, while the event waits for the adaptation lock.
#[tokio::test]
async fn unsolicited_updates_deadlock_a_runtime_that_takes_containerds_two_locks() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_with(&socket, &[], true);
    let (conn, _) = runtime.accept().await.unwrap();
    let web = pod("s-web", "uid-web");
    conn.synchronize(vec![web.clone()], vec![container("web", &web, &[], "")], 10)
        .await
        .unwrap();

    // The kubelet creates a container: the CRI plugin takes its NRI lock.
    let event = conn.event().await;
    node.prepare("a", "0-1", "uid-worker");
    // The plugin's UpdateContainers holds the adaptation lock, waiting for the CRI lock.
    assert!(conn.update_waits_for_the_cri_lock(BOUND).await);
    // So the event cannot call the plugin: each lock waits for the other.
    let worker = pod("s-worker", "uid-worker");
    let pinned = container("pinned", &worker, &["DRA_CPUSET_a=0-1"], "");
    let stuck = timeout(Duration::from_millis(200), event.create(&worker, pinned)).await;
    assert!(stuck.is_err(), "the event went through: {stuck:?}");
    drop(event);
    node.stop().await;
}

/// The same moment with the default: nothing is sent to the runtime, and the event's answer moves
/// the shared container.
#[tokio::test]
async fn a_claim_prepared_while_a_container_event_is_under_way_does_not_deadlock_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[]);
    let (conn, _) = runtime.accept().await.unwrap();
    let web = pod("s-web", "uid-web");
    conn.synchronize(vec![web.clone()], vec![container("web", &web, &[], "")], 10)
        .await
        .unwrap();

    let event = conn.event().await;
    node.prepare("a", "0-1", "uid-worker");
    let worker = pod("s-worker", "uid-worker");
    let pinned = container("pinned", &worker, &["DRA_CPUSET_a=0-1"], "");
    let answer = timeout(BOUND, event.create(&worker, pinned))
        .await
        .expect("deadlocked")
        .unwrap();
    drop(event);
    assert_eq!(answer.update.len(), 1);
    assert_eq!(conn.cpus("pinned").unwrap(), "0-1");
    assert_eq!(conn.cpus("web").unwrap(), "2-7");
    // A later event (PostCreateContainer's StateChange in containerd) goes through as well.
    let later = conn.event().await;
    let state = api::StateChangeEvent {
        event: 5,
        pod: Some(worker.clone()),
        container: None,
    };
    timeout(BOUND, later.call::<api::Empty>("StateChange", &state))
        .await
        .expect("deadlocked")
        .unwrap();
    drop(later);
    assert_eq!(conn.unsolicited_received(), 0);
    node.stop().await;
}

/// Churn: 6 tasks create and remove shared containers in parallel while 2 others prepare a claim,
/// create its container, remove it and unprepare the claim, 10 rounds each. Every event completes;
/// whenever a claim's container has been created, no other container runs on its CPUs; at the end,
/// after one more event, every shared container runs on the whole pool; the plugin never called the
/// runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_containers_and_claims_never_deadlocks_and_keeps_claimed_cpus_free() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = Arc::new(start(&socket, &[]));
    let (conn, _) = runtime.accept().await.unwrap();
    let conn = Arc::new(conn);
    let shared_pod = pod("s-shared", "uid-shared");
    let running: Vec<api::Container> = (0..4)
        .map(|i| container(&format!("old-{i}"), &shared_pod, &[], "0-7"))
        .collect();
    conn.synchronize(vec![shared_pod.clone()], running, 10)
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..6 {
        let conn = conn.clone();
        let p = shared_pod.clone();
        tasks.spawn(async move {
            for round in 0..10 {
                let c = container(&format!("shared-{t}-{round}"), &p, &[], "");
                conn.create(&p, c.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                if round % 3 != 2 {
                    conn.remove(&p, &c).await.map_err(|e| e.to_string())?;
                }
            }
            Ok::<(), String>(())
        });
    }
    for (t, cpus) in [(0, "0-1"), (1, "4-6")] {
        let conn = conn.clone();
        let node = node.clone();
        tasks.spawn(async move {
            for round in 0..10 {
                let uid = format!("claim-{t}-{round}");
                let p = pod(&format!("s-{uid}"), &format!("uid-{uid}"));
                node.prepare(&uid, cpus, &p.uid);
                let env = format!("DRA_CPUSET_{uid}={cpus}");
                let c = container(&format!("pinned-{uid}"), &p, &[env.as_str()], "");
                conn.create(&p, c.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                check_claim(&conn, &c.id, cpus).await?;
                conn.remove(&p, &c).await.map_err(|e| e.to_string())?;
                node.unprepare(&uid);
            }
            Ok::<(), String>(())
        });
    }
    let finished = timeout(Duration::from_secs(30), async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
    })
    .await;
    assert!(finished.is_ok(), "churn deadlocked");

    // Every claim is unprepared; one more event brings the whole pool to the shared containers.
    conn.create(&shared_pod, container("last", &shared_pod, &[], ""))
        .await
        .unwrap();
    let table = conn.table.lock().unwrap().clone();
    assert_eq!(table.len(), 4 + 6 * 3 + 1, "{table:?}");
    assert!(table.values().all(|cpus| cpus == "0-7"), "{table:?}");
    assert_eq!(conn.unsolicited_received(), 0);
    let node = Arc::into_inner(node).unwrap();
    node.stop().await;
}

/// Under the CRI lock (no event half-applied): `id` runs on exactly `cpus`, and no other container
/// touches them.
async fn check_claim(conn: &PluginConn, id: &str, cpus: &str) -> Result<(), String> {
    let _quiet = conn.event().await;
    let table: BTreeMap<String, String> = conn.table.lock().unwrap().clone();
    if table.get(id).map(String::as_str) != Some(cpus) {
        return Err(format!("{id} is not on {cpus}: {table:?}"));
    }
    let claimed = set(cpus);
    for (other, on) in table.iter().filter(|(other, _)| *other != id) {
        let on = CpuSet::from_cpulist(on).map_err(|e| e.to_string())?;
        if !on.intersection(&claimed).is_empty() {
            return Err(format!("{other} runs on {on}, claimed by {id}: {table:?}"));
        }
    }
    Ok(())
}
