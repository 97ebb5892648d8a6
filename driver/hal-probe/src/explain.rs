//! `hal-probe explain`: the claims of some files, run through Kubernetes' structured allocation
//! ([`allocator`]) against the slices this node would publish, other drivers' slices from files, this
//! driver's DeviceClasses (built in) and the user's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use allocator::{Allocator, FeatureGates, KubernetesVersion, Node, Objects, Outcome};
use anyhow::{Context, bail};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};

use driver::slices::DEFAULT_DRIVER_NAME;

/// This driver's DeviceClasses, as `deployments/deviceclasses/deviceclasses.yaml` ships them.
const DEVICE_CLASSES: &str = include_str!("../../../deployments/deviceclasses/deviceclasses.yaml");

/// The driver's own DeviceClasses, for `driver_name` (the shipped ones name `hal.dra.dev`).
pub fn builtin_classes(driver_name: &str) -> anyhow::Result<Vec<DeviceClass>> {
    let text = DEVICE_CLASSES.replace(
        &format!("\"{DEFAULT_DRIVER_NAME}\""),
        &format!("\"{driver_name}\""),
    );
    let mut objects = Objects::default();
    objects
        .add_text("deviceclasses.yaml (built in)", &text)
        .context("the built-in DeviceClasses")?;
    Ok(objects.classes)
}

/// What to explain, and against what.
#[derive(Debug, Clone)]
pub struct Request {
    /// Files of ResourceClaims and ResourceClaimTemplates (DeviceClasses and ResourceSlices in them are
    /// used too).
    pub claims: Vec<PathBuf>,
    /// Files of DeviceClasses (they override built-in ones of the same name).
    pub classes: Vec<PathBuf>,
    /// Files of extra ResourceSlices (other drivers').
    pub slices: Vec<PathBuf>,
    /// Files of allocated ResourceClaims whose devices are in use.
    pub allocated: Vec<PathBuf>,
    /// Only slices of this node (others are dropped).
    pub node: Option<String>,
    /// The node's labels, for slices and devices with a node selector (`kubernetes.io/hostname`
    /// defaults to the node name).
    pub node_labels: BTreeMap<String, String>,
    /// Leave out the built-in DeviceClasses.
    pub no_builtin_classes: bool,
    /// The driver name of the built-in classes.
    pub driver_name: String,
    /// Device tries before the search gives up.
    pub step_limit: Option<u64>,
    /// Whose scheduler's rules apply.
    pub version: KubernetesVersion,
    /// With which DRA feature gates (the version's defaults unless the user says otherwise).
    pub gates: FeatureGates,
}

/// The outcome of each claim, and notes on the input (skipped documents, pool warnings).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// One per claim or template, in file order.
    pub claims: Vec<Outcome>,
    /// Things about the input that the user should know.
    pub notes: Vec<String>,
}

