//! What explain answers: the outcome of a claim, the devices it gets, why a device is not a
//! candidate, and how the alignment of an allocation is worded.

use std::collections::{BTreeMap, BTreeSet};

use crate::search::Fit;

/// How a claim fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every request got its devices.
    Allocated,
    /// No allocation exists.
    Unsatisfiable,
    /// The search reached its step limit without an allocation: one may exist (the scheduler,
    /// within its own time limit, may find it or time out).
    Undecided,
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
    /// The device's `bindingConditions`, copied into the result as the scheduler does: it binds
    /// the pod only once the claim's device status has them all true.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binding_conditions: Vec<String>,
    /// The device's `bindingFailureConditions`: any of them true makes the scheduler give the
    /// devices back and try again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binding_failure_conditions: Vec<String>,
}

/// What became of one claim.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `ResourceClaimTemplate name` or `ResourceClaim ns/name`.
    pub claim: String,
    /// The Kubernetes version whose scheduler's rules were applied (`1.36`).
    pub kubernetes_version: String,
    /// The DRA feature gates those rules ran with (`every modeled DRA feature gate on`, or the ones
    /// off).
    pub feature_gates: String,
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
    /// The allocation's node selector, as the scheduler writes it into
    /// `status.allocation.nodeSelector` (allocated claims only; absent where the allocation is
    /// usable on every node): `metadata.name In [<node>]` for node-local devices and devices that
    /// bind to the node, else the devices' slice (or per-device) node selectors joined.
    #[serde(rename = "nodeSelector", skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<k8s_openapi::api::core::v1::NodeSelector>,
    /// Why not (unsatisfiable or error), most important first.
    pub explanation: Vec<String>,
    /// Things that differ from, or would trip, the real scheduler.
    pub warnings: Vec<String>,
    /// Devices tried by the search.
    pub search_steps: u64,
    /// For a pod's extended resources: which container's resource each request of the implicit
    /// claim serves (`pod.status.extendedResourceClaimStatus.requestMappings`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_mappings: Vec<crate::input::RequestMapping>,
    /// For a claim of a pod (or pod template): the pod, whose pending claims the scheduler
    /// allocates together in one search (`Pod ns/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// Why a device is not a candidate for an alternative.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejection {
    Selector { origin: String, verdict: String },
    Taint(String),
    Capacity(String),
    InUse(String),
    IncompletePool,
    InvalidPool,
    OverCommitted,
    OtherNode(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Selector { origin, verdict } => write!(f, "{origin} {verdict}"),
            Rejection::Taint(t) => write!(f, "tainted {t} (not tolerated)"),
            Rejection::Capacity(c) => write!(f, "{c}"),
            Rejection::InUse(by) => write!(f, "in use by {by}"),
            Rejection::IncompletePool => write!(f, "its pool is being updated (slices missing)"),
            Rejection::InvalidPool => write!(f, "its pool is invalid (see the notes)"),
            Rejection::OtherNode(why) => write!(f, "{why} (per-device node selection)"),
            Rejection::OverCommitted => write!(
                f,
                "consumes counters of a pool whose counter set existing allocations over-commit (the scheduler then gives no counter-consuming device of the pool)"
            ),
        }
    }
}

/// The devices of an alternative: candidates, and the rest with their reason.
pub(crate) struct Matching {
    pub(crate) fits: Vec<Fit>,
    pub(crate) rejected: Vec<(usize, Rejection)>,
}

/// How an alignment is worded: `aligned on NUMA node 0`, `cross-NUMA: gpu-0 on node 0, ...`.
pub(crate) struct Wording {
    long: &'static str,
    short: &'static str,
    unit: &'static str,
    /// Say so when no device has it (NUMA nodes: yes; PCIe roots: CPUs have none, so no).
    say_unknown: bool,
}

/// NUMA nodes.
pub(crate) const NUMA: Wording = Wording {
    long: "NUMA node",
    short: "NUMA",
    unit: "node ",
    say_unknown: true,
};

/// PCIe roots.
pub(crate) const PCIE: Wording = Wording {
    long: "PCIe root",
    short: "PCIe-root",
    unit: "",
    say_unknown: false,
};

/// Whether two or more devices share a NUMA node (or PCIe root), and for which it is unknown.
pub(crate) fn alignment(
    devices: &[Allocated],
    w: Wording,
    of: impl Fn(&Allocated) -> Option<String>,
) -> Option<String> {
    if devices.len() < 2 {
        return None;
    }
    let known: Vec<(&str, String)> = devices
        .iter()
        .filter_map(|d| of(d).map(|v| (d.device.as_str(), v)))
        .collect();
    let unknown: Vec<&str> = devices
        .iter()
        .filter(|d| of(d).is_none())
        .map(|d| d.device.as_str())
        .collect();
    let values: BTreeSet<&String> = known.iter().map(|(_, v)| v).collect();
    let first = values.iter().next().map_or("", |v| v.as_str());
    let mut text = match (values.len(), unknown.is_empty()) {
        (0, _) => {
            return w
                .say_unknown
                .then(|| format!("{} unknown for every device", w.long));
        }
        (1, true) => format!("aligned on {} {first}", w.long),
        (1, false) => {
            let names: Vec<&str> = known.iter().map(|k| k.0).collect();
            format!("{} {first} for {}", w.long, names.join(", "))
        }
        _ => {
            let parts: Vec<String> = known
                .iter()
                .map(|(d, v)| format!("{d} on {}{v}", w.unit))
                .collect();
            format!("cross-{}: {}", w.short, parts.join(", "))
        }
    };
    if !unknown.is_empty() {
        text.push_str(&format!(
            "; unknown for {} (alignment not provable)",
            unknown.join(", ")
        ));
    }
    Some(text)
}
