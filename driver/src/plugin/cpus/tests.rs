use proptest::prelude::*;

use super::*;

fn topology(name: &str) -> CpuInventory {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    use hal::CpuTopology;
    backends::SysfsCpuTopology::new(backends::SysfsRoot::new(machine.root()))
        .cpu_inventory()
        .unwrap()
}

fn set(text: &str) -> CpuSet {
    CpuSet::from_cpulist(text).unwrap()
}

#[test]
fn whole_cores_first_and_never_a_reserved_or_taken_cpu() {
    let xeon = topology("xeon");
    // NUMA node 0 minus the reserved core 0 (CPUs 0 and 112).
    let group = set("0-55,112-167").difference(&set("0,112"));
    assert_eq!(
        allocate(&xeon, &group, &CpuSet::new(), 4, Placement::Packed).unwrap(),
        set("1-2,113-114")
    );
    assert_eq!(
        allocate(&xeon, &group, &CpuSet::new(), 3, Placement::Packed).unwrap(),
        set("1-2,113")
    );
    // A split core (3 held, 115 free) is used before a whole one is broken.
    let taken = set("1-2,113-114,3");
    assert_eq!(
        allocate(&xeon, &group, &taken, 1, Placement::Packed).unwrap(),
        set("115")
    );
    assert_eq!(
        allocate(&xeon, &group, &taken, 2, Placement::Packed).unwrap(),
        set("4,116")
    );
    let error = allocate(&xeon, &group, &taken, 200, Placement::Packed).unwrap_err();
    assert_eq!(
        error,
        AllocError::TooFew {
            asked: 200,
            free: 105,
            held: 5
        }
    );
    assert_eq!(
        error.to_string(),
        "200 CPUs asked, 105 free in the group (5 held by other claims)"
    );
}

#[test]
fn whole_l3_groups_before_partial_ones_and_spread_across_them() {
    let epyc = topology("epyc");
    let l3 = epyc.l3_groups();
    assert!(l3.len() >= 4, "{l3:?}");
    let socket0: CpuSet = epyc.packages()[&0].clone();
    let first_l3 = l3.values().find(|g| g.is_subset(&socket0)).unwrap().clone();
    let size = first_l3.len();
    // Exactly an L3 group's worth: one whole group, not bits of two.
    let packed = allocate(&epyc, &socket0, &CpuSet::new(), size, Placement::Packed).unwrap();
    assert!(l3.values().any(|g| *g == packed), "{packed:?}");
    // Packed keeps filling the group already in use.
    let more = allocate(
        &epyc,
        &socket0,
        &first_l3.iter().take(2).collect(),
        2,
        Placement::Packed,
    )
    .unwrap();
    assert!(more.is_subset(&first_l3), "{more:?} within {first_l3:?}");
    // Spread puts whole cores in different L3 groups.
    let spread = allocate(&epyc, &socket0, &CpuSet::new(), 4, Placement::Spread).unwrap();
    let touched = l3
        .values()
        .filter(|g| !g.intersection(&spread).is_empty())
        .count();
    assert!(touched >= 2, "{spread:?}");
}

/// Claims come and go on a fixture's NUMA group; the invariants hold at every step.
fn run_sequence(name: &str, ops: &[(bool, usize)], placement: Placement) -> Vec<CpuSet> {
    let topo = topology(name);
    let reserved = topo.online().iter().take(2).collect::<CpuSet>();
    let group = topo.online().difference(&reserved);
    let mut held: Vec<CpuSet> = Vec::new();
    let mut history = Vec::new();
    for (release, n) in ops {
        if *release && !held.is_empty() {
            let index = n % held.len();
            held.remove(index);
            continue;
        }
        let taken: CpuSet = held.iter().flat_map(CpuSet::iter).collect();
        let want = 1 + n % 16;
        match allocate(&topo, &group, &taken, want, placement) {
            Ok(cpus) => {
                assert_eq!(cpus.len(), want);
                assert!(cpus.is_subset(&group), "only candidates");
                assert!(cpus.intersection(&reserved).is_empty(), "never reserved");
                assert!(cpus.intersection(&taken).is_empty(), "never given twice");
                history.push(cpus.clone());
                held.push(cpus);
            }
            Err(_) => assert!(
                want > group.difference(&taken).len(),
                "refused only when it does not fit"
            ),
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn no_cpu_twice_no_reserved_cpu_and_deterministic(
        fixture in prop::sample::select(vec!["xeon", "epyc", "hybrid", "gb300"]),
        ops in prop::collection::vec((any::<bool>(), 0usize..64), 1..40),
        spread in any::<bool>(),
    ) {
        let placement = if spread { Placement::Spread } else { Placement::Packed };
        let first = run_sequence(fixture, &ops, placement);
        let second = run_sequence(fixture, &ops, placement);
        prop_assert_eq!(first, second);
    }
}