/// Explains every claim of `request` against `node_slices` and the slices of the files.
pub fn explain(request: &Request, node_slices: Vec<ResourceSlice>) -> anyhow::Result<Report> {
    let mut claims = Objects::default();
    for file in &request.claims {
        claims.read_file(file)?;
    }
    if claims.claims.is_empty() && claims.pods.is_empty() {
        let files: Vec<String> = request
            .claims
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        bail!(
            "no resource.k8s.io/v1 ResourceClaim or ResourceClaimTemplate, and no Pod or workload, in {}",
            files.join(", ")
        );
    }
    let mut extra = Objects::default();
    for file in request.classes.iter().chain(&request.slices) {
        extra.read_file(file)?;
    }
    let mut allocated = Objects::default();
    for file in &request.allocated {
        allocated.read_file(file)?;
    }

    let mut slices = node_slices;
    slices.append(&mut extra.slices);
    slices.append(&mut claims.slices);
    if request.node.is_none() {
        let nodes: BTreeSet<&str> = slices
            .iter()
            .filter_map(|s| s.spec.node_name.as_deref())
            .collect();
        if nodes.len() > 1 {
            bail!(
                "the slices are of several nodes ({}): pick one with --node-name",
                nodes.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut classes = match request.no_builtin_classes {
        true => Vec::new(),
        false => builtin_classes(&request.driver_name)?,
    };
    classes.append(&mut extra.classes);
    classes.append(&mut claims.classes);

    let mut notes = Vec::new();
    // Slices of the files bound to another node are not this node's: say so, or they vanish.
    if let Some(node) = request.node.as_deref() {
        let others: BTreeSet<&str> = slices
            .iter()
            .filter_map(|s| s.spec.node_name.as_deref())
            .filter(|n| !n.is_empty() && *n != node)
            .collect();
        if !others.is_empty() {
            let others: Vec<&str> = others.into_iter().collect();
            notes.push(format!(
                "slices of node {} left out: the claims are explained for node {node} (--node-name)",
                others.join(", ")
            ));
        }
    }
    let pods = link_pods(&claims, &classes, request.gates, &mut notes);
    let node = Node::named(request.node.as_deref(), request.node_labels.clone());
    let mut allocator = Allocator::for_node(
        request.version,
        request.gates,
        &slices,
        classes,
        &allocated.claims,
        &node,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(limit) = request.step_limit {
        allocator.step_limit = limit;
    }
    allocator.namespaces = claims.namespaces.clone();
    allocator.namespaces.append(&mut extra.namespaces);
    notes.splice(0..0, allocator.pools().warnings.iter().cloned());
    let skipped = claims.skipped.len() + extra.skipped.len();
    if skipped > 0 {
        notes.push(format!(
            "{skipped} document{} of other kinds skipped ({})",
            if skipped == 1 { "" } else { "s" },
            claims
                .skipped
                .iter()
                .chain(&extra.skipped)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if allocator.pools().devices.is_empty() {
        notes.push("no devices at all: no slices were given or built".into());
    }
    // A claim or template a pod uses is explained with the pod, in the pod's one search.
    let used: BTreeSet<usize> = pods.iter().flat_map(|p| p.used.iter().copied()).collect();
    let mut outcomes: Vec<Outcome> = claims
        .claims
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, c)| allocator.explain(c))
        .collect();
    for pod in &pods {
        outcomes.extend(allocator.explain_pod(pod));
    }
    Ok(Report {
        claims: outcomes,
        notes,
    })
}

/// Each pod with its claims (`spec.resourceClaims`, linked to the ResourceClaims and templates of
/// the files) and the implicit claim of its extended resources, as the scheduler builds it (none
/// with the feature gate DRAExtendedResource off: the resources are left to device plugins).
fn link_pods(
    objects: &Objects,
    classes: &[DeviceClass],
    gates: FeatureGates,
    notes: &mut Vec<String>,
) -> Vec<allocator::PodClaims> {
    let pods = &objects.pods;
    if !gates.extended_resource {
        let asking = pods
            .iter()
            .filter(|pod| allocator::implicit_claim(pod, classes).claim.is_some())
            .count();
        if asking > 0 {
            notes.push(format!(
                "{asking} pod{}: DRAExtendedResource is off, so the scheduler leaves extended resources to device plugins and builds no claim for them (pass --feature-gates DRAExtendedResource=true if the cluster enables it)",
                if asking == 1 { "" } else { "s" }
            ));
        }
    }
    let mut linked = Vec::new();
    for pod in pods {
        let implicit = match gates.extended_resource {
            true => allocator::implicit_claim(pod, classes),
            false => allocator::Implicit::default(),
        };
        for note in implicit.notes {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        let claims = allocator::link_pod(pod, &objects.claims, implicit.claim);
        if claims.pending.is_empty()
            && claims.allocated.is_empty()
            && claims.missing.is_empty()
            && claims.stale_extended.is_none()
        {
            notes.push(format!(
                "{}: no claim and no extended resource that a DeviceClass serves: nothing to explain",
                pod.label
            ));
            continue;
        }
        linked.push(claims);
    }
    linked
}

/// A `--node-labels` item that is not `key=value` (with a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item:?}: expected key=value")]
pub struct BadLabel {
    /// The item, as given.
    pub item: String,
}

impl BadLabel {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        hal::ErrorKind::InvalidInput
    }
}

/// `key=value,key=value`, as `kubectl label` takes them (`--node-labels`).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, BadLabel> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| BadLabel {
                    item: item.to_owned(),
                })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_key_value_pairs_and_an_item_without_a_key_is_named() {
        let labels = parse_labels(" rack=r1, zone = a ,,").unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([("rack".into(), "r1".into()), ("zone".into(), "a".into())])
        );
        for bad in ["rack", "=r1"] {
            let error = parse_labels(&format!("zone=a,{bad}")).unwrap_err();
            assert_eq!(error.item, bad);
            assert_eq!(error.kind(), hal::ErrorKind::InvalidInput);
            assert_eq!(error.to_string(), format!("{bad:?}: expected key=value"));
        }
    }

    #[test]
    fn builtin_classes_follow_the_driver_name() {
        let classes = builtin_classes("other.example.com").unwrap();
        let names: Vec<&str> = classes
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        assert!(names.contains(&"gpu.hal.dra.dev") && names.contains(&"vf.hal.dra.dev"));
        let gpu = serde_json::to_string(&classes[0]).unwrap();
        assert!(
            gpu.contains("other.example.com") && !gpu.contains("\\\"hal.dra.dev\\\""),
            "{gpu}"
        );
    }
}
