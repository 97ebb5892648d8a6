//! Fuzzes `Quantity::parse` (ResourceSlice capacities and counters, claim capacity requests, read
//! by `hal-probe explain` from any cluster): whatever parses must print back to a quantity that
//! parses to the same value, and the printed form is a fixed point.
#![no_main]

use hal::quantity::Quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(quantity) = Quantity::parse(text) else {
        return;
    };
    let printed = quantity.to_string();
    let reparsed = Quantity::parse(&printed).expect("Display output must parse");
    assert_eq!(reparsed, quantity, "round trip changed {text:?} (printed {printed:?})");
    assert_eq!(reparsed.to_string(), printed);
});
