//! [`SysfsSriov`]: SR-IOV state of physical functions, and the writes that change it: the number of
//! VFs and the driver a function is bound to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hal::{
    AttributeWriter, Discovered, Error, PciAddress, Result, SriovPf, SriovState, VirtualFunction,
};

use super::SysfsRoot;
use super::attr::{self, ErrorLog, parse_u32};
use super::holders::{self, DeviceNumber};
use super::link::pci_functions_in_path;
use super::tree::Tree;
use super::write::FileWriter;

/// The most VFs a PF can have: the PCIe SR-IOV capability's `TotalVFs` is 16 bits.
const MAX_VFS: u32 = 1 << 16;

/// SR-IOV read from sysfs under a root, changed through an [`AttributeWriter`].
#[derive(Clone)]
pub struct SysfsSriov {
    root: SysfsRoot,
    writer: Arc<dyn AttributeWriter>,
}

impl std::fmt::Debug for SysfsSriov {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SysfsSriov")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SysfsSriov {
    /// Reads and writes the files under `root` directly (what a node needs).
    pub fn new(root: SysfsRoot) -> Self {
        let writer = FileWriter::new(root.root());
        Self::with_writer(root, Arc::new(writer))
    }

    /// Writes through `writer` (tests pass `hal-mock`'s emulated kernel).
    pub fn with_writer(root: SysfsRoot, writer: Arc<dyn AttributeWriter>) -> Self {
        SysfsSriov { root, writer }
    }

    fn relative_dir(&self, function: PciAddress) -> PathBuf {
        PathBuf::from(format!("sys/bus/pci/devices/{function}"))
    }

    fn dir(&self, function: PciAddress) -> PathBuf {
        self.root.root().join(self.relative_dir(function))
    }

    fn write(&self, path: &Path, value: &str) -> Result<()> {
        self.writer
            .write_attribute(path, value)
            .map_err(|source| Error::Refused {
                path: path.to_path_buf(),
                value: value.to_owned(),
                source,
            })
    }

