//! Core types: Intel hybrid PMU lists, arm `cpu_capacity`, arm MIDR part numbers.

use std::path::{Path, PathBuf};

use hal::{CoreType, CpuSet, LogicalCpu, ParseError};

use super::SysfsRoot;
use super::attr::{ErrorLog, parse_optional, parse_scalar};
use super::cpu::{PARALLEL_FROM_CPUS, in_threads};

/// Intel hybrid PMU lists first, then arm `cpu_capacity`, then arm MIDR part numbers.
pub(crate) fn assign_core_types(
    root: &SysfsRoot,
    cpu_dir: &Path,
    cpus: &mut [LogicalCpu],
    errors: &mut ErrorLog,
    threads: usize,
) {
    let p_cores = errors.keep(parse_optional(
        &root.join("sys/devices/cpu_core/cpus"),
        CpuSet::from_cpulist,
    ));
    let e_cores = errors.keep(parse_optional(
        &root.join("sys/devices/cpu_atom/cpus"),
        CpuSet::from_cpulist,
    ));
    if p_cores.is_some() || e_cores.is_some() {
        let (p_cores, e_cores) = (p_cores.unwrap_or_default(), e_cores.unwrap_or_default());
        for cpu in cpus.iter_mut() {
            if p_cores.contains(cpu.id) {
                cpu.core_type = CoreType::Performance;
            } else if e_cores.contains(cpu.id) {
                cpu.core_type = CoreType::Efficiency;
            }
        }
        return;
    }
    let per_cpu = |errors: &mut ErrorLog,
                   relative: &str,
                   parse: fn(&str) -> Result<u64, ParseError>|
     -> Vec<Option<u64>> {
        // The attribute is arch-wide (every CPU device has it, or none does): look at the first CPU
        // before opening one file per CPU.
        let first = cpus
            .first()
            .map(|c| cpu_dir.join(format!("cpu{}", c.id)).join(relative));
        if !first.is_some_and(|p| p.exists()) {
            return vec![None; cpus.len()];
        }
        let ids: Vec<u32> = cpus.iter().map(|c| c.id).collect();
        let read = |ids: &[u32]| -> (Vec<Option<u64>>, ErrorLog) {
            let mut errors = ErrorLog::default();
            let values = ids
                .iter()
                .map(|id| {
                    let path: PathBuf = cpu_dir.join(format!("cpu{id}")).join(relative);
                    errors.keep(parse_scalar(&path, parse))
                })
                .collect();
            (values, errors)
        };
        // One file per CPU: big machines are read by several threads, in contiguous chunks merged
        // in order.
        let parts: Vec<Vec<u32>> = match ids.len() < PARALLEL_FROM_CPUS || threads < 2 {
            true => vec![ids.clone()],
            false => ids
                .chunks(ids.len().div_ceil(threads))
                .map(<[u32]>::to_vec)
                .collect(),
        };
        let parts = in_threads(&parts, read);
        let mut values = Vec::with_capacity(ids.len());
        for (part, log) in parts {
            values.extend(part);
            errors.0.extend(log.0);
        }
        values
    };
    let capacities = per_cpu(errors, "cpu_capacity", parse_capacity);
    if let Some(kinds) = classify_by_capacity(&capacities) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
        return;
    }
    let midrs = per_cpu(errors, "regs/identification/midr_el1", parse_hex_u64);
    if let Some(kinds) = classify_by_midr(&midrs) {
        cpus.iter_mut()
            .zip(kinds)
            .for_each(|(cpu, kind)| cpu.core_type = kind);
    }
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

/// big.LITTLE by `cpu_capacity`: the lowest capacity is "efficiency", every higher one "performance"
/// (so the middle cluster of a tri-cluster DynamIQ part counts as big). `None` when all are equal or
/// none is known.
pub fn classify_by_capacity(capacities: &[Option<u64>]) -> Option<Vec<CoreType>> {
    let known = capacities.iter().flatten();
    let (min, max) = (known.clone().min()?, known.max()?);
    if min == max {
        return None;
    }
    Some(
        capacities
            .iter()
            .map(|c| match c {
                Some(c) if c == min => CoreType::Efficiency,
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
}
