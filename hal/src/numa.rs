//! [`NumaNode`]: a NUMA node id, absent when the kernel says -1.

use std::fmt;

use crate::error::ParseError;

/// A NUMA node id. The kernel's "-1" (unknown / no affinity) is represented as `None` by
/// [`NumaNode::from_kernel_text`], never as a node.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NumaNode(pub u32);

/// The kernel's `MAX_NUMNODES` is at most 1024 (`NODES_SHIFT` 10); ids at or above are rejected.
pub const MAX_NUMA_NODES: u32 = 1 << 10;

impl NumaNode {
    /// Parses a sysfs `numa_node` value: a decimal id, or `-1` for "no node" (returned as `Ok(None)`).
    pub fn from_kernel_text(text: &str) -> Result<Option<NumaNode>, ParseError> {
        let text = text.trim();
        let value: i64 = text
            .parse()
            .map_err(|_| ParseError::new("NUMA node", text, "not a decimal integer"))?;
        match value {
            -1 => Ok(None),
            v if (0..i64::from(MAX_NUMA_NODES)).contains(&v) => Ok(Some(NumaNode(v as u32))),
            _ => Err(ParseError::new(
                "NUMA node",
                text,
                "out of range (expected -1 or 0..1023)",
            )),
        }
    }

    /// The node id.
    pub fn id(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NumaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for NumaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumaNode({})", self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minus_one_is_absent() {
        assert_eq!(NumaNode::from_kernel_text("-1\n").unwrap(), None);
        assert_eq!(NumaNode::from_kernel_text("3").unwrap(), Some(NumaNode(3)));
        for bad in ["", "-2", "x", "1024", "99999999999999999999"] {
            assert!(NumaNode::from_kernel_text(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(id in 0u32..MAX_NUMA_NODES) {
            prop_assert_eq!(NumaNode::from_kernel_text(&NumaNode(id).to_string()).unwrap(), Some(NumaNode(id)));
        }
        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = NumaNode::from_kernel_text(&text);
        }
    }
}
