//! The CDI specs the driver writes, against the upstream CDI JSON schema (`../shared/corpora/cdi`:
//! `schema.json` + `defs.json` of cncf-tags/container-device-interface), and the module's parser and
//! Go-semantics validator against the upstream good and bad example specs.
//!
//! Needs `../shared/corpora`: ignored by default, run by `.ci/run`.
//!
//! The schema is weaker than the Go validator (it checks shapes and required keys only: no name,
//! path, version or env rules; its `env` items use a misspelt `ref` and its DeviceNode lacks
//! `fileMode`, which it still allows as it does not forbid extra keys). So the produced specs must pass
//! both, and for the bad examples the test records which of the two rejects them.

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

use driver::plugin::cdi::{
    CdiDir, ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, NetDevice, Spec, validate,
};
use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/cdi")
}

/// `schema.json` with its `defs.json#/definitions/...` references pointed at the definitions of
/// `defs.json`, inlined under `definitions` (whose own references are `#/definitions/...`, which
/// then resolve against the combined document).
fn validator() -> jsonschema::Validator {
    let text = fs::read_to_string(corpus().join("schema.json"))
        .unwrap()
        .replace("\"defs.json#/definitions/", "\"#/definitions/");
    assert!(
        !text.contains("defs.json"),
        "an unresolved reference is left"
    );
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    let defs: Value =
        serde_json::from_str(&fs::read_to_string(corpus().join("defs.json")).unwrap()).unwrap();
    assert!(defs["definitions"]["containerEdits"].is_object());
    schema["definitions"] = defs["definitions"].clone();
    jsonschema::validator_for(&schema).unwrap()
}

fn schema_errors(validator: &jsonschema::Validator, json: &Value) -> Vec<String> {
    validator
        .iter_errors(json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

fn node(path: &str, major: i64, minor: i64) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        r#type: Some("c".into()),
        major: Some(major),
        minor: Some(minor),
        ..DeviceNode::default()
    }
}

/// Specs of the shapes the driver writes, and ones using every field of the format.
fn produced_specs() -> Vec<(&'static str, Spec)> {
    let claim = "8c1e4b1a-5d2f-4c3e-9a7b-0e6f1d2c3b4a";
    let rdma = Spec::new(
        "hal.dra.dev/rdma",
        vec![Device::new(
            format!("{claim}-mlx5_0"),
            ContainerEdits {
                env: vec!["NCCL_IB_HCA=mlx5_0".into()],
                device_nodes: vec![
                    node("/dev/infiniband/uverbs0", 231, 192),
                    node("/dev/infiniband/umad0", 231, 0),
                    node("/dev/infiniband/rdma_cm", 10, 58),
                ],
                ..ContainerEdits::default()
            },
        )],
    );

    let mut card = node("/dev/dri/card1", 226, 1);
    card.host_path = Some("/dev/dri/card1".into());
    card.file_mode = Some(0o20660);
    card.permissions = Some("rw".into());
    card.uid = Some(0);
    card.gid = Some(44);
    let gpu_edits = ContainerEdits {
        env: vec!["DRA_HAL_DEVICES=gpu-0".into()],
        device_nodes: vec![node("/dev/nvidia0", 195, 0), card],
        mounts: vec![Mount {
            host_path: "/usr/lib/libcuda.so.1".into(),
            container_path: "/usr/lib/libcuda.so.1".into(),
            r#type: Some("bind".into()),
            options: vec!["ro".into(), "rbind".into()],
        }],
        hooks: vec![Hook {
            hook_name: "createContainer".into(),
            path: "/usr/bin/nvidia-cdi-hook".into(),
            args: vec!["nvidia-cdi-hook".into(), "update-ldcache".into()],
            env: vec!["A=1".into()],
            timeout: Some(10),
        }],
        ..ContainerEdits::default()
    };
    let mut gpu = Spec::new(
        "hal.dra.dev/gpu",
        vec![
            Device::new(format!("{claim}-gpu-0"), gpu_edits.clone()),
            Device {
                name: "gpu-1".into(),
                annotations: Some(BTreeMap::from([("hal.dra.dev/numa".into(), "1".into())])),
                container_edits: gpu_edits,
            },
        ],
    );
    gpu.annotations = Some(BTreeMap::from([("claim".into(), claim.into())]));
    gpu.container_edits = Some(ContainerEdits {
        device_nodes: vec![node("/dev/nvidiactl", 195, 255)],
        ..ContainerEdits::default()
    });
    gpu.raise_version_to_minimum();

    let mut newest = Spec::new(
        "hal.dra.dev/net.v1",
        vec![Device::new(
            "vf-0000:3b:02.1",
            ContainerEdits {
                net_devices: vec![NetDevice {
                    host_interface_name: "ens1f0v1".into(),
                    name: "net1".into(),
                }],
                additional_gids: vec![44, 0],
                intel_rdt: Some(IntelRdt {
                    clos_id: Some("gold".into()),
                    l3_cache_schema: Some("L3:0=ff".into()),
                    mem_bw_schema: Some("MB:0=50".into()),
                    schemata: Some(vec!["L3:0=ff".into()]),
                    enable_monitoring: true,
                }),
                ..ContainerEdits::default()
            },
        )],
    );
    newest.raise_version_to_minimum();

    vec![("rdma", rdma), ("gpu", gpu), ("net/rdt", newest)]
}

