//! [`EmulatedKernel`]: an [`AttributeWriter`] that does to a fixture tree what the kernel does to
//! `/sys` when an attribute is written.
//!
//! Emulated: `sriov_numvfs` (creates or removes the VF functions, their `physfn`/`virtfnN` links,
//! `bus/pci/devices` entries and IOMMU groups; as `sriov_numvfs_store` in the kernel's
//! `drivers/pci/iov.c`: ERANGE above `sriov_totalvfs`, ENOENT for a change while the PF has no
//! driver, EBUSY between two non-zero counts; autoprobe binds the VF driver), `driver_override`,
//! `<driver>/unbind`, `<driver>/bind` and `drivers_probe`. Any other existing attribute is written as a file.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hal::{AttributeWriter, PciAddress};

use crate::pci::bind;
use crate::tree::{link, write};

const EINVAL: i32 = 22;
const EBUSY: i32 = 16;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const ERANGE: i32 = 34;

/// The kernel side of a fixture: applies writes with their side effects, and logs them.
#[derive(Debug)]
pub struct EmulatedKernel {
    root: PathBuf,
    default_drivers: BTreeMap<(u16, u16), String>,
    log: Mutex<Vec<(String, String)>>,
}

impl EmulatedKernel {
    /// The kernel of the fixture tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EmulatedKernel {
            root: root.into(),
            default_drivers: BTreeMap::new(),
            log: Mutex::new(Vec::new()),
        }
    }

    /// The driver the kernel binds to `vendor:device` functions when nothing overrides it (what
    /// module aliases do: `iavf` for E810 VFs).
    pub fn with_default_driver(mut self, vendor: u16, device: u16, driver: &str) -> Self {
        self.default_drivers
            .insert((vendor, device), driver.to_owned());
        self
    }

    /// Every write so far, as (path relative to the root, value).
    pub fn writes(&self) -> Vec<(String, String)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn read(&self, relative: &Path) -> Option<String> {
        fs::read_to_string(self.root.join(relative))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn read_u32(&self, relative: &Path) -> Option<u32> {
        self.read(relative)?.parse().ok()
    }

    /// `sys/bus/pci/devices/<address>` resolved to the function's directory (relative to the root).
    fn function_dir(&self, address: &str) -> io::Result<PathBuf> {
        let entry = PathBuf::from(format!("sys/bus/pci/devices/{address}"));
        let target = fs::read_link(self.root.join(&entry))
            .map_err(|_| io::Error::from_raw_os_error(ENODEV))?;
        // Lexically, from the link's own directory (sys/bus/pci/devices).
        let mut parts: Vec<PathBuf> = entry
            .parent()
            .into_iter()
            .flat_map(|p| p.iter())
            .map(PathBuf::from)
            .collect();
        for component in target.components() {
            match component {
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::Normal(name) => parts.push(PathBuf::from(name)),
                _ => {}
            }
        }
        Ok(parts.iter().collect())
    }

    fn set_num_vfs(&self, pf_dir: &Path, value: &str) -> io::Result<()> {
        let requested: u32 = value
            .trim()
            .parse()
            .map_err(|_| io::Error::from_raw_os_error(EINVAL))?;
        let current = self.read_u32(&pf_dir.join("sriov_numvfs")).unwrap_or(0);
        let total = self
            .read_u32(&pf_dir.join("sriov_totalvfs"))
            .ok_or_else(|| io::Error::from_raw_os_error(ENODEV))?;
        if requested > total {
            return Err(io::Error::from_raw_os_error(ERANGE));
        }
        if requested == current {
            return Ok(());
        }
        // No driver bound: the kernel cannot ask one to configure SR-IOV (a bound driver without
        // `sriov_configure` gives the same; not emulated).
        if fs::symlink_metadata(self.root.join(pf_dir).join("driver")).is_err() {
            return Err(io::Error::from_raw_os_error(ENOENT));
        }
        if requested != 0 && current != 0 {
            return Err(io::Error::from_raw_os_error(EBUSY));
        }
        if requested == 0 {
            for index in 0..current {
                let virtfn = pf_dir.join(format!("virtfn{index}"));
                if let Ok(target) = fs::read_link(self.root.join(&virtfn)) {
                    let vf_dir = pf_dir
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target.file_name().unwrap_or_default());
                    let name = vf_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.remove_drm_links(&vf_dir)?;
                    fs::remove_dir_all(self.root.join(&vf_dir))?;
                    fs::remove_file(self.root.join(format!("sys/bus/pci/devices/{name}")))?;
                    fs::remove_file(self.root.join(&virtfn))?;
                }
            }
        } else {
            self.create_vfs(pf_dir, requested)?;
        }
        write(
            &self.root.join(pf_dir).join("sriov_numvfs"),
            &requested.to_string(),
        )
    }

    fn create_vfs(&self, pf_dir: &Path, count: u32) -> io::Result<()> {
        let pf_name = pf_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let pf = PciAddress::parse(&pf_name).map_err(|_| io::Error::from_raw_os_error(ENODEV))?;
        let offset = self.read_u32(&pf_dir.join("sriov_offset")).unwrap_or(1);
        let stride = self.read_u32(&pf_dir.join("sriov_stride")).unwrap_or(1);
        let vf_device = self
            .read(&pf_dir.join("sriov_vf_device"))
            .unwrap_or_default();
        let vf_device_id = u16::from_str_radix(&vf_device, 16).unwrap_or(0);
        let vendor = self.read(&pf_dir.join("vendor")).unwrap_or_default();
        let vendor_id = u16::from_str_radix(vendor.trim_start_matches("0x"), 16).unwrap_or(0);
        let autoprobe = self.read_u32(&pf_dir.join("sriov_drivers_autoprobe")) == Some(1);
        let pf_rid = u32::from(pf.bus) << 8 | u32::from(pf.device) << 3 | u32::from(pf.function);
        let first_group = self.next_iommu_group();
        for index in 0..count {
            let group = first_group + index;
            let rid = pf_rid + offset + index * stride;
            let vf = PciAddress::new(
                pf.domain,
                (rid >> 8) as u8,
                ((rid >> 3) & 0x1f) as u8,
                (rid & 7) as u8,
            )
            .map_err(|_| io::Error::from_raw_os_error(EINVAL))?;
            let vf_dir = pf_dir
                .parent()
                .unwrap_or(Path::new(""))
                .join(vf.to_string());
            let full = self.root.join(&vf_dir);
            for copied in [
                "vendor",
                "class",
                "subsystem_vendor",
                "revision",
                "numa_node",
                "local_cpulist",
            ] {
                if let Some(value) = self.read(&pf_dir.join(copied)) {
                    write(&full.join(copied), &value)?;
                }
            }
            write(&full.join("device"), &format!("0x{vf_device}"))?;
            write(&full.join("subsystem_device"), "0x0000")?;
            write(&full.join("driver_override"), "(null)")?;
            link(&self.root, &vf_dir.join("physfn"), pf_dir)?;
            link(&self.root, &pf_dir.join(format!("virtfn{index}")), &vf_dir)?;
            link(
                &self.root,
                &PathBuf::from(format!("sys/bus/pci/devices/{vf}")),
                &vf_dir,
            )?;
            fs::create_dir_all(
                self.root
                    .join(format!("sys/kernel/iommu_groups/{group}/devices")),
            )?;
            link(
                &self.root,
                &vf_dir.join("iommu_group"),
                Path::new(&format!("sys/kernel/iommu_groups/{group}")),
            )?;
            if autoprobe && let Some(driver) = self.default_drivers.get(&(vendor_id, vf_device_id))
            {
                bind(&self.root, &vf_dir, driver)?;
                let display = self
                    .read(&vf_dir.join("class"))
                    .is_some_and(|c| c.starts_with("0x03"));
                if display && matches!(driver.as_str(), "i915" | "xe") {
                    self.add_drm_nodes(pf_dir, &vf_dir, count)?;
                }
            }
        }
        Ok(())
    }

    /// What i915 and xe do for a GPU VF: a `cardN` and a `renderDN` (the next free numbers), the card
    /// with its share of the PF's local memory (auto-provisioning splits it evenly between the VFs).
    fn add_drm_nodes(&self, pf_dir: &Path, vf_dir: &Path, count: u32) -> io::Result<()> {
        let taken: Vec<String> = fs::read_dir(self.root.join("sys/class/drm"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let next = |prefix: &str, first: u32| {
            taken
                .iter()
                .filter_map(|n| n.strip_prefix(prefix)?.parse::<u32>().ok())
                .max()
                .map_or(first, |m| (m + 1).max(first))
        };
        let lmem = fs::read_dir(self.root.join(pf_dir).join("drm"))
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(Result::ok)
                    .find_map(|e| fs::read_to_string(e.path().join("lmem_total_bytes")).ok())
            })
            .and_then(|text| text.trim().parse::<u64>().ok());
        for (name, minor) in [
            (format!("card{}", next("card", 0)), next("card", 0)),
            (
                format!("renderD{}", next("renderD", 128)),
                next("renderD", 128),
            ),
        ] {
            let node = vf_dir.join("drm").join(&name);
            write(&self.root.join(&node).join("dev"), &format!("226:{minor}"))?;
            if let (Some(bytes), true) = (lmem, name.starts_with("card")) {
                let share = bytes / u64::from(count.max(1));
                write(
                    &self.root.join(&node).join("lmem_total_bytes"),
                    &share.to_string(),
                )?;
            }
            link(
                &self.root,
                &PathBuf::from(format!("sys/class/drm/{name}")),
                &node,
            )?;
        }
        Ok(())
    }

    /// Removes the `sys/class/drm` links into a VF that goes away.
    fn remove_drm_links(&self, vf_dir: &Path) -> io::Result<()> {
        let Ok(nodes) = fs::read_dir(self.root.join(vf_dir).join("drm")) else {
            return Ok(());
        };
        for node in nodes.filter_map(Result::ok) {
            let class_link = self.root.join("sys/class/drm").join(node.file_name());
            if class_link.is_symlink() {
                fs::remove_file(class_link)?;
            }
        }
        Ok(())
    }

    fn next_iommu_group(&self) -> u32 {
        fs::read_dir(self.root.join("sys/kernel/iommu_groups"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .max()
                    .map_or(0, |m| m + 1)
            })
            .unwrap_or(0)
    }

    /// `drivers_probe`: binds an unbound function to its override, else to its default driver.
    fn probe(&self, address: &str) -> io::Result<()> {
        let dir = self.function_dir(address)?;
        if self.root.join(&dir).join("driver").is_symlink() {
            return Ok(());
        }
        let driver = match self.read(&dir.join("driver_override")) {
            Some(name) if name != "(null)" && !name.is_empty() => Some(name),
            _ => {
                let id = |file: &str| {
                    self.read(&dir.join(file))
                        .and_then(|v| u16::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                };
                id("vendor")
                    .zip(id("device"))
                    .and_then(|key| self.default_drivers.get(&key).cloned())
            }
        };
        match driver {
            Some(driver) => bind(&self.root, &dir, &driver),
            None => Ok(()),
        }
    }
}

