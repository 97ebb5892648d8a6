//! [`CpuSet`]: a set of logical CPU ids, in the kernel's two text forms.
//!
//! * cpulist (`online`, `*_list`, `node*/cpulist`, `local_cpulist`): `0-3,8-11`, possibly empty, possibly
//!   with adjacent unmerged ranges (`2,4-31,32-63`).
//! * hex mask (`cpumap`, `thread_siblings`, `local_cpus`): comma-separated 32-bit words, most significant
//!   word first (`00000000,0000ffff`); the first word may be shorter (`fffff`, `ffff,ffffffff`).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// The largest CPU id this crate accepts (exclusive). The kernel's `CONFIG_NR_CPUS` tops out at 8192;
/// the cap keeps a hostile `0-4294967295` from allocating gigabytes.
pub const MAX_CPUS: u32 = 1 << 16;

/// A set of logical CPU ids (a bitmap). Formats as a kernel cpulist.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet {
    /// Bit `i % 64` of word `i / 64` is CPU `i`. No trailing zero words (so equality is structural).
    words: Vec<u64>,
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a kernel cpulist such as `0-3,8-11` (whitespace and NULs around it are ignored; empty means
    /// empty).
    /// Ids must be below [`MAX_CPUS`]; a range costs one step per 64 CPUs, so a 64 KiB list of
    /// `0-65535,` items is read in milliseconds.
    pub fn from_cpulist(text: &str) -> Result<Self, ParseError> {
        Self::from_cpulist_below(text, MAX_CPUS)
    }

    /// [`CpuSet::from_cpulist`] for a machine whose CPU ids are below `limit` (its `cpu/possible`):
    /// a larger id is an error.
    /// Reading stops at the first such id.
    pub fn from_cpulist_below(text: &str, limit: u32) -> Result<Self, ParseError> {
        let text = crate::text::trim_kernel_text(text);
        let mut set = CpuSet::new();
        if text.is_empty() {
            return Ok(set);
        }
        for item in text.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (parse_cpu_id(a, text)?, parse_cpu_id(b, text)?),
                None => {
                    let id = parse_cpu_id(item, text)?;
                    (id, id)
                }
            };
            if first > last {
                return Err(ParseError::new(
                    "cpulist",
                    text,
                    "range start is above its end",
                ));
            }
            if last >= limit {
                return Err(ParseError::new("cpulist", text, ABOVE_POSSIBLE));
            }
            set.insert_range(first, last);
        }
        Ok(set)
    }

    /// Parses a kernel hex cpumask such as `00000000,0000ffff` (most significant 32-bit word first;
    /// whitespace and NULs around it are ignored).
    pub fn from_hex_mask(text: &str) -> Result<Self, ParseError> {
        Self::parse_hex_mask(text)
    }

    /// [`CpuSet::from_hex_mask`] for a machine whose CPU ids are below `limit`: a set bit at or above
    /// it is an error (a mask may be wider than `limit`, as the kernel rounds it up to 32 bits).
    pub fn from_hex_mask_below(text: &str, limit: u32) -> Result<Self, ParseError> {
        let set = Self::parse_hex_mask(text)?;
        within(set, limit, "cpumask", text)
    }

    fn parse_hex_mask(text: &str) -> Result<Self, ParseError> {
        let text = crate::text::trim_kernel_text(text);
        if text.is_empty() {
            return Err(ParseError::new("cpumask", text, "empty mask"));
        }
        let words: Vec<&str> = text.split(',').collect();
        if words.len() > (MAX_CPUS / 32) as usize {
            return Err(ParseError::new(
                "cpumask",
                text,
                "mask is wider than the supported CPU count",
            ));
        }
        let mut set = CpuSet::new();
        for (position, word) in words.iter().rev().enumerate() {
            let word = word.strip_prefix("0x").unwrap_or(word);
            if word.is_empty() || word.len() > 8 || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::new(
                    "cpumask",
                    text,
                    "each word must be 1 to 8 hex digits",
                ));
            }
            let value = u32::from_str_radix(word, 16)
                .map_err(|_| ParseError::new("cpumask", text, "invalid hex word"))?;
            let base = position as u32 * 32;
            for bit in 0..32 {
                if value & (1 << bit) != 0 {
                    set.insert(base + bit);
                }
            }
        }
        Ok(set)
    }

    /// Builds a set from CPU ids. Ids at or above [`MAX_CPUS`] are rejected.
    pub fn from_ids<I: IntoIterator<Item = u32>>(ids: I) -> Result<Self, ParseError> {
        let mut set = CpuSet::new();
        for id in ids {
            if id >= MAX_CPUS {
                return Err(ParseError::new(
                    "cpu id",
                    &id.to_string(),
                    "above the supported CPU count",
                ));
            }
            set.insert(id);
        }
        Ok(set)
    }

    /// Adds one CPU. Ids at or above [`MAX_CPUS`] are ignored (they cannot be produced by the parsers).
    pub fn insert(&mut self, cpu: u32) {
        if cpu >= MAX_CPUS {
            return;
        }
        let (word, bit) = ((cpu / 64) as usize, cpu % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if let Some(w) = self.words.get_mut(word) {
            *w |= 1 << bit;
        }
    }

    /// Adds `first..=last` a 64-bit word at a time (ids at or above [`MAX_CPUS`] are ignored).
    fn insert_range(&mut self, first: u32, last: u32) {
        let last = last.min(MAX_CPUS - 1);
        if first > last {
            return;
        }
        let (first_word, last_word) = ((first / 64) as usize, (last / 64) as usize);
        if self.words.len() <= last_word {
            self.words.resize(last_word + 1, 0);
        }
        let words = self.words.iter_mut().enumerate();
        for (index, word) in words.take(last_word + 1).skip(first_word) {
            let low = if index == first_word { first % 64 } else { 0 };
            let high = if index == last_word { last % 64 } else { 63 };
            *word |= (u64::MAX >> (63 - high)) & (u64::MAX << low);
        }
    }

    /// Removes one CPU.
    pub fn remove(&mut self, cpu: u32) {
        if let Some(w) = self.words.get_mut((cpu / 64) as usize) {
            *w &= !(1 << (cpu % 64));
        }
        self.trim();
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.words
            .get((cpu / 64) as usize)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The lowest CPU id, if any.
    pub fn first(&self) -> Option<u32> {
        self.iter().next()
    }

    /// The highest CPU id, if any.
    pub fn last(&self) -> Option<u32> {
        let (index, word) = self
            .words
            .iter()
            .enumerate()
            .rev()
            .find(|(_, w)| **w != 0)?;
        Some(index as u32 * 64 + 63 - word.leading_zeros())
    }

    /// CPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let base = index as u32 * 64;
            (0..64u32)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| base + bit)
        })
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let mut out = CpuSet {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        };
        out.trim();
        out
    }

    /// CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let len = self.words.len().max(other.words.len());
        let words = (0..len)
            .map(|i| {
                self.words.get(i).copied().unwrap_or(0) | other.words.get(i).copied().unwrap_or(0)
            })
            .collect();
        CpuSet { words }
    }

    /// CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        let mut out = CpuSet {
            words: self
                .words
                .iter()
                .enumerate()
                .map(|(i, a)| a & !other.words.get(i).copied().unwrap_or(0))
                .collect(),
        };
        out.trim();
        out
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Formats as a kernel cpulist (`0-3,8-11`; empty string for the empty set).
    pub fn to_cpulist(&self) -> String {
        self.to_string()
    }

    /// Formats as a kernel hex mask for a machine with `nr_cpu_ids` possible CPUs: 32-bit words, most
    /// significant first, the first word only as wide as needed (`fffff` for 20 CPUs). The width grows to
    /// hold the highest CPU in the set if `nr_cpu_ids` is too small, and is at most [`MAX_CPUS`] (as
    /// [`CpuSet::from_hex_mask`] reads).
    pub fn to_hex_mask(&self, nr_cpu_ids: u32) -> String {
        let bits = nr_cpu_ids
            .min(MAX_CPUS)
            .max(self.last().map_or(0, |l| l + 1))
            .max(1);
        let word_count = bits.div_ceil(32);
        let mut out = String::with_capacity(word_count as usize * 9);
        for word_index in (0..word_count).rev() {
            let value = self.word32(word_index);
            if word_index == word_count - 1 {
                let top_bits = bits - word_index * 32;
                let digits = top_bits.div_ceil(4) as usize;
                out.push_str(&format!("{value:0digits$x}"));
            } else {
                out.push_str(&format!(",{value:08x}"));
            }
        }
        out
    }

    fn word32(&self, index: u32) -> u32 {
        let word = self.words.get((index / 2) as usize).copied().unwrap_or(0);
        if index.is_multiple_of(2) {
            word as u32
        } else {
            (word >> 32) as u32
        }
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
}

