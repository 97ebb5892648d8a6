//! Claims prepared side by side: one claim asked twice, a hung API server, two claims for one device,
//! and random concurrent prepare/unprepare sequences with failing writes and crashes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use tokio::sync::Semaphore;

use super::*;

/// Claims from [`Claims`], with a gate per claim name that a GET waits at until opened, and a count
/// of the GETs that got through.
#[derive(Default)]
struct Gated {
    inner: Arc<Claims>,
    gates: Mutex<BTreeMap<String, Arc<Semaphore>>>,
    waiting: AtomicUsize,
    passed: AtomicUsize,
    /// Random yields before each answer (0: none), so concurrent prepares interleave.
    jitter: AtomicUsize,
    /// When set, device status writes wait here until it is opened (a slow API server).
    status_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Device status writes begun (counted before the gate; tries again and clears included).
    status_writes: AtomicUsize,
}

impl Gated {
    fn over(inner: Arc<Claims>) -> Arc<Gated> {
        Arc::new(Gated {
            inner,
            ..Gated::default()
        })
    }

    fn close(&self, uid: &str) {
        let gate = Arc::new(Semaphore::new(0));
        self.gates
            .lock()
            .unwrap()
            .insert(format!("claim-{uid}"), gate);
    }

    fn open(&self, uid: &str) {
        if let Some(gate) = self.gates.lock().unwrap().remove(&format!("claim-{uid}")) {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }
}

impl ClaimSource for Gated {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>> {
        let gate = self.gates.lock().unwrap().get(name).cloned();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            if let Some(gate) = gate {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let _ = gate.acquire().await;
            }
            for _ in 0..(rand_below(self.jitter.load(Ordering::Relaxed))) {
                tokio::task::yield_now().await;
            }
            self.passed.fetch_add(1, Ordering::SeqCst);
            self.inner.get(&namespace, &name).await
        })
    }

    fn set_device_status(
        &self,
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), super::super::StatusWriteError>> {
        let gate = self.status_gate.lock().unwrap().clone();
        let (claim, driver) = (claim.clone(), driver.to_owned());
        Box::pin(async move {
            self.status_writes.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = gate {
                let _ = gate.acquire().await;
            }
            let inner = &self.inner;
            inner.set_device_status(&claim, &driver, devices).await
        })
    }
}

/// A cheap pseudo-random number below `n` (0 when `n` is 0).
fn rand_below(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    now % n
}

fn gated_preparer(s: &Setup, source: Arc<Gated>) -> Arc<Preparer> {
    let config = s.config("boot-1", SliceConfig::new(NODE));
    Arc::new(Preparer::new(config, source, s.inventory.clone()).unwrap())
}

