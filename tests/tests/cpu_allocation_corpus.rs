//! The CPU allocation policy of the plugin on every real topology of the hwloc corpus: random claim
//! sequences (a fixed-seed generator, so a failure replays) on each NUMA node and on the whole machine,
//! with reserved CPUs. No CPU is ever given twice, reserved or offline CPUs never appear, a claim is
//! refused only when it does not fit, and the same sequence gives the same CPUs.
//!
//! Needs `../shared/corpora` and `tar`: ignored by default, run by `.ci/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use backends::{SysfsCpuTopology, SysfsRoot};
use driver::plugin::cpus::{Placement, allocate};
use hal::{CpuInventory, CpuSet, CpuTopology};
use stack_tests::hwloc;

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn run(topology: &CpuInventory, group: &CpuSet, seed: u64, placement: Placement) -> Vec<CpuSet> {
    let online = topology.online();
    let mut rng = Rng(seed | 1);
    let mut held: Vec<CpuSet> = Vec::new();
    let mut given = Vec::new();
    for _ in 0..60 {
        if rng.next().is_multiple_of(3) && !held.is_empty() {
            let i = (rng.next() % held.len() as u64) as usize;
            held.remove(i);
            continue;
        }
        let taken: CpuSet = held.iter().flat_map(CpuSet::iter).collect();
        let want = 1 + (rng.next() % 12) as usize;
        match allocate(topology, group, &taken, want, placement) {
            Ok(cpus) => {
                assert_eq!(cpus.len(), want);
                assert!(
                    cpus.is_subset(group) && cpus.is_subset(&online),
                    "{cpus} outside {group}"
                );
                assert!(
                    cpus.intersection(&taken).is_empty(),
                    "{cpus} given twice ({taken})"
                );
                given.push(cpus.clone());
                held.push(cpus);
            }
            Err(e) => assert!(
                want > group.difference(&taken).len(),
                "refused a fitting claim: {e}"
            ),
        }
    }
    given
}

#[test]
#[ignore = "needs ../shared corpora"]
fn cpu_allocation_holds_on_every_hwloc_topology_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("cpu-alloc-").unwrap();
    let mut topologies = 0;
    for dump in hwloc::dumps().unwrap() {
        let root = dump.extract(scratch.path()).unwrap();
        let Ok(topology) = SysfsCpuTopology::new(SysfsRoot::new(&root)).cpu_inventory() else {
            continue;
        };
        let online = topology.online();
        if online.len() < 2 {
            continue;
        }
        // The first online CPU of each package is reserved, as a kubelet reservation would be.
        let reserved: CpuSet = topology
            .packages()
            .values()
            .filter_map(CpuSet::first)
            .collect();
        let mut groups: Vec<CpuSet> = topology.numa_groups().into_values().collect();
        groups.push(online.clone());
        for (i, group) in groups.iter().enumerate() {
            let group = group.intersection(&online).difference(&reserved);
            if group.is_empty() {
                continue;
            }
            for placement in [Placement::Packed, Placement::Spread] {
                let seed = 0x9e37_79b9_7f4a_7c15 ^ (i as u64) ^ ((topologies as u64) << 8);
                let first = run(&topology, &group, seed, placement);
                assert_eq!(
                    first,
                    run(&topology, &group, seed, placement),
                    "{} not deterministic",
                    dump.name
                );
                assert!(
                    first.iter().all(|c| c.intersection(&reserved).is_empty()),
                    "{}",
                    dump.name
                );
            }
        }
        topologies += 1;
    }
    assert!(topologies >= 30, "only {topologies} topologies");
}
