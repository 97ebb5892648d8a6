//! Spec versions and the minimum version the fields of a spec need (upstream `specs-go/version.go`).

use super::{ContainerEdits, Spec};

/// The `cdiVersion`s a spec may declare, oldest first. 0.1.0 and 0.2.0 are known to the Go code but
/// below the earliest version any spec can have (0.3.0), so they are rejected there too.
pub const KNOWN_VERSIONS: [&str; 8] = [
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The position of `version` in [`KNOWN_VERSIONS`] (an optional leading `v` is accepted, as by Go).
pub(super) fn rank(version: &str) -> Option<usize> {
    let version = version.strip_prefix('v').unwrap_or(version);
    KNOWN_VERSIONS.iter().position(|known| *known == version)
}

/// The lowest `cdiVersion` the fields of `spec` need:
///
/// * 1.1.0: `netDevices`, or intelRdt `schemata` / `enableMonitoring`;
/// * 0.7.0: `intelRdt` or `additionalGids`;
/// * 0.6.0: spec or device `annotations`, or a `.` in the class part of `kind`;
/// * 0.5.0: a device name starting with a digit, or a device node `hostPath`;
/// * 0.4.0: a mount `type`;
/// * 0.3.0 otherwise.
///
/// Empty strings, lists and maps count as absent, as in Go.
pub fn minimum_version(spec: &Spec) -> &'static str {
    minimum_version_and_reason(spec).0
}

/// [`minimum_version`] and the field that needs it (empty for 0.3.0).
pub(super) fn minimum_version_and_reason(spec: &Spec) -> (&'static str, &'static str) {
    let all_edits =
        || (spec.container_edits.iter()).chain(spec.devices.iter().map(|d| &d.container_edits));
    let any = |f: fn(&ContainerEdits) -> bool| all_edits().any(f);

    if any(|e| !e.net_devices.is_empty()) {
        return ("1.1.0", "netDevices");
    }
    if any(|e| {
        e.intel_rdt
            .as_ref()
            .is_some_and(|r| r.schemata.is_some() || r.enable_monitoring)
    }) {
        return ("1.1.0", "intelRdt schemata or enableMonitoring");
    }
    if any(|e| e.intel_rdt.is_some()) {
        return ("0.7.0", "intelRdt");
    }
    if any(|e| !e.additional_gids.is_empty()) {
        return ("0.7.0", "additionalGids");
    }
    let has = |a: &Option<std::collections::BTreeMap<String, String>>| {
        a.as_ref().is_some_and(|a| !a.is_empty())
    };
    if has(&spec.annotations) || spec.devices.iter().any(|d| has(&d.annotations)) {
        return ("0.6.0", "annotations");
    }
    if spec
        .kind
        .split_once('/')
        .is_some_and(|(_, class)| class.contains('.'))
    {
        return ("0.6.0", "a '.' in the class part of kind");
    }
    let starts_with_digit = |name: &str| name.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if spec.devices.iter().any(|d| starts_with_digit(&d.name)) {
        return ("0.5.0", "a device name starting with a digit");
    }
    if any(|e| {
        e.device_nodes
            .iter()
            .any(|n| n.host_path.as_deref().is_some_and(|p| !p.is_empty()))
    }) {
        return ("0.5.0", "deviceNodes hostPath");
    }
    if any(|e| {
        e.mounts
            .iter()
            .any(|m| m.r#type.as_deref().is_some_and(|t| !t.is_empty()))
    }) {
        return ("0.4.0", "mounts type");
    }
    ("0.3.0", "")
}
