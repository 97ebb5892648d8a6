//! A teardown that fails is tried again while the plugin stays connected, without waiting for a
//! reconnection's `Synchronize` (containerd only logs a plugin's failed StopPodSandbox, and the
//! kubelet never sends it again): after a failed stop and removal, the undo of a failed start, until
//! it succeeds; never for a sandbox started again. Each try comes after twice the wait of the one
//! before, from [`TEARDOWN_RETRY`] up to [`TEARDOWN_RETRY_MAX`], then on at that pace; a WARN on
//! tries 1, 2, 4, 8, ... or when what failed changed. The failed teardowns outlive the connection:
//! none is tried between connections, and the next connection's task tries them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::sandboxes::Noted;
use super::tests::{api, connect, lines, network, record, start_network};
use super::*;
use crate::nri::fake_runtime::{FakeRuntime, pod_in_netns};

/// The tests' wait before a failed teardown is tried again the first time (doubled after each try).
const EVERY: Duration = Duration::from_millis(50);

/// The NAD `vf-test1`, for the flaky recorder.
const NAD: &str = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;

/// The recorder CNI plugin `rec` of `super::tests::recorder`, but whose DEL fails (logged as
/// `DEL-REFUSED ...`, before the cache entry could go) while `dir/fail-del` exists.
fn flaky_recorder(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = DEL ] && [ -e {d}/fail-del ]; then\n\
         echo \"DEL-REFUSED $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME\" >> {d}/log\n\
         printf '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"DEL refused\"}}'\nexit 1\nfi\n\
         echo \"$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME\" >> {d}/log\ncat > {d}/stdin-$CNI_COMMAND\n\
         [ \"$CNI_COMMAND\" = ADD ] && printf '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"%s\",\"mac\":\"02:aa:bb:cc:dd:ee\",\"sandbox\":\"%s\"}}],\"ips\":[{{\"address\":\"192.0.2.44/24\",\"interface\":0}}]}}' \"$CNI_IFNAME\" \"$CNI_NETNS\"\nexit 0\n"
    );
    let path = dir.join("rec");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    net: PodNetwork,
}

impl Setup {
    /// Pod networking with the flaky recorder, its DEL failing, the claims `records`, failed
    /// teardowns tried again [`EVERY`] after they failed, then twice as long each time.
    fn new(records: BTreeMap<String, ClaimRecord>) -> Setup {
        Setup::with(records, Sandboxes::retrying_every(EVERY))
    }

    fn with(records: BTreeMap<String, ClaimRecord>, sandboxes: Sandboxes) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        flaky_recorder(&bin);
        std::fs::write(bin.join("fail-del"), "").unwrap();
        let api = api(&[("vf-test1", NAD)]);
        let mut net = network(&bin, dir.path(), records, &api);
        net.sandboxes = Arc::new(sandboxes);
        Setup { dir, bin, net }
    }

    fn one_claim() -> Setup {
        Setup::new([("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into())
    }

    fn log(&self) -> Vec<String> {
        lines(&self.bin.join("log"))
    }

    fn cached(&self) -> usize {
        self.net.cni.cached().unwrap().len()
    }

    fn let_del_succeed(&self) {
        std::fs::remove_file(self.bin.join("fail-del")).unwrap();
    }

    fn let_del_fail(&self) {
        std::fs::write(self.bin.join("fail-del"), "").unwrap();
    }

    fn tries(&self) -> Option<u32> {
        self.net.sandboxes.failed_tries("sandbox1")
    }

    /// Waits (up to 10 s) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Setup) -> bool) {
        for _ in 0..400 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{what}: log {:?}, {} cached", self.log(), self.cached());
    }
}

fn refused(log: &[String]) -> usize {
    log.iter().filter(|l| l.starts_with("DEL-REFUSED")).count()
}

fn deleted(log: &[String]) -> usize {
    log.iter().filter(|l| l.starts_with("DEL ")).count()
}

/// Holds the listing after a `Synchronize` (so its cleanup tears down nothing) while it lives; lets
/// it go when dropped, a failed assertion's unwinding included (the listing's thread would hang the
/// runtime's shutdown).
struct ListingHeld(Arc<Sandboxes>);

impl ListingHeld {
    fn new(sandboxes: &Arc<Sandboxes>) -> ListingHeld {
        sandboxes.hold_listing(true);
        ListingHeld(sandboxes.clone())
    }
}

impl Drop for ListingHeld {
    fn drop(&mut self) {
        self.0.hold_listing(false);
    }
}

#[tokio::test]
async fn a_failed_stop_and_remove_teardown_is_retried_while_connected_until_del_succeeds() {
    let s = Setup::one_claim();
    let socket = s.dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_network(&socket, s.net.clone());
    let conn = connect(&runtime).await;
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap();
    assert_eq!(s.cached(), 1);

    // The stop fails, and so does the removal: the runtime only logs them.
    let stop = conn.sandbox_event(event::STOP_POD_SANDBOX, &pod).await;
    assert!(stop.unwrap_err().to_string().contains("DEL refused"));
    let remove = conn.sandbox_event(event::REMOVE_POD_SANDBOX, &pod).await;
    assert!(remove.is_err());
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);

    // Tried again on the same connection (no Synchronize since `connect`), still failing: each try
    // runs DEL, and the cache entry stays for the next.
    s.until("DEL tried again while it fails", |s| refused(&s.log()) >= 4)
        .await;
    assert_eq!(s.cached(), 1);

    // DEL works again: the next try removes the attachment, and that is the last try.
    s.let_del_succeed();
    s.until("the CNI cache entry gone", |s| s.cached() == 0)
        .await;
    s.until("no teardown left to retry", |s| {
        s.net.sandboxes.failed_teardowns().is_empty()
    })
    .await;
    let log = s.log();
    assert_eq!(log[0], "ADD sandbox1 /run/netns/cni-1 net1");
    assert_eq!(log.last().unwrap(), "DEL sandbox1  net1");
    assert_eq!(log.iter().filter(|l| l.starts_with("DEL ")).count(), 1);
    let del: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.bin.join("stdin-DEL")).unwrap()).unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "192.0.2.44/24");
    tokio::time::sleep(EVERY * 6).await;
    assert_eq!(s.log(), log, "nothing tried once the teardown succeeded");

    // The connection is the same one: it still answers.
    let other = pod_in_netns("sandbox2", "pod-uid-2", Path::new("/run/netns/cni-2"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &other)
        .await
        .unwrap();
    drop(conn);
    node.stop().await;
}

