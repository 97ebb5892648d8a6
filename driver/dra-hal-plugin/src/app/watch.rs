//! Threads that wake the publisher between rescans: kernel hotplug events and NVIDIA XID events.

use std::sync::Arc;
use std::time::Duration;

/// Rescans on hotplug: a thread reads kernel uevents and wakes the publisher once per burst.
#[cfg(feature = "udev")]
pub(super) fn spawn_hotplug_watch(changed: Arc<tokio::sync::Notify>) {
    use backends::udev::{UeventSocket, watch};
    match UeventSocket::open() {
        Ok(socket) => {
            let spawned = std::thread::Builder::new()
                .name("uevents".into())
                .spawn(move || {
                    let error = watch(
                        socket,
                        Duration::from_millis(500),
                        Duration::from_secs(5),
                        || {
                            changed.notify_one();
                            true
                        },
                    );
                    tracing::warn!(%error, "hotplug watch stopped; the periodic rescan goes on");
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no hotplug watch");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot open the uevent socket; only the periodic rescan")
        }
    }
}

/// Waits for NVML's critical XID events on a thread of its own (NVML blocks) and republishes when a GPU
/// turns unhealthy ([`driver::health::follow_xids`]). Without NVML (no NVIDIA GPU, no library) it
/// logs why once and stops.
pub(super) fn spawn_xid_watch(
    health: Arc<std::sync::Mutex<driver::health::Health>>,
    changed: Arc<tokio::sync::Notify>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    use backends::nvml::xid::RealXid;
    std::thread::spawn(move || {
        let mut source = match RealXid::open() {
            Ok(source) => source,
            Err(error) => {
                tracing::info!(%error, "no XID events; GPU health comes from rescans only");
                return;
            }
        };
        // A GPU whose XIDs would go unseen is marked; when NVML cannot even open one (it cannot
        // say which), every NVIDIA GPU it does not watch is.
        let mut marked = false;
        for (uuid, error) in &source.unregistered {
            tracing::error!(%error, "no XID events from this GPU");
            marked |= health.lock().is_ok_and(|mut h| match uuid {
                Some(uuid) => h.record_unwatched(uuid, error),
                None => h.record_unopened(&source.watched, error),
            });
        }
        if marked {
            changed.notify_one();
        }
        driver::health::follow_xids(
            &mut source,
            &health,
            &|| changed.notify_one(),
            &|| *stopped.borrow(),
            Duration::from_secs(1),
        );
    });
}
