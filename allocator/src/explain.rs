//! [`Allocator::explain`]: the allocation a claim would get, or the smallest reason it gets none.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use k8s_openapi::api::resource::v1::{DeviceClass, DeviceTaint, DeviceToleration, ResourceSlice};
use kube_cel::cel::{Program, Value};

use crate::cel::{Cel, CompileError, Verdict, domain_literals};
use crate::claim::{Alternative, Claim, Mode};
use crate::input::ClaimInput;
use crate::model::{Pools, qualify};
use crate::search::{Fit, MAX_DEVICES_PER_CLAIM, Search};
use crate::version::KubernetesVersion;
use crate::why::{NUMA, PCIE, alignment};

/// Device tries before a search gives up (the scheduler has a time limit instead).
pub const DEFAULT_STEP_LIMIT: u64 = 2_000_000;

/// How a claim fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every request got its devices.
    Allocated,
    /// No allocation exists (or none was found within the step limit).
    Unsatisfiable,
    /// The scheduler fails the claim with an error: it is invalid or names what does not exist,
    /// asks for more than 32 devices, a selector has a CEL runtime error on a device the search
    /// reaches, or `allocationMode: All` cannot meet a constraint.
    Error,
}

/// One device of an allocation, as `status.allocation.devices.results` would list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocated {
    /// `req` or `req/sub`.
    pub request: String,
    /// The driver.
    pub driver: String,
    /// The pool.
    pub pool: String,
    /// The device.
    pub device: String,
    /// Allocated with admin access.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub admin_access: bool,
    /// Capacity consumed on a shared device, by capacity name as the slice spells it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumed_capacity: BTreeMap<String, String>,
    /// On a device published with `allowMultipleAllocations`: the share's ID. The scheduler makes a
    /// random UID; explain gives a stable stand-in, so equal inputs give equal answers.
    #[serde(rename = "shareID", skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    /// Its NUMA node (any `numaNode` attribute).
    pub numa_node: Option<i64>,
    /// Its PCIe root (`resource.kubernetes.io/pcieRoot`).
    pub pcie_root: Option<String>,
}

/// What became of one claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `ResourceClaimTemplate name` or `ResourceClaim ns/name`.
    pub claim: String,
    /// The Kubernetes version whose scheduler's rules were applied (`1.36`).
    pub kubernetes_version: String,
    /// The verdict.
    pub status: Status,
    /// The allocation (empty unless allocated).
    pub devices: Vec<Allocated>,
    /// With two or more devices: `aligned on NUMA node 0`, or `cross-NUMA: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa: Option<String>,
    /// With two or more devices: `aligned on PCIe root pci0000:b0`, or `cross-PCIe-root: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcie_root: Option<String>,
    /// Why not (unsatisfiable or error), most important first.
    pub explanation: Vec<String>,
    /// Things that differ from, or would trip, the real scheduler.
    pub warnings: Vec<String>,
    /// Devices tried by the search.
    pub search_steps: u64,
}

/// Why a device is not a candidate for an alternative.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejection {
    Selector { origin: String, verdict: String },
    Taint(String),
    Capacity(String),
    InUse(String),
    IncompletePool,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Selector { origin, verdict } => write!(f, "{origin} {verdict}"),
            Rejection::Taint(t) => write!(f, "tainted {t} (not tolerated)"),
            Rejection::Capacity(c) => write!(f, "{c}"),
            Rejection::InUse(by) => write!(f, "in use by {by}"),
            Rejection::IncompletePool => write!(f, "its pool is being updated (slices missing)"),
        }
    }
}

/// The devices of an alternative: candidates, and the rest with their reason.
pub(crate) struct Matching {
    pub(crate) fits: Vec<Fit>,
    pub(crate) rejected: Vec<(usize, Rejection)>,
}

/// Explains claims against one set of slices, classes and existing allocations.
pub struct Allocator {
    pub(crate) pools: Pools,
    classes: BTreeMap<String, DeviceClass>,
    cel: Cel,
    domains: BTreeSet<String>,
    values: Vec<Value>,
    /// Device tries before a search gives up.
    pub step_limit: u64,
    version: KubernetesVersion,
}

impl Allocator {
    /// Devices of `slices` (only those of `node`, when given), with `allocated` claims' devices in
    /// use, allocated as the newest Kubernetes version's scheduler does.
    pub fn new(
        slices: &[ResourceSlice],
        classes: Vec<DeviceClass>,
        allocated: &[ClaimInput],
        node: Option<&str>,
    ) -> Result<Allocator, String> {
        Self::for_version(KubernetesVersion::NEWEST, slices, classes, allocated, node)
    }

