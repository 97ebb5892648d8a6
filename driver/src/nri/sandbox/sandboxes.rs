//! The bookkeeping of pod sandboxes for [`super::PodNetwork`]: one lock per sandbox id, when each got
//! its network functions (so the cleanup after a `Synchronize` tears down only those it may), the
//! teardowns that failed and when each is tried again ([`TEARDOWN_RETRY`] doubling up to
//! [`TEARDOWN_RETRY_MAX`]), and the cleanup after a `Synchronize` whose listing failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dra_kubelet_plugin::locks::{KeyedGuard, KeyedLocks};

/// How long after a teardown first failed it is tried again (while the plugin is connected), and how
/// often [`super::PodNetwork::retry_teardowns`] looks for the ones due: each failed try doubles the wait
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
/// when the next is due: [`super::PodNetwork::retry_teardowns`] tries exactly those again, each when due.
/// Each is entered and left under its lock: a `RunPodSandbox` of the same id takes it out (its
/// leftovers then wait for its own stop), as does a teardown that succeeds, so a retry never tears
/// down a sandbox started again. They live as long as this (one per process, shared by the
/// connections): a connection that ends leaves them to the next one's task.
pub(crate) struct Sandboxes {
    pub(super) locks: KeyedLocks,
    pub(super) started: std::sync::Mutex<BTreeMap<String, u64>>,
    pub(super) starts: std::sync::atomic::AtomicU64,
    pub(super) failed: std::sync::Mutex<BTreeMap<String, Failed>>,
    /// The wait before the first try again of a failed teardown ([`TEARDOWN_RETRY`]), doubled after
    /// each try that fails, up to `retry_max` ([`TEARDOWN_RETRY_MAX`]).
    pub(super) retry_every: Duration,
    pub(super) retry_max: Duration,
    /// The cleanup after a `Synchronize` whose listing of the state directories failed, to be tried
    /// again ([`super::PodNetwork::retry_teardowns`], on the teardowns' schedule): the latest one only (a
    /// later listing that succeeds finds all an earlier one would).
    pub(super) cleanup: std::sync::Mutex<Option<PendingCleanup>>,
    /// The cleanups after a `Synchronize` started so far (numbers them).
    pub(super) cleanups: std::sync::atomic::AtomicU64,
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
pub struct SyncMark(pub(super) u64);

/// A sandbox whose teardown failed, to be tried again (`Sandboxes::failed`).
#[derive(Debug)]
pub(super) struct Failed {
    /// The tries that failed so far.
    pub(super) tries: u32,
    /// When the next try is due.
    pub(super) due: tokio::time::Instant,
    /// What the last try's failures said.
    pub(super) failures: Vec<String>,
}

/// The cleanup after a `Synchronize` whose listing failed, to be tried again (`Sandboxes::cleanup`).
#[derive(Debug)]
pub(super) struct PendingCleanup {
    /// Which cleanup (`Sandboxes::cleanups`): a later `Synchronize`'s takes its place.
    pub(super) number: u64,
    /// The sandboxes its `Synchronize` named alive.
    pub(super) alive: BTreeSet<String>,
    /// Where its `Synchronize` ended.
    pub(super) mark: SyncMark,
    /// The tries that failed so far.
    pub(super) tries: u32,
    /// When the next try is due.
    pub(super) due: tokio::time::Instant,
    /// What the last try's failures said.
    pub(super) failures: Vec<String>,
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
    pub(super) fn wait_while_listing_held(&self) {
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

    pub(super) fn started(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that the sandbox `id` gets network functions now (its lock held).
    pub(super) fn start(&self, id: &str) {
        let number = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1);
        self.started().insert(id.to_owned(), number);
    }

    /// Forgets the sandbox `id` (stopped, removed, torn down, or its start failed).
    pub(super) fn forget(&self, id: &str) {
        self.started().remove(id);
    }

    /// Now, in the sequence of starts: taken on the event loop when a `Synchronize` ends, before
    /// any later event is handled.
    pub fn mark(&self) -> SyncMark {
        SyncMark(self.starts.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Whether the sandbox `id` got network functions after `mark`.
    pub(super) fn started_after(&self, id: &str, mark: SyncMark) -> bool {
        let started = self.started();
        started.get(id).is_some_and(|&number| number > mark.0)
    }

    pub(super) fn failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failed>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The wait after the failed try number `tries` (from 1): `retry_every`, doubled for each try
    /// before it, at most `retry_max`.
    pub(super) fn backoff(&self, tries: u32) -> Duration {
        let doublings = 2u32.saturating_pow(tries.saturating_sub(1));
        self.retry_every
            .saturating_mul(doublings)
            .min(self.retry_max)
    }

    /// Notes how the teardown of the sandbox `id`, known gone, went (its lock held), `failures` its
    /// failures (none: done): done, it is forgotten; failed, it is tried again
    /// ([`super::PodNetwork::retry_teardowns`]) once its wait ([`Sandboxes::backoff`]) is over.
    pub(super) fn torn_down(&self, id: &str, failures: &[String]) -> Noted {
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
    pub(super) fn started_again(&self, id: &str) -> bool {
        self.failed().remove(id).is_some()
    }

    /// The sandboxes whose teardown failed and is to be tried again.
    #[cfg(test)]
    pub(crate) fn failed_teardowns(&self) -> Vec<String> {
        self.failed().keys().cloned().collect()
    }

    /// The sandboxes whose teardown failed and whose next try is due at `now`.
    pub(super) fn due_teardowns(&self, now: tokio::time::Instant) -> Vec<String> {
        let failed = self.failed();
        failed
            .iter()
            .filter(|(_, f)| f.due <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether the teardown of the sandbox `id` failed and its next try is due at `now`.
    pub(super) fn due(&self, id: &str, now: tokio::time::Instant) -> bool {
        self.failed().get(id).is_some_and(|f| f.due <= now)
    }

    /// When the first of the next tries is due, if a teardown or a cleanup after a `Synchronize`
    /// is to be tried again.
    pub(super) fn next_due(&self) -> Option<tokio::time::Instant> {
        let cleanup = self.cleanup().as_ref().map(|p| p.due);
        self.failed().values().map(|f| f.due).chain(cleanup).min()
    }

    /// How many times the teardown of the sandbox `id` failed, if it is to be tried again.
    #[cfg(test)]
    pub(super) fn failed_tries(&self, id: &str) -> Option<u32> {
        self.failed().get(id).map(|f| f.tries)
    }

    pub(super) fn cleanup(&self) -> std::sync::MutexGuard<'_, Option<PendingCleanup>> {
        self.cleanup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number of a new cleanup after a `Synchronize`.
    pub(super) fn next_cleanup(&self) -> u64 {
        self.cleanups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1)
    }

    /// Notes how the listing of the cleanup `number` (after a `Synchronize` that named `alive` at
    /// `mark`) went, `failures` the listings that failed (none: listed): listed, neither it nor an
    /// earlier one is tried again; failed, it is tried again once its wait is over
    /// ([`Sandboxes::backoff`]). `None` when a later `Synchronize`'s cleanup took its place.
    pub(super) fn cleanup_listed(
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
    pub(super) fn due_cleanup(
        &self,
        now: tokio::time::Instant,
    ) -> Option<(u64, BTreeSet<String>, SyncMark)> {
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
pub(super) fn log_failed(
    id: &str,
    pod: Option<&str>,
    what: &str,
    noted: Noted,
    failures: &[String],
) {
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
