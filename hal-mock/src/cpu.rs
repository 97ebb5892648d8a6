//! [`CpuLayout`]: a CPU/NUMA description and its rendering into `sys/devices/system/{cpu,node}`.

use std::fs;
use std::io;
use std::path::Path;

use hal::{CoreType, CpuSet};

/// Instruction-set family; decides which files the kernel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64: `die_id`, `cluster_id`, cache ids; Intel hybrid PMU lists.
    X86,
    /// arm64: `die_id` is -1, `cpu_capacity` and MIDR registers per CPU.
    Arm64,
}

/// A machine's CPUs and NUMA nodes, described the way a datasheet does.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLayout {
    /// Instruction-set family.
    pub arch: Arch,
    /// Sockets.
    pub packages: u32,
    /// Big (or all) cores per package.
    pub cores_per_package: u32,
    /// SMT threads per big core.
    pub threads_per_core: u32,
    /// Single-threaded little cores per package (Intel E-cores), numbered after the big cores' threads.
    pub efficiency_cores_per_package: u32,
    /// L3 instances per package (AMD CCDs; 1 on Intel and Grace).
    pub l3_per_package: u32,
    /// NUMA nodes with CPUs per package (sub-NUMA clustering); 0 for a kernel without NUMA.
    pub nodes_per_package: u32,
    /// Memory of each CPU node, in GiB.
    pub memory_per_node_gib: u64,
    /// Distance between CPU nodes of different packages (10 is local, 11-12 within a package).
    pub remote_distance: u32,
    /// CPUs that are offline (their `topology/` and `cache/` directories vanish, as on real kernels).
    #[serde(default)]
    pub offline: Vec<u32>,
    /// CPU lists and masks end with `\n\0` instead of `\n`, as some arm64 kernels of the 5.14/5.15 era
    /// print them (hwloc's 128-CPU arm dump has them).
    #[serde(default)]
    pub nul_terminated_sets: bool,
}

/// What discovery must report for one CPU of a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedCpu {
    /// OS id.
    pub id: u32,
    /// Package.
    pub package: u32,
    /// Core id within the package.
    pub core: u32,
    /// CPU node, if the layout has NUMA.
    pub numa_node: Option<u32>,
    /// L3 instance (global index).
    pub l3: u32,
    /// Core type.
    pub core_type: CoreType,
    /// SMT siblings.
    pub siblings: CpuSet,
}

impl CpuLayout {
    fn total_cores(&self) -> u32 {
        self.packages * self.cores_per_package
    }

    /// Every CPU with its place, numbered as Linux on x86 does: first threads of all big cores
    /// (package by package), then second threads, then the little cores.
    pub fn expected(&self) -> Vec<ExpectedCpu> {
        let mut cpus = Vec::new();
        let total = self.total_cores();
        let per_node = |package: u32, core: u32| {
            (self.nodes_per_package > 0).then(|| {
                package * self.nodes_per_package
                    + core * self.nodes_per_package / self.cores_per_package.max(1)
            })
        };
        let l3_of = |package: u32, core: u32, cores: u32| {
            package * self.l3_per_package + core * self.l3_per_package / cores.max(1)
        };
        for thread in 0..self.threads_per_core {
            for global_core in 0..total {
                let (package, core) = (
                    global_core / self.cores_per_package,
                    global_core % self.cores_per_package,
                );
                let siblings = (0..self.threads_per_core)
                    .map(|t| t * total + global_core)
                    .collect();
                let hybrid = self.efficiency_cores_per_package > 0;
                cpus.push(ExpectedCpu {
                    id: thread * total + global_core,
                    package,
                    core,
                    numa_node: per_node(package, core),
                    l3: l3_of(package, core, self.cores_per_package),
                    core_type: if hybrid {
                        CoreType::Performance
                    } else {
                        CoreType::Standard
                    },
                    siblings,
                });
            }
        }
        let first_little = total * self.threads_per_core;
        for package in 0..self.packages {
            for little in 0..self.efficiency_cores_per_package {
                let id = first_little + package * self.efficiency_cores_per_package + little;
                cpus.push(ExpectedCpu {
                    id,
                    package,
                    core: self.cores_per_package + little,
                    numa_node: per_node(package, 0),
                    l3: l3_of(package, 0, 1),
                    core_type: CoreType::Efficiency,
                    siblings: std::iter::once(id).collect(),
                });
            }
        }
        cpus.sort_by_key(|c| c.id);
        cpus
    }