impl AttributeWriter for EmulatedKernel {
    fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
        let relative = path
            .strip_prefix(&self.root)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "write outside the fixture root",
                )
            })?
            .to_path_buf();
        if let Ok(mut log) = self.log.lock() {
            log.push((relative.display().to_string(), value.to_owned()));
        }
        let name = relative
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let parent = relative.parent().unwrap_or(Path::new("")).to_path_buf();
        match name.as_str() {
            "sriov_numvfs" => {
                let pf = match parent.file_name().and_then(|n| n.to_str()) {
                    Some(address) if parent.starts_with("sys/bus/pci/devices") => {
                        self.function_dir(address)?
                    }
                    _ => parent,
                };
                self.set_num_vfs(&pf, value)
            }
            "driver_override" => {
                let shown = if value.trim().is_empty() {
                    "(null)"
                } else {
                    value.trim()
                };
                write(path, shown)
            }
            "unbind" => {
                // Either <function>/driver/unbind or sys/bus/pci/drivers/<driver>/unbind <address>.
                let function = self.function_dir(value.trim())?;
                let link = self.root.join(function.join("driver"));
                if !link.is_symlink() {
                    return Err(io::Error::from_raw_os_error(ENODEV));
                }
                fs::remove_file(link)
            }
            "bind" => {
                let driver = parent
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let function = self.function_dir(value.trim())?;
                bind(&self.root, &function, &driver)
            }
            "drivers_probe" => self.probe(value.trim()),
            _ if path.exists() => fs::write(path, value),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}
