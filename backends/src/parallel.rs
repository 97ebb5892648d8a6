//! Reading several families at once: [`read_on_two_threads`], as the driver's inventory and
//! `hal-probe` run the backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Runs the reading of the five families on two threads of their own. Each thread takes the next
/// family not yet taken, in the order CPU topology, PCI, RDMA, GPUs, SR-IOV (about the longest
/// first), until none is left: whichever thread is done first goes on to the next family, so neither
/// idles while the other still has two families to read. The calling thread only waits: a thread that
/// works while it waits for another tends to share a core with it (the scheduler places a new thread
/// beside its parent). A family whose reading panicked (a bug) is read again on this thread, so that
/// it panics as it is.
pub fn read_on_two_threads<C: Send, P: Send, S: Send, R: Send, G: Send>(
    cpu: impl Fn() -> C + Sync,
    pci: impl Fn() -> P + Sync,
    sriov: impl Fn() -> S + Sync,
    rdma: impl Fn() -> R + Sync,
    gpus: impl Fn() -> G + Sync,
) -> (C, P, S, R, G) {
    let (cpu, pci, sriov, rdma, gpus) = (
        Job::new(cpu),
        Job::new(pci),
        Job::new(sriov),
        Job::new(rdma),
        Job::new(gpus),
    );
    let order: [&dyn Run; 5] = [&cpu, &pci, &rdma, &gpus, &sriov];
    let next = AtomicUsize::new(0);
    let worker = || {
        while let Some(job) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            job.run();
        }
    };
    std::thread::scope(|scope| {
        let workers = [scope.spawn(worker), scope.spawn(worker)];
        for handle in workers {
            // A panicked family's result stays empty; `finish` reads it again here.
            let _ = handle.join();
        }
    });
    (
        cpu.finish(),
        pci.finish(),
        sriov.finish(),
        rdma.finish(),
        gpus.finish(),
    )
}

/// One family's reading and, once read, its result.
struct Job<F, T> {
    work: F,
    result: Mutex<Option<T>>,
}

impl<F: Fn() -> T + Sync, T: Send> Job<F, T> {
    fn new(work: F) -> Self {
        Job {
            work,
            result: Mutex::new(None),
        }
    }

    fn finish(self) -> T {
        let result = self
            .result
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        result.unwrap_or_else(|| (self.work)())
    }
}

/// A job whose result type is hidden, so that different families share one queue.
trait Run: Sync {
    fn run(&self);
}

impl<F: Fn() -> T + Sync, T: Send> Run for Job<F, T> {
    fn run(&self) {
        let value = (self.work)();
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn every_family_is_read_once_and_returned_in_place() {
        let runs = AtomicUsize::new(0);
        let count = |value: u32| {
            runs.fetch_add(1, Ordering::SeqCst);
            value
        };
        let got = read_on_two_threads(
            || count(1),
            || format!("pci {}", count(2)),
            || count(3),
            || vec![count(4)],
            || Some(count(5)),
        );
        assert_eq!(got, (1, "pci 2".to_string(), 3, vec![4], Some(5)));
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn the_two_threads_read_at_the_same_time() {
        // The CPU topology and PCI jobs each wait for the other: this only ends if both run at once.
        let both = Barrier::new(2);
        let (cpu, pci, ..) = read_on_two_threads(
            || both.wait().is_leader(),
            || both.wait().is_leader(),
            || (),
            || (),
            || (),
        );
        assert_ne!(cpu, pci, "one of the two is the barrier's leader");
    }

    #[test]
    fn while_one_thread_reads_a_slow_family_the_other_reads_the_rest() {
        // PCI waits until SR-IOV (taken last) has run: only the other thread can run it.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (done, wait) = (Mutex::new(done), Mutex::new(wait));
        let pci_thread = Mutex::new(None);
        let others = Mutex::new(Vec::new());
        let note = |name: &'static str| {
            others
                .lock()
                .unwrap()
                .push((name, std::thread::current().id()));
        };
        read_on_two_threads(
            || note("cpu"),
            || {
                *pci_thread.lock().unwrap() = Some(std::thread::current().id());
                wait.lock().unwrap().recv().unwrap();
            },
            || {
                note("sriov");
                done.lock().unwrap().send(()).unwrap();
            },
            || note("rdma"),
            || note("gpus"),
        );
        let pci_thread = pci_thread.lock().unwrap().unwrap();
        let others = others.into_inner().unwrap();
        let names: Vec<_> = others.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["cpu", "rdma", "gpus", "sriov"], "taken in order");
        let rest: Vec<_> = others.iter().skip(1).map(|(_, thread)| *thread).collect();
        assert!(rest.iter().all(|thread| *thread != pci_thread), "{rest:?}");
    }

    #[test]
    fn a_panicking_family_panics_on_the_calling_thread() {
        let caught = std::panic::catch_unwind(|| {
            read_on_two_threads(|| 1, || panic!("bug in pci"), || 3, || 4, || 5)
        });
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug in pci"));
    }
}
