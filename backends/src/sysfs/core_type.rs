//! Core types: Intel hybrid PMU lists (`cpu_core`, `cpu_atom`, `cpu_lowpower`), arm `cpu_capacity`, arm
//! MIDR part numbers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hal::{CoreType, CpuSet, LogicalCpu, ParseError};

use super::attr::ErrorLog;
use super::tree::Tree;

/// Intel hybrid PMU lists first, then arm `cpu_capacity`, then arm MIDR part numbers.
pub(crate) fn assign_core_types(
    tree: &Tree,
    cpu_dir: &Path,
    cpus: &mut [LogicalCpu],
    errors: &mut ErrorLog,
) {
    let p_cores = errors.keep(tree.parse_optional(
        &tree.join("sys/devices/cpu_core/cpus"),
        CpuSet::from_cpulist,
    ));
    let e_cores = errors.keep(tree.parse_optional(
        &tree.join("sys/devices/cpu_atom/cpus"),
        CpuSet::from_cpulist,
    ));
    // Arrow Lake-H's low-power E-cores have a PMU of their own (`hybrid_tiny`).
    let low_power = errors.keep(tree.parse_optional(
        &tree.join("sys/devices/cpu_lowpower/cpus"),
        CpuSet::from_cpulist,
    ));
    if p_cores.is_some() || e_cores.is_some() || low_power.is_some() {
        let [p_cores, e_cores, low_power] =
            [p_cores, e_cores, low_power].map(Option::unwrap_or_default);
        for cpu in cpus.iter_mut() {
            if p_cores.contains(cpu.id) {
                cpu.core_type = CoreType::Performance;
            } else if e_cores.contains(cpu.id) || low_power.contains(cpu.id) {
                cpu.core_type = CoreType::Efficiency;
            }
        }
        return;
    }
    // The per-CPU files are only there for online CPUs (arm64's `regs/identification`): look at
    // the first online one, as CPU 0 may be offline.
    let probe = cpus
        .iter()
        .find(|c| c.online)
        .or(cpus.first())
        .map(|c| c.id);
    let per_cpu = |errors: &mut ErrorLog,
                   relative: &str,
                   parse: fn(&str) -> Result<u64, ParseError>|
     -> Vec<Option<u64>> {
        // The attribute is arch-wide (every CPU device has it, or none does): look at one CPU
        // before opening one file per CPU.
        let first = probe.map(|id| cpu_dir.join(format!("cpu{id}")).join(relative));
        if !first.is_some_and(|p| tree.exists(&p)) {
            return vec![None; cpus.len()];
        }
        cpus.iter()
            .map(|c| {
                let path: PathBuf = cpu_dir.join(format!("cpu{}", c.id)).join(relative);
                errors.keep(tree.parse_scalar(&path, parse))
            })
            .collect()
    };
    let capacities = per_cpu(errors, "cpu_capacity", parse_capacity);
    if let Some(kinds) = classify_by_capacity(&capacities) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
        return;
    }
    // arm64 prints every online CPU's MIDR fields in /proc/cpuinfo: one read instead of a
    // `midr_el1` per CPU, when it names them all (only where the per-CPU files exist: x86 builds its
    // /proc/cpuinfo slowly and has no MIDR).
    let midr_file = "regs/identification/midr_el1";
    let has_midr =
        probe.is_some_and(|id| tree.exists(&cpu_dir.join(format!("cpu{id}")).join(midr_file)));
    let from_cpuinfo = match has_midr {
        true => read_cpuinfo(tree, &tree.join("proc/cpuinfo")).map(|text| midrs_of_cpuinfo(&text)),
        false => None,
    };
    let midrs = match from_cpuinfo {
        Some(known) if cpus.iter().all(|c| known.contains_key(&c.id)) => {
            cpus.iter().map(|c| known.get(&c.id).copied()).collect()
        }
        _ => per_cpu(errors, midr_file, parse_hex_u64),
    };
    if let Some(kinds) = classify_by_midr(&midrs) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
    }
}

/// The largest /proc/cpuinfo read (about 250 bytes per arm64 CPU).
const MAX_CPUINFO_BYTES: u64 = 4 * 1024 * 1024;

