//! The XID watch: NVML's critical XID events turned into GPU health, for as long as the plugin runs.
//! NVML is let go of and opened again when a GPU is to be unbound from `nvidia`
//! ([`backends::nvidia_gate`]) and when the GPUs on `nvidia` change (NVML lists the GPUs present
//! when it was initialised in the process).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backends::nvml::xid::XidSource;
use hal::PciAddress;

use super::Health;

/// How long the watch waits for events at a time: also how soon it sees that NVML must let go of
/// the GPUs for an unbind (which waits for that).
pub const XID_WAIT: Duration = Duration::from_secs(1);

/// A source registered for XID events, and the GPUs it could not register.
pub struct Registered<'s> {
    /// The events.
    pub source: Box<dyn XidSource + 's>,
    /// The GPUs that could not be registered: the UUID where NVML could name it, and why.
    pub unregistered: Vec<(Option<String>, String)>,
    /// The UUIDs of the GPUs registered.
    pub watched: Vec<String>,
}

/// What the XID watch reads from the plugin and tells it.
pub struct XidWatch<'a> {
    /// Where events and unwatched GPUs are recorded.
    pub health: &'a Mutex<Health>,
    /// Called when a GPU turned unhealthy, and after NVML was opened again (a rescan then reads the
    /// GPUs it lists now).
    pub changed: &'a dyn Fn(),
    /// Whether the plugin stops.
    pub stopped: &'a dyn Fn() -> bool,
    /// Whether the node has NVIDIA GPUs: NVML is waited for while it has.
    pub nvidia: &'a dyn Fn() -> bool,
    /// The GPUs on the `nvidia` driver now (the inventory's).
    pub on_nvidia: &'a dyn Fn() -> Vec<PciAddress>,
    /// Whether NVML must let go of the GPUs: one is to be unbound from `nvidia`.
    pub let_go: &'a dyn Fn() -> bool,
    /// How often NVML is opened again while it cannot be, and the least time between two opens for
    /// changed GPUs.
    pub every: Duration,
    /// The pause after a failed wait.
    pub pause: Duration,
}

/// Runs the XID watch until the plugin stops: opens NVML with `open` ([`open_xids`]), registers its
/// GPUs with `register`, marks those it cannot watch, and follows their events ([`follow_xids`])
/// until the plugin stops, until NVML must let go of the GPUs (it is opened again once the unbind is
/// done: `open` waits for that), or until the GPUs on `nvidia` are not those of the open (a GPU given
/// back from vfio-pci, a hotplug; at most once per `every`). Without NVIDIA GPUs, or without NVML
/// (logged once), it returns.
pub fn watch_xids<S>(
    watch: &XidWatch<'_>,
    mut open: impl FnMut() -> Result<S, String>,
    register: &dyn for<'s> Fn(&'s S) -> Result<Registered<'s>, String>,
) {
    let mut opens = 0_u32;
    loop {
        let Some(session) = open_xids(&mut open, watch.nvidia, watch.stopped, watch.every) else {
            return;
        };
        let opened = Instant::now();
        let at_open = (watch.on_nvidia)();
        opens += 1;
        if opens > 1 {
            tracing::info!(gpus = at_open.len(), "NVML opened again for XID events");
            (watch.changed)();
        }
        let followed = follow_session(watch, &session, register, opened, &at_open);
        // NVML shut down: an unbind waiting for it goes on.
        drop(session);
        if let Err(error) = followed {
            tracing::warn!(%error, retry_every = ?watch.every,
                "no GPU could be registered for XID events; trying again");
            if !(watch.nvidia)() || sleep_unless(watch.stopped, watch.every) {
                return;
            }
        }
        if (watch.stopped)() {
            return;
        }
    }
}

/// Registers the GPUs of `session`, marks those it cannot watch and follows the others' events
/// until the plugin stops, NVML must let go, or the GPUs on `nvidia` are not `at_open` any more.
fn follow_session<S>(
    watch: &XidWatch<'_>,
    session: &S,
    register: &dyn for<'s> Fn(&'s S) -> Result<Registered<'s>, String>,
    opened: Instant,
    at_open: &[PciAddress],
) -> Result<(), String> {
    let mut registered = register(session)?;
    mark_unwatched(watch, &registered);
    let moved = || opened.elapsed() >= watch.every && (watch.on_nvidia)() != at_open;
    let leave = || (watch.stopped)() || (watch.let_go)() || moved();
    follow_xids(
        &mut *registered.source,
        watch.health,
        watch.changed,
        &leave,
        watch.pause,
    );
    Ok(())
}

