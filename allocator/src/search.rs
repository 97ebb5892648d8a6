//! Depth-first search with backtracking over the requests of one claim, in the order the Kubernetes
//! allocator uses: requests in order, `firstAvailable` alternatives in order, devices in pool order,
//! combinations of a request's devices in increasing device order. A claim with a solution is never
//! reported unsolvable, short of the step limit.

use std::collections::BTreeMap;

use crate::claim::{Claim, ConstraintKind, Mode};
use crate::model::{AttrValue, Pools};
use crate::quantity::Quantity;

/// A device that passed an alternative's selectors, with what one allocation of it consumes
/// (capacity of a multi-allocatable device; empty otherwise).
#[derive(Debug, Clone)]
pub struct Fit {
    /// Index into [`Pools::devices`].
    pub device: usize,
    /// Capacity consumed, by fully qualified name.
    pub consumes: BTreeMap<String, Quantity>,
    /// Matches the selectors but cannot be given (in use, or an untolerated taint): listed only for
    /// `allocationMode: All`, which then fails, as in the scheduler.
    pub blocked: bool,
}

/// One device chosen for one alternative.
#[derive(Debug, Clone)]
pub struct Pick {
    /// Request index.
    pub request: usize,
    /// Alternative index within the request.
    pub alternative: usize,
    /// The device.
    pub device: usize,
    /// Capacity consumed.
    pub consumes: BTreeMap<String, Quantity>,
    counted: bool,
    admin: bool,
}

/// Per request and alternative, how many fits carry each value of one constraint's attribute.
type MatchCounts = Vec<Vec<Option<BTreeMap<AttrValue, usize>>>>;

/// Search state for one claim.
pub struct Search<'a> {
    claim: &'a Claim,
    pools: &'a Pools,
    /// `[request][alternative]` → devices that fit.
    fits: &'a [Vec<Vec<Fit>>],
    /// A constraint to leave out (for explanations), by index.
    pub skip_constraint: Option<usize>,
    /// Leave out every constraint.
    pub skip_all_constraints: bool,
    times_picked: Vec<u32>,
    /// Non-admin picks per device (counters are charged by the first).
    charged: Vec<u32>,
    consumed: Vec<BTreeMap<String, Quantity>>,
    counters: Vec<BTreeMap<String, Quantity>>,
    matched: Vec<(Option<AttrValue>, usize)>,
    distinct: Vec<Vec<AttrValue>>,
    /// The devices chosen so far (the allocation, once [`Search::run`] returns true).
    pub picks: Vec<Pick>,
    /// Devices tried.
    pub steps: u64,
    limit: u64,
    /// Set when the search stopped at the step limit.
    pub gave_up: bool,
    /// `[constraint][request][alternative]`: how many fits carry each value of a matchAttribute
    /// constraint's attribute (None where the constraint does not cover the alternative).
    match_counts: Vec<MatchCounts>,
}

impl<'a> Search<'a> {
    /// A search over `fits` (from the selectors) that stops after `limit` device tries.
    pub fn new(claim: &'a Claim, pools: &'a Pools, fits: &'a [Vec<Vec<Fit>>], limit: u64) -> Self {
        Search {
            claim,
            pools,
            fits,
            skip_constraint: None,
            skip_all_constraints: false,
            times_picked: vec![0; pools.devices.len()],
            charged: vec![0; pools.devices.len()],
            consumed: vec![BTreeMap::new(); pools.devices.len()],
            counters: vec![BTreeMap::new(); pools.counter_sets.len()],
            matched: vec![(None, 0); claim.constraints.len()],
            distinct: vec![Vec::new(); claim.constraints.len()],
            picks: Vec::new(),
            steps: 0,
            limit,
            gave_up: false,
            match_counts: match_counts(claim, pools, fits),
        }
    }

    /// Forward check when a matchAttribute value is fixed: every later request covered by the
    /// constraint must still have enough fits with that value. Without it a value no later request
    /// can match is only found out after trying every combination of the requests before.
    fn later_requests_can_match(&self, c: usize, r: usize, value: &AttrValue) -> bool {
        let Some(per_request) = self.match_counts.get(c) else {
            return true;
        };
        per_request
            .iter()
            .enumerate()
            .skip(r + 1)
            .all(|(r2, alternatives)| {
                alternatives.iter().enumerate().any(|(a2, counts)| {
                    let Some(counts) = counts else { return true };
                    let have = counts.get(value).copied().unwrap_or(0);
                    let fits = self
                        .fits
                        .get(r2)
                        .and_then(|f| f.get(a2))
                        .map_or(0, Vec::len);
                    match self
                        .claim
                        .requests
                        .get(r2)
                        .and_then(|q| q.alternatives.get(a2))
                        .map(|a| a.mode)
                    {
                        Some(Mode::Exact(n)) => have >= n,
                        Some(Mode::All) => have > 0 && have == fits,
                        None => false,
                    }
                })
            })
    }

