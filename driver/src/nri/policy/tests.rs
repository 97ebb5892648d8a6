use proptest::prelude::*;

use super::*;

fn set(list: &str) -> CpuSet {
    CpuSet::from_cpulist(list).unwrap()
}

fn snapshot(allocatable: &str, claims: &[(&str, &str, &[&str])]) -> Snapshot {
    Snapshot {
        allocatable: set(allocatable),
        claims: claims
            .iter()
            .map(|(uid, cpus, pods)| {
                (
                    (*uid).to_owned(),
                    ClaimCpus {
                        cpus: set(cpus),
                        pods: pods.iter().map(|p| (*p).to_owned()).collect(),
                    },
                )
            })
            .collect(),
    }
}

fn env(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|e| (*e).to_owned()).collect()
}

#[test]
fn the_shared_pool_is_allocatable_minus_every_claimed_cpu() {
    let s = snapshot("2-15", &[("a", "4-5", &[]), ("b", "8,9", &[])]);
    assert_eq!(s.exclusive(), set("4-5,8-9"));
    assert_eq!(s.shared_pool(), set("2-3,6-7,10-15"));
}

#[test]
fn a_container_with_its_claims_env_is_exclusive_and_the_others_shared() {
    let s = snapshot("0-7", &[("a", "2-3", &["pod-1"]), ("b", "6", &[])]);
    assert_eq!(
        classify(&s, "pod-1", &env(&["PATH=/bin"])),
        Ok(Placement::Shared)
    );
    assert_eq!(
        classify(&s, "pod-1", &env(&["DRA_CPUSET_a=2-3", "DRA_CPUSET_b=6"])),
        Ok(Placement::Exclusive(vec!["a".into(), "b".into()]))
    );
}

#[test]
fn forged_stale_or_malformed_claim_envs_are_refused_with_the_reason() {
    let s = snapshot("0-7", &[("a", "2-3", &["pod-1"])]);
    let refused = |pod: &str, e: &str| {
        let error = classify(&s, pod, &env(&[e])).unwrap_err();
        assert!(error.is_bad_env(), "{error}");
        error.to_string()
    };
    assert!(
        refused("pod-2", "DRA_CPUSET_a=2-3")
            .contains("reserved for pod(s) pod-1, not for pod pod-2")
    );
    assert!(refused("pod-1", "DRA_CPUSET_zz=2-3").contains("no claim with this UID is prepared"));
    assert!(refused("pod-1", "DRA_CPUSET_a=0-7").contains("the claim holds CPUs 2-3"));
    assert!(refused("pod-1", "DRA_CPUSET_a=two").contains("not a cpulist"));
    assert!(refused("pod-1", "DRA_CPUSET_a").contains("no value"));
}

#[test]
fn creating_an_exclusive_container_moves_shared_ones_off_its_cpus() {
    let mut policy = Policy::new(snapshot("0-7", &[]));
    let (cpus, updates) = policy.create("shared", "s", "pod-0", &[]).unwrap();
    assert_eq!((cpus, updates), (set("0-7"), vec![]));
    // A claim is prepared: the pool shrinks for the containers already there.
    let updates = policy.set_snapshot(snapshot("0-7", &[("a", "0-1", &["pod-1"])]));
    assert_eq!(updates, vec![("shared".to_owned(), set("2-7"))]);
    let (cpus, updates) = policy
        .create("pinned", "p", "pod-1", &env(&["DRA_CPUSET_a=0-1"]))
        .unwrap();
    assert_eq!(cpus, set("0-1"));
    assert!(updates.is_empty(), "the shared container was already moved");
    // The claim goes: the pool grows, and its container (still running) joins the pool.
    let updates = policy.set_snapshot(snapshot("0-7", &[]));
    assert_eq!(
        updates,
        vec![
            ("pinned".to_owned(), set("0-7")),
            ("shared".to_owned(), set("0-7"))
        ]
    );
}

