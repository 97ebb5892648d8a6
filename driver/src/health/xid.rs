//! The XID watch: NVML's critical XID events turned into GPU health, for as long as the plugin runs.

use std::sync::Mutex;
use std::time::Duration;

use backends::nvml::xid::XidSource;

use super::Health;

/// How long the watch waits for events at a time.
pub const XID_WAIT: Duration = Duration::from_secs(5);

/// Waits for XID events from `source` until `stopped` says so, recording them in `health` and
/// calling `changed` when a GPU turned unhealthy. A failed wait does not end the watch (the XID
/// that mattered may come next): it marks every NVIDIA GPU ([`Health::record_lost_xids`]), is
/// logged once per run of failures, and the next wait comes `pause` later.
pub fn follow_xids(
    source: &mut dyn XidSource,
    health: &Mutex<Health>,
    changed: &dyn Fn(),
    stopped: &dyn Fn() -> bool,
    pause: Duration,
) {
    let mut failing = false;
    while !stopped() {
        let turned = match source.wait(XID_WAIT) {
            Ok(events) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("waiting for XID events works again");
                }
                let mut turned = false;
                for event in &events {
                    turned |= health.lock().is_ok_and(|mut h| h.record_xid(event));
                }
                turned
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "waiting for XID events failed; retrying");
                }
                let turned = health.lock().is_ok_and(|mut h| h.record_lost_xids(&error));
                std::thread::sleep(pause);
                turned
            }
        };
        if turned {
            changed();
        }
    }
}
