//! Fuzzes `PciAddress::parse` (`dddd:bb:dd.f`) and `PcieRoot::parse` (`pciDDDD:BB`): whatever parses
//! must print back to text that parses to the same value.
#![no_main]

use hal::{PciAddress, PcieRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = PciAddress::parse(text) {
        let printed = address.to_string();
        let reparsed = PciAddress::parse(&printed).expect("PciAddress Display output must parse");
        assert_eq!(
            reparsed, address,
            "PciAddress round trip (printed {printed:?})"
        );
        assert!(address.device <= 31 && address.function <= 7);
        // Its bus root names a root that parses back too.
        let root = address.bus_root();
        let root_text = root.to_string();
        assert_eq!(
            PcieRoot::parse(&root_text).expect("bus_root must parse"),
            root
        );
    }
    if let Ok(root) = PcieRoot::parse(text) {
        let printed = root.to_string();
        let reparsed = PcieRoot::parse(&printed).expect("PcieRoot Display output must parse");
        assert_eq!(reparsed, root, "PcieRoot round trip (printed {printed:?})");
    }
});
