//! Counting bounds that prove a claim cannot fit before any backtracking: a `matchAttribute`
//! constraint needs, for one value of its attribute, as many devices as its requests want together.
//! When no value has that many candidates, no combination can work, and trying them all (millions of
//! tries for 32 CPUs out of two NUMA nodes) only ends in "the search gave up".
//!
//! The bounds only count candidates, so they never reject a claim the search could satisfy: a
//! device shared between claims (`allowMultipleAllocations`) can serve several requests, and then
//! the cross-request bound is not used.

use std::collections::{BTreeMap, BTreeSet};

use crate::claim::{Claim, ConstraintKind, Mode};
use crate::model::{AttrValue, Pools};
use crate::search::Fit;

/// A constraint a counting bound proves impossible.
pub(crate) struct Proof {
    /// Index of the constraint in the claim.
    pub constraint: usize,
    /// `request gpu wants 2 devices with one value of ..., the largest group has 1 (numaNode 0)`.
    pub detail: String,
}

/// Why the claim cannot fit, if a counting bound proves it; `None` when the search must decide.
pub(crate) fn cannot_fit(claim: &Claim, pools: &Pools, fits: &[Vec<Vec<Fit>>]) -> Option<Proof> {
    for (c, constraint) in claim.constraints.iter().enumerate() {
        let ConstraintKind::Match(attribute) = &constraint.kind else {
            continue;
        };
        // Each request alone: some alternative must find enough devices with one value.
        for (request, per_request) in claim.requests.iter().zip(fits) {
            let mut short = Vec::new();
            for (alternative, alt_fits) in request.alternatives.iter().zip(per_request) {
                let Mode::Exact(wanted) = alternative.mode else {
                    break;
                };
                if !constraint.covers(&alternative.name) {
                    break;
                }
                let groups = groups(pools, attribute, alt_fits.iter());
                let (value, largest) = largest(&groups);
                if largest >= wanted {
                    break;
                }
                short.push((alternative.name.as_str(), wanted, value, largest));
            }
            if short.len() == request.alternatives.len()
                && let Some((name, wanted, value, largest)) = short.first()
            {
                return Some(Proof {
                    constraint: c,
                    detail: format!(
                        "cannot fit: request {name} wants {wanted} devices with one value of {attribute}, and the largest group has {largest}{}",
                        value_suffix(attribute, value.as_ref()),
                    ),
                });
            }
        }
        // The requests together: a device serves one request (unless it can be shared).
        let mut demand = 0usize;
        let mut covered = Vec::new();
        let mut candidates: Vec<&Fit> = Vec::new();
        for (request, per_request) in claim.requests.iter().zip(fits) {
            let mut least = usize::MAX;
            for (alternative, alt_fits) in request.alternatives.iter().zip(per_request) {
                let n = match (alternative.mode, constraint.covers(&alternative.name)) {
                    (_, false) => 0,
                    (Mode::Exact(n), true) => n,
                    (Mode::All, true) => alt_fits.len(),
                };
                least = least.min(n);
                if constraint.covers(&alternative.name) {
                    candidates.extend(alt_fits);
                }
            }
            if least > 0 && least != usize::MAX {
                demand = demand.saturating_add(least);
                covered.push(request.name.as_str());
            }
        }
        let shared = candidates.iter().any(|fit| {
            pools
                .devices
                .get(fit.device)
                .is_none_or(|d| d.allow_multiple)
        });
        if covered.len() < 2 || shared {
            continue;
        }
        let groups = groups(pools, attribute, candidates.into_iter());
        let (value, largest) = largest(&groups);
        if largest < demand {
            return Some(Proof {
                constraint: c,
                detail: format!(
                    "cannot fit: requests {} together want {demand} devices with one value of {attribute}, and the largest group has {largest}{}",
                    covered.join(", "),
                    value_suffix(attribute, value.as_ref()),
                ),
            });
        }
    }
    None
}

/// Distinct candidate devices (not blocked, carrying the attribute) by the attribute's value.
fn groups<'a>(
    pools: &Pools,
    attribute: &str,
    fits: impl Iterator<Item = &'a Fit>,
) -> BTreeMap<AttrValue, BTreeSet<usize>> {
    let mut groups: BTreeMap<AttrValue, BTreeSet<usize>> = BTreeMap::new();
    for fit in fits.filter(|fit| !fit.blocked) {
        if let Some(value) = pools
            .devices
            .get(fit.device)
            .and_then(|d| d.attributes.get(attribute))
        {
            groups.entry(value.clone()).or_default().insert(fit.device);
        }
    }
    groups
}

/// The value with the most devices (the first such in value order) and how many it has.
fn largest(groups: &BTreeMap<AttrValue, BTreeSet<usize>>) -> (Option<AttrValue>, usize) {
    groups
        .iter()
        .fold((None, 0), |(best, most), (value, devices)| {
            if devices.len() > most {
                (Some(value.clone()), devices.len())
            } else {
                (best, most)
            }
        })
}

fn value_suffix(attribute: &str, value: Option<&AttrValue>) -> String {
    let short = attribute.rsplit('/').next().unwrap_or(attribute);
    match value {
        Some(value) => format!(" ({short} {value})"),
        None => format!(" (no candidate carries {short})"),
    }
}
