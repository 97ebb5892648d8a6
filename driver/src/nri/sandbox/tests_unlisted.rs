//! A state directory that cannot be listed (EIO, EMFILE, EACCES; here ENOTDIR: the directory
//! replaced by a file) never reads as "nothing there": a stop fails and is tried again (the CNI
//! `DEL` runs once the cache can be read), a failed start whose state cannot be listed is kept for
//! a try again, and the cleanup after a `Synchronize` is tried again until its listing succeeds.
//! The temp files of interrupted writes are swept when pod networking starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::tests::{api, lines, network, record, recorder};
use super::*;
use crate::nri::fake_runtime::pod_in_netns;

/// The tests' wait before a failed teardown is tried again the first time.
const EVERY: Duration = Duration::from_millis(50);

const NAD: &str = r#"{"cniVersion": "1.0.0", "name": "vf-test1", "type": "rec"}"#;

struct Setup {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    net: PodNetwork,
}

impl Setup {
    /// The recorder CNI plugin, the claim of `pod-uid-1` with a CNI-mode function, the NADs
    /// `nads`; failed teardowns tried again after [`EVERY`].
    fn new(nads: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        recorder(&bin);
        let records = [("uid-1".to_owned(), record("pod-uid-1", "ens1f0v0"))].into();
        let mut net = network(&bin, dir.path(), records, &api(nads));
        net.sandboxes = Arc::new(Sandboxes::retrying_every(EVERY));
        Setup {
            _dir: dir,
            bin,
            net,
        }
    }

    fn dels(&self) -> usize {
        let log = lines(&self.bin.join("log"));
        log.iter().filter(|l| l.starts_with("DEL")).count()
    }

    /// Waits until every teardown and cleanup to try again is due, then runs a round of tries.
    async fn retry_round(&self) {
        tokio::time::sleep(EVERY * 3).await;
        self.net.retry_failed_teardowns().await;
    }
}

/// `dir` replaced by a file (listing it fails with ENOTDIR), until [`Hidden::restore`].
struct Hidden {
    dir: PathBuf,
    away: PathBuf,
}

impl Hidden {
    fn new(dir: &Path) -> Hidden {
        let away = dir.with_extension("away");
        if dir.exists() {
            std::fs::rename(dir, &away).unwrap();
        } else {
            std::fs::create_dir_all(&away).unwrap();
        }
        std::fs::write(dir, "").unwrap();
        Hidden {
            dir: dir.to_owned(),
            away,
        }
    }

    fn restore(self) {
        std::fs::remove_file(&self.dir).unwrap();
        std::fs::rename(&self.away, &self.dir).unwrap();
    }
}

fn pod() -> api::PodSandbox {
    pod_in_netns("sandbox1", "pod-uid-1", Path::new("/run/netns/cni-1"))
}

/// Before: `list_with` read an unreadable cache as empty, the stop answered OK and forgot the
/// sandbox, its DEL never ran (the IPAM lease leaked, the VF kept the pod's VLAN and MAC).
#[tokio::test]
async fn a_stop_whose_cni_cache_cannot_be_listed_fails_and_its_del_runs_on_retry() {
    let s = Setup::new(&[("vf-test1", NAD)]);
    s.net.run_pod_sandbox(&pod()).await.unwrap();
    assert_eq!(s.net.cni.cached().unwrap().len(), 1);

    let hidden = Hidden::new(&s.net.cni.cache_dir);
    let error = s.net.stop_pod_sandbox(&pod()).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{CNI_UNLISTED}: listing {}",
            s.net.cni.cache_dir.display()
        )),
        "{message}"
    );
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);
    assert_eq!(s.dels(), 0);
    // Still unreadable at the first try again: kept.
    s.retry_round().await;
    assert_eq!(s.net.sandboxes.failed_tries("sandbox1"), Some(2));
    assert_eq!(s.dels(), 0);

    hidden.restore();
    s.retry_round().await;
    assert_eq!(s.dels(), 1, "{:?}", lines(&s.bin.join("log")));
    assert!(s.net.cni.cached().unwrap().is_empty());
    assert!(s.net.sandboxes.failed_teardowns().is_empty());
}

/// Before: an unreadable direct-mode state directory read as "no netdev moved": the netdevs stayed
/// in the pod, or on the host under their pod names.
#[tokio::test]
async fn a_stop_whose_direct_mode_state_cannot_be_listed_fails_and_is_tried_again() {
    let s = Setup::new(&[("vf-test1", NAD)]);
    let hidden = Hidden::new(&s.net.direct.state_dir);
    let error = s.net.stop_pod_sandbox(&pod()).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: listing {}",
            direct::STATE_UNLISTED,
            s.net.direct.state_dir.display()
        )),
        "{message}"
    );
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);
    hidden.restore();
    s.retry_round().await;
    assert!(s.net.sandboxes.failed_teardowns().is_empty());
}

