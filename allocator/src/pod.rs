//! A pod's claims searched together, as the scheduler's DRA plugin does: `PreFilter` gathers the
//! pod's ResourceClaims in `spec.resourceClaims` order (a template's claim as the claim the
//! resourceclaim controller stamps out), the implicit claim of its extended resources last
//! (`claimStore`), and `Filter` hands every claim without an allocation to one `Allocate` call,
//! which checks them all first, then searches them one after the other with backtracking across
//! them: a device one claim takes is in use for the next (unless it allows multiple allocations,
//! or the next asks for admin access), and either every claim gets its devices or none does.
//!
//! Upstream: `pkg/scheduler/framework/plugins/dynamicresources/` (`dynamicresources.go`:
//! `foreachPodResourceClaim`, `PreFilter`, `Filter`; `claims.go`: `claimStore.toAllocate`) and
//! `staging/src/k8s.io/dynamic-resource-allocation/structured/internal/incubating/
//! allocator_incubating.go` (`Allocate`, `allocateOne`, `allocateDevice`).

use crate::claim::Claim;
use crate::explain::{Allocator, Prepared};
use crate::input::ClaimInput;
use crate::link::{EXTENDED_RESOURCE_CLAIM_ANNOTATION, PodClaims};
use crate::outcome::{Allocated, Outcome, Status};
use crate::reserved::{
    AllocatedCheck, RESERVED_FOR_MAX_SIZE, check_allocated, post_filter_deallocates,
};
use crate::search::{Fit, Pick, Search};

impl Allocator {
    /// The outcome of each of the pod's claims when the scheduler allocates them together: the
    /// pod's allocated claims hold their devices, the pending ones are searched in one search
    /// (see the module documentation), and the allocated ones are checked as the plugin checks
    /// them around the search (`reserved.rs`). Every outcome names the pod.
    pub fn explain_pod(&mut self, pod: &PodClaims) -> Vec<Outcome> {
        let usage = self.pools.usage.clone();
        let counters_used = self.pools.counters_used.clone();
        let starved = self.pools.starved.clone();
        let before = self.pools.warnings.len();
        self.pools.hold(&pod.allocated);
        let mut held_warnings = self.pools.warnings.split_off(before);
        // Over-committed counter sets are found again: only what the pod's claims add is news.
        held_warnings.retain(|w| !self.pools.warnings.contains(w));
        let checks: Vec<AllocatedCheck> = pod
            .allocated
            .iter()
            .map(|claim| {
                check_allocated(
                    claim,
                    &pod.identity,
                    &self.node,
                    self.gates().binding_conditions,
                )
            })
            .collect();
        let mut allocated: Vec<Outcome> = pod
            .allocated
            .iter()
            .zip(&checks)
            .map(|(claim, check)| {
                let mut outcome = self.allocated_outcome(claim);
                outcome.node_selector.clone_from(&check.node_selector);
                outcome.warnings.extend(check.warnings.iter().cloned());
                outcome
            })
            .collect();
        let mut outcomes: Vec<Outcome> = Vec::new();
        for (label, why) in &pod.missing {
            let mut outcome = self.bare_outcome(label.clone());
            outcome.explanation.push(why.clone());
            outcomes.push(outcome);
        }
        // PreFilter: an allocation's node selector that does not parse fails the pod.
        let prefilter = pod
            .allocated
            .iter()
            .zip(&checks)
            .find_map(|(c, check)| check.prefilter_error.clone().map(|e| (c.label.clone(), e)));
        let pending = if !pod.missing.is_empty() {
            self.not_searched(
                &pod.pending,
                Status::Error,
                &format!(
                    "not searched: the scheduler does not try {} while a claim it names cannot be used",
                    pod.pod
                ),
            )
        } else if let Some((label, error)) = &prefilter {
            for (outcome, check) in allocated.iter_mut().zip(&checks) {
                if let Some(e) = &check.prefilter_error {
                    outcome.status = Status::Error;
                    outcome.explanation = vec![e.clone()];
                }
            }
            self.not_searched(
                &pod.pending,
                Status::Error,
                &format!(
                    "not allocated: the scheduler fails the whole pod with the error of {label}: {error}"
                ),
            )
        } else if let Some(stale) = &pod.stale_extended {
            self.stale_extended(pod, stale)
        } else {
            let mut pending = match pod.pending.is_empty() {
                true => Vec::new(),
                false => self.explain_together(&pod.pending),
            };
            self.filter_allocated(pod, &checks, &mut allocated, &mut pending);
            pending
        };
        outcomes.splice(0..0, allocated);
        outcomes.extend(pending);
        self.pools.usage = usage;
        self.pools.counters_used = counters_used;
        self.pools.starved = starved;
        for outcome in &mut outcomes {
            outcome.pod = Some(pod.pod.clone());
            outcome.warnings.extend(held_warnings.iter().cloned());
            outcome.warnings.extend(pod.warnings.iter().cloned());
        }
        outcomes
    }

