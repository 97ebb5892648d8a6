//! Pod networking on the runtime's pod sandbox events: at `RunPodSandbox`, every network function of
//! a prepared claim reserved for the pod is attached into the sandbox's network namespace, in CNI
//! mode ([`crate::podnet::cni`]) when its `VfConfig` names a NetworkAttachmentDefinition, in direct
//! mode ([`crate::podnet::direct`], [`direct`]) when the claim gives it a `NetworkConfig`, and its
//! `networkData` written to the claim's status (in a task of its own: the answer does not wait for
//! the API server); an error fails the sandbox with a message naming the claim, the device and the
//! field, and undoes what the sandbox got so far. At `StopPodSandbox` and `RemovePodSandbox` the
//! cached CNI attachments of the sandbox get their `DEL` and its direct-mode netdevs go home; after
//! each `Synchronize`, those of sandboxes the runtime no longer has (gone while the plugin was down),
//! listed and torn down off the event loop, so the runtime's other events are answered meanwhile. A
//! state directory that cannot be listed never reads as empty: the teardown (or the cleanup after a
//! `Synchronize`) fails, and is tried again. A teardown that fails (at a stop or removal, in the
//! undo of a failed start, or after a `Synchronize`) is tried again while the plugin is connected
//! ([`PodNetwork::retry_teardowns`]), [`TEARDOWN_RETRY`] after it failed, then after twice as long
//! each time up to [`TEARDOWN_RETRY_MAX`], and on at that pace until it succeeds: the runtime only
//! logs a plugin's failed stop, and nothing else would try again before the next reconnection. The
//! sandboxes whose teardown failed are kept in memory for the life of the process, across
//! reconnections (each connection's task tries them again, on the same schedule); a plugin restart
//! forgets them, and leaves what they hold to the cleanup after its first `Synchronize`. The events of
//! one sandbox never run at once (one lock per sandbox id).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dra_kubelet_plugin::locks::{KeyedGuard, KeyedLocks};

use super::endpoint::code;
use super::plugin::event;
use super::proto::api;
use super::proto::ttrpc::Status;
use crate::plugin::checkpoint::{CheckpointError, ClaimRecord};
use crate::plugin::prepare::ClaimSource;
use crate::podnet::cni::{self, Attachment, Cni, ConfList};
use crate::podnet::direct::Detached;
use crate::podnet::error::NetError;
use crate::podnet::moved::Moved;
use crate::podnet::pods::{PodFunction, of_pod};

pub mod direct;
mod error;

pub use error::SandboxError;

/// The prepared claims now (the checkpoint, read only).
pub type Prepared =
    Arc<dyn Fn() -> Result<BTreeMap<String, ClaimRecord>, CheckpointError> + Send + Sync>;

/// Reads a NetworkAttachmentDefinition (namespace, name).
pub type NadReader = Arc<
    dyn Fn(
            String,
            String,
        ) -> crate::plugin::api::BoxFuture<'static, Result<ConfList, cni::CniError>>
        + Send
        + Sync,
>;

/// What pod networking needs.
#[derive(Clone)]
pub struct PodNetwork {
    /// The CNI runtime (bin dirs, cache).
    pub cni: Cni,
    /// The prepared claims.
    pub prepared: Prepared,
    /// NetworkAttachmentDefinitions.
    pub nads: NadReader,
    /// Where `networkData` is written (none: not written).
    pub claims: Option<Arc<dyn ClaimSource>>,
    /// The driver's name (the status entries' `driver`).
    pub driver: String,
    /// The pool (the node's name).
    pub pool: String,
    /// Direct mode: the host's network namespace and the state of the netdevs moved.
    pub direct: direct::DirectMode,
    /// One lock per pod sandbox id, and the sandboxes started since, shared by the clones.
    pub(crate) sandboxes: Arc<Sandboxes>,
}

impl PodNetwork {
    /// What to tell the operator when the runtime's time for one call (`request_timeout_ms`, from
    /// `Configure`; 0 when the runtime does not say) is shorter than even one CNI plugin call may
    /// take ([`Cni::timeout`]; an attach runs several in turn, each CNI-mode function after the
    /// read of its NetworkAttachmentDefinition, up to [`cni::nad::TIMEOUT`], so this is the least to
    /// ask): the attach runs inside `RunPodSandbox`, and containerd treats a call past its timeout as
    /// fatal (containerd/nri `pkg/adaptation/plugin.go`, `isFatalError`:
    /// `context.DeadlineExceeded`): it drops the plugin and starts the sandbox, and the attach,
    /// which goes on, brings the network functions in late. (The claim's status write of
    /// `networkData` is not waited for: it runs in a task of its own.)
    pub fn request_timeout_warning(&self, request_timeout_ms: i64) -> Option<String> {
        let cni = self.cni.timeout;
        let given = match u64::try_from(request_timeout_ms) {
            Ok(0) | Err(_) => "does not say how long it waits for one call (containerd's \
                               plugin_request_timeout, 2 s by default)"
                .to_owned(),
            Ok(ms) if u128::from(ms) >= cni.as_millis() => return None,
            Ok(ms) => format!("waits {ms} ms for one call (containerd's plugin_request_timeout)"),
        };
        let nad = cni::nad::TIMEOUT.as_secs();
        Some(format!(
            "the NRI runtime {given}, and pod networking attaches a pod's network functions inside \
             RunPodSandbox, for each CNI-mode function reading its NetworkAttachmentDefinition from \
             the API server (allowed {nad}s) and running each of its CNI plugins in turn, each \
             allowed {}s (--cni-timeout): an attach that takes longer makes containerd drop this \
             plugin and start the pod before its network functions are in; set \
             plugin_request_timeout well above --cni-timeout plus {nad}s per function (docs/nri.md)",
            cni.as_secs()
        ))
    }
}