/// The failed teardown outlives its connection (the set is the process's, shared by the
/// connections): between connections nothing tries it, though DEL would work; the next connection's
/// retry task tries it (the cleanup after that connection's `Synchronize` held at its listing, so
/// only the task can), failing again, then succeeding; the cleanup, let go, finds nothing left.
#[tokio::test]
async fn a_failed_teardown_outlives_its_connection_untried_between_and_the_next_connections_retry_task_does_it()
 {
    let s = Setup::one_claim();
    let socket = s.dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_network(&socket, s.net.clone());
    let conn = connect(&runtime).await;
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod)
        .await
        .unwrap();
    conn.sandbox_event(event::STOP_POD_SANDBOX, &pod)
        .await
        .unwrap_err();
    // Tried again on this connection (its retry task runs).
    s.until("tried again on the first connection", |s| {
        refused(&s.log()) >= 2
    })
    .await;
    drop(conn);
    node.stop().await;

    // No connection: once a round under way at the end is over (a few milliseconds), nothing is
    // tried, though DEL would work now and the next tries (at most 8 x EVERY apart by now) fall due.
    tokio::time::sleep(EVERY * 4).await;
    let tried = s.log();
    let tries = s.tries().expect("kept after the connection ended");
    assert_eq!(tries as usize, refused(&tried), "each failed try noted");
    s.let_del_succeed();
    tokio::time::sleep(EVERY * 24).await;
    assert_eq!(s.log(), tried, "a retry after the connection ended");
    assert_eq!(s.cached(), 1);
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);
    assert_eq!(s.tries(), Some(tries));

    // The next connection, its Synchronize's cleanup held at its listing: its retry task (its first
    // round EVERY after it starts) tries the sandbox the last one left, failing again...
    s.let_del_fail();
    let held = ListingHeld::new(&s.net.sandboxes);
    let node = start_network(&socket, s.net.clone());
    let conn = connect(&runtime).await;
    s.until("tried by the next connection's retry task", |s| {
        s.tries() == Some(tries + 1)
    })
    .await;
    assert_eq!(refused(&s.log()), refused(&tried) + 1);
    assert_eq!(s.cached(), 1);
    // ... then, DEL working, tearing it down at its next try: one DEL, and nothing left to try.
    s.let_del_succeed();
    s.until("torn down by the next connection's retry task", |s| {
        s.cached() == 0 && s.net.sandboxes.failed_teardowns().is_empty()
    })
    .await;
    let log = s.log();
    assert_eq!(deleted(&log), 1, "{log:?}");
    assert_eq!(log.last().unwrap(), "DEL sandbox1  net1");

    // The cleanup after the Synchronize, let go, finds nothing left of it.
    drop(held);
    tokio::time::sleep(EVERY * 6).await;
    assert_eq!(s.log(), log);
    drop(conn);
    node.stop().await;
}

