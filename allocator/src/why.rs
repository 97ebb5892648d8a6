//! Why a claim does not fit, in the fewest words that are true: first a request without enough
//! candidates (and what eliminated each device), else a constraint that alone blocks (and the values its
//! attribute takes among the candidates), else the constraints together, else requests competing for the
//! same devices. Also the alignment wording of an allocation.

use std::collections::BTreeMap;

use crate::bounds::Proof;
use crate::claim::{Alternative, Claim, ConstraintKind, Mode};
use crate::explain::Allocator;
use crate::outcome::{Matching, Rejection};
use crate::search::{Fit, Search};

impl Allocator {
    /// The smallest reason the claim has no allocation. Its searches (one per constraint, then one
    /// without all) share one step limit, so the reason costs at most as much as the search.
    pub(crate) fn why_not(
        &self,
        claim: &Claim,
        matchings: &[Vec<Matching>],
        fits: &[Vec<Vec<Fit>>],
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(short) = self.request_short(claim, matchings) {
            return short;
        }
        let mut left = self.step_limit;
        for (c, constraint) in claim.constraints.iter().enumerate() {
            let mut relaxed = Search::new(claim, &self.pools, fits, left);
            relaxed.skip_constraint = Some(c);
            let fits_without = relaxed.run();
            left = left.saturating_sub(relaxed.steps);
            if relaxed.gave_up {
                lines.push(gave_up(self.step_limit));
                return lines;
            }
            if fits_without {
                lines.push(format!(
                    "{} cannot be met; without it the claim fits",
                    constraint.describe()
                ));
                lines.extend(self.constraint_values(claim, c, fits));
                return lines;
            }
        }
        if !claim.constraints.is_empty() {
            let mut relaxed = Search::new(claim, &self.pools, fits, left);
            relaxed.skip_all_constraints = true;
            let fits_without = relaxed.run();
            if relaxed.gave_up {
                lines.push(gave_up(self.step_limit));
                return lines;
            }
            if fits_without {
                lines.push("the constraints together cannot be met (each alone can)".into());
                for c in 0..claim.constraints.len() {
                    lines.extend(self.constraint_values(claim, c, fits));
                }
                return lines;
            }
        }
        lines.push(
            "every request has enough candidates alone, but not together: they compete for the same devices, capacity or counters"
                .into(),
        );
        for (request, per_request) in claim.requests.iter().zip(fits) {
            for (alt, f) in request.alternatives.iter().zip(per_request) {
                let names: Vec<&str> = f.iter().filter_map(|fit| self.name(fit.device)).collect();
                lines.push(format!(
                    "  {} ({}): {}",
                    alt.name,
                    wanted(alt.mode),
                    list(&names)
                ));
            }
        }
        lines
    }

    /// Why not, when a counting bound proved a constraint impossible: a request short of candidates
    /// on its own comes first, as in [`Allocator::why_not`]; then the constraint, without searching.
    pub(crate) fn why_bound(
        &self,
        claim: &Claim,
        matchings: &[Vec<Matching>],
        fits: &[Vec<Vec<Fit>>],
        proof: &Proof,
    ) -> Vec<String> {
        if let Some(short) = self.request_short(claim, matchings) {
            return short;
        }
        let Some(constraint) = claim.constraints.get(proof.constraint) else {
            return vec![proof.detail.clone()];
        };
        let mut lines = vec![format!(
            "{} cannot be met: {}",
            constraint.describe(),
            proof.detail
        )];
        lines.extend(self.constraint_values(claim, proof.constraint, fits));
        lines
    }

    /// The first request none of whose alternatives has enough candidates on its own, as
    /// [`Allocator::shortfall`] lines.
    fn request_short(&self, claim: &Claim, matchings: &[Vec<Matching>]) -> Option<Vec<String>> {
        claim
            .requests
            .iter()
            .zip(matchings)
            .find_map(|(request, per_request)| {
                let short: Vec<String> = request
                    .alternatives
                    .iter()
                    .zip(per_request)
                    .filter_map(|(alt, m)| self.shortfall(alt, m))
                    .collect();
                (short.len() == request.alternatives.len()).then_some(short)
            })
    }