    /// Writes a CPU list or mask file, ended as [`CpuLayout::nul_terminated_sets`] says.
    fn write_set(&self, path: &Path, text: &str) -> io::Result<()> {
        match self.nul_terminated_sets {
            true => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::write(path, format!("{text}\n\0"))
            }
            false => write(path, text),
        }
    }

    fn cpu_node_count(&self) -> u32 {
        self.packages * self.nodes_per_package
    }

    /// Writes `sys/devices/system/cpu`, `sys/devices/system/node` and the hybrid PMU lists under `root`.
    pub fn render(&self, root: &Path) -> io::Result<()> {
        let cpus = self.expected();
        let all: CpuSet = cpus.iter().map(|c| c.id).collect();
        let offline: CpuSet = self.offline.iter().copied().collect();
        let online = all.difference(&offline);
        let nr = all.last().map_or(1, |l| l + 1);
        let cpu_dir = root.join("sys/devices/system/cpu");
        self.write_set(&cpu_dir.join("online"), &online.to_cpulist())?;
        self.write_set(&cpu_dir.join("possible"), &all.to_cpulist())?;
        self.write_set(&cpu_dir.join("present"), &all.to_cpulist())?;
        self.write_set(&cpu_dir.join("offline"), &offline.to_cpulist())?;
        write(&cpu_dir.join("kernel_max"), &(nr - 1).to_string())?;
        // SMT as x86 kernels (and arm64 ones with HOTPLUG_SMT) show it: `control` says whether the
        // hardware has it, `active` whether a core has two threads online.
        let smt = cpus.iter().any(|c| c.siblings.len() > 1);
        let smt_active = cpus
            .iter()
            .any(|c| c.siblings.intersection(&online).len() > 1);
        write(
            &cpu_dir.join("smt/control"),
            if smt { "on" } else { "notsupported" },
        )?;
        write(
            &cpu_dir.join("smt/active"),
            if smt_active { "1" } else { "0" },
        )?;

        for cpu in &cpus {
            let dir = cpu_dir.join(format!("cpu{}", cpu.id));
            fs::create_dir_all(&dir)?;
            if cpu.id != 0 {
                write(
                    &dir.join("online"),
                    if offline.contains(cpu.id) { "0" } else { "1" },
                )?;
            }
            if offline.contains(cpu.id) {
                continue;
            }
            let package_cpus: CpuSet = cpus
                .iter()
                .filter(|c| c.package == cpu.package)
                .map(|c| c.id)
                .collect();
            let topo = dir.join("topology");
            write(&topo.join("physical_package_id"), &cpu.package.to_string())?;
            write(&topo.join("core_id"), &cpu.core.to_string())?;
            self.write_set(&topo.join("core_cpus_list"), &cpu.siblings.to_cpulist())?;
            self.write_set(&topo.join("core_cpus"), &cpu.siblings.to_hex_mask(nr))?;
            self.write_set(
                &topo.join("thread_siblings_list"),
                &cpu.siblings.to_cpulist(),
            )?;
            self.write_set(&topo.join("thread_siblings"), &cpu.siblings.to_hex_mask(nr))?;
            self.write_set(&topo.join("package_cpus_list"), &package_cpus.to_cpulist())?;
            self.write_set(&topo.join("core_siblings_list"), &package_cpus.to_cpulist())?;
            match self.arch {
                Arch::X86 => {
                    // One die per package.
                    write(&topo.join("die_id"), "0")?;
                    self.write_set(&topo.join("die_cpus_list"), &package_cpus.to_cpulist())?;
                    write(&topo.join("cluster_id"), &cpu.core.to_string())?;
                }
                Arch::Arm64 => {
                    // No dies on arm64: -1, and a die of the CPU alone (as a Graviton2 shows).
                    write(&topo.join("die_id"), "-1")?;
                    self.write_set(&topo.join("die_cpus_list"), &cpu.id.to_string())?;
                    write(&dir.join("cpu_capacity"), "1024")?;
                    write(
                        &dir.join("regs/identification/midr_el1"),
                        "0x00000000410fd4f0",
                    )?;
                }
            }
            let l3_cpus: CpuSet = cpus
                .iter()
                .filter(|c| c.l3 == cpu.l3)
                .map(|c| c.id)
                .collect();
            self.render_caches(&dir.join("cache"), cpu, &l3_cpus, nr)?;
        }

        if self.efficiency_cores_per_package > 0 {
            let of_type = |t: CoreType| -> CpuSet {
                cpus.iter()
                    .filter(|c| c.core_type == t)
                    .map(|c| c.id)
                    .collect()
            };
            self.write_set(
                &root.join("sys/devices/cpu_core/cpus"),
                &of_type(CoreType::Performance).to_cpulist(),
            )?;
            self.write_set(
                &root.join("sys/devices/cpu_atom/cpus"),
                &of_type(CoreType::Efficiency).to_cpulist(),
            )?;
        }
        if self.arch == Arch::Arm64 {
            write(&root.join("proc/cpuinfo"), &arm64_cpuinfo(&online))?;
        }
        self.render_nodes(root, &cpus, nr)
    }

    fn render_caches(
        &self,
        dir: &Path,
        cpu: &ExpectedCpu,
        l3_cpus: &CpuSet,
        nr: u32,
    ) -> io::Result<()> {
        let levels = [
            (1, "Data", "48K", &cpu.siblings),
            (1, "Instruction", "32K", &cpu.siblings),
            (2, "Unified", "2048K", &cpu.siblings),
            (3, "Unified", "107520K", l3_cpus),
        ];
        for (index, (level, kind, size, shared)) in levels.into_iter().enumerate() {
            let index_dir = dir.join(format!("index{index}"));
            write(&index_dir.join("level"), &level.to_string())?;
            write(&index_dir.join("type"), kind)?;
            write(&index_dir.join("size"), size)?;
            self.write_set(&index_dir.join("shared_cpu_list"), &shared.to_cpulist())?;
            self.write_set(&index_dir.join("shared_cpu_map"), &shared.to_hex_mask(nr))?;
            let id = if level == 3 {
                cpu.l3
            } else {
                cpu.package * 1000 + cpu.core
            };
            write(&index_dir.join("id"), &id.to_string())?;
        }
        Ok(())
    }

    fn render_nodes(&self, root: &Path, cpus: &[ExpectedCpu], nr: u32) -> io::Result<()> {
        let nodes = self.cpu_node_count();
        if nodes == 0 {
            return Ok(());
        }
        let node_dir = root.join("sys/devices/system/node");
        let all_nodes: CpuSet = (0..nodes).collect();
        for file in ["online", "possible", "has_cpu", "has_memory"] {
            self.write_set(&node_dir.join(file), &all_nodes.to_cpulist())?;
        }
        let package_of_node = |node: u32| node / self.nodes_per_package.max(1);
        for node in 0..nodes {
            let dir = node_dir.join(format!("node{node}"));
            let node_cpus: CpuSet = cpus
                .iter()
                .filter(|c| c.numa_node == Some(node))
                .map(|c| c.id)
                .collect();
            self.write_set(&dir.join("cpulist"), &node_cpus.to_cpulist())?;
            self.write_set(&dir.join("cpumap"), &node_cpus.to_hex_mask(nr))?;
            let kib = self.memory_per_node_gib << 20;
            let meminfo = format!(
                "Node {node} MemTotal:       {kib} kB\nNode {node} MemFree:        {} kB\n",
                kib / 2
            );
            write(&dir.join("meminfo"), &meminfo)?;
            let row: Vec<String> = (0..nodes)
                .map(|other| {
                    match (
                        node == other,
                        package_of_node(node) == package_of_node(other),
                    ) {
                        (true, _) => 10,
                        (false, true) => 12,
                        (false, false) => self.remote_distance,
                    }
                })
                .map(|d| d.to_string())
                .collect();
            write(&dir.join("distance"), &row.join(" "))?;
        }
        Ok(())
    }
}

fn write(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, format!("{contents}\n"))
}

/// arm64's /proc/cpuinfo for the online CPUs, Neoverse V2 cores (Grace: MIDR 0x410fd4f0, as each
/// CPU's `midr_el1` says) as the kernel prints them: one block per CPU, a blank line after each. The
/// `Features` line is the V2's set as a recent kernel names it, for realism; nothing reads it.
fn arm64_cpuinfo(online: &CpuSet) -> String {
    online
        .iter()
        .map(|id| {
            format!(
                "processor\t: {id}\nBogoMIPS\t: 2000.00\n\
                 Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid \
                 asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat \
                 ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 \
                 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti\n\
                 CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n\
                 CPU part\t: 0xd4f\nCPU revision\t: 0\n\n"
            )
        })
        .collect()
}
