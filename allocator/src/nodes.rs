//! Which node a slice or a device is for, as the scheduler decides it for the node it filters
//! (upstream `structured/internal/incubating/pools_incubating.go`: `NodeMatches`, `GatherPools`;
//! node selectors as `k8s.io/component-helpers/scheduling/corev1/nodeaffinity` matches them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use crate::model::Placement;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};

/// The node explain answers for: its name and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name` (None: not known; every slice with a `nodeName` is taken then).
    pub name: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// A node known by name, with the label the kubelet sets by default
    /// (`kubernetes.io/hostname`: the name) unless `labels` has it.
    pub fn named(name: Option<&str>, mut labels: BTreeMap<String, String>) -> Node {
        if let Some(name) = name {
            labels
                .entry("kubernetes.io/hostname".into())
                .or_insert_with(|| name.to_owned());
        }
        Node {
            name: name.map(str::to_owned),
            labels,
        }
    }

    /// `NodeMatches`: exactly one of the three is set by a valid object; an error is a node
    /// selector the scheduler cannot parse.
    pub fn matches(
        &self,
        node_name: Option<&str>,
        all_nodes: bool,
        selector: Option<&NodeSelector>,
    ) -> Result<bool, String> {
        match (node_name.filter(|n| !n.is_empty()), selector) {
            // Without a node name, explain takes every node's slices.
            (Some(name), _) => Ok(self.name.as_deref().is_none_or(|n| n == name)),
            _ if all_nodes => Ok(true),
            (None, Some(selector)) => self
                .selected(selector)
                .map_err(|e| format!("failed to parse node selector: {e}")),
            (None, None) => Ok(false),
        }
    }

    /// Whether the slice is for this node (`GatherPools`): by its own node selection, or, with
    /// `perDeviceNodeSelection`, when some device is (the first match ends the look; an error
    /// before it fails every allocation).
    pub fn wants_slice(&self, slice: &ResourceSlice) -> Result<bool, String> {
        let spec = &slice.spec;
        let name = slice.metadata.name.as_deref().unwrap_or("<no name>");
        let all = spec.all_nodes.unwrap_or(false);
        if spec.node_name.as_deref().is_some_and(|n| !n.is_empty())
            || all
            || spec.node_selector.is_some()
        {
            return self
                .matches(spec.node_name.as_deref(), all, spec.node_selector.as_ref())
                .map_err(|e| format!("failed to perform node selection for slice {name}: {e}"));
        }
        if spec.per_device_node_selection == Some(true) {
            for device in spec.devices.iter().flatten() {
                let matches = self.device(device).map_err(|e| {
                    format!(
                        "failed to perform node selection for device {} in slice {name}: {e}",
                        device.name
                    )
                })?;
                if matches {
                    return Ok(true);
                }
            }
        }
        // Nothing known set: a future extension the scheduler skips.
        Ok(false)
    }

    /// Whether a device of a `perDeviceNodeSelection` slice is for this node.
    pub fn device(&self, device: &Device) -> Result<bool, String> {
        self.matches(
            device.node_name.as_deref(),
            device.all_nodes.unwrap_or(false),
            device.node_selector.as_ref(),
        )
    }

    /// `nodeaffinity.NodeSelector.Match`: terms ORed, an empty term selects nothing; within a term
    /// every label expression and every field (`metadata.name`) expression must hold. A term that
    /// does not parse is an error.
    fn selected(&self, selector: &NodeSelector) -> Result<bool, String> {
        let mut any = false;
        for term in &selector.node_selector_terms {
            let expressions = term.match_expressions.as_deref().unwrap_or_default();
            let fields = term.match_fields.as_deref().unwrap_or_default();
            if expressions.is_empty() && fields.is_empty() {
                continue;
            }
            let mut ok = true;
            for requirement in expressions {
                ok &= self.label_matches(requirement)?;
            }
            for requirement in fields {
                ok &= self.field_matches(requirement)?;
            }
            any |= ok;
        }
        Ok(any)
    }

    /// `labels.NewRequirement` and `Requirement.Matches`.
    fn label_matches(&self, r: &NodeSelectorRequirement) -> Result<bool, String> {
        let values = r.values.as_deref().unwrap_or_default();
        let label = self.labels.get(&r.key);
        let number = |v: &str| {
            v.parse::<i64>().map_err(|_| {
                format!(
                    "key {}: for 'Gt', 'Lt' operators, the value must be an integer",
                    r.key
                )
            })
        };
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => Err(format!(
                "key {}: for 'in', 'notin' operators, values set can't be empty",
                r.key
            )),
            "In" => Ok(label.is_some_and(|l| values.contains(l))),
            "NotIn" => Ok(label.is_none_or(|l| !values.contains(l))),
            "Exists" | "DoesNotExist" if !values.is_empty() => Err(format!(
                "key {}: values set must be empty for exists and does not exist",
                r.key
            )),
            "Exists" => Ok(label.is_some()),
            "DoesNotExist" => Ok(label.is_none()),
            "Gt" | "Lt" => {
                let [value] = values else {
                    return Err(format!(
                        "key {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        r.key
                    ));
                };
                let bound = number(value)?;
                let Some(have) = label.and_then(|l| l.parse::<i64>().ok()) else {
                    return Ok(false);
                };
                Ok(match r.operator.as_str() {
                    "Gt" => have > bound,
                    _ => have < bound,
                })
            }
            other => Err(format!("{other:?} is not a valid node selector operator")),
        }
    }

    /// A field requirement: `In` or `NotIn` with one value; the node's only field is
    /// `metadata.name`.
    fn field_matches(&self, r: &NodeSelectorRequirement) -> Result<bool, String> {
        let [value] = r.values.as_deref().unwrap_or_default() else {
            return Err(format!("matchFields {}: must have one element", r.key));
        };
        let field = match r.key.as_str() {
            "metadata.name" => self.name.as_deref().unwrap_or(""),
            _ => "",
        };
        match r.operator.as_str() {
            "In" => Ok(field == value),
            "NotIn" => Ok(field != value),
            other => Err(format!(
                "{other:?} is not a valid node field selector operator"
            )),
        }
    }
}