/// How a teardown names the CNI result cache when it could not be listed.
pub const CNI_UNLISTED: &str = "CNI cache";

/// How long after a teardown first failed it is tried again (while the plugin is connected), and how
/// often [`PodNetwork::retry_teardowns`] looks for the ones due: each failed try doubles the wait
/// before the next, up to [`TEARDOWN_RETRY_MAX`].
pub const TEARDOWN_RETRY: Duration = Duration::from_secs(60);

/// The longest wait between two tries of a teardown that keeps failing: it is tried again at this
/// pace for as long as the process lives (never given up: what it holds would leak, an IPAM lease or
/// a netdev under its pod name).
pub const TEARDOWN_RETRY_MAX: Duration = Duration::from_secs(3600);

/// Per pod sandbox id: one lock, so its events never run at once, and when it got its network
/// functions from this plugin (the sequence number of its `RunPodSandbox`, until its stop, removal
/// or teardown), so the cleanup after a `Synchronize`, which runs beside the events, never tears down
/// a sandbox the runtime started after the `Synchronize` named the sandboxes alive, and does tear
/// down one started before it (by an earlier connection: its stop was missed while disconnected).
///
/// Also the sandboxes known gone whose teardown failed (`failed`: stopped or removed, found vanished
/// after a `Synchronize`, or whose start failed with something left), each with its tries so far and
/// when the next is due: [`PodNetwork::retry_teardowns`] tries exactly those again, each when due.
/// Each is entered and left under its lock: a `RunPodSandbox` of the same id takes it out (its
/// leftovers then wait for its own stop), as does a teardown that succeeds, so a retry never tears
/// down a sandbox started again. They live as long as this (one per process, shared by the
/// connections): a connection that ends leaves them to the next one's task.
pub(crate) struct Sandboxes {
    locks: KeyedLocks,
    started: std::sync::Mutex<BTreeMap<String, u64>>,
    starts: std::sync::atomic::AtomicU64,
    failed: std::sync::Mutex<BTreeMap<String, Failed>>,
    /// The wait before the first try again of a failed teardown ([`TEARDOWN_RETRY`]), doubled after
    /// each try that fails, up to `retry_max` ([`TEARDOWN_RETRY_MAX`]).
    retry_every: Duration,
    retry_max: Duration,
    /// The cleanup after a `Synchronize` whose listing of the state directories failed, to be tried
    /// again ([`PodNetwork::retry_teardowns`], on the teardowns' schedule): the latest one only (a
    /// later listing that succeeds finds all an earlier one would).
    cleanup: std::sync::Mutex<Option<PendingCleanup>>,
    /// The cleanups after a `Synchronize` started so far (numbers them).
    cleanups: std::sync::atomic::AtomicU64,
    /// Tests: while true, the listing after a `Synchronize` waits, as on a slow or hung disk.
    #[cfg(test)]
    pub(crate) listing_held: (std::sync::Mutex<bool>, std::sync::Condvar),
}

impl Default for Sandboxes {
    fn default() -> Sandboxes {
        Sandboxes::retrying_every(TEARDOWN_RETRY)
    }
}

/// The point, in the sequence of sandbox starts, where a `Synchronize` named the sandboxes alive:
/// those started later are not its business (`Sandboxes::mark`).
#[derive(Clone, Copy, Debug)]
pub struct SyncMark(u64);

/// A sandbox whose teardown failed, to be tried again (`Sandboxes::failed`).
#[derive(Debug)]
struct Failed {
    /// The tries that failed so far.
    tries: u32,
    /// When the next try is due.
    due: tokio::time::Instant,
    /// What the last try's failures said.
    failures: Vec<String>,
}

/// The cleanup after a `Synchronize` whose listing failed, to be tried again (`Sandboxes::cleanup`).
#[derive(Debug)]
struct PendingCleanup {
    /// Which cleanup (`Sandboxes::cleanups`): a later `Synchronize`'s takes its place.
    number: u64,
    /// The sandboxes its `Synchronize` named alive.
    alive: BTreeSet<String>,
    /// Where its `Synchronize` ended.
    mark: SyncMark,
    /// The tries that failed so far.
    tries: u32,
    /// When the next try is due.
    due: tokio::time::Instant,
    /// What the last try's failures said.
    failures: Vec<String>,
}

/// How a teardown went, as `Sandboxes::torn_down` noted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Noted {
    /// The tries so far, this one included.
    pub(crate) tries: u32,
    /// Failed: the wait until the next try. Done: none.
    pub(crate) next: Option<Duration>,
    /// Whether a failure is worth a WARN: on tries 1, 2, 4, 8, ... (powers of two), or when what
    /// failed is not what failed the try before. Otherwise it is logged at DEBUG.
    pub(crate) loud: bool,
}

