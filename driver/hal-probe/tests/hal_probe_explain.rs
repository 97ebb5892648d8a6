//! `hal-probe explain` end to end: the seed demos on the fixtures and on the real GB300 slices.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn hal_probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hal-probe"))
        .args(args)
        .env_remove("NODE_NAME")
        .output()
        .expect("run hal-probe")
}

/// `explain --format json`: the outcomes, and the exit code.
fn explain(args: &[&str]) -> (Vec<Value>, Option<i32>) {
    let mut all = vec!["explain", "--format", "json"];
    all.extend_from_slice(args);
    let output = hal_probe(&all);
    let text = String::from_utf8(output.stdout).unwrap();
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&output.stderr)));
    (json.as_array().unwrap().clone(), output.status.code())
}

/// The claim whose label ends with `name`.
fn claim<'a>(outcomes: &'a [Value], name: &str) -> &'a Value {
    outcomes
        .iter()
        .find(|o| o["claim"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no {name} in {outcomes:#?}"))
}

/// `request=device` pairs, device names mapped through `names` (e.g. to RDMA device names).
fn picks(outcome: &Value, names: &BTreeMap<String, String>) -> Vec<String> {
    assert_eq!(outcome["status"], "allocated", "{outcome:#}");
    outcome["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let device = d["device"].as_str().unwrap();
            let shown = names.get(device).map_or(device, String::as_str);
            format!("{}={shown}", d["request"].as_str().unwrap())
        })
        .collect()
}

/// Device name → `rdmaDevice` attribute, from the slices the fixture publishes.
fn rdma_names(fixture: &str) -> BTreeMap<String, String> {
    let output = hal_probe(&["--fixture", fixture, "--format", "json", "slices"]);
    assert!(output.status.success());
    let slices: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut names = BTreeMap::new();
    for slice in slices.as_array().unwrap() {
        for device in slice["spec"]["devices"].as_array().unwrap() {
            if let Some(rdma) = device["attributes"]["rdmaDevice"]["string"].as_str() {
                names.insert(device["name"].as_str().unwrap().to_owned(), rdma.to_owned());
            }
        }
    }
    names
}

fn temp_yaml(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

const GB300_TEMPLATES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deployments/examples/gb300-templates.yaml"
);

#[test]
fn gb300_demo_templates_get_the_demo_devices() {
    let names = rdma_names("gb300");
    let (outcomes, code) = explain(&["--fixture", "gb300", GB300_TEMPLATES]);
    assert_eq!(code, Some(0));
    let gpu0 = "gpu=gpu-0008-06-00-0";
    let one = claim(&outcomes, "1nic-aligned");
    assert_eq!(picks(one, &names), [gpu0, "nic=mlx5_0"]);
    assert_eq!(one["numa"], "aligned on NUMA node 0");
    let two = claim(&outcomes, "2nic-aligned");
    assert_eq!(picks(two, &names), [gpu0, "nic=mlx5_0", "nic=mlx5_1"]);
    assert_eq!(two["numa"], "aligned on NUMA node 0");
    let unaligned = claim(&outcomes, "1nic-unaligned");
    assert_eq!(picks(unaligned, &names), [gpu0, "nic=mlx5_2"]);
    assert!(
        unaligned["numa"]
            .as_str()
            .unwrap()
            .starts_with("cross-NUMA"),
        "{unaligned:#}"
    );
    for outcome in &outcomes {
        assert_eq!(
            outcome["warnings"],
            serde_json::json!([]),
            "the shipped classes trip no CEL error"
        );
    }
}

/// GPU 0 and one RDMA NIC on GPU 0's NUMA node.
const GPU0_AND_A_NIC: &str = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: gpu0-and-a-nic, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: gpu.hal.dra.dev
        selectors:
        - cel: {expression: 'device.attributes["resource.kubernetes.io"].pciBusID == "0008:06:00.0"'}
    - name: nic
      exactly: {deviceClassName: rdma.hal.dra.dev}
    constraints:
    - matchAttribute: hal.dra.dev/numaNode
"#;

/// An allocated claim holding the NICs named, by device name.
fn holding(devices: &[&str]) -> String {
    let results: Vec<String> = devices
        .iter()
        .map(|d| {
            format!("      - {{request: nic, driver: hal.dra.dev, pool: gb300, device: {d}}}\n")
        })
        .collect();
    format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: other, namespace: default}}\nspec: {{}}\nstatus:\n  allocation:\n    devices:\n      results:\n{}",
        results.concat()
    )
}

