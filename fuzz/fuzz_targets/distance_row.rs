//! Fuzzes `parse_distances` (a `node*/distance` SLIT row): whatever parses must print back, space
//! separated, to the same row.
#![no_main]

use backends::sysfs::numa::parse_distances;
use hal::numa::MAX_NUMA_NODES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(row) = parse_distances(text) else {
        return;
    };
    assert!(
        row.len() <= MAX_NUMA_NODES as usize,
        "row of {} entries accepted",
        row.len()
    );
    let printed = row.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let reparsed = parse_distances(&printed).expect("printed distance row must parse");
    assert_eq!(
        reparsed, row,
        "distance row round trip (printed {printed:?})"
    );
});
