//! Claim references from the kubelet, checked as the API server checks object names.

use super::ClaimError;
use crate::plugin::api::ClaimRef;

/// Checks a claim reference from the kubelet as the API server checks objects: the namespace a
/// DNS-1123 label, the name a DNS-1123 subdomain, the UID as every file it names checks it
/// ([`dra_kubelet_plugin::handler::check_claim_uid`]). Names are then safe as URL path segments
/// and file names.
pub fn check_claim_ref(claim: &ClaimRef) -> Result<(), ClaimError> {
    let invalid = |field, value: &str, problem| ClaimError::InvalidRef {
        field,
        value: value.chars().take(300).collect(),
        problem,
    };
    if !is_dns_label(&claim.namespace) {
        return Err(invalid(
            "namespace",
            &claim.namespace,
            "must be a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
        ));
    }
    let subdomain = claim.name.len() <= 253 && claim.name.split('.').all(is_dns_label);
    if !subdomain {
        return Err(invalid(
            "name",
            &claim.name,
            "must be a DNS-1123 subdomain (at most 253 of a-z, 0-9, '-' and '.', each dot-separated part a DNS-1123 label)",
        ));
    }
    dra_kubelet_plugin::handler::check_claim_uid(&claim.uid)
        .map_err(|problem| invalid("uid", &claim.uid, problem))
}

/// A DNS-1123 label: 1 to 63 of `a-z`, `0-9`, `-`, starting and ending with a letter or digit.
fn is_dns_label(s: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    s.len() <= 63
        && edge(s.bytes().next())
        && edge(s.bytes().last())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