#[test]
fn gb300_numa_match_can_only_pick_mlx5_0_or_mlx5_1() {
    let names = rdma_names("gb300");
    let by_rdma: BTreeMap<&str, &str> = names
        .iter()
        .map(|(d, r)| (r.as_str(), d.as_str()))
        .collect();
    let claim_file = temp_yaml(GPU0_AND_A_NIC);
    let claim_path = claim_file.path().to_str().unwrap();

    let (free, _) = explain(&["--fixture", "gb300", claim_path]);
    assert_eq!(picks(&free[0], &names)[1], "nic=mlx5_0");

    let busy0 = temp_yaml(&holding(&[by_rdma["mlx5_0"]]));
    let (one_busy, _) = explain(&[
        "--fixture",
        "gb300",
        "--allocated",
        busy0.path().to_str().unwrap(),
        claim_path,
    ]);
    assert_eq!(picks(&one_busy[0], &names)[1], "nic=mlx5_1");

    let busy01 = temp_yaml(&holding(&[by_rdma["mlx5_0"], by_rdma["mlx5_1"]]));
    let (none, code) = explain(&[
        "--fixture",
        "gb300",
        "--allocated",
        busy01.path().to_str().unwrap(),
        claim_path,
    ]);
    assert_eq!(code, Some(3));
    assert_eq!(none[0]["status"], "unsatisfiable");
    let why = none[0]["explanation"].as_array().unwrap();
    assert!(
        why[0].as_str().unwrap().starts_with(
            "constraint #1 (matchAttribute hal.dra.dev/numaNode over every request) cannot be met"
        ),
        "{why:#?}"
    );
    let nic_values = why
        .iter()
        .map(|l| l.as_str().unwrap())
        .find(|l| l.contains("nic (needs 1)"))
        .unwrap();
    assert!(
        nic_values.contains("by hal.dra.dev/numaNode: 1:"),
        "only NUMA 1 NICs are left: {nic_values}"
    );
}

#[test]
fn gb300_three_nics_on_numa_0_explains_that_only_two_exist() {
    let claim_file = temp_yaml(
        r#"
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: three-nics-numa-0}
spec:
  spec:
    devices:
      requests:
      - name: nic
        exactly:
          deviceClassName: rdma.hal.dra.dev
          count: 3
          selectors:
          - cel: {expression: 'device.attributes["hal.dra.dev"].numaNode == 0'}
"#,
    );
    let (outcomes, code) = explain(&["--fixture", "gb300", claim_file.path().to_str().unwrap()]);
    assert_eq!(code, Some(3));
    let why = outcomes[0]["explanation"][0].as_str().unwrap();
    assert!(
        why.starts_with("request nic: needs 3 devices of class rdma.hal.dra.dev, 2 candidates (rdma-0101-00-00-0, rdma-0102-00-00-0)"),
        "{why}"
    );
    assert!(
        why.contains("request nic selector #1 is false: rdma-0103-00-00-0, rdma-0104-00-00-0"),
        "{why}"
    );

    // The table says the same for people.
    let table = hal_probe(&[
        "explain",
        "--fixture",
        "gb300",
        claim_file.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("three-nics-numa-0: does NOT fit")
            && text.contains("why: request nic: needs 3"),
        "{text}"
    );
}

