//! Names and values the API server accepts (`k8s.io/kubernetes/pkg/apis/resource/validation`): DNS labels and subdomains,
//! C identifiers, label keys and values, 64-byte strings, strict semver, quantities.

/// Longest string or version attribute value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64;
/// Longest DNS label (device names).
pub const MAX_LABEL: usize = 63;
/// Longest C-identifier part of an attribute or capacity name.
pub const MAX_IDENTIFIER: usize = 32;
/// Longest domain part of an attribute name, and of a driver name.
pub const MAX_DOMAIN: usize = 63;

pub use hal::text::{is_dns_label, is_dns_subdomain};

/// A driver name: at most 63 characters whose lower-cased form is a DNS subdomain.
pub fn is_driver_name(text: &str) -> bool {
    is_dns_subdomain(&text.to_ascii_lowercase(), MAX_DOMAIN)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 32 characters.
pub fn is_c_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    text.len() <= MAX_IDENTIFIER
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An attribute or capacity name: a C identifier (in the driver's domain) or `<domain>/<identifier>`.
pub fn is_qualified_name(text: &str) -> bool {
    match text.split_once('/') {
        None => is_c_identifier(text),
        Some((domain, identifier)) => is_driver_name(domain) && is_c_identifier(identifier),
    }
}

/// Longest label value, and name part of a label key.
pub const MAX_LABEL_VALUE: usize = 63;

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, of any length: a label value or key name part.
fn is_label_value_shaped(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label key (apimachinery's `IsQualifiedName`, used for taint keys): a name part of at most 63
/// characters `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, optionally after a DNS subdomain prefix
/// and `/`. Not to be confused with [`is_qualified_name`], the DRA attribute name.
pub fn is_label_key(text: &str) -> bool {
    let name = match text.split_once('/') {
        None => text,
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix, 253) {
                return false;
            }
            name
        }
    };
    name.len() <= MAX_LABEL_VALUE && is_label_value_shaped(name)
}

/// A label value (apimachinery's `IsValidLabelValue`, used for taint values): empty, or at most 63
/// characters `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn is_label_value(text: &str) -> bool {
    text.is_empty() || (text.len() <= MAX_LABEL_VALUE && is_label_value_shaped(text))
}

/// Strict semver 2.0.0: `MAJOR.MINOR.PATCH[-pre][+build]`, no leading zeros in numeric identifiers,
/// no leading `v`, at most 64 bytes.
pub fn is_semver(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_VALUE_BYTES {
        return false;
    }
    let (rest, build) = match text.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (text, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|pre| {
            pre.split('.')
                .all(|p| ident(p) && (!p.bytes().all(|b| b.is_ascii_digit()) || numeric(p)))
        })
        && build.is_none_or(|build| build.split('.').all(ident))
}

/// A Kubernetes quantity: `<sign><number><suffix>`, where the number is decimal (`1`, `1.5`, `.5`)
/// and the suffix a binary (`Ki`..`Ei`), decimal (`n`, `u`, `m`, `k`, `M`..`E`) or exponent (`e3`) one.
pub fn is_quantity(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    let number_ok = match number.split_once('.') {
        None => !number.is_empty(),
        Some((whole, fraction)) => {
            let has_digits = !whole.is_empty() || !fraction.is_empty();
            has_digits && !fraction.contains('.')
        }
    };
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    number_ok && suffix_ok
}
