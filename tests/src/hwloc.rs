//! The hwloc Linux dumps of `../shared/corpora/hwloc-linux` and `lstopo` as the oracle for them.
//!
//! Test support code: it shells out to `tar` and `lstopo-no-graphics` (Debian `bzip2`, `hwloc`), which the
//! code under test never does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hal::{CpuInventory, CpuSet};

/// `../shared/corpora/hwloc-linux`, relative to the workspace root.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/hwloc-linux")
}

/// One dump: its name and tarball.
#[derive(Debug, Clone)]
pub struct Dump {
    /// File name without `.tar.bz2`.
    pub name: String,
    /// The tarball.
    pub tarball: PathBuf,
}

/// Every dump of the corpus, sorted by name.
pub fn dumps() -> Result<Vec<Dump>, String> {
    let dir = corpus_dir();
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dumps: Vec<Dump> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".tar.bz2")?.to_owned();
            Some(Dump {
                name,
                tarball: e.path(),
            })
        })
        .collect();
    dumps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(dumps)
}

impl Dump {
    /// Extracts the dump under `into` and returns its filesystem root, as hwloc's test runner picks it:
    /// the one top-level directory, or its `fsroot/` where there is one (x86+linux dumps).
    pub fn extract(&self, into: &Path) -> Result<PathBuf, String> {
        let dir = into.join(&self.name);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let status = Command::new("tar")
            .arg("xjf")
            .arg(&self.tarball)
            .arg("-C")
            .arg(&dir)
            .status()
            .map_err(|e| format!("running tar: {e}"))?;
        if !status.success() {
            return Err(format!("tar failed on {}", self.tarball.display()));
        }
        let top: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        let [top] = top.as_slice() else {
            return Err(format!("{}: expected one top directory", self.name));
        };
        let fsroot = top.join("fsroot");
        Ok(if fsroot.is_dir() { fsroot } else { top.clone() })
    }

    /// `NAME=VALUE` settings from the `env:` lines of the dump's `.test` descriptors.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        let Ok(entries) = fs::read_dir(corpus_dir()) else {
            return vars;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "test") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let source = format!("{}.tar.bz2", self.name);
            if !text.lines().any(|l| {
                l.strip_prefix("source:")
                    .is_some_and(|s| s.trim() == source)
            }) {
                continue;
            }
            for line in text.lines().filter_map(|l| l.strip_prefix("env:")) {
                let line = line.trim();
                if let Some((name, value)) = line.split_once('=')
                    && !name.contains(' ')
                {
                    vars.push((name.to_owned(), value.trim_matches('"').to_owned()));
                }
            }
        }
        vars.sort();
        vars.dedup();
        vars
    }
}

/// What `lstopo` reports: the PUs and the CPU groupings.
#[derive(Debug, Clone, Default)]
pub struct Oracle {
    /// Every PU hwloc shows.
    pub pus: CpuSet,
    /// Groupings by kind.
    pub groupings: BTreeMap<Grouping, Partition>,
}

/// A grouping of CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grouping {
    /// By package (socket).
    Package,
    /// By physical core.
    Core,
    /// By NUMA node.
    NumaNode,
    /// By L3 cache instance.
    L3,
}

/// The sets of a grouping, ids dropped: two tools agree when they put the same CPUs together.
pub type Partition = BTreeSet<CpuSet>;

