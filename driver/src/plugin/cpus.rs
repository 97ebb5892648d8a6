//! Choosing the CPUs of a grouped CPU claim, in the spirit of the kubelet CPU manager's static policy:
//! whole L3 (uncore cache) groups before partial ones, whole cores before split cores, inside the
//! group the claim consumes from (a NUMA node or a socket), never a reserved CPU or one another claim
//! holds. Packed by default (fill the groups already in use first, so free groups stay whole); spread
//! takes whole cores round-robin across the L3 groups. The result depends only on the inputs.

use std::collections::BTreeMap;

use hal::{CpuInventory, CpuSet};

/// How CPUs are chosen within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Few L3 groups, the busiest first.
    #[default]
    Packed,
    /// Across the L3 groups, whole cores round-robin.
    Spread,
}

/// Why the CPUs of a claim could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The claim asks for no CPU.
    #[error("a claim for 0 CPUs")]
    Zero,
    /// Fewer CPUs are free in the group than asked.
    #[error("{asked} CPUs asked, {free} free in the group ({held} held by other claims)")]
    TooFew {
        /// CPUs asked.
        asked: usize,
        /// CPUs free in the group.
        free: usize,
        /// CPUs of the group other claims hold.
        held: usize,
    },
    /// Some CPUs could not be placed (not expected once enough are free).
    #[error("{left} of {asked} CPUs could not be placed")]
    Unplaced {
        /// CPUs left unplaced.
        left: usize,
        /// CPUs asked.
        asked: usize,
    },
}

impl AllocError {
    /// Whether the claim itself is wrong (retrying cannot help), rather than the group too full.
    pub fn is_invalid_claim(&self) -> bool {
        matches!(self, AllocError::Zero)
    }
}

/// `count` CPUs of `candidates` (the group's allocatable CPUs) that are not in `taken`.
pub fn allocate(
    topology: &CpuInventory,
    candidates: &CpuSet,
    taken: &CpuSet,
    count: usize,
    placement: Placement,
) -> Result<CpuSet, AllocError> {
    let free = candidates.difference(taken);
    if count == 0 {
        return Err(AllocError::Zero);
    }
    if count > free.len() {
        return Err(AllocError::TooFew {
            asked: count,
            free: free.len(),
            held: candidates.intersection(taken).len(),
        });
    }
    // The L3 groups and cores of the candidates, each with its free CPUs.
    let mut l3: BTreeMap<u32, Vec<CpuSet>> = BTreeMap::new();
    for cpu in candidates.iter() {
        let info = topology.cpu(cpu);
        let group = info.and_then(|c| c.l3).unwrap_or(u32::MAX);
        let siblings = info
            .and_then(|c| c.siblings.clone())
            .unwrap_or_else(|| CpuSet::from_iter([cpu]))
            .intersection(candidates);
        let cores = l3.entry(group).or_default();
        if !cores.iter().any(|core| core.contains(cpu)) {
            cores.push(siblings);
        }
    }
    let mut chosen = CpuSet::new();
    let mut need = count;
    let take = |set: &CpuSet, chosen: &mut CpuSet, need: &mut usize| {
        for cpu in set.iter().take(*need) {
            chosen.insert(cpu);
            *need -= 1;
        }
    };
    let free_in = |cores: &Vec<CpuSet>, chosen: &CpuSet| {
        cores
            .iter()
            .map(|c| c.intersection(&free).difference(chosen).len())
            .sum::<usize>()
    };
    let size_of = |cores: &Vec<CpuSet>| cores.iter().map(CpuSet::len).sum::<usize>();

    // 1. Whole free L3 groups, the largest first, while the claim needs at least a whole one.
    let mut by_size: Vec<(u32, &Vec<CpuSet>)> = l3.iter().map(|(id, c)| (*id, c)).collect();
    by_size.sort_by_key(|(id, cores)| (std::cmp::Reverse(size_of(cores)), *id));
    for (_, cores) in &by_size {
        let group: CpuSet = cores.iter().flat_map(CpuSet::iter).collect();
        if !group.is_empty() && group.len() <= need && group.is_subset(&free.difference(&chosen)) {
            take(&group, &mut chosen, &mut need);
        }
    }
    // Group order for the rest. Packed: a group that holds the whole remainder, partially used ones
    // first and the tightest of them, so whole groups stay whole; spread: the freest first.
    let mut groups: Vec<(u32, &Vec<CpuSet>)> = l3.iter().map(|(id, c)| (*id, c)).collect();
    match placement {
        Placement::Packed => groups.sort_by_key(|(id, cores)| {
            let free = free_in(cores, &chosen);
            (free < need, free == size_of(cores), free, *id)
        }),
        Placement::Spread => {
            groups.sort_by_key(|(id, cores)| (std::cmp::Reverse(free_in(cores, &chosen)), *id))
        }
    }
    let free_now = |chosen: &CpuSet| free.difference(chosen);
    // 2. Whole free cores.
    match placement {
        Placement::Packed => {
            for (_, cores) in &groups {
                for core in cores.iter() {
                    if need >= core.len() && core.is_subset(&free_now(&chosen)) {
                        take(core, &mut chosen, &mut need);
                    }
                }
            }
        }
        Placement::Spread => loop {
            let mut progress = false;
            for (_, cores) in &groups {
                let free_core = cores
                    .iter()
                    .find(|core| need >= core.len() && core.is_subset(&free_now(&chosen)));
                if let Some(core) = free_core {
                    take(core, &mut chosen, &mut need);
                    progress = true;
                }
            }
            if !progress || need == 0 {
                break;
            }
        },
    }
    // 3. Single CPUs: of split cores first (their siblings are already taken), then the rest.
    for (_, cores) in &groups {
        let mut ordered: Vec<&CpuSet> = cores.iter().collect();
        ordered.sort_by_key(|core| {
            let free = core.intersection(&free_now(&chosen)).len();
            (free == core.len(), core.first())
        });
        for core in ordered {
            let rest = core.intersection(&free_now(&chosen));
            take(&rest, &mut chosen, &mut need);
        }
    }
    if need > 0 {
        return Err(AllocError::Unplaced {
            left: need,
            asked: count,
        });
    }
    Ok(chosen)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
