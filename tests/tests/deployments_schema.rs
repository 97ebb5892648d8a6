//! The manifests under `deployments/` (DeviceClasses, example claims) against the strict JSON schemas of
//! resource.k8s.io/v1 for Kubernetes 1.34 to 1.37, and against what the driver publishes: every attribute
//! a selector or constraint names exists on the fixture the example is for, and every opaque config
//! decodes. (The CEL expressions themselves are evaluated by `hal-probe explain`, not here.)
//!
//! Needs `../shared/corpora`: ignored by default, run by `.ci/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use driver::inventory::Inventory;
use driver::slices::{CpuMode, SliceConfig, build_slices};
use serde::Deserialize;
use serde_json::Value;
use stack_tests::k8s_schema::{VERSIONS, validator, violations};

fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Attribute names (`domain/name`) published on a fixture in a CPU mode (Intel GPUs with partitions).
fn published(fixture: &str, mode: CpuMode) -> BTreeSet<String> {
    let machine = hal_mock::by_name(fixture).unwrap().materialize().unwrap();
    let inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(machine.root()), None);
    let mut config = SliceConfig::new("n");
    config.cpu_mode = mode;
    config.gpu_partitions = 2;
    config.rt_bandwidth = mode != CpuMode::Individual;
    build_slices(&inventory, &config, 0)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .flat_map(|d| d.attributes.unwrap_or_default().into_keys())
        .map(|k| {
            if k.contains('/') {
                k
            } else {
                format!("hal.dra.dev/{k}")
            }
        })
        .collect()
}

/// `device.attributes["domain"].name` references and `matchAttribute` names of a manifest.
fn referenced(doc: &Value) -> BTreeSet<String> {
    let text = doc.to_string();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("device.attributes[\\\"") {
        rest = &rest[start + "device.attributes[\\\"".len()..];
        let Some((domain, after)) = rest.split_once("\\\"].") else {
            break;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(format!("{domain}/{name}"));
    }
    for c in doc["spec"]["spec"]["devices"]["constraints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(name) = c["matchAttribute"].as_str() {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
#[ignore = "needs ../shared corpora"]
fn deployment_manifests_validate_and_name_published_attributes_needs_shared_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments");
    let files = [
        (
            "deviceclasses/deviceclasses.yaml",
            vec![
                ("gb300", CpuMode::GroupedByNuma),
                ("xeon", CpuMode::Individual),
                ("i915", CpuMode::GroupedByNuma),
            ],
        ),
        (
            "examples/gb300-templates.yaml",
            vec![("gb300", CpuMode::GroupedByNuma)],
        ),
        (
            "examples/xeon-resource-alignment.yaml",
            vec![("xeon", CpuMode::GroupedByNuma)],
        ),
        (
            "examples/cpu-claims.yaml",
            vec![
                ("xeon", CpuMode::Individual),
                ("xeon", CpuMode::GroupedByNuma),
            ],
        ),
    ];
    let mut checked = 0;
    for (file, fixtures) in files {
        let available: BTreeSet<String> = fixtures
            .iter()
            .flat_map(|(f, m)| published(f, *m))
            .collect();
        for doc in documents(&root.join(file)) {
            let kind = doc["kind"].as_str().unwrap().to_ascii_lowercase();
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            for version in VERSIONS {
                let errors = violations(&validator(version, &kind).unwrap(), &doc);
                assert!(errors.is_empty(), "{file} {name} {version}: {errors:#?}");
            }
            for attribute in referenced(&doc) {
                assert!(
                    available.contains(&attribute),
                    "{file} {name}: {attribute} is not published on {fixtures:?}"
                );
            }
            for config in doc["spec"]["spec"]["devices"]["config"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let parameters = &config["opaque"]["parameters"];
                driver::plugin::claims::decode_opaque(parameters, "hal.dra.dev")
                    .unwrap_or_else(|e| panic!("{file} {name}: {e:?}"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 + 3 + 1 + 4);
}