const ABOVE_POSSIBLE: &str = "CPU id above the machine's possible CPUs";

/// `set`, unless it holds a CPU at or above `limit`.
fn within(set: CpuSet, limit: u32, what: &'static str, text: &str) -> Result<CpuSet, ParseError> {
    match set.last() {
        Some(last) if last >= limit => Err(ParseError::new(what, text, ABOVE_POSSIBLE)),
        _ => Ok(set),
    }
}

fn parse_cpu_id(item: &str, whole: &str) -> Result<u32, ParseError> {
    if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            "cpulist",
            whole,
            "items must be decimal N or A-B",
        ));
    }
    match item.parse::<u32>() {
        Ok(id) if id < MAX_CPUS => Ok(id),
        _ => Err(ParseError::new(
            "cpulist",
            whole,
            "CPU id above the supported CPU count",
        )),
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = self.iter().peekable();
        let mut first_item = true;
        while let Some(start) = ids.next() {
            let mut end = start;
            while ids.peek() == Some(&(end + 1)) {
                end += 1;
                ids.next();
            }
            if !first_item {
                f.write_str(",")?;
            }
            first_item = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

impl FromStr for CpuSet {
    type Err = ParseError;
    /// Parses the cpulist form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_cpulist(s)
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut set = CpuSet::new();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CpuSet::from_cpulist(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kernel_cpulists() {
        assert_eq!(
            CpuSet::from_cpulist("0-3,8-11")
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [0, 1, 2, 3, 8, 9, 10, 11]
        );
        assert_eq!(CpuSet::from_cpulist("\n").unwrap(), CpuSet::new());
        assert_eq!(
            CpuSet::from_cpulist("2,4-31,32-63\n").unwrap().to_cpulist(),
            "2,4-63"
        );
        assert_eq!(CpuSet::from_cpulist("0,2,4,6").unwrap().len(), 4);
    }

    #[test]
    fn rejects_bad_cpulists() {
        for bad in [
            "0-",
            "-3",
            "a",
            "3-1",
            "1,,2",
            "0-4294967295",
            "65536",
            " 1 - 2",
            "1:2",
        ] {
            let err = CpuSet::from_cpulist(bad).unwrap_err();
            assert!(err.to_string().contains("cpulist"), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_kernel_hex_masks() {
        assert_eq!(
            CpuSet::from_hex_mask("00000000,0000ffff")
                .unwrap()
                .to_cpulist(),
            "0-15"
        );
        assert_eq!(CpuSet::from_hex_mask("fffff").unwrap().to_cpulist(), "0-19");
        assert_eq!(
            CpuSet::from_hex_mask("0000,00000000,000000ff,ff000000,00000000,00000000")
                .unwrap()
                .to_cpulist(),
            "88-103"
        );
        assert_eq!(
            CpuSet::from_hex_mask("00000000,00000000\n").unwrap(),
            CpuSet::new()
        );
    }

    #[test]
    fn rejects_bad_hex_masks() {
        for bad in ["", "xyz", "123456789", "ff,,ff", "ff,"] {
            assert!(CpuSet::from_hex_mask(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_hex_masks_like_the_kernel() {
        let set = CpuSet::from_cpulist("0-15").unwrap();
        assert_eq!(set.to_hex_mask(64), "00000000,0000ffff");
        assert_eq!(
            CpuSet::from_cpulist("0-19").unwrap().to_hex_mask(20),
            "fffff"
        );
        assert_eq!(
            CpuSet::from_cpulist("0-47").unwrap().to_hex_mask(48),
            "ffff,ffffffff"
        );
        assert_eq!(CpuSet::new().to_hex_mask(8), "00");
        // At most as wide as a mask that reads back (not 1.2 GB for `u32::MAX`).
        let widest = CpuSet::from_cpulist("1").unwrap().to_hex_mask(u32::MAX);
        assert_eq!(widest.len(), (MAX_CPUS / 32 * 9 - 1) as usize);
        assert_eq!(
            CpuSet::from_hex_mask(&widest).unwrap(),
            CpuSet::from_cpulist("1").unwrap()
        );
    }

    #[test]
    fn set_algebra() {
        let a = CpuSet::from_cpulist("0-7").unwrap();
        let b = CpuSet::from_cpulist("4-11").unwrap();
        assert_eq!(a.intersection(&b).to_cpulist(), "4-7");
        assert_eq!(a.union(&b).to_cpulist(), "0-11");
        assert_eq!(a.difference(&b).to_cpulist(), "0-3");
        assert!(CpuSet::from_cpulist("1,2").unwrap().is_subset(&a));
        assert_eq!(b.first(), Some(4));
        assert_eq!(b.last(), Some(11));
        let mut c = CpuSet::from_cpulist("64").unwrap();
        c.remove(64);
        assert_eq!(c, CpuSet::new());
    }

    #[test]
    fn ids_above_the_machines_possible_cpus_are_errors() {
        // 64 KiB of whole-range items: read a word at a time, not CPU by CPU.
        let huge = vec!["0-65535"; 8 * 1024].join(",");
        assert_eq!(CpuSet::from_cpulist(&huge).unwrap().len(), 65536);
        let err = CpuSet::from_cpulist_below(&huge, 224).unwrap_err();
        assert_eq!(err.reason, "CPU id above the machine's possible CPUs");
        assert!(
            CpuSet::from_cpulist_below("0-65536", 224).is_err(),
            "above MAX_CPUS"
        );
        assert_eq!(CpuSet::from_cpulist_below("0-223", 224).unwrap().len(), 224);
        assert_eq!(CpuSet::from_cpulist_below("", 224).unwrap(), CpuSet::new());
        // Masks are as wide as the kernel rounds them: only set bits count.
        let mask = "00000000,00000000,00000000,00000000,00000000,00000000,ffffffff";
        assert_eq!(CpuSet::from_hex_mask_below(mask, 32).unwrap().len(), 32);
        let err = CpuSet::from_hex_mask_below("1,00000000", 32).unwrap_err();
        assert_eq!(err.reason, "CPU id above the machine's possible CPUs");
        // Word edges.
        for (text, ids) in [
            ("63-64", vec![63, 64]),
            ("0-0", vec![0]),
            ("127-128", vec![127, 128]),
        ] {
            let set = CpuSet::from_cpulist(text).unwrap();
            assert_eq!(set.iter().collect::<Vec<_>>(), ids, "{text}");
        }
        let top = CpuSet::from_cpulist("65472-65535").unwrap();
        assert_eq!(
            (top.len(), top.first(), top.last()),
            (64, Some(65472), Some(65535))
        );
    }

    fn any_set() -> impl Strategy<Value = CpuSet> {
        proptest::collection::btree_set(0u32..600, 0..80).prop_map(|ids| ids.into_iter().collect())
    }

    proptest! {
        #[test]
        fn cpulist_round_trips(set in any_set()) {
            prop_assert_eq!(CpuSet::from_cpulist(&set.to_cpulist()).unwrap(), set);
        }

        #[test]
        fn hex_mask_round_trips(set in any_set(), width in 1u32..700) {
            let mask = set.to_hex_mask(width);
            prop_assert_eq!(CpuSet::from_hex_mask(&mask).unwrap(), set);
        }

        #[test]
        fn cpulist_output_is_canonical(set in any_set()) {
            // Ascending, merged ranges: re-formatting the parse of the output is the identity.
            let text = set.to_cpulist();
            prop_assert_eq!(CpuSet::from_cpulist(&text).unwrap().to_cpulist(), text);
        }

        #[test]
        fn ranges_hold_exactly_their_cpus(
            ranges in proptest::collection::vec((0u32..300, 0u32..200), 1..6),
        ) {
            let text = ranges
                .iter()
                .map(|(first, len)| format!("{first}-{}", first + len))
                .collect::<Vec<_>>()
                .join(",");
            let mut one_by_one = CpuSet::new();
            for (first, len) in &ranges {
                (*first..=first + len).for_each(|cpu| one_by_one.insert(cpu));
            }
            prop_assert_eq!(CpuSet::from_cpulist(&text).unwrap(), one_by_one);
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,40}") {
            let _ = CpuSet::from_cpulist(&text);
            let _ = CpuSet::from_hex_mask(&text);
        }

        #[test]
        fn algebra_matches_btreeset(a in any_set(), b in any_set()) {
            use std::collections::BTreeSet;
            let (x, y): (BTreeSet<u32>, BTreeSet<u32>) = (a.iter().collect(), b.iter().collect());
            prop_assert_eq!(a.union(&b).iter().collect::<BTreeSet<_>>(), &x | &y);
            prop_assert_eq!(a.intersection(&b).iter().collect::<BTreeSet<_>>(), &x & &y);
            prop_assert_eq!(a.difference(&b).iter().collect::<BTreeSet<_>>(), &x - &y);
            prop_assert_eq!(a.len(), x.len());
        }
    }
}
