//! [`publish_loop`]: the publisher's task. A hand-written list + watch rather than kube's runtime
//! watcher: the runtime watcher's own list and watch calls take no deadline (only the server-side
//! `timeoutSeconds`), and here every call must have one, and a failure must go through one backoff
//! shared with the writes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;

use k8s_openapi::api::resource::v1::ResourceSlice;

use super::{PublishError, Publisher, SliceEvents, WATCH_SECONDS};
use crate::client::{Backoff, CALL_TIMEOUT};

/// A watch still open this long after it started was not ended by the server as asked: the connection
/// is dead (or the server hung), so it is dropped and the state listed again.
const WATCH_IDLE: Duration = Duration::from_secs(WATCH_SECONDS as u64 + CALL_TIMEOUT.as_secs());

/// Watch events are compared after this much quiet (and at most [`SETTLE_MAX`] after the first), so
/// that a burst (the kubelet's DeleteCollection sends one DELETED event per slice) is repaired in one
/// pass, as upstream's resourceslice controller delays its pool sync (`queue.AddAfter(pool,
/// syncDelay)`), only shorter.
const SETTLE: Duration = Duration::from_millis(250);
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// A watch that ends sooner than this counts as a failure (backoff), not as the server's timeout.
const WATCH_SHORTEST: Duration = Duration::from_secs(1);

/// A watch that has run this long resets the watch backoff (an event, its end or its failure
/// then count as health, a failure still backing off from the start): as client-go's reflector, which resets its backoff after 2 minutes without one
/// (`NewExponentialBackoffManager(800ms, 30s, 2min, ...)`), so that a watch that breaks after each
/// event backs off instead of starting again every second.
const WATCH_HEALTHY: Duration = Duration::from_secs(120);

enum Next {
    Event(Box<kube::api::WatchEvent<ResourceSlice>>),
    Failed(kube::Error),
    Ended,
    Overdue,
}