#[test]
fn xeon_resource_alignment_picks_a_same_numa_vf_and_gpu() {
    let path = format!("{ROOT}/deployments/examples/xeon-resource-alignment.yaml");
    let (outcomes, code) = explain(&["--fixture", "xeon", &path]);
    assert_eq!(code, Some(0));
    let outcome = &outcomes[0];
    let devices = outcome["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["request"], "vf");
    assert_eq!(devices[1]["request"], "gpu");
    assert_eq!(devices[0]["numaNode"], devices[1]["numaNode"]);
    assert_eq!(devices[0]["pcieRoot"], devices[1]["pcieRoot"]);
    assert_eq!(outcome["numa"], "aligned on NUMA node 1");
    assert_eq!(outcome["pcieRoot"], "aligned on PCIe root pci0000:b0");
}

#[test]
fn cpu_claims_fit_in_the_mode_they_are_written_for() {
    let path = format!("{ROOT}/deployments/examples/cpu-claims.yaml");
    let (numa, _) = explain(&["--fixture", "xeon", &path]);
    assert_eq!(
        claim(&numa, "four-cpus-from-a-numa-group")["status"],
        "allocated"
    );
    // Consumed capacity under the name the slice gives it, as the allocation result spells it.
    let consumed = &claim(&numa, "four-cpus-from-a-numa-group")["devices"][0]["consumedCapacity"];
    assert_eq!(consumed["cpu"], "4", "{consumed}");
    assert!(consumed.get("hal.dra.dev/cpu").is_none(), "{consumed}");
    assert_eq!(
        claim(&numa, "four-cpus-one-node")["status"],
        "unsatisfiable"
    );
    assert_eq!(
        claim(&numa, "rt-two-tasks")["status"],
        "unsatisfiable",
        "no RT devices by default"
    );
    let (rt, _) = explain(&["--fixture", "xeon", "--rt-bandwidth", &path]);
    let two = claim(&rt, "rt-two-tasks");
    assert_eq!(two["devices"][0]["device"], "rt-numa-0");
    assert_eq!(two["devices"][0]["consumedCapacity"]["rtBandwidth"], "600m");
    let (individual, _) = explain(&["--fixture", "xeon", "--cpu-mode", "individual", &path]);
    let four = claim(&individual, "four-cpus-one-node");
    assert_eq!(four["devices"].as_array().unwrap().len(), 4);
    assert_eq!(four["numa"], "aligned on NUMA node 0");
}

#[test]
fn more_than_32_individual_cpus_is_the_schedulers_error() {
    // The scheduler fails such a claim ("number of requested devices 40 exceeds the claim limit of
    // 32"); explain used to say it fits.
    let forty = temp_yaml(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: forty, namespace: ns}\nspec: {devices: {requests: [{name: cpus, exactly: {deviceClassName: cpu.hal.dra.dev, count: 40}}]}}\n",
    );
    let path = forty.path().to_str().unwrap();
    let (outcomes, code) = explain(&["--fixture", "xeon", "--cpu-mode", "individual", path]);
    assert_eq!(code, Some(3));
    assert_eq!(outcomes[0]["status"], "error", "{:#}", outcomes[0]);
    assert_eq!(
        outcomes[0]["explanation"][0],
        "claim ns/forty: number of requested devices 40 exceeds the claim limit of 32"
    );
    let table = hal_probe(&[
        "explain",
        "--fixture",
        "xeon",
        "--cpu-mode",
        "individual",
        path,
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("ResourceClaim ns/forty: error (the scheduler fails it)"),
        "{text}"
    );
}

#[test]
fn explain_reads_the_slices_that_hal_probe_slices_prints() {
    let output = hal_probe(&["--fixture", "gb300", "--format", "json", "slices"]);
    assert!(output.status.success());
    let mut slices = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    slices.write_all(&output.stdout).unwrap();
    let from_file = explain(&["--slices", slices.path().to_str().unwrap(), GB300_TEMPLATES]);
    let from_fixture = explain(&["--fixture", "gb300", GB300_TEMPLATES]);
    assert!(
        from_file.0.iter().any(|o| o["status"] == "allocated"),
        "{:#?}",
        from_file.0
    );
    assert_eq!(from_file, from_fixture);
    // The same slices explained for another node are left out, and a note says so.
    let for_n1 = |slices: &str| {
        let output = hal_probe(&[
            "explain",
            "--node-name",
            "n1",
            "--slices",
            slices,
            "--format",
            "json",
            GB300_TEMPLATES,
        ]);
        (
            String::from_utf8_lossy(&output.stderr).into_owned(),
            output.stderr,
        )
    };
    let (stderr, _) = for_n1(slices.path().to_str().unwrap());
    assert!(
        stderr.contains("slices of node gb300 left out: the claims are explained for node n1"),
        "{stderr}"
    );
    // A node name with an escape sequence is written out, not played, on stderr too.
    let hostile = String::from_utf8(output.stdout.clone()).unwrap().replace(
        "\"nodeName\": \"gb300\"",
        "\"nodeName\": \"gb\\u001b]0;PWN\\u0007\"",
    );
    let mut renamed = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    renamed.write_all(hostile.as_bytes()).unwrap();
    let (stderr, raw) = for_n1(renamed.path().to_str().unwrap());
    assert!(
        stderr.contains("slices of node gb\\u001b]0;PWN\\u0007 left out"),
        "{stderr}"
    );
    assert!(!raw.contains(&0x1b), "{stderr:?}");
}

#[test]
fn bad_input_names_the_file_and_field_and_exits_1() {
    let bad = temp_yaml(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec: {devices: {requests: [{name: x, exactly: {deviceClassName: a, count: many}}]}}\n",
    );
    let output = hal_probe(&[
        "explain",
        "--fixture",
        "gb300",
        bad.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("document 1 (ResourceClaim c): spec.devices.requests[0].exactly.count"),
        "{stderr}"
    );
    // A claim that parses but is invalid is a verdict, exit 3.
    let no_class = temp_yaml(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\nspec: {devices: {requests: [{name: x, exactly: {count: 1}}]}}\n",
    );
    let (outcomes, code) = explain(&["--fixture", "gb300", no_class.path().to_str().unwrap()]);
    assert_eq!(code, Some(3));
    assert_eq!(outcomes[0]["status"], "error");
    assert_eq!(
        outcomes[0]["explanation"][0],
        "request x: deviceClassName is required"
    );
    let missing = hal_probe(&["explain", "--fixture", "gb300", "/nonexistent/claims.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("/nonexistent/claims.yaml")
    );
}

#[test]
#[ignore = "needs ../shared/corpora (run by .ci/run with --ignored)"]
fn live_gb300_slices_resolve_the_upstream_demo_as_it_says_needs_shared_corpora() {
    let live = format!("{ROOT}/../shared/corpora/live-slices");
    let classes = format!("{ROOT}/driver/hal-probe/tests/data/upstream-deviceclasses.yaml");
    let (outcomes, code) = explain(&[
        "--slices",
        &format!("{live}/resourceslice-gpu.yaml"),
        "--slices",
        &format!("{live}/resourceslice-dranet.yaml"),
        "--class",
        &classes,
        &format!("{live}/resource-claim-template.yaml"),
    ]);
    assert_eq!(code, Some(0), "{outcomes:#?}");
    let none = BTreeMap::new();
    // dranet names its NICs by PCI address: 0101 is mlx5_0, 0102 mlx5_1, 0103 mlx5_2.
    assert_eq!(
        picks(claim(&outcomes, "1nic-aligned"), &none),
        ["gpu=gpu-0", "nic=pci-0101-00-00-0"]
    );
    assert_eq!(
        picks(claim(&outcomes, "2nic-aligned"), &none),
        ["gpu=gpu-0", "nic=pci-0101-00-00-0", "nic=pci-0102-00-00-0"]
    );
    assert_eq!(
        picks(claim(&outcomes, "1nic-unaligned"), &none),
        ["gpu=gpu-0", "nic=pci-0103-00-00-0"]
    );
    // The live GPU slice has no NUMA attribute, so alignment cannot be proven from it.
    let numa = claim(&outcomes, "1nic-aligned")["numa"].as_str().unwrap();
    assert!(numa.contains("unknown for gpu-0"), "{numa}");
}

#[test]
fn i915_partitions_and_their_whole_gpu_are_never_given_together() {
    let claims = temp_yaml(
        r#"
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: four-partitions-of-one-gpu}
spec:
  spec:
    devices:
      requests:
      - name: parts
        exactly: {deviceClassName: gpu-partition.hal.dra.dev, count: 4}
      constraints:
      - matchAttribute: hal.dra.dev/parentPciAddress
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: gpu-0-whole-and-a-partition-of-it}
spec:
  spec:
    devices:
      requests:
      - name: whole
        exactly:
          deviceClassName: gpu.hal.dra.dev
          selectors:
          - cel: {expression: 'device.attributes["resource.kubernetes.io"].pciBusID == "0000:4d:00.0"'}
      - name: part
        exactly:
          deviceClassName: gpu-partition.hal.dra.dev
          selectors:
          - cel: {expression: 'device.attributes["hal.dra.dev"].parentPciAddress == "0000:4d:00.0"'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: gpu-0-whole-and-any-partition}
spec:
  spec:
    devices:
      requests:
      - name: whole
        exactly:
          deviceClassName: gpu.hal.dra.dev
          selectors:
          - cel: {expression: 'device.attributes["resource.kubernetes.io"].pciBusID == "0000:4d:00.0"'}
      - name: part
        exactly: {deviceClassName: gpu-partition.hal.dra.dev}
"#,
    );
    let path = claims.path().to_str().unwrap();
    let (outcomes, code) = explain(&["--fixture", "i915", "--gpu-partitions", "4", path]);
    assert_eq!(code, Some(3));
    let none = BTreeMap::new();
    assert_eq!(
        picks(claim(&outcomes, "four-partitions-of-one-gpu"), &none),
        (0..4)
            .map(|i| format!("parts=gpu-0000-4d-00-0-vf{i}"))
            .collect::<Vec<_>>()
    );
    let both = claim(&outcomes, "gpu-0-whole-and-a-partition-of-it");
    assert_eq!(both["status"], "unsatisfiable");
    assert!(
        both["explanation"][0]
            .as_str()
            .unwrap()
            .contains("compete for the same devices, capacity or counters"),
        "{both:#}"
    );
    assert_eq!(
        picks(claim(&outcomes, "gpu-0-whole-and-any-partition"), &none),
        ["whole=gpu-0000-4d-00-0", "part=gpu-0000-ca-00-0-vf0"]
    );
    for outcome in &outcomes {
        assert_eq!(
            outcome["warnings"],
            serde_json::json!([]),
            "the classes keep selectors off partitions"
        );
    }
    // The same with the counter sets in slices of their own (Kubernetes 1.35).
    let (own, _) = explain(&[
        "--fixture",
        "i915",
        "--gpu-partitions",
        "4",
        "--counter-layout",
        "own-slice",
        path,
    ]);
    assert_eq!(
        claim(&own, "gpu-0-whole-and-a-partition-of-it")["status"],
        "unsatisfiable"
    );
    assert_eq!(
        picks(claim(&own, "gpu-0-whole-and-any-partition"), &none),
        ["whole=gpu-0000-4d-00-0", "part=gpu-0000-ca-00-0-vf0"]
    );
}

#[test]
fn the_kubernetes_version_decides_the_counter_layout_and_is_stated() {
    let claims = temp_yaml(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {name: one-partition}\nspec:\n  spec:\n    devices:\n      requests:\n      - name: part\n        exactly: {deviceClassName: gpu-partition.hal.dra.dev}\n",
    );
    let path = claims.path().to_str().unwrap();
    let base = ["--fixture", "i915", "--gpu-partitions", "4"];
    // Each version's own layout (the default for the node's slices) fits.
    for version in ["1.34", "v1.35.1", "1.36"] {
        let mut args = base.to_vec();
        args.extend(["--kubernetes-version", version, path]);
        let (outcomes, code) = explain(&args);
        assert_eq!(code, Some(0), "{version}: {outcomes:#?}");
        assert_eq!(
            outcomes[0]["kubernetesVersion"],
            version.trim_start_matches('v').get(..4).unwrap()
        );
    }
    let (newest, _) = explain(&[base.as_slice(), &[path]].concat());
    assert_eq!(newest[0]["kubernetesVersion"], "1.36");
    assert_eq!(
        newest[0]["featureGates"],
        "every modeled DRA feature gate on"
    );
    // 1.35's default gates leave DRAPartitionableDevices off: the API server would drop the
    // counters, and explain says so; enabling the gate keeps them.
    let mut args = vec!["explain", "--format", "json"];
    args.extend_from_slice(&base);
    args.extend(["--kubernetes-version", "1.35", path]);
    let output = hal_probe(&args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("sharedCounters dropped, as the API server drops it with the feature gate DRAPartitionableDevices off"),
        "{stderr}"
    );
    args.insert(args.len() - 1, "--feature-gates");
    args.insert(args.len() - 1, "DRAPartitionableDevices=true");
    let output = hal_probe(&args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("sharedCounters dropped"), "{stderr}");
    // DRAConsumableCapacity is still off: the shareable CPU groups lose allowMultipleAllocations.
    assert!(
        stderr.contains("allowMultipleAllocations dropped"),
        "{stderr}"
    );
    let outcomes: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        outcomes[0]["featureGates"],
        "DRADeviceTaints, DRAConsumableCapacity, DRADeviceBindingConditions, DRAExtendedResource off"
    );
    // The 1.34 layout under the 1.36 scheduler: the partitions are invisible, and it says why.
    let mut args = base.to_vec();
    args.extend(["--counter-layout", "same-slice", path]);
    let mut all = vec!["explain", "--format", "json"];
    all.extend_from_slice(&args);
    let output = hal_probe(&all);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "the Kubernetes 1.36 scheduler reads it for its counters only and ignores its devices"
        ),
        "{stderr}"
    );
    let unknown = hal_probe(&[
        "explain",
        "--kubernetes-version",
        "1.30",
        "--fixture",
        "i915",
        path,
    ]);
    assert_eq!(unknown.status.code(), Some(2), "bad usage");
    assert!(
        String::from_utf8(unknown.stderr)
            .unwrap()
            .contains("explain knows 1.34, 1.35, 1.36")
    );
}

