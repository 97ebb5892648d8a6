//! [`Allocator::explain`]: the allocation a claim would get, or the smallest reason it gets none.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube_cel::cel::Value;

use crate::cel::VerdictCache;
use crate::cel::{Cel, CompileError};
use crate::claim::{Alternative, Claim, Mode};
use crate::gates::FeatureGates;
use crate::input::ClaimInput;
use crate::model::Pools;
use crate::nodes::Node;
use crate::outcome::{Allocated, Matching, NUMA, Outcome, PCIE, Status, alignment};
use crate::search::{Fit, MAX_DEVICES_PER_CLAIM, Search};
use crate::version::KubernetesVersion;

/// Device tries before a search gives up (the scheduler has a time limit instead).
pub const DEFAULT_STEP_LIMIT: u64 = 2_000_000;

/// A claim ready for the search: normalized, its candidates found.
pub(crate) struct Prepared {
    /// The outcome so far (warnings).
    pub(crate) outcome: Outcome,
    /// The normalized claim.
    pub(crate) claim: Claim,
    /// `namespace/name`, as the scheduler names it.
    pub(crate) claim_name: String,
    /// Per request and alternative, the candidates and the rejected devices.
    pub(crate) matchings: Vec<Vec<Matching>>,
    /// Per request and alternative, the candidates.
    pub(crate) fits: Vec<Vec<Vec<Fit>>>,
}

/// Explains claims against one set of slices, classes and existing allocations.
pub struct Allocator {
    pub(crate) pools: Pools,
    classes: BTreeMap<String, DeviceClass>,
    pub(crate) cel: Cel,
    pub(crate) values: Vec<Value>,
    /// Device tries before a search gives up.
    pub step_limit: u64,
    version: KubernetesVersion,
    /// Answer "cannot fit" from counting bounds and prune with them (off only in tests that check
    /// that they never change an answer).
    pub(crate) counting_bounds: bool,
    gates: FeatureGates,
    /// Namespaces' labels by name: the API server refuses a claim with `adminAccess` in a
    /// namespace without `resource.kubernetes.io/admin-access: "true"`. A namespace not here is
    /// not known: explain warns instead.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The node explain answers for: allocations' node selectors name it, and those of the pod's
    /// allocated claims are matched against it.
    pub(crate) node: Node,
}

