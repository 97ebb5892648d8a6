//! This driver's names and values: device names from PCI addresses, vendor versions as semver,
//! attribute strings cut to the API server's limit (the rules themselves are the kit's
//! [`dra_kubelet_plugin::slices::names`]).

use dra_kubelet_plugin::slices::names::{MAX_VALUE_BYTES, is_semver};
use hal::PciAddress;

/// A vendor version (`580.105.08`, `13.0`, `10.3`) as strict semver (`580.105.8`, `13.0.0`, `10.3.0`):
/// leading zeros dropped, missing parts 0. `None` when it is not 1 to 3 dot-separated numbers.
pub fn semver_from_dotted(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut numbers = Vec::with_capacity(3);
    for part in parts {
        if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        numbers.push(part.parse::<u64>().ok()?);
    }
    numbers.resize(3, 0);
    let [major, minor, patch] = numbers.as_slice() else {
        return None;
    };
    let version = format!("{major}.{minor}.{patch}");
    is_semver(&version).then_some(version)
}

/// `mi` MiB as the API server stores a quantity (`resource.Quantity`'s canonical form): the largest
/// binary suffix that keeps the number whole (`16384Mi` is stored as `16Gi`). A slice written in
/// the stored form reads back equal, so a restart does not rewrite it.
pub fn mebibytes(mi: u64) -> String {
    canonical(mi, 1024, &["Mi", "Gi", "Ti", "Pi", "Ei"])
}

/// `mbit` Mbit/s in the stored form: the largest decimal suffix that keeps the number whole
/// (`25000M` is stored as `25G`).
pub fn megabits(mbit: u64) -> String {
    canonical(mbit, 1000, &["M", "G", "T", "P", "E"])
}

/// `milli` thousandths in the stored form (`7600m` stays, `8000m` is stored as `8`).
pub fn millis(milli: u64) -> String {
    canonical(milli, 1000, &["m", "", "k", "M", "G", "T", "P", "E"])
}

/// A count in the stored form (`64` stays, `1000` is stored as `1k`).
pub fn whole(count: u64) -> String {
    canonical(count, 1000, &["", "k", "M", "G", "T", "P", "E"])
}

fn canonical(mut value: u64, base: u64, suffixes: &[&str]) -> String {
    let mut at = 0;
    while value != 0 && value.is_multiple_of(base) && at + 1 < suffixes.len() {
        value /= base;
        at += 1;
    }
    match value {
        0 => "0".to_owned(),
        _ => format!("{value}{}", suffixes.get(at).copied().unwrap_or_default()),
    }
}

/// A string attribute value cut to 64 bytes on a character boundary.
pub fn attribute_string(text: &str) -> String {
    hal::text::truncate_utf8(text, MAX_VALUE_BYTES).to_owned()
}

/// The address in a device name: `0008:06:00.0` → `0008-06-00-0` (a 5-digit domain stays 5 digits).
pub fn address_label(address: PciAddress) -> String {
    address.to_string().replace([':', '.'], "-")
}