#[test]
fn a_selector_on_an_attribute_ethernet_nics_lack_fails_the_claim_on_xeon() {
    // xeon's Ethernet NICs come first and have no `rdmaDevice`: the scheduler's search reaches
    // nic-0000-3b-00-0 and fails the claim with a CEL runtime error ("no such key").
    let claims = temp_yaml(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: rdma-nic, namespace: default}\nspec:\n  devices:\n    requests:\n    - name: nic\n      exactly:\n        deviceClassName: nic.hal.dra.dev\n        selectors:\n        - cel: {expression: 'device.attributes[\"hal.dra.dev\"].rdmaDevice.startsWith(\"mlx5\")'}\n    - name: guarded\n      exactly:\n        deviceClassName: nic.hal.dra.dev\n        selectors:\n        - cel: {expression: 'has(device.attributes[\"hal.dra.dev\"].rdmaDevice)'}\n",
    );
    let (outcomes, code) = explain(&["--fixture", "xeon", claims.path().to_str().unwrap()]);
    assert_eq!(code, Some(3));
    assert_eq!(outcomes[0]["status"], "error");
    let why = outcomes[0]["explanation"][0].as_str().unwrap();
    assert!(
        why.starts_with("claim default/rdma-nic: selector #0 on device hal.dra.dev/xeon/nic-0000-3b-00-0: CEL runtime error: no such key: rdmaDevice"),
        "{why}"
    );
    assert!(why.contains("has()"), "{why}");
}

/// Selectors the API server refuses (message construction, which kube-cel cannot evaluate; a chain
/// of operators nested too deep to parse on a thread's stack) fail their claim with why, never the
/// process.
#[test]
fn hostile_selectors_fail_their_claim_not_the_process() {
    let deep = format!("{}1 == 0", "1+".repeat(5000));
    for (expression, why) in [
        ("Foo{}", "undeclared reference"),
        (deep.as_str(), "Too deep"),
        ("1+1+1 == 3", ""),
    ] {
        let claims = temp_yaml(&format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: c, namespace: default}}\nspec:\n  devices:\n    requests:\n    - name: gpu\n      exactly:\n        deviceClassName: gpu.hal.dra.dev\n        selectors:\n        - cel: {{expression: '{expression}'}}\n"
        ));
        let (outcomes, code) = explain(&["--fixture", "gb300", claims.path().to_str().unwrap()]);
        if why.is_empty() {
            assert_eq!(code, Some(0), "{outcomes:#?}");
            continue;
        }
        assert_eq!(outcomes[0]["status"], "error", "{outcomes:#?}");
        let text = outcomes[0]["explanation"].to_string();
        assert!(text.contains(why), "{why}: {text}");
        assert_ne!(code, Some(101), "no panic");
    }
}
