//! PCIe bridges (root ports, switch ports, PCIe-to-PCI bridges): the kernel lists each one under
//! `sys/bus/pci/devices` as a function of its own (class 0x0604xx, most bound to `pcieport`), at its
//! place in the path of the functions below it. A fixture names them in the functions' `bridges`
//! chains and gives their identity once in its top-level `bridges` list.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use hal::PciAddress;

use crate::pci::PciFunctionSpec;

/// PCI-to-PCI bridge, normal decode: the class the kernel shows for root and switch ports.
const BRIDGE_CLASS: u32 = 0x060400;

/// The identity of one bridge of a fixture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// Its address, as named in the functions' `bridges` chains.
    pub address: PciAddress,
    /// `vendor`.
    #[serde(with = "crate::hex::u16_hex")]
    pub vendor: u16,
    /// `device`.
    #[serde(with = "crate::hex::u16_hex")]
    pub device: u16,
    /// Bound driver: `pcieport` when left out, none when `null` (a PCIe-to-PCI bridge).
    #[serde(default = "pcieport")]
    pub driver: Option<String>,
}

fn pcieport() -> Option<String> {
    Some("pcieport".to_owned())
}

/// The bridges of `functions`' chains as functions of their own, outermost first: each once, with
/// the root, NUMA node and local CPUs of the first function below it, and an IOMMU group of its own
/// (the highest unused number below the groups of the functions under it, so the groups the
/// emulated kernel gives new VFs stay as they were) when those functions have groups.
pub(crate) fn bridge_functions(
    functions: &[PciFunctionSpec],
    identities: &[BridgeSpec],
) -> io::Result<Vec<PciFunctionSpec>> {
    let mut used: BTreeSet<u32> = functions.iter().filter_map(|f| f.iommu_group).collect();
    let mut bridges: BTreeMap<PciAddress, PciFunctionSpec> = BTreeMap::new();
    for function in functions {
        // Nearest first: the port just above a function takes the number just below its group.
        for (depth, address) in function.bridges.iter().enumerate().rev() {
            if bridges.contains_key(address) {
                continue;
            }
            let identity = identities
                .iter()
                .find(|b| b.address == *address)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bridge {address} above {} has no entry in `bridges`",
                            function.address
                        ),
                    )
                })?;
            let below = functions
                .iter()
                .filter(|f| f.bridges.contains(address))
                .filter_map(|f| f.iommu_group)
                .min();
            let iommu_group = below.and_then(|g| (0..g).rev().find(|n| !used.contains(n)));
            used.extend(iommu_group);
            bridges.insert(
                *address,
                PciFunctionSpec {
                    address: *address,
                    bridges: function.bridges.iter().take(depth).copied().collect(),
                    vendor: identity.vendor,
                    device: identity.device,
                    class: BRIDGE_CLASS,
                    netdevs: Vec::new(),
                    driver: identity.driver.clone(),
                    iommu_group,
                    sriov: None,
                    ..function.clone()
                },
            );
        }
    }
    let mut out: Vec<PciFunctionSpec> = bridges.into_values().collect();
    out.sort_by_key(|b| b.bridges.len());
    Ok(out)
}

/// Renders the bridges of `functions` (see [`bridge_functions`]) under `root`.
pub(crate) fn render(
    root: &Path,
    functions: &[PciFunctionSpec],
    identities: &[BridgeSpec],
) -> io::Result<()> {
    for bridge in bridge_functions(functions, identities)? {
        bridge.render(root)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn each_bridge_once_outermost_first_with_a_group_of_its_own() {
        let i915 = crate::by_name("i915").unwrap();
        let bridges = bridge_functions(&i915.pci, &i915.bridges).unwrap();
        let shown: Vec<String> = bridges
            .iter()
            .map(|b| {
                format!(
                    "{} {} {:?}",
                    b.sysfs_dir().display(),
                    b.driver.as_deref().unwrap_or("-"),
                    b.iommu_group
                )
            })
            .collect();
        assert_eq!(
            shown[..5],
            [
                "sys/devices/pci0000:00/0000:00:1c.5 pcieport Some(10)",
                "sys/devices/pci0000:4a/0000:4a:02.0 pcieport Some(30)",
                "sys/devices/pci0000:c7/0000:c7:02.0 pcieport Some(74)",
                "sys/devices/pci0000:00/0000:00:1c.5/0000:02:00.0 - Some(11)",
                "sys/devices/pci0000:4a/0000:4a:02.0/0000:4b:00.0 pcieport Some(31)",
            ]
        );
        assert_eq!(bridges.len(), i915.bridges.len());
        assert!(bridges.iter().all(|b| b.class == BRIDGE_CLASS));
        // A chain naming a bridge the fixture does not describe is an error, not a guess.
        let err = bridge_functions(&i915.pci, &i915.bridges[1..]).unwrap_err();
        assert!(err.to_string().contains("0000:00:1c.5"), "{err}");
    }
}