    /// Unbinds `function` (in `dir`) from `driver`. From `nvidia`, only with the whole
    /// [`nvidia_gate`](crate::nvidia_gate): the kernel's remove would wait for good for this
    /// process's NVML users; a `Busy` error, with nothing written, when they do not let go in time.
    /// From `nvidia` and from `vfio-pci` (and its variant drivers), not while another process holds
    /// the function's device node open ([`Self::check_holders`]): a `Busy` error naming them, with
    /// nothing written.
    fn unbind(&self, dir: &Path, function: PciAddress, driver: &str) -> Result<()> {
        use crate::nvidia_gate::{EXCLUSIVE_WAIT, NVIDIA_DRIVER, gate};
        let path = dir.join("driver/unbind");
        let _whole = match driver {
            NVIDIA_DRIVER => Some(gate().exclusive(EXCLUSIVE_WAIT).map_err(|shares| {
                Error::Io {
                    op: "write",
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::ResourceBusy,
                        format!(
                            "{shares} NVML user(s) of this plugin still hold the GPUs after \
                         {EXCLUSIVE_WAIT:?}; not unbinding, as the kernel would wait for them"
                        ),
                    ),
                }
            })?),
            _ => None,
        };
        // After the gate: this process's NVML has let go by now.
        self.check_holders(dir, function, driver, &path)?;
        self.write(&path, &function.to_string())
    }

    /// The device nodes a remove from `driver` waits for while they are held open, under the root
    /// (`dev/...`), each with the number to look for when the node itself is not there (a
    /// container's `/dev` is a copy made when it started, without the VFIO nodes made since):
    ///
    /// * `nvidia`: `dev/nvidia<minor>`, the minor from `proc/driver/nvidia/gpus/<function>/information`
    ///   (`Device Minor:`; none when the file is missing), the number `195:<minor>` (the driver's
    ///   fixed major, `NV_MAJOR_DEVICE_NUMBER`);
    /// * `vfio-pci` and the variant drivers (`mlx5_vfio_pci`, ...): the group, `dev/vfio/<group>`
    ///   (the name of the function's `iommu_group` link; the number from
    ///   `sys/class/vfio/<group>/dev`), and each iommufd device of the function,
    ///   `dev/vfio/devices/<name>` for `<function>/vfio-dev/<name>` (the number from its `dev`).
    fn held_nodes(
        &self,
        tree: &Tree,
        dir: &Path,
        function: PciAddress,
        driver: &str,
    ) -> Result<Vec<(PathBuf, Option<DeviceNumber>)>> {
        let number = |path: &Path| tree.parse_scalar(path, DeviceNumber::parse);
        let mut nodes = Vec::new();
        if driver == crate::nvidia_gate::NVIDIA_DRIVER {
            let information = tree.join(format!("proc/driver/nvidia/gpus/{function}/information"));
            let minor = tree
                .parse_scalar(&information, super::gpu::parse_nvidia_information)?
                .and_then(|info| info.minor);
            if let Some(minor) = minor {
                let fixed = DeviceNumber {
                    major: NVIDIA_MAJOR,
                    minor,
                };
                nodes.push((PathBuf::from(format!("dev/nvidia{minor}")), Some(fixed)));
            }
        } else if is_vfio(driver) {
            let group = tree
                .link_name(&dir.join("iommu_group"))
                .filter(|name| name.parse::<u32>().is_ok());
            if let Some(group) = group {
                let dev = tree.join(format!("sys/class/vfio/{group}/dev"));
                nodes.push((PathBuf::from(format!("dev/vfio/{group}")), number(&dev)?));
            }
            let cdevs = tree
                .list_if_there(&dir.join("vfio-dev"))
                .map_err(|source| Error::Io {
                    op: "list",
                    path: dir.join("vfio-dev"),
                    source,
                })?
                .unwrap_or_default();
            let cdevs = attr::numbered_names(cdevs.iter().map(String::as_str), "vfio", MAX_CDEVS);
            for index in cdevs.into_iter().take(MAX_CDEVS as usize) {
                let dev = dir.join(format!("vfio-dev/vfio{index}/dev"));
                let node = PathBuf::from(format!("dev/vfio/devices/vfio{index}"));
                nodes.push((node, number(&dev)?));
            }
        }
        Ok(nodes)
    }

    /// A `Busy` error, before the unbind of `function` from `driver` is written (at `unbind`), when
    /// a process holds one of the [device nodes the kernel's remove waits for](Self::held_nodes)
    /// open: written, the remove would wait for good (without a way to interrupt it) for them to let
    /// go. Who holds a node is read from `<root>/proc` ([`super::holders`]): in a container, the
    /// processes of its PID namespace only (all of the node's with `hostPID`). A root without
    /// `proc/` (a captured tree) has nobody to check; a `proc/` that cannot be read fails the unbind
    /// (who holds the node is not known), as does more than the look's bounds allow.
    fn check_holders(
        &self,
        dir: &Path,
        function: PciAddress,
        driver: &str,
        unbind: &Path,
    ) -> Result<()> {
        if driver != crate::nvidia_gate::NVIDIA_DRIVER && !is_vfio(driver) {
            return Ok(());
        }
        let root = self.root.root();
        let tree = Tree::open(&self.root);
        let not_unbinding = format!("not unbinding {function} from {driver}");
        for (node, fallback) in self.held_nodes(&tree, dir, function, driver)? {
            let shown = root.join(&node);
            let unknown = |error: Error| {
                let what = format!(
                    "{not_unbinding}: who holds {} is not known",
                    shown.display()
                );
                with_context(error, &what)
            };
            let found = holders::device_number(root, &node).map_err(unknown)?;
            let (number, absent) = match (found, fallback) {
                (Some(number), _) => (number, false),
                (None, Some(number)) => (number, true),
                (None, None) => continue,
            };
            let held = holders::holders_of(root, number).map_err(unknown)?;
            if held.is_empty() {
                continue;
            }
            let mut by: Vec<String> = held.iter().map(ToString::to_string).collect();
            if held.len() >= holders::MAX_HOLDERS {
                by.push("perhaps more".to_owned());
            }
            let device = if absent {
                format!(" (device {number}, not in this root's /dev)")
            } else {
                String::new()
            };
            return Err(Error::Io {
                op: "write",
                path: unbind.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    format!(
                        "{not_unbinding}: {}{device} is held by {}; the kernel would wait for it",
                        shown.display(),
                        by.join(", ")
                    ),
                ),
            });
        }
        Ok(())
    }

    fn read_state(
        &self,
        tree: &Tree,
        pf: PciAddress,
        errors: &mut ErrorLog,
    ) -> Result<Option<SriovState>> {
        let dir = self.dir(pf);
        let Some(total_vfs) = tree.parse_scalar(&dir.join("sriov_totalvfs"), parse_u32)? else {
            return Ok(None);
        };
        let num_vfs = tree
            .parse_scalar(&dir.join("sriov_numvfs"), parse_u32)?
            .unwrap_or(0);
        let drivers_autoprobe = errors
            .keep(tree.parse_scalar(&dir.join("sriov_drivers_autoprobe"), parse_u32))
            .map(|v| v != 0);
        let vf_device_id = errors.keep(tree.parse_scalar(&dir.join("sriov_vf_device"), |t| {
            u16::from_str_radix(t.trim_start_matches("0x"), 16)
                .map_err(|_| hal::ParseError::new("sriov_vf_device", t, "expected a hex device id"))
        }));
        let mut vfs = Vec::new();
        for index in tree
            .numbered_entries(&dir, "virtfn", MAX_VFS)
            .unwrap_or_default()
        {
            let link = self.relative_dir(pf).join(format!("virtfn{index}"));
            let resolved = match errors.keep(tree.resolve_link(&link).map(Some)) {
                Some(None) => {
                    errors.note(&tree.join(&link), "not a symbolic link to a VF".to_owned());
                    None
                }
                resolved => resolved.flatten(),
            };
            if let Some(address) = resolved.and_then(|p| pci_functions_in_path(&p).last().copied())
            {
                vfs.push(VirtualFunction { index, address });
            }
        }
        if vfs.len() as u32 != num_vfs {
            errors.note(
                &dir.join("sriov_numvfs"),
                format!("{num_vfs} VFs enabled but {} virtfn links", vfs.len()),
            );
        }
        Ok(Some(SriovState {
            pf,
            total_vfs,
            num_vfs,
            drivers_autoprobe,
            vf_device_id,
            vfs,
        }))
    }

    /// The directory of `function`, which must exist. NotFound naming the function's own directory:
    /// the function is gone (callers undoing a rebind rely on it). Not when the PCI devices'
    /// directory is missing too (a root that is not a sysfs tree, nothing mounted there yet): that is
    /// not a function gone. Any other failure to look is that failure.
    fn function_dir(&self, tree: &Tree, function: PciAddress) -> Result<std::path::PathBuf> {
        let dir = self.dir(function);
        let devices = dir.parent().unwrap_or(&dir).to_owned();
        let found = tree.try_exists(&dir).and_then(|found| match found {
            true => Ok(None),
            false => tree.try_exists(&devices).map(Some),
        });
        let missing = match found {
            Ok(None) => None,
            Ok(Some(true)) => Some((dir.clone(), std::io::ErrorKind::NotFound.into())),
            Ok(Some(false)) => Some((
                devices,
                std::io::Error::other("missing: the root has no PCI devices' directory"),
            )),
            Err(source) => Some((dir.clone(), source)),
        };
        if let Some((path, source)) = missing {
            return Err(Error::Io {
                op: "find",
                path,
                source,
            });
        }
        Ok(dir)
    }
}

