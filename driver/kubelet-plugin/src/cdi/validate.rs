//! Spec validation with the semantics of the upstream Go parser (`pkg/parser`) and default validator
//! (`api/producer`), plus a few checks a producer wants that Go leaves to the runtime (absolute
//! device-node and hook paths, hook timeouts > 0).

use std::collections::{BTreeMap, BTreeSet};

use super::version::{self, KNOWN_VERSIONS};
use super::{CdiError, ContainerEdits, Spec};

/// Hook names the Go validator accepts (`prestart` is deprecated in OCI but still accepted).
const HOOK_NAMES: [&str; 6] = [
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
    "prestart",
];
/// Total size of the keys and values of one annotation map (Kubernetes' limit, reused by CDI).
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Checks `spec` as a container runtime would before using it, so that a spec the runtime would
/// drop (with every device in it) is never written. The first problem found is returned, its
/// `field` a JSON path such as `devices[2].containerEdits.deviceNodes[0].path`.
///
/// Rules: `cdiVersion` is a known version (0.3.0 to 1.1.0) and at least [`super::minimum_version`];
/// `kind` is `vendor/class`, each part starting with a letter, ending with a letter or digit, with
/// `_ . -` inside (a `.` in the class needs 0.6.0); annotation keys are Kubernetes qualified names
/// (case-insensitive) and a map holds at most 256 KiB; there is at least one device, names are unique
/// and valid (letters, digits, `_ . : -`, starting and ending with a letter or digit), and every
/// device has at least one edit; env entries are `NAME=value` with a non-empty name; device nodes have
/// an absolute `path` (and `hostPath` when set), a type among `b c u p`, non-negative numbers and
/// permissions that are a subset of `rwm`; mounts have both paths; hooks have a known name, an
/// absolute path, valid env and a positive timeout; net devices have both names, each unique; an
/// intelRdt `closID` is a file name or `/`.
pub fn validate(spec: &Spec) -> Result<(), CdiError> {
    if version::rank(&spec.cdi_version).is_none() {
        return Err(CdiError::invalid(
            "cdiVersion",
            format!(
                "unknown version {:?} (known: {})",
                spec.cdi_version,
                KNOWN_VERSIONS.join(", ")
            ),
        ));
    }
    kind_parts(&spec.kind)?;
    validate_annotations("annotations", spec.annotations.as_ref())?;
    if let Some(edits) = &spec.container_edits {
        validate_edits("containerEdits", edits)?;
    }

    if spec.devices.is_empty() {
        return Err(CdiError::invalid(
            "devices",
            "a spec needs at least one device",
        ));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, device) in spec.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if let Some(first) = seen.insert(&device.name, i) {
            return Err(CdiError::invalid(
                format!("{at}.name"),
                format!(
                    "duplicate device name {:?} (also devices[{first}])",
                    device.name
                ),
            ));
        }
        check_device_name(&device.name).map_err(|p| CdiError::invalid(format!("{at}.name"), p))?;
        validate_annotations(&format!("{at}.annotations"), device.annotations.as_ref())?;
        if device.container_edits.is_empty() {
            return Err(CdiError::invalid(
                format!("{at}.containerEdits"),
                "a device needs at least one edit",
            ));
        }
        validate_edits(&format!("{at}.containerEdits"), &device.container_edits)?;
    }

    let (minimum, reason) = version::minimum_version_and_reason(spec);
    if version::rank(&spec.cdi_version) < version::rank(minimum) {
        return Err(CdiError::invalid(
            "cdiVersion",
            format!(
                "{} is lower than {minimum}, the minimum for the fields used ({reason})",
                spec.cdi_version
            ),
        ));
    }
    Ok(())
}

/// Splits a kind into vendor and class, checking both: exactly one `/`; each part starts with a
/// letter, ends with a letter or digit and has only letters, digits and `_ . -` inside (a `.` in the
/// class needs cdiVersion 0.6.0, which [`validate`] checks).
pub(super) fn kind_parts(kind: &str) -> Result<(&str, &str), CdiError> {
    let bad = |problem: String| CdiError::invalid("kind", problem);
    let (vendor, class) = kind
        .split_once('/')
        .filter(|(_, class)| !class.contains('/'))
        .ok_or_else(|| {
            bad(format!(
                "{kind:?} is not <vendor>/<class> with exactly one '/'"
            ))
        })?;
    check_vendor_or_class(vendor).map_err(|p| bad(format!("vendor {p}")))?;
    check_vendor_or_class(class).map_err(|p| bad(format!("class {p}")))?;
    Ok((vendor, class))
}

fn check_vendor_or_class(name: &str) -> Result<(), String> {
    check_name(name, |b| b.is_ascii_alphabetic(), "a letter", b"_.-")
}

fn check_device_name(name: &str) -> Result<(), String> {
    check_name(
        name,
        |b| b.is_ascii_alphanumeric(),
        "a letter or digit",
        b"_.:-",
    )
}

fn check_name(
    name: &str,
    first_ok: fn(u8) -> bool,
    first: &str,
    inner: &[u8],
) -> Result<(), String> {
    let bytes = name.as_bytes();
    let (Some(&head), Some(&tail)) = (bytes.first(), bytes.last()) else {
        return Err("is empty".into());
    };
    if !first_ok(head) {
        return Err(format!("{name:?} must start with {first}"));
    }
    if !tail.is_ascii_alphanumeric() {
        return Err(format!("{name:?} must end with a letter or digit"));
    }
    if let Some(c) = name.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || u8::try_from(*c).is_ok_and(|b| inner.contains(&b)))
    }) {
        return Err(format!("{name:?} has the invalid character {c:?}"));
    }
    Ok(())
}

