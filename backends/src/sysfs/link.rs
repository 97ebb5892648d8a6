//! sysfs links, resolved lexically inside the root, and what a resolved device path says.
//!
//! Links under `sys/bus` and `sys/class` are relative (`../../../devices/pci0000:00/0000:00:01.0`).
//! They are resolved against the link's own directory with `..` applied as text, so a captured tree
//! resolves inside its root exactly as on the machine, and a link can never lead outside the root.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use hal::{Error, ParseError, PciAddress, PcieRoot, Result};

/// The target of a symlink whose `text` was read, relative to the root (`sys/devices/pci0000:00/...`):
/// `relative` is the link's own path under the root, `link` its full path (what an error names).
/// Absolute link text is taken relative to the root. A target that would climb above the root is an
/// error. ([`super::tree::Tree::resolve_link`] reads the link inside the root and resolves it.)
pub fn resolve_link_text(link: &Path, relative: &Path, text: &Path) -> Result<PathBuf> {
    let mut parts: Vec<OsString> = relative
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            _ => None,
        })
        .collect();
    if text.is_absolute() {
        parts.clear();
    }
    for component in text.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_os_string()),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    let source = ParseError::new(
                        "link",
                        &text.to_string_lossy(),
                        "points outside the sysfs root",
                    );
                    return Err(Error::Parse {
                        path: link.to_path_buf(),
                        source,
                    });
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(parts.iter().collect())
}

/// The PCI functions along a resolved device path, outermost first
/// (`sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0/net/eth0` gives `0000:00:01.0`, `0000:3b:00.0`).
pub fn pci_functions_in_path(path: &Path) -> Vec<PciAddress> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter_map(|name| PciAddress::parse(name).ok())
        .collect()
}

/// The PCIe root of a resolved device path: the `pciDDDD:BB` component right before the first PCI
/// function. This also finds the root on Hyper-V/Azure VMBUS paths
/// (`sys/devices/LNXSYSTM:00/.../VMBUS:00/<guid>/pci0101:00/0101:00:00.0`), where the upstream
/// Kubernetes helper, which requires the path to start with `/sys/devices/pci`, gives up.
pub fn pcie_root_of_path(path: &Path) -> Option<PcieRoot> {
    let names: Vec<&str> = path
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let first_function = names
        .iter()
        .position(|name| PciAddress::parse(name).is_ok())?;
    let before = names.get(first_function.checked_sub(1)?)?;
    PcieRoot::parse(before).ok()
}

#[cfg(test)]
mod tests {
    use super::super::SysfsRoot;
    use super::super::tree::Tree;
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_relative_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::create_dir_all(root.join("sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0")).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:01.0/0000:3b:00.0",
            root.join("sys/bus/pci/devices/0000:3b:00.0"),
        )
        .unwrap();
        let tree = Tree::open(&SysfsRoot::new(root));
        let resolve = |relative: &str| tree.resolve_link(Path::new(relative));
        let resolved = resolve("sys/bus/pci/devices/0000:3b:00.0")
            .unwrap()
            .unwrap();
        assert_eq!(
            resolved,
            Path::new("sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0")
        );

        symlink(
            "../../../../../../etc",
            root.join("sys/bus/pci/devices/evil"),
        )
        .unwrap();
        let err = resolve("sys/bus/pci/devices/evil").unwrap_err();
        assert!(err.to_string().contains("outside the sysfs root"), "{err}");

        symlink(
            "/sys/devices/pci0000:00",
            root.join("sys/bus/pci/devices/absolute"),
        )
        .unwrap();
        assert_eq!(
            resolve("sys/bus/pci/devices/absolute").unwrap().unwrap(),
            Path::new("sys/devices/pci0000:00")
        );

        // No link there (nothing, or a plain directory): no target, and no error.
        assert_eq!(resolve("sys/bus/pci/devices/none").unwrap(), None);
        assert_eq!(resolve("sys/devices").unwrap(), None);
    }

    #[test]
    fn roots_and_functions_of_paths() {
        let plain = Path::new("sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0/infiniband/mlx5_0");
        assert_eq!(pcie_root_of_path(plain).unwrap().to_string(), "pci0000:00");
        let functions: Vec<String> = pci_functions_in_path(plain)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(functions, ["0000:00:01.0", "0000:3b:00.0"]);

        let vmbus = Path::new(
            "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/7870a0d2-0101-4d5b-a0f3-4e5f8c1d2e3f/pci0101:00/0101:00:00.0",
        );
        assert_eq!(pcie_root_of_path(vmbus).unwrap().to_string(), "pci0101:00");
        assert_eq!(
            pci_functions_in_path(vmbus),
            [PciAddress::parse("0101:00:00.0").unwrap()]
        );

        let wide = Path::new("sys/devices/pci10000:00/10000:00:02.0/10000:01:00.0");
        assert_eq!(pcie_root_of_path(wide).unwrap().to_string(), "pci10000:00");
        assert_eq!(
            pcie_root_of_path(Path::new("sys/devices/virtual/net/lo")),
            None
        );
        assert_eq!(
            pcie_root_of_path(Path::new("sys/devices/platform/0000:00:01.0")),
            None
        );
    }
}
