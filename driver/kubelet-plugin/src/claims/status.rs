//! A driver's entries of a claim's `status.devices` (for a network driver: `networkData` with the
//! interface name, addresses and MAC, and the device's attributes), written by a task of its own
//! after the claim is prepared: a CNI of the pod reads it, so it must not be lost when the kubelet gives up on the call (its deadline drops
//! the prepare's future) nor when the API server fails the write once (a 5xx, a timeout, during an
//! upgrade of the control plane). The prepare answers after the first try; a failed try is tried
//! again [`FIRST_RETRY`] later, then after twice the wait each time up to [`LONGEST_WAIT`], [`TRIES`]
//! tries in all, until the claim is unprepared. A try again reads the claim first and keeps the
//! `networkData` the NRI plugin wrote meanwhile (the pod may have started), through
//! [`ClaimSource::change_device_status`].
//!
//! The unprepare's clear of the driver's entries is such a task too ([`StatusWrite::clear`]), tried
//! again the same way until the claim's next prepare stops it: a clear dropped with the unprepare's
//! future left the entries until the claim was deallocated.
//!
//! Every try is bound to the claim's UID: a claim deleted and re-created under its name (another
//! pod's) answers [`StatusWriteError::Replaced`], which ends the task as a deleted claim does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch};

use super::{CALL_LIMIT, ClaimSource, StatusChange, StatusWriteError};
use crate::handler::ClaimRef;

/// The wait before the first try again.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// The longest wait between two tries.
pub const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Tries in all (about three minutes of waits between them: 2, 4, 8, 16, 32, 60 and 60 s).
pub const TRIES: u32 = 8;

/// How far a status write got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The first try is under way.
    First,
    /// The first try failed; tries again are under way.
    Retrying,
    /// Written, given up, or cancelled.
    Ended,
}

/// A claim's status write (or clear) under way (its task's stage, and how to stop its tries again).
#[derive(Clone)]
pub struct StatusWrite {
    /// A clear of the driver's entries (the unprepare's), not a write of the prepare's.
    clearing: bool,
    stage: watch::Receiver<Stage>,
    cancel: Arc<Notify>,
    /// Set by [`StatusWrite::stop`]: a try again that gets the claim's status after it writes
    /// nothing (the unprepare's clear, or the next prepare's write, may have come first).
    cancelled: Arc<AtomicBool>,
}

/// What the write task needs besides the entries.
pub struct Target {
    /// Where the claim is read and written.
    pub claims: Arc<dyn ClaimSource>,
    /// Counts the writes the API server forbids (a configuration error, on `/metrics`).
    pub forbidden: Arc<AtomicU64>,
    /// The claim, as the kubelet named it (its UID binds every write).
    pub claim: ClaimRef,
    /// The driver whose entries are written (the field manager of the apply).
    pub driver: String,
}

/// What a task writes.
enum Goal {
    /// The prepare's entries.
    Write(Vec<Value>),
    /// None: the unprepare's clear.
    Clear,
}

impl StatusWrite {
    /// Starts writing `entries` as the driver's entries of the claim's `status.devices`.
    pub fn start(target: Target, entries: Vec<Value>) -> StatusWrite {
        StatusWrite::spawn(target, Goal::Write(entries))
    }

    /// Starts removing the driver's entries from the claim's `status.devices` (the unprepare's).
    pub fn clear(target: Target) -> StatusWrite {
        StatusWrite::spawn(target, Goal::Clear)
    }

    fn spawn(target: Target, goal: Goal) -> StatusWrite {
        let (stage, watched) = watch::channel(Stage::First);
        let cancel = Arc::new(Notify::new());
        let cancelled = Arc::new(AtomicBool::new(false));
        let stop = Stop {
            cancel: cancel.clone(),
            cancelled: cancelled.clone(),
        };
        let clearing = matches!(goal, Goal::Clear);
        tokio::spawn(write(target, goal, stage, stop));
        StatusWrite {
            clearing,
            stage: watched,
            cancel,
            cancelled,
        }
    }

    /// Whether this is the unprepare's clear.
    pub fn clearing(&self) -> bool {
        self.clearing
    }

    /// Waits (at most a little over an API call's limit) until the first try is over.
    pub async fn first_tried(&self) {
        self.wait_for(Stage::Retrying).await;
    }

    /// Stops the tries again and waits (at most a little over an API call's limit: one may be
    /// under way) until the task ended.
    pub async fn stop(&self) {
        self.cancel();
        self.wait_for(Stage::Ended).await;
    }

    /// Stops the tries again without waiting (a try under way ends as it ends).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel.notify_one();
    }

    /// Whether the task ended.
    pub fn ended(&self) -> bool {
        *self.stage.borrow() == Stage::Ended
    }

    async fn wait_for(&self, stage: Stage) {
        let mut watched = self.stage.clone();
        // A read and a write, each bounded by the call limit, and a little more.
        let most = CALL_LIMIT * 2 + Duration::from_secs(5);
        let _ = tokio::time::timeout(most, watched.wait_for(|s| *s >= stage)).await;
    }
}

