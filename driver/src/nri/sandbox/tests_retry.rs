//! A teardown that fails is tried again while the plugin stays connected, without waiting for a
//! reconnection's `Synchronize` (containerd only logs a plugin's failed StopPodSandbox, and the
//! kubelet never sends it again): after a failed stop and removal, the undo of a failed start, until
//! it succeeds; never for a sandbox started again; not after the connection ended.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{api, connect, lines, network, record, start_network};
use super::*;
use crate::nri::fake_runtime::{FakeRuntime, pod_in_netns};

/// How often the tests' failed teardowns are tried again.
const EVERY: Duration = Duration::from_millis(50);

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
    /// teardowns tried again every [`EVERY`].
    fn new(records: BTreeMap<String, ClaimRecord>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        flaky_recorder(&bin);
        std::fs::write(bin.join("fail-del"), "").unwrap();
        let nad = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;
        let api = api(&[("vf-test1", nad)]);
        let mut net = network(&bin, dir.path(), records, &api);
        net.sandboxes = Arc::new(Sandboxes::retrying_every(EVERY));
        Setup { dir, bin, net }
    }

    fn one_claim() -> Setup {
        Setup::new([("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into())
    }

    fn log(&self) -> Vec<String> {
        lines(&self.bin.join("log"))
    }

    fn cached(&self) -> usize {
        self.net.cni.cached().len()
    }

    fn let_del_succeed(&self) {
        std::fs::remove_file(self.bin.join("fail-del")).unwrap();
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

/// The retry ends with the connection; the next connection's `Synchronize` finds the sandbox gone,
/// and its cleanup does the teardown (and tries it again on failure, as a stop's).
#[tokio::test]
async fn the_retry_ends_with_the_connection_and_the_next_synchronize_takes_over() {
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
    drop(conn);
    node.stop().await;

    // No connection: nothing tried, though DEL would work now (once a round under way at the end,
    // a few milliseconds, is over).
    tokio::time::sleep(EVERY * 10).await;
    let tried = s.log();
    s.let_del_succeed();
    tokio::time::sleep(EVERY * 8).await;
    assert_eq!(s.log(), tried, "a retry after the connection ended");
    assert_eq!(s.cached(), 1);

    // Failing again at the next connection's cleanup: tried again on that connection.
    std::fs::write(s.bin.join("fail-del"), "").unwrap();
    let node = start_network(&socket, s.net.clone());
    let conn = connect(&runtime).await;
    s.until("the cleanup after Synchronize tried", |s| {
        refused(&s.log()) > refused(&tried)
    })
    .await;
    s.let_del_succeed();
    s.until("the CNI cache entry gone", |s| s.cached() == 0)
        .await;
    assert_eq!(s.log().last().unwrap(), "DEL sandbox1  net1");
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

    // Still failing: kept.
    s.net.retry_failed_teardowns().await;
    assert_eq!(s.cached(), 1);
    assert_eq!(refused(&s.log()), 2);
    s.let_del_succeed();
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