/// Waits (yielding, at most ~10 s: a hang guard, not a speed check) until `done` holds.
async fn until(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_asked_again_while_its_prepare_runs_waits_for_it_and_gets_the_same_answer() {
    let s = Setup::new();
    s.claims.add("a", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let source = Gated::over(s.claims.clone());
    source.close("a");
    let preparer = gated_preparer(&s, source.clone());
    let first = tokio::spawn({
        let p = preparer.clone();
        async move { p.prepare(vec![reference("a")]).await }
    });
    until(|| source.waiting.load(Ordering::SeqCst) == 1).await;
    let second = tokio::spawn({
        let p = preparer.clone();
        async move { p.prepare(vec![reference("a")]).await }
    });
    tokio::task::yield_now().await;
    source.open("a");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(first["a"].is_ok(), "{first:?}");
    assert_eq!(first, second);
    assert_eq!(
        source.passed.load(Ordering::SeqCst),
        1,
        "one GET, one prepare"
    );
    assert_eq!(preparer.locks.len(), 0, "no claim lock left behind");
    assert!(preparer.inflight().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_api_server_delays_only_the_claims_that_need_it() {
    let s = Setup::new();
    s.claims
        .add("done", &[("gpu", "gpu-0009-06-00-0")], json!([]));
    s.claims
        .add("slow", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    s.claims
        .add("fast", &[("nic", "rdma-0101-00-00-0")], json!([]));
    let source = Gated::over(s.claims.clone());
    let preparer = gated_preparer(&s, source.clone());
    let done = preparer.prepare(vec![reference("done")]).await;
    // The server stops answering for the slow claim (and for a completed one, which needs no GET).
    source.close("slow");
    source.close("done");
    let slow = tokio::spawn({
        let p = preparer.clone();
        async move { p.prepare(vec![reference("slow")]).await }
    });
    until(|| source.waiting.load(Ordering::SeqCst) == 1).await;
    // Neither a claim with its own GET nor a completed claim waits behind it.
    let fast = preparer.prepare(vec![reference("fast")]).await;
    assert!(fast["fast"].is_ok(), "{fast:?}");
    assert_eq!(preparer.prepare(vec![reference("done")]).await, done);
    assert!(preparer.unprepare(vec![reference("fast")]).await["fast"].is_ok());
    assert!(!slow.is_finished());
    source.open("slow");
    assert!(slow.await.unwrap()["slow"].is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_claims_for_one_device_asked_at_once_never_both_succeed() {
    for _ in 0..8 {
        let s = Setup::new();
        s.claims.add("a", &[("gpu", "gpu-0008-06-00-0")], json!([]));
        s.claims.add("b", &[("gpu", "gpu-0008-06-00-0")], json!([]));
        let source = Gated::over(s.claims.clone());
        source.close("a");
        source.close("b");
        let preparer = gated_preparer(&s, source.clone());
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|uid| {
                let p = preparer.clone();
                tokio::spawn(async move { p.prepare(vec![reference(uid)]).await })
            })
            .collect();
        until(|| source.waiting.load(Ordering::SeqCst) == 2).await;
        source.open("a");
        source.open("b");
        let mut ok = 0;
        for task in tasks {
            let results = task.await.unwrap();
            for result in results.values() {
                match result {
                    Ok(_) => ok += 1,
                    Err(e) => assert!(e.contains("already prepared for claim"), "{e}"),
                }
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(s.spec_files().len(), 1);
    }
}

/// One step of a random sequence.
#[derive(Debug, Clone)]
enum Op {
    /// Prepare these claims, each in its own call, all at once.
    Prepare(Vec<usize>),
    /// Unprepare these claims, each in its own call, all at once.
    Unprepare(Vec<usize>),
    /// The next `n` checkpoint writes fail (a full disk).
    FailWrites(usize),
    /// The process dies after step `step` of the prepare of a claim, and starts again.
    Crash(usize, usize),
    /// The process restarts.
    Restart,
}

const CLAIMS: usize = 6;
const GPUS: [&str; 3] = ["gpu-0008-06-00-0", "gpu-0009-06-00-0", "gpu-0018-06-00-0"];
const STEPS: [Step; 4] = [
    Step::Started,
    Step::DevicesPrepared,
    Step::CdiWritten,
    Step::Completed,
];

fn op() -> impl Strategy<Value = Op> {
    let claims = proptest::collection::vec(0..CLAIMS, 1..5);
    prop_oneof![
        4 => claims.clone().prop_map(Op::Prepare),
        2 => claims.prop_map(Op::Unprepare),
        1 => (1usize..4).prop_map(Op::FailWrites),
        1 => (0..CLAIMS, 0..STEPS.len()).prop_map(|(c, s)| Op::Crash(c, s)),
        1 => Just(Op::Restart),
    ]
}

struct World {
    s: Setup,
    source: Arc<Gated>,
    failing: Arc<AtomicUsize>,
    preparer: Arc<Preparer>,
    /// Claims the kubelet was told are prepared (or that a crash left completed), not unprepared
    /// since: what must never be lost.
    held: BTreeSet<String>,
}

impl World {
    fn new() -> World {
        let s = Setup::new();
        for c in 0..CLAIMS {
            s.claims.add(
                &format!("c{c}"),
                &[("gpu", GPUS[c % GPUS.len()])],
                json!([]),
            );
        }
        let source = Gated::over(s.claims.clone());
        source.jitter.store(8, Ordering::Relaxed);
        let failing = Arc::new(AtomicUsize::new(0));
        let preparer = Self::start(&s, &source, &failing, None);
        World {
            s,
            source,
            failing,
            preparer,
            held: BTreeSet::new(),
        }
    }

    fn start(
        s: &Setup,
        source: &Arc<Gated>,
        failing: &Arc<AtomicUsize>,
        faults: Option<FaultHook>,
    ) -> Arc<Preparer> {
        let mut config = s.config("boot-1", SliceConfig::new(NODE));
        let failing = failing.clone();
        config.checkpoint = config.checkpoint.with_write_fault(Arc::new(move || {
            match failing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
                Ok(_) => Err(std::io::Error::from_raw_os_error(28)),
                Err(_) => Ok(()),
            }
        }));
        let preparer = Preparer::new(config, source.clone(), s.inventory.clone()).unwrap();
        Arc::new(match faults {
            Some(hook) => preparer.with_faults(hook),
            None => preparer,
        })
    }

    fn restart(&mut self) {
        // A disk that is full at start is another test's matter.
        self.failing.store(0, Ordering::SeqCst);
        self.preparer = Self::start(&self.s, &self.source, &self.failing, None);
    }

    async fn run(&mut self, op: &Op) {
        match op {
            Op::Prepare(claims) => {
                let tasks: Vec<_> = claims
                    .iter()
                    .map(|c| {
                        let p = self.preparer.clone();
                        let uid = format!("c{c}");
                        tokio::spawn(async move { p.prepare(vec![reference(&uid)]).await })
                    })
                    .collect();
                for task in tasks {
                    for (uid, result) in task.await.unwrap() {
                        if result.is_ok() {
                            self.held.insert(uid);
                        }
                    }
                }
            }
            Op::Unprepare(claims) => {
                let tasks: Vec<_> = claims
                    .iter()
                    .map(|c| {
                        let p = self.preparer.clone();
                        let uid = format!("c{c}");
                        tokio::spawn(async move { p.unprepare(vec![reference(&uid)]).await })
                    })
                    .collect();
                for task in tasks {
                    for (uid, result) in task.await.unwrap() {
                        if result.is_ok() {
                            self.held.remove(&uid);
                        }
                    }
                }
            }
            Op::FailWrites(n) => self.failing.store(*n, Ordering::SeqCst),
            Op::Crash(c, step) => {
                let at = STEPS[*step];
                let hook: FaultHook = Arc::new(move |s| match s == at {
                    true => Err(format!("crash after {s:?}").into()),
                    false => Ok(()),
                });
                self.failing.store(0, Ordering::SeqCst);
                let crashing = Self::start(&self.s, &self.source, &self.failing, Some(hook));
                let uid = format!("c{c}");
                let result = crashing.prepare(vec![reference(&uid)]).await;
                drop(crashing);
                self.restart();
                // A crash after the completed record leaves the claim prepared, as a kubelet retry
                // would then be told.
                let completed = self.preparer.recorded().await.get(&uid) == Some(&Phase::Completed);
                if result[&uid].is_ok() || completed {
                    self.held.insert(uid);
                }
            }
            Op::Restart => self.restart(),
        }
    }

    /// No device in two records, nothing held lost, memory as the files say.
    async fn check(&self, after: &Op) {
        let state = self.preparer.state().clone();
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        for (uid, record) in &state {
            for device in &record.devices {
                if let Some(other) = owners.insert(&device.device_name, uid) {
                    panic!(
                        "after {after:?}: {} in {other} and {uid}",
                        device.device_name
                    );
                }
            }
        }
        for uid in &self.held {
            let record = state.get(uid);
            assert_eq!(
                record.map(|r| r.phase),
                Some(Phase::Completed),
                "after {after:?}: {uid} lost"
            );
        }
        let file = CheckpointFile::new(self.s.checkpoint_path())
            .load()
            .unwrap();
        assert!(file.discarded.is_empty(), "{:?}", file.discarded);
        let phases = |m: &BTreeMap<String, ClaimRecord>| -> BTreeMap<String, Phase> {
            m.iter().map(|(u, r)| (u.clone(), r.phase)).collect()
        };
        assert_eq!(phases(&state), phases(&file.claims), "after {after:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_concurrent_prepares_and_unprepares_with_failures_and_crashes_never_share_a_device_or_lose_a_claim(
        ops in proptest::collection::vec(op(), 1..12)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut world = World::new();
            for op in &ops {
                world.run(op).await;
                if !matches!(op, Op::FailWrites(_)) {
                    world.failing.store(0, Ordering::SeqCst);
                }
                world.check(op).await;
            }
            world.restart();
            world.check(&Op::Restart).await;
        });
    }
}

/// A binder whose `set_num_vfs` blocks until released (a kernel that takes seconds over a VF
/// count), and says whether it was released or gave up waiting.
struct SlowCount {
    inner: Arc<dyn hal::SriovPf>,
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    gave_up: std::sync::atomic::AtomicBool,
}

impl hal::SriovPf for SlowCount {
    fn sriov_pfs(&self) -> hal::Result<hal::Discovered<hal::SriovState>> {
        self.inner.sriov_pfs()
    }

    fn set_num_vfs(&self, pf: hal::PciAddress, count: u32) -> hal::Result<()> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
            let waited = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(10));
            self.gave_up.store(waited.is_err(), Ordering::SeqCst);
        }
        self.inner.set_num_vfs(pf, count)
    }

    fn bind_driver(&self, function: hal::PciAddress, driver: &str) -> hal::Result<()> {
        self.inner.bind_driver(function, driver)
    }

    fn unbind_driver(&self, function: hal::PciAddress, driver: &str) -> hal::Result<()> {
        self.inner.unbind_driver(function, driver)
    }
}

/// A VF count the kernel takes long over is written under the claim-state lock (no prepare may
/// start meanwhile), yet neither the write nor the prepares waiting for the lock hold the async
/// workers, nor does the write hold the inventory: another task (the kubelet's other calls, a
/// rescan) still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_vf_count_write_does_not_stall_the_other_tasks() {
    let mut s = Setup::on("xeon");
    let (entered, on_entry) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let slow = Arc::new(SlowCount {
        inner: s.binder.clone(),
        entered: Mutex::new(Some(entered)),
        release: Mutex::new(released),
        gave_up: std::sync::atomic::AtomicBool::new(false),
    });
    s.binder = slow.clone();
    for uid in ["a", "b"] {
        s.claims.add_cpus(uid, "cpus-numa-0", 2, json!([]));
    }
    let preparer = Arc::new(s.preparer("boot-1"));
    let path = s.dir.path().join("policy.json");
    std::fs::write(
        &path,
        r#"{"pfs": [{"selector": {"netdev": "ens1f0"}, "numVfs": 2}]}"#,
    )
    .unwrap();
    let policy = crate::plugin::provision::VfPolicy::load(&path).unwrap();
    let provision = tokio::spawn({
        let (p, path) = (preparer.clone(), path.clone());
        async move { p.provision(&policy, &path).await }
    });
    tokio::task::spawn_blocking(move || on_entry.recv())
        .await
        .unwrap()
        .unwrap();
    let prepares: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|uid| {
            let p = preparer.clone();
            tokio::spawn(async move { p.prepare(vec![reference(uid)]).await })
        })
        .collect();
    // The prepares reach the lock (a guess, not needed for the check below to mean something: a
    // stalled runtime runs the probe only once the write gave up).
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The probe also rescans (takes the inventory to write it), as the slice publisher does.
    let inventory = s.inventory.clone();
    let probe = tokio::spawn(async move {
        drop(inventory.write().unwrap());
        release.send(()).is_ok()
    });
    assert!(probe.await.unwrap());
    let outcomes = provision.await.unwrap();
    assert!(
        !slow.gave_up.load(Ordering::SeqCst),
        "the probe task did not run while the write blocked"
    );
    let e810 = hal::PciAddress::parse("0000:3b:00.0").unwrap();
    assert_eq!(
        outcomes,
        [crate::plugin::provision::Outcome::Changed(e810, 8, 2)]
    );
    for prepare in prepares {
        let answers = prepare.await.unwrap();
        assert!(answers.values().all(Result::is_ok), "{answers:?}");
    }
}

/// A preparer over [`Gated`] claims whose device status writes wait at a closed gate, with the
/// claim `u1` allocated a VF (whose prepare writes a device status), and a prepare of `u1` the
/// kubelet gave up on (its deadline dropped the call) while its status write was under way.
async fn a_prepare_given_up_during_its_status_write()
-> (Setup, Arc<Gated>, Arc<Semaphore>, Arc<Preparer>) {
    let s = Setup::on("xeon");
    s.claims
        .add("u1", &[("vf", "nic-0000-b1-00-2")], vf_config(None, "net1"));
    let source = Gated::over(s.claims.clone());
    let gate = Arc::new(Semaphore::new(0));
    *source.status_gate.lock().unwrap() = Some(gate.clone());
    let preparer = gated_preparer(&s, source.clone());
    let call = tokio::spawn({
        let preparer = preparer.clone();
        async move { preparer.prepare(vec![reference("u1")]).await }
    });
    // The write is under way (at the gate): the call waits for its first try, and is dropped now.
    until(|| source.status_writes.load(Ordering::SeqCst) == 1).await;
    call.abort();
    let dropped = call.await.expect_err("the status write held the call");
    assert!(dropped.is_cancelled(), "{dropped}");
    assert!(
        preparer.inflight().is_empty(),
        "an ask given up is not in flight"
    );
    assert_eq!(preparer.locks.len(), 0, "no claim lock left behind");
    assert_eq!(status_of(&s), None, "written before the gate opened");
    (s, source, gate, preparer)
}

/// The `netdev` of the claim `u1`'s device status, once written.
fn status_of(s: &Setup) -> Option<serde_json::Value> {
    let statuses = s.claims.1.lock().unwrap();
    statuses
        .get("ns/claim-u1")
        .map(|devices| devices[0]["data"]["netdev"].clone())
}

/// The kubelet gives up on a prepare while the claim's device status is being written: the write
/// goes on by itself (no call of the kubelet runs) and lands, once; the retry answers from the
/// completed record, writing nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepare_the_kubelet_gives_up_on_still_writes_the_device_status() {
    let (s, source, gate, preparer) = a_prepare_given_up_during_its_status_write().await;
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    until(|| status_of(&s).is_some()).await;
    assert_eq!(status_of(&s), Some(json!("ens2f0v0")));
    assert_eq!(source.status_writes.load(Ordering::SeqCst), 1);
    let answers = preparer.prepare(vec![reference("u1")]).await;
    assert!(answers["u1"].is_ok(), "{answers:?}");
    assert_eq!(
        source.status_writes.load(Ordering::SeqCst),
        1,
        "the retry wrote the status again"
    );
    assert!(preparer.inflight().is_empty());
    assert_eq!(preparer.locks.len(), 0);
}

