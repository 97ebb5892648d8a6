//! Fuzzes `CpuSet::from_hex_mask` (`cpumap`, `thread_siblings`, `local_cpus`): whatever parses must
//! round-trip through `to_hex_mask` at the input's own width and at the set's minimal width.
#![no_main]

use hal::CpuSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = CpuSet::from_hex_mask(text) else {
        return;
    };
    // The width the input claimed: one 32-bit word per comma-separated field.
    let words = text.trim().split(',').count() as u32;
    for width in [words * 32, 0] {
        let printed = set.to_hex_mask(width);
        let reparsed = CpuSet::from_hex_mask(&printed).expect("to_hex_mask output must parse");
        assert_eq!(
            reparsed, set,
            "hex mask round trip changed the set (width {width}, printed {printed:?})"
        );
    }
    // And the cpulist form agrees with the mask form.
    let via_list = CpuSet::from_cpulist(&set.to_cpulist()).expect("to_cpulist output must parse");
    assert_eq!(via_list, set);
});
