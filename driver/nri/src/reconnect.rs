//! Staying connected to the runtime: connect, serve until the connection ends, wait, connect again.
//! The plugin's own serving of one connection is the `serve` function given to [`run`].
//!
//! The wait backs off exponentially with jitter, from 1 s to a cap of 30 s, and starts over only after
//! a connection that got as far as `Synchronize`. A runtime that accepts the plugin and then drops it
//! before synchronizing is not retried every second: containerd 1.7 (NRI 0.6.1) sends its whole state
//! in one `Synchronize`, and when that is over ttrpc's 4 MiB limit it fails to send it and drops the
//! plugin, again at every attempt, until containers are removed.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::stats::NriStats;
use crate::wire::MAX_DATA;

/// The first wait before reconnecting.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait before reconnecting.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// Exponential backoff with "equal jitter": the n-th wait is half the step plus a random part of the
/// other half, and the step doubles from `first` up to `cap`. Spreads the reconnections of every
/// node's plugin after a runtime upgrade, and never waits longer than `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
    random: RandomState,
    drawn: u64,
}

impl Backoff {
    /// A backoff whose first step is `first`, capped at `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            step: first,
            random: RandomState::new(),
            drawn: 0,
        }
    }

    /// The step the next wait is drawn from: the wait lies in `[step / 2, step]`.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// The next wait, in `[step / 2, step]`; then the step doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let span = u64::try_from((self.step - half).as_millis()).unwrap_or(u64::MAX);
        self.drawn = self.drawn.wrapping_add(1);
        let jitter = match span {
            0 => 0,
            span => self.random.hash_one(self.drawn) % (span + 1),
        };
        let delay = half + Duration::from_millis(jitter);
        self.step = (self.step * 2).min(self.cap);
        delay
    }

    /// Starts over from the first step (after a connection that worked).
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

/// How one connection ended.
#[derive(Debug)]
pub struct Outcome<E> {
    /// It got as far as a complete `Synchronize` (the runtime accepted the plugin).
    pub synchronized: bool,
    /// `Ok`: closed (by the runtime, or at `stopped`).
    pub result: Result<(), E>,
}

/// What [`run`] needs of the error a connection ended with: a message and a kind.
pub trait Failure: fmt::Display {
    /// The coarse kind of this error.
    fn kind(&self) -> hal::ErrorKind;
}

