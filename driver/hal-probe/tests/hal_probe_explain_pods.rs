//! `hal-probe explain` with Pods: extended resources served by a DeviceClass's
//! `extendedResourceName` (issue 24), answered through the implicit claim the scheduler builds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

fn hal_probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hal-probe"))
        .args(args)
        .env_remove("NODE_NAME")
        .output()
        .expect("run hal-probe")
}

fn temp_yaml(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// The Intel seed's migration story: a class that serves `gpu.intel.com/i915` with this driver's
/// whole GPUs.
const I915_CLASS: &str = "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: i915.gpu.intel.com}\nspec:\n  extendedResourceName: gpu.intel.com/i915\n  selectors:\n  - cel:\n      expression: device.driver == \"hal.dra.dev\" && device.attributes[\"hal.dra.dev\"].type == \"gpu\" && !has(device.attributes[\"hal.dra.dev\"].isPartition)\n";

fn pod(gpus: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: transcode, namespace: media}}\nspec:\n  containers:\n  - name: ffmpeg\n    image: intel/ffmpeg\n    resources:\n      limits: {{gpu.intel.com/i915: {gpus}, cpu: 2}}\n"
    )
}

fn explain(args: &[&str]) -> (Value, Option<i32>, String) {
    let mut all = vec!["explain", "--fixture", "i915", "--format", "json"];
    all.extend_from_slice(args);
    let output = hal_probe(&all);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let json: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (json, output.status.code(), stderr)
}