/// The namespace label the API server wants before it accepts `adminAccess` (1.34 and later;
/// `pkg/registry/resource/utils.go`, `AuthorizedForAdmin`).
pub const ADMIN_ACCESS_LABEL: &str = "resource.kubernetes.io/admin-access";

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

    /// As [`Allocator::new`], with the rules of the scheduler of `version` and its default feature
    /// gates.
    pub fn for_version(
        version: KubernetesVersion,
        slices: &[ResourceSlice],
        classes: Vec<DeviceClass>,
        allocated: &[ClaimInput],
        node: Option<&str>,
    ) -> Result<Allocator, String> {
        let gates = FeatureGates::defaults(version);
        Self::with_gates(version, gates, slices, classes, allocated, node)
    }

    /// As [`Allocator::for_version`], with these feature gates: the slices lose what the API server
    /// drops with them (noted in [`Pools::warnings`]).
    pub fn with_gates(
        version: KubernetesVersion,
        gates: FeatureGates,
        slices: &[ResourceSlice],
        classes: Vec<DeviceClass>,
        allocated: &[ClaimInput],
        node: Option<&str>,
    ) -> Result<Allocator, String> {
        let node = Node::named(node, BTreeMap::new());
        Self::for_node(version, gates, slices, classes, allocated, &node)
    }

    /// As [`Allocator::with_gates`], for a node with labels: slices and devices that select
    /// nodes (`nodeSelector`, per-device node selection) are matched against them.
    pub fn for_node(
        version: KubernetesVersion,
        gates: FeatureGates,
        slices: &[ResourceSlice],
        classes: Vec<DeviceClass>,
        allocated: &[ClaimInput],
        node: &Node,
    ) -> Result<Allocator, String> {
        let mut notes = Vec::new();
        let stripped: Vec<ResourceSlice> = slices
            .iter()
            .map(|slice| {
                let mut slice = slice.clone();
                gates.strip_slice(&mut slice, &mut notes);
                slice
            })
            .collect();
        let mut pools = Pools::for_node(&stripped, node, allocated, version);
        pools.warnings.append(&mut notes);
        let classes = classes
            .into_iter()
            .filter_map(|c| c.metadata.name.clone().map(|n| (n, c)))
            .collect();
        let mut allocator = Allocator {
            pools,
            classes,
            cel: Cel::new()?,
            values: Vec::new(),
            step_limit: DEFAULT_STEP_LIMIT,
            counting_bounds: true,
            version,
            gates,
            namespaces: BTreeMap::new(),
            node: node.clone(),
        };
        allocator.refresh_values();
        Ok(allocator)
    }

    /// The feature gates the rules run with.
    pub fn gates(&self) -> FeatureGates {
        self.gates
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
            .map(|d| self.cel.device_value(d))
            .collect();
    }

    /// The allocation the structured allocator would make for `input`, or why there is none.
    pub fn explain(&mut self, input: &ClaimInput) -> Outcome {
        let Prepared {
            mut outcome,
            claim,
            claim_name,
            matchings,
            fits,
        } = match self.prepare(input) {
            Ok(prepared) => prepared,
            Err(outcome) => return *outcome,
        };
        let mut search = Search::new(&claim, &self.pools, &fits, self.step_limit);
        search.claim_name.clone_from(&claim_name);
        search.counting_bounds = self.counting_bounds;
        // A counting bound answers "no" at once where the search would try every combination;
        // not where the scheduler's search could end in an error instead (strict).
        if self.counting_bounds
            && !search.strict()
            && let Some(proof) = crate::bounds::cannot_fit(&claim, &self.pools, &fits)
        {
            outcome.status = Status::Unsatisfiable;
            outcome.explanation = self.why_bound(&claim, &matchings, &fits, &proof);
            return outcome;
        }
        let found = search.run();
        outcome.search_steps = search.steps;
        if let Some(error) = search.error {
            outcome.explanation.push(error);
            return outcome;
        }
        // No allocation and an invalid pool: the scheduler fails with an error rather than
        // "unsatisfiable" (`Allocate`: "invalid resource pools were encountered").
        if !found && self.any_invalid_pool() && !search.gave_up {
            outcome
                .explanation
                .push("invalid resource pools were encountered".into());
            outcome
                .explanation
                .extend(self.why_not(&claim, &matchings, &fits));
            return outcome;
        }
        if !found {
            (outcome.status, outcome.explanation) = match search.gave_up {
                true => (Status::Undecided, vec![self.gave_up_line()]),
                false => (
                    Status::Unsatisfiable,
                    self.why_not(&claim, &matchings, &fits),
                ),
            };
            return outcome;
        }
        self.fill(&mut outcome, &claim, &claim_name, &search.picks);
        outcome
    }

    /// Whether some pool is invalid (duplicate names, unknown counter sets).
    pub(crate) fn any_invalid_pool(&self) -> bool {
        self.pools.pools.iter().any(|p| p.invalid)
    }

    /// What an outcome says when the search reached its step limit.
    pub(crate) fn gave_up_line(&self) -> String {
        format!(
            "the search gave up after {} device tries without an allocation (the scheduler may still find one)",
            self.step_limit
        )
    }

    /// An outcome for `input` with nothing decided yet (status `error`, no devices).
    pub(crate) fn blank_outcome(&self, input: &ClaimInput) -> Outcome {
        let mut outcome = self.bare_outcome(input.label.clone());
        outcome.request_mappings.clone_from(&input.request_mappings);
        outcome
    }

    /// An outcome for the claim `label` with nothing decided yet (status `error`, no devices).
    pub(crate) fn bare_outcome(&self, label: String) -> Outcome {
        Outcome {
            claim: label,
            kubernetes_version: self.version.to_string(),
            feature_gates: self.gates.to_string(),
            status: Status::Error,
            devices: Vec::new(),
            numa: None,
            pcie_root: None,
            node_selector: None,
            explanation: Vec::new(),
            warnings: Vec::new(),
            search_steps: 0,
            request_mappings: Vec::new(),
            pod: None,
        }
    }

    /// Everything before the search, as the scheduler checks it before its search (`Allocate`):
    /// the claim normalized, its selectors compiled and run on every device, `allocationMode: All`
    /// and the 32-device limit checked. An error ends the claim: the outcome to report.
    pub(crate) fn prepare(&mut self, input: &ClaimInput) -> Result<Prepared, Box<Outcome>> {
        let mut outcome = self.blank_outcome(input);
        if let Some(error) = &self.pools.node_error {
            outcome.explanation.push(error.clone());
            return Err(Box::new(outcome));
        }
        let mut spec = input.spec.clone();
        if let Err(e) = self.gates.strip_claim(&mut spec, &mut outcome.warnings) {
            outcome.explanation.push(e);
            return Err(Box::new(outcome));
        }
        if let Err(e) = self.admin_access_allowed(input, &spec, &mut outcome.warnings) {
            outcome.explanation.push(e);
            return Err(Box::new(outcome));
        }
        let claim = match Claim::new(&spec, &self.classes) {
            Ok(claim) => claim,
            Err(e) => {
                outcome.explanation.push(e);
                return Err(Box::new(outcome));
            }
        };
        // `namespace/name`, as the scheduler names the claim (`klog.KObj`).
        let claim_name = input.scheduler_name.clone().unwrap_or_else(|| {
            input
                .label
                .split_once(' ')
                .map_or(input.label.as_str(), |(_, name)| name)
                .to_owned()
        });
        let mut verdicts = VerdictCache::default();
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
                            return Err(Box::new(outcome));
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
                    return Err(Box::new(outcome));
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
            return Err(Box::new(outcome));
        }
        Ok(Prepared {
            outcome,
            claim,
            claim_name,
            matchings,
            fits,
        })
    }

    /// The outcome of an allocation: the devices of `picks` (those of requests of `claim`), as
    /// `status.allocation.devices.results` would list them, and their alignment.
    pub(crate) fn fill(
        &self,
        outcome: &mut Outcome,
        claim: &Claim,
        claim_name: &str,
        picks: &[crate::search::Pick],
    ) {
        outcome.status = Status::Allocated;
        for pick in picks {
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
                    .then(|| share_id(claim_name, outcome.devices.len())),
                numa_node: device.numa_node(),
                pcie_root: device.pcie_root().map(str::to_owned),
                binding_conditions: device.binding_conditions.clone(),
                binding_failure_conditions: device.binding_failure_conditions.clone(),
            });
        }
        let waits: Vec<&str> = outcome
            .devices
            .iter()
            .filter(|d| !d.binding_conditions.is_empty())
            .map(|d| d.device.as_str())
            .collect();
        if !waits.is_empty() {
            outcome.warnings.push(format!(
                "{} {} binding conditions: the scheduler binds the pod only once the claim's device status has them all true (it waits in PreBind, by default up to 10 minutes), and tries again elsewhere when a failure condition turns true",
                waits.join(", "),
                if waits.len() == 1 { "has" } else { "have" }
            ));
        }
        outcome.numa = alignment(&outcome.devices, NUMA, |d| {
            d.numa_node.map(|n| n.to_string())
        });
        outcome.pcie_root = alignment(&outcome.devices, PCIE, |d| d.pcie_root.clone());
        // `Allocate` ends with the node selector of each claim's allocation.
        let placements = picks
            .iter()
            .filter_map(|pick| self.pools.devices.get(pick.device))
            .map(|d| &d.placement);
        match crate::nodes::allocation_node_selector(placements, self.node.name.as_deref()) {
            Ok(selector) => {
                let unknown = selector.as_ref().is_some_and(|s| {
                    crate::nodes::describe_node_selector(s).contains(crate::nodes::UNKNOWN_NODE)
                });
                if unknown {
                    outcome.warnings.push(
                        "a device binds to the node it is allocated on (bindsToNode): the allocation's node selector names the node the scheduler picks (give --node-name to see it)".into(),
                    );
                }
                outcome.node_selector = selector;
            }
            Err(e) => {
                // An error of `Allocate` for the whole call (`create NodeSelector for claim`).
                let name = claim_name.rsplit('/').next().unwrap_or(claim_name);
                outcome.status = Status::Error;
                outcome.devices.clear();
                outcome.numa = None;
                outcome.pcie_root = None;
                outcome
                    .explanation
                    .push(format!("create NodeSelector for claim {name}: {e}"));
            }
        }
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
        // Every pool, with or without devices here (a pool of counters only, being updated).
        self.pools.pools.iter().find_map(|pool| {
            let state = match (pool.incomplete, pool.invalid) {
                (true, _) => "being updated",
                (_, true) => "invalid",
                _ => return pool.devices.clone().find_map(|d| errors.get(&d).map(|e| (*e).clone())),
            };
            Some(format!(
                "claim {claim_name}, request {}: asks for all devices, but resource pool {} is currently {state}",
                alternative.name, pool.id
            ))
        })
    }
}

