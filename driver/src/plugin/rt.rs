//! Real-time CPU bandwidth (the idea behind the RT-DRA driver): a claim on an `rt-<group>` device
//! consumes `rtBandwidth` capacity (CPUs' worth, e.g. `300m`), and its `RtConfig` says how the workload
//! uses it: `tasks` SCHED_DEADLINE threads of `runtimeUs` every `periodUs`. Prepare places each task on
//! a CPU of the group with the kernel's admission rule per CPU (the bandwidth of the tasks on a CPU, over
//! all claims, at most `sched_rt_runtime_us / sched_rt_period_us`), worst-fit (the CPU with the most
//! bandwidth left, so load spreads), never on a CPU another claim holds exclusively; the placement is
//! checkpointed and passed to the container as environment variables.

use std::collections::BTreeMap;

use super::claims::FieldError;

/// Bandwidth in millionths of a CPU.
pub type Ppm = u64;

/// The kernel's RT bandwidth limit (`/proc/sys/kernel/sched_rt_{runtime,period}_us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtLimit {
    /// `sched_rt_runtime_us`; -1 means no limit.
    pub runtime_us: i64,
    /// `sched_rt_period_us`.
    pub period_us: u64,
}

impl RtLimit {
    /// Reads the limit under `root` (`proc/sys/kernel/`, inside the root as every attribute);
    /// None when the files are missing or odd.
    pub fn read(root: &std::path::Path) -> Option<RtLimit> {
        let tree = backends::sysfs::tree::Tree::open(&backends::SysfsRoot::new(root));
        let read = |name: &str| {
            let path = tree.join("proc/sys/kernel").join(name);
            tree.read_trimmed(&path).ok()
        };
        let runtime_us = read("sched_rt_runtime_us")?.parse().ok()?;
        let period_us: u64 = read("sched_rt_period_us")?.parse().ok()?;
        (period_us > 0 && runtime_us >= -1).then_some(RtLimit {
            runtime_us,
            period_us,
        })
    }

    /// The bandwidth one CPU may give to real-time tasks.
    pub fn per_cpu(&self) -> Ppm {
        match u64::try_from(self.runtime_us) {
            // In u128: a captured tree's values may be anything (the kernel's are at most i32).
            Ok(runtime) => {
                let ppm = u128::from(runtime.min(self.period_us)) * 1_000_000
                    / u128::from(self.period_us);
                u64::try_from(ppm).unwrap_or(1_000_000)
            }
            Err(_) => 1_000_000,
        }
    }
}

/// How the workload uses its RT bandwidth (`kind: RtConfig`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtConfig {
    /// SCHED_DEADLINE runtime of each task, in microseconds.
    pub runtime_us: u64,
    /// Its period (and deadline), in microseconds.
    pub period_us: u64,
    /// How many such tasks (threads); each gets a CPU.
    #[serde(default = "one")]
    pub tasks: u32,
}

fn one() -> u32 {
    1
}

impl RtConfig {
    /// The limits the kernel puts on SCHED_DEADLINE parameters (runtime ≥ 1024 ns, runtime ≤ period,
    /// period ≥ 100 µs and ≤ 4 s, the defaults of `sched_deadline_period_{min,max}_us`), and a sane task
    /// count. Errors are `field: problem`.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.runtime_us < 2 {
            return Err(FieldError::new(
                "runtimeUs",
                "must be at least 2 (the kernel wants 1024 ns)",
            ));
        }
        if self.period_us < 100 {
            let problem = format!("{}; at least 100", self.period_us);
            return Err(FieldError::new("periodUs", problem));
        }
        if self.runtime_us > self.period_us {
            let problem = format!(
                "{} is longer than periodUs {}",
                self.runtime_us, self.period_us
            );
            return Err(FieldError::new("runtimeUs", problem));
        }
        if self.period_us > 4_000_000 {
            let problem = format!("{}; at most 4000000 (4 s)", self.period_us);
            return Err(FieldError::new("periodUs", problem));
        }
        if !(1..=256).contains(&self.tasks) {
            return Err(FieldError::new(
                "tasks",
                format!("{}; 1 to 256", self.tasks),
            ));
        }
        Ok(())
    }

    /// One task's bandwidth, rounded up.
    pub fn task_bandwidth(&self) -> Ppm {
        (self.runtime_us * 1_000_000).div_ceil(self.period_us.max(1))
    }
}

/// One placed task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtTask {
    /// Its CPU.
    pub cpu: u32,
    /// Runtime, µs.
    pub runtime_us: u64,
    /// Period, µs.
    pub period_us: u64,
}

impl RtTask {
    fn bandwidth(&self) -> Ppm {
        (self.runtime_us * 1_000_000).div_ceil(self.period_us.max(1))
    }
}

