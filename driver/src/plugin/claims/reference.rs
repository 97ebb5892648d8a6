//! Claim references from the kubelet, checked as the API server checks object names.

use dra_kubelet_plugin::slices::names::{is_dns_label, is_dns_subdomain};

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
    if !is_dns_subdomain(&claim.name, 253) {
        return Err(invalid(
            "name",
            &claim.name,
            "must be a DNS-1123 subdomain (at most 253 of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with a letter or digit)",
        ));
    }
    dra_kubelet_plugin::handler::check_claim_uid(&claim.uid)
        .map_err(|problem| invalid("uid", &claim.uid, problem))
}
