//! The SR-IOV DRA driver's resource-alignment demo (`../shared/corpora/live-slices/sriov/
//! resource-alignment.yaml`, read at run time) through this driver, its manifests unchanged apart
//! from the DeviceClass names and the driver name: the claim of its ResourceClaimTemplate (a VF and a
//! GPU on one PCIe root, `VfConfig` `ifName: net1`, `netAttachDefName: vf-test1`) is prepared on the
//! xeon fixture, then its pod's sandbox starts through NRI and gets `net1` from the demo's
//! NetworkAttachmentDefinition, served by the fake API server. The `sriov` CNI is not installed: a
//! script under its name records what it was given and answers with a valid result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;

use super::*;
use crate::fake_api::FakeApi;
use crate::nri::fake_runtime::{FakeRuntime, container, pod, pod_in_netns};
use crate::nri::plugin::{CpuSource, NriConfig, event, run};
use crate::nri::sandbox::{PodNetwork, direct::DirectMode, kube_nads};
use crate::podnet::cni::Cni;

/// The demo's driver (its DeviceClass, opaque config driver and API group).
const DEMO_DRIVER: &str = "sriovnetwork.k8snetworkplumbingwg.io";
/// The demo's DeviceClass names and this driver's (`deployments/deviceclasses/deviceclasses.yaml`).
const CLASSES: &[(&str, &str)] = &[
    (DEMO_DRIVER, "vf.hal.dra.dev"),
    ("gpu.example.com", "gpu.hal.dra.dev"),
];

fn demo_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/live-slices/sriov/resource-alignment.yaml")
}

/// The demo's documents by kind.
fn demo_documents() -> BTreeMap<String, Value> {
    let path = demo_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (needs ../shared/corpora)", path.display()));
    let mut out = BTreeMap::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).unwrap();
        let value: Value = serde_json::to_value(value).unwrap();
        if let Some(kind) = value["kind"].as_str() {
            out.insert(kind.to_owned(), value);
        }
    }
    out
}

/// The claim spec of the demo's template with only the class names and the driver name replaced.
fn claim_spec(template: &Value) -> Value {
    let mut spec = template["spec"]["spec"].clone();
    for request in spec["devices"]["requests"].as_array_mut().unwrap() {
        let class = &mut request["exactly"]["deviceClassName"];
        let demo = class.as_str().unwrap().to_owned();
        let ours = CLASSES.iter().find(|(d, _)| *d == demo).unwrap().1;
        *class = json!(ours);
    }
    for config in spec["devices"]["config"].as_array_mut().unwrap() {
        let opaque = &mut config["opaque"];
        assert_eq!(opaque["driver"], DEMO_DRIVER);
        opaque["driver"] = json!(DRIVER);
        let version = opaque["parameters"]["apiVersion"].as_str().unwrap();
        let ours = version.replacen(DEMO_DRIVER, DRIVER, 1);
        opaque["parameters"]["apiVersion"] = json!(ours);
    }
    spec
}

