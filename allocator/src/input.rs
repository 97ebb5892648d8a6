//! Reading manifests: YAML or JSON files of one or more documents (`---`), each a resource.k8s.io/v1
//! object or a `List` of them. Errors name the file, the document and the field.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use k8s_openapi::api::resource::v1::{
    DeviceClass, ResourceClaim, ResourceClaimSpec, ResourceClaimTemplate, ResourceSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

/// Files larger than this are refused (manifests are kilobytes; this bounds a mistaken read).
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing. The YAML
/// parser's scanner takes time quadratic in the nesting before its own recursion limit (128)
/// stops it: 100,000 brackets took over a minute.
pub const MAX_NESTING: usize = 128;

/// A claim to explain: a ResourceClaim, or the claim a ResourceClaimTemplate would stamp out.
#[derive(Debug, Clone)]
pub struct ClaimInput {
    /// `ResourceClaim ns/name` or `ResourceClaimTemplate name`, for the report.
    pub label: String,
    /// What it asks for.
    pub spec: ResourceClaimSpec,
    /// Its allocation, for claims read as already allocated.
    pub status: Option<k8s_openapi::api::resource::v1::ResourceClaimStatus>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// For a pod's implicit claim: which container's resource each request serves.
    pub request_mappings: Vec<RequestMapping>,
    /// `namespace/name` as the scheduler's messages name the claim, where the label does not
    /// give it (a claim a pod's template would stamp out, a pod's implicit claim).
    pub scheduler_name: Option<String>,
    /// A ResourceClaim's `metadata` (name, owner references, annotations, deletion timestamp):
    /// the scheduler checks who owns a template's claim and finds the implicit claim of an earlier
    /// scheduling cycle by them. Empty for templates and claims explain builds.
    pub metadata: ObjectMeta,
}

/// A pod, or the pod template of a workload (Deployment, Job, ...).
#[derive(Debug, Clone)]
pub struct PodInput {
    /// `Pod ns/name` or `Deployment ns/name`, for the report.
    pub label: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// Its spec (for a workload, the template's).
    pub spec: k8s_openapi::api::core::v1::PodSpec,
    /// `metadata.uid` (a Pod read from the API server has one): `reservedFor` and owner
    /// references name the pod by it.
    pub uid: Option<String>,
    /// `status.resourceClaimStatuses`: the names the resourceclaim controller gave the claims it
    /// stamped out of templates (None: the object has no status, as a manifest or a workload).
    pub claim_statuses: Option<Vec<k8s_openapi::api::core::v1::PodResourceClaimStatus>>,
}

/// Which request of the implicit claim serves a container's resource
/// (`v1.ContainerExtendedResourceRequest`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMapping {
    /// The container.
    pub container_name: String,
    /// The extended resource.
    pub resource_name: String,
    /// The request of the implicit claim.
    pub request_name: String,
}

/// Everything read from a set of files.
#[derive(Debug, Default)]
pub struct Objects {
    /// ResourceClaims and ResourceClaimTemplates, in file order.
    pub claims: Vec<ClaimInput>,
    /// DeviceClasses.
    pub classes: Vec<DeviceClass>,
    /// ResourceSlices.
    pub slices: Vec<ResourceSlice>,
    /// Pods and the pod templates of workloads, for their extended resources.
    pub pods: Vec<PodInput>,
    /// Namespaces' labels, by name (the API server checks adminAccess against them).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Kinds that were skipped (Services, ConfigMaps, ...), for the report.
    pub skipped: Vec<String>,
}

/// Where a workload kind keeps its pod spec.
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "/spec",
        "PodTemplate" => "/template/spec",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    })
}

/// A file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Unreadable or too large.
    #[error("{file}: {why}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// A document that is not what its kind says.
    #[error("{file}: document {index}{kind}: {why}")]
    Document {
        /// The file.
        file: String,
        /// 1-based document number (items of a List count as documents).
        index: usize,
        /// `" (Kind name)"` when known.
        kind: String,
        /// What is wrong, with the field path.
        why: String,
    },
}

