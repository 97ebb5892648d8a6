//! The devices a claim can get, read from ResourceSlices: pools at their newest generation, attribute
//! and capacity names fully qualified, shared counter sets, and what existing claims already hold.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::resource::v1::{DeviceAttribute, DeviceTaint, ResourceSlice};

pub use crate::capacity::Capacity;
pub use crate::completeness::Elsewhere;
use crate::completeness::{Completeness, completeness};
use crate::input::ClaimInput;
use crate::nodes::Node;
use crate::quantity::Quantity;
use crate::version::KubernetesVersion;

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// `int`.
    Int(i64),
    /// `bool`.
    Bool(bool),
    /// `string`.
    String(String),
    /// `version` (semver).
    Version(String),
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::String(s) => write!(f, "{s:?}"),
            AttrValue::Version(v) => write!(f, "{v}"),
        }
    }
}

/// A device of some pool.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The driver of its slice.
    pub driver: String,
    /// Its pool.
    pub pool: String,
    /// Its name.
    pub name: String,
    /// Attributes by fully qualified name (`domain/id`).
    pub attributes: BTreeMap<String, AttrValue>,
    /// Capacities by fully qualified name.
    pub capacity: BTreeMap<String, Capacity>,
    /// `allowMultipleAllocations`.
    pub allow_multiple: bool,
    /// Counters consumed per counter set (index into [`Pools::counter_sets`]).
    pub consumes: Vec<(usize, BTreeMap<String, Quantity>)>,
    /// Taints.
    pub taints: Vec<DeviceTaint>,
    /// Set when the pool is being updated (its slices of its newest generation, on every node,
    /// are not exactly `resourceSliceCount`).
    pub incomplete_pool: bool,
    /// Set when the pool is invalid (duplicate device names, counters it does not have): the
    /// scheduler allocates nothing from it.
    pub invalid_pool: bool,
    /// For a device of a `perDeviceNodeSelection` slice: whether it is for the node.
    pub node_fit: NodeFit,
    /// `bindingConditions`: the scheduler binds the pod only once the claim's device status has
    /// them all true.
    pub binding_conditions: Vec<String>,
    /// `bindingFailureConditions`.
    pub binding_failure_conditions: Vec<String>,
    /// Where an allocation of the device may be used: what the allocation's node selector is
    /// built from.
    pub placement: Placement,
}

/// A device's node selection as the allocator builds an allocation's node selector from it
/// (`createNodeSelector`): its slice's, or its own in a `perDeviceNodeSelection` slice.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// `nodeName`: the allocation is for that one node.
    pub node_name: Option<String>,
    /// `nodeSelector`: its single term joins the allocation's.
    pub node_selector: Option<std::sync::Arc<k8s_openapi::api::core::v1::NodeSelector>>,
    /// `bindsToNode`: the allocation is for the node it was made on.
    pub binds_to_node: bool,
}

/// Whether a device is for the node explain answers for (per-device node selection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFit {
    /// Its slice's node selection decided, or its own selects the node.
    Yes,
    /// Its own node selection names another node (what it says).
    Other(String),
    /// Its node selector does not parse: a scheduler error when the search reaches it.
    Error(String),
}

impl Candidate {
    /// A device with nothing but its names.
    pub fn bare(driver: &str, pool: &str, name: &str) -> Candidate {
        Candidate {
            driver: driver.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            attributes: BTreeMap::new(),
            capacity: BTreeMap::new(),
            allow_multiple: false,
            consumes: Vec::new(),
            taints: Vec::new(),
            incomplete_pool: false,
            invalid_pool: false,
            node_fit: NodeFit::Yes,
            binding_conditions: Vec::new(),
            binding_failure_conditions: Vec::new(),
            placement: Placement::default(),
        }
    }