impl Sandboxes {
    /// No sandbox yet; a failed teardown tried again `every` after it failed, then after twice as
    /// long each time, up to [`TEARDOWN_RETRY_MAX`] (or `every`, if longer).
    pub(crate) fn retrying_every(every: Duration) -> Sandboxes {
        Sandboxes {
            locks: KeyedLocks::default(),
            started: std::sync::Mutex::default(),
            starts: std::sync::atomic::AtomicU64::default(),
            failed: std::sync::Mutex::default(),
            retry_every: every,
            retry_max: TEARDOWN_RETRY_MAX.max(every),
            cleanup: std::sync::Mutex::default(),
            cleanups: std::sync::atomic::AtomicU64::default(),
            #[cfg(test)]
            listing_held: Default::default(),
        }
    }

    /// Tests: holds (or lets go of) the listing after a `Synchronize`.
    #[cfg(test)]
    pub(crate) fn hold_listing(&self, held: bool) {
        let (lock, changed) = &self.listing_held;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
        changed.notify_all();
    }

    #[cfg(test)]
    fn wait_while_listing_held(&self) {
        let (lock, changed) = &self.listing_held;
        let held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _released = changed
            .wait_while(held, |held| *held)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// Waits for the lock of the sandbox `id`.
    pub(crate) async fn lock(&self, id: &str) -> KeyedGuard<'_> {
        self.locks.lock(id).await
    }

