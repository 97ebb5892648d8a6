//! Building sysfs trees by hand in the backends' unit tests.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Writes `root/relative`, creating its directories.
pub fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create dirs");
    fs::write(path, contents).expect("write");
}

/// Makes `root/relative` a symlink to `target`, creating its directories.
pub fn link(root: &Path, relative: &str, target: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("a link has a parent")).expect("create dirs");
    symlink(target, path).expect("symlink");
}
