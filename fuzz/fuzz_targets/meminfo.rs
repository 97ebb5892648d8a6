//! Fuzzes `parse_mem_total` (`node*/meminfo`): the result is whole KiB, and printing it back as a
//! `Node N MemTotal: K kB` line parses to the same byte count.
#![no_main]

use backends::sysfs::numa::parse_mem_total;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(bytes) = parse_mem_total(text) else {
        return;
    };
    assert_eq!(bytes % 1024, 0, "MemTotal {bytes} is not whole KiB");
    let printed = format!(
        "Node 0 MemTotal:       {} kB\nNode 0 MemFree:        0 kB\n",
        bytes / 1024
    );
    let reparsed = parse_mem_total(&printed).expect("printed meminfo must parse");
    assert_eq!(reparsed, bytes, "meminfo round trip (printed {printed:?})");
});
