//! Shared counters and their consumption, by release (`validateResourceSliceSpec`,
//! `validateCounterSet`, `validateDevice` and `validateDeviceCounterConsumption` in
//! `k8s.io/kubernetes/pkg/apis/resource/validation`; the limits in `k8s.io/api/resource/v1`).
//!
//! In every release: counter set names are DNS labels, unique in the slice; a set has counters
//! (required), named by DNS labels; a `consumesCounters` entry names a set (a DNS label, one entry per
//! set) and consumes counters (required), named by DNS labels.
//!
//! Kubernetes 1.34 (sets beside the devices that consume them): at most 32 counters across the sets
//! of a slice (`ResourceSliceMaxSharedCounters`); an entry names a set of its own slice and counters
//! of that set; at most 32 counters per device (`ResourceSliceMaxCountersPerDevice`) and 1024 per
//! slice (`ResourceSliceMaxDeviceCountersPerSlice`).
//!
//! Kubernetes 1.35 and 1.36 (sets in slices of their own): a slice sets only one of
//! `sharedCounters` and `devices` (an empty list is set); at most 8 sets per slice
//! (`ResourceSliceMaxCounterSets`) of at most 32 counters (`ResourceSliceMaxCountersPerCounterSet`);
//! at most 2 entries per device (`ResourceSliceMaxDeviceCounterConsumptionsPerDevice`) of at most 32
//! counters (`ResourceSliceMaxCountersPerDeviceCounterConsumption`). The API server does not follow
//! the references there; this check does, across the pool: a set of the pool and its counters.

use std::collections::BTreeSet;

use k8s_openapi::api::resource::v1::{Counter, CounterSet, ResourceSlice};

use super::KubeVersion;
use crate::slices::names::is_dns_label;
use crate::slices::{MAX_COUNTER_SETS_PER_SLICE, MAX_COUNTERS_PER_SLICE};

/// Counters per set (1.35), per consumption entry (1.35) and per device (1.34).
const MAX_COUNTERS: usize = 32;
/// Counters consumed by the devices of one slice (1.34).
const MAX_DEVICE_COUNTERS_PER_SLICE: usize = 1024;
/// `consumesCounters` entries per device (1.35).
const MAX_CONSUMPTIONS_PER_DEVICE: usize = 2;

/// The counters of `slice` for `version`; `pool_sets` are the sets of every slice of the pool (used
/// from 1.35 only, where devices consume them).
pub(super) fn validate_counters(
    slice: &ResourceSlice,
    version: KubeVersion,
    pool_sets: &[&CounterSet],
    fail: &mut impl FnMut(String, String),
) {
    let own_slices = version.counter_sets_in_own_slices();
    // 1.35+: `spec.SharedCounters != nil && spec.Devices != nil` is refused.
    if own_slices && slice.spec.shared_counters.is_some() && slice.spec.devices.is_some() {
        fail(
            "spec".into(),
            format!(
                "sharedCounters and devices in one slice (even an empty list counts): Kubernetes \
                 {version} allows only one of them"
            ),
        );
    }
    let own = slice.spec.shared_counters.as_deref().unwrap_or_default();
    if own_slices && own.len() > MAX_COUNTER_SETS_PER_SLICE {
        fail(
            "spec.sharedCounters".into(),
            format!("{} sets; at most {MAX_COUNTER_SETS_PER_SLICE}", own.len()),
        );
    } else {
        let mut names = BTreeSet::new();
        for (i, set) in own.iter().enumerate() {
            if !is_dns_label(&set.name) || !names.insert(set.name.as_str()) {
                fail(
                    format!("spec.sharedCounters[{i}].name"),
                    format!("{:?}: not a DNS label, or not unique", set.name),
                );
            }
            let limit = own_slices.then_some(MAX_COUNTERS);
            counter_map(
                &set.counters,
                &format!("spec.sharedCounters[{i}].counters"),
                limit,
                fail,
            );
        }
    }
    let total: usize = own.iter().map(|s| s.counters.len()).sum();
    if !own_slices && total > MAX_COUNTERS_PER_SLICE {
        fail(
            "spec.sharedCounters".into(),
            format!("{total} counters; at most {MAX_COUNTERS_PER_SLICE}"),
        );
    }
    let sets: Vec<&CounterSet> = match own_slices {
        true => pool_sets.to_vec(),
        false => own.iter().collect(),
    };
    let mut references = 0;
    for (i, device) in slice.spec.devices.iter().flatten().enumerate() {
        let entries = device.consumes_counters.as_deref().unwrap_or_default();
        if own_slices && entries.len() > MAX_CONSUMPTIONS_PER_DEVICE {
            fail(
                format!("spec.devices[{i}].consumesCounters"),
                format!(
                    "{} entries; at most {MAX_CONSUMPTIONS_PER_DEVICE} (Kubernetes {version})",
                    entries.len()
                ),
            );
            continue;
        }
        let mut named = BTreeSet::new();
        let mut counters = 0;
        for (j, consumption) in entries.iter().enumerate() {
            let at = format!("spec.devices[{i}].consumesCounters[{j}]");
            counters += consumption.counters.len();
            let set_name = &consumption.counter_set;
            if !is_dns_label(set_name) {
                fail(
                    format!("{at}.counterSet"),
                    format!("{set_name:?} is not a DNS label"),
                );
            }
            if !named.insert(set_name.as_str()) {
                fail(
                    format!("{at}.counterSet"),
                    format!("{set_name:?} again: one entry per counter set"),
                );
            }
            let limit = own_slices.then_some(MAX_COUNTERS);
            counter_map(
                &consumption.counters,
                &format!("{at}.counters"),
                limit,
                fail,
            );
            match sets.iter().find(|s| s.name == *set_name) {
                None => fail(
                    format!("{at}.counterSet"),
                    format!(
                        "{set_name:?} is not a counter set of this {}",
                        if own_slices { "pool" } else { "slice" }
                    ),
                ),
                Some(set) => {
                    for name in consumption.counters.keys() {
                        if !set.counters.contains_key(name) {
                            fail(
                                format!("{at}.counters"),
                                format!("{name:?} is not a counter of set {:?}", set.name),
                            );
                        }
                    }
                }
            }
        }
        if !own_slices && counters > MAX_COUNTERS {
            fail(
                format!("spec.devices[{i}].consumesCounters"),
                format!("{counters} counters; at most {MAX_COUNTERS}"),
            );
        }
        references += counters;
    }
    if !own_slices && references > MAX_DEVICE_COUNTERS_PER_SLICE {
        fail(
            "spec.devices".into(),
            format!("{references} counter references; at most {MAX_DEVICE_COUNTERS_PER_SLICE}"),
        );
    }
}

/// The counters of a set or of a consumption entry at `at`: required (`field.Required` when empty,
/// in every release), at most `limit` (over it, nothing else is checked), named by DNS labels.
fn counter_map(
    counters: &std::collections::BTreeMap<String, Counter>,
    at: &str,
    limit: Option<usize>,
    fail: &mut impl FnMut(String, String),
) {
    if counters.is_empty() {
        fail(at.to_owned(), "required: at least one counter".into());
        return;
    }
    if let Some(limit) = limit
        && counters.len() > limit
    {
        fail(
            at.to_owned(),
            format!("{} counters; at most {limit}", counters.len()),
        );
        return;
    }
    for name in counters.keys() {
        if !is_dns_label(name) {
            fail(at.to_owned(), format!("{name:?} is not a DNS label"));
        }
    }
}