    /// Whether every request can be satisfied; the allocation is in [`Search::picks`].
    pub fn run(&mut self) -> bool {
        self.request(0)
    }

    fn request(&mut self, r: usize) -> bool {
        let Some(request) = self.claim.requests.get(r) else {
            return true;
        };
        for (a, alternative) in request.alternatives.iter().enumerate() {
            let fits = self
                .fits
                .get(r)
                .and_then(|f| f.get(a))
                .map_or(&[][..], Vec::as_slice);
            let found = match alternative.mode {
                Mode::Exact(n) => self.choose(r, a, fits, 0, n),
                Mode::All => self.take_all(r, a, fits),
            };
            if found {
                return true;
            }
            if self.gave_up {
                return false;
            }
        }
        false
    }

    fn choose(&mut self, r: usize, a: usize, fits: &[Fit], from: usize, left: usize) -> bool {
        if left == 0 {
            return self.request(r + 1);
        }
        for i in from..fits.len() {
            if fits.len() - i < left || self.gave_up {
                break;
            }
            let Some(fit) = fits.get(i) else { break };
            if self.add(r, a, fit) {
                if self.choose(r, a, fits, i + 1, left - 1) {
                    return true;
                }
                self.undo();
            }
        }
        false
    }

    fn take_all(&mut self, r: usize, a: usize, fits: &[Fit]) -> bool {
        if fits.is_empty() {
            return false;
        }
        let before = self.picks.len();
        if fits.iter().all(|fit| self.add(r, a, fit)) && self.request(r + 1) {
            return true;
        }
        while self.picks.len() > before {
            self.undo();
        }
        false
    }

    fn admin(&self, r: usize, a: usize) -> bool {
        self.claim
            .requests
            .get(r)
            .and_then(|q| q.alternatives.get(a))
            .is_some_and(|alt| alt.admin_access)
    }

    /// Tries `fit` for alternative `a` of request `r`; on success the state holds it.
    fn add(&mut self, r: usize, a: usize, fit: &Fit) -> bool {
        self.steps += 1;
        if self.steps > self.limit {
            self.gave_up = true;
            return false;
        }
        let d = fit.device;
        let (Some(device), Some(usage)) = (self.pools.devices.get(d), self.pools.usage.get(d))
        else {
            return false;
        };
        if fit.blocked {
            return false;
        }
        let admin = self.admin(r, a);
        let picked = self.times_picked.get(d).copied().unwrap_or(0);
        if picked > 0 && !device.allow_multiple {
            return false;
        }
        if !admin {
            if usage.held_by.is_some() {
                return false;
            }
            let now = self.consumed.get(d);
            for (name, amount) in &fit.consumes {
                let total = device
                    .capacity
                    .get(name)
                    .map_or(Quantity::ZERO, |c| c.value);
                let used = usage.consumed.get(name).copied().unwrap_or_default();
                let ours = now.and_then(|m| m.get(name)).copied().unwrap_or_default();
                if used.plus(ours).plus(*amount) > total {
                    return false;
                }
            }
        }
        // Counters are consumed once per device, by its first (non-admin) allocation.
        let counts = !admin && self.charged.get(d).copied().unwrap_or(0) == 0 && usage.shares == 0;
        if counts {
            for (set, wanted) in &device.consumes {
                let (Some(total), Some(base), Some(ours)) = (
                    self.pools.counter_sets.get(*set),
                    self.pools.counters_used.get(*set),
                    self.counters.get(*set),
                ) else {
                    return false;
                };
                for (name, q) in wanted {
                    let have = total.counters.get(name).copied().unwrap_or_default();
                    let used = base.get(name).copied().unwrap_or_default();
                    let mine = ours.get(name).copied().unwrap_or_default();
                    if used.plus(mine).plus(*q) > have {
                        return false;
                    }
                }
            }
        }
        let Some(name) = self
            .claim
            .requests
            .get(r)
            .and_then(|q| q.alternatives.get(a))
            .map(|alt| alt.name.as_str())
        else {
            return false;
        };
        let mut values = Vec::new();
        for (c, constraint) in self.claim.constraints.iter().enumerate() {
            if self.skip_all_constraints
                || self.skip_constraint == Some(c)
                || !constraint.covers(name)
            {
                continue;
            }
            let (ConstraintKind::Match(attribute) | ConstraintKind::Distinct(attribute)) =
                &constraint.kind;
            let Some(value) = device.attributes.get(attribute) else {
                return false;
            };
            let ok = match &constraint.kind {
                ConstraintKind::Match(_) => match self.matched.get(c).and_then(|(v, _)| v.as_ref())
                {
                    Some(fixed) => fixed == value,
                    None => self.later_requests_can_match(c, r, value),
                },
                ConstraintKind::Distinct(_) => {
                    self.distinct.get(c).is_some_and(|vs| !vs.contains(value))
                }
            };
            if !ok {
                return false;
            }
            values.push((c, value.clone()));
        }
        // Commit.
        for (c, value) in values {
            match self.claim.constraints.get(c).map(|k| &k.kind) {
                Some(ConstraintKind::Match(_)) => {
                    if let Some(m) = self.matched.get_mut(c) {
                        m.0 = Some(value);
                        m.1 += 1;
                    }
                }
                _ => {
                    if let Some(vs) = self.distinct.get_mut(c) {
                        vs.push(value);
                    }
                }
            }
        }
        if let Some(t) = self.times_picked.get_mut(d) {
            *t += 1;
        }
        if !admin && let Some(c) = self.charged.get_mut(d) {
            *c += 1;
        }
        if !admin && let Some(now) = self.consumed.get_mut(d) {
            for (name, amount) in &fit.consumes {
                let e = now.entry(name.clone()).or_default();
                *e = e.plus(*amount);
            }
        }
        if counts {
            for (set, wanted) in &device.consumes {
                if let Some(ours) = self.counters.get_mut(*set) {
                    for (name, q) in wanted {
                        let e = ours.entry(name.clone()).or_default();
                        *e = e.plus(*q);
                    }
                }
            }
        }
        self.picks.push(Pick {
            request: r,
            alternative: a,
            device: d,
            consumes: if admin {
                BTreeMap::new()
            } else {
                fit.consumes.clone()
            },
            counted: counts,
            admin,
        });
        true
    }

