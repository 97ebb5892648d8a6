//! Fuzzes `CpuSet::from_cpulist` (`online`, `*_list`, `node*/cpulist`): whatever parses must print back
//! to a cpulist that parses to the same set.
#![no_main]

use hal::CpuSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = CpuSet::from_cpulist(text) else {
        return;
    };
    let printed = set.to_cpulist();
    let reparsed = CpuSet::from_cpulist(&printed).expect("to_cpulist output must parse");
    assert_eq!(
        reparsed, set,
        "cpulist round trip changed the set (printed {printed:?})"
    );
    // The canonical form is a fixed point.
    assert_eq!(reparsed.to_cpulist(), printed);
});
