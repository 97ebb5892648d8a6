//! Fuzzes `parse_topology_id` (`core_id`, `physical_package_id`, `die_id`, `cluster_id`; `-1` means
//! absent) and `parse_u32`: whatever parses must print back to the same value.
#![no_main]

use backends::sysfs::attr::{parse_topology_id, parse_u32};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = parse_topology_id(text) {
        let printed = match id {
            Some(v) => v.to_string(),
            None => "-1".to_owned(),
        };
        let reparsed = parse_topology_id(&printed).expect("printed topology id must parse");
        assert_eq!(reparsed, id, "topology id round trip (printed {printed:?})");
    }
    if let Ok(value) = parse_u32(text) {
        let printed = value.to_string();
        assert_eq!(parse_u32(&printed).expect("printed u32 must parse"), value);
        // Every u32 is also a valid topology id.
        assert_eq!(
            parse_topology_id(&printed).expect("u32 is a topology id"),
            Some(value)
        );
    }
});