impl Allocator {
    /// The API server's check of `adminAccess` (after the gate dropped it, if off): the claim's
    /// namespace must carry [`ADMIN_ACCESS_LABEL`] `"true"`. An unknown namespace gets a warning.
    fn admin_access_allowed(
        &self,
        input: &ClaimInput,
        spec: &k8s_openapi::api::resource::v1::ResourceClaimSpec,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let admin = spec
            .devices
            .iter()
            .flat_map(|d| d.requests.iter().flatten())
            .any(|r| r.exactly.as_ref().and_then(|e| e.admin_access) == Some(true));
        if !admin {
            return Ok(());
        }
        let namespace = input.namespace.as_deref().unwrap_or("default");
        match self.namespaces.get(namespace) {
            Some(labels) if labels.get(ADMIN_ACCESS_LABEL).map(String::as_str) == Some("true") => {
                Ok(())
            }
            Some(_) => Err(format!(
                "{}: admin access to devices requires the `{ADMIN_ACCESS_LABEL}: true` label on the containing namespace (namespace {namespace}; the API server refuses the claim)",
                input.label
            )),
            None => {
                warnings.push(format!(
                    "adminAccess: the API server accepts it only in a namespace labelled {ADMIN_ACCESS_LABEL}: \"true\"; namespace {namespace} was not given (add `kubectl get namespace {namespace} -o yaml` to the files to check)"
                ));
                Ok(())
            }
        }
    }
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
