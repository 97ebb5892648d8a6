//! Staying connected to the runtime: connect, serve until the connection ends, wait, connect again.
//!
//! The wait backs off exponentially with jitter, from 1 s to a cap of 30 s, and starts over only after
//! a connection that got as far as `Synchronize`. A runtime that accepts the plugin and then drops it
//! before synchronizing is not retried every second: containerd 1.7 (NRI 0.6.1) sends its whole state
//! in one `Synchronize`, and when that is over ttrpc's 4 MiB limit it fails to send it and drops the
//! plugin, again at every attempt, until containers are removed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;

use super::plugin::{CpuSource, NriConfig, serve};
use super::wire::MAX_DATA;

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

/// Runs the plugin until `stopped` turns true: connects, serves, and reconnects with [`Backoff`]
/// while the runtime is away or keeps dropping the plugin.
pub async fn run(config: NriConfig, source: CpuSource, mut stopped: watch::Receiver<bool>) {
    if config.unsolicited_updates {
        tracing::warn!(
            "NRI unsolicited updates are on: they deadlock containerd 1.7.x and 2.1.x (containerd \
             issue #13733) unless the runtime's NRI has containerd/nri#301"
        );
    }
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    let mut reported = false;
    while !*stopped.borrow() {
        match UnixStream::connect(&config.socket).await {
            Ok(socket) => {
                reported = false;
                tracing::info!(socket = %config.socket.display(), "connected to the NRI runtime");
                let outcome = serve(socket, &config, source.clone(), stopped.clone()).await;
                config.stats.set_connected(false);
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
                tracing::warn!(socket = %config.socket.display(), %error,
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
}
