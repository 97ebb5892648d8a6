//! [`CpuLayout`]: a CPU/NUMA description and its rendering into `sys/devices/system/{cpu,node}`.

use std::collections::BTreeMap;
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
    /// x86 APIC ids of the CPUs in Linux's CPU order (the `apicid` lines of the real machine's
    /// `/proc/cpuinfo`), for a fixture whose numbering must be the real one: the kernel derives
    /// `core_id`, `cluster_id`, the SMT siblings and the cache ids from them (see
    /// [`CpuLayout::expected`]). Empty: numbered as Linux numbers a server whose firmware lists every
    /// core's first thread before the second threads, with core ids 0, 1, ... per package. Modelled
    /// for one package: `core_id` is the APIC id without its SMT bits.
    #[serde(default)]
    pub apic_ids: Vec<u32>,
    /// With `apic_ids`: how many low APIC-id bits one L2 spans (log2 of CPUID leaf 4's count of ids
    /// sharing it). CPUs whose ids agree above them share an L2 and a `cluster_id` (the id with those
    /// bits cleared). 3 on Alder and Raptor Lake: a P-core's two threads, or four E-cores, share one.
    #[serde(default)]
    pub l2_apic_bits: u32,
    /// Cache sizes as `cache/index*/size` prints them; nothing reads them, they are there for
    /// realism. Default: a Sapphire Rapids core's.
    #[serde(default)]
    pub cache_sizes: CacheSizes,
}

/// The `size` of each cache a CPU shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSizes {
    /// L1 data, L1 instruction and L2 of a big (or every) core.
    pub big: [String; 3],
    /// L1 data, L1 instruction and L2 of a little core (an L2 shared by its cluster).
    pub little: [String; 3],
    /// L3.
    pub l3: String,
}

impl Default for CacheSizes {
    fn default() -> Self {
        let big = ["48K", "32K", "2048K"].map(str::to_owned);
        CacheSizes {
            little: big.clone(),
            big,
            l3: "107520K".to_owned(),
        }
    }
}

/// What discovery must report for one CPU of a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedCpu {
    /// OS id.
    pub id: u32,
    /// Package.
    pub package: u32,
    /// Core id within the package (`core_id`).
    pub core: u32,
    /// `cluster_id` (x86 only: arm64 fixtures do not render it).
    pub cluster: Option<u32>,
    /// CPU node, if the layout has NUMA.
    pub numa_node: Option<u32>,
    /// L3 instance (global index).
    pub l3: u32,
    /// Core type.
    pub core_type: CoreType,
    /// SMT siblings as the kernel lists them: the online threads of the CPU's core (a thread taken
    /// offline leaves its siblings' lists). An offline CPU has no list of its own; discovery reports
    /// none for it.
    pub siblings: CpuSet,
}

/// One CPU where the hardware puts it, before the kernel leaves offline CPUs out of its lists.
#[derive(Debug, Clone)]
struct Placed {
    id: u32,
    package: u32,
    /// The kernel's `core_id`.
    core: u32,
    /// The kernel's `cluster_id` (x86): CPUs of a package with the same one share an L2.
    cluster: u32,
    numa_node: Option<u32>,
    l3: u32,
    core_type: CoreType,
    /// The core's hardware threads, offline ones included.
    threads: CpuSet,
    /// The cache `id` of its L1 (shared by its core's threads).
    l1_id: u32,
    /// The cache `id` of its L2: CPUs with the same one share it.
    l2_id: u32,
}

impl CpuLayout {
    fn total_cores(&self) -> u32 {
        self.packages * self.cores_per_package
    }

