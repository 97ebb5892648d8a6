//! Vendor and device names from a `pci.ids` database (Debian `pci.ids`/`hwdata`, or any file in its
//! format). Host data, not part of a sysfs tree: the caller says which file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use hal::{Error, ParseError, Result};

/// Where distributions install the database, in the order they are tried.
pub const DEFAULT_PCI_IDS: [&str; 3] = [
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// The largest database read (the real one is about 1.4 MB).
const MAX_PCI_IDS_BYTES: u64 = 32 * 1024 * 1024;

/// The first of [`DEFAULT_PCI_IDS`] that exists.
pub fn default_pci_ids() -> Option<PathBuf> {
    DEFAULT_PCI_IDS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Names found for a set of ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciNames {
    vendors: BTreeMap<u16, String>,
    devices: BTreeMap<(u16, u16), String>,
}

impl PciNames {
    /// Reads `path` once and keeps the names of `wanted` (vendor, device) pairs only.
    pub fn load(path: &Path, wanted: &BTreeSet<(u16, u16)>) -> Result<PciNames> {
        let file = fs::File::open(path).map_err(|source| Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        // Sized up front: one read(2) for the whole file instead of a doubling buffer's dozen.
        let size = file
            .metadata()
            .map_or(0, |m| m.len())
            .min(MAX_PCI_IDS_BYTES) as usize;
        let mut bytes = Vec::with_capacity(size + 1);
        file.take(MAX_PCI_IDS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_PCI_IDS_BYTES {
            let source = ParseError::new("pci.ids", "", "larger than 32 MiB");
            return Err(Error::Parse {
                path: path.to_path_buf(),
                source,
            });
        }
        // pci.ids is ASCII with some UTF-8 names; a stray invalid byte only spoils its own name (the
        // lossy conversion, slower, is only for such a file).
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Self::parse(text, wanted)),
            Err(_) => Ok(Self::parse(&String::from_utf8_lossy(&bytes), wanted)),
        }
    }

    /// Parses the database text, keeping the names of `wanted` pairs (and their vendors).
    pub fn parse(text: &str, wanted: &BTreeSet<(u16, u16)>) -> PciNames {
        let wanted_vendors: BTreeSet<u16> = wanted.iter().map(|(v, _)| *v).collect();
        let mut names = PciNames::default();
        let mut vendor: Option<u16> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('\t') {
                // Most lines are devices of vendors nobody asked for: skipped before any parsing.
                let Some(v) = vendor else {
                    continue;
                };
                if rest.starts_with('\t') {
                    continue; // subsystem line
                }
                let Some((id, name)) = split_id(rest) else {
                    continue;
                };
                if wanted.contains(&(v, id)) {
                    names.devices.insert((v, id), name.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with("C ") {
                // The class section ends the vendor list.
                break;
            }
            {
                vendor = None;
                if let Some((id, name)) = split_id(line)
                    && wanted_vendors.contains(&id)
                {
                    vendor = Some(id);
                    names.vendors.insert(id, name.to_owned());
                }
            }
        }
        names
    }

    /// The vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(String::as_str)
    }

    /// The device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.devices.get(&(vendor, device)).map(String::as_str)
    }
}

/// `8086  Intel Corporation` → (0x8086, "Intel Corporation").
fn split_id(line: &str) -> Option<(u16, &str)> {
    let (id, name) = line.split_once(char::is_whitespace)?;
    if id.len() != 4 {
        return None;
    }
    Some((u16::from_str_radix(id, 16).ok()?, name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "# a comment\n\
        10de  NVIDIA Corporation\n\
        \t2335  GB300 test name\n\
        \t\t10de 1234  subsystem line\n\
        15b3  Mellanox Technologies\n\
        \t101e  ConnectX Family mlx5Gen Virtual Function\n\
        8086  Intel Corporation\n\
        \t1592  Ethernet Controller E810-C for QSFP\n\
        C 02  Network controller\n\
        \t00  Ethernet controller\n";

    #[test]
    fn keeps_only_the_wanted_names() {
        let wanted = BTreeSet::from([(0x15b3, 0x101e), (0x8086, 0x9999)]);
        let names = PciNames::parse(SAMPLE, &wanted);
        assert_eq!(names.vendor(0x15b3), Some("Mellanox Technologies"));
        assert_eq!(
            names.device(0x15b3, 0x101e),
            Some("ConnectX Family mlx5Gen Virtual Function")
        );
        assert_eq!(names.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(names.device(0x8086, 0x9999), None);
        assert_eq!(names.vendor(0x10de), None, "not asked for");
    }

    #[test]
    fn a_missing_database_names_its_path() {
        let err = PciNames::load(Path::new("/nonexistent/pci.ids"), &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pci.ids"));
    }

    proptest! {
        #[test]
        fn never_panics(text in "[\\t 0-9a-fA-FC#\\n\\PC]{0,200}") {
            let _ = PciNames::parse(&text, &BTreeSet::from([(0x8086, 0x1592)]));
        }
    }
}