/// /proc/cpuinfo's text, when it can be read (a capture may not have it: the per-CPU files are then
/// read, and their errors reported).
fn read_cpuinfo(tree: &Tree, path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    tree.open_regular(path)
        .ok()?
        .take(MAX_CPUINFO_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Each CPU's MIDR as arm64's /proc/cpuinfo prints its fields (`processor`, `CPU implementer`,
/// `CPU variant`, `CPU part`, `CPU revision`), put back together with the architecture field the
/// register holds on ARMv8 (0xf). A CPU missing a field, or with a field out of range, is left out.
pub fn midrs_of_cpuinfo(text: &str) -> HashMap<u32, u64> {
    let number = |value: &str| match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    };
    let mut midrs = HashMap::new();
    for block in text.split("\n\n") {
        let (mut cpu, mut implementer, mut variant, mut part, mut revision) =
            (None, None, None, None, None);
        for line in block.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "processor" => cpu = value.parse::<u32>().ok(),
                "CPU implementer" => implementer = number(value).filter(|&v| v <= 0xff),
                "CPU variant" => variant = number(value).filter(|&v| v <= 0xf),
                "CPU part" => part = number(value).filter(|&v| v <= 0xfff),
                "CPU revision" => revision = number(value).filter(|&v| v <= 0xf),
                _ => {}
            }
        }
        if let (Some(cpu), Some(implementer), Some(variant), Some(part), Some(revision)) =
            (cpu, implementer, variant, part, revision)
        {
            let midr = implementer << 24 | variant << 20 | 0xf << 16 | part << 4 | revision;
            midrs.insert(cpu, midr);
        }
    }
    midrs
}

/// An arm `cpu_capacity` (decimal, 1024 for the biggest core).
pub fn parse_capacity(text: &str) -> Result<u64, ParseError> {
    text.parse()
        .map_err(|_| ParseError::new("cpu_capacity", text, "not a decimal integer"))
}

/// A hexadecimal register such as `midr_el1` (`0x00000000410fd050`, or without `0x`).
pub fn parse_hex_u64(text: &str) -> Result<u64, ParseError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| ParseError::new("hex register", text, "not hexadecimal"))
}

/// big.LITTLE by `cpu_capacity`: the CPUs near the lowest capacity are "efficiency", every clearly
/// higher one "performance" (so the middle cluster of a tri-cluster DynamIQ part counts as big).
/// "Clearly higher" is the scheduler's own margin, about 5% (`capacity_greater` in
/// kernel/sched/sched.h): ACPI machines derive capacities from each CPU's CPPC highest
/// performance, which may differ by a few units between identical cores. `None` when no capacity is
/// clearly higher than the lowest, or none is known.
pub fn classify_by_capacity(capacities: &[Option<u64>]) -> Option<Vec<CoreType>> {
    let greater = |a: u64, b: u64| u128::from(a) * 1024 > u128::from(b) * 1078;
    let known = capacities.iter().flatten();
    let (min, max) = (*known.clone().min()?, *known.max()?);
    if !greater(max, min) {
        return None;
    }
    Some(
        capacities
            .iter()
            .map(|c| match c {
                Some(c) if !greater(*c, min) => CoreType::Efficiency,
                Some(_) => CoreType::Performance,
                None => CoreType::Standard,
            })
            .collect(),
    )
}

/// Arm part numbers (MIDR bits 15:4, implementer 0x41) of in-order "LITTLE" cores:
/// Cortex-A5, A7, A53, A55, A510, A520.
const LITTLE_ARM_PARTS: [u64; 6] = [0xc05, 0xc07, 0xd03, 0xd05, 0xd46, 0xd80];