    /// Whether the description holds together: `apic_ids` names every CPU once, and its L2 bits fit.
    pub fn check(&self) -> Result<(), String> {
        let count = self.cpu_count() as usize;
        if !self.apic_ids.is_empty() {
            if self.apic_ids.len() != count {
                return Err(format!(
                    "apic_ids has {} entries for {count} CPUs",
                    self.apic_ids.len()
                ));
            }
            let distinct: std::collections::BTreeSet<u32> = self.apic_ids.iter().copied().collect();
            if distinct.len() != count {
                return Err("apic_ids repeats an id".to_owned());
            }
            if self.packages != 1 {
                return Err("apic_ids are modelled for one package".to_owned());
            }
            // The big cores' threads: `threads_per_core` CPUs per core, `cores_per_package` cores.
            let smt_bits = self.smt_bits();
            let mut cores: std::collections::BTreeMap<u32, u32> = Default::default();
            let big = (self.total_cores() * self.threads_per_core) as usize;
            for apic in self.apic_ids.iter().take(big) {
                *cores.entry(apic >> smt_bits).or_default() += 1;
            }
            if cores.len() != self.total_cores() as usize
                || cores.values().any(|&t| t != self.threads_per_core)
            {
                return Err(format!(
                    "apic_ids of the big cores' CPUs make {} cores of {:?} threads",
                    cores.len(),
                    cores.values().collect::<std::collections::BTreeSet<_>>()
                ));
            }
        }
        if self.l2_apic_bits >= 16 {
            return Err(format!("l2_apic_bits {} is too large", self.l2_apic_bits));
        }
        Ok(())
    }

    /// The APIC-id bits that number a core's threads.
    fn smt_bits(&self) -> u32 {
        self.threads_per_core
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
    }

    fn cpu_count(&self) -> u32 {
        self.total_cores() * self.threads_per_core
            + self.packages * self.efficiency_cores_per_package
    }

    /// The CPUs that are not offline.
    fn online(&self) -> CpuSet {
        (0..self.cpu_count())
            .filter(|id| !self.offline.contains(id))
            .collect()
    }

    /// Every CPU where the hardware puts it. The big cores' threads come first, then the little
    /// cores. Without `apic_ids`, numbered as Linux on a server: first threads of all big cores
    /// (package by package), then second threads; core ids 0, 1, ... per package. With them, as the
    /// x86 kernel derives it from the APIC ids (`detect_extended_topology`, `cacheinfo`): threads whose
    /// ids differ only in the SMT bits share a core, `core_id` is the id without them, `cluster_id` the
    /// id with its L2 bits cleared, the L1 `id` the id without the SMT bits and the L2 `id` the id
    /// without the L2 bits.
    fn placed(&self) -> Vec<Placed> {
        let total = self.total_cores();
        let first_little = total * self.threads_per_core;
        let smt_bits = self.smt_bits();
        let l2_mask = (1u32 << self.l2_apic_bits) - 1;
        let apic = |id: u32| self.apic_ids.get(id as usize).copied();
        let per_node = |package: u32, core: u32| {
            (self.nodes_per_package > 0).then(|| {
                package * self.nodes_per_package
                    + core * self.nodes_per_package / self.cores_per_package.max(1)
            })
        };
        let l3_of = |package: u32, core: u32, cores: u32| {
            package * self.l3_per_package + core * self.l3_per_package / cores.max(1)
        };
        // Each big CPU's core, as an index 0..total in order of the cores' first CPUs.
        let mut apic_cores: Vec<u32> = Vec::new();
        let big_core: Vec<u32> = (0..first_little)
            .map(|id| match apic(id) {
                None => id % total.max(1),
                Some(a) => {
                    let key = a >> smt_bits;
                    let index = apic_cores
                        .iter()
                        .position(|k| *k == key)
                        .unwrap_or_else(|| {
                            apic_cores.push(key);
                            apic_cores.len() - 1
                        });
                    index as u32
                }
            })
            .collect();
        let hybrid = self.efficiency_cores_per_package > 0;
        let mut cpus = Vec::new();
        for id in 0..self.cpu_count() {
            // (package, dense core index in the package, its hardware threads, core type)
            let (package, index, threads, core_type) = match big_core.get(id as usize) {
                Some(&global) => (
                    global / self.cores_per_package.max(1),
                    global % self.cores_per_package.max(1),
                    (0..first_little)
                        .filter(|&other| big_core.get(other as usize) == Some(&global))
                        .collect(),
                    if hybrid {
                        CoreType::Performance
                    } else {
                        CoreType::Standard
                    },
                ),
                None => {
                    let little = id - first_little;
                    let per_package = self.efficiency_cores_per_package.max(1);
                    (
                        little / per_package,
                        self.cores_per_package + little % per_package,
                        std::iter::once(id).collect(),
                        CoreType::Efficiency,
                    )
                }
            };
            let little = core_type == CoreType::Efficiency;
            let dense_id = package * 1000 + index;
            cpus.push(Placed {
                id,
                package,
                core: apic(id).map_or(index, |a| a >> smt_bits),
                cluster: apic(id).map_or(index, |a| a & !l2_mask),
                numa_node: per_node(package, if little { 0 } else { index }),
                l3: match little {
                    true => l3_of(package, 0, 1),
                    false => l3_of(package, index, self.cores_per_package),
                },
                core_type,
                threads,
                l1_id: apic(id).map_or(dense_id, |a| a >> smt_bits),
                l2_id: apic(id).map_or(dense_id, |a| a >> self.l2_apic_bits),
            });
        }
        cpus
    }

