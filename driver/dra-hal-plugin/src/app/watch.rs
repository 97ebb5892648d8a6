//! Threads that wake the publisher between rescans: kernel hotplug events and NVIDIA XID events;
//! and the task that reads the API server's version again.

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
/// turns unhealthy ([`driver::health::watch_xids`]). NVML is opened again every minute while it
/// cannot be and the node has NVIDIA GPUs (a driver container may start after the plugin); without
/// any ([`driver::health::open_xids`]) it logs why once and stops. It lets go of NVML while a GPU
/// is unbound from `nvidia` ([`backends::nvidia_gate`]) and opens it again when the GPUs on
/// `nvidia` change.
pub(super) fn spawn_xid_watch(
    health: Arc<std::sync::Mutex<driver::health::Health>>,
    inventory: Arc<std::sync::RwLock<driver::inventory::Inventory>>,
    changed: Arc<tokio::sync::Notify>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    use backends::nvidia_gate::{NVIDIA_DRIVER, gate};
    use backends::nvml::xid::NvmlSession;
    use driver::health::XidWatch;
    let spawned = std::thread::Builder::new()
        .name("xid-watch".into())
        .spawn(move || {
            let nvidia = || {
                inventory
                    .read()
                    .is_ok_and(|i| i.gpus.iter().any(|g| g.vendor == hal::GpuVendor::Nvidia))
            };
            let on_nvidia = || {
                let Ok(inventory) = inventory.read() else {
                    return Vec::new();
                };
                let mut on: Vec<_> = (inventory.gpus.iter())
                    .filter(|g| g.driver.as_deref() == Some(NVIDIA_DRIVER))
                    .map(|g| g.pci_address)
                    .collect();
                on.sort();
                on
            };
            let watch = XidWatch {
                health: &health,
                changed: &|| changed.notify_one(),
                stopped: &|| *stopped.borrow(),
                nvidia: &nvidia,
                on_nvidia: &on_nvidia,
                let_go: &|| gate().wanted(),
                every: Duration::from_secs(60),
                pause: Duration::from_secs(1),
            };
            driver::health::watch_xids(&watch, NvmlSession::open, &register_xids);
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the XID watch; GPU health comes from rescans only");
    }
}

/// Every GPU of `session` registered for XID events.
fn register_xids(
    session: &backends::nvml::xid::NvmlSession,
) -> Result<driver::health::Registered<'_>, String> {
    let xids = session.xids()?;
    Ok(driver::health::Registered {
        unregistered: xids.unregistered.clone(),
        watched: xids.watched.clone(),
        source: Box::new(xids),
    })
}

/// How often the API server's version is read again.
const VERSION_RECHECK: Duration = Duration::from_secs(600);

/// Reads the API server's version every [`VERSION_RECHECK`] until `stopped`, and returns the new one
/// when it is on the other side of 1.35 than `started`: what the slices' counter layout and taint
/// effects follow (a control plane upgraded while this plugin runs refuses the 1.34 layout), so the
/// plugin restarts to publish for it. A failed read is skipped (the next comes an interval later).
pub(super) async fn version_moved(
    client: kube::Client,
    started: (String, String),
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    use driver::slices::api_version::at_least_1_35;
    let before = at_least_1_35(&started.0, &started.1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(VERSION_RECHECK) => {}
            _ = stopped.changed() => return None,
        }
        let (major, minor) = match driver::api::server_version_once(&client).await {
            Ok(version) => version,
            Err(error) => {
                tracing::debug!(?error, "reading the API server's version again");
                continue;
            }
        };
        if at_least_1_35(&major, &minor) != before {
            return Some(format!("{major}.{minor}"));
        }
    }
}

/// Waits until a task of `tasks` panics and gives its message; tasks that return are let go (some
/// end early: the registration check after a minute). A panic in a task is caught by tokio and would
/// otherwise go unseen until the shutdown: the NRI connection's task gone for good (no CPU pinning,
/// no pod network, no reconnection), or `spawn_blocking` refused a thread (`OS can't spawn worker
/// thread`: the pod's pids limit), while the plugin still says it is healthy. The caller exits with
/// an error instead, and the kubelet starts it again.
pub(super) async fn first_panic(tasks: &mut tokio::task::JoinSet<()>) -> String {
    loop {
        match tasks.join_next().await {
            Some(Err(error)) if error.is_panic() => {
                let panic = error.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned());
                return message.unwrap_or_else(|| "a panic without a message".to_owned());
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use driver::fake_api::FakeApi;

    use super::{VERSION_RECHECK, first_panic, version_moved};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_ends_the_wait_with_its_message_and_one_that_returns_does_not() {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async {});
        tasks.spawn(std::future::pending());
        let wait =
            tokio::time::timeout(std::time::Duration::from_secs(60), first_panic(&mut tasks));
        assert!(wait.await.is_err(), "no task panicked");
        tasks.spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            panic!("OS can't spawn worker thread: {}", 11)
        });
        let message = first_panic(&mut tasks).await;
        assert_eq!(message, "OS can't spawn worker thread: 11");
        tasks.spawn(async { std::panic::panic_any(7_u8) });
        assert_eq!(first_panic(&mut tasks).await, "a panic without a message");
    }

    #[tokio::test(start_paused = true)]
    async fn a_control_plane_upgraded_past_1_35_ends_the_wait_with_its_version() {
        let state = Arc::new(Mutex::new(FakeApi::with_node("n")));
        let client = FakeApi::mock_client(state.clone(), &driver::api::call_timeout_layer());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = ("1".to_owned(), "34".to_owned());
        let task = tokio::spawn(version_moved(client.clone(), started, stopped.clone()));
        // Read three times: still 1.34.
        tokio::time::sleep(VERSION_RECHECK * 3 + VERSION_RECHECK / 2).await;
        assert!(!task.is_finished());
        state.lock().unwrap().server_minor = Some(36);
        let moved = tokio::time::timeout(VERSION_RECHECK * 2, task).await;
        assert_eq!(moved.unwrap().unwrap().as_deref(), Some("1.36"));
        // A minor change on the same side (1.36 to 1.37) is no reason; a stop ends the wait.
        let started = ("1".to_owned(), "37".to_owned());
        let task = tokio::spawn(version_moved(client, started, stopped));
        tokio::time::sleep(VERSION_RECHECK * 2).await;
        stop.send(true).unwrap();
        assert_eq!(task.await.unwrap(), None);
    }
}