    /// As [`Allocator::new`], with the rules of the scheduler of `version`.
    pub fn for_version(
        version: KubernetesVersion,
        slices: &[ResourceSlice],
        classes: Vec<DeviceClass>,
        allocated: &[ClaimInput],
        node: Option<&str>,
    ) -> Result<Allocator, String> {
        let pools = Pools::new(slices, node, allocated, version);
        let classes = classes
            .into_iter()
            .filter_map(|c| c.metadata.name.clone().map(|n| (n, c)))
            .collect();
        let mut allocator = Allocator {
            domains: pools.domains(),
            pools,
            classes,
            cel: Cel::new()?,
            values: Vec::new(),
            step_limit: DEFAULT_STEP_LIMIT,
            version,
        };
        allocator.refresh_values();
        Ok(allocator)
    }

    /// Whose rules apply.
    pub fn version(&self) -> KubernetesVersion {
        self.version
    }

    /// The devices and what is in use.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    fn refresh_values(&mut self) {
        self.values = self
            .pools
            .devices
            .iter()
            .map(|d| self.cel.device_value(d, &self.domains))
            .collect();
    }

    /// The allocation the structured allocator would make for `input`, or why there is none.
    pub fn explain(&mut self, input: &ClaimInput) -> Outcome {
        let mut outcome = Outcome {
            claim: input.label.clone(),
            kubernetes_version: self.version.to_string(),
            status: Status::Error,
            devices: Vec::new(),
            numa: None,
            pcie_root: None,
            explanation: Vec::new(),
            warnings: Vec::new(),
            search_steps: 0,
        };
        let claim = match Claim::new(&input.spec, &self.classes) {
            Ok(claim) => claim,
            Err(e) => {
                outcome.explanation.push(e);
                return outcome;
            }
        };
        let mut fresh = false;
        for alternative in claim.requests.iter().flat_map(|r| &r.alternatives) {
            for selector in &alternative.selectors {
                for domain in domain_literals(&selector.expression) {
                    fresh |= self.domains.insert(domain);
                }
            }
        }
        if fresh {
            self.refresh_values();
        }
        // `namespace/name`, as the scheduler names the claim (`klog.KObj`).
        let claim_name = input
            .label
            .split_once(' ')
            .map_or(input.label.as_str(), |(_, name)| name)
            .to_owned();
        let mut verdicts = VerdictCache::new(self.pools.devices.len());
        let mut fits = Vec::new();
        let mut matchings = Vec::new();
        for request in &claim.requests {
            let mut per_request = Vec::new();
            for alternative in &request.alternatives {
                let mut programs = Vec::new();
                for selector in &alternative.selectors {
                    match self.cel.compile(&selector.expression) {
                        Ok(program) => programs.push(program),
                        Err(e) => {
                            outcome.explanation.push(match e {
                                CompileError::Syntax(e) => format!(
                                    "{}: CEL syntax error in {:?}: {e}",
                                    selector.origin, selector.expression
                                ),
                                e => format!("{} {:?}: {e}", selector.origin, selector.expression),
                            });
                            return outcome;
                        }
                    }
                }
                let matching = self.matching(
                    alternative,
                    &programs,
                    &mut verdicts,
                    &claim_name,
                    &mut outcome.warnings,
                );
                // `allocationMode: All` evaluates every device before the search, pool by pool
                // (`validateDeviceRequest`): a pool being updated, or a CEL runtime error on any
                // device, fails the claim.
                if alternative.mode == Mode::All
                    && let Some(error) = self.all_devices_error(alternative, &matching, &claim_name)
                {
                    outcome.explanation.push(error);
                    return outcome;
                }
                per_request.push(matching);
            }
            fits.push(
                per_request
                    .iter()
                    .map(|m| m.fits.clone())
                    .collect::<Vec<_>>(),
            );
            matchings.push(per_request);
        }
        // The fewest devices the claim can get (`Allocate`: minDevicesPerClaim): the scheduler refuses
        // a claim whose requests add up to more than a claim may hold.
        let least: usize = claim
            .requests
            .iter()
            .zip(&fits)
            .map(|(request, per_request)| {
                request
                    .alternatives
                    .iter()
                    .zip(per_request)
                    .map(|(alternative, fits)| match alternative.mode {
                        Mode::Exact(n) => n,
                        Mode::All => fits.len(),
                    })
                    .min()
                    .unwrap_or(0)
            })
            .fold(0, usize::saturating_add);
        if least > MAX_DEVICES_PER_CLAIM {
            outcome.explanation.push(format!(
                "claim {claim_name}: number of requested devices {least} exceeds the claim limit of {MAX_DEVICES_PER_CLAIM}"
            ));
            return outcome;
        }
        let mut search = Search::new(&claim, &self.pools, &fits, self.step_limit);
        search.claim_name.clone_from(&claim_name);
        let found = search.run();
        outcome.search_steps = search.steps;
        if let Some(error) = search.error {
            outcome.explanation.push(error);
            return outcome;
        }
        if !found {
            outcome.status = Status::Unsatisfiable;
            outcome.explanation = match search.gave_up {
                true => vec![format!(
                    "the search gave up after {} device tries without an allocation (the scheduler may still find one)",
                    self.step_limit
                )],
                false => self.why_not(&claim, &matchings, &fits),
            };
            return outcome;
        }
        outcome.status = Status::Allocated;
        for pick in &search.picks {
            let (Some(device), Some(alternative)) = (
                self.pools.devices.get(pick.device),
                claim
                    .requests
                    .get(pick.request)
                    .and_then(|r| r.alternatives.get(pick.alternative)),
            ) else {
                continue;
            };
            outcome.devices.push(Allocated {
                request: alternative.name.clone(),
                driver: device.driver.clone(),
                pool: device.pool.clone(),
                device: device.name.clone(),
                admin_access: alternative.admin_access,
                // Under the name the slice gives the capacity (`memory`, not `driver/memory`),
                // as the allocation result spells it.
                consumed_capacity: pick
                    .consumes
                    .iter()
                    .map(|(k, v)| {
                        let name = device
                            .capacity
                            .get(k)
                            .map_or(k.as_str(), |c| c.published_name.as_str());
                        (name.to_owned(), v.to_string())
                    })
                    .collect(),
                share_id: device
                    .allow_multiple
                    .then(|| share_id(&claim_name, outcome.devices.len())),
                numa_node: device.numa_node(),
                pcie_root: device.pcie_root().map(str::to_owned),
            });
        }
        outcome.numa = alignment(&outcome.devices, NUMA, |d| {
            d.numa_node.map(|n| n.to_string())
        });
        outcome.pcie_root = alignment(&outcome.devices, PCIE, |d| d.pcie_root.clone());
        outcome
    }

    /// For `allocationMode: All`, the scheduler's error before the search, if any: the first pool
    /// being updated, or the first device (in pool order) whose selectors fail with an error.
    fn all_devices_error(
        &self,
        alternative: &Alternative,
        matching: &Matching,
        claim_name: &str,
    ) -> Option<String> {
        let errors: BTreeMap<usize, &String> = matching
            .fits
            .iter()
            .filter_map(|f| f.error.as_ref().map(|e| (f.device, e)))
            .collect();
        self.pools.devices.iter().enumerate().find_map(|(d, device)| {
            if device.incomplete_pool {
                return Some(format!(
                    "claim {claim_name}, request {}: asks for all devices, but resource pool {}/{} is currently being updated",
                    alternative.name, device.driver, device.pool
                ));
            }
            errors.get(&d).map(|e| (*e).clone())
        })
    }

    /// Selectors, capacity, taints and use of every device, for one alternative. `claim_name` is the
    /// claim's `namespace/name`, for the scheduler's wording of CEL runtime errors.
    fn matching(
        &self,
        alternative: &Alternative,
        programs: &[Rc<Program>],
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
            // Capacity, for every device and admin access too (`CmpRequestOverCapacity`): a request
            // without an amount asks for the policy's default, else all of it.
            for name in alternative.capacity.keys() {
                if !device.capacity.contains_key(&qualify(&device.driver, name)) {
                    let why = format!("has no capacity {}", qualify(&device.driver, name));
                    matching.rejected.push((d, Rejection::Capacity(why)));
                    continue 'devices;
                }
            }
            let mut consumes = BTreeMap::new();
            for (name, capacity) in &device.capacity {
                let requested = alternative
                    .capacity
                    .iter()
                    .find(|(n, _)| qualify(&device.driver, n) == *name)
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

/// Verdicts by expression and device, so a class's selectors (and repeated request selectors) are
/// evaluated once per device, however many requests name them. Filled lazily: a device is only
/// evaluated by a selector when the selectors before it passed, as in the scheduler.
struct VerdictCache {
    devices: usize,
    by_expression: BTreeMap<String, Vec<Option<Verdict>>>,
}

impl VerdictCache {
    fn new(devices: usize) -> Self {
        VerdictCache {
            devices,
            by_expression: BTreeMap::new(),
        }
    }

    fn get(&mut self, expression: &str, device: usize, eval: impl FnOnce() -> Verdict) -> Verdict {
        if !self.by_expression.contains_key(expression) {
            self.by_expression
                .insert(expression.to_owned(), vec![None; self.devices]);
        }
        let slot = self
            .by_expression
            .get_mut(expression)
            .and_then(|v| v.get_mut(device));
        match slot {
            Some(Some(verdict)) => verdict.clone(),
            Some(empty) => empty.insert(eval()).clone(),
            None => eval(),
        }
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
        let value = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        key && effect && value
    })
}

/// A stand-in share ID for the `n`th device of a claim's allocation, in the form of a UID: derived
/// from the claim's name and the position, so that the same input gives the same answer.
fn share_id(claim: &str, n: usize) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        (salt, claim, n).hash(&mut hasher);
        hasher.finish()
    };
    uuid::Uuid::from_u64_pair(half(0), half(1)).to_string()
}