/// The node selector of an allocation of devices with these placements, as the allocator sets
/// `status.allocation.nodeSelector` (upstream `structured/internal/incubating/
/// allocator_incubating.go`, `createNodeSelector`): a device local to one node (`nodeName`) or
/// one that binds to the node it is allocated on (`bindsToNode`) makes it `metadata.name In
/// [<the node>]`; otherwise the single terms of the devices' node selectors joined into one (a
/// requirement once); None (usable on every node) when no device restricts it. `node` is the node
/// being filtered; when explain was not told it, a node-local device's own `nodeName` stands in.
pub(crate) fn allocation_node_selector<'a>(
    placements: impl IntoIterator<Item = &'a Placement>,
    node: Option<&str>,
) -> Result<Option<NodeSelector>, String> {
    let mut term = NodeSelectorTerm::default();
    for placement in placements {
        if placement.node_name.is_some() || placement.binds_to_node {
            let name = node
                .or(placement.node_name.as_deref())
                .unwrap_or(UNKNOWN_NODE)
                .to_owned();
            return Ok(Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![name]),
                    }]),
                }],
            }));
        }
        let Some(selector) = &placement.node_selector else {
            continue;
        };
        match selector.node_selector_terms.as_slice() {
            [] => {}
            [only] => {
                add_new(&only.match_fields, &mut term.match_fields);
                add_new(&only.match_expressions, &mut term.match_expressions);
            }
            more => {
                return Err(format!(
                    "unsupported ResourceSlice.NodeSelector with {} terms",
                    more.len()
                ));
            }
        }
    }
    let empty = |r: &Option<Vec<NodeSelectorRequirement>>| r.as_ref().is_none_or(Vec::is_empty);
    if empty(&term.match_fields) && empty(&term.match_expressions) {
        return Ok(None);
    }
    Ok(Some(NodeSelector {
        node_selector_terms: vec![term],
    }))
}

/// What stands for the node's name in an allocation's node selector when explain was not told it.
pub(crate) const UNKNOWN_NODE: &str = "<the node the scheduler picks>";

