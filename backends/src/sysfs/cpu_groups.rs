//! From per-CPU raw readings to consistent groups and labels.
//!
//! The kernel describes each grouping twice: as a CPU mask (`package_cpus`, `core_cpus`,
//! `shared_cpu_map`) and as an id label (`physical_package_id`, `core_id`, cache `id`). Masks are what
//! hwloc builds its objects from, and they are the reliable half: ia64 kernels give two sockets the same
//! `physical_package_id`, s390 says -1 and only has masks, AMD module kernels repeat a `core_id` for two
//! cores of a package. So groups come from masks; a label is kept when it names exactly one group
//! (within its scope), and otherwise the groups are numbered in order of their lowest CPU and an error
//! entry says which label contradicted which masks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hal::CpuSet;

use super::attr::ErrorLog;

/// What was read for one CPU before groups are settled.
#[derive(Debug)]
pub(crate) struct RawCpu {
    pub(crate) id: u32,
    pub(crate) online: bool,
    pub(crate) package: Option<u32>,
    pub(crate) die: Option<u32>,
    pub(crate) cluster: Option<u32>,
    pub(crate) core: Option<u32>,
    /// SMT siblings, containing the CPU itself.
    pub(crate) siblings: Option<CpuSet>,
    /// CPUs of the same package, containing the CPU itself.
    pub(crate) package_cpus: Option<CpuSet>,
    /// The L3 cache: its `id` and its CPU set (containing the CPU itself), if the CPU has an L3.
    pub(crate) l3: Option<(Option<u32>, Option<CpuSet>)>,
}

/// Settles one label per CPU (same order as `cpus`). Groups are the distinct masks; `scope` says
/// within what a label must be unique (core ids are per package and die).
pub(crate) fn label_groups<S: Ord + Clone>(
    errors: &mut ErrorLog,
    cpu_dir: &Path,
    file: &str,
    cpus: &[RawCpu],
    mask: impl Fn(&RawCpu) -> Option<&CpuSet>,
    label: impl Fn(&RawCpu) -> Option<u32>,
    scope: impl Fn(&RawCpu) -> S,
) -> Vec<Option<u32>> {
    // Each mask group with the labels its CPUs carry.
    let mut groups: BTreeMap<&CpuSet, BTreeSet<Option<u32>>> = BTreeMap::new();
    let mut group_scope: BTreeMap<&CpuSet, S> = BTreeMap::new();
    for cpu in cpus {
        if let Some(set) = mask(cpu) {
            groups.entry(set).or_default().insert(label(cpu));
            group_scope.entry(set).or_insert_with(|| scope(cpu));
        }
    }
    let mut owner: BTreeMap<(S, u32), &CpuSet> = BTreeMap::new();
    let mut conflict: Option<String> = None;
    let mut any_label = false;
    for (set, labels) in &groups {
        let single = match labels.iter().collect::<Vec<_>>().as_slice() {
            [Some(l)] => Some(*l),
            _ => None,
        };
        any_label |= labels.iter().any(Option::is_some);
        match single {
            None if labels.iter().any(Option::is_some) => {
                conflict.get_or_insert_with(|| format!("CPUs {set} carry different {file} values"));
            }
            None => {}
            Some(l) => {
                let key = (group_scope.get(set).cloned(), l);
                let Some(key_scope) = key.0 else { continue };
                if let Some(other) = owner.insert((key_scope, l), set) {
                    conflict.get_or_insert_with(|| {
                        format!("{file} {l} names two groups of CPUs, {other} and {set}")
                    });
                }
            }
        }
    }
    let missing = groups.values().any(|labels| labels.contains(&None));
    if conflict.is_none() && !missing {
        return cpus.iter().map(&label).collect();
    }
    if let Some(why) = conflict {
        errors.note(
            &cpu_dir.join(format!("cpu*/topology/{file}")),
            format!("{why}; numbering the groups by their CPUs instead"),
        );
    } else if any_label {
        // Some CPUs of a group lack the label while others have it: same treatment, quieter cause.
        errors.note(
            &cpu_dir.join(format!("cpu*/topology/{file}")),
            "missing for some CPUs; numbering the groups by their CPUs instead".to_owned(),
        );
    }
    // Dense numbering, groups ordered by their lowest CPU. CPUs without a mask keep no label.
    let mut by_first: Vec<&CpuSet> = groups.keys().copied().collect();
    by_first.sort_by_key(|s| s.first());
    cpus.iter()
        .map(|c| {
            mask(c)
                .and_then(|set| by_first.iter().position(|s| *s == set))
                .map(|i| i as u32)
        })
        .collect()
}