    /// Outcomes of claims the scheduler does not search, each with `why`.
    fn not_searched(&self, claims: &[ClaimInput], status: Status, why: &str) -> Vec<Outcome> {
        claims
            .iter()
            .map(|claim| {
                let mut outcome = self.blank_outcome(claim);
                outcome.status = status;
                outcome.explanation.push(why.to_owned());
                outcome
            })
            .collect()
    }

    /// The pod's implicit claim from an earlier scheduling cycle: `filterExtendedResources`
    /// refuses every node with "cannot schedule extended resource claim"
    /// (UnschedulableAndUnresolvable), and `PostFilter` deletes the claim so that the next attempt
    /// builds it anew.
    fn stale_extended(&self, pod: &PodClaims, stale: &ClaimInput) -> Vec<Outcome> {
        let mut outcomes = self.not_searched(
            &pod.pending,
            Status::Unsatisfiable,
            "not searched: the scheduler refuses every node for the pod while its extended-resource claim of an earlier scheduling cycle exists (cannot schedule extended resource claim)",
        );
        let mut outcome = self.blank_outcome(stale);
        outcome.claim = format!(
            "{} (the implicit claim of {}'s extended resources, from an earlier scheduling cycle)",
            stale.label, pod.pod
        );
        outcome.status = Status::Unsatisfiable;
        outcome.explanation = vec![
            "cannot schedule extended resource claim".into(),
            format!(
                "it is annotated {EXTENDED_RESOURCE_CLAIM_ANNOTATION}: \"true\" and controlled by the pod: the claim the scheduler made for the pod's extended resources in an earlier cycle (whose binding failed); Filter refuses every node while it exists, PostFilter deletes it (\"deletion of ResourceClaim completed\"), and the next attempt builds the claim anew (explain answers for that attempt without this claim in the files)"
            ),
        ];
        outcomes.push(outcome);
        outcomes
    }

    /// `Filter` on the pod's allocated claims, after its search (`pending`): a claim not available
    /// on the node refuses it (the search's failure is answered first), and, where the pod fits,
    /// a claim that cannot take one more consumer fails its binding.
    fn filter_allocated(
        &self,
        pod: &PodClaims,
        checks: &[AllocatedCheck],
        allocated: &mut [Outcome],
        pending: &mut [Outcome],
    ) {
        let fits = pending.iter().all(|o| o.status == Status::Allocated);
        let mut unavailable = Vec::new();
        for ((outcome, check), claim) in allocated.iter_mut().zip(checks).zip(&pod.allocated) {
            let Some(why) = &check.unavailable else {
                continue;
            };
            unavailable.push(outcome.claim.clone());
            outcome.status = Status::Unsatisfiable;
            outcome.explanation = vec![
                why.clone(),
                match post_filter_deallocates(claim, &pod.identity) {
                    true => "when no node fits the pod, the scheduler's PostFilter deallocates this claim (reserved for no other pod): \"deallocation of ResourceClaim completed\", and the pod is tried again".into(),
                    false => "it is reserved for other pods, so the scheduler's PostFilter does not deallocate it: the pod stays unschedulable while they use it".into(),
                },
            ];
        }
        if !unavailable.is_empty() {
            if fits {
                for outcome in pending.iter_mut() {
                    outcome.status = Status::Unsatisfiable;
                    outcome.devices.clear();
                    outcome.numa = None;
                    outcome.pcie_root = None;
                    outcome.node_selector = None;
                    outcome.explanation = vec![format!(
                        "not allocated: the pod's pending claims would fit, but the scheduler's Filter refuses the node: resourceclaim not available on the node ({})",
                        unavailable.join(", ")
                    )];
                }
            }
            return;
        }
        if !fits {
            return;
        }
        // PreBind: the pod is added to each claim's reservedFor; the API server refuses a
        // claim's 257th consumer.
        let Some((k, error)) = checks
            .iter()
            .enumerate()
            .find_map(|(k, c)| c.binding_error.clone().map(|e| (k, e)))
        else {
            return;
        };
        let label = allocated
            .get(k)
            .map(|o| o.claim.clone())
            .unwrap_or_default();
        for (i, outcome) in allocated.iter_mut().enumerate() {
            if i == k {
                outcome.status = Status::Error;
                outcome.explanation = vec![
                    error.clone(),
                    format!(
                        "the scheduler's Filter accepts the node (resourceclaim.CanBeReserved: no limit on sharing), so the pod is assigned to it, and PreBind then fails adding it to status.reservedFor, which holds {RESERVED_FOR_MAX_SIZE} other consumers: the pod goes back to the queue and fails the same way until one leaves"
                    ),
                ];
            } else {
                outcome
                    .warnings
                    .push(format!("the pod's binding fails at {label}: {error}"));
            }
        }
        for outcome in pending.iter_mut() {
            outcome
                .warnings
                .push(format!("the pod's binding fails at {label}: {error}"));
        }
    }