    /// Every CPU with what discovery must find for it (numbered as the field docs of `apic_ids` say).
    pub fn expected(&self) -> Vec<ExpectedCpu> {
        let online = self.online();
        self.placed()
            .into_iter()
            .map(|c| ExpectedCpu {
                id: c.id,
                package: c.package,
                core: c.core,
                cluster: (self.arch == Arch::X86).then_some(c.cluster),
                numa_node: c.numa_node,
                l3: c.l3,
                core_type: c.core_type,
                siblings: c.threads.intersection(&online),
            })
            .collect()
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
    /// An offline CPU keeps only `cpuN/online`, and the kernel leaves it out of every other CPU's
    /// lists (siblings, package, die, cluster, caches, node, PMU): `remove_siblinginfo`,
    /// `cache_shared_cpu_map_remove` and `numa_remove_cpu` take it out when it goes offline.
    pub fn render(&self, root: &Path) -> io::Result<()> {
        let cpus = self.placed();
        let all: CpuSet = cpus.iter().map(|c| c.id).collect();
        let online = self.online();
        let offline = all.difference(&online);
        let nr = all.last().map_or(1, |l| l + 1);
        let cpu_dir = root.join("sys/devices/system/cpu");
        self.write_set(&cpu_dir.join("online"), &online.to_cpulist())?;
        self.write_set(&cpu_dir.join("possible"), &all.to_cpulist())?;
        self.write_set(&cpu_dir.join("present"), &all.to_cpulist())?;
        self.write_set(&cpu_dir.join("offline"), &offline.to_cpulist())?;
        write(&cpu_dir.join("kernel_max"), &(nr - 1).to_string())?;
        // SMT as x86 kernels (and arm64 ones with HOTPLUG_SMT) show it: `control` says whether the
        // hardware has it, `active` whether a core has two threads online.
        let smt = cpus.iter().any(|c| c.threads.len() > 1);
        let smt_active = cpus
            .iter()
            .any(|c| c.threads.intersection(&online).len() > 1);
        write(
            &cpu_dir.join("smt/control"),
            if smt { "on" } else { "notsupported" },
        )?;
        write(
            &cpu_dir.join("smt/active"),
            if smt_active { "1" } else { "0" },
        )?;

        // The online CPUs of each package, cluster, L2 and L3.
        let group = |key: &dyn Fn(&Placed) -> (u32, u32)| -> BTreeMap<(u32, u32), CpuSet> {
            let mut groups: BTreeMap<(u32, u32), CpuSet> = BTreeMap::new();
            for c in cpus.iter().filter(|c| online.contains(c.id)) {
                groups.entry(key(c)).or_default().insert(c.id);
            }
            groups
        };
        let packages = group(&|c| (c.package, 0));
        let clusters = group(&|c| (c.package, c.cluster));
        let l2s = group(&|c| (c.l2_id, 0));
        let l3s = group(&|c| (c.l3, 0));
        let empty = CpuSet::new();
        for cpu in &cpus {
            let dir = cpu_dir.join(format!("cpu{}", cpu.id));
            fs::create_dir_all(&dir)?;
            if cpu.id != 0 {
                write(
                    &dir.join("online"),
                    if online.contains(cpu.id) { "1" } else { "0" },
                )?;
            }
            if !online.contains(cpu.id) {
                continue;
            }
            let siblings = cpu.threads.intersection(&online);
            let package_cpus = packages.get(&(cpu.package, 0)).unwrap_or(&empty);
            let topo = dir.join("topology");
            write(&topo.join("physical_package_id"), &cpu.package.to_string())?;
            write(&topo.join("core_id"), &cpu.core.to_string())?;
            self.write_set(&topo.join("core_cpus_list"), &siblings.to_cpulist())?;
            self.write_set(&topo.join("core_cpus"), &siblings.to_hex_mask(nr))?;
            self.write_set(&topo.join("thread_siblings_list"), &siblings.to_cpulist())?;
            self.write_set(&topo.join("thread_siblings"), &siblings.to_hex_mask(nr))?;
            self.write_set(&topo.join("package_cpus_list"), &package_cpus.to_cpulist())?;
            self.write_set(&topo.join("core_siblings_list"), &package_cpus.to_cpulist())?;
            match self.arch {
                Arch::X86 => {
                    // One die per package.
                    write(&topo.join("die_id"), "0")?;
                    self.write_set(&topo.join("die_cpus_list"), &package_cpus.to_cpulist())?;
                    write(&topo.join("cluster_id"), &cpu.cluster.to_string())?;
                    let cluster_cpus = clusters.get(&(cpu.package, cpu.cluster)).unwrap_or(&empty);
                    self.write_set(&topo.join("cluster_cpus_list"), &cluster_cpus.to_cpulist())?;
                    self.write_set(&topo.join("cluster_cpus"), &cluster_cpus.to_hex_mask(nr))?;
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
            let shared = CacheSharing {
                l1: &siblings,
                l2: l2s.get(&(cpu.l2_id, 0)).unwrap_or(&empty),
                l3: l3s.get(&(cpu.l3, 0)).unwrap_or(&empty),
            };
            self.render_caches(&dir.join("cache"), cpu, &shared, nr)?;
        }

        if self.efficiency_cores_per_package > 0 {
            // The PMUs' `cpus`: a CPU joins its PMU's list when it comes online and leaves it when it
            // goes offline (`intel_pmu_cpu_dead`).
            let of_type = |t: CoreType| -> CpuSet {
                cpus.iter()
                    .filter(|c| c.core_type == t && online.contains(c.id))
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
        self.render_nodes(root, &cpus, &online, nr)
    }

    fn render_caches(
        &self,
        dir: &Path,
        cpu: &Placed,
        shared: &CacheSharing<'_>,
        nr: u32,
    ) -> io::Result<()> {
        let sizes = &self.cache_sizes;
        let [l1d, l1i, l2] = match cpu.core_type {
            CoreType::Efficiency => &sizes.little,
            _ => &sizes.big,
        };
        let levels = [
            (1, "Data", l1d, shared.l1, cpu.l1_id),
            (1, "Instruction", l1i, shared.l1, cpu.l1_id),
            (2, "Unified", l2, shared.l2, cpu.l2_id),
            (3, "Unified", &sizes.l3, shared.l3, cpu.l3),
        ];
        for (index, (level, kind, size, shared, id)) in levels.into_iter().enumerate() {
            let index_dir = dir.join(format!("index{index}"));
            write(&index_dir.join("level"), &level.to_string())?;
            write(&index_dir.join("type"), kind)?;
            write(&index_dir.join("size"), size)?;
            self.write_set(&index_dir.join("shared_cpu_list"), &shared.to_cpulist())?;
            self.write_set(&index_dir.join("shared_cpu_map"), &shared.to_hex_mask(nr))?;
            write(&index_dir.join("id"), &id.to_string())?;
        }
        Ok(())
    }

    fn render_nodes(
        &self,
        root: &Path,
        cpus: &[Placed],
        online: &CpuSet,
        nr: u32,
    ) -> io::Result<()> {
        let nodes = self.cpu_node_count();
        if nodes == 0 {
            return Ok(());
        }
        let node_dir = root.join("sys/devices/system/node");
        let all_nodes: CpuSet = (0..nodes).collect();
        for file in ["online", "possible", "has_memory"] {
            self.write_set(&node_dir.join(file), &all_nodes.to_cpulist())?;
        }
        let with_cpus: CpuSet = cpus
            .iter()
            .filter(|c| online.contains(c.id))
            .filter_map(|c| c.numa_node)
            .collect();
        self.write_set(&node_dir.join("has_cpu"), &with_cpus.to_cpulist())?;
        let package_of_node = |node: u32| node / self.nodes_per_package.max(1);
        for node in 0..nodes {
            let dir = node_dir.join(format!("node{node}"));
            let node_cpus: CpuSet = cpus
                .iter()
                .filter(|c| c.numa_node == Some(node) && online.contains(c.id))
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

/// The online CPUs sharing each cache level of one CPU.
struct CacheSharing<'a> {
    l1: &'a CpuSet,
    l2: &'a CpuSet,
    l3: &'a CpuSet,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn read(root: &Path, relative: &str) -> String {
        let path = root.join("sys/devices/system").join(relative);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim_end()
            .to_owned()
    }

    /// What hwloc's `16em64t-4s2c2t-offlines` dump shows: an online CPU's lists leave its offline
    /// siblings out (there cpu6's `thread_siblings` is `...040` with cpu14 offline), and so do its
    /// package's, its caches' and its node's.
    #[test]
    fn offline_cpus_are_in_no_list_of_the_online_ones() {
        let epyc = crate::by_name("epyc").unwrap();
        assert_eq!(epyc.cpu.offline, [62, 63]);
        let dir = crate::scratch_dir("offline-").unwrap();
        epyc.cpu.render(dir.path()).unwrap();
        let root = dir.path();
        for (file, want) in [
            ("cpu/online", "0-61"),
            ("cpu/offline", "62-63"),
            ("cpu/smt/active", "1"),
            ("cpu/cpu30/topology/thread_siblings_list", "30"),
            ("cpu/cpu30/topology/core_cpus_list", "30"),
            ("cpu/cpu30/topology/thread_siblings", "00000000,40000000"),
            ("cpu/cpu29/topology/thread_siblings_list", "29,61"),
            ("cpu/cpu30/topology/core_id", "30"),
            ("cpu/cpu30/topology/package_cpus_list", "0-61"),
            ("cpu/cpu30/topology/core_siblings_list", "0-61"),
            ("cpu/cpu30/topology/die_cpus_list", "0-61"),
            ("cpu/cpu30/topology/cluster_cpus_list", "30"),
            ("cpu/cpu30/cache/index0/shared_cpu_list", "30"),
            ("cpu/cpu30/cache/index2/shared_cpu_list", "30"),
            ("cpu/cpu30/cache/index3/shared_cpu_list", "28-31,60-61"),
            ("cpu/cpu30/cache/index3/shared_cpu_map", "30000000,f0000000"),
            ("node/node1/cpulist", "16-31,48-61"),
            ("node/node1/cpumap", "3fff0000,ffff0000"),
            ("node/has_cpu", "0-1"),
            ("cpu/cpu62/online", "0"),
        ] {
            assert_eq!(read(root, file), want, "{file}");
        }
        // An offline CPU keeps only its `online` file.
        let left: Vec<String> = fs::read_dir(root.join("sys/devices/system/cpu/cpu62"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["online"]);
        let expected = epyc.cpu.expected();
        assert_eq!(expected[30].siblings.to_string(), "30");
        assert_eq!(expected[62].siblings.to_string(), "30");
    }

    /// The hybrid fixture against hwloc's `20em64t-hybrid-1p6c2t+2ca4co1t` dump of the same CPU
    /// (values copied from the dump's files; `tests/tests/fixture_fidelity.rs` compares every file).
    #[test]
    fn the_hybrid_fixture_numbers_as_the_real_raptor_lake() {
        let hybrid = crate::by_name("hybrid").unwrap();
        let dir = crate::scratch_dir("hybrid-").unwrap();
        hybrid.cpu.render(dir.path()).unwrap();
        let root = dir.path();
        // (cpu, core_id, cluster_id, thread siblings, cluster CPUs, L1 id, L2 id, L2 CPUs)
        let dump = [
            (0, "0", "0", "0-1", "0-1", "0", "0", "0-1"),
            (1, "0", "0", "0-1", "0-1", "0", "0", "0-1"),
            (2, "4", "8", "2-3", "2-3", "4", "1", "2-3"),
            (11, "20", "40", "10-11", "10-11", "20", "5", "10-11"),
            (12, "24", "48", "12", "12-15", "24", "6", "12-15"),
            (15, "27", "48", "15", "12-15", "27", "6", "12-15"),
            (16, "28", "56", "16", "16-19", "28", "7", "16-19"),
            (19, "31", "56", "19", "16-19", "31", "7", "16-19"),
        ];
        for (cpu, core, cluster, threads, cluster_cpus, l1, l2, l2_cpus) in dump {
            let got = |file: &str| read(root, &format!("cpu/cpu{cpu}/{file}"));
            assert_eq!(
                (
                    got("topology/core_id"),
                    got("topology/cluster_id"),
                    got("topology/thread_siblings_list"),
                    got("topology/cluster_cpus_list"),
                    got("cache/index0/id"),
                    got("cache/index2/id"),
                    got("cache/index2/shared_cpu_list"),
                ),
                (
                    core.to_owned(),
                    cluster.to_owned(),
                    threads.to_owned(),
                    cluster_cpus.to_owned(),
                    l1.to_owned(),
                    l2.to_owned(),
                    l2_cpus.to_owned(),
                ),
                "cpu{cpu}"
            );
        }
        assert_eq!(read(root, "cpu/cpu12/cache/index2/size"), "2048K");
        assert_eq!(read(root, "cpu/cpu0/cache/index2/size"), "1280K");
        let expected = hybrid.cpu.expected();
        let p_cores: Vec<u32> = expected.iter().take(12).map(|c| c.core).collect();
        assert_eq!(p_cores, [0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20]);
        assert_eq!(expected[12].cluster, Some(48));
        assert!(
            expected
                .iter()
                .all(|c| c.core_type == CoreType::Performance || c.siblings.len() == 1)
        );
    }

    #[test]
    fn apic_ids_must_name_every_cpu_once() {
        let mut layout = crate::by_name("hybrid").unwrap().cpu;
        layout.check().unwrap();
        layout.apic_ids.pop();
        assert_eq!(
            layout.check().unwrap_err(),
            "apic_ids has 19 entries for 20 CPUs"
        );
        layout.apic_ids.push(0);
        assert_eq!(layout.check().unwrap_err(), "apic_ids repeats an id");
        // Server numbering (first threads first) is fine; threads of three cores in one is not.
        layout.apic_ids = [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]
            .into_iter()
            .chain(16..24)
            .collect();
        layout.check().unwrap();
        layout.apic_ids.swap(1, 13);
        assert_eq!(
            layout.check().unwrap_err(),
            "apic_ids of the big cores' CPUs make 7 cores of {1, 2} threads"
        );
    }
}