#[test]
fn explain_answers_for_a_pod_asking_gpu_intel_com_i915_on_the_i915_fixture() {
    let classes = temp_yaml(I915_CLASS);
    let one = temp_yaml(&pod(1));
    let class = classes.path().to_str().unwrap();
    let (json, code, _) = explain(&["--class", class, one.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json:#}");
    let outcome = &json[0];
    assert_eq!(outcome["claim"], "Pod media/transcode (extended resources)");
    assert_eq!(outcome["status"], "allocated", "{outcome:#}");
    let devices = outcome["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    // `cpu` sorts before `gpu.intel.com/i915` among the container's requests: request 1.
    assert_eq!(devices[0]["request"], "container-0-request-1");
    assert!(
        devices[0]["device"].as_str().unwrap().starts_with("gpu-"),
        "{outcome:#}"
    );
    assert_eq!(
        outcome["requestMappings"][0],
        serde_json::json!({"containerName": "ffmpeg", "resourceName": "gpu.intel.com/i915", "requestName": "container-0-request-1"})
    );
    // The fixture has two GPUs: three do not fit, and the answer says why.
    let three = temp_yaml(&pod(3));
    let (json, code, _) = explain(&["--class", class, three.path().to_str().unwrap()]);
    assert_eq!(code, Some(3));
    assert_eq!(json[0]["status"], "unsatisfiable", "{json:#}");
    // The implicit class name works without extendedResourceName.
    let implicit = temp_yaml(&pod(1).replace(
        "gpu.intel.com/i915",
        "deviceclass.resource.kubernetes.io/gpu.hal.dra.dev",
    ));
    let (json, code, _) = explain(&[implicit.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json[0]["devices"].as_array().unwrap().len(), 1);
    // Kubernetes 1.35: DRAExtendedResource is alpha, off: no claim, and it says so.
    let output = hal_probe(&[
        "explain",
        "--fixture",
        "i915",
        "--kubernetes-version",
        "1.35",
        "--class",
        class,
        one.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("DRAExtendedResource is off"), "{stderr}");
}

#[test]
fn a_deployment_template_and_a_resource_no_class_serves() {
    let classes = temp_yaml(I915_CLASS);
    let deployment = temp_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: media}\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: x\n        resources: {limits: {gpu.intel.com/i915: 2, example.com/fpga: 1}}\n",
    );
    let (json, code, stderr) = explain(&[
        "--class",
        classes.path().to_str().unwrap(),
        deployment.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{json:#} {stderr}");
    assert_eq!(
        json[0]["claim"],
        "Deployment media/web (extended resources)"
    );
    assert_eq!(json[0]["devices"].as_array().unwrap().len(), 2);
    assert!(
        stderr.contains("no DeviceClass serves the extended resource example.com/fpga"),
        "{stderr}"
    );
}

/// A pod with a template's claim (one whole GPU of this driver's class) and `gpu.intel.com/i915:
/// gpus`, for the i915 fixture's two GPUs.
fn pod_with_template(gpus: u32) -> String {
    format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {{name: one-gpu, namespace: media}}\nspec:\n  spec:\n    devices:\n      requests:\n      - name: gpu\n        exactly: {{deviceClassName: gpu.hal.dra.dev}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: transcode, namespace: media}}\nspec:\n  resourceClaims:\n  - {{name: g, resourceClaimTemplateName: one-gpu}}\n  containers:\n  - name: ffmpeg\n    image: intel/ffmpeg\n    resources:\n      limits: {{gpu.intel.com/i915: {gpus}}}\n      claims: [{{name: g}}]\n"
    )
}

// The scheduler allocates a pod's claims together: the template's claim first, the implicit
// claim of the extended resources last, in one search (issue 26). One GPU each fits the two GPUs;
// one plus two does not, though each fits alone, and the answer names the claim that cannot be
// placed.
#[test]
fn a_pods_template_claim_and_extended_resources_are_searched_together() {
    let classes = temp_yaml(I915_CLASS);
    let class = classes.path().to_str().unwrap();
    let fits = temp_yaml(&pod_with_template(1));
    let (json, code, stderr) = explain(&["--class", class, fits.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json:#} {stderr}");
    let outcomes = json.as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{json:#}");
    assert_eq!(
        outcomes[0]["claim"],
        "ResourceClaim media/transcode-g (from ResourceClaimTemplate one-gpu)"
    );
    assert_eq!(
        outcomes[1]["claim"],
        "Pod media/transcode (extended resources)"
    );
    for outcome in outcomes {
        assert_eq!(outcome["pod"], "Pod media/transcode", "{outcome:#}");
        assert_eq!(outcome["status"], "allocated", "{outcome:#}");
        assert_eq!(outcome["kubernetesVersion"], "1.36");
    }
    let first = &outcomes[0]["devices"][0]["device"];
    let second = &outcomes[1]["devices"][0]["device"];
    assert_ne!(first, second, "{json:#}");
    let too_many = temp_yaml(&pod_with_template(2));
    let (json, code, _) = explain(&["--class", class, too_many.path().to_str().unwrap()]);
    assert_eq!(code, Some(3), "{json:#}");
    for outcome in json.as_array().unwrap() {
        assert_eq!(outcome["status"], "unsatisfiable", "{outcome:#}");
    }
    let why = json[1]["explanation"].to_string();
    assert!(
        why.contains("Pod media/transcode (extended resources) fits alone, but not after the pod's claims before it"),
        "{why}"
    );
    // The table says whose claims they are.
    let output = hal_probe(&[
        "explain",
        "--fixture",
        "i915",
        "--class",
        class,
        too_many.path().to_str().unwrap(),
    ]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("does NOT fit (Kubernetes 1.36 rules)")
            && table.contains("of Pod media/transcode"),
        "{table}"
    );
}

// Issue 26: every allocation names its node selector as the scheduler writes it
// (`createNodeSelector`: the fixture's devices are local to its node), in JSON and in the table;
// and the pod's implicit claim left from an earlier scheduling cycle (annotated, owned by the pod)
// makes the scheduler refuse the node ("cannot schedule extended resource claim").
#[test]
fn allocations_name_their_node_selector_and_a_stale_implicit_claim_blocks_the_pod() {
    let classes = temp_yaml(I915_CLASS);
    let class = classes.path().to_str().unwrap();
    let one = temp_yaml(&pod(1));
    let (json, code, _) = explain(&["--class", class, one.path().to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json:#}");
    let term = &json[0]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0];
    assert_eq!(term["key"], "metadata.name", "{json:#}");
    assert_eq!(term["operator"], "In", "{json:#}");
    assert!(!term["values"][0].as_str().unwrap().is_empty(), "{json:#}");
    let output = hal_probe(&[
        "explain",
        "--fixture",
        "i915",
        "--class",
        class,
        one.path().to_str().unwrap(),
    ]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("\n  node selector: metadata.name In ["),
        "{table}"
    );
    let stale = temp_yaml(&format!(
        "{}---\napiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata:\n  name: transcode-extended-resources-abcde\n  namespace: media\n  annotations: {{resource.kubernetes.io/extended-resource-claim: \"true\"}}\n  ownerReferences:\n  - {{apiVersion: v1, kind: Pod, name: transcode, uid: uid-t, controller: true}}\nspec:\n  devices:\n    requests:\n    - name: container-0-request-1\n      exactly: {{deviceClassName: i915.gpu.intel.com, count: 1}}\n",
        pod(1).replace("namespace: media}", "namespace: media, uid: uid-t}")
    ));
    let (json, code, _) = explain(&["--class", class, stale.path().to_str().unwrap()]);
    assert_eq!(code, Some(3), "{json:#}");
    let outcomes = json.as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{json:#}");
    assert_eq!(outcomes[0]["status"], "unsatisfiable", "{json:#}");
    assert_eq!(
        outcomes[0]["explanation"][0],
        "cannot schedule extended resource claim"
    );
}
