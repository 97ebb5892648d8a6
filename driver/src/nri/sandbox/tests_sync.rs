//! The cleanup after `Synchronize` runs beside the event loop: while the listing of the state
//! directory is held (as a slow or hung disk would hold it), the runtime's other requests are
//! answered; once it goes on, the sandbox gone while the plugin was down gets its DEL, and a sandbox
//! started after the `Synchronize` does not.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::tests::{api, connect, lines, network, record, recorder, start_network};
use super::*;
use crate::nri::fake_runtime::{FakeRuntime, pod_in_netns};

/// Lets the held listing go after 60 s if the test has not (were the events waiting for the
/// listing, the test then fails on `fired` instead of hanging), and on drop.
struct Watchdog {
    sandboxes: Arc<Sandboxes>,
    fired: Arc<AtomicBool>,
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(sandboxes: &Arc<Sandboxes>) -> Watchdog {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sandboxes, fired) = (sandboxes.clone(), fired.clone());
            std::thread::spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(Duration::from_secs(60))
                {
                    fired.store(true, Ordering::SeqCst);
                    sandboxes.hold_listing(false);
                }
            })
        };
        Watchdog {
            sandboxes: sandboxes.clone(),
            fired,
            done: Some(done),
            thread: Some(thread),
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.sandboxes.hold_listing(false);
    }
}

#[tokio::test]
async fn a_blocked_listing_after_synchronize_leaves_the_events_answered_and_finds_the_vanished_later()
 {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let nad = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;
    let api = api(&[("vf-test1", nad)]);
    // Two claims of the same function for two pods (one at a time): the first pod's sandbox
    // vanishes while the plugin is down, the second starts after the next Synchronize.
    let mut second = record("pod-uid-2", "ens1f0v0");
    second.claim.uid = "uid-2".into();
    let records: BTreeMap<String, ClaimRecord> = [
        ("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0")),
        ("uid-2".to_owned(), second),
    ]
    .into();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start_network(&socket, network(&bin, dir.path(), records.clone(), &api));
    let conn = connect(&runtime).await;
    let pod1 = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod1)
        .await
        .unwrap();
    node.stop().await;
    drop(conn);

    // The next listing is held until the test lets it go.
    let net = network(&bin, dir.path(), records, &api);
    net.sandboxes.hold_listing(true);
    let watchdog = Watchdog::new(&net.sandboxes);
    let node = start_network(&socket, net.clone());
    // The Synchronize is answered, and so is the next event, while the listing is blocked.
    let conn = connect(&runtime).await;
    // No sandbox started between the Synchronize and here: the Synchronize's own mark.
    let mark = net.sandboxes.mark();
    let pod2 = pod_in_netns("sandbox2", "pod-uid-2", Path::new("/run/netns/cni-2"));
    conn.sandbox_event(event::RUN_POD_SANDBOX, &pod2)
        .await
        .unwrap();
    assert!(!watchdog.fired(), "the events waited for the listing");
    assert_eq!(
        lines(&bin.join("log")),
        [
            "ADD sandbox1 /run/netns/cni-1 net1",
            "ADD sandbox2 /run/netns/cni-2 net1"
        ],
        "no DEL while the listing is blocked"
    );

    // The listing goes on: the vanished sandbox gets its DEL, the one started since does not.
    net.sandboxes.hold_listing(false);
    let mut log = Vec::new();
    for _ in 0..400 {
        log = lines(&bin.join("log"));
        if log.len() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        log,
        [
            "ADD sandbox1 /run/netns/cni-1 net1",
            "ADD sandbox2 /run/netns/cni-2 net1",
            "DEL sandbox1  net1"
        ]
    );
    assert!(!watchdog.fired());
    // Found vanished again (not in a Synchronize's list), a sandbox started since is still kept.
    net.del_vanished(["sandbox2".to_owned()].into(), mark).await;
    assert_eq!(lines(&bin.join("log")).len(), 3);
    conn.sandbox_event(event::STOP_POD_SANDBOX, &pod2)
        .await
        .unwrap();
    assert_eq!(lines(&bin.join("log"))[3], "DEL sandbox2  net1");
    drop(conn);
    node.stop().await;
    drop(watchdog);
}

/// The NRI connection drops while the plugin runs; the runtime removes a sandbox meanwhile (its
/// stop never reaches the plugin). The next `Synchronize` does not name it: though this plugin
/// started it, it started before that `Synchronize`, so it gets its DEL.
#[tokio::test]
async fn a_sandbox_started_before_a_reconnection_and_gone_meanwhile_gets_its_del() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    recorder(&bin);
    let nad = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;
    let api = api(&[("vf-test1", nad)]);
    let records: BTreeMap<String, ClaimRecord> =
        [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
    let net = network(&bin, dir.path(), records, &api);
    let pod1 = pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"));
    net.run_pod_sandbox(&pod1).await.unwrap();
    // The Synchronize of the new connection names no sandbox.
    let mark = net.sandboxes.mark();
    net.clean_up_vanished(BTreeSet::new(), mark).await;
    assert_eq!(
        lines(&bin.join("log")),
        ["ADD sandbox1 /run/netns/cni-1 net1", "DEL sandbox1  net1"]
    );
    assert!(net.cni.cached().unwrap().is_empty());
    assert!(!net.sandboxes.started_after("sandbox1", mark));
}