#[test]
fn an_empty_shared_pool_fails_closed_and_is_never_sent_as_an_update() {
    let mut policy = Policy::new(snapshot("0-3", &[("a", "0-1", &[])]));
    policy.create("shared", "s", "pod-0", &[]).unwrap();
    let updates = policy.set_snapshot(snapshot("0-3", &[("a", "0-1", &[]), ("b", "2-3", &[])]));
    assert!(updates.is_empty(), "{updates:?}");
    let error = policy.create("late", "late", "pod-9", &[]).unwrap_err();
    assert!(!error.is_bad_env(), "{error}");
    assert!(
        error.to_string().contains("the shared CPU pool is empty"),
        "{error}"
    );
    assert!(!policy.containers().contains_key("late"));
    // An exclusive container still starts.
    let (cpus, _) = policy
        .create("b1", "b", "pod-2", &env(&["DRA_CPUSET_b=2-3"]))
        .unwrap();
    assert_eq!(cpus, set("2-3"));
}

#[test]
fn synchronize_rebuilds_the_table_and_updates_only_what_differs() {
    let mut policy = Policy::new(snapshot("0-7", &[("a", "6-7", &["pod-1"])]));
    policy.create("gone", "g", "pod-0", &[]).unwrap();
    let updates = policy.synchronize(vec![
        SyncedContainer {
            id: "ok".into(),
            name: "ok".into(),
            pod_uid: "pod-0".into(),
            env: vec![],
            cpus: Some(set("0-5")),
        },
        SyncedContainer {
            id: "wide".into(),
            name: "wide".into(),
            pod_uid: "pod-0".into(),
            env: vec![],
            cpus: None,
        },
        SyncedContainer {
            id: "mine".into(),
            name: "mine".into(),
            pod_uid: "pod-1".into(),
            env: env(&["DRA_CPUSET_a=6-7"]),
            cpus: Some(set("0-7")),
        },
        SyncedContainer {
            id: "forged".into(),
            name: "forged".into(),
            pod_uid: "pod-2".into(),
            env: env(&["DRA_CPUSET_a=6-7"]),
            cpus: Some(set("6-7")),
        },
    ]);
    assert_eq!(
        updates,
        vec![
            ("forged".to_owned(), set("0-5")),
            ("mine".to_owned(), set("6-7")),
            ("wide".to_owned(), set("0-5")),
        ]
    );
    assert!(!policy.containers().contains_key("gone"));
    assert_eq!(policy.update("mine"), vec![("mine".to_owned(), set("6-7"))]);
    policy.forget("mine");
    assert_eq!(policy.update("mine"), vec![]);
}

#[test]
fn a_new_snapshot_is_owed_to_the_next_event_and_sent_once() {
    let mut policy = Policy::new(snapshot("0-7", &[]));
    policy.create("shared", "s", "pod-0", &[]).unwrap();
    policy.create("other", "o", "pod-0", &[]).unwrap();
    // A claim is prepared: nothing is sent until the runtime calls.
    policy.replace_snapshot(snapshot("0-7", &[("a", "0-1", &["pod-1"])]));
    // Its container's creation carries the moves of the others.
    let (cpus, updates) = policy
        .create("pinned", "p", "pod-1", &env(&["DRA_CPUSET_a=0-1"]))
        .unwrap();
    assert_eq!(cpus, set("0-1"));
    assert_eq!(
        updates,
        vec![
            ("other".to_owned(), set("2-7")),
            ("shared".to_owned(), set("2-7"))
        ]
    );
    // Its stop (before the claim is unprepared) owes nothing new, the claim still holds its CPUs;
    // the moves its creation carried go again (the same CPUs), in case containerd dropped them
    // with a failed create (see `moves_of_a_create_the_runtime_undid_are_owed_again_at_its_stop`).
    assert_eq!(policy.stop("pinned"), updates);
    policy.replace_snapshot(snapshot("0-7", &[]));
    // The next event of any container carries the grown pool, for every other container too.
    assert_eq!(
        policy.update("shared"),
        vec![
            ("other".to_owned(), set("0-7")),
            ("shared".to_owned(), set("0-7"))
        ]
    );
    // Sent once: a second event owes nothing but the container's own CPUs.
    assert_eq!(
        policy.update("shared"),
        vec![("shared".to_owned(), set("0-7"))]
    );
    policy.replace_snapshot(snapshot("0-7", &[("b", "6-7", &[])]));
    assert_eq!(
        policy.stop("other"),
        vec![("shared".to_owned(), set("0-5"))]
    );
}