impl SriovPf for SysfsSriov {
    fn sriov_pfs(&self) -> Result<Discovered<SriovState>> {
        let tree = &Tree::open(&self.root);
        let devices = tree.join("sys/bus/pci/devices");
        let mut errors = ErrorLog::default();
        let mut pfs = Vec::new();
        let mut addresses: Vec<PciAddress> = tree
            .entry_names(&devices, &mut errors)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| PciAddress::parse(n).ok())
            .collect();
        addresses.sort();
        for pf in addresses {
            match self.read_state(tree, pf, &mut errors) {
                Ok(Some(state)) => pfs.push(state),
                Ok(None) => {}
                Err(e) => errors.0.push((&e).into()),
            }
        }
        Ok(Discovered {
            items: pfs,
            errors: errors.0,
        })
    }

    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<()> {
        let mut errors = ErrorLog::default();
        let Some(state) = self.read_state(&Tree::open(&self.root), pf, &mut errors)? else {
            return Err(Error::Unsupported(format!(
                "{pf} is not an SR-IOV physical function (no sriov_totalvfs)"
            )));
        };
        if count > state.total_vfs {
            return Err(Error::InvalidInput(format!(
                "{pf} supports at most {} VFs, {count} asked",
                state.total_vfs
            )));
        }
        if count == state.num_vfs {
            return Ok(());
        }
        let path = self.dir(pf).join("sriov_numvfs");
        // ENOENT from the write itself, not from a PF removed meanwhile (its file gone).
        let refused = |e: Error| match Tree::open(&self.root).try_exists(&path) {
            Ok(true) => no_sriov_driver(e, pf),
            _ => e,
        };
        // Any change from a non-zero count removes every VF (through 0): a VF on vfio-pci that a
        // process holds open would make the write wait in the kernel for good, as its unbind would.
        if state.num_vfs != 0 {
            let tree = Tree::open(&self.root);
            for vf in &state.vfs {
                let dir = self.dir(vf.address);
                if let Some(driver) = tree.link_name(&dir.join("driver"))
                    && is_vfio(&driver)
                {
                    self.check_holders(&dir, vf.address, &driver, &path)?;
                }
            }
        }
        // The kernel answers EBUSY to a change between two non-zero counts: go through 0.
        if state.num_vfs != 0 && count != 0 {
            self.write(&path, "0").map_err(refused)?;
        }
        self.write(&path, &count.to_string()).map_err(refused)
    }

    fn bind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
        if driver.is_empty()
            || driver.len() > 64
            || driver.contains(['/', '\0'])
            || driver.chars().any(char::is_whitespace)
        {
            return Err(Error::InvalidInput(format!(
                "{driver:?} is not a kernel driver name"
            )));
        }
        let tree = Tree::open(&self.root);
        let dir = self.function_dir(&tree, function)?;
        let before = tree.link_name(&dir.join("driver"));
        if before.as_deref() == Some(driver) {
            return Ok(());
        }
        let override_path = dir.join("driver_override");
        let override_before = tree.read_trimmed(&override_path).ok();
        let restore = match override_before.as_deref() {
            Some("(null)") | None => "\n",
            Some(earlier) => earlier,
        };
        self.write(&override_path, driver)?;
        if let Some(before) = before.as_deref()
            && let Err(error) = self.unbind(&dir, function, before)
        {
            // Still on its driver: the override goes back too (best effort; the unbind's error is
            // the one to report), or the next probe of the function (a driver reload, a rescan)
            // would bind it to `driver` with no claim holding it, and a rollback that finds it on
            // its driver would change nothing.
            let _ = self.write(&override_path, restore);
            return Err(error);
        }
        let probe = self.root.join("sys/bus/pci/drivers_probe");
        self.write(&probe, &function.to_string())?;
        let bound = tree.link_name(&dir.join("driver"));
        if bound.as_deref() == Some(driver) {
            return Ok(());
        }
        // Not bound (the module is not loaded, its probe failed): the function is put back as it
        // was, its override and, probed again, its driver, rather than left without one.
        let mut put_back = format!(" (bound now: {})", bound.as_deref().unwrap_or("none"));
        if bound.is_none() {
            let mut restored = self.write(&override_path, restore);
            // Probed again only when it had a driver: one left unbound on purpose stays unbound.
            if restored.is_ok() && before.is_some() {
                restored = self.write(&probe, &function.to_string());
            }
            let now = tree.link_name(&dir.join("driver"));
            put_back = match (restored, now) {
                (Ok(()), Some(now)) if Some(&now) == before.as_ref() => {
                    format!("; put back with {now}")
                }
                (Ok(()), Some(now)) => format!("; bound to {now} now, not {before:?}"),
                (Ok(()), None) if before.is_none() => "; left unbound, as it was".to_owned(),
                (Ok(()), None) => "; no driver binds it now".to_owned(),
                (Err(e), _) => format!("; putting it back failed: {e}"),
            };
        }
        Err(Error::Unsupported(format!(
            "{function}: {driver} did not bind{put_back}; is the module loaded?"
        )))
    }

    fn unbind_driver(&self, function: PciAddress, driver: &str) -> Result<()> {
        let tree = Tree::open(&self.root);
        let dir = self.function_dir(&tree, function)?;
        let override_path = dir.join("driver_override");
        // Cleared first: a probe between the two writes would bind the override's driver again.
        if tree.read_trimmed(&override_path).ok().as_deref() == Some(driver) {
            self.write(&override_path, "\n")?;
        }
        if tree.link_name(&dir.join("driver")).as_deref() == Some(driver) {
            self.unbind(&dir, function, driver)?;
        }
        Ok(())
    }

    fn restore_driver(
        &self,
        function: PciAddress,
        driver: &str,
        original: Option<&str>,
        original_override: Option<&str>,
    ) -> Result<()> {
        if let Some(value) = original_override {
            hal::device::sriov::check_driver_override(value)?;
        }
        match original {
            Some(original) => self.bind_driver(function, original)?,
            None => self.unbind_driver(function, driver)?,
        }
        let tree = Tree::open(&self.root);
        let dir = self.function_dir(&tree, function)?;
        if tree.link_name(&dir.join("driver")).as_deref() != original {
            // Bound to another driver since, by someone else: theirs, override and all.
            return Ok(());
        }
        let override_path = dir.join("driver_override");
        let now = tree.read_trimmed(&override_path)?;
        let now = Some(now.as_str()).filter(|v| !v.is_empty() && *v != "(null)");
        // What the bind (`driver`) or the give-back (`original`, or none) left; another is someone
        // else's.
        let left_by_us = now == Some(driver) || now == original;
        if now == original_override || !left_by_us {
            return Ok(());
        }
        // "\n" clears it (`driver_set_override`; a write of zero bytes never reaches the
        // attribute: `sysfs_kf_write`).
        self.write(&override_path, original_override.unwrap_or("\n"))
    }
}