    /// An allocated claim of the pod: its devices as its status lists them.
    fn allocated_outcome(&self, claim: &ClaimInput) -> Outcome {
        let mut outcome = self.blank_outcome(claim);
        outcome.status = Status::Allocated;
        let results = claim
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_ref())
            .and_then(|a| a.devices.as_ref())
            .and_then(|d| d.results.as_ref());
        for result in results.into_iter().flatten() {
            let device = self.pools.devices.iter().find(|d| {
                d.driver == result.driver && d.pool == result.pool && d.name == result.device
            });
            outcome.devices.push(Allocated {
                request: result.request.clone(),
                driver: result.driver.clone(),
                pool: result.pool.clone(),
                device: result.device.clone(),
                admin_access: result.admin_access == Some(true),
                consumed_capacity: result
                    .consumed_capacity
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
                share_id: result.share_id.clone(),
                numa_node: device.and_then(|d| d.numa_node()),
                pcie_root: device.and_then(|d| d.pcie_root().map(str::to_owned)),
                binding_conditions: result.binding_conditions.clone().unwrap_or_default(),
                binding_failure_conditions: result
                    .binding_failure_conditions
                    .clone()
                    .unwrap_or_default(),
            });
        }
        outcome.explanation.push(
            "allocated already (status.allocation): not searched again; its devices are in use for the pod's other claims"
                .into(),
        );
        outcome
    }

    /// The pending claims of one pod, searched together.
    fn explain_together(&mut self, pending: &[ClaimInput]) -> Vec<Outcome> {
        if let [only] = pending {
            return vec![self.explain(only)];
        }
        let mut prepared = Vec::new();
        for (i, input) in pending.iter().enumerate() {
            match self.prepare(input) {
                Ok(p) => prepared.push(p),
                // `Allocate` checks every claim before its search and stops at the first error.
                Err(outcome) => return self.pod_fails_with(pending, i, *outcome),
            }
        }
        // A claim that counting proves cannot fit alone cannot fit with the others: answered
        // without a search, as for a claim alone, where no search could end in an error instead.
        if let Some((k, lines)) = self.provably_unfit(&prepared) {
            return not_allocated(prepared, Status::Unsatisfiable, 0, &[], Some((k, lines)));
        }
        let claims: Vec<&Claim> = prepared.iter().map(|p| &p.claim).collect();
        let joint = Claim::joint(&claims);
        let fits: Vec<Vec<Vec<Fit>>> = prepared.iter().flat_map(|p| p.fits.clone()).collect();
        let mut search = Search::new(&joint, &self.pools, &fits, self.step_limit);
        search.claim_names = prepared.iter().map(|p| p.claim_name.clone()).collect();
        search.counting_bounds = self.counting_bounds;
        let found = search.run();
        let steps = search.steps;
        if let Some(error) = search.error.clone() {
            let failed = search.error_claim;
            drop(search);
            let mut outcomes: Vec<Outcome> = prepared.into_iter().map(|p| p.outcome).collect();
            let label = outcomes
                .get(failed)
                .map(|o| o.claim.clone())
                .unwrap_or_default();
            for (k, outcome) in outcomes.iter_mut().enumerate() {
                outcome.search_steps = steps;
                match k == failed {
                    true => outcome.explanation.push(error.clone()),
                    false => outcome.explanation.push(format!(
                        "not allocated: the scheduler fails the whole pod with the error of {label}: {error}"
                    )),
                }
            }
            return outcomes;
        }
        if found {
            let picks = search.picks.clone();
            drop(search);
            let mut outcomes: Vec<Outcome> = prepared
                .into_iter()
                .enumerate()
                .map(|(k, p)| {
                    let mut outcome = p.outcome;
                    let mine: Vec<Pick> = picks
                        .iter()
                        .filter(|pick| joint.requests.get(pick.request).map(|r| r.claim) == Some(k))
                        .cloned()
                        .collect();
                    self.fill(&mut outcome, &joint, &p.claim_name, &mine);
                    outcome.search_steps = steps;
                    outcome
                })
                .collect();
            // An error building one allocation's node selector is `Allocate`'s, for the pod.
            if let Some(failed) = outcomes.iter().position(|o| o.status == Status::Error) {
                let (label, error) = outcomes
                    .get(failed)
                    .map(|o| (o.claim.clone(), o.explanation.join("; ")))
                    .unwrap_or_default();
                for (k, outcome) in outcomes.iter_mut().enumerate() {
                    if k != failed {
                        outcome.status = Status::Error;
                        outcome.devices.clear();
                        outcome.node_selector = None;
                        outcome.explanation = vec![format!(
                            "not allocated: the scheduler fails the whole pod with the error of {label}: {error}"
                        )];
                    }
                }
            }
            return outcomes;
        }
        let gave_up = search.gave_up;
        drop(search);
        let shared: Vec<String> = if gave_up {
            vec![self.gave_up_line()]
        } else if self.any_invalid_pool() {
            // An error rather than "unsatisfiable" (`Allocate`).
            vec!["invalid resource pools were encountered".into()]
        } else {
            Vec::new()
        };
        let status = match (gave_up, shared.is_empty()) {
            (true, _) => Status::Undecided,
            (false, false) => Status::Error,
            (false, true) => Status::Unsatisfiable,
        };
        let culprit = match shared.is_empty() {
            true => self.culprit(&prepared),
            false => None,
        };
        not_allocated(prepared, status, steps, &shared, culprit)
    }

    /// The first claim that a counting bound proves cannot fit even alone (see `bounds.rs`), with
    /// why; none where some claim's search could end in an error (strict), or without bounds.
    fn provably_unfit(&self, prepared: &[Prepared]) -> Option<(usize, Vec<String>)> {
        if !self.counting_bounds {
            return None;
        }
        let strict = prepared
            .iter()
            .any(|p| Search::new(&p.claim, &self.pools, &p.fits, self.step_limit).strict());
        if strict {
            return None;
        }
        prepared.iter().enumerate().find_map(|(k, p)| {
            let proof = crate::bounds::cannot_fit(&p.claim, &self.pools, &p.fits)?;
            let mut lines = vec![format!(
                "{} does not fit even alone, so neither does the pod",
                p.outcome.claim
            )];
            lines.extend(self.why_bound(&p.claim, &p.matchings, &p.fits, &proof));
            Some((k, lines))
        })
    }

    /// Every pending claim of the pod fails with the error of claim `failed`.
    fn pod_fails_with(
        &self,
        pending: &[ClaimInput],
        failed: usize,
        error: Outcome,
    ) -> Vec<Outcome> {
        let reason = error.explanation.first().cloned().unwrap_or_default();
        let mut outcomes = Vec::new();
        let mut error = Some(error);
        for (k, input) in pending.iter().enumerate() {
            if k == failed
                && let Some(outcome) = error.take()
            {
                outcomes.push(outcome);
                continue;
            }
            let mut outcome = self.blank_outcome(input);
            outcome.explanation.push(format!(
                "not allocated: the scheduler fails the whole pod with the error of {}: {reason}",
                pending.get(failed).map_or("", |c| c.label.as_str())
            ));
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The first claim, in the scheduler's order, that cannot be placed given the claims before
    /// it (found by searching ever longer prefixes), and why: what it lacks alone, or which of
    /// its candidates the claims before it would take. None when a search gave up. Its searches
    /// share one step limit (and [`Allocator::why_not`] has its own).
    fn culprit(&self, prepared: &[Prepared]) -> Option<(usize, Vec<String>)> {
        let mut left = self.step_limit;
        let mut before: Vec<Pick> = Vec::new();
        let mut before_joint = Claim::joint(&[]);
        let mut culprit = prepared.len().checked_sub(1)?;
        for m in 1..prepared.len() {
            let claims: Vec<&Claim> = prepared.iter().take(m).map(|p| &p.claim).collect();
            let joint = Claim::joint(&claims);
            let fits: Vec<Vec<Vec<Fit>>> = prepared
                .iter()
                .take(m)
                .flat_map(|p| p.fits.clone())
                .collect();
            let mut search = Search::new(&joint, &self.pools, &fits, left);
            search.counting_bounds = self.counting_bounds;
            let found = search.run();
            left = left.saturating_sub(search.steps);
            if search.gave_up || search.error.is_some() {
                return None;
            }
            if !found {
                culprit = m - 1;
                break;
            }
            before = search.picks.clone();
            drop(search);
            before_joint = joint;
        }
        let p = prepared.get(culprit)?;
        let mut alone = Search::new(&p.claim, &self.pools, &p.fits, left);
        alone.counting_bounds = self.counting_bounds;
        let fits_alone = alone.run();
        if alone.gave_up {
            return None;
        }
        drop(alone);
        if !fits_alone {
            let mut lines = vec![format!(
                "{} does not fit even alone, so neither does the pod",
                p.outcome.claim
            )];
            lines.extend(self.why_not(&p.claim, &p.matchings, &p.fits));
            return Some((culprit, lines));
        }
        let name = |d: usize| self.pools.devices.get(d).map_or("?", |d| d.name.as_str());
        let taken: Vec<String> = before
            .iter()
            .map(|pick| {
                let owner = before_joint
                    .requests
                    .get(pick.request)
                    .and_then(|r| prepared.get(r.claim))
                    .map_or("", |o| o.outcome.claim.as_str());
                format!("{} ({owner})", name(pick.device))
            })
            .collect();
        let mut lines = vec![format!(
            "{} fits alone, but not after the pod's claims before it, which the scheduler allocates first; they would get {}",
            p.outcome.claim,
            taken.join(", ")
        )];
        for (request, per_request) in p.claim.requests.iter().zip(&p.fits) {
            for (alternative, fits) in request.alternatives.iter().zip(per_request) {
                let lost: Vec<&str> = fits
                    .iter()
                    .filter(|fit| before.iter().any(|pick| pick.device == fit.device))
                    .map(|fit| name(fit.device))
                    .collect();
                if !lost.is_empty() {
                    lines.push(format!(
                        "  {}: of its {} candidates, {} taken by them: {}",
                        alternative.name,
                        fits.len(),
                        lost.len(),
                        lost.join(", ")
                    ));
                }
            }
        }
        Some((culprit, lines))
    }
}

/// The outcomes of a pod none of whose pending claims is allocated: `shared` lines for all (the
/// step limit, invalid pools), and the claim that cannot be placed with why, when known.
fn not_allocated(
    prepared: Vec<Prepared>,
    status: Status,
    steps: u64,
    shared: &[String],
    culprit: Option<(usize, Vec<String>)>,
) -> Vec<Outcome> {
    let labels: Vec<String> = prepared.iter().map(|p| p.outcome.claim.clone()).collect();
    let mut outcomes = Vec::new();
    for (k, p) in prepared.into_iter().enumerate() {
        let mut outcome = p.outcome;
        outcome.status = status;
        outcome.search_steps = steps;
        outcome.explanation = shared.to_vec();
        match &culprit {
            Some((c, lines)) if *c == k => outcome.explanation.extend(lines.iter().cloned()),
            Some((c, _)) => outcome.explanation.push(format!(
                "not allocated: the scheduler allocates all of the pod's pending claims together or none; {} cannot be placed given the claims before it",
                labels.get(*c).map_or("", String::as_str)
            )),
            None if shared.is_empty() => outcome
                .explanation
                .push("the pod's claims do not fit together".into()),
            None => {}
        }
        outcomes.push(outcome);
    }
    outcomes
}