/// Marks the GPUs `registered` could not watch; when NVML could not even open one (it cannot say
/// which), every GPU on `nvidia` it does not watch.
fn mark_unwatched(watch: &XidWatch<'_>, registered: &Registered<'_>) {
    let mut marked = false;
    for (uuid, error) in &registered.unregistered {
        tracing::error!(%error, "no XID events from this GPU");
        marked |= watch.health.lock().is_ok_and(|mut h| match uuid {
            Some(uuid) => h.record_unwatched(uuid, error),
            None => h.record_unopened(&registered.watched, error),
        });
    }
    if marked {
        (watch.changed)();
    }
}

/// Sleeps `every` in steps, so a stop is seen within one; true when stopped.
fn sleep_unless(stopped: &dyn Fn() -> bool, every: Duration) -> bool {
    let step = Duration::from_millis(200).min(every);
    let mut slept = Duration::ZERO;
    while slept < every {
        if stopped() {
            return true;
        }
        std::thread::sleep(step);
        slept += step;
    }
    stopped()
}

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
        if sleep_unless(stopped, every) {
            return None;
        }
    }
}

/// Waits for XID events from `source` until `leave` says so, recording them in `health` and
/// calling `changed` when a GPU turned unhealthy. A failed wait does not end the watch (the XID
/// that mattered may come next): it marks every NVIDIA GPU ([`Health::record_lost_xids`]), is
/// logged once per run of failures, and the next wait comes `pause` later.
pub fn follow_xids(
    source: &mut dyn XidSource,
    health: &Mutex<Health>,
    changed: &dyn Fn(),
    leave: &dyn Fn() -> bool,
    pause: Duration,
) {
    let mut failing = false;
    while !leave() {
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

    /// A session that counts its closes (NVML shut down).
    struct Session<'a>(&'a std::sync::atomic::AtomicUsize);

    impl Drop for Session<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// No events; waits a moment, as NVML's wait does.
    struct Quiet;

    impl XidSource for Quiet {
        fn wait(&mut self, _: Duration) -> Result<Vec<backends::nvml::xid::XidEvent>, String> {
            std::thread::sleep(Duration::from_millis(1));
            Ok(Vec::new())
        }
    }

    fn quiet<'s>(_: &'s Session<'_>) -> Result<Registered<'s>, String> {
        Ok(Registered {
            source: Box::new(Quiet),
            unregistered: Vec::new(),
            watched: Vec::new(),
        })
    }

    /// Waits up to ten seconds for `done`.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// NVML is shut down while a GPU is unbound from `nvidia` (the kernel would wait for it) and
    /// opened again after; opened again when the GPUs on `nvidia` change (one given back from
    /// vfio-pci: NVML lists only the GPUs of its first open); a stop ends the watch.
    #[test]
    fn nvml_is_let_go_for_an_unbind_and_opened_again_for_changed_gpus() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        let (opens, closes, changes) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let (let_go, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let gpu = |a: &str| PciAddress::parse(a).unwrap();
        let on_nvidia = Mutex::new(vec![gpu("0000:17:00.0"), gpu("0000:18:00.0")]);
        let health = Mutex::new(Health::default());
        // Opening waits while the unbind goes on (the gate's share): fails here, and is tried again.
        let open = || match let_go.load(SeqCst) {
            true => Err("a GPU is being unbound from the nvidia driver".to_owned()),
            false => {
                opens.fetch_add(1, SeqCst);
                Ok(Session(&closes))
            }
        };
        /// Stops the watch when the test's thread ends, a failed assertion included (else the
        /// scope would wait for the watch for good).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, SeqCst);
            }
        }
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            s.spawn(|| {
                let watch = XidWatch {
                    health: &health,
                    changed: &|| {
                        changes.fetch_add(1, SeqCst);
                    },
                    stopped: &|| stop.load(SeqCst),
                    nvidia: &|| true,
                    on_nvidia: &|| on_nvidia.lock().unwrap().clone(),
                    let_go: &|| let_go.load(SeqCst),
                    every: Duration::from_millis(20),
                    pause: Duration::ZERO,
                };
                watch_xids(&watch, open, &quiet)
            });
            until("the first open", || opens.load(SeqCst) == 1);
            assert_eq!(changes.load(SeqCst), 0);
            let_go.store(true, SeqCst);
            until("NVML shut down", || closes.load(SeqCst) == 1);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(opens.load(SeqCst), 1, "opened during the unbind");
            let_go.store(false, SeqCst);
            until("opened again", || opens.load(SeqCst) == 2);
            until("a rescan asked for", || changes.load(SeqCst) == 1);
            // The first GPU passed through, then given back: the list differs from the open's.
            on_nvidia.lock().unwrap().remove(0);
            until("opened for the changed GPUs", || opens.load(SeqCst) == 3);
            assert_eq!(closes.load(SeqCst), 2);
        });
        assert_eq!(opens.load(SeqCst), closes.load(SeqCst), "left open");
        assert_eq!(opens.load(SeqCst), 3);
    }
}
