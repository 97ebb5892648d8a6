//! Fuzzes `NumaNode::from_kernel_text` (a device's `numa_node`): a node prints back to the same node,
//! "no node" is the kernel's `-1`.
#![no_main]

use hal::NumaNode;
use hal::numa::MAX_NUMA_NODES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(node) = NumaNode::from_kernel_text(text) else {
        return;
    };
    let printed = match node {
        Some(n) => {
            assert!(n.id() < MAX_NUMA_NODES, "node {n:?} out of range");
            n.to_string()
        }
        None => "-1".to_owned(),
    };
    let reparsed = NumaNode::from_kernel_text(&printed).expect("printed node must parse");
    assert_eq!(reparsed, node, "numa_node round trip (printed {printed:?})");
    // The kernel writes a trailing newline; that must not change the answer.
    assert_eq!(
        NumaNode::from_kernel_text(&format!("{printed}\n")).ok(),
        Some(node)
    );
});