    /// `driver/pool/name`, unique across pools.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.driver, self.pool, self.name)
    }

    /// The device's NUMA node: any attribute named `numaNode` of type int.
    pub fn numa_node(&self) -> Option<i64> {
        self.attributes
            .iter()
            .find_map(|(name, value)| match value {
                AttrValue::Int(n) if name.ends_with("/numaNode") => Some(*n),
                _ => None,
            })
    }

    /// The device's PCIe root (`resource.kubernetes.io/pcieRoot`).
    pub fn pcie_root(&self) -> Option<&str> {
        match self.attributes.get("resource.kubernetes.io/pcieRoot") {
            Some(AttrValue::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A shared counter set of a pool.
#[derive(Debug, Clone)]
pub struct CounterSet {
    /// `driver/pool/name`.
    pub id: String,
    /// `driver/pool`.
    pub pool: String,
    /// Its counters.
    pub counters: BTreeMap<String, Quantity>,
}

/// What existing claims hold of a device.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The claim holding it exclusively.
    pub held_by: Option<String>,
    /// Capacity consumed by shares of a multi-allocatable device.
    pub consumed: BTreeMap<String, Quantity>,
    /// Non-admin allocations (shares) of the device by existing claims.
    pub shares: u32,
}

/// Every device of the slices, and what is in use.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    /// The devices: pools sorted by driver then name, slices of a pool by name, devices in slice
    /// order.
    pub devices: Vec<Candidate>,
    /// Counter sets.
    pub counter_sets: Vec<CounterSet>,
    /// Per device, what existing claims hold.
    pub usage: Vec<Usage>,
    /// Per counter set, what existing claims consume.
    pub counters_used: Vec<BTreeMap<String, Quantity>>,
    /// Per device: it consumes counters of a pool where what existing claims hold already
    /// exceeds some counter set, so the scheduler gives it to nobody.
    pub starved: Vec<bool>,
    /// The pools the scheduler gathers for the node, in its order (`GatherPools`), with or
    /// without devices here.
    pub pools: Vec<Pool>,
    /// Devices of other nodes' slices in pools complete only with them, by `driver/pool/name`:
    /// their allocations consume the pools' counters (`DeviceSlicesNotTargetingNode`).
    pub elsewhere: BTreeMap<String, Elsewhere>,
    /// Things a user should know (older generations dropped, incomplete pools, unknown devices).
    pub warnings: Vec<String>,
    /// A node selector of a slice that does not parse: the scheduler fails every claim on the
    /// node with it (`GatherPools`).
    pub node_error: Option<String>,
}

/// A pool the scheduler gathers for the node.
#[derive(Debug, Clone)]
pub struct Pool {
    /// `driver/pool`.
    pub id: String,
    /// Its devices in [`Pools::devices`].
    pub devices: std::ops::Range<usize>,
    /// Being updated (`IsIncomplete`): `allocationMode: All` fails on it.
    pub incomplete: bool,
    /// Invalid (`IsInvalid`): `allocationMode: All` fails on it, and so does a claim that gets
    /// no allocation.
    pub invalid: bool,
}

/// What a device's own node selection says, for the report.
fn device_node(device: &k8s_openapi::api::resource::v1::Device) -> String {
    match (&device.node_name, &device.node_selector) {
        (Some(name), _) => format!("is for node {name}"),
        (None, Some(_)) => "has a node selector that does not select this node".into(),
        (None, None) => "is for no node".into(),
    }
}

/// The API server's limits on a slice's devices (`k8s.io/api/resource/v1/types.go`:
/// `ResourceSliceMaxDevices`, `ResourceSliceMaxDevicesWithTaintsOrConsumesCounters`, and 32
/// attributes and capacities per device), broken by `devices`: what is wrong, or `None`.
fn beyond_api_limits(devices: &[k8s_openapi::api::resource::v1::Device]) -> Option<String> {
    const MAX_DEVICES: usize = 128;
    const MAX_DEVICES_WITH_TAINTS_OR_COUNTERS: usize = 64;
    const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
    let taints_or_counters = devices.iter().any(|d| {
        d.taints.as_ref().is_some_and(|t| !t.is_empty())
            || d.consumes_counters.as_ref().is_some_and(|c| !c.is_empty())
    });
    let max = match taints_or_counters {
        true => MAX_DEVICES_WITH_TAINTS_OR_COUNTERS,
        false => MAX_DEVICES,
    };
    if devices.len() > max {
        return Some(format!(
            "{} devices, at most {max} allowed{}",
            devices.len(),
            if taints_or_counters {
                " (some have taints or consume counters)"
            } else {
                ""
            }
        ));
    }
    devices.iter().find_map(|d| {
        let n = d.attributes.as_ref().map_or(0, |a| a.len())
            + d.capacity.as_ref().map_or(0, |c| c.len());
        (n > MAX_ATTRIBUTES_AND_CAPACITIES).then(|| {
            format!(
                "device {}: {n} attributes and capacities, at most {MAX_ATTRIBUTES_AND_CAPACITIES} allowed",
                d.name
            )
        })
    })
}

/// Fully qualifies an attribute or capacity name with the driver's domain.
pub fn qualify(driver: &str, name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("{driver}/{name}")
    }
}