#[test]
fn updates_over_one_messages_budget_are_owed_to_the_next_event() {
    let mut policy = Policy::new(snapshot("0-7", &[]));
    // 6 000 containers with 400-byte ids: about 2.6 MB of updates, over the budget of one message.
    let running = (0..6000)
        .map(|i| SyncedContainer {
            id: format!("{i:0>400}"),
            name: format!("c{i}"),
            pod_uid: "pod-0".into(),
            env: Vec::new(),
            cpus: Some(set("0-7")),
        })
        .collect();
    assert!(policy.synchronize(running).is_empty());
    policy.replace_snapshot(snapshot("0-7", &[("a", "0-1", &[])]));
    let first = policy.owed();
    let size: usize = first
        .iter()
        .map(|(id, c)| id.len() + c.to_cpulist().len() + 32)
        .sum();
    assert!(size <= ANSWER_BUDGET, "{size}");
    assert!(first.len() > 4000 && first.len() < 6000, "{}", first.len());
    // The rest go with the next event, and then nothing is owed.
    let second = policy.owed();
    assert_eq!(first.len() + second.len(), 6000);
    assert!(second.iter().all(|(_, cpus)| *cpus == set("2-7")));
    assert!(policy.owed().is_empty());
}

proptest! {
    /// Whatever the claims and containers, every container runs on a non-empty set of allocatable
    /// CPUs; shared containers never touch a claimed CPU, and an exclusive container only its own.
    #[test]
    fn no_container_ever_runs_on_a_cpu_it_may_not_use(
        reserved in proptest::collection::btree_set(0u32..16, 0..4),
        // Claims of up to 8 CPUs: the pool empties in some runs.
        steps in proptest::collection::vec((0u8..4, 0u32..16, 1u32..9, 0usize..6), 1..40),
    ) {
        let allocatable: CpuSet = (0..16).filter(|c| !reserved.contains(c)).collect();
        let mut claims: BTreeMap<String, ClaimCpus> = BTreeMap::new();
        let mut policy = Policy::new(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() });
        let mut runtime: BTreeMap<String, CpuSet> = BTreeMap::new();
        let mut next = 0;
        for (op, first, len, pick) in steps {
            match op {
                // Prepare a claim on free allocatable CPUs.
                0 => {
                    let taken: CpuSet = claims.values().flat_map(|c| c.cpus.iter()).collect();
                    let cpus: CpuSet = (first..first + len)
                        .filter(|c| allocatable.contains(*c) && !taken.contains(*c))
                        .collect();
                    if !cpus.is_empty() {
                        claims.insert(format!("c{next}"), ClaimCpus { cpus, pods: vec![format!("p{next}")] });
                        next += 1;
                    }
                    for (id, cpus) in policy.set_snapshot(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() }) {
                        runtime.insert(id, cpus);
                    }
                }
                // Unprepare one.
                1 => {
                    if let Some(uid) = claims.keys().nth(pick).cloned() {
                        claims.remove(&uid);
                    }
                    for (id, cpus) in policy.set_snapshot(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() }) {
                        runtime.insert(id, cpus);
                    }
                }
                // Start a container, with a claim or not.
                2 => {
                    let id = format!("k{next}");
                    next += 1;
                    let claim = claims.iter().nth(pick).map(|(uid, c)| (uid.clone(), c.clone()));
                    let (pod, env) = match &claim {
                        Some((uid, c)) if pick % 2 == 0 => (c.pods[0].clone(), vec![format!("DRA_CPUSET_{uid}={}", c.cpus)]),
                        _ => ("shared-pod".to_owned(), vec![]),
                    };
                    // Only a shared container may be refused, and only when the pool is empty.
                    let taken: CpuSet = claims.values().flat_map(|c| c.cpus.iter()).collect();
                    let pool = allocatable.difference(&taken);
                    match policy.create(&id, &id, &pod, &env) {
                        Ok((cpus, updates)) => {
                            runtime.insert(id, cpus);
                            for (id, cpus) in updates {
                                runtime.insert(id, cpus);
                            }
                        }
                        Err(PolicyError::EmptyPool { .. }) if env.is_empty() && pool.is_empty() => {}
                        Err(e) => prop_assert!(false, "{id} of {pod} {env:?}, pool {pool}: {e}"),
                    }
                }
                // Stop one.
                _ => {
                    if let Some(id) = runtime.keys().nth(pick).cloned() {
                        runtime.remove(&id);
                        policy.forget(&id);
                    }
                }
            }
            let exclusive: CpuSet = claims.values().flat_map(|c| c.cpus.iter()).collect();
            let pool = allocatable.difference(&exclusive);
            for (id, cpus) in &runtime {
                prop_assert!(!cpus.is_empty());
                prop_assert!(cpus.is_subset(&allocatable), "{id} on {cpus}, reserved {reserved:?}");
                match &policy.containers()[id].placement {
                    Placement::Shared if !pool.is_empty() => prop_assert_eq!(cpus, &pool),
                    Placement::Exclusive(uids) => {
                        let own: CpuSet = uids.iter().filter_map(|u| claims.get(u)).flat_map(|c| c.cpus.iter()).collect();
                        if !own.is_empty() {
                            prop_assert_eq!(cpus, &own);
                        } else if !pool.is_empty() {
                            prop_assert_eq!(cpus, &pool);
                        }
                    }
                    Placement::Shared => {}
                }
            }
        }
    }

    /// As the kubelet drives it, with updates only in the answers to events: a claim's container is
    /// created right after the claim is prepared, and stopped before it is unprepared. Every container
    /// runs on a non-empty set of allocatable CPUs, a claim container on exactly its claim's, and a
    /// shared one on a part of the pool (all of it once an event has passed), never on a claimed CPU.
    /// (The pool never empties here; that case is tested above.)
    #[test]
    fn answers_to_events_keep_claimed_cpus_free_of_other_containers(
        steps in proptest::collection::vec((0u8..5, 0u32..16, 1u32..5, 0usize..8), 1..60),
    ) {
        let allocatable: CpuSet = (0..16).collect();
        let mut claims: BTreeMap<String, ClaimCpus> = BTreeMap::new();
        let mut policy = Policy::new(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() });
        let mut runtime: BTreeMap<String, CpuSet> = BTreeMap::new();
        let mut next = 0;
        let apply = |runtime: &mut BTreeMap<String, CpuSet>, updates: Vec<Update>| {
            for (id, cpus) in updates {
                if let Some(current) = runtime.get_mut(&id) {
                    *current = cpus;
                }
            }
        };
        for (op, first, len, pick) in steps {
            match op {
                // Prepare a claim on free CPUs and create its container.
                0 => {
                    let taken: CpuSet = claims.values().flat_map(|c| c.cpus.iter()).collect();
                    let cpus: CpuSet = (first..first + len).filter(|c| allocatable.contains(*c) && !taken.contains(*c)).collect();
                    if cpus.is_empty() || allocatable.difference(&taken).difference(&cpus).is_empty() {
                        continue;
                    }
                    let uid = format!("c{next}");
                    let pod = format!("p{next}");
                    next += 1;
                    claims.insert(uid.clone(), ClaimCpus { cpus: cpus.clone(), pods: vec![pod.clone()] });
                    policy.replace_snapshot(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() });
                    let id = format!("k-{uid}");
                    let (got, updates) = policy.create(&id, &id, &pod, &[format!("DRA_CPUSET_{uid}={cpus}")]).unwrap();
                    prop_assert_eq!(&got, &cpus);
                    apply(&mut runtime, updates);
                    runtime.insert(id, got);
                }
                // Stop a claim's container, then unprepare the claim.
                1 => {
                    let Some(uid) = claims.keys().nth(pick).cloned() else { continue };
                    let id = format!("k-{uid}");
                    if runtime.remove(&id).is_some() {
                        let updates = policy.stop(&id);
                        apply(&mut runtime, updates);
                    }
                    claims.remove(&uid);
                    policy.replace_snapshot(Snapshot { allocatable: allocatable.clone(), claims: claims.clone() });
                }
                // Start a shared container.
                2 => {
                    let id = format!("s{next}");
                    next += 1;
                    let (cpus, updates) = policy.create(&id, &id, "shared-pod", &[]).unwrap();
                    apply(&mut runtime, updates);
                    runtime.insert(id, cpus);
                }
                // Stop a shared container.
                3 => {
                    let Some(id) = runtime.keys().filter(|k| k.starts_with('s')).nth(pick).cloned() else { continue };
                    runtime.remove(&id);
                    let updates = policy.stop(&id);
                    apply(&mut runtime, updates);
                }
                // The kubelet updates a container's resources.
                _ => {
                    let Some(id) = runtime.keys().nth(pick).cloned() else { continue };
                    let updates = policy.update(&id);
                    apply(&mut runtime, updates);
                }
            }
            let exclusive: CpuSet = claims.values().flat_map(|c| c.cpus.iter()).collect();
            let pool = allocatable.difference(&exclusive);
            for (id, cpus) in &runtime {
                prop_assert!(!cpus.is_empty(), "{id}");
                match id.strip_prefix("k-") {
                    Some(uid) => prop_assert_eq!(cpus, &claims[uid].cpus),
                    None => prop_assert!(cpus.is_subset(&pool), "{id} on {cpus}, pool {pool}"),
                }
            }
        }
    }
}

