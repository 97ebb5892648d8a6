//! Fuzzes the RDMA attribute parsers: port `rate` (`400 Gb/sec (4X NDR)`) and a char device's `dev`
//! (`231:192`). Whatever parses must print back to the same value.
#![no_main]

use backends::sysfs::rdma::{parse_dev, parse_rate_mbps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mbps) = parse_rate_mbps(text) {
        let printed = format!("{}.{:03} Gb/sec (4X)", mbps / 1000, mbps % 1000);
        assert_eq!(parse_rate_mbps(&printed).expect("printed rate must parse"), mbps);
    }
    if let Ok((major, minor)) = parse_dev(text) {
        let printed = format!("{major}:{minor}");
        assert_eq!(parse_dev(&printed).expect("printed dev must parse"), (major, minor));
    }
});
