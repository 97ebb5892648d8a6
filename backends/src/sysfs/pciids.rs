//! Vendor and device names from a `pci.ids` database (Debian `pci.ids`/`hwdata`, or any file in its
//! format). Host data, not part of a sysfs tree: the caller says which file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use aho_corasick::packed::Searcher;
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
    /// Reads `path` once, in 64 KiB chunks, and keeps the names of `wanted` (vendor, device) pairs
    /// only. Reading stops at the class section, which ends the vendor list, or earlier, once the
    /// block of every wanted vendor has been read (each vendor is listed once).
    pub fn load(path: &Path, wanted: &BTreeSet<(u16, u16)>) -> Result<PciNames> {
        let io = |source| Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        };
        let mut file = super::attr::open_regular(path)?;
        let mut parser = Parser::new(wanted);
        let mut chunk = vec![0u8; 64 * 1024];
        // The start of a line the previous chunk cut.
        let mut partial: Vec<u8> = Vec::new();
        let mut total = 0u64;
        while !parser.lines.done {
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            total += n as u64;
            if total > MAX_PCI_IDS_BYTES {
                let source = ParseError::new("pci.ids", "", "larger than 32 MiB");
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    source,
                });
            }
            let mut bytes = chunk.get(..n).unwrap_or_default();
            if !partial.is_empty() {
                match memchr::memchr(b'\n', bytes) {
                    Some(end) => {
                        partial.extend_from_slice(bytes.get(..=end).unwrap_or_default());
                        parser.feed(&partial);
                        partial.clear();
                        bytes = bytes.get(end + 1..).unwrap_or_default();
                    }
                    None => {
                        partial.extend_from_slice(bytes);
                        continue;
                    }
                }
            }
            match memchr::memrchr(b'\n', bytes) {
                Some(last) => {
                    parser.feed(bytes.get(..=last).unwrap_or_default());
                    partial.extend_from_slice(bytes.get(last + 1..).unwrap_or_default());
                }
                None => partial.extend_from_slice(bytes),
            }
        }
        parser.feed(&partial);
        Ok(parser.lines.names)
    }

    /// Parses the database text, keeping the names of `wanted` pairs (and their vendors).
    pub fn parse(text: &str, wanted: &BTreeSet<(u16, u16)>) -> PciNames {
        let mut parser = Parser::new(wanted);
        parser.feed(text.as_bytes());
        parser.lines.names
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

/// The reading of the vendor list. Lines are bytes: pci.ids is ASCII with some UTF-8 names, and a
/// stray invalid byte only spoils its own name.
///
/// What counts in the list is the vendor lines (four lowercase hex digits and a space: `8086  Intel
/// Corporation`), the device lines of a vendor's block under it (a tab, then the same: `\t1592  ...`)
/// and the class section (`C `), which ends the list. A vendor's block runs to the next line that
/// starts with a lowercase hex digit or `C `; every other line (subsystems, comments, blank or malformed lines)
/// is passed over.
///
/// Most of the file is lines nobody asked for, so the parser does not look at lines one by one where
/// a vectorised multi-pattern search (aho-corasick's Teddy, see [`Jumps`]) can find the next line worth
/// reading: outside a wanted vendor's block, the next wanted vendor or the class section; inside one,
/// its end and the wanted device lines before it. A whole database then costs about one fast scan
/// instead of a step per line, and both ways of reading find the same names.
///
/// Reading stops at the class section, or as soon as the block of the last wanted vendor not yet seen
/// has ended (a vendor is listed once).
struct Parser {
    /// `None`: every line is read (too many wanted vendors, or no vectorised search on this CPU).
    jumps: Option<Jumps>,
    lines: Lines,
}

/// What the reading has found so far, and the meaning of one line.
struct Lines {
    /// The wanted pairs, sorted (binary search).
    wanted: Vec<(u16, u16)>,
    /// Their vendors, sorted and deduplicated.
    wanted_vendors: Vec<u16>,
    /// The wanted vendor whose block is being read, if any.
    vendor: Option<u16>,
    names: PciNames,
    /// The class section was reached, or every wanted vendor's block was read.
    done: bool,
}

/// The searches that find the line starts worth reading, each pattern beginning with the newline
/// before the line.
struct Jumps {
    /// Outside a wanted block: `\n8086 ` for each wanted vendor, and `\nC `.
    to_vendor: Searcher,
    /// Inside one: the line that ends it, `\n0` to `\n9`, `\na` to `\nf` and `\nC `.
    to_block_end: Searcher,
    /// Inside one: `\n\t1592 ` for each wanted device id. `None` (the block's lines are read one by
    /// one) when there are more ids than the search takes.
    to_device: Option<Searcher>,
}

/// Above this many wanted vendors, lines are read one by one (the multi-pattern search is fastest
/// with few patterns, and a line-by-line read is then about as fast).
const MAX_JUMP_VENDORS: usize = 16;

/// The most device ids searched for at once (Teddy's own limit on patterns).
const MAX_JUMP_DEVICES: usize = 64;

fn searcher(patterns: impl IntoIterator<Item = String>) -> Option<Searcher> {
    aho_corasick::packed::Config::new()
        .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
        .builder()
        .extend(patterns)
        .build()
}

impl Parser {
    fn new(wanted: &BTreeSet<(u16, u16)>) -> Parser {
        let wanted: Vec<(u16, u16)> = wanted.iter().copied().collect();
        let mut wanted_vendors: Vec<u16> = wanted.iter().map(|(v, _)| *v).collect();
        wanted_vendors.dedup();
        let devices: BTreeSet<u16> = wanted.iter().map(|(_, d)| *d).collect();
        let jumps = match wanted_vendors.len() <= MAX_JUMP_VENDORS {
            true => Jumps::new(&wanted_vendors, &devices),
            false => None,
        };
        // Nothing wanted, nothing to read (`load` still opens the file, so a bad path is reported).
        let nothing_wanted = wanted.is_empty();
        Parser {
            jumps,
            lines: Lines {
                wanted,
                wanted_vendors,
                vendor: None,
                names: PciNames::default(),
                done: nothing_wanted,
            },
        }
    }

    /// Reads whole lines (the last one may lack its newline): `bytes` starts at a line start.
    fn feed(&mut self, bytes: &[u8]) {
        let mut start = 0;
        while !self.lines.done && start < bytes.len() {
            if let Some(jumps) = &self.jumps {
                start = match self.lines.vendor {
                    None => match jumps.next_vendor(bytes, start, &self.lines.wanted_vendors) {
                        Some(at) => at,
                        None => return,
                    },
                    Some(_) => jumps.read_block(&mut self.lines, bytes, start),
                };
                if start >= bytes.len() {
                    return;
                }
            }
            let (line, next) = line_at(bytes, start);
            start = next;
            // Outside a wanted block, device lines are skipped before any parsing.
            if self.lines.vendor.is_none() && line.first() == Some(&b'\t') {
                continue;
            }
            self.lines.line(line);
        }
    }
}

impl Jumps {
    fn new(wanted_vendors: &[u16], devices: &BTreeSet<u16>) -> Option<Jumps> {
        let class = || std::iter::once(String::from("\nC "));
        let digits = (b'0'..=b'9').chain(b'a'..=b'f');
        Some(Jumps {
            to_vendor: searcher(
                wanted_vendors
                    .iter()
                    .map(|v| format!("\n{v:04x} "))
                    .chain(class()),
            )?,
            to_block_end: searcher(
                digits
                    .map(|d| format!("\n{}", char::from(d)))
                    .chain(class()),
            )?,
            to_device: match devices.len() <= MAX_JUMP_DEVICES {
                true => searcher(devices.iter().map(|d| format!("\n\t{d:04x} "))),
                false => None,
            },
        })
    }

    /// The first line start at or after `start` (itself a line start) that may begin a wanted vendor
    /// or the class section.
    fn next_vendor(&self, bytes: &[u8], start: usize, wanted_vendors: &[u16]) -> Option<usize> {
        let rest = bytes.get(start..)?;
        // The line at `start` has no newline before it in `rest`.
        let here = rest.starts_with(b"C ")
            || split_id(rest).is_some_and(|(id, _)| wanted_vendors.binary_search(&id).is_ok());
        if here {
            return Some(start);
        }
        let found = self.to_vendor.find(rest)?;
        Some(start + found.start() + 1)
    }

    /// Reads the part of a wanted vendor's block that starts at `start` (a line start), up to the
    /// line that ends the block or to the end of `bytes`, and returns where reading goes on: that
    /// line, or `bytes.len()`. Only its first line and its wanted device lines are looked at.
    fn read_block(&self, lines: &mut Lines, bytes: &[u8], start: usize) -> usize {
        let (Some(to_device), Some(rest)) = (&self.to_device, bytes.get(start..)) else {
            return start;
        };
        // The line at `start` has no newline before it in `rest`: it is read as it is.
        let (first, after_first) = line_at(rest, 0);
        if ends_block(first) {
            return start;
        }
        lines.line(first);
        // The rest from the newline that ends the first line, as each pattern begins with the
        // newline before its line. None: the first line was the last.
        let from = after_first.saturating_sub(1);
        let Some(tail) = rest.get(from..).filter(|t| t.first() == Some(&b'\n')) else {
            return bytes.len();
        };
        let end = self
            .to_block_end
            .find(tail)
            .map_or(tail.len(), |m| m.start() + 1);
        let block = tail.get(..end).unwrap_or_default();
        for found in to_device.find_iter(block) {
            lines.line(line_at(block, found.start() + 1).0);
        }
        start + from + end
    }
}

/// The line that starts at `start`, without its line ending, and where the next one starts.
fn line_at(bytes: &[u8], start: usize) -> (&[u8], usize) {
    let rest = bytes.get(start..).unwrap_or_default();
    let end = memchr::memchr(b'\n', rest).map_or(bytes.len(), |i| start + i);
    let line = bytes.get(start..end).unwrap_or_default();
    (line.strip_suffix(b"\r").unwrap_or(line), end + 1)
}

/// A line that ends a vendor's block: the next vendor (a hex digit) or the class section.
fn ends_block(line: &[u8]) -> bool {
    matches!(line, [b'0'..=b'9' | b'a'..=b'f', ..] | [b'C', b' ', ..])
}

impl Lines {
    fn line(&mut self, line: &[u8]) {
        match line {
            [b'\t', b'\t', ..] => {} // subsystem line
            [b'\t', rest @ ..] => {
                if let (Some(vendor), Some((id, name))) = (self.vendor, split_id(rest))
                    && self.wanted.binary_search(&(vendor, id)).is_ok()
                {
                    self.names.devices.insert((vendor, id), text(name));
                }
            }
            // The class section ends the vendor list.
            [b'C', b' ', ..] => self.done = true,
            _ if ends_block(line) => {
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

/// `8086  Intel Corporation` → (0x8086, b"Intel Corporation"). Ids are four lowercase hex digits and
/// a space, as the format writes them and as the parser's jumps look for them: a line in another
/// form counts as no line, whichever way the file is read.
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
    fn a_file_read_in_chunks_gives_the_same_names_as_the_text_and_stops_at_the_classes() {
        // Lines cut across 64 KiB chunks, CRLF endings, an invalid UTF-8 byte, a vendor in the class
        // section that must not count.
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
        assert_eq!(names.device(0x1000, 0x0000), Some("Device 0 of 4096"));
        assert_eq!(names.device(0x13ff, 0x0013), Some("Device 19 of 5119"));
        assert_eq!(names.vendor(0xabcd), Some("Bad \u{fffd} byte"));
        assert_eq!(names.device(0xabcd, 0x0007), Some("Seven"));
        assert_eq!(names.vendor(0x1415), None, "after the class section");
        // Jumping between wanted vendors finds what reading every line finds.
        let mut every_line = Parser::new(&wanted);
        every_line.jumps = None;
        every_line.feed(&bytes);
        assert_eq!(every_line.lines.names, names);
        assert_eq!(
            names,
            PciNames::parse(&String::from_utf8_lossy(&bytes), &wanted)
        );
        // Every name, so a line cut at any chunk boundary would show.
        let every: BTreeSet<(u16, u16)> = (0x1000u16..0x1400)
            .flat_map(|v| (0..20u16).map(move |d| (v, d)))
            .collect();
        let all = PciNames::load(&path, &every).unwrap();
        assert_eq!(all.devices.len(), every.len());
        assert_eq!(
            all,
            PciNames::parse(&String::from_utf8_lossy(&bytes), &every)
        );
    }

    #[test]
    fn reading_stops_once_every_wanted_vendors_block_is_read() {
        let wanted = BTreeSet::from([(0x10de, 0x2335)]);
        for jumping in [true, false] {
            let mut parser = Parser::new(&wanted);
            if !jumping {
                parser.jumps = None;
            }
            parser.feed(b"10de  NVIDIA Corporation\n\t2335  GB300 test name\n");
            assert!(!parser.lines.done, "the block may go on");
            // The next vendor ends NVIDIA's block: nothing after it is read.
            parser.feed(b"15b3  Mellanox Technologies\n10de  Listed again\n\t2335  Not read\n");
            assert!(parser.lines.done, "jumping: {jumping}");
            assert_eq!(
                parser.lines.names.vendor(0x10de),
                Some("NVIDIA Corporation")
            );
            assert_eq!(
                parser.lines.names.device(0x10de, 0x2335),
                Some("GB300 test name")
            );
        }
    }

    #[test]
    fn a_wanted_device_listed_only_under_another_vendor_gets_no_name() {
        // 10de lists no 0001; the next vendor does, and must not lend it.
        let text = "10de  NVIDIA Corporation\n\t2335  GB300 test name\n\n# c\n\
            15b3  Mellanox Technologies\n\t0001  Not NVIDIA's\nC 02  Network controller\n";
        let wanted = BTreeSet::from([(0x10de, 0x0001), (0x10de, 0x2335)]);
        for jumping in [true, false] {
            let mut parser = Parser::new(&wanted);
            if !jumping {
                parser.jumps = None;
            }
            parser.feed(text.as_bytes());
            assert_eq!(parser.lines.names.device(0x10de, 0x0001), None);
            assert_eq!(
                parser.lines.names.device(0x10de, 0x2335),
                Some("GB300 test name")
            );
        }
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn the_searches_are_built_for_few_ids_and_blocks_are_read_line_by_line_for_many() {
        let few = Parser::new(&BTreeSet::from([(0x10de, 0x2335), (0x8086, 0x1592)]));
        assert!(few.jumps.as_ref().is_some_and(|j| j.to_device.is_some()));
        // Two vendors, 100 device ids: vendors are still jumped to, their blocks read line by line.
        let text = database(&[1, 2], 100);
        let wanted: BTreeSet<(u16, u16)> = (1..=2u16)
            .flat_map(|v| (0..100u16).map(move |d| (v, d)))
            .collect();
        let mut many = Parser::new(&wanted);
        assert!(many.jumps.as_ref().is_some_and(|j| j.to_device.is_none()));
        many.feed(text.as_bytes());
        assert_eq!(many.lines.names.devices.len(), 200);
        assert_eq!(many.lines.names, PciNames::parse(&text, &wanted));
    }

    /// The system's database (Debian `pci.ids`), read both ways for many sets of wanted ids: every
    /// vendor's first and last devices, ids listed under other vendors only, unlisted ids.
    #[test]
    #[ignore = "needs the Debian pci.ids package"]
    fn jumping_reads_the_system_database_as_every_line_does_needs_debian_pci_ids() {
        let path = default_pci_ids().expect("a pci.ids database (Debian package pci.ids)");
        let text = fs::read(&path).unwrap();
        // The devices each vendor lists (vendors without any are left out).
        let mut listed: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
        let mut vendor = None;
        for line in text.split(|&b| b == b'\n') {
            if line.starts_with(b"C ") {
                break;
            }
            match line {
                [b'\t', b'\t', ..] => {}
                [b'\t', rest @ ..] => {
                    if let (Some(v), Some((d, _))) = (vendor, split_id(rest)) {
                        listed.entry(v).or_default().push(d);
                    }
                }
                _ if ends_block(line) => vendor = split_id(line).map(|(v, _)| v),
                _ => {}
            }
        }
        assert!(listed.len() > 500, "{} vendors with devices", listed.len());
        let vendors: Vec<u16> = listed.keys().copied().collect();
        let mut sets = 0;
        for group in vendors.chunks(vendors.len().div_ceil(60)) {
            let mut wanted = BTreeSet::new();
            for (i, v) in group.iter().take(12).enumerate() {
                let devices = &listed[v];
                wanted.extend(devices.first().map(|d| (*v, *d)));
                wanted.extend(devices.last().map(|d| (*v, *d)));
                // A neighbour's id, and one nobody lists.
                let other = vendors[(i * 7919) % vendors.len()];
                wanted.extend(listed[&other].first().map(|d| (*v, *d)));
                wanted.insert((*v, 0xfffe));
            }
            let fast = Parser::new(&wanted);
            assert!(fast.jumps.as_ref().is_some_and(|j| j.to_device.is_some()));
            let jumping = PciNames::load(&path, &wanted).unwrap();
            let mut every_line = Parser::new(&wanted);
            every_line.jumps = None;
            every_line.feed(&text);
            assert_eq!(jumping, every_line.lines.names, "wanted {wanted:x?}");
            assert!(jumping.devices.len() >= group.len().min(12));
            sets += 1;
        }
        assert!(sets >= 50);
    }

    #[test]
    fn nothing_wanted_reads_nothing() {
        // A machine without PCI functions (a container's view, an empty tree) pays no reading.
        let mut parser = Parser::new(&BTreeSet::new());
        assert!(parser.lines.done);
        parser.feed(b"10de  NVIDIA Corporation\n\t2335  GB300 test name\n");
        assert_eq!(parser.lines.names, PciNames::default());
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
        fn jumping_finds_what_reading_every_line_finds_wherever_the_chunks_are_cut(
            vendors in proptest::collection::btree_set(0u16..0x40, 1..20),
            wanted in proptest::collection::btree_set((0u16..0x40, 0u16..4), 0..10),
            cuts in proptest::collection::vec(0usize..10_000, 0..6),
        ) {
            let vendors: Vec<u16> = vendors.into_iter().collect();
            let text = database(&vendors, 3);
            let mut every_line = Parser::new(&wanted);
            every_line.jumps = None;
            every_line.feed(text.as_bytes());
            // Fed as `load` feeds it: whole lines, cut at line starts chosen by `cuts`.
            let starts: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| starts[c % starts.len()]).collect();
            at.push(0);
            at.push(text.len());
            at.sort_unstable();
            at.dedup();
            let mut jumping = Parser::new(&wanted);
            for pair in at.windows(2) {
                jumping.feed(&text.as_bytes()[pair[0]..pair[1]]);
            }
            prop_assert_eq!(&jumping.lines.names, &every_line.lines.names);
            for (v, d) in &wanted {
                let listed = vendors.contains(v) && *d < 3;
                prop_assert_eq!(jumping.lines.names.device(*v, *d).is_some(), listed);
            }
        }

        #[test]
        fn never_panics(text in "[\\t 0-9a-fA-FC#\\n\\PC]{0,200}") {
            let _ = PciNames::parse(&text, &BTreeSet::from([(0x8086, 0x1592)]));
        }

        /// Text made of the lines that matter and the ones that must not: both ways of reading find
        /// the same names in any order of them, fed whole or cut at any line starts (as `load`
        /// feeds its chunks).
        #[test]
        fn any_mix_of_lines_reads_the_same_both_ways(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just("8086  Intel\n"), Just("10de  NVIDIA\n"), Just("15b3  Mellanox\r\n"),
                    Just("abcd  A vendor\n"), Just("f00d  F vendor\n"),
                    Just("\t1592  E810\n"), Just("\t0001  One\r\n"), Just("\t1592 \n"),
                    Just("\t\t8086 1592  sub\n"), Just("# c\n"), Just("\n"), Just("C 02  Net\n"),
                    Just("ABCD  upper\n"), Just("Cx\n"), Just("8zz\n"), Just(" \t1592  x\n"),
                    Just("\t0001  No newline at the end"),
                ],
                0..40,
            ),
            wanted in proptest::collection::btree_set(
                (prop_oneof![Just(0x8086u16), Just(0x10de), Just(0x15b3), Just(0xabcd)],
                 prop_oneof![Just(0x1592u16), Just(0x0001)]),
                0..6,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let text = pieces.concat();
            let mut every_line = Parser::new(&wanted);
            every_line.jumps = None;
            every_line.feed(text.as_bytes());
            let mut whole = Parser::new(&wanted);
            // Built wherever Teddy runs (x86_64 with SSSE3, aarch64): the jumps are what is tested.
            #[cfg(target_arch = "x86_64")]
            prop_assert!(whole.jumps.is_some() || !std::is_x86_feature_detected!("ssse3"));
            whole.feed(text.as_bytes());
            prop_assert_eq!(&whole.lines.names, &every_line.lines.names);
            let starts: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| starts[c.index(starts.len())]).collect();
            at.extend([0, text.len()]);
            at.sort_unstable();
            at.dedup();
            let mut jumping = Parser::new(&wanted);
            for pair in at.windows(2) {
                jumping.feed(&text.as_bytes()[pair[0]..pair[1]]);
            }
            prop_assert_eq!(jumping.lines.names, every_line.lines.names);
        }
    }
}