/// `addNewNodeSelectorRequirements`: each requirement not already there (same key, operator and
/// set of values).
fn add_new(
    from: &Option<Vec<NodeSelectorRequirement>>,
    to: &mut Option<Vec<NodeSelectorRequirement>>,
) {
    fn set(r: &NodeSelectorRequirement) -> std::collections::BTreeSet<&String> {
        r.values.iter().flatten().collect()
    }
    for requirement in from.iter().flatten() {
        let list = to.get_or_insert_with(Vec::new);
        let present = list.iter().any(|r| {
            r.key == requirement.key
                && r.operator == requirement.operator
                && set(r) == set(requirement)
        });
        if !present {
            list.push(requirement.clone());
        }
    }
}

/// A node selector in one line: `metadata.name In [node-a]`, requirements of a term joined by
/// `, `, terms by ` OR `.
pub fn describe_node_selector(selector: &NodeSelector) -> String {
    let requirement = |r: &NodeSelectorRequirement| {
        let values = r.values.as_deref().unwrap_or_default();
        match values.is_empty() {
            true => format!("{} {}", r.key, r.operator),
            false => format!("{} {} [{}]", r.key, r.operator, values.join(", ")),
        }
    };
    let terms: Vec<String> = selector
        .node_selector_terms
        .iter()
        .map(|t| {
            let parts: Vec<String> = t
                .match_fields
                .iter()
                .flatten()
                .chain(t.match_expressions.iter().flatten())
                .map(requirement)
                .collect();
            match parts.is_empty() {
                true => "(empty term)".to_owned(),
                false => parts.join(", "),
            }
        })
        .collect();
    terms.join(" OR ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn selector(
        labels: Vec<NodeSelectorRequirement>,
        fields: Vec<NodeSelectorRequirement>,
    ) -> NodeSelector {
        NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(labels),
                match_fields: Some(fields),
            }],
        }
    }

    #[test]
    fn node_selectors_match_as_node_affinity_does() {
        let node = Node::named(
            Some("node-a"),
            BTreeMap::from([
                ("rack".to_owned(), "r1".to_owned()),
                ("gen".to_owned(), "5".to_owned()),
            ]),
        );
        let sel = |l, f| node.matches(None, false, Some(&selector(l, f)));
        assert!(sel(vec![requirement("rack", "In", &["r1", "r2"])], vec![]).unwrap());
        assert!(!sel(vec![requirement("rack", "NotIn", &["r1"])], vec![]).unwrap());
        assert!(sel(vec![requirement("zone", "DoesNotExist", &[])], vec![]).unwrap());
        assert!(
            sel(
                vec![
                    requirement("gen", "Gt", &["4"]),
                    requirement("gen", "Lt", &["6"])
                ],
                vec![]
            )
            .unwrap()
        );
        assert!(
            sel(
                vec![requirement("kubernetes.io/hostname", "In", &["node-a"])],
                vec![]
            )
            .unwrap(),
            "the kubelet's default label"
        );
        assert!(
            sel(
                vec![],
                vec![requirement("metadata.name", "In", &["node-a"])]
            )
            .unwrap()
        );
        assert!(
            !sel(
                vec![],
                vec![requirement("metadata.name", "In", &["node-b"])]
            )
            .unwrap()
        );
        // An empty term selects nothing.
        assert!(!sel(vec![], vec![]).unwrap());
        // What does not parse is an error, as in the scheduler.
        assert!(sel(vec![requirement("gen", "Gt", &["five"])], vec![]).is_err());
        assert!(sel(vec![requirement("rack", "In", &[])], vec![]).is_err());
        assert!(sel(vec![requirement("rack", "Exists", &["r1"])], vec![]).is_err());
        assert!(sel(vec![requirement("rack", "Near", &["r1"])], vec![]).is_err());
        assert!(sel(vec![], vec![requirement("metadata.name", "Exists", &["x"])]).is_err());
        // nodeName and allNodes.
        assert!(node.matches(Some("node-a"), false, None).unwrap());
        assert!(!node.matches(Some("node-b"), false, None).unwrap());
        assert!(node.matches(None, true, None).unwrap());
        assert!(!node.matches(None, false, None).unwrap());
    }
}