    /// How many sandboxes have a lock entry (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.locks.len()
    }

    fn started(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that the sandbox `id` gets network functions now (its lock held).
    fn start(&self, id: &str) {
        let number = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1);
        self.started().insert(id.to_owned(), number);
    }

    /// Forgets the sandbox `id` (stopped, removed, torn down, or its start failed).
    fn forget(&self, id: &str) {
        self.started().remove(id);
    }

    /// Now, in the sequence of starts: taken on the event loop when a `Synchronize` ends, before
    /// any later event is handled.
    pub fn mark(&self) -> SyncMark {
        SyncMark(self.starts.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Whether the sandbox `id` got network functions after `mark`.
    fn started_after(&self, id: &str, mark: SyncMark) -> bool {
        let started = self.started();
        started.get(id).is_some_and(|&number| number > mark.0)
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failed>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The wait after the failed try number `tries` (from 1): `retry_every`, doubled for each try
    /// before it, at most `retry_max`.
    fn backoff(&self, tries: u32) -> Duration {
        let doublings = 2u32.saturating_pow(tries.saturating_sub(1));
        self.retry_every
            .saturating_mul(doublings)
            .min(self.retry_max)
    }

    /// Notes how the teardown of the sandbox `id`, known gone, went (its lock held), `failures` its
    /// failures (none: done): done, it is forgotten; failed, it is tried again
    /// ([`PodNetwork::retry_teardowns`]) once its wait ([`Sandboxes::backoff`]) is over.
    fn torn_down(&self, id: &str, failures: &[String]) -> Noted {
        let mut failed = self.failed();
        if failures.is_empty() {
            let tries = failed.remove(id).map_or(0, |f| f.tries).saturating_add(1);
            return Noted {
                tries,
                next: None,
                loud: false,
            };
        }
        let (tries, changed) = match failed.get(id) {
            Some(before) => (before.tries.saturating_add(1), before.failures != failures),
            None => (1, true),
        };
        let wait = self.backoff(tries);
        failed.insert(
            id.to_owned(),
            Failed {
                tries,
                due: tokio::time::Instant::now() + wait,
                failures: failures.to_vec(),
            },
        );
        Noted {
            tries,
            next: Some(wait),
            loud: changed || tries.is_power_of_two(),
        }
    }

    /// The sandbox `id` runs again (its lock held): a failed teardown of it is not tried again, and
    /// what it left is for its next stop. Whether one was pending.
    fn started_again(&self, id: &str) -> bool {
        self.failed().remove(id).is_some()
    }

    /// The sandboxes whose teardown failed and is to be tried again.
    #[cfg(test)]
    pub(crate) fn failed_teardowns(&self) -> Vec<String> {
        self.failed().keys().cloned().collect()
    }

    /// The sandboxes whose teardown failed and whose next try is due at `now`.
    fn due_teardowns(&self, now: tokio::time::Instant) -> Vec<String> {
        let failed = self.failed();
        failed
            .iter()
            .filter(|(_, f)| f.due <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether the teardown of the sandbox `id` failed and its next try is due at `now`.
    fn due(&self, id: &str, now: tokio::time::Instant) -> bool {
        self.failed().get(id).is_some_and(|f| f.due <= now)
    }

    /// When the first of the next tries is due, if a teardown or a cleanup after a `Synchronize`
    /// is to be tried again.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        let cleanup = self.cleanup().as_ref().map(|p| p.due);
        self.failed().values().map(|f| f.due).chain(cleanup).min()
    }

    /// How many times the teardown of the sandbox `id` failed, if it is to be tried again.
    #[cfg(test)]
    fn failed_tries(&self, id: &str) -> Option<u32> {
        self.failed().get(id).map(|f| f.tries)
    }

    fn cleanup(&self) -> std::sync::MutexGuard<'_, Option<PendingCleanup>> {
        self.cleanup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of a new cleanup after a `Synchronize`.
    fn next_cleanup(&self) -> u64 {
        self.cleanups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1)
    }

    /// Notes how the listing of the cleanup `number` (after a `Synchronize` that named `alive` at
    /// `mark`) went, `failures` the listings that failed (none: listed): listed, neither it nor an
    /// earlier one is tried again; failed, it is tried again once its wait is over
    /// ([`Sandboxes::backoff`]). `None` when a later `Synchronize`'s cleanup took its place.
    fn cleanup_listed(
        &self,
        number: u64,
        alive: &BTreeSet<String>,
        mark: SyncMark,
        failures: &[String],
    ) -> Option<Noted> {
        let mut pending = self.cleanup();
        if pending.as_ref().is_some_and(|p| p.number > number) {
            return None;
        }
        let before = pending.as_ref().filter(|p| p.number == number);
        if failures.is_empty() {
            let tries = before.map_or(0, |p| p.tries).saturating_add(1);
            *pending = None;
            return Some(Noted {
                tries,
                next: None,
                loud: false,
            });
        }
        let (tries, changed) = match before {
            Some(before) => (before.tries.saturating_add(1), before.failures != failures),
            None => (1, true),
        };
        let wait = self.backoff(tries);
        *pending = Some(PendingCleanup {
            number,
            alive: alive.clone(),
            mark,
            tries,
            due: tokio::time::Instant::now() + wait,
            failures: failures.to_vec(),
        });
        Some(Noted {
            tries,
            next: Some(wait),
            loud: changed || tries.is_power_of_two(),
        })
    }

    /// The cleanup after a `Synchronize` to try again, if one is due at `now`: its number, the
    /// sandboxes its `Synchronize` named alive, and its mark.
    fn due_cleanup(&self, now: tokio::time::Instant) -> Option<(u64, BTreeSet<String>, SyncMark)> {
        let pending = self.cleanup();
        pending
            .as_ref()
            .filter(|p| p.due <= now)
            .map(|p| (p.number, p.alive.clone(), p.mark))
    }

    /// How many times the listing of the pending cleanup after a `Synchronize` failed (tests).
    #[cfg(test)]
    pub(crate) fn cleanup_tries(&self) -> Option<u32> {
        self.cleanup().as_ref().map(|p| p.tries)
    }
}

/// Logs the failed teardown of the sandbox `id` (of the pod `pod`, when known) as `noted`: `what`,
/// with the tries so far and the wait before the next, at WARN when `noted.loud`, at DEBUG otherwise.
fn log_failed(id: &str, pod: Option<&str>, what: &str, noted: Noted, failures: &[String]) {
    let Some(next) = noted.next else { return };
    let tries = noted.tries;
    if noted.loud {
        tracing::warn!(sandbox = %id, pod, tries, ?failures,
            "{what} ({tries} tries so far); trying again in {next:?}");
    } else {
        tracing::debug!(sandbox = %id, pod, tries, ?failures,
            "{what} ({tries} tries so far); trying again in {next:?}");
    }
}

/// What a sandbox's teardown did, per CNI attachment and per direct-mode netdev (file names).
#[derive(Debug, Default)]
pub struct Teardown {
    /// CNI `DEL`s.
    pub cni: Vec<(String, Result<(), cni::CniError>)>,
    /// Direct-mode netdevs moved back (or found gone with their namespace).
    pub direct: Vec<(String, Result<Detached, NetError>)>,
}

impl Teardown {
    /// The failures, one message each.
    pub fn failures(&self) -> Vec<String> {
        let cni = self
            .cni
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")));
        let direct = self
            .direct
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")));
        cni.chain(direct).collect()
    }
}

/// One attachment made for a sandbox, to undo when a later one fails.
enum Made {
    Cni(cni::Entry),
    Direct(Moved),
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("cni", &self.cni)
            .field("driver", &self.driver)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// The NRI events pod networking subscribes to.
pub const EVENTS: &[i32] = &[
    event::RUN_POD_SANDBOX,
    event::STOP_POD_SANDBOX,
    event::REMOVE_POD_SANDBOX,
];

/// NADs through the API server.
pub fn kube_nads(client: kube::Client) -> NadReader {
    Arc::new(move |namespace, name| {
        let client = client.clone();
        Box::pin(async move { cni::nad::read(&client, &namespace, &name).await })
    })
}

/// The sandbox's network namespace, from NRI.
pub fn netns_of(pod: &api::PodSandbox) -> Option<PathBuf> {
    pod.linux
        .as_ref()?
        .namespaces
        .iter()
        .find(|n| n.r#type == "network" && !n.path.is_empty())
        .map(|n| PathBuf::from(&n.path))
}

impl PodNetwork {
    /// Pod networking of the plugin: plugins from `--cni-bin-dir`, the cache under `state_dir`, the
    /// claims from the checkpoint at `checkpoint` (read only), NADs through `client`, the claims'
    /// status through `claims` (the preparer's source: its status writes of one claim do not
    /// interleave with these).
    pub fn for_plugin(
        args: &cni::CniArgs,
        state_dir: &std::path::Path,
        checkpoint: PathBuf,
        client: kube::Client,
        claims: Arc<dyn ClaimSource>,
        driver: &str,
        pool: &str,
    ) -> PodNetwork {
        let mut runtime = Cni::new(&args.cni_bin_dir, state_dir);
        runtime.timeout = std::time::Duration::from_secs(args.cni_timeout.max(1));
        let network = PodNetwork {
            cni: runtime,
            prepared: Arc::new(move || crate::podnet::pods::read_prepared(&checkpoint)),
            nads: kube_nads(client),
            claims: Some(claims),
            driver: driver.to_owned(),
            pool: pool.to_owned(),
            direct: direct::DirectMode::new(state_dir),
            sandboxes: Arc::default(),
        };
        network.remove_stale_temps();
        network
    }

    /// Removes the temp files that atomic writes of the CNI cache and the direct-mode state left
    /// when the plugin was killed during one (`.<entry>.<random>.tmp`, up to 2 MiB each, whose names
    /// hold a sandbox id, so no later write replaces them); logs what it removed, and a failure
    /// (nothing else depends on it). Once, at start: before any event, so no write is under way.
    pub fn remove_stale_temps(&self) {
        let swept = [
            (CNI_UNLISTED, self.cni.remove_stale_temps()),
            (direct::STATE_UNLISTED, self.direct.remove_stale_temps()),
        ];
        for (what, result) in swept {
            match result {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => tracing::info!(
                    ?removed,
                    "temp files of interrupted writes of the {what} removed"
                ),
                Err(error) => {
                    tracing::warn!(%error, "the temp files of interrupted writes of the {what} could not be removed")
                }
            }
        }
    }

    /// Answers a pod sandbox event (`RUN_POD_SANDBOX`, `STOP_POD_SANDBOX`, `REMOVE_POD_SANDBOX`);
    /// an error fails the event with `FAILED_PRECONDITION` and its message; any other event: nothing.
    pub async fn on_event(&self, event: i32, pod: &api::PodSandbox) -> Result<(), Status> {
        let result = match event {
            event::RUN_POD_SANDBOX => self.run_pod_sandbox(pod).await.map(|_| ()),
            event::STOP_POD_SANDBOX | event::REMOVE_POD_SANDBOX => self.stop_pod_sandbox(pod).await,
            _ => return Ok(()),
        };
        result.map_err(|error| Status {
            code: code::FAILED_PRECONDITION,
            message: error.to_string(),
        })
    }

    /// Attaches the pod's network functions (CNI or direct mode); returns the interfaces made (claim
    /// device, name in the pod).
    pub async fn run_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
    ) -> Result<Vec<(String, String)>, SandboxError> {
        let _sandbox = self.sandboxes.lock(&pod.id).await;
        if self.sandboxes.started_again(&pod.id) {
            tracing::info!(sandbox = %pod.id, pod = %pod.name,
                "a sandbox whose teardown failed runs again: not torn down until its next stop");
        }
        let prepared = (self.prepared)()?;
        let functions: Vec<PodFunction> = of_pod(&prepared, &pod.uid)
            .into_iter()
            .filter(|f| {
                let attached = f.network.is_some() || f.direct.is_some();
                if !attached {
                    tracing::debug!(pod = %pod.name, pci = %f.pci, "neither netAttachDefName nor a NetworkConfig: the netdev stays on the host");
                }
                attached
            })
            .collect();
        if functions.is_empty() {
            return Ok(Vec::new());
        }
        // Under the sandbox's lock, before anything is attached (see [`Sandboxes`]).
        self.sandboxes.start(&pod.id);
        let netns = netns_of(pod).ok_or_else(|| {
            self.sandboxes.forget(&pod.id);
            SandboxError::NoNetns {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            }
        })?;
        let mut done: Vec<Made> = Vec::new();
        let mut made = Vec::new();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (k, function) in functions.iter().enumerate() {
            let attached = match &function.direct {
                Some(config) => self
                    .attach_direct(pod, &netns, function, config, &mut used)
                    .await
                    .map(|(moved, data)| (Made::Direct(moved), data)),
                None => self
                    .attach(pod, &netns, function, k, &mut used)
                    .await
                    .map(|(entry, data)| (Made::Cni(entry), data)),
            };
            match attached {
                Ok((attachment, data)) => {
                    let name = match &attachment {
                        Made::Cni(entry) => entry.if_name.clone(),
                        Made::Direct(moved) => moved.saved.pod_name.clone(),
                    };
                    made.push((function.device.clone(), name));
                    self.write_status(function, &data);
                    done.push(attachment);
                }
                Err(error) => {
                    // All or nothing: what this sandbox got so far goes back.
                    let mut failures = self.undo(done).await;
                    self.sandboxes.forget(&pod.id);
                    // What could not be undone (or a failed attach kept) is tried again: the
                    // runtime fails the sandbox, and may never send its stop. So is a sandbox
                    // whose state could not be listed: it may have some.
                    let left = match self.has_state(&pod.id).await {
                        Ok(false) => false,
                        Ok(true) => {
                            if failures.is_empty() {
                                failures.push("state left by the failed start".to_owned());
                            }
                            true
                        }
                        Err(unlisted) => {
                            failures.push(unlisted);
                            true
                        }
                    };
                    if left {
                        let noted = self.sandboxes.torn_down(&pod.id, &failures);
                        log_failed(
                            &pod.id,
                            Some(&pod.name),
                            "a failed sandbox's network functions could not all be undone",
                            noted,
                            &failures,
                        );
                    }
                    return Err(error);
                }
            }
        }
        tracing::info!(pod = %pod.name, interfaces = ?made, "pod network functions attached");
        Ok(made)
    }

    /// Undoes the attachments of a sandbox that failed, last first; returns what failed.
    async fn undo(&self, done: Vec<Made>) -> Vec<String> {
        let mut failures = Vec::new();
        for attachment in done.into_iter().rev() {
            let error = match attachment {
                Made::Cni(entry) => {
                    let cni = self.cni.clone();
                    match tokio::task::spawn_blocking(move || cni.del(&entry)).await {
                        Ok(Err(e)) => Some(e.to_string()),
                        Ok(Ok(())) => None,
                        Err(e) => Some(e.to_string()),
                    }
                }
                Made::Direct(moved) => self
                    .direct
                    .move_back(moved)
                    .await
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(error) = error {
                tracing::warn!(%error, "undoing an attachment of a failed sandbox");
                failures.push(error);
            }
        }
        failures
    }

    async fn attach(
        &self,
        pod: &api::PodSandbox,
        netns: &std::path::Path,
        function: &PodFunction,
        k: usize,
        used: &mut BTreeSet<String>,
    ) -> Result<(cni::Entry, cni::NetworkData), SandboxError> {
        let what = function.describe();
        let (namespace, name) = function.network.clone().unwrap_or_default();
        let if_name = function
            .if_name
            .clone()
            .unwrap_or_else(|| format!("net{}", k + 1));
        if !used.insert(if_name.clone()) {
            return Err(SandboxError::NameUsedTwice {
                claim: what,
                field: "VfConfig.ifName",
                if_name,
            });
        }
        let list = (self.nads)(namespace.clone(), name.clone())
            .await
            .map_err(|source| SandboxError::Nad {
                claim: what.clone(),
                source,
            })?;
        let claim = &function.claim;
        let at = Attachment {
            container_id: pod.id.clone(),
            netns: netns.to_owned(),
            if_name,
            device_id: Some(function.pci.clone()),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                ("K8S_POD_NAME".into(), pod.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.id.clone()),
                ("K8S_POD_UID".into(), pod.uid.clone()),
            ],
            labels: [
                ("claimUid".to_owned(), claim.uid.clone()),
                (
                    "claim".to_owned(),
                    format!("{}/{}", claim.namespace, claim.name),
                ),
                ("device".to_owned(), function.device.clone()),
            ]
            .into(),
        };
        let cni = self.cni.clone();
        let added = tokio::task::spawn_blocking(move || {
            let added = cni.add(&list, &at)?;
            // Its own cache entry, by name (not a listing of the cache, which the cleanup after a
            // Synchronize may be reading).
            let name = cni::cache::file_name(&list.name, &at.container_id, &at.if_name);
            let entry = cni::cache::load(&cni.cache_dir.join(name))?;
            Ok::<_, cni::CniError>((entry, added.network))
        })
        .await
        .map_err(|source| SandboxError::Task {
            claim: what.clone(),
            source,
        })?;
        added.map_err(|source| SandboxError::Cni {
            claim: what,
            network: format!("{namespace}/{name}"),
            source,
        })
    }

    /// Writes `data` as the `networkData` of `function` to its claim's status, in a task of its own:
    /// the write (a read and a server-side apply of the claim, each allowed 20 s) never holds up the
    /// `RunPodSandbox` answer, which the runtime waits for only `plugin_request_timeout` (2 s by
    /// default in containerd, which drops a plugin that runs past it). The claims source orders
    /// the status writes of one claim (the preparer's and these: a lock per claim), so neither undoes
    /// the other's entries. A failure is logged, as the write is not the sandbox's: its functions
    /// are in.
    fn write_status(&self, function: &PodFunction, data: &cni::NetworkData) {
        let Some(claims) = self.claims.clone() else {
            return;
        };
        if function.device.is_empty() {
            return;
        }
        let (claim, device, data) = (
            function.claim.clone(),
            function.device.clone(),
            data.clone(),
        );
        let (driver, pool) = (self.driver.clone(), self.pool.clone());
        tokio::spawn(async move {
            let written = crate::podnet::status::write_network_data(
                claims.as_ref(),
                &claim,
                &driver,
                &pool,
                &device,
                &data,
            );
            if let Err(error) = written.await {
                tracing::warn!(claim = %claim.uid, %device, %error, "networkData not written to the claim's status");
            }
        });
    }

    /// `DEL` for every cached attachment of the sandbox, and its direct-mode netdevs home. One that
    /// fails is also tried again ([`PodNetwork::retry_teardowns`]) until it succeeds, the sandbox
    /// runs again, or its removal's teardown succeeds.
    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), SandboxError> {
        let _sandbox = self.sandboxes.lock(&pod.id).await;
        let failures = self.teardown_locked(&pod.id).await.failures();
        self.sandboxes.forget(&pod.id);
        let noted = self.sandboxes.torn_down(&pod.id, &failures);
        match failures.is_empty() {
            true => Ok(()),
            false => {
                log_failed(
                    &pod.id,
                    Some(&pod.name),
                    "pod network teardown failed",
                    noted,
                    &failures,
                );
                Err(SandboxError::Teardown { failures })
            }
        }
    }

    /// Whether anything of the sandbox `id` is recorded: a CNI cache entry or a direct-mode state
    /// file (unreadable ones named after it included). A listing that failed (or did not run) is an
    /// error, never "nothing": something may be left, which the retry finds out.
    async fn has_state(&self, id: &str) -> Result<bool, String> {
        let net = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let (named, prefix) = (format!("-{id}-"), format!("{id}-"));
            let cni = net
                .cni
                .cached()
                .map_err(|e| format!("{CNI_UNLISTED}: {e}"))?
                .into_iter()
                .any(|(name, entry)| match entry {
                    Ok(entry) => entry.container_id == id,
                    Err(_) => name.contains(&named),
                });
            let direct = || -> Result<bool, String> {
                let moved = net
                    .direct
                    .moved()
                    .map_err(|e| format!("{}: {e}", direct::STATE_UNLISTED))?;
                Ok(moved.into_iter().any(|(name, entry)| match entry {
                    Ok(moved) => moved.sandbox == id,
                    Err(_) => name.starts_with(&prefix),
                }))
            };
            Ok(cni || direct()?)
        })
        .await
        .unwrap_or_else(|e| Err(format!("listing the state of the sandbox: {e}")))
    }

    /// Tears down what the sandbox `id` got, under its lock: `DEL` for every cached CNI attachment,
    /// every direct-mode netdev moved back (a netdev gone with its namespace is reported and
    /// forgotten).
    pub async fn teardown(&self, id: &str) -> Teardown {
        let _sandbox = self.sandboxes.lock(id).await;
        self.teardown_locked(id).await
    }

    /// [`PodNetwork::teardown`] of a sandbox found vanished, unless it got network functions after
    /// `mark` (then `None`): a sandbox the runtime started after its `Synchronize`.
    async fn teardown_vanished(&self, id: &str, mark: SyncMark) -> Option<Teardown> {
        let _sandbox = self.sandboxes.lock(id).await;
        if self.sandboxes.started_after(id, mark) {
            return None;
        }
        let done = self.teardown_locked(id).await;
        self.sandboxes.forget(id);
        // Its failures are logged by the caller, at every `Synchronize`.
        self.sandboxes.torn_down(id, &done.failures());
        Some(done)
    }

    /// The teardown of the sandbox `id`, its lock held. A state directory that cannot be listed
    /// is a failure of it ([`CNI_UNLISTED`], [`direct::STATE_UNLISTED`]), tried again like any.
    async fn teardown_locked(&self, id: &str) -> Teardown {
        let cni = self.cni.clone();
        let sandbox = id.to_owned();
        let cni = match tokio::task::spawn_blocking(move || cni.del_sandbox(&sandbox)).await {
            Ok(Ok(done)) => done,
            Ok(Err(unlisted)) => vec![(CNI_UNLISTED.to_owned(), Err(unlisted))],
            Err(e) => vec![(
                id.to_owned(),
                Err(cni::CniError::new(cni::CniErrorKind::Exec, e.to_string())),
            )],
        };
        let direct = self.direct.move_back_sandbox(id).await;
        Teardown { cni, direct }
    }

    /// After a `Synchronize` that named the sandboxes `alive` at `mark` (`Sandboxes::mark`, taken
    /// on the event loop), beside the event loop: lists the sandboxes that vanished
    /// ([`PodNetwork::vanished`], a blocking read of the state directory, on a blocking thread) and
    /// tears them down ([`PodNetwork::del_vanished`]). A state directory that cannot be listed
    /// never reads as "nothing vanished": the cleanup is tried again
    /// ([`PodNetwork::retry_teardowns`], on the schedule of a failed teardown) until a listing
    /// succeeds or a later `Synchronize`'s cleanup takes its place.
    pub async fn clean_up_vanished(&self, alive: BTreeSet<String>, mark: SyncMark) {
        let number = self.sandboxes.next_cleanup();
        self.clean_up(number, alive, mark).await;
    }

    /// The cleanup `number` after a `Synchronize` (its first try, or a try again): lists, tears
    /// down what it found, and notes (and logs) a listing that failed, for a try again.
    async fn clean_up(&self, number: u64, alive: BTreeSet<String>, mark: SyncMark) {
        let net = self.clone();
        let listed = alive.clone();
        let listing = move || {
            #[cfg(test)]
            net.sandboxes.wait_while_listing_held();
            net.vanished(&listed)
        };
        let (vanished, failures) = match tokio::task::spawn_blocking(listing).await {
            Ok(found) => found,
            Err(error) => (
                BTreeSet::new(),
                vec![format!("listing the state directories: {error}")],
            ),
        };
        // What was found goes now, even when another listing failed.
        self.del_vanished(vanished, mark).await;
        let Some(noted) = self
            .sandboxes
            .cleanup_listed(number, &alive, mark, &failures)
        else {
            return;
        };
        let tries = noted.tries;
        match noted.next {
            None if tries > 1 => tracing::info!(
                tries,
                "the state directories listed on retry: the sandboxes gone while the plugin was \
                 disconnected are torn down"
            ),
            None => {}
            Some(next) if noted.loud => tracing::warn!(
                ?failures,
                tries,
                "the state directories could not be listed after a Synchronize, so the sandboxes \
                 gone while the plugin was disconnected are not torn down yet ({tries} tries so \
                 far); trying again in {next:?}"
            ),
            Some(next) => tracing::debug!(
                ?failures,
                tries,
                "the state directories could not be listed after a Synchronize ({tries} tries so \
                 far); trying again in {next:?}"
            ),
        }
    }

    /// The sandboxes with CNI attachments or direct-mode netdevs that are not in `alive` (blocking:
    /// reads the state directory); unreadable entries are logged and kept. A sandbox started after
    /// the `Synchronize` may be among them: [`PodNetwork::del_vanished`] skips it. Also the
    /// listings that failed, one message each naming the directory (what such a directory holds is
    /// not known: none of it is among the sandboxes).
    pub fn vanished(&self, alive: &BTreeSet<String>) -> (BTreeSet<String>, Vec<String>) {
        let mut out = BTreeSet::new();
        let mut unlisted = Vec::new();
        let cached = self.cni.cached().unwrap_or_else(|error| {
            unlisted.push(format!("{CNI_UNLISTED}: {error}"));
            Vec::new()
        });
        for (name, entry) in cached {
            match entry {
                Ok(entry) if !alive.contains(&entry.container_id) => {
                    out.insert(entry.container_id);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(attachment = %name, %error, "unreadable CNI cache entry kept")
                }
            }
        }
        let moved = self.direct.moved().unwrap_or_else(|error| {
            unlisted.push(format!("{}: {error}", direct::STATE_UNLISTED));
            Vec::new()
        });
        for (name, entry) in moved {
            match entry {
                Ok(moved) if !alive.contains(&moved.sandbox) => {
                    out.insert(moved.sandbox);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(netdev = %name, %error, "unreadable direct-mode state kept")
                }
            }
        }
        (out, unlisted)
    }

    /// Tears down the sandboxes [`PodNetwork::vanished`] found, each under its lock (a stop event of
    /// the same sandbox meanwhile finds nothing left, or leaves nothing), except those that got
    /// network functions after `mark` (started after the `Synchronize`). One started before it,
    /// by this plugin over an earlier connection, is torn down: its stop was missed.
    pub async fn del_vanished(&self, sandboxes: BTreeSet<String>, mark: SyncMark) {
        for id in sandboxes {
            let Some(done) = self.teardown_vanished(&id, mark).await else {
                tracing::debug!(sandbox = %id, "started after the Synchronize: not torn down");
                continue;
            };
            for (name, result) in done.cni {
                match result {
                    Ok(()) => {
                        tracing::info!(attachment = %name, "CNI DEL for a sandbox gone while the plugin was down")
                    }
                    Err(error) => {
                        tracing::warn!(attachment = %name, %error, "CNI DEL of a vanished sandbox failed")
                    }
                }
            }
            for (name, result) in done.direct {
                if let Err(error) = result {
                    tracing::warn!(netdev = %name, %error, "a vanished sandbox's netdev could not be moved back");
                }
            }
        }
    }

    /// Until `ended` is dropped or sent (its connection ended): tries again the teardowns that
    /// failed (and the cleanup after a `Synchronize` whose listing failed), each when due ([`PodNetwork::retry_failed_teardowns`]; [`TEARDOWN_RETRY`] after it
    /// failed, then twice as long after each try that fails, up to [`TEARDOWN_RETRY_MAX`]). It wakes
    /// when the first is due, and at least every [`TEARDOWN_RETRY`] (tests:
    /// `Sandboxes::retrying_every`) for those failed since, the first time one period from now (the
    /// cleanup after the connection's `Synchronize` goes first). The failed teardowns outlive the
    /// connection: the next connection's task tries them. A round under way when `ended` comes
    /// finishes first: a teardown is never cut off between its `DEL` and the cache entry's removal,
    /// or while its lock is held.
    pub async fn retry_teardowns(&self, mut ended: tokio::sync::oneshot::Receiver<()>) {
        let every = self.sandboxes.retry_every;
        let mut wake = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                // Ended first: no round starts once the connection is over.
                biased;
                _ = &mut ended => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.retry_failed_teardowns().await;
            // A teardown failed from now on is due `every` from now at the soonest: waking every
            // `every` finds it in time.
            let now = tokio::time::Instant::now();
            wake = self
                .sandboxes
                .next_due()
                .map_or(now + every, |due| due.clamp(now, now + every));
        }
    }

    /// One round of [`PodNetwork::retry_teardowns`]: the cleanup after a `Synchronize` whose listing
    /// failed, when due ([`PodNetwork::clean_up_vanished`]); then tears down again, each under its
    /// lock, every sandbox whose teardown failed and whose next try is due, unless it ran again, was
    /// torn down or tried since (by a stop, a `Synchronize`'s cleanup, or the round of an earlier
    /// connection's task). One that succeeds is forgotten; one that fails again is kept, its next try after twice
    /// the wait, logged at WARN on tries 1, 2, 4, 8, ... or when what failed changed, at DEBUG
    /// otherwise.
    pub async fn retry_failed_teardowns(&self) {
        let now = tokio::time::Instant::now();
        if let Some((number, alive, mark)) = self.sandboxes.due_cleanup(now) {
            self.clean_up(number, alive, mark).await;
        }
        for id in self.sandboxes.due_teardowns(now) {
            let _sandbox = self.sandboxes.lock(&id).await;
            // Under its lock: a RunPodSandbox or a teardown meanwhile took it out or put it off.
            if !self.sandboxes.due(&id, now) {
                continue;
            }
            if self.sandboxes.started().contains_key(&id) {
                // Alive again (cannot happen: its start took it out): never torn down here.
                self.sandboxes.started_again(&id);
                continue;
            }
            let done = self.teardown_locked(&id).await;
            let failures = done.failures();
            let noted = self.sandboxes.torn_down(&id, &failures);
            if failures.is_empty() {
                tracing::info!(sandbox = %id, tries = noted.tries, attachments = done.cni.len(),
                    netdevs = done.direct.len(), "a failed pod network teardown done on retry");
            } else {
                log_failed(
                    &id,
                    None,
                    "pod network teardown failed again",
                    noted,
                    &failures,
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests_direct;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_retry;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_status;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_sync;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_unlisted;