    fn undo(&mut self) {
        let Some(pick) = self.picks.pop() else { return };
        let d = pick.device;
        if let Some(t) = self.times_picked.get_mut(d) {
            *t = t.saturating_sub(1);
        }
        if !pick.admin
            && let Some(c) = self.charged.get_mut(d)
        {
            *c = c.saturating_sub(1);
        }
        if let Some(now) = self.consumed.get_mut(d) {
            for (name, amount) in &pick.consumes {
                if let Some(e) = now.get_mut(name) {
                    *e = e.minus(*amount);
                }
            }
        }
        if pick.counted
            && let Some(device) = self.pools.devices.get(d)
        {
            for (set, wanted) in &device.consumes {
                if let Some(ours) = self.counters.get_mut(*set) {
                    for (name, q) in wanted {
                        if let Some(e) = ours.get_mut(name) {
                            *e = e.minus(*q);
                        }
                    }
                }
            }
        }
        let name = self
            .claim
            .requests
            .get(pick.request)
            .and_then(|q| q.alternatives.get(pick.alternative))
            .map(|alt| alt.name.clone())
            .unwrap_or_default();
        for (c, constraint) in self.claim.constraints.iter().enumerate() {
            if self.skip_all_constraints
                || self.skip_constraint == Some(c)
                || !constraint.covers(&name)
            {
                continue;
            }
            match constraint.kind {
                ConstraintKind::Match(_) => {
                    if let Some(m) = self.matched.get_mut(c) {
                        m.1 = m.1.saturating_sub(1);
                        if m.1 == 0 {
                            m.0 = None;
                        }
                    }
                }
                ConstraintKind::Distinct(_) => {
                    if let Some(vs) = self.distinct.get_mut(c) {
                        vs.pop();
                    }
                }
            }
        }
    }
}

fn match_counts(claim: &Claim, pools: &Pools, fits: &[Vec<Vec<Fit>>]) -> Vec<MatchCounts> {
    claim
        .constraints
        .iter()
        .map(|constraint| {
            let ConstraintKind::Match(attribute) = &constraint.kind else {
                return Vec::new();
            };
            claim
                .requests
                .iter()
                .zip(fits)
                .map(|(request, per_request)| {
                    request
                        .alternatives
                        .iter()
                        .zip(per_request)
                        .map(|(alternative, fits)| {
                            if !constraint.covers(&alternative.name) {
                                return None;
                            }
                            let mut counts = BTreeMap::new();
                            for fit in fits {
                                let value = pools
                                    .devices
                                    .get(fit.device)
                                    .and_then(|d| d.attributes.get(attribute));
                                if let Some(value) = value {
                                    *counts.entry(value.clone()).or_insert(0) += 1;
                                }
                            }
                            Some(counts)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}