/// The kubelet's retry of a prepare it gave up on during the status write waits for that write's
/// first try (a CNI of the pod reads the status), under the claim's lock, and answers from the
/// completed record after it, without a write of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_retry_of_a_prepare_given_up_on_waits_for_its_status_write() {
    let (s, source, gate, preparer) = a_prepare_given_up_during_its_status_write().await;
    let retry = tokio::spawn({
        let preparer = preparer.clone();
        async move { preparer.prepare(vec![reference("u1")]).await }
    });
    // It holds the claim's lock: past the lock, it waits for the write at the gate (how long it
    // is watched only bounds how soon a retry that does not wait is caught).
    until(|| preparer.locks.len() == 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !retry.is_finished(),
        "answered before the status was written"
    );
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let answers = retry.await.unwrap();
    assert!(answers["u1"].is_ok(), "{answers:?}");
    assert_eq!(
        status_of(&s),
        Some(json!("ens2f0v0")),
        "written by the answer"
    );
    assert_eq!(source.status_writes.load(Ordering::SeqCst), 1);
}

/// A prepare given up while it waits for the API server leaves no entry in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepare_given_up_while_reading_its_claim_leaves_nothing_in_flight() {
    let s = Setup::new();
    s.claims.add("a", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let source = Gated::over(s.claims.clone());
    source.close("a");
    let preparer = gated_preparer(&s, source.clone());
    let deadline = std::time::Duration::from_millis(100);
    let call = tokio::time::timeout(deadline, preparer.prepare(vec![reference("a")])).await;
    assert!(call.is_err(), "the claim read held the call");
    assert!(preparer.inflight().is_empty());
    assert_eq!(preparer.locks.len(), 0);
    source.open("a");
    assert!(preparer.prepare(vec![reference("a")]).await["a"].is_ok());
    assert!(preparer.inflight().is_empty());
}
