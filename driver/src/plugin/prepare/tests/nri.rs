use crate::nri::fake_runtime::{FakeRuntime, container, pod};
use crate::nri::plugin::{CpuSource, NriConfig, run};

use super::*;

fn cpus(list: &str) -> hal::CpuSet {
    hal::CpuSet::from_cpulist(list).unwrap()
}

/// The NRI plugin serving the fake runtime with `preparer`'s claims and the node's online CPUs:
/// the runtime's connection to it, and a sender that stops it, and its task.
async fn nri_plugin(
    s: &Setup,
    preparer: &Preparer,
    reserved_again: Option<crate::nri::plugin::ReservedAgain>,
) -> (
    crate::nri::fake_runtime::PluginConn,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let online = s.inventory.read().unwrap().cpu.as_ref().unwrap().online();
    let socket = s.dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let source = CpuSource {
        claims: preparer.cpu_claims(),
        allocatable: Arc::new(move || online.clone()),
        reserved_again,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let plugin = tokio::spawn(run(NriConfig::new(&socket), source, stopped));
    let (conn, _) = runtime.accept().await.unwrap();
    (conn, stop, plugin)
}

#[tokio::test]
async fn prepared_claims_reach_the_nri_plugin_and_the_runtime_pins_and_moves_containers() {
    let s = Setup::on("xeon");
    let preparer = s.preparer("boot-1");
    let (conn, stop, plugin) = nri_plugin(&s, &preparer, None).await;

    // A container that was running before: confined to the whole pool, every online CPU of the node.
    let other = pod("sandbox-0", "pod-other");
    let shared = container("shared", &other, &[], "");
    conn.synchronize(vec![other.clone()], vec![shared], 10)
        .await
        .unwrap();
    assert_eq!(conn.cpus("shared").unwrap(), "0-223");

    // A claim is prepared, then its container, with the env of the claim's CDI spec, is created: it
    // runs on exactly the claim's CPUs, and the answer to its creation moves the shared container
    // off them, before it starts.
    s.claims.add_cpus("a", "cpus-numa-0", 4, json!([]));
    preparer.prepare(vec![reference("a")]).await["a"]
        .clone()
        .unwrap();
    let owner = pod("sandbox-a", "pod-a");
    let env = env_of(&s.spec("a"));
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let answer = conn
        .create(&owner, container("pinned", &owner, &env, ""))
        .await
        .unwrap();
    assert_eq!(answer.update.len(), 1);
    assert_eq!(conn.cpus("pinned").unwrap(), "0-1,112-113");
    assert_eq!(conn.cpus("shared").unwrap(), "2-111,114-223");

    // Another pod naming the same claim is refused, with the reason.
    let thief = pod("sandbox-t", "pod-thief");
    let error = conn
        .create(&thief, container("stolen", &thief, &env, ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("reserved for pod(s) pod-a, not for pod pod-thief"),
        "{error}"
    );
    assert_eq!(conn.cpus("stolen"), None);

    // Unprepared: the CPUs go back to the pool, for every container (even one of the claim's, had
    // it not been stopped first), with the next container event on the node.
    preparer.unprepare(vec![reference("a")]).await;
    conn.create(&other, container("next", &other, &[], ""))
        .await
        .unwrap();
    assert_eq!(conn.cpus("shared").unwrap(), "0-223");
    assert_eq!(conn.cpus("pinned").unwrap(), "0-223");
    assert_eq!(conn.cpus("next").unwrap(), "0-223");
    assert_eq!(conn.unsolicited_received(), 0);
    let _ = stop.send(true);
    plugin.await.unwrap();
}

/// A pod that comes to share a claim already prepared for another pod gets no prepare call (the
/// kubelet prepares a claim once on a node): its containers are pinned once the claim's
/// `reservedFor` names it, read again when the first of them is created; the pods added are kept
/// across a restart. A pod the claim is not reserved for is still refused.
#[tokio::test]
async fn a_pod_that_comes_to_share_a_prepared_claim_is_pinned_to_its_cpus() {
    let s = Setup::on("xeon");
    let preparer = Arc::new(s.preparer("boot-1"));
    let again = Preparer::reserved_again(preparer.clone(), |p| p);
    let (conn, stop, plugin) = nri_plugin(&s, &preparer, Some(again)).await;
    conn.synchronize(vec![], vec![], 10).await.unwrap();

    s.claims.add_cpus("a", "cpus-numa-0", 4, json!([]));
    preparer.prepare(vec![reference("a")]).await["a"]
        .clone()
        .unwrap();
    let env = env_of(&s.spec("a"));
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let first = pod("sandbox-a", "pod-a");
    conn.create(&first, container("first", &first, &env, ""))
        .await
        .unwrap();
    let reads = s.claims.3.lock().unwrap().len();

    // The second pod, before the claim is reserved for it: refused, after one more read.
    let second = pod("sandbox-b", "pod-b");
    let error = conn
        .create(&second, container("early", &second, &env, ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not for pod pod-b"), "{error}");
    assert_eq!(s.claims.3.lock().unwrap().len(), reads + 1);

    s.claims.reserve_for("a", "pod-b");
    conn.create(&second, container("second", &second, &env, ""))
        .await
        .unwrap();
    assert_eq!(conn.cpus("second").unwrap(), "0-1,112-113");
    assert_eq!(conn.cpus("first").unwrap(), "0-1,112-113");
    let thief = pod("sandbox-t", "pod-thief");
    let error = conn
        .create(&thief, container("stolen", &thief, &env, ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not for pod pod-thief"), "{error}");
    let _ = stop.send(true);
    plugin.await.unwrap();

    drop(preparer);
    let restarted = s.preparer("boot-1");
    let pods = restarted
        .cpu_claims()
        .borrow()
        .get("a")
        .unwrap()
        .pods
        .clone();
    assert_eq!(pods, ["pod-a", "pod-b"]);
}

/// Pods come and go sharing a claim that stays prepared (a CronJob's pods beside a long-running
/// one): the claim's pods follow its reservations, so its record does not grow with every pod that
/// ever shared it (it grew past the record's size limit after about 6,700 pods, then refused new
/// pods).
#[tokio::test]
async fn a_shared_claims_pods_follow_its_reservations_and_do_not_grow() {
    let s = Setup::on("xeon");
    s.claims.add_cpus("a", "cpus-numa-0", 2, json!([]));
    let preparer = s.preparer("boot-1");
    preparer.prepare(vec![reference("a")]).await["a"]
        .clone()
        .unwrap();
    let pods = || {
        preparer
            .cpu_claims()
            .borrow()
            .get("a")
            .unwrap()
            .pods
            .clone()
    };
    for round in 0..20 {
        let job = format!("job-{round}");
        s.claims.reserve_for("a", &job);
        if round > 0 {
            s.claims.unreserve("a", &format!("job-{}", round - 1));
        }
        assert!(preparer.add_reserved_pods("a").await.unwrap());
        assert_eq!(pods(), ["pod-a".to_owned(), job]);
    }
    // Nothing new: nothing written.
    assert!(!preparer.add_reserved_pods("a").await.unwrap());
}

#[tokio::test]
async fn claim_cpus_are_published_from_the_moment_they_are_reserved_until_unprepare() {
    let s = Setup::on("xeon");
    s.claims.add_cpus("a", "cpus-numa-0", 2, json!([]));
    let preparer = s.preparer("boot-1");
    let claims = preparer.cpu_claims();
    assert!(claims.borrow().is_empty());
    preparer.prepare(vec![reference("a")]).await;
    let published = claims.borrow().get("a").cloned().unwrap();
    assert_eq!(published.cpus, cpus("0,112"));
    assert_eq!(published.pods, vec!["pod-a".to_owned()]);
    // A restart publishes what the checkpoint holds.
    drop(preparer);
    let restarted = s.preparer("boot-1");
    assert_eq!(restarted.cpu_claims().borrow().get("a"), Some(&published));
    restarted.unprepare(vec![reference("a")]).await;
    assert!(restarted.cpu_claims().borrow().is_empty());
}
