//! A claim's requests in one shape: each request a list of alternatives (one for `exactly`, the
//! sub-requests in order for `firstAvailable`), each with its class's and its own selectors, and the
//! constraints with the requests they cover.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    CapacityRequirements, DeviceClass, DeviceSelector, DeviceToleration, ResourceClaimSpec,
};

use crate::quantity::Quantity;

/// The API server's limits on a claim (`k8s.io/api/resource/v1/types.go`: `DeviceRequestsMaxSize`,
/// `FirstAvailableDeviceRequestMaxSize`, `DeviceSelectorsMaxSize`, `DeviceConstraintsMaxSize`,
/// `DeviceTolerationsMaxLength`); a constraint names at most `DeviceRequestsMaxSize` requests. A
/// claim beyond them cannot exist, and bounding them bounds the search's work per step.
pub mod limits {
    /// Requests per claim, and requests named by one constraint.
    pub const REQUESTS: usize = 32;
    /// Sub-requests of one `firstAvailable`.
    pub const FIRST_AVAILABLE: usize = 8;
    /// Selectors of one request, sub-request or DeviceClass.
    pub const SELECTORS: usize = 32;
    /// Constraints per claim.
    pub const CONSTRAINTS: usize = 32;
    /// Tolerations of one request or sub-request.
    pub const TOLERATIONS: usize = 16;
}

/// A request or sub-request name as the API server checks it: a DNS label, unique among `before`
/// (its words: `Invalid value`, `Duplicate value`).
fn check_name<'a>(
    field: &str,
    name: &String,
    mut before: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    if !hal::text::is_dns_label(name) {
        return Err(format!(
            "{field}: Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric character \
             (the API server refuses it)"
        ));
    }
    if before.any(|b| b == name) {
        return Err(format!(
            "{field}: Duplicate value: {name:?} (the API server refuses it)"
        ));
    }
    Ok(())
}

/// `field: Too many: n: must have at most max items`, the API server's words, when `n > max`.
fn at_most(field: &str, n: usize, max: usize) -> Result<(), String> {
    match n > max {
        true => Err(format!(
            "{field}: Too many: {n}: must have at most {max} items (the API server refuses it)"
        )),
        false => Ok(()),
    }
}

/// How many devices an alternative wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `allocationMode: ExactCount` with `count`.
    Exact(usize),
    /// `allocationMode: All`: every matching device (at least one).
    All,
}

/// One CEL selector and where it comes from.
#[derive(Debug, Clone)]
pub struct Selector {
    /// `class gpu.example.com selector #1` or `request gpu selector #2` (1-based, for people).
    pub origin: String,
    /// The expression.
    pub expression: String,
    /// The DeviceClass it comes from (None: the request's own).
    pub class: Option<String>,
    /// 0-based position among the class's or the request's selectors, as the scheduler counts.
    pub index: usize,
}

/// One way to satisfy a request.
#[derive(Debug, Clone)]
pub struct Alternative {
    /// `req` for `exactly`, `req/sub` for a `firstAvailable` entry.
    pub name: String,
    /// The DeviceClass.
    pub class: String,
    /// The class's selectors, then the request's.
    pub selectors: Vec<Selector>,
    /// How many.
    pub mode: Mode,
    /// `adminAccess`.
    pub admin_access: bool,
    /// `capacity.requests`, by name as written.
    pub capacity: BTreeMap<String, Quantity>,
    /// `tolerations`.
    pub tolerations: Vec<DeviceToleration>,
}

/// A request of the claim.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its name.
    pub name: String,
    /// Tried in order; `exactly` has one.
    pub alternatives: Vec<Alternative>,
    /// Written as `firstAvailable` (even with a single entry).
    pub first_available: bool,
    /// Which claim of a pod's joint search it belongs to (0 for a claim searched alone).
    pub claim: usize,
}

/// What a constraint demands of the devices of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintKind {
    /// `matchAttribute`: all carry the attribute, with one value.
    Match(String),
    /// `distinctAttribute`: all carry the attribute, with different values.
    Distinct(String),
}

/// A constraint of the claim.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// 1-based position in `spec.devices.constraints`.
    pub number: usize,
    /// Request names it covers (empty: every request).
    pub requests: Vec<String>,
    /// What it demands.
    pub kind: ConstraintKind,
    /// Which claim of a pod's joint search it belongs to (0 for a claim searched alone): it
    /// covers only requests of that claim.
    pub claim: usize,
}

impl Constraint {
    /// Whether it covers the alternative `name` (`req` or `req/sub`).
    pub fn covers(&self, name: &str) -> bool {
        self.requests.is_empty()
            || self
                .requests
                .iter()
                .any(|r| r == name || name.split_once('/').is_some_and(|(parent, _)| parent == r))
    }