/// Counter values, by name; an unparsable one counts as zero, with a warning.
pub(crate) fn counters(
    counters: &BTreeMap<String, k8s_openapi::api::resource::v1::Counter>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Quantity> {
    counters
        .iter()
        .map(|(name, c)| {
            let value = Quantity::parse(&c.value.0).unwrap_or_else(|e| {
                warnings.push(format!("counter {name}: {e}: counted as 0"));
                Quantity::ZERO
            });
            (name.clone(), value)
        })
        .collect()
}

fn attribute(value: &DeviceAttribute) -> Option<AttrValue> {
    if let Some(i) = value.int {
        Some(AttrValue::Int(i))
    } else if let Some(b) = value.bool {
        Some(AttrValue::Bool(b))
    } else if let Some(s) = &value.string {
        Some(AttrValue::String(s.clone()))
    } else {
        value
            .version
            .as_ref()
            .map(|v| AttrValue::Version(v.clone()))
    }
}

impl Pools {
    /// The pools of `slices` on `node` (None: every slice), with the allocations of `allocated`.
    /// The slices are read as the scheduler of `version` reads them (where counter sets live).
    pub fn new(
        slices: &[ResourceSlice],
        node: Option<&str>,
        allocated: &[ClaimInput],
        version: KubernetesVersion,
    ) -> Pools {
        Self::for_node(
            slices,
            &Node::named(node, BTreeMap::new()),
            allocated,
            version,
        )
    }

    /// As [`Pools::new`], for a node with labels: slices and devices with a node selector are
    /// matched against them.
    pub fn for_node(
        slices: &[ResourceSlice],
        node: &Node,
        allocated: &[ClaimInput],
        version: KubernetesVersion,
    ) -> Pools {
        let mut pools = Pools::default();
        let beside = version.counters_beside_devices();
        // (driver, pool) -> slices of the newest generation
        let mut grouped: BTreeMap<(String, String), Vec<&ResourceSlice>> = BTreeMap::new();
        // Every slice that can exist, of any node: what makes a pool complete.
        let mut all = Vec::new();
        for slice in slices {
            let spec = &slice.spec;
            let refused = beyond_api_limits(spec.devices.as_deref().unwrap_or_default());
            if refused.is_none() {
                all.push(slice);
            }
            // From 1.35 on, a slice of shared counters is for every node (`GatherPools`).
            let counters = !beside && spec.shared_counters.as_ref().is_some_and(|c| !c.is_empty());
            match node.wants_slice(slice) {
                _ if counters => {}
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    pools.node_error.get_or_insert(e);
                    continue;
                }
            }
            // A slice the API server refuses cannot exist: its pool lacks it (and is then
            // incomplete, as it would be in the cluster).
            if let Some(refused) = refused {
                pools.warnings.push(format!(
                    "slice {}: {refused}: the API server refuses such a slice, so it cannot exist: left out",
                    slice.metadata.name.as_deref().unwrap_or("<no name>"),
                ));
                continue;
            }
            let key = (spec.driver.clone(), spec.pool.name.clone());
            let entry = grouped.entry(key).or_default();
            match entry.first().map(|s| s.spec.pool.generation) {
                Some(g) if g > spec.pool.generation => continue,
                Some(g) if g < spec.pool.generation => entry.clear(),
                _ => {}
            }
            entry.push(slice);
        }
        let mut gathered: Vec<_> = Vec::new();
        for ((driver, pool), slices) in grouped {
            match completeness(&slices, &all) {
                Completeness::Obsolete { newer } => pools.warnings.push(format!(
                    "pool {driver}/{pool}: generation {} here, but generation {newer} elsewhere: as in the scheduler, the pool is ignored while its driver replaces it",
                    slices.first().map_or(0, |s| s.spec.pool.generation)
                )),
                state => gathered.push(((driver, pool), slices, state)),
            }
        }
        // Complete pools with binding conditions come after all others, each part by ID
        // (`GatherPools`).
        gathered.sort_by_key(|(_, slices, state)| {
            matches!(state, Completeness::Complete(_))
                && slices.iter().any(|s| {
                    s.spec
                        .devices
                        .iter()
                        .flatten()
                        .any(|d| d.binding_conditions.as_ref().is_some_and(|c| !c.is_empty()))
                })
        });
        for ((driver, pool), mut slices, state) in gathered {
            // The scheduler takes a pool's slices in name order (`buildPool`: sortSlicesByName),
            // whatever order they were listed in.
            slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let (incomplete, elsewhere) = match state {
                Completeness::Incomplete { present, expected } => {
                    pools.warnings.push(format!(
                        "pool {driver}/{pool}: {present} of {expected} slices present{} (being updated?): as in the scheduler, none of its devices is allocated until the pool is complete",
                        match present as i64 > expected {
                            true => ", more than resourceSliceCount",
                            false => "",
                        }
                    ));
                    (true, Vec::new())
                }
                Completeness::Complete(elsewhere) => (false, elsewhere),
                Completeness::Obsolete { .. } => continue,
            };
            // Counter sets by (slice, name): in 1.34 a device sees its own slice's sets only; from
            // 1.35 on, every set of the pool (the slice is None).
            let scope = |i: usize| beside.then_some(i);
            let mut sets: BTreeMap<(Option<usize>, String), usize> = BTreeMap::new();
            // Why the scheduler sets the pool aside (`buildPool`: the first problem found).
            let mut invalid: Option<String> = None;
            let first = pools.devices.len();
            for (i, slice) in slices.iter().enumerate() {
                for set in slice.spec.shared_counters.iter().flatten() {
                    let counters = counters(&set.counters, &mut pools.warnings);
                    let key = (scope(i), set.name.clone());
                    if sets.contains_key(&key) {
                        invalid.get_or_insert(format!("duplicate counter set name {}", set.name));
                    }
                    sets.insert(key, pools.counter_sets.len());
                    pools.counter_sets.push(CounterSet {
                        id: format!("{driver}/{pool}/{}", set.name),
                        pool: format!("{driver}/{pool}"),
                        counters,
                    });
                }
            }
            for (i, slice) in slices.iter().enumerate() {
                let devices = slice.spec.devices.as_deref().unwrap_or_default();
                let has_counters = slice
                    .spec
                    .shared_counters
                    .as_ref()
                    .is_some_and(|c| !c.is_empty());
                if !beside && has_counters && !devices.is_empty() {
                    // `buildPool` (1.36): a slice with shared counters is a counter slice.
                    pools.warnings.push(format!(
                        "slice {}: carries shared counters and {} devices, the Kubernetes 1.34 layout: the Kubernetes {version} scheduler reads it for its counters only and ignores its devices (publish counters in a slice of their own, --counter-layout own-slice, or explain with --kubernetes-version 1.34)",
                        slice.metadata.name.as_deref().unwrap_or("<no name>"),
                        devices.len()
                    ));
                    continue;
                }
                let mut lists = Vec::new();
                let per_device = slice.spec.per_device_node_selection == Some(true);
                let slice_placement = Placement {
                    node_name: slice.spec.node_name.clone().filter(|n| !n.is_empty()),
                    node_selector: slice.spec.node_selector.clone().map(std::sync::Arc::new),
                    binds_to_node: false,
                };
                for device in devices {
                    let mut candidate = Candidate::bare(&driver, &pool, &device.name);
                    candidate.incomplete_pool = incomplete;
                    candidate.allow_multiple = device.allow_multiple_allocations.unwrap_or(false);
                    candidate.taints = device.taints.clone().unwrap_or_default();
                    candidate.binding_conditions =
                        device.binding_conditions.clone().unwrap_or_default();
                    candidate.binding_failure_conditions = device
                        .binding_failure_conditions
                        .clone()
                        .unwrap_or_default();
                    candidate.placement = match per_device {
                        true => Placement {
                            node_name: device.node_name.clone().filter(|n| !n.is_empty()),
                            node_selector: device.node_selector.clone().map(std::sync::Arc::new),
                            binds_to_node: false,
                        },
                        false => slice_placement.clone(),
                    };
                    candidate.placement.binds_to_node = device.binds_to_node == Some(true);
                    if per_device {
                        candidate.node_fit = match node.device(device) {
                            Ok(true) => NodeFit::Yes,
                            Ok(false) => NodeFit::Other(device_node(device)),
                            Err(e) => NodeFit::Error(e),
                        };
                    }
                    for (name, value) in device.attributes.iter().flatten() {
                        match attribute(value) {
                            Some(value) => {
                                candidate.attributes.insert(qualify(&driver, name), value);
                            }
                            None => lists.push(format!("{}/{name}", device.name)),
                        }
                    }
                    for (name, cap) in device.capacity.iter().flatten() {
                        let Ok(value) = Quantity::parse(&cap.value.0) else {
                            pools.warnings.push(format!(
                                "device {}: capacity {name}: unparsable quantity {:?}, ignored",
                                candidate.id(),
                                cap.value.0
                            ));
                            continue;
                        };
                        let mut capacity = Capacity::plain(value, &cap.value.0);
                        capacity.published_name.clone_from(name);
                        if let Some(policy) = &cap.request_policy {
                            let parse =
                                |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                                    Quantity::parse(&q.0).ok()
                                };
                            capacity.default = policy.default.as_ref().and_then(parse);
                            capacity.valid_values = policy
                                .valid_values
                                .iter()
                                .flatten()
                                .filter_map(parse)
                                .collect();
                            capacity.valid_values.sort();
                            capacity.valid_range = policy.valid_range.as_ref().map(|r| {
                                (
                                    parse(&r.min).unwrap_or_default(),
                                    r.max.as_ref().and_then(parse),
                                    r.step.as_ref().and_then(parse),
                                )
                            });
                        }
                        candidate.capacity.insert(qualify(&driver, name), capacity);
                    }
                    for consumption in device.consumes_counters.iter().flatten() {
                        let key = (scope(i), consumption.counter_set.clone());
                        let Some(set) = sets.get(&key) else {
                            let hint = match beside {
                                true => {
                                    " in its slice (Kubernetes 1.34 looks nowhere else; explain with --kubernetes-version 1.35 or later for counters in slices of their own)"
                                }
                                false => " in its pool",
                            };
                            pools.warnings.push(format!(
                                "device {}: consumes counters of set {:?}, which is not{hint}",
                                candidate.id(),
                                consumption.counter_set
                            ));
                            invalid.get_or_insert(format!(
                                "counter set {} not found",
                                consumption.counter_set
                            ));
                            candidate.consumes.push((usize::MAX, BTreeMap::new()));
                            continue;
                        };
                        let counters = counters(&consumption.counters, &mut pools.warnings);
                        if let Some(missing) = pools.counter_sets.get(*set).and_then(|s| {
                            counters.keys().find(|name| !s.counters.contains_key(*name))
                        }) {
                            invalid.get_or_insert(format!(
                                "counter {missing} not found in counter set {}",
                                consumption.counter_set
                            ));
                        }
                        candidate.consumes.push((*set, counters));
                    }
                    pools.devices.push(candidate);
                }
                if !lists.is_empty() {
                    pools.warnings.push(format!(
                        "slice {}: list-typed attributes ({}) need the alpha feature gate DRAListTypeAttributes, which explain does not model: left out (the scheduler with the gate off never sees them)",
                        slice.metadata.name.as_deref().unwrap_or("<no name>"),
                        lists.join(", ")
                    ));
                }
            }
            let mut names = BTreeSet::new();
            if let Some(duplicate) = pools
                .devices
                .get(first..)
                .unwrap_or_default()
                .iter()
                .find(|d| !names.insert(d.name.as_str()))
            {
                invalid = Some(format!("duplicate device name {}", duplicate.name));
            }
            if !beside {
                let id = format!("{driver}/{pool}");
                let found = pools.record_elsewhere(&id, &elsewhere, &sets);
                invalid = invalid.or(found);
            }
            // `buildPool` validates complete pools only.
            let invalid = invalid.filter(|_| !incomplete);
            if let Some(reason) = &invalid {
                pools.warnings.push(format!(
                    "pool {driver}/{pool} is invalid ({reason}): as in the scheduler, none of its devices is allocated"
                ));
                for device in pools.devices.get_mut(first..).unwrap_or_default() {
                    device.invalid_pool = true;
                }
            }
            pools.pools.push(Pool {
                id: format!("{driver}/{pool}"),
                devices: first..pools.devices.len(),
                incomplete,
                invalid: invalid.is_some(),
            });
        }
        pools.usage = vec![Usage::default(); pools.devices.len()];
        pools.counters_used = vec![BTreeMap::new(); pools.counter_sets.len()];
        pools.add_allocations(allocated);
        pools.find_overcommitted();
        pools
    }

    /// Counter sets whose held consumption exceeds them (an inconsistent state: a pool republished
    /// with smaller counters, or claims allocated by something else). The scheduler's
    /// `checkAvailableCounters` compares every set of the device's pool, so such a set blocks
    /// every counter-consuming device of its pool, not only its own.
    fn find_overcommitted(&mut self) {
        let mut pools = BTreeSet::new();
        for (set, used) in self.counter_sets.iter().zip(&self.counters_used) {
            let over: Vec<String> = used
                .iter()
                .filter(|(name, q)| set.counters.get(*name).is_some_and(|have| *q > have))
                .map(|(name, q)| {
                    let have = set.counters.get(name).copied().unwrap_or_default();
                    format!("{name} {q} of {have}")
                })
                .collect();
            if !over.is_empty() {
                self.warnings.push(format!(
                    "counter set {} is over-committed by existing allocations ({}): as in the scheduler, no device of pool {} that consumes counters can be allocated",
                    set.id,
                    over.join(", "),
                    set.pool
                ));
                pools.insert(set.pool.clone());
            }
        }
        // A shared device already in use is not counted again (`skipCounterCheck`), so it is not
        // blocked.
        self.starved = self
            .devices
            .iter()
            .zip(&self.usage)
            .map(|(d, usage)| {
                let counted = !d.consumes.is_empty() && (!d.allow_multiple || usage.shares == 0);
                counted && pools.contains(&format!("{}/{}", d.driver, d.pool))
            })
            .collect();
    }

    /// Adds what `claims` hold to what is in use (a pod's own allocated claims, for that pod's
    /// search).
    pub(crate) fn hold(&mut self, claims: &[ClaimInput]) {
        self.add_allocations(claims);
        self.find_overcommitted();
    }

    fn add_allocations(&mut self, allocated: &[ClaimInput]) {
        let index: BTreeMap<String, usize> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id(), i))
            .collect();
        for claim in allocated {
            let results = claim
                .status
                .as_ref()
                .and_then(|s| s.allocation.as_ref())
                .and_then(|a| a.devices.as_ref())
                .and_then(|d| d.results.as_ref());
            // Claims not allocated yet hold nothing (`kubectl get resourceclaims -A` lists them too).
            let Some(results) = results else {
                continue;
            };
            for result in results {
                let id = format!("{}/{}/{}", result.driver, result.pool, result.device);
                let admin = result.admin_access == Some(true);
                let Some(&i) = index.get(&id) else {
                    if self.charge_elsewhere(&id, admin) {
                        continue;
                    }
                    self.warnings.push(format!(
                        "{}: holds {id}, which no slice publishes: ignored",
                        claim.label
                    ));
                    continue;
                };
                if admin {
                    continue;
                }
                let (Some(device), Some(usage)) = (self.devices.get(i), self.usage.get_mut(i))
                else {
                    continue;
                };
                // A result with a share ID is one share of the device; one without holds the whole
                // device, as the scheduler's allocated state counts them (admin access: nothing).
                if result.share_id.is_some() {
                    for (name, q) in result.consumed_capacity.iter().flatten() {
                        let amount = Quantity::parse(&q.0).unwrap_or_default();
                        let entry = usage
                            .consumed
                            .entry(qualify(&device.driver, name))
                            .or_default();
                        *entry = entry.plus(amount);
                    }
                } else {
                    usage.held_by = Some(claim.label.clone());
                }
                usage.shares += 1;
                // Counters are charged once per device, by its first allocation.
                if usage.shares > 1 {
                    continue;
                }
                for (set, counters) in &device.consumes {
                    if let Some(used) = self.counters_used.get_mut(*set) {
                        for (name, q) in counters {
                            let entry = used.entry(name.clone()).or_default();
                            *entry = entry.plus(*q);
                        }
                    }
                }
            }
        }
    }

    /// Every attribute domain any device has.
    pub fn domains(&self) -> BTreeSet<String> {
        self.devices
            .iter()
            .flat_map(|d| d.attributes.keys().chain(d.capacity.keys()))
            .filter_map(|name| name.rsplit_once('/').map(|(domain, _)| domain.to_owned()))
            .collect()
    }
}
