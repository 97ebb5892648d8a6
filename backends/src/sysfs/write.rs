//! [`FileWriter`]: the real [`AttributeWriter`], a plain write to the attribute file, inside the root.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hal::AttributeWriter;
use rustix::fs::OFlags;

use super::in_root::{Reopen, RootDir};

/// Writes attributes to the files under a sysfs root. The file must exist: sysfs attributes are never
/// created by writing, and a typo must not leave a stray file in a captured tree. Paths are resolved
/// inside the root (links along the way, `driver/unbind` for one, cannot lead out of it), a link as
/// the attribute itself is refused (`O_NOFOLLOW`), and so is anything that is not a regular file (a
/// FIFO is opened without blocking and refused) or has more than one name (a hard link, which the
/// resolution inside the root cannot see): such a file is left as it was.
#[derive(Debug, Clone)]
pub struct FileWriter {
    root: PathBuf,
}

impl FileWriter {
    /// A writer for the files under `root` (the directory that holds `sys/`; `/` on a node).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileWriter { root: root.into() }
    }
}

impl Default for FileWriter {
    /// The writer of a node: root `/`.
    fn default() -> Self {
        FileWriter::new("/")
    }
}

impl AttributeWriter for FileWriter {
    fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
        let root = RootDir::open(&self.root)?;
        // Looked at first (`O_PATH`: no side effects), and opened for writing only when it is an
        // attribute: opening a device node is enough for it to act (a watchdog's arms it).
        let looked = root.open_file(path, OFlags::PATH)?;
        let stat = rustix::fs::fstat(&looked)?;
        match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
            rustix::fs::FileType::RegularFile => {}
            rustix::fs::FileType::Symlink => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "a symbolic link: attributes are written without following links",
                ));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file, not written",
                ));
            }
        }
        // A hard link is invisible to the resolution inside the root: a file from anywhere on the
        // same file system, linked into the tree, would be overwritten. Attributes have one name.
        if stat.st_nlink != 1 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "a file with {} names (a hard link), not written: attributes have one",
                    stat.st_nlink
                ),
            ));
        }
        // Truncated only once it is known to be an attribute (below), not by `O_TRUNC`. A terminal
        // in its place must not become the writer's controlling terminal: `O_NOCTTY`.
        let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = Reopen::available().open(&root, path, &looked, flags)?;
        // Opened by its path again (no `/proc`): it must still be the file looked at.
        let opened = rustix::fs::fstat(&fd)?;
        if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "replaced while being opened, not written",
            ));
        }
        // What `O_TRUNC` did (sysfs ignores it; a captured tree's file must not keep a longer
        // old value's tail).
        rustix::fs::ftruncate(&fd, 0)?;
        // One write(2): the kernel acts on each write call.
        fs::File::from(fd).write_all(value.as_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    #[test]
    fn writes_existing_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sriov_numvfs");
        std::fs::write(&path, "0\n").unwrap();
        let writer = FileWriter::new(dir.path());
        writer.write_attribute(&path, "4").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4");
        // A shorter value leaves no tail of the longer one before it.
        writer.write_attribute(&path, "16").unwrap();
        writer.write_attribute(&path, "8").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "8");
        let missing = writer
            .write_attribute(&dir.path().join("nope"), "1")
            .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join("nope").exists());
    }

    /// The kernel's part of a rebind, for one function, with only `iavf` loaded: `driver_override`
    /// (empty clears it), the driver's `unbind`, and `drivers_probe` (binds to the override, else
    /// to the default `iavf`, when that module is loaded).
    struct OnlyIavfLoaded {
        function: std::path::PathBuf,
        iavf: std::path::PathBuf,
        /// The driver's `unbind` fails (EBUSY), as a driver whose device is in use may.
        busy: bool,
    }

    impl AttributeWriter for OnlyIavfLoaded {
        fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
            let link = self.function.join("driver");
            match path.file_name().and_then(|n| n.to_str()) {
                Some("driver_override") => {
                    let shown = if value.trim().is_empty() {
                        "(null)"
                    } else {
                        value.trim()
                    };
                    std::fs::write(path, format!("{shown}\n"))
                }
                Some("unbind") if self.busy => Err(io::Error::from_raw_os_error(16)),
                Some("unbind") => std::fs::remove_file(&link),
                Some("drivers_probe") if !link.is_symlink() => {
                    let wanted = std::fs::read_to_string(self.function.join("driver_override"))?;
                    match wanted.trim() {
                        "(null)" | "iavf" => symlink(&self.iavf, &link),
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            }
        }
    }

    /// The function 0000:3b:01.0 under `root`, bound to `iavf`, and `drivers_probe`; returns the
    /// function's directory and iavf's.
    fn function_on_iavf(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let function = root.join("sys/bus/pci/devices/0000:3b:01.0");
        let iavf = root.join("sys/bus/pci/drivers/iavf");
        std::fs::create_dir_all(&function).unwrap();
        std::fs::create_dir_all(&iavf).unwrap();
        std::fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
        symlink(&iavf, function.join("driver")).unwrap();
        (function, iavf)
    }

    /// A driver that does not bind (its module is not loaded) leaves the function as it was, with
    /// its driver, not unbound; the error says so.
    #[test]
    fn a_driver_that_does_not_bind_leaves_the_function_with_its_driver() {
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (function, iavf) = function_on_iavf(root);
        std::fs::write(function.join("driver_override"), "(null)\n").unwrap();
        let kernel = OnlyIavfLoaded {
            function: function.clone(),
            iavf,
            busy: false,
        };
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), Arc::new(kernel));
        let address = PciAddress::parse("0000:3b:01.0").unwrap();
        let err = sriov.bind_driver(address, "vfio-pci").unwrap_err();
        assert!(
            err.to_string()
                .contains("vfio-pci did not bind; put back with iavf"),
            "{err}"
        );
        let driver = std::fs::read_link(function.join("driver")).unwrap();
        assert!(driver.ends_with("iavf"), "{driver:?}");
        let left = std::fs::read_to_string(function.join("driver_override")).unwrap();
        assert_eq!(left, "(null)\n");
        // The module it has: bound.
        sriov.bind_driver(address, "iavf").unwrap();
        // A function left unbound on purpose stays unbound (not probed to its default driver).
        std::fs::remove_file(function.join("driver")).unwrap();
        let err = sriov.bind_driver(address, "vfio-pci").unwrap_err();
        assert!(err.to_string().contains("left unbound, as it was"), "{err}");
        assert!(!function.join("driver").exists());
    }

    /// An unbind the driver refuses (EBUSY) fails the bind and takes the override back: left set,
    /// the next probe of the function would bind it to the driver no claim holds it for, and a
    /// rollback finding it on its driver would change nothing.
    #[test]
    fn a_refused_unbind_takes_the_override_back() {
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (function, iavf) = function_on_iavf(root);
        let address = PciAddress::parse("0000:3b:01.0").unwrap();
        for (before, after) in [("(null)\n", "(null)\n"), ("iavf\n", "iavf\n")] {
            std::fs::write(function.join("driver_override"), before).unwrap();
            let kernel = OnlyIavfLoaded {
                function: function.clone(),
                iavf: iavf.clone(),
                busy: true,
            };
            let sriov =
                crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), Arc::new(kernel));
            let err = sriov.bind_driver(address, "vfio-pci").unwrap_err();
            assert!(err.to_string().contains("unbind"), "{err}");
            let left = std::fs::read_to_string(function.join("driver_override")).unwrap();
            assert_eq!(left, after, "from {before:?}");
            let driver = std::fs::read_link(function.join("driver")).unwrap();
            assert!(driver.ends_with("iavf"), "{driver:?}");
        }
    }

    /// Giving a function back puts its override back as it was before the bind: unset (written
    /// `"\n"`), or its value. An override someone else set since, or a function someone else bound
    /// since, is left; an override the kernel would not keep as written is refused before anything
    /// changes.
    #[test]
    fn giving_a_function_back_puts_its_override_back_as_it_was() {
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (function, iavf) = function_on_iavf(root);
        let vfio = root.join("sys/bus/pci/drivers/vfio-pci");
        std::fs::create_dir_all(&vfio).unwrap();
        let link = function.join("driver");
        let override_path = function.join("driver_override");
        let bind_to = |driver: Option<&Path>, shown: &str| {
            let _ = std::fs::remove_file(&link);
            if let Some(driver) = driver {
                symlink(driver, &link).unwrap();
            }
            std::fs::write(&override_path, format!("{shown}\n")).unwrap();
        };
        let driver = || {
            let target = std::fs::read_link(&link).ok()?;
            Some(target.file_name()?.to_string_lossy().into_owned())
        };
        let shown = || std::fs::read_to_string(&override_path).unwrap();
        let kernel = OnlyIavfLoaded {
            function: function.clone(),
            iavf: iavf.clone(),
            busy: false,
        };
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), Arc::new(kernel));
        let address = PciAddress::parse("0000:3b:01.0").unwrap();

        bind_to(Some(&vfio), "vfio-pci");
        sriov
            .restore_driver(address, "vfio-pci", Some("iavf"), None)
            .unwrap();
        assert_eq!(
            (driver().as_deref(), shown().as_str()),
            (Some("iavf"), "(null)\n")
        );
        bind_to(Some(&vfio), "vfio-pci");
        sriov
            .restore_driver(address, "vfio-pci", Some("iavf"), Some("none"))
            .unwrap();
        assert_eq!(
            (driver().as_deref(), shown().as_str()),
            (Some("iavf"), "none\n")
        );
        // It had no driver: left without one, with its override.
        bind_to(Some(&vfio), "vfio-pci");
        sriov
            .restore_driver(address, "vfio-pci", None, Some("none"))
            .unwrap();
        assert_eq!((driver(), shown().as_str()), (None, "none\n"));

        // Someone else's since: an override set on its driver, a driver bound to one that had none.
        bind_to(Some(&iavf), "other");
        sriov
            .restore_driver(address, "vfio-pci", Some("iavf"), None)
            .unwrap();
        assert_eq!(
            (driver().as_deref(), shown().as_str()),
            (Some("iavf"), "other\n")
        );
        bind_to(Some(&iavf), "iavf");
        sriov
            .restore_driver(address, "vfio-pci", None, Some("none"))
            .unwrap();
        assert_eq!(
            (driver().as_deref(), shown().as_str()),
            (Some("iavf"), "iavf\n")
        );

        // Not what the kernel keeps as written: refused, nothing changed.
        let long = "x".repeat(hal::device::sriov::MAX_DRIVER_OVERRIDE + 1);
        for bad in ["iavf\nvfio-pci", "(null)", "", long.as_str()] {
            bind_to(Some(&vfio), "vfio-pci");
            let err = sriov
                .restore_driver(address, "vfio-pci", Some("iavf"), Some(bad))
                .unwrap_err();
            assert_eq!(err.kind(), hal::ErrorKind::InvalidInput, "{bad:?}: {err}");
            assert_eq!(
                (driver().as_deref(), shown().as_str()),
                (Some("vfio-pci"), "vfio-pci\n")
            );
        }
    }

    /// A function that is not there is NotFound naming its own directory (what undoing a rebind
    /// takes as "gone"); a root that cannot be opened is not a function gone.
    #[test]
    fn binding_a_missing_function_names_its_directory_and_a_missing_root_is_another_error() {
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("sys/bus/pci/devices")).unwrap();
        let address = PciAddress::parse("0000:3b:01.0").unwrap();
        let sriov = crate::SysfsSriov::new(crate::SysfsRoot::new(tmp.path()));
        for err in [
            sriov.bind_driver(address, "iavf").unwrap_err(),
            sriov.unbind_driver(address, "iavf").unwrap_err(),
        ] {
            assert_eq!(err.kind(), hal::ErrorKind::NotFound, "{err}");
            let hal::Error::Io { path, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(path.file_name().unwrap(), "0000:3b:01.0");
        }

        let nowhere = crate::SysfsSriov::new(crate::SysfsRoot::new(tmp.path().join("nope")));
        let err = nowhere.bind_driver(address, "iavf").unwrap_err();
        assert_ne!(err.kind(), hal::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("nope"), "{err}");

        // A root without sys/bus/pci/devices (not a sysfs tree, or not mounted yet).
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(empty.join("sys")).unwrap();
        let unmounted = crate::SysfsSriov::new(crate::SysfsRoot::new(&empty));
        let err = unmounted.bind_driver(address, "iavf").unwrap_err();
        assert_ne!(err.kind(), hal::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("sys/bus/pci/devices"), "{err}");
    }

    #[test]
    fn links_at_the_attribute_are_refused_and_paths_stay_in_the_root() {
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "keep\n").unwrap();
        let root = tmp.path().join("root");
        let vf = root.join("sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0");
        std::fs::create_dir_all(&vf).unwrap();
        let bus = root.join("sys/bus/pci/devices");
        std::fs::create_dir_all(&bus).unwrap();
        symlink(
            "../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:01.0",
            bus.join("0000:3b:01.0"),
        )
        .unwrap();
        symlink(&outside, vf.join("driver_override")).unwrap();

        // Through the SR-IOV backend: refused, the error names the attribute, the target is untouched.
        let sriov = crate::SysfsSriov::new(crate::SysfsRoot::new(&root));
        let address = PciAddress::parse("0000:3b:01.0").unwrap();
        let err = sriov.bind_driver(address, "vfio-pci").unwrap_err();
        let attribute = bus.join("0000:3b:01.0/driver_override");
        assert!(
            err.to_string().contains(&attribute.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(err.kind(), hal::ErrorKind::PermissionDenied);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep\n");

        // A directory link to outside on the way: resolved inside the root, where nothing is.
        let writer = FileWriter::new(&root);
        std::fs::remove_file(vf.join("driver_override")).unwrap();
        symlink(tmp.path(), vf.join("up")).unwrap();
        let through = vf.join("up/outside");
        let err = writer.write_attribute(&through, "vfio-pci").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep\n");

        // A FIFO (a device node alike): refused without being opened (opening a device node is
        // enough for it to act).
        let fifo = vf.join("sriov_numvfs");
        use rustix::fs::{CWD, FileType, Mode};
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let opened = crate::sysfs::hostile_tests::opened_during(&fifo, || {
            let err = writer.write_attribute(&fifo, "4").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        });
        assert!(!opened, "the FIFO was opened");

        // A hard link to a file outside: refused, and the file is not even truncated.
        let linked = vf.join("sriov_numvfs_linked");
        std::fs::hard_link(&outside, &linked).unwrap();
        let err = writer.write_attribute(&linked, "4").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("hard link"), "{err}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep\n");

        // Paths outside the root are refused.
        let err = writer.write_attribute(&outside, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep\n");
    }

    /// The kernel's own sysfs, written as the plugin writes it (looked at `O_PATH`, then opened
    /// through `/proc/self/fd`): `lo`'s `tx_queue_len`, written with the value it has.
    #[test]
    #[ignore = "needs root: writes a sysfs attribute (with its own value)"]
    fn a_kernel_attribute_is_written_through_its_looked_at_descriptor_needs_root() {
        let path = Path::new("/sys/class/net/lo/tx_queue_len");
        let before = std::fs::read_to_string(path).unwrap();
        FileWriter::default()
            .write_attribute(path, before.trim())
            .unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), before);
        // A value the kernel refuses is its error, not one of the writer's.
        let refused = FileWriter::default()
            .write_attribute(path, "not a number")
            .unwrap_err();
        let einval = rustix::io::Errno::INVAL.raw_os_error();
        assert_eq!(refused.raw_os_error(), Some(einval), "{refused}");
        assert_eq!(std::fs::read_to_string(path).unwrap(), before);
    }

    /// A GPU's kernel side: `unbind` records whether this process's NVIDIA gate was held (or
    /// wanted) at that moment; `drivers_probe` binds the override's driver.
    struct GpuKernel {
        function: std::path::PathBuf,
        drivers: std::path::PathBuf,
        unbinds: std::sync::Mutex<Vec<bool>>,
    }

    impl AttributeWriter for GpuKernel {
        fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
            let link = self.function.join("driver");
            match path.file_name().and_then(|n| n.to_str()) {
                Some("driver_override") => {
                    let shown = Some(value.trim()).filter(|v| !v.is_empty());
                    std::fs::write(path, format!("{}\n", shown.unwrap_or("(null)")))
                }
                Some("unbind") => {
                    let held = crate::nvidia_gate::gate().wanted();
                    self.unbinds.lock().unwrap().push(held);
                    std::fs::remove_file(&link)
                }
                Some("drivers_probe") => {
                    let wanted = std::fs::read_to_string(self.function.join("driver_override"))?;
                    symlink(self.drivers.join(wanted.trim()), &link)
                }
                _ => Ok(()),
            }
        }
    }

    /// The tests that take this process's NVIDIA gate, one at a time: each looks at whether it is
    /// wanted.
    static GATE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Unbinding a GPU from `nvidia` waits for this process's NVML users (the XID watch lets go
    /// when the gate is wanted) and runs with the gate held: written while NVML holds the GPU, the
    /// kernel's remove would wait for good. Giving it back (from vfio-pci) needs no gate.
    #[test]
    fn a_gpu_is_unbound_from_nvidia_only_once_this_processs_nvml_let_go() {
        use hal::{PciAddress, SriovPf};
        use std::sync::atomic::{AtomicBool, Ordering};
        let _serial = GATE_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let function = root.join("sys/bus/pci/devices/0000:17:00.0");
        let drivers = root.join("sys/bus/pci/drivers");
        for dir in [
            &function,
            &drivers.join("nvidia"),
            &drivers.join("vfio-pci"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
        std::fs::write(function.join("driver_override"), "(null)\n").unwrap();
        symlink(drivers.join("nvidia"), function.join("driver")).unwrap();
        let kernel = Arc::new(GpuKernel {
            function: function.clone(),
            drivers,
            unbinds: std::sync::Mutex::new(Vec::new()),
        });
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), kernel.clone());
        let address = PciAddress::parse("0000:17:00.0").unwrap();
        let gate = crate::nvidia_gate::gate();
        let let_go = AtomicBool::new(false);
        std::thread::scope(|s| {
            let share = gate.share(std::time::Duration::from_secs(20)).unwrap();
            s.spawn(|| {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while !gate.wanted() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let_go.store(true, Ordering::SeqCst);
                drop(share);
            });
            sriov.bind_driver(address, "vfio-pci").unwrap();
            assert!(
                let_go.load(Ordering::SeqCst),
                "unbound while NVML held the GPU"
            );
        });
        assert!(!gate.wanted(), "the gate was not given back");
        sriov.bind_driver(address, "nvidia").unwrap();
        assert_eq!(*kernel.unbinds.lock().unwrap(), [true, false]);
        let driver = std::fs::read_link(function.join("driver")).unwrap();
        assert!(driver.ends_with("nvidia"), "{driver:?}");
    }

    /// `/dev/null`: a character device (1:3) every machine has and anyone may look at, standing in
    /// for the device nodes (`root/dev/...` and a holder's descriptor both link to it).
    const NULL: &str = "/dev/null";

    /// A GPU on `nvidia` whose node (`/dev/nvidia0`, minor 0 in the driver's `information`) another
    /// process holds open (dcgm-exporter, pid 4321) is not unbound: the kernel's remove would wait
    /// for good. `Busy`, naming the node and the holder, nothing written to `unbind`, the override
    /// put back; once the holder let go, the bind goes through.
    #[test]
    fn a_gpu_another_process_holds_open_is_not_unbound_from_nvidia() {
        use crate::sysfs::test_tree::{link, write};
        use hal::{PciAddress, SriovPf};
        let _serial = GATE_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let function = root.join("sys/bus/pci/devices/0000:17:00.0");
        let drivers = root.join("sys/bus/pci/drivers");
        for dir in [
            &function,
            &drivers.join("nvidia"),
            &drivers.join("vfio-pci"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(root.join("sys/bus/pci/drivers_probe"), "").unwrap();
        std::fs::write(function.join("driver_override"), "(null)\n").unwrap();
        symlink(drivers.join("nvidia"), function.join("driver")).unwrap();
        write(
            root,
            "proc/driver/nvidia/gpus/0000:17:00.0/information",
            "Model: \t\t NVIDIA H100\nDevice Minor:  0\n",
        );
        link(root, "dev/nvidia0", NULL);
        link(root, "proc/4321/fd/3", NULL);
        write(root, "proc/4321/comm", "dcgm-exporter\n");
        // Another GPU's holder, and a process holding nothing.
        link(root, "dev/nvidia1", "/dev/zero");
        link(root, "proc/99/fd/4", "/dev/zero");
        write(root, "proc/99/comm", "cuda-app\n");
        link(root, "proc/100/fd/0", "/");
        let kernel = Arc::new(GpuKernel {
            function: function.clone(),
            drivers,
            unbinds: std::sync::Mutex::new(Vec::new()),
        });
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), kernel.clone());
        let address = PciAddress::parse("0000:17:00.0").unwrap();

        let err = sriov.bind_driver(address, "vfio-pci").unwrap_err();
        assert_eq!(err.kind(), hal::ErrorKind::Busy, "{err}");
        let node = root.join("dev/nvidia0");
        let expected = format!(
            "not unbinding 0000:17:00.0 from nvidia: {} is held by pid 4321 (dcgm-exporter); \
             the kernel would wait for it",
            node.display()
        );
        assert!(err.to_string().contains(&expected), "{err}");
        assert_eq!(err.path(), Some(function.join("driver/unbind").as_path()));
        assert!(!err.to_string().contains("cuda-app"), "{err}");
        assert_eq!(*kernel.unbinds.lock().unwrap(), [] as [bool; 0]);
        let left = std::fs::read_to_string(function.join("driver_override")).unwrap();
        assert_eq!(left, "(null)\n");
        let driver = std::fs::read_link(function.join("driver")).unwrap();
        assert!(driver.ends_with("nvidia"), "{driver:?}");
        assert!(!crate::nvidia_gate::gate().wanted(), "the gate was kept");
        // unbind_driver (a give-back to no driver) alike.
        let err = sriov.unbind_driver(address, "nvidia").unwrap_err();
        assert_eq!(err.kind(), hal::ErrorKind::Busy, "{err}");
        assert_eq!(*kernel.unbinds.lock().unwrap(), [] as [bool; 0]);

        // The holder let go.
        std::fs::remove_file(root.join("proc/4321/fd/3")).unwrap();
        sriov.bind_driver(address, "vfio-pci").unwrap();
        assert_eq!(*kernel.unbinds.lock().unwrap(), [true]);
        let driver = std::fs::read_link(function.join("driver")).unwrap();
        assert!(driver.ends_with("vfio-pci"), "{driver:?}");
    }

    /// Records the attributes written (their names), then writes through `inner`.
    struct Recording<K> {
        inner: K,
        written: std::sync::Mutex<Vec<String>>,
    }

    impl<K: AttributeWriter> AttributeWriter for Recording<K> {
        fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            self.written.lock().unwrap().push(name);
            self.inner.write_attribute(path, value)
        }
    }

    /// A VF count change (which removes every VF) is refused while a VF on `vfio-pci` is held open
    /// (its remove would wait for good, as an unbind would): `Busy`, nothing written to
    /// `sriov_numvfs`; without the holder, written.
    #[test]
    fn the_vf_count_is_not_changed_while_a_vf_on_vfio_pci_is_held() {
        use crate::sysfs::test_tree::{link, write};
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (vf, _) = function_on_iavf(root);
        let pf = root.join("sys/bus/pci/devices/0000:3b:00.0");
        std::fs::create_dir_all(&pf).unwrap();
        std::fs::write(pf.join("sriov_totalvfs"), "4\n").unwrap();
        std::fs::write(pf.join("sriov_numvfs"), "1\n").unwrap();
        symlink("../0000:3b:01.0", pf.join("virtfn0")).unwrap();
        let vfio = root.join("sys/bus/pci/drivers/vfio-pci");
        std::fs::create_dir_all(&vfio).unwrap();
        std::fs::remove_file(vf.join("driver")).unwrap();
        symlink(&vfio, vf.join("driver")).unwrap();
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/12")).unwrap();
        symlink("../../../../kernel/iommu_groups/12", vf.join("iommu_group")).unwrap();
        link(root, "dev/vfio/12", NULL);
        write(root, "proc/77/comm", "qemu-kvm\n");
        link(root, "proc/77/fd/9", NULL);
        let kernel = Arc::new(Recording {
            inner: FileWriter::new(root),
            written: std::sync::Mutex::new(Vec::new()),
        });
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), kernel.clone());
        let address = PciAddress::parse("0000:3b:00.0").unwrap();
        for count in [0, 2] {
            let err = sriov.set_num_vfs(address, count).unwrap_err();
            assert_eq!(err.kind(), hal::ErrorKind::Busy, "{err}");
            assert!(
                err.to_string().contains("held by pid 77 (qemu-kvm)"),
                "{err}"
            );
            assert!(kernel.written.lock().unwrap().is_empty());
        }
        std::fs::remove_file(root.join("proc/77/fd/9")).unwrap();
        sriov.set_num_vfs(address, 0).unwrap();
        assert_eq!(*kernel.written.lock().unwrap(), ["sriov_numvfs"]);
    }

    /// A function on `vfio-pci` whose VFIO group (`/dev/vfio/12`) a QEMU (pid 77) holds open is not
    /// given back: `vfio-pci`'s remove would wait for the descriptor to be closed. `Busy`, naming the
    /// node and the holder, nothing written to `unbind`, the override put back; without the holder,
    /// given back. Alike for the iommufd device node (`/dev/vfio/devices/vfio0`), and for a group
    /// node missing from the root's `/dev` (its number read from `sys/class/vfio/12/dev`).
    #[test]
    fn a_function_whose_vfio_group_a_process_holds_is_not_given_back() {
        use crate::sysfs::test_tree::{link, write};
        use hal::{PciAddress, SriovPf};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (function, iavf) = function_on_iavf(root);
        let vfio = root.join("sys/bus/pci/drivers/vfio-pci");
        std::fs::create_dir_all(&vfio).unwrap();
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/12")).unwrap();
        symlink(
            "../../../../kernel/iommu_groups/12",
            function.join("iommu_group"),
        )
        .unwrap();
        link(root, "dev/vfio/12", NULL);
        write(root, "proc/77/comm", "qemu-kvm\n");
        let on_vfio = || {
            let _ = std::fs::remove_file(function.join("driver"));
            symlink(&vfio, function.join("driver")).unwrap();
            std::fs::write(function.join("driver_override"), "vfio-pci\n").unwrap();
        };
        let kernel = Arc::new(Recording {
            inner: OnlyIavfLoaded {
                function: function.clone(),
                iavf,
                busy: false,
            },
            written: std::sync::Mutex::new(Vec::new()),
        });
        let sriov = crate::SysfsSriov::with_writer(crate::SysfsRoot::new(root), kernel.clone());
        let address = PciAddress::parse("0000:3b:01.0").unwrap();
        let busy = |original: Option<&str>, node: &str| {
            on_vfio();
            kernel.written.lock().unwrap().clear();
            let err = sriov
                .restore_driver(address, "vfio-pci", original, None)
                .unwrap_err();
            assert_eq!(err.kind(), hal::ErrorKind::Busy, "{err}");
            let expected = format!(
                "not unbinding 0000:3b:01.0 from vfio-pci: {} is held by pid 77 (qemu-kvm); ",
                root.join(node).display()
            );
            assert!(err.to_string().contains(&expected), "{err}");
            let written = kernel.written.lock().unwrap().clone();
            assert!(!written.iter().any(|w| w == "unbind"), "{written:?}");
            let driver = std::fs::read_link(function.join("driver")).unwrap();
            assert!(driver.ends_with("vfio-pci"), "{driver:?}");
            let left = std::fs::read_to_string(function.join("driver_override")).unwrap();
            let expected_override = match original {
                // The bind to iavf put the override back.
                Some(_) => "vfio-pci\n",
                // The give-back to no driver cleared it first, as it does.
                None => "(null)\n",
            };
            assert_eq!(left, expected_override);
        };

        // The group held.
        link(root, "proc/77/fd/9", NULL);
        busy(Some("iavf"), "dev/vfio/12");
        busy(None, "dev/vfio/12");
        // Its node not in the root's /dev: the number sysfs gives.
        std::fs::remove_file(root.join("dev/vfio/12")).unwrap();
        write(root, "sys/class/vfio/12/dev", "1:3\n");
        on_vfio();
        let err = sriov
            .restore_driver(address, "vfio-pci", Some("iavf"), None)
            .unwrap_err();
        assert_eq!(err.kind(), hal::ErrorKind::Busy, "{err}");
        assert!(err.to_string().contains("(device 1:3, "), "{err}");
        std::fs::remove_file(root.join("sys/class/vfio/12/dev")).unwrap();

        // The iommufd device node held.
        std::fs::create_dir_all(function.join("vfio-dev/vfio0")).unwrap();
        link(root, "dev/vfio/devices/vfio0", NULL);
        busy(Some("iavf"), "dev/vfio/devices/vfio0");

        // Nobody holds them: given back.
        std::fs::remove_file(root.join("proc/77/fd/9")).unwrap();
        on_vfio();
        sriov
            .restore_driver(address, "vfio-pci", Some("iavf"), None)
            .unwrap();
        let driver = std::fs::read_link(function.join("driver")).unwrap();
        assert!(driver.ends_with("iavf"), "{driver:?}");
        assert!(kernel.written.lock().unwrap().iter().any(|w| w == "unbind"));
        on_vfio();
        sriov
            .restore_driver(address, "vfio-pci", None, None)
            .unwrap();
        assert!(!function.join("driver").exists());
    }
}
