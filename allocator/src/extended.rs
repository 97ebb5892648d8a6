//! Extended resources served by DRA (`DRAExtendedResource`, beta in Kubernetes 1.36): a pod that
//! asks for `gpu.intel.com/i915: 1` gets its devices through one implicit ResourceClaim, built by
//! the scheduler from the DeviceClasses that name the resource.
//!
//! Upstream: `pkg/scheduler/framework/plugins/dynamicresources/extendeddynamicresources.go`
//! (`filterExtendedResources`, `createRequestsAndMappings`, `createResourceRequestAndMappings`,
//! `partitionContainerIndices`), `.../extended/cache.go` (which class serves which name) and
//! `pkg/scheduler/util` (`IsDRAExtendedResourceName`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::resource::v1::{
    DeviceClaim, DeviceClass, DeviceRequest, ExactDeviceRequest, ResourceClaimSpec,
};

use crate::input::{ClaimInput, PodInput, RequestMapping};
use crate::quantity::Quantity;

/// The implicit extended-resource name of every DeviceClass (`resourceapi.ResourceDeviceClassPrefix`).
pub const CLASS_PREFIX: &str = "deviceclass.resource.kubernetes.io/";

/// The claim a pod's extended resources turn into, and what explain should say about the rest.
#[derive(Debug, Clone, Default)]
pub struct Implicit {
    /// The implicit claim (None: no extended resource of the pod is served by a DeviceClass).
    pub claim: Option<ClaimInput>,
    /// Resources no class serves, classes that compete for a name.
    pub notes: Vec<String>,
}

/// Whether the scheduler treats `name` as an extended resource DRA may serve
/// (`IsDRAExtendedResourceName`): an extended resource name (has a domain, not `kubernetes.io`,
/// not `requests.`), or an implicit class name.
fn is_extended(name: &str) -> bool {
    if name.starts_with(CLASS_PREFIX) {
        return true;
    }
    let Some((domain, _)) = name.split_once('/') else {
        return false;
    };
    let native = domain == "kubernetes.io" || domain.ends_with(".kubernetes.io");
    !native && !name.starts_with("requests.")
}

/// A container's requests as the API server stores them: a resource with only a limit is
/// requested at its limit (defaulting).
fn requests(container: &Container) -> BTreeMap<String, Quantity> {
    let resources = container.resources.as_ref();
    let mut all = BTreeMap::new();
    let limits = resources
        .and_then(|r| r.limits.as_ref())
        .into_iter()
        .flatten();
    let requests = resources
        .and_then(|r| r.requests.as_ref())
        .into_iter()
        .flatten();
    // Requests after limits, so a request given wins.
    for (name, quantity) in limits.chain(requests) {
        if let Ok(q) = Quantity::parse(&quantity.0) {
            all.insert(name.clone(), q);
        }
    }
    all
}

/// A whole number of devices (`Quantity.AsInt64`), or None.
fn whole(q: Quantity) -> Option<i64> {
    let nano = q.nano_units();
    (nano % 1_000_000_000 == 0)
        .then(|| i64::try_from(nano / 1_000_000_000).ok())
        .flatten()
}

/// Which class serves each name (`ExtendedResourceCache`): a class's `extendedResourceName`, and
/// for every class `deviceclass.resource.kubernetes.io/<name>`. Later classes of the same name
/// replace earlier ones (user files over the built-in ones).
fn class_mapping(classes: &[DeviceClass], notes: &mut Vec<String>) -> BTreeMap<String, String> {
    let by_name: BTreeMap<&str, &DeviceClass> = classes
        .iter()
        .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c)))
        .collect();
    let mut mapping: BTreeMap<String, String> = BTreeMap::new();
    for (name, class) in &by_name {
        if let Some(resource) = class
            .spec
            .as_ref()
            .and_then(|s| s.extended_resource_name.as_deref())
        {
            if let Some(other) = mapping.get(resource) {
                notes.push(format!(
                    "DeviceClasses {other} and {name} both name the extended resource {resource}: the scheduler keeps whichever its cache saw last; explain uses {other}"
                ));
                continue;
            }
            mapping.insert(resource.to_owned(), (*name).to_owned());
        }
    }
    for name in by_name.keys() {
        mapping.insert(format!("{CLASS_PREFIX}{name}"), (*name).to_owned());
    }
    mapping
}