/// How the task learns it is stopped: woken from its wait, and told at the claim's status.
struct Stop {
    cancel: Arc<Notify>,
    cancelled: Arc<AtomicBool>,
}

/// The task: the first try, then the tries again while they fail and the task is not stopped.
async fn write(target: Target, goal: Goal, stage: watch::Sender<Stage>, stop: Stop) {
    let Target {
        claims,
        forbidden,
        claim,
        driver,
    } = target;
    let (namespace, name, uid) = (&claim.namespace, &claim.name, &claim.uid);
    let done = match goal {
        Goal::Write(_) => "written",
        Goal::Clear => "cleared",
    };
    let mut result = match &goal {
        Goal::Write(entries) => {
            claims
                .set_device_status(&claim, &driver, entries.clone())
                .await
        }
        Goal::Clear => claims.clear_device_status(&claim, &driver).await,
    };
    let _ = stage.send(Stage::Retrying);
    let mut tries = 1;
    let mut wait = FIRST_RETRY;
    loop {
        match result {
            Ok(()) => {
                if tries > 1 {
                    tracing::info!(claim = %uid, %namespace, %name, tries, "device status {done}");
                }
                break;
            }
            // The clear of a claim whose write was forbidden is forbidden too (and every claim is
            // cleared, those with nothing written included): the write said so.
            Err(StatusWriteError::Forbidden(error)) if matches!(goal, Goal::Clear) => {
                tracing::debug!(claim = %uid, %error, "device status not cleared");
                break;
            }
            Err(StatusWriteError::Forbidden(error)) => {
                forbidden.fetch_add(1, Ordering::Relaxed);
                tracing::error!(claim = %uid, %error,
                    "configuration error: device status not written");
                break;
            }
            Err(StatusWriteError::Gone(error)) => {
                tracing::debug!(claim = %uid, %error, "device status not {done}: the claim is gone");
                break;
            }
            // Another pod's claim under the same name: nothing of this one goes there, and there is
            // nothing of this one to clear.
            Err(StatusWriteError::Replaced(error)) => {
                tracing::info!(claim = %uid, %namespace, %name, %error,
                    "device status not {done}: the claim was re-created under its name");
                break;
            }
            Err(StatusWriteError::Failed(error)) if tries >= TRIES => {
                tracing::warn!(claim = %uid, %error, tries,
                    "device status not {done}; giving up");
                break;
            }
            Err(StatusWriteError::Failed(error)) => {
                tracing::warn!(claim = %uid, %error, tries,
                    "device status not {done}; trying again in {wait:?}");
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancel.notified() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(LONGEST_WAIT);
        tries += 1;
        let cancelled = stop.cancelled.clone();
        // Decided in the claim's turn ([`ClaimSource::change_device_status`]): a stop that came
        // before writes nothing.
        let change: StatusChange = match &goal {
            Goal::Write(entries) => {
                let planned = entries.clone();
                Box::new(move |current: Vec<Value>| {
                    (!cancelled.load(Ordering::SeqCst)).then(|| keep_network_data(planned, current))
                })
            }
            Goal::Clear => Box::new(move |current: Vec<Value>| {
                (!cancelled.load(Ordering::SeqCst) && !current.is_empty()).then(Vec::new)
            }),
        };
        result = claims.change_device_status(&claim, &driver, change).await;
        if stop.cancelled.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = stage.send(Stage::Ended);
}

/// The `planned` entries, each with the `networkData` of the `current` entry of its device where
/// that has one (the NRI plugin's, with the pod's addresses), and the current entries of devices not
/// planned.
fn keep_network_data(planned: Vec<Value>, current: Vec<Value>) -> Vec<Value> {
    let mut out = planned;
    for entry in current {
        let device = entry.get("device");
        match out.iter_mut().find(|p| p.get("device") == device) {
            Some(planned) => {
                if let (Some(map), Some(data)) = (planned.as_object_mut(), entry.get("networkData"))
                {
                    map.insert("networkData".into(), data.clone());
                }
            }
            None => out.push(entry),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::keep_network_data;

    #[test]
    fn a_try_again_keeps_the_network_data_the_pod_got_and_entries_it_does_not_plan() {
        let planned = vec![
            json!({"device": "vf-0", "data": {"pciAddress": "0000:3b:02.0"},
                   "networkData": {"interfaceName": "net1"}}),
            json!({"device": "vf-1", "data": {"pciAddress": "0000:3b:02.1"}}),
        ];
        let current = vec![
            json!({"device": "vf-0", "networkData": {"interfaceName": "net1", "ips": ["10.0.0.2/24"]}}),
            json!({"device": "vf-9", "networkData": {"interfaceName": "net9"}}),
        ];
        assert_eq!(
            keep_network_data(planned, current),
            vec![
                json!({"device": "vf-0", "data": {"pciAddress": "0000:3b:02.0"},
                       "networkData": {"interfaceName": "net1", "ips": ["10.0.0.2/24"]}}),
                json!({"device": "vf-1", "data": {"pciAddress": "0000:3b:02.1"}}),
                json!({"device": "vf-9", "networkData": {"interfaceName": "net9"}}),
            ]
        );
    }
}
