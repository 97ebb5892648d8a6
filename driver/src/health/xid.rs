//! The XID watch: NVML's critical XID events turned into GPU health, for as long as the plugin runs.

use std::sync::Mutex;
use std::time::Duration;

use backends::nvml::xid::XidSource;

use super::Health;

/// How long the watch waits for events at a time.
pub const XID_WAIT: Duration = Duration::from_secs(5);

/// Opens the XID source with `open`, again every `every` for as long as it fails while `wanted`
/// (the node has NVIDIA GPUs: NVML may come later, with a driver container that starts after the
/// plugin) and the plugin runs; `None` when it is not wanted (no NVIDIA GPU, no library: logged
/// once) or the plugin stops first.
pub fn open_xids<S>(
    mut open: impl FnMut() -> Result<S, String>,
    wanted: &dyn Fn() -> bool,
    stopped: &dyn Fn() -> bool,
    every: Duration,
) -> Option<S> {
    let mut said = false;
    loop {
        let error = match open() {
            Ok(source) => {
                if said {
                    tracing::info!("XID events are watched now");
                }
                return Some(source);
            }
            Err(error) => error,
        };
        if !wanted() {
            tracing::info!(%error, "no XID events; GPU health comes from rescans only");
            return None;
        }
        if !std::mem::replace(&mut said, true) {
            tracing::warn!(%error, retry_every = ?every,
                "no XID events yet from this node's NVIDIA GPUs; trying again");
        }
        // Slept in steps, so a stop is seen within one.
        let step = Duration::from_millis(200).min(every);
        let mut slept = Duration::ZERO;
        while slept < every {
            if stopped() {
                return None;
            }
            std::thread::sleep(step);
            slept += step;
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn the_source_is_opened_again_while_the_node_has_nvidia_gpus() {
        let tries = Cell::new(0);
        let open = || {
            tries.set(tries.get() + 1);
            match tries.get() {
                3 => Ok("watching"),
                _ => Err("NVML unavailable: library not found".to_owned()),
            }
        };
        let every = Duration::from_millis(1);
        assert_eq!(
            open_xids(open, &|| true, &|| false, every),
            Some("watching")
        );
        assert_eq!(tries.get(), 3);
        // Without NVIDIA GPUs: one try.
        tries.set(0);
        let open = || {
            tries.set(tries.get() + 1);
            Err::<(), _>("no library".to_owned())
        };
        assert_eq!(open_xids(open, &|| false, &|| false, every), None);
        assert_eq!(tries.get(), 1);
        // A stop ends the retries.
        let open = || Err::<(), _>("not yet".to_owned());
        assert_eq!(open_xids(open, &|| true, &|| true, every), None);
    }
}