/// Why a claim's RT tasks could not be placed; the message names the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The tasks need more bandwidth than the scheduler gave the claim: the claim is wrong.
    #[error(
        "{device}: RtConfig asks for {tasks} tasks of {runtime_us}/{period_us} µs ({total} ppm of a CPU), the claim consumes {consumed} ppm of rtBandwidth"
    )]
    OverConsumed {
        /// The `rt-<group>` device.
        device: String,
        /// Tasks asked.
        tasks: u32,
        /// Runtime of each, µs.
        runtime_us: u64,
        /// Period, µs.
        period_us: u64,
        /// Their bandwidth, ppm.
        total: Ppm,
        /// What the claim consumes, ppm.
        consumed: Ppm,
    },
    /// No CPU of the group has the bandwidth left for a task (other claims hold it).
    #[error(
        "{device}: no CPU of {cpus} has {each} ppm of RT bandwidth left for task {task} (at most {limit} ppm per CPU; the kernel would refuse SCHED_DEADLINE admission)"
    )]
    NoRoom {
        /// The `rt-<group>` device.
        device: String,
        /// The CPUs tried.
        cpus: hal::CpuSet,
        /// One task's bandwidth, ppm.
        each: Ppm,
        /// The index of the task that found no CPU.
        task: usize,
        /// The limit per CPU, ppm.
        limit: Ppm,
    },
}

/// Places `config`'s tasks on `cpus` (the group's CPUs no other claim holds exclusively), given the
/// tasks other claims already placed: worst-fit, each CPU within `limit` per CPU. `consumed` is the
/// `rtBandwidth` the scheduler gave the claim (ppm); the tasks must fit in it.
pub fn place(
    config: &RtConfig,
    cpus: &hal::CpuSet,
    others: &[RtTask],
    limit: Ppm,
    consumed: Option<Ppm>,
    device: &str,
) -> Result<Vec<RtTask>, PlaceError> {
    let each = config.task_bandwidth();
    // The claim's total, rounded once (each task's share rounded up would add a ppm per task).
    let total = (u128::from(config.runtime_us) * 1_000_000 * u128::from(config.tasks))
        .div_ceil(u128::from(config.period_us.max(1)));
    let total = u64::try_from(total).unwrap_or(u64::MAX);
    if let Some(consumed) = consumed
        && total > consumed
    {
        return Err(PlaceError::OverConsumed {
            device: device.to_owned(),
            tasks: config.tasks,
            runtime_us: config.runtime_us,
            period_us: config.period_us,
            total,
            consumed,
        });
    }
    let mut used: BTreeMap<u32, Ppm> = cpus.iter().map(|c| (c, 0)).collect();
    for task in others {
        if let Some(u) = used.get_mut(&task.cpu) {
            *u += task.bandwidth();
        }
    }
    let mut placed = Vec::new();
    for _ in 0..config.tasks {
        // The CPU with the most bandwidth left; the lowest id among equals.
        let best = used
            .iter()
            .filter(|(_, u)| **u + each <= limit)
            .min_by_key(|(cpu, u)| (**u, **cpu))
            .map(|(cpu, _)| *cpu);
        let Some(cpu) = best else {
            return Err(PlaceError::NoRoom {
                device: device.to_owned(),
                cpus: cpus.clone(),
                each,
                task: placed.len(),
                limit,
            });
        };
        if let Some(u) = used.get_mut(&cpu) {
            *u += each;
        }
        placed.push(RtTask {
            cpu,
            runtime_us: config.runtime_us,
            period_us: config.period_us,
        });
    }
    Ok(placed)
}

