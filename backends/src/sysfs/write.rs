//! [`FileWriter`]: the real [`AttributeWriter`], a plain write to the attribute file.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use hal::AttributeWriter;

/// Writes attributes to the files under a sysfs root. The file must exist: sysfs attributes are never
/// created by writing, and a typo must not leave a stray file in a captured tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileWriter;

impl AttributeWriter for FileWriter {
    fn write_attribute(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
        // One write(2): the kernel acts on each write call.
        file.write_all(value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_existing_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sriov_numvfs");
        std::fs::write(&path, "0\n").unwrap();
        FileWriter.write_attribute(&path, "4").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4");
        let missing = FileWriter
            .write_attribute(&dir.path().join("nope"), "1")
            .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
