//! This process's hold on the NVIDIA GPUs, and the one write that must not run while it lasts:
//! unbinding a GPU from the `nvidia` kernel driver (to hand it to `vfio-pci`).
//!
//! `nvmlInit` attaches every GPU, and the driver's remove waits in the kernel, without end and
//! without a way to interrupt it, until every handle on the GPU is closed ("NVRM: Attempting to
//! remove device ... with non-zero usage count!", kubevirt/kubevirt#8549); with recent drivers a
//! holder that lets go after the unbind started may not release it at all
//! (NVIDIA/open-gpu-kernel-modules#1119). The plugin's XID watch holds NVML for as long as it runs,
//! and every rescan opens it for a moment, so an unbind written meanwhile would hang the prepare for
//! good. NVIDIA's own DRA driver waits for the GPU's device node to be free before it unbinds
//! (`WaitForGPUFree` in its `vfio-device.go`).
//!
//! Here every NVML user of this process holds a [`Share`] of one [`Gate`] while NVML is open; an
//! unbind from `nvidia` takes the gate whole ([`Gate::exclusive`]): new shares wait, the long-lived
//! holder sees [`Gate::wanted`] and lets go (shutting NVML down), and the unbind runs once no share
//! is left, or gives up with a `Busy` error after a bound, writing nothing. Other processes
//! (`nvidia-smi`, dcgm-exporter, a pod using the GPU) are outside this gate.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The kernel driver whose remove waits for its GPU's handles.
pub const NVIDIA_DRIVER: &str = "nvidia";

/// How long an unbind waits for this process's NVML users to let go: the XID watch sees a request
/// within one wait (a second) and NVML's shutdown takes a moment; a rescan's NVML query, without
/// persistence mode, can take seconds per GPU.
pub const EXCLUSIVE_WAIT: Duration = Duration::from_secs(30);

/// How long an NVML user waits for an unbind to finish before it gives up (and says why).
pub const SHARE_WAIT: Duration = Duration::from_secs(30);

/// The gate of this process (NVML's own state is per process).
pub fn gate() -> &'static Gate {
    static GATE: Gate = Gate::new();
    &GATE
}

/// Shares for NVML users, the whole for an unbind.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Shares held.
    shares: usize,
    /// Unbinds waiting for the gate.
    waiting: usize,
    /// Whether an unbind holds it.
    held: bool,
}

/// An NVML user's share; given back when dropped.
#[derive(Debug)]
#[must_use = "the share is given back when dropped"]
pub struct Share<'a>(&'a Gate);

/// The whole gate, for an unbind; given back when dropped.
#[derive(Debug)]
#[must_use = "the gate is given back when dropped"]
pub struct Exclusive<'a>(&'a Gate);

impl Gate {
    /// A gate nobody holds.
    pub const fn new() -> Gate {
        Gate {
            state: Mutex::new(State {
                shares: 0,
                waiting: 0,
                held: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A share, once no unbind holds or waits for the gate; an error after `wait`.
    pub fn share(&self, wait: Duration) -> Result<Share<'_>, String> {
        let deadline = Instant::now() + wait;
        let mut state = self.state();
        while state.held || state.waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "a GPU is being unbound from the nvidia driver; NVML was not opened for {wait:?}"
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.shares += 1;
        Ok(Share(self))
    }

    /// Whether an unbind holds or waits for the gate: a holder of a share for long (the XID watch)
    /// lets go when it is.
    pub fn wanted(&self) -> bool {
        let state = self.state();
        state.held || state.waiting > 0
    }

    /// The whole gate once every share is given back; after `wait`, an error naming how many are
    /// still held (the gate is then left as it was).
    pub fn exclusive(&self, wait: Duration) -> Result<Exclusive<'_>, usize> {
        let deadline = Instant::now() + wait;
        let mut state = self.state();
        state.waiting += 1;
        while state.held || state.shares > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.waiting -= 1;
                let shares = state.shares;
                drop(state);
                self.changed.notify_all();
                return Err(shares);
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.waiting -= 1;
        state.held = true;
        Ok(Exclusive(self))
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.0.state().shares -= 1;
        self.0.changed.notify_all();
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.state().held = false;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn an_unbind_waits_for_the_long_holder_to_let_go_and_new_shares_wait_for_the_unbind() {
        let gate = Gate::new();
        let let_go = AtomicBool::new(false);
        std::thread::scope(|s| {
            let share = gate.share(LONG).unwrap();
            assert!(!gate.wanted());
            // The long holder: lets go when the gate is wanted.
            s.spawn(|| {
                while !gate.wanted() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let_go.store(true, Ordering::SeqCst);
                drop(share);
            });
            let whole = gate.exclusive(LONG).unwrap();
            assert!(
                let_go.load(Ordering::SeqCst),
                "taken while a share was held"
            );
            // A new share (a rescan's query) waits until the unbind is done.
            let shared = s.spawn(|| gate.share(LONG).map(|_| Instant::now()));
            std::thread::sleep(Duration::from_millis(50));
            let released = Instant::now();
            drop(whole);
            assert!(shared.join().unwrap().unwrap() >= released);
        });
        assert!(!gate.wanted());
        let state = gate.state();
        assert_eq!((state.shares, state.waiting, state.held), (0, 0, false));
    }

    #[test]
    fn a_share_kept_makes_the_unbind_give_up_and_leaves_the_gate_as_it_was() {
        let gate = Gate::new();
        let share = gate.share(LONG).unwrap();
        assert_eq!(gate.exclusive(Duration::from_millis(30)).unwrap_err(), 1);
        // Not wanted any more: others may share again.
        assert!(!gate.wanted());
        drop(gate.share(Duration::ZERO).unwrap());
        drop(share);
        drop(gate.exclusive(Duration::ZERO).unwrap());
    }

    #[test]
    fn a_share_gives_up_while_an_unbind_holds_the_gate() {
        let gate = Gate::new();
        let whole = gate.exclusive(Duration::ZERO).unwrap();
        let error = gate.share(Duration::from_millis(30)).unwrap_err();
        assert!(error.contains("unbound from the nvidia driver"), "{error}");
        drop(whole);
        drop(gate.share(Duration::ZERO).unwrap());
    }
}