    /// `matchAttribute hal.dra.dev/numaNode over [gpu, nic]`.
    pub fn describe(&self) -> String {
        let (what, attribute) = match &self.kind {
            ConstraintKind::Match(a) => ("matchAttribute", a),
            ConstraintKind::Distinct(a) => ("distinctAttribute", a),
        };
        let over = match self.requests.is_empty() {
            true => "every request".to_owned(),
            false => self.requests.join(", "),
        };
        format!(
            "constraint #{} ({what} {attribute} over {over})",
            self.number
        )
    }
}

/// The normalized claim.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Requests in order.
    pub requests: Vec<Request>,
    /// Constraints in order.
    pub constraints: Vec<Constraint>,
}

impl Claim {
    /// The claims of one pod as one claim for a joint search, in the scheduler's order: requests
    /// and constraints keep which claim they belong to, so constraints stay within their claim.
    pub fn joint(claims: &[&Claim]) -> Claim {
        let mut joint = Claim {
            requests: Vec::new(),
            constraints: Vec::new(),
        };
        for (index, claim) in claims.iter().enumerate() {
            joint
                .requests
                .extend(claim.requests.iter().cloned().map(|mut r| {
                    r.claim = index;
                    r
                }));
            joint
                .constraints
                .extend(claim.constraints.iter().cloned().map(|mut c| {
                    c.claim = index;
                    c
                }));
        }
        joint
    }