/// The environment of a claim's RT tasks: `DRA_RT_RUNTIME_US`, `DRA_RT_PERIOD_US`, `DRA_RT_CPUS` (the
/// distinct CPUs, a cpulist) and `DRA_RT_TASK_CPUS` (task i's CPU, comma-separated in task order).
pub fn env(tasks: &[RtTask]) -> Vec<String> {
    let Some(first) = tasks.first() else {
        return Vec::new();
    };
    let cpus: hal::CpuSet = tasks.iter().map(|t| t.cpu).collect();
    let order: Vec<String> = tasks.iter().map(|t| t.cpu.to_string()).collect();
    vec![
        format!("DRA_RT_RUNTIME_US={}", first.runtime_us),
        format!("DRA_RT_PERIOD_US={}", first.period_us),
        format!("DRA_RT_CPUS={}", cpus.to_cpulist()),
        format!("DRA_RT_TASK_CPUS={}", order.join(",")),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(runtime_us: u64, period_us: u64, tasks: u32) -> RtConfig {
        RtConfig {
            runtime_us,
            period_us,
            tasks,
        }
    }

    #[test]
    fn the_limit_is_the_kernels_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("proc/sys/kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(kernel.join("sched_rt_runtime_us"), "950000\n").unwrap();
        std::fs::write(kernel.join("sched_rt_period_us"), "1000000\n").unwrap();
        let limit = RtLimit::read(dir.path()).unwrap();
        assert_eq!(limit.per_cpu(), 950_000);
        // Values a kernel would not take (at most i32): no overflow.
        let huge = "100000000000000\n";
        std::fs::write(kernel.join("sched_rt_runtime_us"), huge).unwrap();
        std::fs::write(kernel.join("sched_rt_period_us"), huge).unwrap();
        assert_eq!(RtLimit::read(dir.path()).unwrap().per_cpu(), 1_000_000);
        std::fs::write(kernel.join("sched_rt_period_us"), "1000000\n").unwrap();
        std::fs::write(kernel.join("sched_rt_runtime_us"), "-1\n").unwrap();
        assert_eq!(RtLimit::read(dir.path()).unwrap().per_cpu(), 1_000_000);
        std::fs::write(kernel.join("sched_rt_period_us"), "0\n").unwrap();
        assert_eq!(RtLimit::read(dir.path()), None);
        assert_eq!(RtLimit::read(&dir.path().join("nothing")), None);

        // A tree whose `proc` links to another directory (the host's /proc, a secret): looked up
        // inside the tree, where there is nothing.
        let tree = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path().join("proc"), tree.path().join("proc")).unwrap();
        std::fs::write(kernel.join("sched_rt_period_us"), "1000000\n").unwrap();
        assert!(RtLimit::read(dir.path()).is_some());
        assert_eq!(RtLimit::read(tree.path()), None);
    }

    #[test]
    fn worst_fit_spreads_tasks_and_respects_other_claims() {
        let cpus = hal::CpuSet::from_cpulist("4-7").unwrap();
        let others = [RtTask {
            cpu: 4,
            runtime_us: 500,
            period_us: 1000,
        }];
        let placed = place(&config(300, 1000, 4), &cpus, &others, 950_000, None, "rt").unwrap();
        let on: Vec<u32> = placed.iter().map(|t| t.cpu).collect();
        // The idle CPUs first, then the least used (5 at 300k, not 4 at 500k).
        assert_eq!(on, [5, 6, 7, 5]);
        let mut all = others.to_vec();
        all.extend(placed);
        let next = place(&config(200, 1000, 1), &cpus, &all, 950_000, None, "rt").unwrap();
        assert_eq!(next[0].cpu, 6, "4 has 500k, 5 has 600k, 6 and 7 300k");
    }

    #[test]
    fn admission_fails_closed_with_the_numbers() {
        let cpus = hal::CpuSet::from_cpulist("0-1").unwrap();
        let error = place(
            &config(600, 1000, 3),
            &cpus,
            &[],
            950_000,
            None,
            "rt-numa-0",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("no CPU of 0-1 has 600000 ppm of RT bandwidth left for task 2"),
            "{error}"
        );
        let error = place(
            &config(600, 1000, 2),
            &cpus,
            &[],
            950_000,
            Some(1_000_000),
            "rt-numa-0",
        )
        .unwrap_err();
        assert!(matches!(error, PlaceError::OverConsumed { .. }), "{error}");
        let error = error.to_string();
        assert!(error.contains("the claim consumes 1000000 ppm"), "{error}");
    }

    #[test]
    fn configs_are_checked() {
        let field = |c: RtConfig| c.check().unwrap_err().field;
        assert!(config(100, 1000, 1).check().is_ok());
        assert_eq!(field(config(0, 1000, 1)), "runtimeUs");
        assert_eq!(
            field(config(1, 1000, 1)),
            "runtimeUs",
            "1 µs is under the kernel's 1024 ns"
        );
        assert_eq!(field(config(2000, 1000, 1)), "runtimeUs");
        assert_eq!(field(config(2, 50, 1)), "periodUs");
        assert_eq!(field(config(2, 5_000_000, 1)), "periodUs");
        assert_eq!(field(config(2, 1000, 0)), "tasks");
    }

    #[test]
    fn a_claims_total_is_rounded_once() {
        // Three tasks of a third of a CPU are one CPU, not a ppm more per task.
        let cpus = hal::CpuSet::from_cpulist("0-3").unwrap();
        assert!(
            place(
                &config(1000, 3000, 3),
                &cpus,
                &[],
                950_000,
                Some(1_000_000),
                "rt"
            )
            .is_ok()
        );
    }

    #[test]
    fn env_names_every_task() {
        let tasks = [
            RtTask {
                cpu: 5,
                runtime_us: 300,
                period_us: 1000,
            },
            RtTask {
                cpu: 3,
                runtime_us: 300,
                period_us: 1000,
            },
        ];
        assert_eq!(
            env(&tasks),
            [
                "DRA_RT_RUNTIME_US=300",
                "DRA_RT_PERIOD_US=1000",
                "DRA_RT_CPUS=3,5",
                "DRA_RT_TASK_CPUS=5,3"
            ]
        );
    }
}