/// big.LITTLE by MIDR, used only when the machine mixes part numbers.
pub fn classify_by_midr(midrs: &[Option<u64>]) -> Option<Vec<CoreType>> {
    let part = |midr: u64| (midr >> 24 & 0xff, midr >> 4 & 0xfff);
    let mut parts = midrs.iter().flatten().map(|&m| part(m));
    let first = parts.next()?;
    if parts.all(|p| p == first) {
        return None;
    }
    Some(
        midrs
            .iter()
            .map(|m| match m.map(part) {
                Some((0x41, part)) if LITTLE_ARM_PARTS.contains(&part) => CoreType::Efficiency,
                Some(_) => CoreType::Performance,
                None => CoreType::Standard,
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_midr_classification() {
        let kinds = classify_by_capacity(&[Some(446), Some(446), Some(1024), Some(871)]).unwrap();
        assert_eq!(
            kinds,
            [
                CoreType::Efficiency,
                CoreType::Efficiency,
                CoreType::Performance,
                CoreType::Performance
            ]
        );
        assert_eq!(classify_by_capacity(&[Some(1024), Some(1024)]), None);
        // Identical cores whose CPPC highest performance differs a little (ACPI arm64 servers).
        assert_eq!(
            classify_by_capacity(&[Some(1024), Some(1010), Some(998), Some(1024)]),
            None
        );
        // A LITTLE cluster whose cores differ a little is still one cluster.
        let kinds = classify_by_capacity(&[Some(440), Some(446), Some(1024), Some(1019)]).unwrap();
        assert_eq!(
            kinds,
            [
                CoreType::Efficiency,
                CoreType::Efficiency,
                CoreType::Performance,
                CoreType::Performance
            ]
        );
        assert_eq!(
            classify_by_capacity(&[Some(u64::MAX), Some(0)]).map(|k| k[1]),
            Some(CoreType::Efficiency)
        );
        assert_eq!(classify_by_capacity(&[None, None]), None);
        let a55 = 0x412f_d050;
        let a78 = 0x414f_d410;
        let kinds = classify_by_midr(&[Some(a55), Some(a78)]).unwrap();
        assert_eq!(kinds, [CoreType::Efficiency, CoreType::Performance]);
        assert_eq!(
            classify_by_midr(&[Some(a78), Some(a78 | 1)]),
            None,
            "same part, other revision"
        );
    }

    /// A Snapdragon-like /proc/cpuinfo: A55 (0xd05) and A78 (0xd41) CPUs.
    const CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x2\nCPU part\t: 0xd05\n\
        CPU revision\t: 0\n\n\
        processor\t: 4\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd41\n\
        CPU revision\t: 1\n\n\
        processor\t: 5\nCPU implementer\t: 0x41\nCPU part\t: 0xd41\n\n\
        processor\t: 6\nCPU implementer\t: 0x41\nCPU variant\t: 0x4\nCPU part\t: 0x1d41\n\
        CPU revision\t: 1\n\n\
        Hardware\t: Qualcomm\n";

    #[test]
    fn cpuinfo_gives_the_midr_register_of_each_cpu_it_describes_in_full() {
        let midrs = midrs_of_cpuinfo(CPUINFO);
        // As the per-CPU midr_el1 files print them.
        assert_eq!(midrs.get(&0), Some(&0x412f_d050));
        assert_eq!(midrs.get(&4), Some(&0x414f_d411));
        assert_eq!(midrs.get(&5), None, "no variant or revision");
        assert_eq!(midrs.get(&6), None, "part out of range");
        assert_eq!(midrs.len(), 2);
        assert!(midrs_of_cpuinfo("processor : 0\nvendor_id : GenuineIntel\n").is_empty());
    }

    #[test]
    fn midr_comes_from_cpuinfo_when_it_names_every_cpu_and_from_the_files_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let root = Tree::open(&crate::sysfs::SysfsRoot::new(dir.path()));
        let cpu_dir = dir.path().join("sys/devices/system/cpu");
        // The per-CPU files say A78 for all four CPUs; /proc/cpuinfo says CPUs 0-1 are A55s. The two
        // never disagree on a machine: here they do, to show which one was read.
        for id in 0..4 {
            let regs = cpu_dir.join(format!("cpu{id}/regs/identification"));
            std::fs::create_dir_all(&regs).unwrap();
            std::fs::write(regs.join("midr_el1"), "0x00000000414fd411\n").unwrap();
        }
        let block = |id: u32, variant: u32, part: u32| {
            format!(
                "processor\t: {id}\nCPU implementer\t: 0x41\nCPU architecture: 8\n\
                 CPU variant\t: {variant:#x}\nCPU part\t: {part:#x}\nCPU revision\t: 1\n\n"
            )
        };
        let cpuinfo = dir.path().join("proc/cpuinfo");
        std::fs::create_dir_all(cpuinfo.parent().unwrap()).unwrap();
        let types = |cpuinfo_text: &str| {
            std::fs::write(&cpuinfo, cpuinfo_text).unwrap();
            let mut cpus = cpus(4, true);
            let mut errors = ErrorLog::default();
            assign_core_types(&root, &cpu_dir, &mut cpus, &mut errors);
            assert!(errors.0.is_empty(), "{:?}", errors.0);
            cpus.iter().map(|c| c.core_type).collect::<Vec<_>>()
        };
        let every_cpu: String = [(0, 2, 0xd05), (1, 2, 0xd05), (2, 4, 0xd41), (3, 4, 0xd41)]
            .iter()
            .map(|&(id, variant, part)| block(id, variant, part))
            .collect();
        use CoreType::{Efficiency, Performance, Standard};
        assert_eq!(
            types(&every_cpu),
            [Efficiency, Efficiency, Performance, Performance]
        );
        // CPU 3 missing from /proc/cpuinfo (offline): every CPU's file is read instead.
        let without_cpu3: String = every_cpu.split_inclusive("\n\n").take(3).collect();
        assert_eq!(types(&without_cpu3), [Standard; 4]);
        assert_eq!(
            types(""),
            [Standard; 4],
            "an empty /proc/cpuinfo names no CPU"
        );
    }

    /// CPUs 0 to `count - 1` of one package, all online but CPU 0 maybe, types not known yet.
    fn cpus(count: u32, cpu0_online: bool) -> Vec<LogicalCpu> {
        (0..count)
            .map(|id| LogicalCpu {
                id,
                online: id != 0 || cpu0_online,
                package: Some(0),
                die: None,
                cluster: None,
                core: Some(id),
                numa_node: None,
                l3: None,
                core_type: CoreType::Standard,
                siblings: None,
            })
            .collect()
    }

    fn assigned(dir: &Path, cpus: &mut [LogicalCpu]) -> Vec<CoreType> {
        let root = Tree::open(&crate::sysfs::SysfsRoot::new(dir));
        let mut errors = ErrorLog::default();
        let cpu_dir = dir.join("sys/devices/system/cpu");
        assign_core_types(&root, &cpu_dir, cpus, &mut errors);
        assert!(errors.0.is_empty(), "{:?}", errors.0);
        cpus.iter().map(|c| c.core_type).collect()
    }

    #[test]
    fn low_power_e_cores_of_their_own_pmu_are_efficiency_cores() {
        let dir = tempfile::tempdir().unwrap();
        for (pmu, list) in [
            ("cpu_core", "0-3"),
            ("cpu_atom", "4-7"),
            ("cpu_lowpower", "8-9"),
        ] {
            let path = dir.path().join(format!("sys/devices/{pmu}"));
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("cpus"), format!("{list}\n")).unwrap();
        }
        let types = assigned(dir.path(), &mut cpus(10, true));
        use CoreType::{Efficiency, Performance};
        assert_eq!(types[..4], [Performance; 4]);
        assert_eq!(types[4..], [Efficiency; 6]);
    }

    #[test]
    fn midr_files_are_found_when_cpu_0_is_offline() {
        let dir = tempfile::tempdir().unwrap();
        let cpu_dir = dir.path().join("sys/devices/system/cpu");
        // arm64 has `regs/identification` for online CPUs only.
        for id in 1..10 {
            let regs = cpu_dir.join(format!("cpu{id}/regs/identification"));
            std::fs::create_dir_all(&regs).unwrap();
            let midr = if id < 5 {
                "0x00000000412fd050"
            } else {
                "0x00000000414fd411"
            };
            std::fs::write(regs.join("midr_el1"), format!("{midr}\n")).unwrap();
        }
        let types = assigned(dir.path(), &mut cpus(10, false));
        use CoreType::{Efficiency, Performance, Standard};
        assert_eq!(
            types[..5],
            [Standard, Efficiency, Efficiency, Efficiency, Efficiency]
        );
        assert_eq!(types[5..], [Performance; 5]);
    }

    proptest::proptest! {
        #[test]
        fn cpuinfo_never_panics(text in "[a-zA-Z :\\t\\n0-9x]{0,300}") {
            let _ = midrs_of_cpuinfo(&text);
        }
    }
}