impl Objects {
    /// Reads one file and adds what it holds.
    pub fn read_file(&mut self, path: &Path) -> Result<(), InputError> {
        let file = path.display().to_string();
        let read_error = |why: String| InputError::Read {
            file: file.clone(),
            why,
        };
        let handle = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
        let mut text = String::new();
        handle
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| read_error(e.to_string()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(read_error(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        self.add_text(&file, &text)
    }

    /// Adds the documents of `text` (YAML or JSON), reported as coming from `file`.
    pub fn add_text(&mut self, file: &str, text: &str) -> Result<(), InputError> {
        if let Some(line) = too_deep(text) {
            return Err(InputError::Read {
                file: file.to_owned(),
                why: format!(
                    "line {line}: brackets nested deeper than {MAX_NESTING} levels (refused before parsing)"
                ),
            });
        }
        let documents = read_yaml(text).map_err(|why| InputError::Read {
            file: file.to_owned(),
            why,
        })?;
        let mut index = 0;
        for value in documents {
            let items = match value.get("kind").and_then(|k| k.as_str()) {
                Some(kind) if kind.ends_with("List") && value.get("items").is_some() => value
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default(),
                _ if value.is_null() => Vec::new(),
                // A bare array of objects: what `hal-probe slices --format json` prints.
                _ => match value {
                    serde_json::Value::Array(items) => items,
                    value => vec![value],
                },
            };
            for item in items {
                index += 1;
                self.add_value(item)
                    .map_err(|(kind, why)| InputError::Document {
                        file: file.to_owned(),
                        index,
                        kind,
                        why,
                    })?;
            }
        }
        Ok(())
    }

    fn add_value(&mut self, value: serde_json::Value) -> Result<(), (String, String)> {
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let name = value
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("<no name>");
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        let label = match &namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        // The name is the user's, unvalidated: escaped, so an error message stays on its line.
        let context = format!(" ({})", crate::text::field_safe(&label));
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let resource_kind = matches!(
            kind,
            "ResourceClaim" | "ResourceClaimTemplate" | "DeviceClass" | "ResourceSlice"
        );
        if kind == "Namespace" && api_version == "v1" {
            let labels = value
                .pointer("/metadata/labels")
                .cloned()
                .map(decode::<BTreeMap<String, String>>)
                .transpose()
                .map_err(|why| (context.clone(), format!("metadata.labels: {why}")))?;
            self.namespaces
                .insert(name.to_owned(), labels.unwrap_or_default());
            return Ok(());
        }
        if let Some(pointer) = pod_spec_pointer(kind) {
            let Some(spec) = value.pointer(pointer).cloned() else {
                return Err((context, format!("no pod spec at {pointer}")));
            };
            let spec = decode(spec).map_err(|why| {
                let field = pointer.trim_start_matches('/').replace('/', ".");
                (context.clone(), format!("{field}: {why}"))
            })?;
            // Only a Pod has a status of its own; a workload's template has none.
            let claim_statuses = match kind {
                "Pod" => value
                    .pointer("/status/resourceClaimStatuses")
                    .cloned()
                    .map(decode)
                    .transpose()
                    .map_err(|why| {
                        (
                            context.clone(),
                            format!("status.resourceClaimStatuses: {why}"),
                        )
                    })?,
                _ => None,
            };
            let uid = match kind {
                "Pod" => value
                    .pointer("/metadata/uid")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                _ => None,
            };
            self.pods.push(PodInput {
                label,
                namespace: namespace.clone(),
                spec,
                uid,
                claim_statuses,
            });
            return Ok(());
        }
        if !resource_kind {
            self.skipped.push(label);
            return Ok(());
        }
        if api_version != "resource.k8s.io/v1" {
            return Err((
                context,
                format!(
                    "apiVersion {api_version:?}: only resource.k8s.io/v1 is understood (convert with kubectl convert or rewrite the requests as `exactly`)"
                ),
            ));
        }
        let fail = |why: String| (context.clone(), why);
        match kind {
            "ResourceClaim" => {
                let claim: ResourceClaim = decode(value).map_err(fail)?;
                let spec = claim
                    .spec
                    .ok_or_else(|| fail("a ResourceClaim needs a spec".into()))?;
                self.claims.push(ClaimInput {
                    label,
                    spec,
                    status: claim.status,
                    namespace: namespace.clone(),
                    request_mappings: Vec::new(),
                    scheduler_name: None,
                    metadata: claim.metadata,
                });
            }
            "ResourceClaimTemplate" => {
                let template: ResourceClaimTemplate = decode(value).map_err(fail)?;
                let spec = template
                    .spec
                    .and_then(|template| template.spec)
                    .ok_or_else(|| fail("a ResourceClaimTemplate needs spec.spec".into()))?;
                self.claims.push(ClaimInput {
                    label,
                    spec,
                    status: None,
                    namespace: namespace.clone(),
                    request_mappings: Vec::new(),
                    scheduler_name: None,
                    metadata: ObjectMeta::default(),
                });
            }
            "DeviceClass" => self.classes.push(decode(value).map_err(fail)?),
            _ => self.slices.push(decode(value).map_err(fail)?),
        }
        Ok(())
    }
}

/// The line where flow collections (`[`, `{`) first nest deeper than [`MAX_NESTING`], in one pass:
/// quoted scalars and comments are skipped. Brackets inside plain scalars (`a[0]`) count too, so an
/// unbalanced one can only make the count higher, never hide real nesting.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut previous = b'\n';
    // The last byte other than a blank on this line: a quote opens a scalar only at a scalar's
    // start (a quote inside a plain scalar, `it's`, is text).
    let mut last = b'\n';
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'\n' {
            line += 1;
            comment = false;
        }
        match (quote, byte) {
            _ if comment => {}
            (Some(b'"'), b'\\') => {
                // An escape in a double-quoted scalar: skip the escaped byte (a newline counts).
                let escaped = bytes.next();
                line += usize::from(escaped == Some(b'\n'));
            }
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'')
                if matches!(last, b'\n' | b':' | b'-' | b'?' | b'[' | b'{' | b',') =>
            {
                quote = Some(byte);
            }
            (None, b'#') if previous.is_ascii_whitespace() => comment = true,
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(line);
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
        if byte == b'\n' {
            last = b'\n';
        } else if byte != b' ' && byte != b'\t' {
            last = byte;
        }
    }
    None
}

/// The documents of a YAML (or JSON) stream, with plain scalars typed as Kubernetes types them.
///
/// kubectl and the API server read YAML with `sigs.k8s.io/yaml`, which parses with go-yaml v2, a
/// YAML 1.1 parser: unquoted `y`, `n`, `yes`, `no`, `on`, `off` (any case) are booleans, and
/// integers with a leading `0` are octal. `name: n` is therefore the boolean `false`, which the API
/// server refuses for a string field; so does this reader, with a hint to quote it. A plain boolean
/// or number map key becomes its JSON text (`on:` is the key `"true"`, see [`crate::yaml`]). Empty
/// documents are skipped.
fn read_yaml(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.strict_booleans = false;
    let documents: Vec<crate::yaml::Document> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    Ok(documents.into_iter().map(|document| document.0).collect())
}

/// Decodes with the path of the offending field in the error.
fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut why = match e.path().to_string().as_str() {
            "." => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        };
        if why.contains("invalid type: boolean") {
            why.push_str(
                " (Kubernetes reads YAML 1.1: unquoted y, n, yes, no, on and off are booleans; quote the value to make it a string)",
            );
        }
        why
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_documents_are_flattened_and_other_kinds_skipped() {
        let mut objects = Objects::default();
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: resource.k8s.io/v1\n  kind: DeviceClass\n  metadata: {name: a}\n  spec: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: p}\n---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {name: t}\nspec:\n  spec:\n    devices:\n      requests:\n      - name: gpu\n        exactly: {deviceClassName: a}\n";
        objects.add_text("f.yaml", text).unwrap();
        assert_eq!(objects.classes.len(), 1);
        assert_eq!(objects.claims.len(), 1);
        assert_eq!(objects.claims[0].label, "ResourceClaimTemplate t");
        assert_eq!(objects.skipped, vec!["Service p".to_owned()]);
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let mut objects = Objects::default();
        let text = "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: a}\nspec: {}\n---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c, namespace: ns}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly: {deviceClassName: a, count: many}\n";
        let error = objects
            .add_text("claims.yaml", text)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("claims.yaml: document 2 (ResourceClaim ns/c): spec.devices.requests[0].exactly.count"), "{error}");
    }

    /// One claim whose request `r` reads `request` (indented YAML under `- name: r`).
    fn claim_with(request: &str) -> Result<Objects, InputError> {
        let mut objects = Objects::default();
        let text = format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: ns}}\nspec:\n  devices:\n    requests:\n    - name: r\n{request}"
        );
        objects.add_text("claim.yaml", &text).map(|()| objects)
    }

    #[test]
    fn yaml_is_read_as_kubernetes_reads_it_yaml_1_1_booleans_and_octal() {
        // `name: n` is the boolean false for kubectl (go-yaml v2): the API server refuses it for a
        // string field, and so does explain, saying why and how to fix it.
        let mut objects = Objects::default();
        let error = objects
            .add_text(
                "claim.yaml",
                "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: n, namespace: ns}\nspec: {devices: {}}\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("metadata.name: invalid type: boolean `false`, expected a string")
                && error.contains("quote the value"),
            "{error}"
        );
        // Quoted, it is the string.
        objects
            .add_text(
                "claim.yaml",
                "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: \"n\", namespace: ns}\nspec: {devices: {}}\n",
            )
            .unwrap();
        assert_eq!(objects.claims[0].label, "ResourceClaim ns/n");
        // `yes`, `on`, `Off` are booleans where a boolean is wanted.
        for (text, want) in [("yes", true), ("on", true), ("Off", false), ("N", false)] {
            let objects = claim_with(&format!(
                "      exactly: {{deviceClassName: a, adminAccess: {text}}}\n"
            ))
            .unwrap();
            let exactly = objects.claims[0]
                .spec
                .devices
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()[0]
                .exactly
                .clone()
                .unwrap();
            assert_eq!(exactly.admin_access, Some(want), "adminAccess: {text}");
        }
        // A leading 0 is octal in YAML 1.1: `count: 010` asks for 8 devices.
        let objects = claim_with("      exactly: {deviceClassName: a, count: 010}\n").unwrap();
        let exactly = objects.claims[0]
            .spec
            .devices
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()[0]
            .exactly
            .clone()
            .unwrap();
        assert_eq!(exactly.count, Some(8));
        // A request named `off` is the boolean false: refused as a name, with the hint.
        let error = claim_with("      exactly: {deviceClassName: a}\n    - name: off\n      exactly: {deviceClassName: a}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.devices.requests[1].name: invalid type: boolean `false`"),
            "{error}"
        );
    }

    #[test]
    fn a_json_array_of_objects_is_read_as_its_items() {
        // `hal-probe slices --format json` prints the slices as one array.
        let mut objects = Objects::default();
        let text = r#"[
          {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "a"},
           "spec": {"driver": "x.example.com", "nodeName": "n", "pool": {"name": "n", "generation": 1, "resourceSliceCount": 2},
                    "devices": [{"name": "d0"}]}},
          {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "b"},
           "spec": {"driver": "x.example.com", "nodeName": "n", "pool": {"name": "n", "generation": 1, "resourceSliceCount": 2},
                    "devices": [{"name": "d1"}]}}
        ]"#;
        objects.add_text("slices.json", text).unwrap();
        assert_eq!(objects.slices.len(), 2);
        assert!(objects.skipped.is_empty(), "{:?}", objects.skipped);
        let error = Objects::default()
            .add_text(
                "x.json",
                r#"[{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "spec": 1}]"#,
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("x.json: document 1 (ResourceSlice <no name>): "),
            "{error}"
        );
    }

    #[test]
    fn an_error_names_the_document_on_one_line_whatever_its_name() {
        let error = Objects::default()
            .add_text(
                "c.yaml",
                "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: \"c\\n  forged\\u202e\", namespace: ns}\nspec: 1\n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "c.yaml: document 1 (ResourceClaim ns/c\\u000a  forged\\u202e): spec: "
            ),
            "{error}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // Issue 25 item 20: 100,000 nested flow sequences took the parser over a minute.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let error = Objects::default()
            .add_text("deep.yaml", &deep)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "deep.yaml: line 1: brackets nested deeper than 128 levels (refused before parsing)"
        );
        let mapping = format!("a:\n  b: {}{}\n", "{x: ".repeat(200), "}".repeat(200));
        assert!(
            Objects::default()
                .add_text("m.yaml", &mapping)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
        // Up to the limit is parsed as usual; brackets in quotes and comments do not count.
        let fine = format!(
            "# {}\nkind: \"{}\"\nx: '{}'\ny: {}{}\n",
            "[".repeat(300),
            "[".repeat(300),
            "{".repeat(300),
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert_eq!(too_deep(&fine), None);
        // A quote inside a plain scalar opens nothing, so it cannot hide what follows.
        let hidden = format!("a: it's\nb: {}", "[".repeat(200));
        assert_eq!(too_deep(&hidden), Some(2));
    }

    #[test]
    fn old_api_versions_are_refused_with_a_hint() {
        let mut objects = Objects::default();
        let text = "apiVersion: resource.k8s.io/v1beta1\nkind: ResourceClaim\nmetadata: {name: c}\nspec: {}\n";
        let error = objects.add_text("x", text).unwrap_err().to_string();
        assert!(error.contains("only resource.k8s.io/v1"), "{error}");
    }

    #[test]
    fn yaml_syntax_errors_are_reported() {
        let mut objects = Objects::default();
        assert!(objects.add_text("x", "kind: [unclosed").is_err());
    }
}