/// A start that fails (here its NAD does not exist) is kept for a teardown when its state cannot
/// be listed: it may have left some, and the runtime may never send its stop.
#[tokio::test]
async fn a_failed_start_whose_state_cannot_be_listed_is_kept_for_a_teardown() {
    let s = Setup::new(&[]);
    assert_eq!(s.net.has_state("sandbox1").await, Ok(false));
    let hidden = Hidden::new(&s.net.direct.state_dir);
    let unlisted = s.net.has_state("sandbox1").await.unwrap_err();
    assert!(unlisted.starts_with(direct::STATE_UNLISTED), "{unlisted}");
    let error = s.net.run_pod_sandbox(&pod()).await.unwrap_err();
    assert!(matches!(error, SandboxError::Nad { .. }), "{error}");
    assert_eq!(s.net.sandboxes.failed_teardowns(), ["sandbox1"]);
    hidden.restore();
    s.retry_round().await;
    assert!(s.net.sandboxes.failed_teardowns().is_empty());
    assert_eq!(s.dels(), 0, "nothing was attached");
}

/// Before: the cleanup after a `Synchronize` read an unreadable cache as "nothing vanished" and
/// was not tried again: the sandboxes gone while the plugin was down kept their attachments until
/// the next reconnection. Now it is tried again (a later `Synchronize`'s cleanup takes its place).
#[tokio::test]
async fn the_cleanup_after_a_synchronize_is_tried_again_until_its_listing_succeeds() {
    let s = Setup::new(&[("vf-test1", NAD)]);
    s.net.run_pod_sandbox(&pod()).await.unwrap();
    // The plugin restarts (the sandbox not started by this process), the sandbox is gone.
    let net = PodNetwork {
        sandboxes: Arc::new(Sandboxes::retrying_every(EVERY)),
        ..s.net.clone()
    };
    let hidden = Hidden::new(&net.cni.cache_dir);
    let (found, unlisted) = net.vanished(&BTreeSet::new());
    assert!(found.is_empty());
    assert_eq!(unlisted.len(), 1, "{unlisted:?}");
    assert!(unlisted[0].starts_with(CNI_UNLISTED), "{unlisted:?}");

    net.clean_up_vanished(BTreeSet::new(), net.sandboxes.mark())
        .await;
    assert_eq!(net.sandboxes.cleanup_tries(), Some(1));
    assert!(net.sandboxes.next_due().is_some());
    // Not readable yet at the first try again.
    tokio::time::sleep(EVERY * 3).await;
    net.retry_failed_teardowns().await;
    assert_eq!(net.sandboxes.cleanup_tries(), Some(2));
    assert_eq!(s.dels(), 0);

    hidden.restore();
    tokio::time::sleep(EVERY * 5).await;
    net.retry_failed_teardowns().await;
    assert_eq!(s.dels(), 1, "{:?}", lines(&s.bin.join("log")));
    assert_eq!(net.sandboxes.cleanup_tries(), None);
    assert!(net.cni.cached().unwrap().is_empty());

    // A later Synchronize's cleanup that lists takes the place of a pending one.
    net.run_pod_sandbox(&pod()).await.unwrap();
    let hidden = Hidden::new(&net.cni.cache_dir);
    net.clean_up_vanished(BTreeSet::new(), net.sandboxes.mark())
        .await;
    assert_eq!(net.sandboxes.cleanup_tries(), Some(1));
    hidden.restore();
    net.clean_up_vanished(BTreeSet::new(), net.sandboxes.mark())
        .await;
    assert_eq!(s.dels(), 2);
    assert_eq!(net.sandboxes.cleanup_tries(), None);
    assert_eq!(net.sandboxes.next_due(), None);
}

/// A plugin killed during an atomic write of the CNI cache or the direct-mode state leaves its
/// temp file (its name holds the sandbox id, so nothing replaces it): pod networking sweeps them at
/// start, and only them.
#[tokio::test]
async fn pod_networking_sweeps_the_temp_files_of_interrupted_writes_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cni/results");
    let state = dir.path().join("direct");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let stale = [
        cache.join(".vf-test1-sandbox1-net1.0123456789abcdef.tmp"),
        state.join(".sandbox1-net1.fedcba9876543210.tmp"),
    ];
    let kept = [
        cache.join("vf-test1-sandbox2-net1"),
        state.join("sandbox2-net1"),
        state.join(".sandbox2-net1.tmp"),
        state.join("notes"),
    ];
    for path in stale.iter().chain(&kept) {
        std::fs::write(path, "{").unwrap();
    }
    let api = api(&[]);
    let client = crate::fake_api::FakeApi::mock_client(api, &crate::api::call_timeout_layer());
    let args = crate::podnet::cni::CniArgs {
        cni_bin_dir: dir.path().join("bin"),
        cni_timeout: 30,
    };
    let claims = Arc::new(crate::plugin::prepare::KubeClaims::new(client.clone()));
    let _net = PodNetwork::for_plugin(
        &args,
        dir.path(),
        dir.path().join("checkpoint"),
        client,
        claims,
        "hal.dra.dev",
        "node-1",
    );
    for path in &stale {
        assert!(!path.exists(), "{} swept", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} kept", path.display());
    }
}
