//! What the API server's version decides about the published slices: the counter layout and the
//! taint effects (the version itself is read by `dra_kubelet_plugin::client::server_version_of`).

use super::CounterLayout;

/// Whether API server version `major.minor` is 1.35 or later: where counter sets get slices of their
/// own and the taint effect `None` is accepted.
pub fn at_least_1_35(major: &str, minor: &str) -> bool {
    let minor: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    matches!((major, minor), ("1", m) if m >= 35)
}

/// The counter layout the scheduler of API server version `major.minor` reads: counter sets in
/// their own slice from 1.35 on.
pub fn counter_layout_for(major: &str, minor: &str) -> CounterLayout {
    match at_least_1_35(major, minor) {
        true => CounterLayout::OwnSlice,
        false => CounterLayout::SameSlice,
    }
}

/// Whether API server version `major.minor` accepts the informational taint effect `None` (1.35
/// and later): degraded devices are tainted with it there, and not at all on 1.34, whose API
/// server refuses the effect.
pub fn informational_taints_for(major: &str, minor: &str) -> bool {
    at_least_1_35(major, minor)
}

#[cfg(test)]
mod tests {
    use super::{counter_layout_for, informational_taints_for};
    use crate::slices::CounterLayout;

    #[test]
    fn counter_sets_get_slices_of_their_own_from_1_35() {
        assert_eq!(counter_layout_for("1", "34"), CounterLayout::SameSlice);
        assert_eq!(counter_layout_for("1", "35"), CounterLayout::OwnSlice);
        assert_eq!(counter_layout_for("1", "37+"), CounterLayout::OwnSlice);
    }

    #[test]
    fn the_informational_taint_effect_is_used_from_1_35() {
        assert!(!informational_taints_for("1", "34"));
        assert!(informational_taints_for("1", "35"));
        assert!(informational_taints_for("1", "36+"));
        assert!(!informational_taints_for("2", "x"));
    }
}
