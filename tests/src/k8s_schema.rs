//! The strict JSON schemas of resource.k8s.io/v1 in `../shared/corpora/k8s` (kubernetes-validate), and
//! of any kind in a directory of the same package's schemas (`scripts/helm-check.sh` installs them).

use std::fs;
use std::path::Path;

use serde_json::Value;

/// The Kubernetes releases whose schemas the tests check against.
pub const VERSIONS: [&str; 4] = ["v1.34.0", "v1.35.0", "v1.36.0", "v1.37.0"];

/// The validator of `kind` (`resourceslice`, `deviceclass`, ...) in `version`, with the per-kind file's
/// `/api/_definitions.json` references pointed at the bundled `$defs`.
pub fn validator(version: &str, kind: &str) -> Result<jsonschema::Validator, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/k8s/kubernetes-validate-jsonschema")
        .join(format!("{version}-local-strict"));
    validator_in(
        &dir,
        &format!("{kind}-resource-v1.json"),
        "resource-v1-definitions.json",
    )
}

/// The validator of the per-kind schema `file` of a kubernetes-validate schema directory (such as
/// `daemonset-apps-v1.json`), with its `/api/_definitions.json` references pointed at the `$defs` of
/// `definitions` in the same directory (`_definitions.json` in the package itself).
pub fn validator_in(
    dir: &Path,
    file: &str,
    definitions: &str,
) -> Result<jsonschema::Validator, String> {
    let read = |name: &str| {
        fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let text = read(file)?.replace("/api/_definitions.json#/$defs/", "#/$defs/");
    let mut schema: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let definitions: Value =
        serde_json::from_str(&read(definitions)?).map_err(|e| e.to_string())?;
    let defs = definitions
        .get("$defs")
        .cloned()
        .ok_or("no $defs in the definitions")?;
    if let Value::Object(map) = &mut schema {
        map.insert("$defs".into(), defs);
    }
    jsonschema::validator_for(&schema).map_err(|e| e.to_string())
}

/// Every violation of `instance`, with where it is.
pub fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}
