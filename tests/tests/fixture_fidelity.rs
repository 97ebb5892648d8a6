//! The fixture machines against the real dumps they copy: the files the `hybrid` fixture renders are
//! those of hwloc's Raptor Lake dump, and offline CPUs are in no list of the online ones, as in hwloc's
//! `16em64t-4s2c2t-offlines` dump.
//!
//! Needs `../shared/corpora/hwloc-linux` and `tar`/`bzip2`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

use backends::{SysfsCpuTopology, SysfsRoot};
use hal::{CoreType, CpuSet, CpuTopology};
use stack_tests::hwloc;

fn extract(name: &str, into: &Path) -> PathBuf {
    let dump = hwloc::dumps()
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .expect("the dump is in the corpus");
    dump.extract(into).unwrap()
}

/// Every file under `dir`, relative to it, sorted. Links are not followed (a dump's `cpuN/node0`
/// leads back to `cpuN`).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Files of a CPU's `topology/` and `cache/index*/` the fixture does not render: the masks of the
/// package and die groups (it renders their lists) and the cache geometry.
fn not_rendered(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_str().unwrap();
    matches!(
        name,
        "package_cpus"
            | "core_siblings"
            | "die_cpus"
            | "coherency_line_size"
            | "number_of_sets"
            | "physical_line_partition"
            | "ways_of_associativity"
            | "uevent"
    )
}

#[test]
#[ignore = "needs ../shared corpora"]
fn the_hybrid_fixture_renders_the_files_of_hwlocs_raptor_lake_dump_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("fidelity-").unwrap();
    let dump = extract("20em64t-hybrid-1p6c2t+2ca4co1t", scratch.path());
    let fixture = hal_mock::by_name("hybrid").unwrap().materialize().unwrap();
    let cpu_dir = Path::new("sys/devices/system/cpu");
    let mut compared = 0;
    let mut failures = Vec::new();
    for relative in files(&dump.join(cpu_dir)) {
        let text = relative.to_string_lossy();
        let per_cpu = text.starts_with("cpu")
            && (text.contains("/topology/") || text.contains("/cache/index"));
        let global = [
            "online",
            "offline",
            "possible",
            "present",
            "smt/control",
            "smt/active",
        ]
        .contains(&text.as_ref());
        if !(per_cpu || global) || not_rendered(&relative) {
            continue;
        }
        let theirs = fs::read_to_string(dump.join(cpu_dir).join(&relative)).unwrap();
        match fs::read_to_string(fixture.root().join(cpu_dir).join(&relative)) {
            Ok(ours) if ours.trim_end() == theirs.trim_end() => compared += 1,
            Ok(ours) => failures.push(format!(
                "{text}: dump {:?}, fixture {:?}",
                theirs.trim_end(),
                ours.trim_end()
            )),
            Err(e) => failures.push(format!("{text}: not rendered ({e})")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 20 CPUs x (13 topology files + 4 caches x 6 files), and the 6 global files.
    assert_eq!(compared, 20 * (13 + 4 * 6) + 6);

    // And what discovery makes of them, but the core types: the dump lacks the PMU lists that say
    // them, the fixture has them (P-cores are CPUs 0-11, E-cores 12-19).
    let read = |root: &Path| {
        SysfsCpuTopology::new(SysfsRoot::new(root))
            .cpu_inventory()
            .unwrap()
    };
    let real = read(&dump);
    let ours = read(fixture.root());
    assert!(ours.errors.is_empty() && real.errors.is_empty());
    assert_eq!(ours.cpus.len(), real.cpus.len());
    for (ours, real) in ours.cpus.iter().zip(&real.cpus) {
        let want = match ours.id {
            0..=11 => CoreType::Performance,
            _ => CoreType::Efficiency,
        };
        assert_eq!(ours.core_type, want, "cpu{}", ours.id);
        let mut ours = ours.clone();
        ours.core_type = real.core_type;
        assert_eq!(&ours, real);
    }
}

/// For every online CPU of the tree at `root`, its topology and cache sets that name an offline CPU.
fn offline_cpus_in_lists(root: &Path) -> (CpuSet, Vec<String>) {
    let cpu_dir = root.join("sys/devices/system/cpu");
    let ids: Vec<u32> = fs::read_dir(&cpu_dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("cpu")?
                .parse()
                .ok()
        })
        .collect();
    let offline: CpuSet = ids
        .iter()
        .copied()
        .filter(|id| {
            fs::read_to_string(cpu_dir.join(format!("cpu{id}/online")))
                .is_ok_and(|v| v.trim() == "0")
        })
        .collect();
    let mut leaks = Vec::new();
    for id in ids.iter().filter(|id| !offline.contains(**id)) {
        let dir = cpu_dir.join(format!("cpu{id}"));
        for relative in files(&dir) {
            let name = relative.file_name().unwrap().to_str().unwrap();
            let text = fs::read_to_string(dir.join(&relative)).unwrap();
            let text = text.trim_end_matches(['\n', '\0']);
            let set = match name {
                "shared_cpu_list" => CpuSet::from_cpulist(text),
                "shared_cpu_map" => CpuSet::from_hex_mask(text),
                _ if relative.starts_with("topology") && name.ends_with("_list") => {
                    CpuSet::from_cpulist(text)
                }
                "thread_siblings" | "core_siblings" | "core_cpus" | "package_cpus" | "die_cpus"
                | "cluster_cpus" => CpuSet::from_hex_mask(text),
                _ => continue,
            };
            let named = set.unwrap().intersection(&offline);
            if !named.is_empty() {
                leaks.push(format!("cpu{id}/{}: {named}", relative.display()));
            }
        }
    }
    (offline, leaks)
}

#[test]
#[ignore = "needs ../shared corpora"]
fn offline_cpus_are_in_no_list_of_the_online_ones_as_in_hwlocs_offlines_dump_needs_shared_corpora()
{
    let scratch = hal_mock::scratch_dir("fidelity-").unwrap();
    let dump = extract("16em64t-4s2c2t-offlines", scratch.path());
    let (offline, leaks) = offline_cpus_in_lists(&dump);
    assert_eq!(offline.to_string(), "2,5,13-14");
    assert_eq!(leaks, Vec::<String>::new());
    // cpu6's sibling cpu14 is offline: the kernel lists cpu6 alone, and discovery says so.
    let cpu6 =
        fs::read_to_string(dump.join("sys/devices/system/cpu/cpu6/topology/thread_siblings"))
            .unwrap();
    assert_eq!(cpu6.trim(), "00000000,00000040");
    let real = SysfsCpuTopology::new(SysfsRoot::new(&dump))
        .cpu_inventory()
        .unwrap();
    assert_eq!(
        real.cpu(6).unwrap().siblings.as_ref().unwrap().to_string(),
        "6"
    );

    for name in hal_mock::FIXTURES {
        let machine = hal_mock::by_name(name).unwrap();
        let fixture = machine.materialize().unwrap();
        let (offline, leaks) = offline_cpus_in_lists(fixture.root());
        let described: CpuSet = machine.cpu.offline.iter().copied().collect();
        assert_eq!(offline, described, "{name}");
        assert_eq!(leaks, Vec::<String>::new(), "{name}");
    }
}