/// L3 instances: the kernel's cache `id` when every CPU with an L3 has one and the ids agree with the
/// shared sets; otherwise a dense index of the distinct shared sets. A CPU whose L3 has no usable set
/// (ia64 prints empty maps) is taken as not sharing it beyond its own core, as hwloc does.
pub(crate) fn assign_l3(cpus: &[RawCpu]) -> Vec<Option<u32>> {
    let sets: Vec<Option<CpuSet>> = cpus
        .iter()
        .map(|c| {
            let (_, shared) = c.l3.as_ref()?;
            Some(
                shared
                    .clone()
                    .or_else(|| c.siblings.clone())
                    .unwrap_or_else(|| std::iter::once(c.id).collect()),
            )
        })
        .collect();
    let ids: Vec<Option<u32>> = cpus
        .iter()
        .map(|c| c.l3.as_ref().and_then(|(id, _)| *id))
        .collect();
    let mut id_of_set: BTreeMap<&CpuSet, BTreeSet<Option<u32>>> = BTreeMap::new();
    for (set, id) in sets.iter().zip(&ids) {
        if let Some(set) = set {
            id_of_set.entry(set).or_default().insert(*id);
        }
    }
    let ids_consistent = id_of_set
        .values()
        .all(|ids| ids.len() == 1 && !ids.contains(&None))
        && id_of_set
            .values()
            .map(|ids| ids.first().copied().flatten())
            .collect::<BTreeSet<_>>()
            .len()
            == id_of_set.len();
    if ids_consistent {
        return sets
            .iter()
            .zip(&ids)
            .map(|(set, id)| set.as_ref().and(*id))
            .collect();
    }
    let mut ordered: Vec<&CpuSet> = id_of_set.keys().copied().collect();
    ordered.sort_by_key(|s| s.first());
    sets.iter()
        .map(|set| {
            set.as_ref()
                .and_then(|s| ordered.iter().position(|o| *o == s))
                .map(|i| i as u32)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(
        id: u32,
        package: Option<u32>,
        core: Option<u32>,
        siblings: &str,
        package_cpus: &str,
    ) -> RawCpu {
        RawCpu {
            id,
            online: true,
            package,
            die: None,
            cluster: None,
            core,
            siblings: Some(siblings.parse().unwrap()),
            package_cpus: Some(package_cpus.parse().unwrap()),
            l3: None,
        }
    }

    #[test]
    fn consistent_labels_are_kept() {
        let cpus = [
            raw(0, Some(5), Some(0), "0", "0-1"),
            raw(1, Some(5), Some(1), "1", "0-1"),
        ];
        let mut errors = ErrorLog::default();
        let labels = label_groups(
            &mut errors,
            Path::new("/c"),
            "physical_package_id",
            &cpus,
            |c| c.package_cpus.as_ref(),
            |c| c.package,
            |_| (),
        );
        assert_eq!(labels, [Some(5), Some(5)]);
        assert!(errors.0.is_empty());
    }

    #[test]
    fn a_label_naming_two_mask_groups_is_replaced_and_reported() {
        // ia64: two single-CPU sockets share physical_package_id 0.
        let cpus = [
            raw(0, Some(0), Some(0), "0", "0"),
            raw(1, Some(0), Some(0), "1", "1"),
            raw(2, Some(512), Some(0), "2", "2"),
        ];
        let mut errors = ErrorLog::default();
        let labels = label_groups(
            &mut errors,
            Path::new("/c"),
            "physical_package_id",
            &cpus,
            |c| c.package_cpus.as_ref(),
            |c| c.package,
            |_| (),
        );
        assert_eq!(labels, [Some(0), Some(1), Some(2)]);
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0]
                .error
                .contains("physical_package_id 0 names two groups of CPUs, 0 and 1"),
            "{}",
            errors.0[0].error
        );
    }

    #[test]
    fn absent_labels_are_numbered_silently() {
        // s390: physical_package_id is -1, the masks still say which CPUs share a socket.
        let cpus = [
            raw(0, None, Some(1), "0", "0-1"),
            raw(1, None, Some(2), "1", "0-1"),
            raw(2, None, Some(1), "2", "2"),
        ];
        let mut errors = ErrorLog::default();
        let labels = label_groups(
            &mut errors,
            Path::new("/c"),
            "physical_package_id",
            &cpus,
            |c| c.package_cpus.as_ref(),
            |c| c.package,
            |_| (),
        );
        assert_eq!(labels, [Some(0), Some(0), Some(1)]);
        assert!(errors.0.is_empty());
    }

    #[test]
    fn core_labels_are_scoped_by_package() {
        let cpus = [
            raw(0, Some(0), Some(0), "0", "0"),
            raw(1, Some(1), Some(0), "1", "1"),
        ];
        let mut errors = ErrorLog::default();
        let labels = label_groups(
            &mut errors,
            Path::new("/c"),
            "core_id",
            &cpus,
            |c| c.siblings.as_ref(),
            |c| c.core,
            |c| c.package,
        );
        assert_eq!(labels, [Some(0), Some(0)]);
        assert!(errors.0.is_empty());
    }

    #[test]
    fn l3_ids_must_agree_with_sets() {
        let mut a = raw(0, Some(0), Some(0), "0", "0-1");
        let mut b = raw(1, Some(0), Some(1), "1", "0-1");
        a.l3 = Some((Some(7), Some("0-1".parse().unwrap())));
        b.l3 = Some((Some(7), Some("0-1".parse().unwrap())));
        assert_eq!(assign_l3(&[a, b]), [Some(7), Some(7)]);
        let mut a = raw(0, Some(0), Some(0), "0", "0-1");
        let mut b = raw(1, Some(0), Some(1), "1", "0-1");
        a.l3 = Some((Some(7), Some("0".parse().unwrap())));
        b.l3 = Some((Some(7), None));
        assert_eq!(
            assign_l3(&[a, b]),
            [Some(0), Some(1)],
            "same id for two sets: numbered by set; no set: own core"
        );
    }
}
