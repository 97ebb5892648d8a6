//! Every ResourceSlice the driver would publish, for every fixture and CPU mode, against the strict JSON
//! schemas of resource.k8s.io/v1 for Kubernetes 1.34 to 1.37 (`../shared/corpora/k8s`: generated from
//! each release's OpenAPI document, `additionalProperties: false`).
//!
//! Needs `../shared/corpora`: ignored by default, run by `.ci/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use driver::inventory::Inventory;
use driver::slices::{CpuMode, SliceConfig, build_slices};
use serde_json::Value;
use stack_tests::k8s_schema::{VERSIONS, validator, violations};

/// The per-kind schema with its `/api/_definitions.json` references pointed at the bundled `$defs`.

#[test]
#[ignore = "needs ../shared corpora"]
fn published_slices_validate_against_the_strict_schemas_needs_shared_corpora() {
    let validators: Vec<(&str, jsonschema::Validator)> = VERSIONS
        .iter()
        .map(|v| (*v, validator(v, "resourceslice").unwrap()))
        .collect();
    let mut checked = 0;
    for name in hal_mock::FIXTURES {
        let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let inventory = Inventory::from_sysfs(&backends::SysfsRoot::new(machine.root()), None);
        for mode in [
            CpuMode::Individual,
            CpuMode::GroupedByNuma,
            CpuMode::GroupedBySocket,
        ] {
            let mut config = SliceConfig::new("node-1");
            config.cpu_mode = mode;
            for slice in build_slices(&inventory, &config, 3) {
                let json = serde_json::to_value(&slice).unwrap();
                assert_eq!(json["apiVersion"], "resource.k8s.io/v1");
                assert_eq!(json["kind"], "ResourceSlice");
                for (version, validator) in &validators {
                    let errors = violations(validator, &json);
                    assert!(errors.is_empty(), "{name} {mode:?} {version}: {errors:#?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked} slices checked");

    // The schemas are strict: an unknown field is rejected, so the check above can fail.
    let mut bad = serde_json::to_value(
        build_slices(&Inventory::default(), &SliceConfig::new("n"), 0)[0].clone(),
    )
    .unwrap();
    bad["spec"]["devicez"] = Value::Array(Vec::new());
    assert!(!validators[0].1.is_valid(&bad));
}