/// The watch's next item, or `Overdue` when the watch has not ended by `deadline` (its start plus
/// [`WATCH_IDLE`]; kept outside, as this future is made anew at each turn of the loop).
async fn next_event(watch: &mut Option<SliceEvents>, deadline: Instant) -> Next {
    let Some(events) = watch.as_mut() else {
        return std::future::pending().await;
    };
    match tokio::time::timeout_at(deadline, events.next()).await {
        Ok(Some(Ok(event))) => Next::Event(Box::new(event)),
        Ok(Some(Err(error))) => Next::Failed(error),
        Ok(None) => Next::Ended,
        Err(_) => Next::Overdue,
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Far enough to be never for a rescan (tokio's own cap on a timer is about 30 years).
const NEVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Keeps the API server's slices equal to the driver's until `shutdown` turns true.
///
/// The slices to publish are read with `read` at start, every `interval`, and whenever `changed` is
/// notified (say, a hotplug watcher's signal). They are compared with the API server's (a list, then a
/// watch of this node's slices of this driver) at each of those and at each watch event, so another
/// actor's deletion or change is repaired as soon as the event arrives. An unchanged node costs no
/// API call. A failed call (an error status, a timeout, a broken watch) is retried after an
/// exponential backoff with jitter ([`Backoff`]: 1 s, 2 s, 4 s, ... 30 s), starting from a fresh list.
pub async fn publish_loop(
    mut publisher: Publisher,
    mut read: impl FnMut() -> Vec<ResourceSlice>,
    interval: Duration,
    changed: Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut desired = read();
    let mut due = true;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Backoff::default();
    let mut watch_backoff = Backoff::default();
    let mut watch: Option<SliceEvents> = None;
    let mut watch_started = Instant::now();
    let mut watch_deadline = Instant::now();
    let mut settle: Option<Instant> = None;
    let mut first_event = Instant::now();
    // Checked: the interval is the operator's, and `Instant + Duration::MAX` panics. An interval
    // past the clock's range is a rescan never due (tokio caps the period itself).
    let first_rescan = Instant::now()
        .checked_add(interval)
        .unwrap_or_else(|| Instant::now() + NEVER);
    let mut rescan = tokio::time::interval_at(first_rescan, interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if retry_at.is_none() && due {
            match publisher.publish(&desired).await {
                Ok(report) => {
                    due = false;
                    backoff.reset();
                    if report.wrote() {
                        tracing::info!(
                            created = report.created,
                            updated = report.updated,
                            deleted = report.deleted,
                            generation = report.generation,
                            "published ResourceSlices"
                        );
                    } else {
                        tracing::debug!("ResourceSlices as they should be; nothing written");
                    }
                }
                Err(error) if error.kind().is_none() => {
                    // Slices the API server would refuse: a bug; retrying cannot help. The next
                    // rescan or hotplug event tries again, from a fresh list.
                    due = false;
                    watch = None;
                    tracing::error!(%error, "not publishing ResourceSlices");
                }
                Err(error) => {
                    watch = None;
                    retry_at = Some(fail(&error, &mut backoff));
                }
            }
        }
        if retry_at.is_none() && watch.is_none() && publisher.synced() {
            match publisher.watch().await {
                Ok(events) => {
                    watch = Some(events);
                    watch_started = Instant::now();
                    watch_deadline = watch_started + WATCH_IDLE;
                }
                Err(error) => {
                    publisher.forget();
                    due = true;
                    retry_at = Some(fail(&error, &mut watch_backoff));
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = until(retry_at) => retry_at = None,
            () = until(settle) => {
                settle = None;
                due = true;
            }
            _ = rescan.tick() => {
                desired = read();
                due = true;
            }
            () = changed.notified() => {
                desired = read();
                due = true;
            }
            next = next_event(&mut watch, watch_deadline) => match next {
                Next::Event(event) => match publisher.apply(*event) {
                    Ok(changed) => {
                        if watch_started.elapsed() >= WATCH_HEALTHY {
                            watch_backoff.reset();
                        }
                        if changed {
                            let now = Instant::now();
                            if settle.is_none() {
                                first_event = now;
                            }
                            settle = Some((now + SETTLE).min(first_event + SETTLE_MAX));
                        }
                    }
                    Err(error) => {
                        // 410 Gone (the version is too old) or another error: list again.
                        watch = None;
                        publisher.forget();
                        due = true;
                        retry_at = Some(fail(&error, &mut watch_backoff));
                    }
                },
                Next::Failed(source) => {
                    watch = None;
                    publisher.forget();
                    due = true;
                    if watch_started.elapsed() >= WATCH_HEALTHY {
                        // A proxy that cuts long connections: healthy until then.
                        watch_backoff.reset();
                    }
                    let error = PublishError::Api {
                        op: "watch",
                        name: publisher.selector(),
                        kind: crate::client::kind_of(&source),
                        source,
                    };
                    retry_at = Some(fail(&error, &mut watch_backoff));
                }
                // The server's timeout: resume from the last version seen, without listing.
                Next::Ended if watch_started.elapsed() >= WATCH_SHORTEST => {
                    watch = None;
                    if watch_started.elapsed() >= WATCH_HEALTHY {
                        watch_backoff.reset();
                    }
                }
                Next::Ended => {
                    watch = None;
                    retry_at = Some(Instant::now() + watch_backoff.next_delay());
                    tracing::warn!("the ResourceSlice watch ended at once; will retry");
                }
                Next::Overdue => {
                    watch = None;
                    publisher.forget();
                    due = true;
                    // Overdue only after WATCH_IDLE, so it ran long enough to count as healthy.
                    watch_backoff.reset();
                    let error = PublishError::Timeout {
                        op: "watch",
                        name: publisher.selector(),
                        after: WATCH_IDLE,
                    };
                    retry_at = Some(fail(&error, &mut watch_backoff));
                }
            }
        }
    }
}

/// Logs a failure and says when to try again.
fn fail(error: &PublishError, backoff: &mut Backoff) -> Instant {
    let delay = backoff.next_delay();
    let kind = error
        .kind()
        .map_or_else(|| "invalid".to_owned(), |k| k.to_string());
    tracing::warn!(%error, %kind, retry_in = ?delay, "publishing ResourceSlices failed; will retry");
    Instant::now() + delay
}
