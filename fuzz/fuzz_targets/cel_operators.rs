//! Fuzzes `hal::text::cel_operator_count` (the nesting bound checked before a recursive CEL parser
//! sees a selector or `--device-filter`): no panic on any text, and never fewer operators than the
//! operator characters outside quotes and comments of a text without them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let count = hal::text::cel_operator_count(text);
    if !text.contains(['"', '\'', '/']) {
        let plain = text.bytes().filter(|b| b"+-*%<>=!&|?:.[({".contains(b)).count();
        assert!(count >= plain, "{count} < {plain} for {text:?}");
    }
});