    /// Normalizes `spec`, with `classes` by name. Errors are what the API server or scheduler would
    /// refuse: a request without `exactly` or `firstAvailable`, an unknown class, a bad count.
    pub fn new(
        spec: &ResourceClaimSpec,
        classes: &BTreeMap<String, DeviceClass>,
    ) -> Result<Claim, String> {
        let devices = spec.devices.as_ref();
        at_most(
            "spec.devices.requests",
            devices
                .and_then(|d| d.requests.as_ref())
                .map_or(0, Vec::len),
            limits::REQUESTS,
        )?;
        at_most(
            "spec.devices.constraints",
            devices
                .and_then(|d| d.constraints.as_ref())
                .map_or(0, Vec::len),
            limits::CONSTRAINTS,
        )?;
        let mut requests = Vec::new();
        for (i, request) in devices
            .and_then(|d| d.requests.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = &request.name;
            let field = format!("spec.devices.requests[{i}].name");
            check_name(&field, name, requests.iter().map(|r: &Request| &r.name))?;
            if let Some(subs) = &request.first_available {
                at_most(
                    &format!("request {name}: firstAvailable"),
                    subs.len(),
                    limits::FIRST_AVAILABLE,
                )?;
                for (j, sub) in subs.iter().enumerate() {
                    let field = format!("spec.devices.requests[{i}].firstAvailable[{j}].name");
                    check_name(&field, &sub.name, subs.iter().take(j).map(|s| &s.name))?;
                }
            }
            let alternatives = match (&request.exactly, &request.first_available) {
                (Some(exact), None) => vec![alternative(
                    name.clone(),
                    &exact.device_class_name,
                    exact.selectors.as_deref(),
                    exact.allocation_mode.as_deref(),
                    exact.count,
                    exact.admin_access.unwrap_or(false),
                    exact.capacity.as_ref(),
                    exact.tolerations.as_deref(),
                    classes,
                )?],
                (None, Some(subs)) if !subs.is_empty() => subs
                    .iter()
                    .map(|sub| {
                        alternative(
                            format!("{name}/{}", sub.name),
                            &sub.device_class_name,
                            sub.selectors.as_deref(),
                            sub.allocation_mode.as_deref(),
                            sub.count,
                            false,
                            sub.capacity.as_ref(),
                            sub.tolerations.as_deref(),
                            classes,
                        )
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(format!(
                        "request {name}: exactly one of `exactly` and `firstAvailable` (non-empty) must be set"
                    ));
                }
            };
            requests.push(Request {
                name: name.clone(),
                alternatives,
                first_available: request.first_available.is_some(),
                claim: 0,
            });
        }
        if requests.is_empty() {
            return Err("the claim has no requests".into());
        }
        let mut constraints = Vec::new();
        for (i, c) in devices
            .and_then(|d| d.constraints.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let number = i + 1;
            let kind = match (&c.match_attribute, &c.distinct_attribute) {
                (Some(a), None) => ConstraintKind::Match(a.clone()),
                (None, Some(a)) => ConstraintKind::Distinct(a.clone()),
                _ => {
                    return Err(format!(
                        "constraint #{number}: exactly one of matchAttribute and distinctAttribute must be set"
                    ));
                }
            };
            let (ConstraintKind::Match(attribute) | ConstraintKind::Distinct(attribute)) = &kind;
            if !attribute.contains('/') {
                return Err(format!(
                    "constraint #{number}: {attribute:?} must be fully qualified (domain/name), e.g. resource.kubernetes.io/pcieRoot"
                ));
            }
            let names: Vec<String> = c.requests.clone().unwrap_or_default();
            at_most(
                &format!("constraint #{number}: requests"),
                names.len(),
                limits::REQUESTS,
            )?;
            for name in &names {
                let known = requests
                    .iter()
                    .any(|r| &r.name == name || r.alternatives.iter().any(|a| &a.name == name));
                if !known {
                    return Err(format!("constraint #{number}: no request named {name:?}"));
                }
            }
            constraints.push(Constraint {
                number,
                requests: names,
                kind,
                claim: 0,
            });
        }
        Ok(Claim {
            requests,
            constraints,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn alternative(
    name: String,
    class_name: &str,
    selectors: Option<&[DeviceSelector]>,
    mode: Option<&str>,
    count: Option<i64>,
    admin_access: bool,
    capacity: Option<&CapacityRequirements>,
    tolerations: Option<&[DeviceToleration]>,
    classes: &BTreeMap<String, DeviceClass>,
) -> Result<Alternative, String> {
    if class_name.is_empty() {
        return Err(format!("request {name}: deviceClassName is required"));
    }
    let class = classes.get(class_name).ok_or_else(|| {
        format!("request {name}: DeviceClass {class_name:?} not found (give it with --class FILE)")
    })?;
    at_most(
        &format!("request {name}: selectors"),
        selectors.map_or(0, <[_]>::len),
        limits::SELECTORS,
    )?;
    at_most(
        &format!("request {name}: tolerations"),
        tolerations.map_or(0, <[_]>::len),
        limits::TOLERATIONS,
    )?;
    // As the API server's `validateDeviceToleration` (after defaulting: no operator is Equal).
    for toleration in tolerations.into_iter().flatten() {
        let refused = |why: String| {
            Err(format!(
                "request {name}: tolerations: {why} (the API server refuses it)"
            ))
        };
        let value = toleration.value.as_deref().unwrap_or("");
        match toleration.operator.as_deref().unwrap_or("") {
            "" | "Equal" => {}
            "Exists" if value.is_empty() => {}
            "Exists" => {
                return refused(format!(
                    "value: Invalid value: {value:?}: must be empty for operator `Exists`"
                ));
            }
            operator => {
                return refused(format!(
                    "operator: Unsupported value: {operator:?}: supported values: \"Equal\", \"Exists\""
                ));
            }
        }
        if let Some(effect) = toleration
            .effect
            .as_deref()
            .filter(|e| !matches!(*e, "" | "NoSchedule" | "NoExecute" | "None"))
        {
            return refused(format!(
                "effect: Unsupported value: {effect:?}: supported values: \"NoExecute\", \"NoSchedule\", \"None\""
            ));
        }
    }
    at_most(
        &format!("DeviceClass {class_name}: spec.selectors"),
        class
            .spec
            .as_ref()
            .and_then(|s| s.selectors.as_ref())
            .map_or(0, Vec::len),
        limits::SELECTORS,
    )?;
    let mut all = Vec::new();
    let class_selectors = class
        .spec
        .iter()
        .flat_map(|spec| spec.selectors.iter().flatten());
    for (i, s) in class_selectors.enumerate() {
        if let Some(cel) = &s.cel {
            all.push(Selector {
                origin: format!("class {class_name} selector #{}", i + 1),
                expression: cel.expression.clone(),
                class: Some(class_name.to_owned()),
                index: i,
            });
        }
    }
    for (i, s) in selectors.into_iter().flatten().enumerate() {
        if let Some(cel) = &s.cel {
            all.push(Selector {
                origin: format!("request {name} selector #{}", i + 1),
                expression: cel.expression.clone(),
                class: None,
                index: i,
            });
        }
    }
    let mode = match (mode.unwrap_or("ExactCount"), count) {
        ("ExactCount", None) => Mode::Exact(1),
        // The API only asks for more than zero; a claim's limit of 32 devices is the scheduler's,
        // checked against the whole claim (`Allocator::explain`).
        ("ExactCount", Some(n)) if n >= 1 => Mode::Exact(usize::try_from(n).unwrap_or(usize::MAX)),
        ("ExactCount", Some(n)) => {
            return Err(format!(
                "request {name}: count {n} must be greater than zero"
            ));
        }
        ("All", None) => Mode::All,
        ("All", Some(_)) => {
            return Err(format!(
                "request {name}: count must not be set with allocationMode All"
            ));
        }
        (other, _) => {
            return Err(format!(
                "request {name}: unknown allocationMode {other:?} (ExactCount or All)"
            ));
        }
    };
    let mut wanted = BTreeMap::new();
    for (cap, q) in capacity
        .and_then(|c| c.requests.as_ref())
        .into_iter()
        .flatten()
    {
        let amount =
            Quantity::parse(&q.0).map_err(|e| format!("request {name}: capacity {cap}: {e}"))?;
        wanted.insert(cap.clone(), amount);
    }
    Ok(Alternative {
        name,
        class: class_name.to_owned(),
        selectors: all,
        mode,
        admin_access,
        capacity: wanted,
        tolerations: tolerations
            .map(<[DeviceToleration]>::to_vec)
            .unwrap_or_default(),
    })
}
