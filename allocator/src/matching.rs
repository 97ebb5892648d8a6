//! Which devices can serve one alternative of a request, in the order the scheduler checks them
//! (`allocateOne`, `isSelectable`, `CmpRequestOverCapacity`, `allocateDevice`): pool being updated,
//! selectors (a CEL runtime error is kept, for the search to meet where the scheduler would),
//! capacity, taints, in use, over-committed counters.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::cel::{Compiled, Verdict, VerdictCache};
use crate::claim::{Alternative, Mode};
use crate::explain::Allocator;
use crate::model::NodeFit;
use crate::outcome::{Matching, Rejection};
use crate::search::Fit;
use k8s_openapi::api::resource::v1::{DeviceTaint, DeviceToleration};

impl Allocator {
    /// Selectors, capacity, taints and use of every device, for one alternative. `claim_name` is the
    /// claim's `namespace/name`, for the scheduler's wording of CEL runtime errors.
    pub(crate) fn matching(
        &self,
        alternative: &Alternative,
        programs: &[Rc<Compiled>],
        verdicts: &mut VerdictCache,
        claim_name: &str,
        warnings: &mut Vec<String>,
    ) -> Matching {
        let mut matching = Matching {
            fits: Vec::new(),
            rejected: Vec::new(),
        };
        let mut warned = BTreeSet::new();
        let all = alternative.mode == Mode::All;
        'devices: for (d, device) in self.pools.devices.iter().enumerate() {
            let Some(value) = self.values.get(d) else {
                continue;
            };
            // `allocateOne` skips incomplete pools before looking at their devices.
            if device.incomplete_pool {
                matching.rejected.push((d, Rejection::IncompletePool));
                continue;
            }
            if device.invalid_pool {
                matching.rejected.push((d, Rejection::InvalidPool));
                continue;
            }
            for (selector, program) in alternative.selectors.iter().zip(programs) {
                let verdict =
                    verdicts.get(&selector.expression, d, || self.cel.eval(program, value));
                let (error, verdict) = match verdict {
                    Verdict::Selected => continue,
                    Verdict::NotSelected => (None, "is false".to_owned()),
                    Verdict::Missing(key) => {
                        if warned.insert(selector.origin.clone()) {
                            warnings.push(format!(
                                "{} looks up {key:?}, which device {} lacks: the scheduler fails the claim with a CEL runtime error when its search reaches such a device (guard with has() or a class selector)",
                                selector.origin, device.name
                            ));
                        }
                        // The scheduler's text (`EnhanceRuntimeError`).
                        let error = format!(
                            "no such key: {key}. consider using CEL optional chaining (.? followed by orValue()) or guarding the check with has() for optional fields"
                        );
                        (Some(error), format!("cannot be evaluated: no {key:?}"))
                    }
                    Verdict::Error(e) => (Some(e.clone()), format!("failed: {e}")),
                };
                // As `selectorsMatch` words it, with the expression added.
                let error = error.map(|e| {
                    let of = match &selector.class {
                        Some(class) => format!("class {class}"),
                        None => format!("claim {claim_name}"),
                    };
                    format!(
                        "{of}: selector #{} on device {}: CEL runtime error: {e} (expression: {:?})",
                        selector.index,
                        device.id(),
                        selector.expression
                    )
                });
                if error.is_some() {
                    matching.fits.push(Fit {
                        device: d,
                        consumes: BTreeMap::new(),
                        blocked: true,
                        error,
                    });
                }
                let origin = selector.origin.clone();
                matching
                    .rejected
                    .push((d, Rejection::Selector { origin, verdict }));
                continue 'devices;
            }
            // Per-device node selection, after the selectors (`isSelectable`).
            match &device.node_fit {
                NodeFit::Yes => {}
                NodeFit::Other(why) => {
                    matching
                        .rejected
                        .push((d, Rejection::OtherNode(why.clone())));
                    continue;
                }
                NodeFit::Error(e) => {
                    matching.fits.push(Fit {
                        device: d,
                        consumes: BTreeMap::new(),
                        blocked: true,
                        error: Some(format!("device {}: {e}", device.id())),
                    });
                    let why = format!("has a node selector the scheduler cannot parse: {e}");
                    matching.rejected.push((d, Rejection::OtherNode(why)));
                    continue;
                }
            }
            // Capacity, for every device and admin access too (`CmpRequestOverCapacity`): a request
            // without an amount asks for the policy's default, else all of it.
            // The scheduler looks a requested name up as written (`requestsContainNonExistCapacity`):
            // `cpu` and `<driver>/cpu` are different names there, though CEL qualifies both.
            for name in alternative.capacity.keys() {
                if !device.capacity.values().any(|c| c.published_name == *name) {
                    let why = format!("has no capacity {name}");
                    matching.rejected.push((d, Rejection::Capacity(why)));
                    continue 'devices;
                }
            }
            let mut consumes = BTreeMap::new();
            for (name, capacity) in &device.capacity {
                let requested = alternative
                    .capacity
                    .iter()
                    .find(|(n, _)| **n == capacity.published_name)
                    .map(|(_, q)| *q);
                let Some(amount) = capacity.consumption(requested) else {
                    let why = match requested {
                        Some(wanted) if !device.allow_multiple => {
                            format!("capacity {name} is {}, {wanted} requested", capacity.text)
                        }
                        _ => format!(
                            "no valid amount of capacity {name} (of {}) fits the request",
                            capacity.text
                        ),
                    };
                    matching.rejected.push((d, Rejection::Capacity(why)));
                    continue 'devices;
                };
                let used = self
                    .pools
                    .usage
                    .get(d)
                    .and_then(|u| u.consumed.get(name))
                    .copied()
                    .unwrap_or_default();
                if used.plus(amount) > capacity.value {
                    let why = format!(
                        "capacity {name}: {} of {} left, {amount} needed",
                        capacity.value.minus(used),
                        capacity.text
                    );
                    matching.rejected.push((d, Rejection::Capacity(why)));
                    continue 'devices;
                }
                // Only shares of a multi-allocatable device consume capacity.
                if device.allow_multiple {
                    consumes.insert(name.clone(), amount);
                }
            }
            if let Some(taint) = device
                .taints
                .iter()
                .find(|t| !tolerated(t, &alternative.tolerations))
            {
                let value = taint.value.as_deref().unwrap_or("");
                let text = format!("{}={value}:{}", taint.key, taint.effect);
                matching.rejected.push((d, Rejection::Taint(text)));
                // `All` needs every matching device: a tainted one makes it fail, as in the scheduler.
                if all {
                    matching.fits.push(Fit {
                        device: d,
                        consumes,
                        blocked: true,
                        error: None,
                    });
                }
                continue;
            }
            let held = self.pools.usage.get(d).and_then(|u| u.held_by.clone());
            if let Some(by) = held
                && !alternative.admin_access
            {
                // `All` needs every matching device, so an in-use one makes it fail in the search.
                if all {
                    matching.fits.push(Fit {
                        device: d,
                        consumes,
                        blocked: true,
                        error: None,
                    });
                }
                matching.rejected.push((d, Rejection::InUse(by)));
                continue;
            }
            // After the in-use check, as `allocateDevice` does: `checkAvailableCounters` compares every counter set of the pool.
            if self.pools.starved.get(d).copied().unwrap_or(false) {
                matching.rejected.push((d, Rejection::OverCommitted));
                if all {
                    matching.fits.push(Fit {
                        device: d,
                        consumes,
                        blocked: true,
                        error: None,
                    });
                }
                continue;
            }
            matching.fits.push(Fit {
                device: d,
                consumes,
                blocked: false,
                error: None,
            });
        }
        matching
    }
}

/// Whether `tolerations` tolerate `taint` (only NoSchedule and NoExecute keep devices away).
fn tolerated(taint: &DeviceTaint, tolerations: &[DeviceToleration]) -> bool {
    if !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute") {
        return true;
    }
    tolerations.iter().any(|t| {
        let key = t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key);
        let effect = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        // As `DeviceToleration.ToleratesTaint`: an unknown operator tolerates nothing.
        let value = match t.operator.as_deref().unwrap_or("") {
            "Exists" => true,
            "" | "Equal" => {
                t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
            _ => false,
        };
        key && effect && value
    })
}