/// Runs a plugin until `stopped` turns true: connects to the runtime's `socket`, hands the
/// connection to `serve` (with `stopped`) until it ends, and reconnects with [`Backoff`] while the
/// runtime is away or keeps dropping the plugin. `stats` is told when a connection is gone.
pub async fn run<E, F, Fut>(
    socket: &Path,
    stats: &NriStats,
    mut serve: F,
    mut stopped: watch::Receiver<bool>,
) where
    E: Failure,
    F: FnMut(UnixStream, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Outcome<E>>,
{
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    let mut reported = false;
    while !*stopped.borrow() {
        match UnixStream::connect(socket).await {
            Ok(connection) => {
                reported = false;
                tracing::info!(socket = %socket.display(), "connected to the NRI runtime");
                let outcome = serve(connection, stopped.clone()).await;
                stats.set_connected(false);
                if outcome.synchronized {
                    backoff.reset();
                }
                match outcome.result {
                    Ok(()) if outcome.synchronized || *stopped.borrow() => {
                        tracing::info!("the NRI connection ended")
                    }
                    Ok(()) => tracing::warn!(
                        limit = MAX_DATA,
                        retry_in_s = backoff.step().as_secs(),
                        "the NRI runtime closed the connection before Synchronize; containerd 1.7 \
                         (NRI 0.6.1) does so when its Synchronize is over ttrpc's limit (too many \
                         containers); see the runtime's log"
                    ),
                    Err(error) => tracing::warn!(%error, kind = ?error.kind(),
                        retry_in_s = backoff.step().as_secs(), "the NRI connection failed"),
                }
            }
            Err(error) if !reported => {
                tracing::warn!(socket = %socket.display(), %error,
                    "cannot reach the NRI runtime (is NRI enabled?); retrying");
                reported = true;
            }
            Err(_) => {}
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = stopped.changed() => {
                // A sender gone without saying stop also means stop: else this loop would spin.
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_each_within_its_jitter_range() {
        let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
        let steps = [1, 2, 4, 8, 16, 30, 30, 30];
        for step in steps {
            let step = Duration::from_secs(step);
            assert_eq!(backoff.step(), step);
            let delay = backoff.next_delay();
            assert!(step / 2 <= delay && delay <= step, "{delay:?} for {step:?}");
        }
        backoff.reset();
        assert_eq!(backoff.step(), FIRST_DELAY);
    }

    #[test]
    fn the_jitter_spreads_the_waits() {
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let mut backoff = Backoff::new(MAX_DELAY, MAX_DELAY);
            waits.insert(backoff.next_delay());
        }
        // 20 draws out of 15 001 possible waits: equal ones would mean no jitter.
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[derive(Debug)]
    struct Broke;

    impl fmt::Display for Broke {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("broke")
        }
    }

    impl Failure for Broke {
        fn kind(&self) -> hal::ErrorKind {
            hal::ErrorKind::Io
        }
    }

    /// A runtime that accepts every connection; `serve` says how each one ends. Returns when each
    /// connection was served, measured on tokio's paused clock.
    async fn served_at(ends: Vec<Outcome<Broke>>) -> Vec<Duration> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nri.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let (stop, stopped) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let mut ends = ends.into_iter();
        let times = std::sync::Mutex::new(Vec::new());
        let stats = NriStats::default();
        stats.set_connected(true);
        run(
            &socket,
            &stats,
            |_connection, _stopped| {
                times.lock().unwrap().push(started.elapsed());
                let end = ends.next();
                if end.is_none() {
                    stop.send_replace(true);
                }
                let end = end.unwrap_or(Outcome {
                    synchronized: true,
                    result: Ok(()),
                });
                async move { end }
            },
            stopped,
        )
        .await;
        accepting.abort();
        assert!(!stats.connected(), "a connection gone is reported");
        times.into_inner().unwrap()
    }

    fn dropped() -> Outcome<Broke> {
        Outcome {
            synchronized: false,
            result: Ok(()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_that_drops_the_plugin_before_synchronize_is_retried_ever_more_slowly() {
        let failed = Outcome {
            synchronized: false,
            result: Err(Broke),
        };
        let times = served_at(vec![dropped(), failed, dropped(), dropped()]).await;
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 4, "{times:?}");
        for (gap, step) in gaps.iter().zip([1, 2, 4, 8]) {
            let step = Duration::from_secs(step);
            assert!(step / 2 <= *gap && *gap <= step, "{gap:?} for {step:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_synchronized_starts_the_backoff_over() {
        let synchronized = || Outcome {
            synchronized: true,
            result: Ok(()),
        };
        let times = served_at(vec![dropped(), dropped(), dropped(), synchronized()]).await;
        let last = times[4] - times[3];
        assert!(last <= FIRST_DELAY, "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_absent_runtime_is_retried_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = watch::channel(false);
        let stats = NriStats::default();
        let socket = dir.path().join("absent.sock");
        let served = std::sync::atomic::AtomicUsize::new(0);
        let running = run(
            &socket,
            &stats,
            |_, _| {
                served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async {
                    Outcome::<Broke> {
                        synchronized: true,
                        result: Ok(()),
                    }
                }
            },
            stopped,
        );
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            stop.send_replace(true);
        };
        let both = async { tokio::join!(running, stopping) };
        tokio::time::timeout(Duration::from_secs(200), both)
            .await
            .expect("the loop ends once stopped");
        assert_eq!(served.into_inner(), 0, "nothing to serve without a runtime");
    }
}
