//! Fuzzes the kernel uevent parser of the hotplug watcher (`backends` feature `udev`): any datagram,
//! no panic; a parsed event has the action and subsystem of its `KEY=value` fields.
#![no_main]

use backends::udev::parse_uevent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(event) = parse_uevent(data) {
        assert_eq!(event.vars.get("ACTION"), Some(&event.action));
        assert_eq!(event.vars.get("SUBSYSTEM"), Some(&event.subsystem));
    }
});