#[test]
fn moves_of_an_answer_that_never_reached_the_runtime_are_owed_again() {
    let mut policy = Policy::new(snapshot("0-7", &[]));
    policy.create("shared", "s", "pod-0", &[]).unwrap();
    policy.create("other", "o", "pod-0", &[]).unwrap();
    policy.replace_snapshot(snapshot("0-7", &[("a", "0-1", &["pod-1"])]));
    let (_, updates) = policy
        .create("pinned", "p", "pod-1", &env(&["DRA_CPUSET_a=0-1"]))
        .unwrap();
    assert_eq!(updates.len(), 2);
    // That answer was refused as too large: the next event carries the moves again.
    policy.invalidate_all();
    let mut owed = policy.update("pinned");
    owed.sort();
    assert_eq!(
        owed,
        vec![
            ("other".to_owned(), set("2-7")),
            ("pinned".to_owned(), set("0-1")),
            ("shared".to_owned(), set("2-7"))
        ]
    );
}

/// containerd drops every update of a `CreateContainer` that fails after the plugins answered
/// (another plugin failed, a conflict), then stops and removes the container: the moves that answer
/// carried are owed again, or the shared container would stay on the claim's CPUs.
#[test]
fn moves_of_a_create_the_runtime_undid_are_owed_again_at_its_stop() {
    let mut policy = Policy::new(snapshot("0-7", &[]));
    policy.create("shared", "s", "pod-0", &[]).unwrap();
    policy.replace_snapshot(snapshot("0-7", &[("a", "0-1", &["pod-1"])]));
    let pinned = env(&["DRA_CPUSET_a=0-1"]);
    let (_, updates) = policy.create("c1", "p", "pod-1", &pinned).unwrap();
    assert_eq!(updates, vec![("shared".to_owned(), set("2-7"))]);
    // The create failed in containerd: it stops and removes c1.
    assert_eq!(
        policy.stop("c1"),
        vec![("shared".to_owned(), set("2-7"))],
        "the move is sent again"
    );
    policy.forget("c1");
    // The kubelet creates the container again: nothing more is owed.
    let (_, updates) = policy.create("c2", "p", "pod-1", &pinned).unwrap();
    assert!(updates.is_empty(), "{updates:?}");
}
