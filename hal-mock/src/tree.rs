//! Small filesystem helpers for rendering sysfs trees: files with a trailing newline, relative
//! symlinks as the kernel makes them.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Writes `contents` and a newline to `path`, creating parent directories.
pub(crate) fn write(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, format!("{contents}\n"))
}

/// The relative path from directory `from` to `to`, both relative to the same root
/// (`sys/devices/pci0000:00/0000:00:01.0` to `sys/bus/pci/drivers/ice` gives
/// `../../../bus/pci/drivers/ice`).
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<Component<'_>> = from.components().collect();
    let b: Vec<Component<'_>> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for part in b.iter().skip(common) {
        out.push(part.as_os_str());
    }
    out
}

/// Makes `root/link` a relative symlink to `root/target` (replacing an existing link).
pub(crate) fn link(root: &Path, link: &Path, target: &Path) -> io::Result<()> {
    let full = root.join(link);
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent)?;
    }
    if full.is_symlink() {
        fs::remove_file(&full)?;
    }
    let from = link.parent().unwrap_or(Path::new(""));
    std::os::unix::fs::symlink(relative(from, target), full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_like_the_kernel() {
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:00/0000:00:01.0"),
                Path::new("sys/bus/pci/drivers/ice")
            ),
            Path::new("../../../bus/pci/drivers/ice")
        );
        assert_eq!(
            relative(
                Path::new("sys/bus/pci/devices"),
                Path::new("sys/devices/pci0000:00/0000:00:01.0")
            ),
            Path::new("../../../devices/pci0000:00/0000:00:01.0")
        );
    }
}