/// Runs `lstopo-no-graphics --of xml` on an extracted dump, the way hwloc's test suite does
/// (`HWLOC_FSROOT`, only the linux component), with `--disallowed` so cgroup restrictions in the dump
/// do not hide CPUs.
pub fn run_lstopo(root: &Path, env: &[(String, String)]) -> Result<String, String> {
    let output = Command::new("lstopo-no-graphics")
        .args(["--of", "xml", "--disallowed", "-"])
        .env("HWLOC_FSROOT", root)
        .env("HWLOC_COMPONENTS", "linux,stop")
        .env("HWLOC_DUMPED_HWDATA_DIR", "/var/run/hwloc")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .map_err(|e| format!("running lstopo-no-graphics (Debian package hwloc): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "lstopo failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| e.to_string())
}

/// Parses an hwloc bitmap: `0x0000ffff,0xffffffff` (32-bit words, most significant first; an empty word
/// is zero). Infinite sets (`0xf...f`) are not used for PUs or NUMA nodes.
pub fn parse_hwloc_bitmap(text: &str) -> Result<CpuSet, String> {
    let mut set = CpuSet::new();
    for (position, word) in text.split(',').rev().enumerate() {
        let digits = word.strip_prefix("0x").unwrap_or(word);
        if digits.is_empty() {
            continue;
        }
        if digits.contains("...") {
            return Err(format!("infinite bitmap {text}"));
        }
        let value = u32::from_str_radix(digits, 16).map_err(|e| format!("bitmap {text}: {e}"))?;
        for bit in 0..32 {
            if value & (1 << bit) != 0 {
                set.insert(position as u32 * 32 + bit);
            }
        }
    }
    Ok(set)
}

/// Reads the groupings out of hwloc's XML: each PU's ancestor Package, Core and L3Cache, and the
/// NUMANode objects whose cpuset holds it (CPUs are grouped by the exact set of such nodes).
pub fn parse_oracle(xml: &str) -> Result<Oracle, String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, options).map_err(|e| e.to_string())?;
    let objects = || doc.descendants().filter(|n| n.has_tag_name("object"));
    let mut numa_nodes = Vec::new();
    for node in objects().filter(|n| n.attribute("type") == Some("NUMANode")) {
        let cpuset = node.attribute("cpuset").ok_or("NUMANode without cpuset")?;
        numa_nodes.push(parse_hwloc_bitmap(cpuset)?);
    }
    let mut oracle = Oracle::default();
    let mut keyed: BTreeMap<Grouping, BTreeMap<String, CpuSet>> = BTreeMap::new();
    for pu in objects().filter(|n| n.attribute("type") == Some("PU")) {
        let id: u32 = pu
            .attribute("os_index")
            .and_then(|i| i.parse().ok())
            .ok_or("PU without os_index")?;
        oracle.pus.insert(id);
        for (grouping, kind) in [
            (Grouping::Package, "Package"),
            (Grouping::Core, "Core"),
            (Grouping::L3, "L3Cache"),
        ] {
            if let Some(ancestor) = pu.ancestors().find(|a| a.attribute("type") == Some(kind)) {
                let key = format!("{:?}", ancestor.id());
                keyed
                    .entry(grouping)
                    .or_default()
                    .entry(key)
                    .or_default()
                    .insert(id);
            }
        }
        let nodes: Vec<String> = numa_nodes
            .iter()
            .enumerate()
            .filter(|(_, set)| set.contains(id))
            .map(|(i, _)| i.to_string())
            .collect();
        if !nodes.is_empty() {
            keyed
                .entry(Grouping::NumaNode)
                .or_default()
                .entry(nodes.join(","))
                .or_default()
                .insert(id);
        }
    }
    for grouping in [
        Grouping::Package,
        Grouping::Core,
        Grouping::NumaNode,
        Grouping::L3,
    ] {
        let partition = keyed
            .remove(&grouping)
            .map(|m| m.into_values().collect())
            .unwrap_or_default();
        oracle.groupings.insert(grouping, partition);
    }
    Ok(oracle)
}

/// The same groupings from the HAL's inventory, restricted to `cpus`.
pub fn hal_groupings(inventory: &CpuInventory, cpus: &CpuSet) -> BTreeMap<Grouping, Partition> {
    let restrict = |groups: Vec<CpuSet>| -> Partition {
        groups
            .into_iter()
            .map(|g| g.intersection(cpus))
            .filter(|g| !g.is_empty())
            .collect()
    };
    BTreeMap::from([
        (
            Grouping::Package,
            restrict(inventory.packages().into_values().collect()),
        ),
        (
            Grouping::Core,
            restrict(inventory.cores().into_values().collect()),
        ),
        (
            Grouping::NumaNode,
            restrict(inventory.numa_groups().into_values().collect()),
        ),
        (
            Grouping::L3,
            restrict(inventory.l3_groups().into_values().collect()),
        ),
    ])
}

/// Extracts the ghw snapshot `name` (`../shared/corpora/sysfs-other/ghw/<name>.tar.gz`) under `into` and
/// returns the directory that holds its `sys/`.
pub fn extract_ghw(name: &str, into: &Path) -> Result<PathBuf, String> {
    let tarball = corpus_dir()
        .join("../sysfs-other/ghw")
        .join(format!("{name}.tar.gz"));
    let dir = into.join(name);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar failed on {}", tarball.display()));
    }
    Ok(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hwloc_bitmaps() {
        assert_eq!(
            parse_hwloc_bitmap("0x00009fdb").unwrap().to_cpulist(),
            "0-1,3-4,6-12,15"
        );
        assert_eq!(
            parse_hwloc_bitmap("0x00000001,0x00000000")
                .unwrap()
                .to_cpulist(),
            "32"
        );
        assert_eq!(
            parse_hwloc_bitmap("0x00000001,,0x00000000")
                .unwrap()
                .to_cpulist(),
            "64"
        );
        assert!(parse_hwloc_bitmap("0xf...f").is_err());
    }
}