/// A sandbox whose failed teardown is pending and that the runtime starts again (same id) is not
/// torn down by the retry: its leftovers wait for its own stop.
#[tokio::test]
async fn a_sandbox_started_again_is_not_torn_down_by_the_retry() {
    let s = Setup::one_claim();
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    s.net.run_pod_sandbox(&pod).await.unwrap();
    s.net.stop_pod_sandbox(&pod).await.unwrap_err();
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);

    s.net.run_pod_sandbox(&pod).await.unwrap();
    assert!(s.net.sandboxes.failed_teardowns().is_empty());
    s.let_del_succeed();
    s.net.retry_failed_teardowns().await;
    // And through the retry task, a few rounds.
    let (ended, rx) = tokio::sync::oneshot::channel();
    let retry = tokio::spawn({
        let net = s.net.clone();
        async move { net.retry_teardowns(rx).await }
    });
    tokio::time::sleep(EVERY * 6).await;
    drop(ended);
    tokio::time::timeout(Duration::from_secs(10), retry)
        .await
        .expect("the retry task ends with its connection")
        .unwrap();
    assert_eq!(
        s.log(),
        [
            "ADD sandbox1 /run/netns/cni-1 net1",
            "DEL-REFUSED sandbox1  net1",
            "ADD sandbox1 /run/netns/cni-1 net1"
        ]
    );
    assert_eq!(s.cached(), 1);

    // Its stop tears it down.
    s.net.stop_pod_sandbox(&pod).await.unwrap();
    assert_eq!(s.log().last().unwrap(), "DEL sandbox1  net1");
    assert_eq!(s.cached(), 0);
}

/// The undo of a failed RunPodSandbox whose DEL fails leaves the attachment cached: it is tried
/// again, as a failed stop's.
#[tokio::test]
async fn a_failed_undo_of_a_failed_start_is_retried() {
    // A second claim for the same pod, whose function asks for the same interface name: the start
    // fails after the first function's ADD, and that ADD is undone.
    let mut second = record("pod-uid-1", "ens1f0v1");
    second.claim.uid = "uid-2".into();
    let s = Setup::new(
        [
            ("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0")),
            ("uid-2".to_owned(), second),
        ]
        .into(),
    );
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    let error = s.net.run_pod_sandbox(&pod).await.unwrap_err();
    assert!(error.to_string().contains("net1"), "{error}");
    assert_eq!(
        s.log(),
        [
            "ADD sandbox1 /run/netns/cni-1 net1",
            "DEL-REFUSED sandbox1  net1"
        ]
    );
    assert_eq!(s.cached(), 1);
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);

    // Not due yet: not tried.
    s.net.retry_failed_teardowns().await;
    assert_eq!(refused(&s.log()), 1);
    // Due EVERY after it failed; still failing: kept, and due twice as long after.
    tokio::time::sleep(EVERY).await;
    s.net.retry_failed_teardowns().await;
    assert_eq!(s.cached(), 1);
    assert_eq!(refused(&s.log()), 2);
    assert_eq!(s.tries(), Some(2));
    s.let_del_succeed();
    tokio::time::sleep(EVERY).await;
    s.net.retry_failed_teardowns().await;
    assert_eq!(
        s.cached(),
        1,
        "tried again before its wait, doubled, was over"
    );
    tokio::time::sleep(EVERY).await;
    s.net.retry_failed_teardowns().await;
    assert_eq!(s.cached(), 0);
    assert_eq!(s.log().last().unwrap(), "DEL sandbox1  net1");
    assert!(s.net.sandboxes.failed_teardowns().is_empty());

    // A failed start that left nothing is not retried.
    let ok = Setup::new(
        [
            ("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0")),
            ("uid-2".to_owned(), {
                let mut r = record("pod-uid-1", "ens1f0v1");
                r.claim.uid = "uid-2".into();
                r
            }),
        ]
        .into(),
    );
    ok.let_del_succeed();
    ok.net.run_pod_sandbox(&pod).await.unwrap_err();
    assert_eq!(ok.cached(), 0);
    assert!(ok.net.sandboxes.failed_teardowns().is_empty());
    ok.dir.close().unwrap();
}