/// The request (and mappings) of one container for one resource
/// (`createResourceRequestAndMappings`): `reusable` are requests of long-lived containers an init
/// container may share before asking for more.
fn container_request(
    index: usize,
    container: &Container,
    resource: &str,
    class: &str,
    reusable: &[Option<DeviceRequest>],
) -> (Option<DeviceRequest>, Vec<RequestMapping>) {
    let mut mappings = Vec::new();
    let requests = requests(container);
    let Some(wanted) = requests.get(resource).copied().and_then(whole) else {
        return (None, mappings);
    };
    if wanted == 0 {
        return (None, mappings);
    }
    let mapping = |request: &str| RequestMapping {
        container_name: container.name.clone(),
        resource_name: resource.to_owned(),
        request_name: request.to_owned(),
    };
    // Counts come from the pod (up to i64::MAX each): saturating, as no count is past 32 anyway.
    let mut sum: i64 = 0;
    for request in reusable.iter().flatten() {
        let count = request.exactly.as_ref().and_then(|e| e.count).unwrap_or(0);
        sum = sum.saturating_add(count.max(0));
        mappings.push(mapping(&request.name));
        if sum >= wanted {
            return (None, mappings);
        }
    }
    // The resource's position among the container's requests, sorted by name.
    let position = requests.keys().position(|k| k == resource).unwrap_or(0);
    let name = format!("container-{index}-request-{position}");
    mappings.push(mapping(&name));
    let request = DeviceRequest {
        name,
        exactly: Some(ExactDeviceRequest {
            device_class_name: class.to_owned(),
            allocation_mode: Some("ExactCount".into()),
            count: Some(wanted.saturating_sub(sum)),
            ..Default::default()
        }),
        first_available: None,
    };
    (Some(request), mappings)
}

/// The implicit claim of `pod` (`createRequestsAndMappings`), for a node that offers none of the
/// resources through a device plugin. Containers are numbered init containers first; an init
/// container that is not a sidecar runs before the others, so it shares their devices, and of
/// several such only the largest request is kept.
pub fn implicit_claim(pod: &PodInput, classes: &[DeviceClass]) -> Implicit {
    let mut implicit = Implicit::default();
    let mapping = class_mapping(classes, &mut implicit.notes);
    let init = pod.spec.init_containers.as_deref().unwrap_or_default();
    let containers: Vec<&Container> = init.iter().chain(&pod.spec.containers).collect();
    let short_lived: BTreeSet<usize> = (0..init.len())
        .filter(|i| {
            init.get(*i)
                .is_none_or(|c| c.restart_policy.as_deref() != Some("Always"))
        })
        .collect();
    // Resources some container asks for (not zero), in name order.
    let resources: BTreeSet<String> = containers
        .iter()
        .flat_map(|c| requests(c))
        .filter(|(name, q)| is_extended(name) && *q != Quantity::ZERO)
        .map(|(name, _)| name)
        .collect();
    let mut device_requests = Vec::new();
    let mut mappings = Vec::new();
    for resource in &resources {
        let Some(class) = mapping.get(resource) else {
            implicit.notes.push(format!(
                "{}: no DeviceClass serves the extended resource {resource}: the scheduler leaves it to a device plugin (the node must list it in status.allocatable); explain does not answer for it",
                pod.label
            ));
            continue;
        };
        let mut long_lived: Vec<Option<DeviceRequest>> = vec![None; containers.len()];
        let mut long_mappings = Vec::new();
        for (i, container) in containers.iter().enumerate() {
            if short_lived.contains(&i) {
                continue;
            }
            let (request, m) = container_request(i, container, resource, class, &[]);
            if let Some(slot) = long_lived.get_mut(i) {
                *slot = request;
            }
            long_mappings.extend(m);
        }
        let mut largest: Option<DeviceRequest> = None;
        let mut short_names = BTreeSet::new();
        let mut short_mappings = Vec::new();
        for &i in &short_lived {
            let Some(container) = containers.get(i) else {
                continue;
            };
            let later = long_lived.get(i..).unwrap_or_default();
            let (request, m) = container_request(i, container, resource, class, later);
            if let Some(request) = request {
                short_names.insert(request.name.clone());
                let count = |r: &DeviceRequest| r.exactly.as_ref().and_then(|e| e.count);
                if largest.as_ref().is_none_or(|l| count(l) < count(&request)) {
                    largest = Some(request);
                }
            }
            short_mappings.extend(m);
        }
        if let Some(largest) = &largest
            && short_names.len() > 1
        {
            for m in &mut short_mappings {
                if short_names.contains(&m.request_name) {
                    m.request_name.clone_from(&largest.name);
                }
            }
        }
        device_requests.extend(largest);
        device_requests.extend(long_lived.into_iter().flatten());
        mappings.extend(long_mappings);
        mappings.extend(short_mappings);
    }
    device_requests.sort_by(|a, b| a.name.cmp(&b.name));
    if device_requests.is_empty() {
        return implicit;
    }
    implicit.claim = Some(ClaimInput {
        label: format!("{} (extended resources)", pod.label),
        spec: ResourceClaimSpec {
            devices: Some(DeviceClaim {
                requests: Some(device_requests),
                ..Default::default()
            }),
        },
        status: None,
        namespace: pod.namespace.clone(),
        request_mappings: mappings,
        // The scheduler's in-memory name of the claim until PreBind creates it
        // (`specialClaimInMemName`).
        scheduler_name: Some(match &pod.namespace {
            Some(namespace) => format!("{namespace}/<extended-resources>"),
            None => "<extended-resources>".to_owned(),
        }),
        metadata: Default::default(),
    });
    implicit
}