    /// `request nic: needs 3 devices of class c, 2 candidates (a, b)` and the rejected devices by
    /// reason, when the alternative cannot be satisfied on its own.
    fn shortfall(&self, alternative: &Alternative, matching: &Matching) -> Option<String> {
        let free = |f: &&Fit| {
            !f.blocked
                && (alternative.admin_access
                    || self
                        .pools
                        .usage
                        .get(f.device)
                        .is_none_or(|u| u.held_by.is_none()))
        };
        let usable: Vec<&str> = matching
            .fits
            .iter()
            .filter(free)
            .filter_map(|f| self.name(f.device))
            .collect();
        let (short, need) = match alternative.mode {
            Mode::Exact(n) => (usable.len() < n, format!("needs {n} device{}", plural(n))),
            Mode::All => (
                usable.is_empty() || usable.len() < matching.fits.len(),
                "needs every matching device (allocationMode All), at least one".to_owned(),
            ),
        };
        if !short {
            return None;
        }
        let mut by_reason: BTreeMap<&Rejection, Vec<&str>> = BTreeMap::new();
        for (d, reason) in &matching.rejected {
            if let Some(name) = self.name(*d) {
                by_reason.entry(reason).or_default().push(name);
            }
        }
        let mut text = format!(
            "request {}: {need} of class {}, {} candidate{}",
            alternative.name,
            alternative.class,
            usable.len(),
            plural(usable.len()),
        );
        if !usable.is_empty() {
            text.push_str(&format!(" ({})", list(&usable)));
        }
        for (reason, names) in by_reason {
            text.push_str(&format!(
                "\n  {} device{}: {reason}: {}",
                names.len(),
                plural(names.len()),
                list(&names)
            ));
        }
        Some(text)
    }

    /// The values of a constraint's attribute among each covered alternative's candidates.
    fn constraint_values(&self, claim: &Claim, c: usize, fits: &[Vec<Vec<Fit>>]) -> Vec<String> {
        let Some(constraint) = claim.constraints.get(c) else {
            return Vec::new();
        };
        let (ConstraintKind::Match(attribute) | ConstraintKind::Distinct(attribute)) =
            &constraint.kind;
        let mut lines = Vec::new();
        for (request, per_request) in claim.requests.iter().zip(fits) {
            for (alt, f) in request.alternatives.iter().zip(per_request) {
                if !constraint.covers(&alt.name) {
                    continue;
                }
                let mut by_value: BTreeMap<String, Vec<&str>> = BTreeMap::new();
                for fit in f {
                    let Some(device) = self.pools.devices.get(fit.device) else {
                        continue;
                    };
                    let value = device
                        .attributes
                        .get(attribute)
                        .map_or_else(|| "(no such attribute)".to_owned(), ToString::to_string);
                    by_value.entry(value).or_default().push(&device.name);
                }
                let parts: Vec<String> = by_value
                    .iter()
                    .map(|(v, names)| format!("{v}: {}", list(names)))
                    .collect();
                let shown = match parts.is_empty() {
                    true => "no candidates".to_owned(),
                    false => parts.join("; "),
                };
                lines.push(format!(
                    "  {} ({}) by {attribute}: {shown}",
                    alt.name,
                    wanted(alt.mode)
                ));
            }
        }
        lines
    }

    fn name(&self, d: usize) -> Option<&str> {
        self.pools.devices.get(d).map(|x| x.name.as_str())
    }
}

fn gave_up(limit: u64) -> String {
    format!(
        "every request has enough candidates alone; the search for the reason gave up after {limit} device tries (raise --max-steps)"
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn wanted(mode: Mode) -> String {
    match mode {
        Mode::Exact(n) => format!("needs {n}"),
        Mode::All => "needs all".to_owned(),
    }
}

/// Up to six names, then how many more.
fn list(names: &[&str]) -> String {
    match names.len() {
        0..=6 => names.join(", "),
        n => {
            let shown: Vec<&str> = names.iter().take(5).copied().collect();
            format!("{}, and {} more", shown.join(", "), n - 5)
        }
    }
}