/// A DEL that keeps failing, with the plugin's own intervals (paused time): tried 60 s after the
/// stop that failed, then 120 s, 240 s, ... after each try, the wait capped at an hour and the tries
/// going on at that pace (never every 60 s tick of the task); once DEL works, the next try tears it
/// down and is the last.
#[tokio::test(start_paused = true)]
async fn a_del_that_keeps_failing_is_tried_after_1_2_4_times_the_interval_capped_at_an_hour_until_it_succeeds()
 {
    let mut s = Setup::with(
        [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into(),
        Sandboxes::default(),
    );
    // Nothing through the fake API server: no client timeout to fire as the paused clock jumps.
    s.net.claims = None;
    s.net.nads = Arc::new(
        |_, _| -> crate::plugin::api::BoxFuture<'static, Result<ConfList, cni::CniError>> {
            Box::pin(async { ConfList::parse(NAD) })
        },
    );
    let pod = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    s.net.run_pod_sandbox(&pod).await.unwrap();
    // The paused clock stands still while DEL runs (a blocking task).
    let t0 = tokio::time::Instant::now();
    s.net.stop_pod_sandbox(&pod).await.unwrap_err();
    assert_eq!((refused(&s.log()), s.tries()), (1, Some(1)));

    let (ended, rx) = tokio::sync::oneshot::channel();
    let retry = tokio::spawn({
        let net = s.net.clone();
        async move { net.retry_teardowns(rx).await }
    });
    let second = Duration::from_secs(1);
    let mut at = Duration::ZERO;
    let mut tries = 1;
    // 60, 120, 240, 480, 960, 1920 s, then the cap.
    for wait in [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600] {
        at += Duration::from_secs(wait);
        tokio::time::sleep_until(t0 + at - second).await;
        assert_eq!(
            refused(&s.log()),
            tries,
            "tried before {at:?} after the first failure"
        );
        tokio::time::sleep_until(t0 + at + second).await;
        tries += 1;
        assert_eq!(
            refused(&s.log()),
            tries,
            "not tried at {at:?} after the first failure"
        );
        assert_eq!(s.tries(), Some(tries as u32));
    }
    assert_eq!(s.cached(), 1);

    // DEL works again: the next try, an hour later, tears it down; nothing is tried after it.
    s.let_del_succeed();
    at += TEARDOWN_RETRY_MAX;
    tokio::time::sleep_until(t0 + at - second).await;
    assert_eq!(s.cached(), 1);
    tokio::time::sleep_until(t0 + at + second).await;
    assert_eq!(s.cached(), 0);
    assert!(s.net.sandboxes.failed_teardowns().is_empty());
    let log = s.log();
    assert_eq!(log.last().unwrap(), "DEL sandbox1  net1");
    assert_eq!((refused(&log), deleted(&log)), (tries, 1));
    tokio::time::sleep(TEARDOWN_RETRY_MAX * 5).await;
    assert_eq!(s.log(), log);
    drop(ended);
    retry.await.unwrap();
}

/// What `Sandboxes::torn_down` notes of a teardown that keeps failing: the wait before the next try,
/// doubling from the base up to the cap; a WARN on tries 1, 2, 4, 8, ... and on the try whose
/// failures differ from the last's, DEBUG otherwise; the entry due only once its wait is over; a
/// success forgets it.
#[tokio::test(start_paused = true)]
async fn a_failed_teardown_is_due_after_its_doubled_wait_and_loud_on_powers_of_two_or_a_new_failure()
 {
    let sandboxes = Sandboxes::default();
    let same = ["net1: DEL refused".to_owned()];
    let other = ["net1: the IPAM daemon is gone".to_owned()];
    let mut noted = Vec::new();
    for k in 1..=10 {
        let failures = if k == 6 { &other } else { &same };
        let now = tokio::time::Instant::now();
        let n = sandboxes.torn_down("sandbox1", failures);
        let wait = n.next.unwrap();
        assert!(
            sandboxes
                .due_teardowns(now + wait - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(sandboxes.due_teardowns(now + wait), ["sandbox1"]);
        assert_eq!(sandboxes.next_due(), Some(now + wait));
        noted.push((n.tries, wait.as_secs(), n.loud));
        tokio::time::advance(wait).await;
    }
    assert_eq!(
        noted,
        [
            (1, 60, true),
            (2, 120, true),
            (3, 240, false),
            (4, 480, true),
            (5, 960, false),
            // What failed changed (and changes back at the next).
            (6, 1920, true),
            (7, 3600, true),
            (8, 3600, true),
            (9, 3600, false),
            (10, 3600, false),
        ]
    );
    let done = sandboxes.torn_down("sandbox1", &[]);
    assert_eq!(
        done,
        Noted {
            tries: 11,
            next: None,
            loud: false
        }
    );
    assert!(sandboxes.failed_teardowns().is_empty());
    assert_eq!(sandboxes.next_due(), None);
}
