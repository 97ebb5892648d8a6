//! Depth-first search with backtracking over the requests of one claim, in the order the Kubernetes
//! allocator uses: requests in order, `firstAvailable` alternatives in order, devices in pool order,
//! combinations of a request's devices in increasing device order. A claim with a solution is never
//! reported unsolvable, short of the step limit.
//!
//! The claims of one pod are searched together, as the scheduler's `Allocate` does with all of a
//! pod's pending claims: one claim after the other (requests of [`Claim::joint`]), backtracking
//! across them, with devices taken by an earlier claim in use for the later ones (unless shared),
//! constraints and the 32-device limit per claim.

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
    /// A selector failed on this device with a CEL runtime error (the scheduler's message): the
    /// scheduler fails the whole claim when its search reaches the device while it is free.
    pub error: Option<String>,
}

/// The most devices one claim may get (`AllocationResultsMaxSize` of resource.k8s.io/v1).
pub const MAX_DEVICES_PER_CLAIM: usize = 32;

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
    /// Prune where a matchAttribute value already fixed has too few devices left (on by default;
    /// off only to check in tests that pruning never changes an answer).
    pub counting_bounds: bool,
    times_picked: Vec<u32>,
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
    /// Set when the search stopped as the scheduler does with an error (a CEL runtime error on a
    /// device it reached, a device of `allocationMode: All` that breaks a constraint).
    pub error: Option<String>,
    /// `namespace/name` of the claim, for error messages as the scheduler words them.
    pub claim_name: String,
    /// For a joint search, `namespace/name` of each claim by index (empty: [`Search::claim_name`]
    /// for all).
    pub claim_names: Vec<String>,
    /// The claim whose request the search was on when it stopped with [`Search::error`].
    pub error_claim: usize,
    /// No pruning that could skip a device the scheduler would reach: set when reaching a device
    /// can end in an error (CEL runtime errors, `allocationMode: All` under a constraint).
    strict: bool,
    /// Set by [`Search::add`] when it refused a device only because of a constraint.
    constraint_failed: bool,
    /// Set while unwinding from a choice that would take the claim past 32 devices.
    exceeded: bool,
    /// `[request][alternative]`: some candidate fails with a CEL runtime error.
    errors_in: Vec<Vec<bool>>,
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
            counting_bounds: true,
            times_picked: vec![0; pools.devices.len()],
            consumed: vec![BTreeMap::new(); pools.devices.len()],
            counters: vec![BTreeMap::new(); pools.counter_sets.len()],
            matched: vec![(None, 0); claim.constraints.len()],
            distinct: vec![Vec::new(); claim.constraints.len()],
            picks: Vec::new(),
            steps: 0,
            limit,
            gave_up: false,
            error: None,
            claim_name: String::new(),
            claim_names: Vec::new(),
            error_claim: 0,
            strict: fits
                .iter()
                .flatten()
                .flatten()
                .any(|fit| fit.error.is_some())
                || claim
                    .requests
                    .iter()
                    .flat_map(|r| &r.alternatives)
                    .any(|a| a.mode == Mode::All),
            constraint_failed: false,
            exceeded: false,
            errors_in: fits
                .iter()
                .map(|per_request| {
                    per_request
                        .iter()
                        .map(|f| f.iter().any(|fit| fit.error.is_some()))
                        .collect()
                })
                .collect(),
            match_counts: match_counts(claim, pools, fits),
        }
    }

    /// Forward check when a matchAttribute value is fixed: every later request covered by the
    /// constraint must still have enough fits with that value. Without it a value no later request
    /// can match is only found out after trying every combination of the requests before.
    fn later_requests_can_match(&self, c: usize, r: usize, value: &AttrValue) -> bool {
        // The scheduler has no such check: where it would go on to an error, so must we.
        if self.strict {
            return true;
        }
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

    /// No pruning may skip a device the scheduler would reach (a CEL runtime error or
    /// `allocationMode: All` can end the scheduler's search with an error there).
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// How many of `fits` carry the value that a covering matchAttribute constraint already fixed,
    /// for the tightest such constraint; `None` when no constraint fixed a value.
    fn fits_with_fixed_values(&self, r: usize, a: usize, fits: &[Fit]) -> Option<usize> {
        let name = self.alternative_name(r, a);
        let mut tightest: Option<usize> = None;
        for (c, constraint) in self.claim.constraints.iter().enumerate() {
            if !self.applies(c, r, name) {
                continue;
            }
            let (ConstraintKind::Match(attribute), Some((Some(fixed), _))) =
                (&constraint.kind, self.matched.get(c))
            else {
                continue;
            };
            let have = fits
                .iter()
                .filter(|fit| {
                    self.pools
                        .devices
                        .get(fit.device)
                        .and_then(|d| d.attributes.get(attribute))
                        == Some(fixed)
                })
                .count();
            tightest = Some(tightest.map_or(have, |t| t.min(have)));
        }
        tightest
    }

    /// Whether every request can be satisfied; the allocation is in [`Search::picks`]. False with
    /// [`Search::error`] set when the scheduler would fail the claim with an error.
    pub fn run(&mut self) -> bool {
        self.request(0)
    }

    /// Whether constraint `c` applies to alternative `name` of request `r`: not left out, of the
    /// same claim, and covering it.
    fn applies(&self, c: usize, r: usize, name: &str) -> bool {
        if self.skip_all_constraints || self.skip_constraint == Some(c) {
            return false;
        }
        let (Some(constraint), Some(request)) =
            (self.claim.constraints.get(c), self.claim.requests.get(r))
        else {
            return false;
        };
        constraint.claim == request.claim && constraint.covers(name)
    }

    /// The claim request `r` belongs to.
    fn claim_of(&self, r: usize) -> usize {
        self.claim.requests.get(r).map_or(0, |q| q.claim)
    }

    /// How many of the picks (a suffix: claims are searched one after the other) belong to
    /// claim `claim`.
    fn picks_of_claim(&self, claim: usize) -> usize {
        self.picks
            .iter()
            .rev()
            .take_while(|p| self.claim_of(p.request) == claim)
            .count()
    }

    /// `namespace/name` of claim `claim`, for the scheduler's messages.
    fn name_of_claim(&self, claim: usize) -> &str {
        self.claim_names
            .get(claim)
            .map_or(self.claim_name.as_str(), String::as_str)
    }

    fn set_error(&mut self, r: usize, error: String) {
        self.error_claim = self.claim_of(r);
        self.error = Some(error);
    }

    fn stopped(&self) -> bool {
        self.gave_up || self.error.is_some() || self.exceeded
    }

    fn request(&mut self, r: usize) -> bool {
        let found = self.request_in_claim(r);
        // The first request of a later claim: the scheduler does not pass "over the limit" back
        // into the claim before (`allocateOne`, done with the claim: a different choice there may
        // let a sub-request with fewer devices fit here).
        if r > 0 && self.claim_of(r) != self.claim_of(r - 1) {
            self.exceeded = false;
        }
        found
    }

    fn request_in_claim(&mut self, r: usize) -> bool {
        let Some(request) = self.claim.requests.get(r) else {
            return true;
        };
        let claim = request.claim;
        let mut exceeded_every = true;
        for (a, alternative) in request.alternatives.iter().enumerate() {
            let fits = self
                .fits
                .get(r)
                .and_then(|f| f.get(a))
                .map_or(&[][..], Vec::as_slice);
            // The scheduler never goes past 32 devices: an alternative that would is not tried
            // (`allocateOne`: errAllocationResultMaxSizeExceeded, then the next sub-request).
            let wanted = match alternative.mode {
                Mode::Exact(n) => n,
                Mode::All => fits.len(),
            };
            // The count is known before any device is chosen, so the scheduler unwinds to the
            // nearest firstAvailable request without trying other devices on the way.
            let found = if self.picks_of_claim(claim).saturating_add(wanted) > MAX_DEVICES_PER_CLAIM
            {
                self.exceeded = true;
                false
            } else {
                match alternative.mode {
                    Mode::Exact(n) => self.choose(r, a, fits, 0, n),
                    Mode::All => self.take_all(r, a, fits),
                }
            };
            if found {
                return true;
            }
            if self.gave_up || self.error.is_some() {
                return false;
            }
            if self.exceeded {
                if !request.first_available {
                    return false;
                }
                // The next sub-request may need fewer devices.
                self.exceeded = false;
            } else {
                exceeded_every = false;
            }
        }
        // Every sub-request went past the limit: so will any other choice of the requests before,
        // up to the next firstAvailable request.
        self.exceeded = exceeded_every;
        false
    }

    fn choose(&mut self, r: usize, a: usize, fits: &[Fit], from: usize, left: usize) -> bool {
        if left == 0 {
            return self.request(r + 1);
        }
        // Too few devices left can only end in failure; but where a device ahead fails with a CEL
        // error, the scheduler goes on to it, so this search does too.
        let prune = !self
            .errors_in
            .get(r)
            .and_then(|e| e.get(a))
            .copied()
            .unwrap_or(false);
        // Where a matchAttribute constraint has fixed its value, fewer devices with that value left
        // than still wanted can only end in failure too: without this, 32 CPUs of one NUMA node
        // out of two groups of 28 try every combination before giving up.
        if prune
            && self.counting_bounds
            && !self.strict
            && let Some(have) = self.fits_with_fixed_values(r, a, fits.get(from..).unwrap_or(&[]))
            && have < left
        {
            return false;
        }
        for i in from..fits.len() {
            if (prune && fits.len() - i < left) || self.stopped() {
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
        let mut all = true;
        for fit in fits {
            if !self.add(r, a, fit) {
                all = false;
                // The scheduler must have every device; one that breaks a constraint is an error
                // there (`allocateDevice` with must: "cannot add device ...").
                if self.constraint_failed && !self.stopped() {
                    let device = self.pools.devices.get(fit.device).map(|d| d.id());
                    // The scheduler names a sub-request by its own name only.
                    let name = self.alternative_name(r, a);
                    let request = name.rsplit('/').next().unwrap_or_default();
                    let error = format!(
                        "claim {}, request {request}: cannot add device {} because a claim constraint would not be satisfied",
                        self.name_of_claim(self.claim_of(r)),
                        device.unwrap_or_default()
                    );
                    self.set_error(r, error);
                }
                break;
            }
        }
        if all && self.request(r + 1) {
            return true;
        }
        while self.picks.len() > before {
            self.undo();
        }
        false
    }

    fn alternative_name(&self, r: usize, a: usize) -> &'a str {
        let claim: &'a Claim = self.claim;
        claim
            .requests
            .get(r)
            .and_then(|q| q.alternatives.get(a))
            .map_or("", |alt| alt.name.as_str())
    }

    fn admin(&self, r: usize, a: usize) -> bool {
        self.claim
            .requests
            .get(r)
            .and_then(|q| q.alternatives.get(a))
            .is_some_and(|alt| alt.admin_access)
    }

    /// Whether the scheduler sees device `d` as in use for alternative `a` of request `r` (checked
    /// before anything else, selectors included: `allocateOne`).
    fn in_use(&self, r: usize, a: usize, d: usize) -> bool {
        let Some(device) = self.pools.devices.get(d) else {
            return true;
        };
        if device.allow_multiple {
            let held = self.pools.usage.get(d).is_some_and(|u| u.held_by.is_some());
            return held && !self.admin(r, a);
        }
        // Admin access does not see devices of other claims as in use, only its own claim's
        // (`allocatingDeviceForClaim`); any other request sees every device being allocated
        // (`deviceInUse`).
        if self.admin(r, a) {
            let claim = self.claim_of(r);
            let mine = self.picks_of_claim(claim);
            let start = self.picks.len().saturating_sub(mine);
            return self
                .picks
                .get(start..)
                .is_some_and(|picks| picks.iter().any(|p| p.device == d));
        }
        let held = self.pools.usage.get(d).is_some_and(|u| u.held_by.is_some());
        held || self.times_picked.get(d).copied().unwrap_or(0) > 0
    }

    /// Tries `fit` for alternative `a` of request `r`; on success the state holds it. The checks
    /// come in the scheduler's order (`allocateDevice`): in use, counters, taints, constraints,
    /// capacity.
    fn add(&mut self, r: usize, a: usize, fit: &Fit) -> bool {
        self.constraint_failed = false;
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
        if self.in_use(r, a, d) {
            return false;
        }
        if let Some(error) = &fit.error {
            self.set_error(r, error.clone());
            return false;
        }
        if fit.blocked {
            return false;
        }
        // Counters are charged by every allocation of a device, admin access included, except
        // that a shared device is charged by its first share only (`skipCounterCheck`).
        let counts = !device.allow_multiple
            || (usage.shares == 0 && self.times_picked.get(d).copied().unwrap_or(0) == 0);
        if counts && !device.consumes.is_empty() {
            // A counter set of the pool already over-committed by what is held (an inconsistent
            // state) leaves no counters for any device of the pool (`checkAvailableCounters`
            // compares every set of the pool).
            if self.pools.starved.get(d).copied().unwrap_or(false) {
                return false;
            }
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
        let name = self.alternative_name(r, a);
        let mut values = Vec::new();
        for (c, constraint) in self.claim.constraints.iter().enumerate() {
            if !self.applies(c, r, name) {
                continue;
            }
            let (ConstraintKind::Match(attribute) | ConstraintKind::Distinct(attribute)) =
                &constraint.kind;
            let Some(value) = device.attributes.get(attribute) else {
                self.constraint_failed = true;
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
                self.constraint_failed = true;
                return false;
            }
            values.push((c, value.clone()));
        }
        // Capacity: what other claims' shares and this claim's earlier picks consumed.
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
        if let Some(now) = self.consumed.get_mut(d) {
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
            consumes: fit.consumes.clone(),
            counted: counts,
        });
        true
    }

    fn undo(&mut self) {
        let Some(pick) = self.picks.pop() else { return };
        let d = pick.device;
        if let Some(t) = self.times_picked.get_mut(d) {
            *t = t.saturating_sub(1);
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
            if !self.applies(c, pick.request, &name) {
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
                            if request.claim != constraint.claim
                                || !constraint.covers(&alternative.name)
                            {
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