fn validate_annotations(
    at: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<(), CdiError> {
    let mut size = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        check_qualified_name(&key.to_ascii_lowercase())
            .map_err(|p| CdiError::invalid(format!("{at}[{key:?}]"), p))?;
        size = size.saturating_add(key.len()).saturating_add(value.len());
    }
    if size > ANNOTATIONS_MAX_BYTES {
        return Err(CdiError::invalid(
            at,
            format!("{size} bytes of keys and values, more than {ANNOTATIONS_MAX_BYTES}"),
        ));
    }
    Ok(())
}

/// Kubernetes `IsQualifiedName`: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters of
/// letters, digits and `- _ .`, starting and ending with a letter or digit.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let label_ok = |label: &str| {
            let b = label.as_bytes();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err(format!("prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name {name:?} must have 1 to 63 characters"));
    }
    check_name(
        name,
        |b| b.is_ascii_alphanumeric(),
        "a letter or digit",
        b"-_.",
    )
    .map_err(|p| format!("name {p}"))
}

fn validate_env(at: &str, env: &[String]) -> Result<(), CdiError> {
    for (i, entry) in env.iter().enumerate() {
        if entry.find('=').is_none_or(|eq| eq == 0) {
            return Err(CdiError::invalid(
                format!("{at}[{i}]"),
                format!("{entry:?} is not NAME=value with a non-empty NAME"),
            ));
        }
    }
    Ok(())
}

fn validate_edits(at: &str, edits: &ContainerEdits) -> Result<(), CdiError> {
    validate_env(&format!("{at}.env"), &edits.env)?;

    for (i, node) in edits.device_nodes.iter().enumerate() {
        let at = format!("{at}.deviceNodes[{i}]");
        if !node.path.starts_with('/') {
            return Err(CdiError::invalid(format!("{at}.path"), "must be absolute"));
        }
        if let Some(host) = node.host_path.as_deref().filter(|p| !p.is_empty())
            && !host.starts_with('/')
        {
            return Err(CdiError::invalid(
                format!("{at}.hostPath"),
                "must be absolute",
            ));
        }
        if let Some(kind) = node.r#type.as_deref()
            && !matches!(kind, "" | "b" | "c" | "u" | "p")
        {
            return Err(CdiError::invalid(
                format!("{at}.type"),
                format!("{kind:?} is not one of b, c, u, p"),
            ));
        }
        for (field, number) in [("major", node.major), ("minor", node.minor)] {
            if number.is_some_and(|n| n < 0) {
                return Err(CdiError::invalid(
                    format!("{at}.{field}"),
                    "must not be negative",
                ));
            }
        }
        if let Some(perms) = node.permissions.as_deref()
            && !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        {
            return Err(CdiError::invalid(
                format!("{at}.permissions"),
                format!("{perms:?} is not a subset of \"rwm\""),
            ));
        }
    }

    for (i, hook) in edits.hooks.iter().enumerate() {
        let at = format!("{at}.hooks[{i}]");
        if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
            return Err(CdiError::invalid(
                format!("{at}.hookName"),
                format!(
                    "{:?} is not one of {}",
                    hook.hook_name,
                    HOOK_NAMES.join(", ")
                ),
            ));
        }
        if !hook.path.starts_with('/') {
            return Err(CdiError::invalid(format!("{at}.path"), "must be absolute"));
        }
        validate_env(&format!("{at}.env"), &hook.env)?;
        if hook.timeout.is_some_and(|t| t <= 0) {
            return Err(CdiError::invalid(
                format!("{at}.timeout"),
                "must be greater than 0",
            ));
        }
    }

    for (i, mount) in edits.mounts.iter().enumerate() {
        let at = format!("{at}.mounts[{i}]");
        if mount.host_path.is_empty() {
            return Err(CdiError::invalid(
                format!("{at}.hostPath"),
                "must not be empty",
            ));
        }
        if mount.container_path.is_empty() {
            return Err(CdiError::invalid(
                format!("{at}.containerPath"),
                "must not be empty",
            ));
        }
    }

    if let Some(clos) = edits.intel_rdt.as_ref().and_then(|r| r.clos_id.as_deref())
        && clos != "/"
        && (clos.len() >= 4096 || clos == "." || clos == ".." || clos.contains(['/', '\n']))
    {
        return Err(CdiError::invalid(
            format!("{at}.intelRdt.closID"),
            format!("{clos:?} is not a file name or \"/\""),
        ));
    }

    let (mut hosts, mut names) = (BTreeSet::new(), BTreeSet::new());
    for (i, net) in edits.net_devices.iter().enumerate() {
        let at = format!("{at}.netDevices[{i}]");
        for (field, value, seen) in [
            ("hostInterfaceName", &net.host_interface_name, &mut hosts),
            ("name", &net.name, &mut names),
        ] {
            if value.is_empty() {
                return Err(CdiError::invalid(
                    format!("{at}.{field}"),
                    "must not be empty",
                ));
            }
            if !seen.insert(value.as_str()) {
                return Err(CdiError::invalid(
                    format!("{at}.{field}"),
                    format!("{value:?} is used by another net device"),
                ));
            }
        }
    }
    Ok(())
}