/// The major number of `/dev/nvidia<minor>` (`NV_MAJOR_DEVICE_NUMBER`, fixed in the driver).
const NVIDIA_MAJOR: u32 = 195;

/// The most iommufd device nodes of one function looked at (a function has one).
const MAX_CDEVS: u32 = 16;

/// `vfio-pci` or one of its variant drivers (`mlx5_vfio_pci`, `hisi_acc_vfio_pci`,
/// `nvgrace_gpu_vfio_pci`, ...), whose remove waits for the VFIO descriptors to be closed.
fn is_vfio(driver: &str) -> bool {
    driver == "vfio-pci" || driver.ends_with("_vfio_pci") || driver.ends_with("-vfio-pci")
}

/// `error` with `what` said after its own text, of the same kind.
fn with_context(error: Error, what: &str) -> Error {
    match error {
        Error::Io { op, path, source } => {
            let kind = match hal::ErrorKind::from_io(&source) {
                hal::ErrorKind::Exhausted => std::io::ErrorKind::OutOfMemory,
                hal::ErrorKind::Busy => std::io::ErrorKind::ResourceBusy,
                _ => source.kind(),
            };
            Error::Io {
                op,
                path,
                source: std::io::Error::new(kind, format!("{source}; {what}")),
            }
        }
        other => other,
    }
}

/// The kernel's ENOENT for a `sriov_numvfs` write (`sriov_numvfs_store`, `drivers/pci/iov.c`): the
/// file is there, but no driver is bound to the PF or its driver cannot configure SR-IOV (no
/// `sriov_configure`). Said so, as `Unsupported`, not as a missing file.
fn no_sriov_driver(error: Error, pf: PciAddress) -> Error {
    match &error {
        Error::Refused { source, .. } if source.raw_os_error() == Some(2) => {
            Error::Unsupported(format!(
                "{pf}: the kernel cannot change its VF count ({error}): no driver is bound to \
                 it, or its driver does not support SR-IOV configuration through sysfs"
            ))
        }
        _ => error,
    }
}
