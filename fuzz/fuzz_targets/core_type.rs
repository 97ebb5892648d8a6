//! Fuzzes the arm core-type inputs: `cpu_capacity` (decimal) and `midr_el1` (hex) parse back from what
//! they print, and classifying any list of capacities or MIDRs gives one core type per CPU, never a
//! panic.
#![no_main]

use backends::sysfs::core_type::{
    classify_by_capacity, classify_by_midr, parse_capacity, parse_hex_u64,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(capacity) = parse_capacity(text) {
            assert_eq!(
                parse_capacity(&capacity.to_string()).expect("printed capacity"),
                capacity
            );
        }
        if let Ok(midr) = parse_hex_u64(text) {
            assert_eq!(
                parse_hex_u64(&format!("0x{midr:016x}")).expect("printed MIDR"),
                midr
            );
        }
    }
    let values: Vec<Option<u64>> = data
        .chunks(8)
        .map(|c| (c.len() == 8).then(|| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect();
    if let Some(kinds) = classify_by_capacity(&values) {
        assert_eq!(kinds.len(), values.len());
    }
    if let Some(kinds) = classify_by_midr(&values) {
        assert_eq!(kinds.len(), values.len());
    }
});
