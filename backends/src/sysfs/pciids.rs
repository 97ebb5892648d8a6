//! Vendor and device names from a `pci.ids` database (Debian `pci.ids`/`hwdata`, or any file in its
//! format). Host data, not part of a sysfs tree: the caller says which file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
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
    /// Reads `path` line by line (at most 32 MiB) and keeps the names of `wanted` (vendor, device)
    /// pairs only. Reading stops at the class section, which ends the vendor list, or earlier, once
    /// the block of every wanted vendor has been read (each vendor is listed once).
    pub fn load(path: &Path, wanted: &BTreeSet<(u16, u16)>) -> Result<PciNames> {
        let file = super::attr::open_regular(path)?;
        // One byte over the limit tells a database that is too large from one that just fits.
        let mut reader = BufReader::with_capacity(64 * 1024, file.take(MAX_PCI_IDS_BYTES + 1));
        let mut parser = Parser::new(wanted);
        let mut line = Vec::new();
        let mut total = 0u64;
        while !parser.done {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| Error::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_PCI_IDS_BYTES {
                let source = ParseError::new("pci.ids", "", "larger than 32 MiB");
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    source,
                });
            }
            parser.line(without_line_end(&line));
        }
        Ok(parser.names)
    }

    /// Parses the database text, keeping the names of `wanted` pairs (and their vendors).
    pub fn parse(text: &str, wanted: &BTreeSet<(u16, u16)>) -> PciNames {
        let mut parser = Parser::new(wanted);
        for line in text.as_bytes().split(|&b| b == b'\n') {
            if parser.done {
                break;
            }
            parser.line(without_line_end(line));
        }
        parser.names
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

/// The reading of the vendor list, one line at a time. Lines are bytes: pci.ids is ASCII with some
/// UTF-8 names, and a stray invalid byte only spoils its own name.
///
/// What counts in the list is the vendor lines (four lowercase hex digits and a space: `8086  Intel
/// Corporation`), the device lines of a vendor's block under it (a tab, then the same: `\t1592  ...`)
/// and the class section (`C `), which ends the list. A vendor's block runs to the next line that
/// starts with a lowercase hex digit or `C `; every other line (subsystems, comments, blank or
/// malformed lines) is passed over.
struct Parser {
    /// The wanted pairs, sorted (binary search).
    wanted: Vec<(u16, u16)>,
    /// Their vendors, sorted and deduplicated.
    wanted_vendors: Vec<u16>,
    /// The wanted vendor whose block is being read, if any.
    vendor: Option<u16>,
    names: PciNames,
    /// The class section was reached, or every wanted vendor's block was read: nothing more to read.
    done: bool,
}

impl Parser {
    fn new(wanted: &BTreeSet<(u16, u16)>) -> Parser {
        let wanted: Vec<(u16, u16)> = wanted.iter().copied().collect();
        let mut wanted_vendors: Vec<u16> = wanted.iter().map(|(v, _)| *v).collect();
        wanted_vendors.dedup();
        // Nothing wanted, nothing to read (`load` still opens the file, so a bad path is reported).
        let done = wanted.is_empty();
        Parser {
            wanted,
            wanted_vendors,
            vendor: None,
            names: PciNames::default(),
            done,
        }
    }

    /// Reads one line, without its line ending.
    fn line(&mut self, line: &[u8]) {
        match line {
            [b'\t', b'\t', ..] => {} // subsystem line
            [b'\t', rest @ ..] => {
                let Some(vendor) = self.vendor else {
                    return; // a device of a vendor nobody asked for
                };
                if let Some((id, name)) = split_id(rest)
                    && self.wanted.binary_search(&(vendor, id)).is_ok()
                {
                    self.names.devices.insert((vendor, id), text(name));
                }
            }
            // The class section ends the vendor list.
            [b'C', b' ', ..] => self.done = true,
            [b'0'..=b'9' | b'a'..=b'f', ..] => {
                self.vendor = None;
                if let Some((id, name)) = split_id(line)
                    && self.wanted_vendors.binary_search(&id).is_ok()
                {
                    self.vendor = Some(id);
                    self.names.vendors.insert(id, text(name));
                } else if self.names.vendors.len() == self.wanted_vendors.len() {
                    // Every wanted vendor's block has been read.
                    self.done = true;
                }
            }
            _ => {} // comments, blank or malformed lines
        }
    }
}

/// A line without its `\n` or `\r\n`.
fn without_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `8086  Intel Corporation` → (0x8086, b"Intel Corporation"). Ids are four lowercase hex digits and
/// a space, as the format writes them: a line in another form counts as no line.
fn split_id(line: &[u8]) -> Option<(u16, &[u8])> {
    let [a, b, c, d, b' ', ..] = line else {
        return None;
    };
    let mut id = 0u16;
    for digit in [a, b, c, d] {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        id = id << 4 | u16::from(value);
    }
    Some((id, line.get(5..).unwrap_or_default()))
}

/// A name as text, trimmed; an invalid UTF-8 byte becomes U+FFFD.
fn text(name: &[u8]) -> String {
    String::from_utf8_lossy(name).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

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
    fn a_large_file_read_line_by_line_finds_every_name_and_stops_at_the_classes() {
        // Lines longer than nothing and more than one 64 KiB buffer in all, CRLF endings, an
        // invalid UTF-8 byte, a vendor in the class section that must not count.
        let mut text = String::from("# header\r\n\n");
        for vendor in 0x1000u16..0x1400 {
            text.push_str(&format!(
                "{vendor:04x}  Vendor {vendor} with a long enough name\n"
            ));
            for device in 0..20u16 {
                text.push_str(&format!("\t{device:04x}  Device {device} of {vendor}\r\n"));
                text.push_str("\t\t1234 5678  a subsystem\n");
            }
        }
        text.push_str("C 02  Network controller\n1415  After the classes\n\t0001  No\n");
        let mut bytes = text.clone().into_bytes();
        let at = text.find("C 02").unwrap();
        bytes.splice(at..at, *b"\nabcd  Bad \xff byte\n\t0007  Seven\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pci.ids");
        fs::write(&path, &bytes).unwrap();
        assert!(bytes.len() > 3 * 64 * 1024);
        let wanted = BTreeSet::from([
            (0x1000, 0x0000),
            (0x13ff, 0x0013),
            (0xabcd, 0x0007),
            (0x1415, 0x0001),
        ]);
        let names = PciNames::load(&path, &wanted).unwrap();
        assert_eq!(
            names.vendor(0x1000),
            Some("Vendor 4096 with a long enough name")
        );
        assert_eq!(names.device(0x1000, 0x0000), Some("Device 0 of 4096"));
        assert_eq!(names.device(0x13ff, 0x0013), Some("Device 19 of 5119"));
        assert_eq!(names.vendor(0xabcd), Some("Bad \u{fffd} byte"));
        assert_eq!(names.device(0xabcd, 0x0007), Some("Seven"));
        assert_eq!(names.vendor(0x1415), None, "after the class section");
        assert_eq!(names.device(0x1415, 0x0001), None);
        assert_eq!(
            names,
            PciNames::parse(&String::from_utf8_lossy(&bytes), &wanted)
        );
        // Every name, so a line cut at a buffer boundary would show.
        let every: BTreeSet<(u16, u16)> = (0x1000u16..0x1400)
            .flat_map(|v| (0..20u16).map(move |d| (v, d)))
            .collect();
        let all = PciNames::load(&path, &every).unwrap();
        assert_eq!(all.devices.len(), every.len());
        for (v, d) in &every {
            let expected = format!("Device {d} of {v}");
            assert_eq!(all.device(*v, *d), Some(expected.as_str()));
        }
        assert_eq!(all.vendors.len(), 0x400);
    }

    #[test]
    fn reading_stops_once_every_wanted_vendors_block_is_read() {
        let mut parser = Parser::new(&BTreeSet::from([(0x10de, 0x2335)]));
        for line in ["10de  NVIDIA Corporation", "\t2335  GB300 test name"] {
            parser.line(line.as_bytes());
        }
        assert!(!parser.done, "the block may go on");
        // The next vendor ends NVIDIA's block: nothing after it is read.
        parser.line(b"15b3  Mellanox Technologies");
        assert!(parser.done);
        let text = "10de  NVIDIA Corporation\n\t2335  GB300 test name\n\
            15b3  Mellanox Technologies\n10de  Listed again\n\t2335  Not read\n";
        let names = PciNames::parse(text, &BTreeSet::from([(0x10de, 0x2335)]));
        assert_eq!(names.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(names.device(0x10de, 0x2335), Some("GB300 test name"));
    }

    #[test]
    fn a_wanted_device_listed_only_under_another_vendor_gets_no_name() {
        // 10de lists no 0001; the next vendor does, and must not lend it.
        let text = "10de  NVIDIA Corporation\n\t2335  GB300 test name\n\n# c\n\
            15b3  Mellanox Technologies\n\t0001  Not NVIDIA's\nC 02  Network controller\n";
        let wanted = BTreeSet::from([(0x10de, 0x0001), (0x10de, 0x2335)]);
        let names = PciNames::parse(text, &wanted);
        assert_eq!(names.device(0x10de, 0x0001), None);
        assert_eq!(names.device(0x10de, 0x2335), Some("GB300 test name"));
    }

    #[test]
    fn lines_in_other_forms_name_nothing() {
        let text = "ABCD  upper case is no id\n\t0001  under no vendor\n8086 Intel\n\
            \t1592\n\t1592x  no space\n 8086  indented\n8086  Intel Corporation\n\
            \t\t1592 0001  a subsystem is no device\n\t0001  One\r\n";
        let wanted = BTreeSet::from([(0xabcd, 0x0001), (0x8086, 0x1592), (0x8086, 0x0001)]);
        let names = PciNames::parse(text, &wanted);
        assert_eq!(names.vendor(0xabcd), None);
        assert_eq!(names.device(0xabcd, 0x0001), None);
        assert_eq!(names.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(names.device(0x8086, 0x1592), None);
        assert_eq!(names.device(0x8086, 0x0001), Some("One"));
    }

    /// The system's database (Debian `pci.ids`): names known to be there, and for many sets of
    /// wanted ids (every vendor's first and last devices, ids listed under other vendors only,
    /// unlisted ids) the names a plain scan of the whole vendor list finds.
    #[test]
    #[ignore = "needs the Debian pci.ids package"]
    fn the_system_database_gives_the_expected_names_needs_debian_pci_ids() {
        let path = default_pci_ids().expect("a pci.ids database (Debian package pci.ids)");
        let known = [
            (
                0x8086,
                0x1592,
                "Intel Corporation",
                "Ethernet Controller E810-C for QSFP",
            ),
            (
                0x15b3,
                0x101e,
                "Mellanox Technologies",
                "ConnectX Family mlx5Gen Virtual Function",
            ),
            (
                0x15b3,
                0x1017,
                "Mellanox Technologies",
                "MT27800 Family [ConnectX-5]",
            ),
            (
                0x10de,
                0x20b5,
                "NVIDIA Corporation",
                "GA100 [A100 PCIe 80GB]",
            ),
            (0x10de, 0x101e, "NVIDIA Corporation", "GK110GL [Tesla K20X]"),
        ];
        let wanted: BTreeSet<(u16, u16)> = known.iter().map(|(v, d, ..)| (*v, *d)).collect();
        let names = PciNames::load(&path, &wanted).unwrap();
        for (v, d, vendor, device) in known {
            assert_eq!(names.vendor(v), Some(vendor));
            assert_eq!(names.device(v, d), Some(device), "{v:04x}:{d:04x}");
        }

        // Every vendor and device line of the vendor list, as a whole-file scan reads it.
        let text = fs::read_to_string(&path).unwrap();
        let vendor_list = text.split("\nC ").next().unwrap();
        let mut vendor_names: BTreeMap<u16, String> = BTreeMap::new();
        let mut listed: BTreeMap<u16, Vec<(u16, String)>> = BTreeMap::new();
        let mut vendor = None;
        for line in vendor_list.lines() {
            let hex = |s: &str| u16::from_str_radix(s, 16).ok();
            if let Some(rest) = line.strip_prefix('\t') {
                if let (Some(v), Some((id, name))) = (vendor, rest.split_once("  "))
                    && !rest.starts_with('\t')
                    && let Some(d) = hex(id)
                {
                    listed
                        .entry(v)
                        .or_default()
                        .push((d, name.trim().to_owned()));
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                vendor = line.split_once("  ").and_then(|(id, _)| hex(id));
                if let (Some(v), Some((_, name))) = (vendor, line.split_once("  ")) {
                    vendor_names.insert(v, name.trim().to_owned());
                }
            }
        }
        assert!(listed.len() > 500, "{} vendors with devices", listed.len());
        let vendors: Vec<u16> = listed.keys().copied().collect();
        let mut sets = 0;
        for group in vendors.chunks(vendors.len().div_ceil(60)) {
            let mut wanted = BTreeSet::new();
            let mut expected = BTreeMap::new();
            for (i, v) in group.iter().take(12).enumerate() {
                let devices = &listed[v];
                for (d, name) in [devices.first(), devices.last()].into_iter().flatten() {
                    wanted.insert((*v, *d));
                    expected.insert((*v, *d), name.clone());
                }
                // A neighbour's id (named only if this vendor lists it too), and one nobody lists.
                let other = vendors[(i * 7919) % vendors.len()];
                if let Some((d, _)) = listed[&other].first() {
                    wanted.insert((*v, *d));
                    if let Some((_, name)) = devices.iter().find(|(own, _)| own == d) {
                        expected.insert((*v, *d), name.clone());
                    }
                }
                wanted.insert((*v, 0xfffe));
            }
            let names = PciNames::load(&path, &wanted).unwrap();
            assert_eq!(names.devices, expected, "wanted {wanted:x?}");
            for (v, _) in &wanted {
                assert_eq!(names.vendor(*v), vendor_names.get(v).map(String::as_str));
            }
            sets += 1;
        }
        assert!(sets >= 50);
    }

    #[test]
    fn nothing_wanted_reads_nothing() {
        // A machine without PCI functions (a container's view, an empty tree) pays no reading.
        let mut parser = Parser::new(&BTreeSet::new());
        assert!(parser.done);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pci.ids");
        fs::write(&path, SAMPLE).unwrap();
        assert_eq!(
            PciNames::load(&path, &BTreeSet::new()).unwrap(),
            PciNames::default()
        );
        parser.line(b"10de  NVIDIA Corporation");
        assert!(parser.names.vendors.is_empty());
    }

    #[test]
    fn a_database_without_a_last_newline_keeps_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pci.ids");
        fs::write(&path, "10de  NVIDIA Corporation\n\t2335  GB300 test name").unwrap();
        let names = PciNames::load(&path, &BTreeSet::from([(0x10de, 0x2335)])).unwrap();
        assert_eq!(names.device(0x10de, 0x2335), Some("GB300 test name"));
    }

    #[test]
    fn a_missing_database_names_its_path() {
        let err = PciNames::load(Path::new("/nonexistent/pci.ids"), &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pci.ids"));
    }

    /// A database of `vendors` (each with devices 0..`devices`), as pci.ids lays it out.
    /// Each block also holds the lines that count for nothing: a comment, a blank line, a CRLF
    /// ending, lines that start like a vendor or the class section but are neither.
    fn database(vendors: &[u16], devices: u16) -> String {
        let mut text = String::from("# header\n\n");
        for v in vendors {
            text.push_str(&format!("{v:04x}  Vendor {v}\n# a comment\n"));
            for d in 0..devices {
                text.push_str(&format!(
                    "\t{d:04x}  Device {d} of {v}\r\n\t\t{v:04x} 0001  sub\n"
                ));
            }
            text.push_str("\nABCD  upper case is no id\nClasses come later\n");
        }
        text.push_str("C 02  Network controller\n\t00  Ethernet controller\n");
        text
    }

    proptest! {
        #[test]
        fn a_generated_database_gives_exactly_the_listed_names(
            vendors in proptest::collection::btree_set(0u16..0x40, 1..20),
            wanted in proptest::collection::btree_set((0u16..0x40, 0u16..4), 0..10),
        ) {
            let vendors: Vec<u16> = vendors.into_iter().collect();
            let text = database(&vendors, 3);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pci.ids");
            fs::write(&path, &text).unwrap();
            let names = PciNames::load(&path, &wanted).unwrap();
            prop_assert_eq!(&names, &PciNames::parse(&text, &wanted));
            for (v, d) in &wanted {
                let listed = vendors.contains(v);
                let vendor = listed.then(|| format!("Vendor {v}"));
                prop_assert_eq!(names.vendor(*v), vendor.as_deref());
                let device = (listed && *d < 3).then(|| format!("Device {d} of {v}"));
                prop_assert_eq!(names.device(*v, *d), device.as_deref());
            }
            prop_assert!(names.vendors.keys().all(|v| wanted.iter().any(|(w, _)| w == v)));
        }

        #[test]
        fn never_panics(text in "[\\t 0-9a-fA-FC#\\n\\PC]{0,200}") {
            let _ = PciNames::parse(&text, &BTreeSet::from([(0x8086, 0x1592)]));
        }
    }
}
