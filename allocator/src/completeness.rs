//! Whether a pool is complete, as `GatherPools` (`pools_incubating.go`) decides: the node's
//! slices of the pool's newest generation there are enough when they are exactly
//! `resourceSliceCount`. Otherwise every slice of the pool counts, on any node (`checkSlicesInPool`):
//! a newer generation anywhere makes the node's obsolete (the pool is ignored), and the pool is
//! complete only when its slices of that generation are exactly `resourceSliceCount` (not at
//! least: more is as incomplete as fewer). A pool complete only with other nodes' slices keeps
//! those for their devices' counter consumption (`DeviceSlicesNotTargetingNode`), which their
//! allocations charge against the pool's counter sets.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::ResourceSlice;

use crate::model::{Pools, counters};
use crate::quantity::Quantity;

/// What the scheduler makes of a pool on the node.
#[derive(Debug)]
pub(crate) enum Completeness<'a> {
    /// Complete; the pool's slices of other nodes, if the node's alone are not all of them.
    Complete(Vec<&'a ResourceSlice>),
    /// Being updated: `present` slices of the generation in all, `expected` wanted.
    Incomplete { present: usize, expected: i64 },
    /// A newer generation (`newer`) exists elsewhere: the pool is ignored.
    Obsolete { newer: i64 },
}

/// How the scheduler takes the pool whose slices for the node are `mine` (its newest
/// generation there, in the order given), among `all` slices (of any node and pool).
pub(crate) fn completeness<'a>(
    mine: &[&'a ResourceSlice],
    all: &[&'a ResourceSlice],
) -> Completeness<'a> {
    let Some(first) = mine.first() else {
        return Completeness::Complete(Vec::new());
    };
    let pool = &first.spec.pool;
    let expected = pool.resource_slice_count;
    if mine.len() as i64 == expected {
        return Completeness::Complete(Vec::new());
    }
    let mut same = Vec::new();
    for slice in all {
        if slice.spec.driver != first.spec.driver || slice.spec.pool.name != pool.name {
            continue;
        }
        match slice.spec.pool.generation {
            g if g > pool.generation => return Completeness::Obsolete { newer: g },
            g if g == pool.generation => same.push(*slice),
            _ => {}
        }
    }
    if same.len() as i64 != expected {
        return Completeness::Incomplete {
            present: same.len(),
            expected,
        };
    }
    same.retain(|s| !mine.iter().any(|m| std::ptr::eq(*m, *s)));
    Completeness::Complete(same)
}

/// A device of another node's slice in a pool complete only with it: what it consumes.
#[derive(Debug, Clone, Default)]
pub struct Elsewhere {
    /// Counters consumed per counter set (index into [`crate::Pools::counter_sets`]).
    pub consumes: Vec<(usize, BTreeMap<String, Quantity>)>,
    /// Whether an allocation already charged them (once per device).
    pub charged: bool,
}

impl Pools {
    /// Records what the devices of `slices`, other nodes' slices of the complete pool `id`,
    /// consume of its counter sets (`sets`, by name); the first problem `buildPool` finds in them
    /// (a counter set or counter the pool does not have), if any.
    pub(crate) fn record_elsewhere(
        &mut self,
        id: &str,
        slices: &[&ResourceSlice],
        sets: &BTreeMap<(Option<usize>, String), usize>,
    ) -> Option<String> {
        let mut invalid = None;
        for device in slices.iter().flat_map(|s| s.spec.devices.iter().flatten()) {
            let mut consumes = Vec::new();
            for consumption in device.consumes_counters.iter().flatten() {
                let name = &consumption.counter_set;
                let Some(&set) = sets.get(&(None, name.clone())) else {
                    invalid.get_or_insert(format!("counter set {name} not found"));
                    continue;
                };
                let counters = counters(&consumption.counters, &mut self.warnings);
                if let Some(missing) = self
                    .counter_sets
                    .get(set)
                    .and_then(|s| counters.keys().find(|c| !s.counters.contains_key(*c)))
                {
                    invalid.get_or_insert(format!(
                        "counter {missing} not found in counter set {name}"
                    ));
                }
                consumes.push((set, counters));
            }
            if !consumes.is_empty() {
                let elsewhere = Elsewhere {
                    consumes,
                    charged: false,
                };
                self.elsewhere
                    .insert(format!("{id}/{}", device.name), elsewhere);
            }
        }
        invalid
    }

    /// Charges the counters of `id`, a device of another node's slice of a pool complete only
    /// with it, for an allocation (`admin`: with admin access, which holds nothing): once per
    /// device (`checkAvailableCounters`). Whether `id` is such a device.
    pub(crate) fn charge_elsewhere(&mut self, id: &str, admin: bool) -> bool {
        let Some(device) = self.elsewhere.get_mut(id) else {
            return false;
        };
        if !admin && !std::mem::replace(&mut device.charged, true) {
            for (set, counters) in &device.consumes {
                if let Some(used) = self.counters_used.get_mut(*set) {
                    for (name, q) in counters {
                        let entry = used.entry(name.clone()).or_default();
                        *entry = entry.plus(*q);
                    }
                }
            }
        }
        true
    }
}