#[test]
#[ignore = "needs ../shared corpora"]
fn written_specs_validate_against_the_cdi_schema_needs_shared_corpora() {
    let validator = validator();
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    let mut versions = Vec::new();
    for (what, spec) in produced_specs() {
        validate(&spec).unwrap_or_else(|e| panic!("{what}: {e}"));
        let path = cdi.write_claim_spec("claim-1", &spec).unwrap();
        let json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let errors = schema_errors(&validator, &json);
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{json:#}");
        assert_eq!(
            serde_json::from_value::<Spec>(json).unwrap(),
            spec,
            "{what}"
        );
        versions.push(spec.cdi_version);
    }
    assert_eq!(versions, ["0.5.0", "0.6.0", "1.1.0"]);

    // The schema can fail: a device without containerEdits, or a mount without containerPath.
    let mut json = serde_json::to_value(&produced_specs()[0].1).unwrap();
    json["devices"][0]
        .as_object_mut()
        .unwrap()
        .remove("containerEdits");
    assert!(!schema_errors(&validator, &json).is_empty());
    let mut json = serde_json::to_value(&produced_specs()[1].1).unwrap();
    json["devices"][0]["containerEdits"]["mounts"][0]
        .as_object_mut()
        .unwrap()
        .remove("containerPath");
    assert!(!schema_errors(&validator, &json).is_empty());
}

fn examples(kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(corpus().join("testdata").join(kind))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .filter(|(name, _)| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {kind} examples");
    files
}

#[test]
#[ignore = "needs ../shared corpora"]
fn upstream_examples_agree_with_the_parser_and_validator_needs_shared_corpora() {
    let validator = validator();

    let good = examples("good");
    for (name, bytes) in &good {
        let spec: Spec =
            serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("good/{name}: {e}"));
        validate(&spec).unwrap_or_else(|e| panic!("good/{name}: {e}"));
        let json: Value = serde_json::from_slice(bytes).unwrap();
        assert!(schema_errors(&validator, &json).is_empty(), "good/{name}");
        // Written back, it is still the same spec and still schema-valid.
        let again = serde_json::to_value(&spec).unwrap();
        assert!(schema_errors(&validator, &again).is_empty(), "good/{name}");
        assert_eq!(serde_json::from_value::<Spec>(again).unwrap(), spec);
    }
    assert!(good.iter().any(|(n, _)| n == "spec-example.json"));

    // Each bad example must be rejected by our parsing or by `validate`. Both upstream ones are
    // rejected by parsing: `empty.json` is not JSON at all; `explicit-empty.json` (`{}`) lacks the
    // required `cdiVersion` and `kind` (Go parses it to zero values and then rejects the empty
    // version; the schema rejects it for the missing required keys, so all three agree).
    let bad = examples("bad");
    let mut rejected_by = BTreeMap::new();
    for (name, bytes) in &bad {
        let why = match serde_json::from_slice::<Spec>(bytes) {
            Err(e) => format!("parse: {e}"),
            Ok(spec) => match validate(&spec) {
                Err(e) => format!("validate: {e}"),
                Ok(()) => panic!("bad/{name} was accepted"),
            },
        };
        if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
            assert!(
                !schema_errors(&validator, &json).is_empty(),
                "bad/{name} passes the schema"
            );
        }
        rejected_by.insert(name.clone(), why);
    }
    assert!(
        rejected_by["explicit-empty.json"].contains("missing field `cdiVersion`"),
        "{rejected_by:#?}"
    );
    assert!(
        rejected_by["empty.json"].starts_with("parse: "),
        "{rejected_by:#?}"
    );

    // Go-semantics rules the schema cannot express: schema-valid specs our validator rejects.
    let minimal = &good.iter().find(|(n, _)| n == "minimal.json").unwrap().1;
    for (pointer, value, field) in [
        (
            "/devices/0/containerEdits/deviceNodes/0/path",
            "dev/card1",
            "devices[0].containerEdits.deviceNodes[0].path",
        ),
        ("/kind", "vendor.com/device/x", "kind"),
        ("/cdiVersion", "0.2.0", "cdiVersion"),
        ("/devices/0/name", "-dev", "devices[0].name"),
    ] {
        let mut json: Value = serde_json::from_slice(minimal).unwrap();
        *json.pointer_mut(pointer).unwrap() = value.into();
        assert!(schema_errors(&validator, &json).is_empty(), "{pointer}");
        let spec: Spec = serde_json::from_value(json).unwrap();
        let error = validate(&spec).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{field}: ")),
            "{pointer}: {error}"
        );
    }
}