/// The CEL selector of this driver's DeviceClass `name`.
fn class_expression(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deployments/deviceclasses/deviceclasses.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let class: Value =
            serde_json::to_value(serde_yaml::Value::deserialize(document).unwrap()).unwrap();
        if class["metadata"]["name"] == name {
            return class["spec"]["selectors"][0]["cel"]["expression"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }
    panic!("no DeviceClass {name}");
}

/// The allocation a scheduler could make for `spec` on the fixture: per request the first device
/// of its class (with a netdev, for a network function) such that the `matchAttribute` of the
/// constraint is equal across the requests. Returns (request, device, attribute value).
fn allocate(s: &Setup, spec: &Value) -> Vec<(String, String)> {
    use crate::podnet::filter::DeviceFilter;
    use crate::slices::devices::{DeviceSource, devices_with_sources};
    let constraint = spec["devices"]["constraints"][0]["matchAttribute"]
        .as_str()
        .unwrap()
        .to_owned();
    let inventory = s.inventory.read().unwrap();
    let devices = devices_with_sources(&inventory, &SliceConfig::new(NODE));
    let attribute = |d: &k8s_openapi::api::resource::v1::Device| {
        d.attributes
            .as_ref()
            .and_then(|a| a.get(&constraint))
            .and_then(|a| a.string.clone())
    };
    let requests = spec["devices"]["requests"].as_array().unwrap();
    let candidates: Vec<Vec<(String, Option<String>)>> = requests
        .iter()
        .map(|r| {
            let filter = DeviceFilter::new(&class_expression(
                r["exactly"]["deviceClassName"].as_str().unwrap(),
            ))
            .unwrap();
            devices
                .iter()
                .filter(|(d, source)| {
                    let netdev = match source {
                        DeviceSource::Nic { function, .. } => !function.netdevs.is_empty(),
                        _ => true,
                    };
                    netdev && filter.selects(d, DRIVER).unwrap_or(false)
                })
                .map(|(d, _)| (d.name.clone(), attribute(d)))
                .collect()
        })
        .collect();
    // Two requests: the first pair on one root.
    assert_eq!(candidates.len(), 2);
    for (vf, vf_root) in &candidates[0] {
        for (gpu, gpu_root) in &candidates[1] {
            if vf_root.is_some() && vf_root == gpu_root {
                let names = |i: usize| requests[i]["name"].as_str().unwrap().to_owned();
                return vec![(names(0), vf.clone()), (names(1), gpu.clone())];
            }
        }
    }
    panic!("no VF and GPU on one {constraint} in the fixture: {candidates:?}");
}

/// A stand-in for the `sriov` CNI in `dir`: appends `COMMAND` to `dir/log`, keeps its environment in
/// `dir/env-COMMAND` and its stdin in `dir/stdin-COMMAND`, and answers ADD with a CNI 1.0.0 result
/// holding 10.0.1.7/24 (from the demo's host-local range) on `$CNI_IFNAME`.
fn sriov_cni(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND\" >> {d}/log\nenv > {d}/env-$CNI_COMMAND\ncat > {d}/stdin-$CNI_COMMAND\n\
         [ \"$CNI_COMMAND\" = ADD ] && printf '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"%s\",\"mac\":\"02:00:00:0a:00:07\",\"sandbox\":\"%s\"}}],\"ips\":[{{\"address\":\"10.0.1.7/24\",\"gateway\":\"10.0.1.1\",\"interface\":0}}]}}' \"$CNI_IFNAME\" \"$CNI_NETNS\"\nexit 0\n"
    );
    let path = dir.join("sriov");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
#[ignore = "needs ../shared/corpora (the SR-IOV DRA driver's demo manifests; run by .ci/run with --ignored)"]
async fn the_sriov_resource_alignment_demo_gets_net1_from_its_nad_through_nri_needs_shared_corpora()
{
    let documents = demo_documents();
    let template = &documents["ResourceClaimTemplate"];
    let nad = &documents["NetworkAttachmentDefinition"];
    let demo_pod = &documents["Pod"];
    let namespace = template["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(nad["metadata"]["namespace"], namespace);
    let spec = claim_spec(template);

    // The claim as the API server holds it once the scheduler allocated it for the demo's pod: the
    // template's config with `source: FromClaim`, reserved for the pod.
    let s = Setup::on("xeon");
    let results = allocate(&s, &spec);
    let vf_device = results[0].1.clone();
    let config: Vec<Value> = spec["devices"]["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c["source"] = json!("FromClaim");
            c
        })
        .collect();
    let pod_name = demo_pod["metadata"]["name"].as_str().unwrap();
    let claim_name = format!("{pod_name}-vf-x7k2p");
    let api = Arc::new(Mutex::new(FakeApi::with_node(NODE)));
    {
        let mut api = api.lock().unwrap();
        api.claims.insert(
            format!("{namespace}/{claim_name}"),
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                   "metadata": {"name": claim_name, "namespace": namespace, "uid": "demo-claim-uid"},
                   "spec": spec,
                   "status": {"allocation": {"devices": {
                       "results": results.iter().map(|(request, device)| json!({
                           "request": request, "driver": DRIVER, "pool": NODE, "device": device}))
                           .collect::<Vec<_>>(),
                       "config": config}},
                   "reservedFor": [{"resource": "pods", "name": pod_name, "uid": "demo-pod-uid"}]}}),
        );
        api.add_nad(
            namespace,
            nad["metadata"]["name"].as_str().unwrap(),
            nad["spec"]["config"].as_str().unwrap(),
        );
    }
    let client = FakeApi::mock_client(api.clone(), &crate::api::call_timeout_layer());
    let claims: Arc<dyn ClaimSource> = Arc::new(KubeClaims::new(client.clone()));
    let preparer = Preparer::new(
        s.config("boot-1", SliceConfig::new(NODE)),
        claims.clone(),
        s.inventory.clone(),
    )
    .unwrap();
    let claim = ClaimRef {
        namespace: namespace.into(),
        uid: "demo-claim-uid".into(),
        name: claim_name.clone(),
    };
    let prepared = preparer.prepare(vec![claim]).await;
    assert!(prepared["demo-claim-uid"].is_ok(), "{prepared:?}");
    let vf_pci = s
        .inventory
        .read()
        .unwrap()
        .pci
        .iter()
        .find(|f| vf_device == format!("nic-{}", f.address.to_string().replace([':', '.'], "-")))
        .map(|f| f.address.to_string())
        .unwrap();

    // The node's NRI plugin with pod networking: the CNI from a temporary bin dir.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cni-bin");
    std::fs::create_dir(&bin).unwrap();
    sriov_cni(&bin);
    let checkpoint = s.checkpoint_path();
    let network = PodNetwork {
        cni: Cni {
            bin_dirs: vec![bin.clone()],
            cache_dir: dir.path().join("cni/results"),
            timeout: Duration::from_secs(30),
        },
        prepared: Arc::new(move || crate::podnet::pods::read_prepared(&checkpoint)),
        nads: kube_nads(client),
        claims: Some(claims),
        driver: DRIVER.into(),
        pool: NODE.into(),
        direct: DirectMode::new(dir.path()),
        sandboxes: Arc::default(),
    };
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let (_cpu_claims, cpu_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let source = CpuSource {
        claims: cpu_rx,
        allocatable: Arc::new(|| hal::CpuSet::from_cpulist("0-7").unwrap()),
        reserved_again: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut nri = NriConfig::new(&socket);
    nri.pod_network = Some(Arc::new(network));
    let plugin = tokio::spawn(run(nri, source, stopped));
    let (conn, _) = runtime.accept().await.unwrap();
    let other = pod("sandbox0", "pod-uid-0");
    conn.synchronize(
        vec![other.clone()],
        vec![container("c0", &other, &[], "0-7")],
        100,
    )
    .await
    .unwrap();

    // The demo's pod starts.
    let mut sandbox = pod_in_netns(
        "demosandbox1",
        "demo-pod-uid",
        Path::new("/run/netns/cni-demo"),
    );
    sandbox.name = pod_name.into();
    sandbox.namespace = namespace.into();
    conn.sandbox_event(event::RUN_POD_SANDBOX, &sandbox)
        .await
        .unwrap();
    let env = env_file(&bin.join("env-ADD"));
    assert_eq!(env["CNI_COMMAND"], "ADD");
    assert_eq!(env["CNI_IFNAME"], "net1");
    assert_eq!(env["CNI_CONTAINERID"], "demosandbox1");
    assert_eq!(env["CNI_NETNS"], "/run/netns/cni-demo");
    assert_eq!(env["CNI_PATH"], bin.display().to_string());
    assert!(
        env["CNI_ARGS"].contains(&format!("K8S_POD_NAME={pod_name}")),
        "{env:?}"
    );
    let stdin = json_file(&bin.join("stdin-ADD"));
    assert_eq!(stdin["deviceID"], vf_pci.as_str(), "{stdin}");
    assert_eq!(stdin["type"], "sriov");
    assert_eq!(stdin["name"], "vf-test1");
    assert_eq!(stdin["cniVersion"], "1.0.0");
    // The NAD's own fields reach the plugin as written.
    let demo_config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    for (key, value) in demo_config.as_object().unwrap() {
        assert_eq!(&stdin[key], value, "{key}");
    }
    // runtimeConfig only for capabilities the NAD declares (it declares none).
    let declared: Vec<&String> = demo_config
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|c| c.keys().collect())
        .unwrap_or_default();
    let given: Vec<&String> = stdin
        .get("runtimeConfig")
        .and_then(Value::as_object)
        .map(|c| c.keys().collect())
        .unwrap_or_default();
    assert!(given.iter().all(|k| declared.contains(k)), "{stdin}");
    assert!(
        stdin.get("runtimeConfig").is_none() || !declared.is_empty(),
        "{stdin}"
    );

    // The claim's status: the preparer's entry for the VF, with the CNI result's addresses
    // (written after the sandbox's answer, by a task of its own: waited for, up to 10 s).
    let entry_of = || {
        let status =
            api.lock().unwrap().claims[&format!("{namespace}/{claim_name}")]["status"]["devices"]
                .clone();
        let entry = status
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device"] == vf_device.as_str())
            .cloned();
        entry.unwrap_or_else(|| panic!("{status}"))
    };
    let mut entry = entry_of();
    for _ in 0..400 {
        if !entry["networkData"]["ips"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        entry = entry_of();
    }
    assert_eq!(entry["networkData"]["interfaceName"], "net1", "{entry}");
    assert_eq!(
        entry["networkData"]["ips"],
        json!(["10.0.1.7/24"]),
        "{entry}"
    );
    assert_eq!(entry["networkData"]["hardwareAddress"], "02:00:00:0a:00:07");
    assert_eq!(entry["data"]["pciAddress"], vf_pci.as_str());
    assert_eq!(entry["data"]["network"], "vf-test1");

    // The pod goes: DEL with the same inputs (the namespace gone: passed empty).
    conn.sandbox_event(event::STOP_POD_SANDBOX, &sandbox)
        .await
        .unwrap();
    conn.sandbox_event(event::REMOVE_POD_SANDBOX, &sandbox)
        .await
        .unwrap();
    let log = std::fs::read_to_string(bin.join("log")).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), ["ADD", "DEL"]);
    let env = env_file(&bin.join("env-DEL"));
    assert_eq!(env["CNI_COMMAND"], "DEL");
    assert_eq!(env["CNI_IFNAME"], "net1");
    assert_eq!(env["CNI_CONTAINERID"], "demosandbox1");
    let del = json_file(&bin.join("stdin-DEL"));
    assert_eq!(del["deviceID"], vf_pci.as_str());
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.0.1.7/24");
    let _ = stop.send(true);
    plugin.await.unwrap();
}
