//! [`Inventory`]: the machine as [`backends::inventory`] reads it, plus what this driver knows beside
//! the hardware (the kernel's real-time limit, the devices' health), and the fixture answers that stand for
//! the vendor libraries behind `--fixture` ([`FixtureVendors`]).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

pub use crate::unhealthy::{DeviceKey, Unhealthy};
pub use backends::inventory::{Backends, Vendors, boot_id, is_this_machine};

/// The hardware ([`backends::inventory::Inventory`], reached through `Deref`) and the driver's own facts
/// about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// CPUs, PCI functions, SR-IOV, RDMA devices, GPUs and what could not be read.
    pub machine: backends::inventory::Inventory,
    /// The kernel's real-time bandwidth limit (`proc/sys/kernel/sched_rt_*`), when readable.
    pub rt_limit: Option<crate::plugin::rt::RtLimit>,
    /// Devices known to be unhealthy (kept by [`crate::health::Health`]), published with a taint
    /// and reported to the kubelet.
    pub health: BTreeMap<DeviceKey, Unhealthy>,
    /// Functions withheld from publication (the node's own network, `--exclude-interfaces`,
    /// `--device-filter`; see [`crate::podnet::withhold`]): no devices, but still on the node, in
    /// IOMMU groups a function given to a pod through VFIO may share.
    pub withheld: Vec<hal::PciFunction>,
}

impl Deref for Inventory {
    type Target = backends::inventory::Inventory;

    fn deref(&self) -> &Self::Target {
        &self.machine
    }
}

impl DerefMut for Inventory {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.machine
    }
}

impl From<backends::inventory::Inventory> for Inventory {
    /// The hardware alone: no real-time limit, every device healthy.
    fn from(machine: backends::inventory::Inventory) -> Self {
        Inventory {
            machine,
            ..Inventory::default()
        }
    }
}

impl Inventory {
    /// Reads every family from `backends` ([`backends::inventory::Inventory::read`]).
    pub fn read(backends: &Backends<'_>) -> Inventory {
        backends::inventory::Inventory::read(backends).into()
    }

    /// Reads a machine through the sysfs backends under `root`, with names from the pci.ids file at
    /// `pci_ids` when given, and the kernel's real-time limit.
    pub fn from_sysfs(root: &backends::SysfsRoot, pci_ids: Option<&std::path::Path>) -> Inventory {
        Inventory::from_machine(root, pci_ids, Vendors::default())
    }

    /// Like [`Inventory::from_sysfs`], with GPUs and RDMA devices enriched by the `vendors` libraries.
    pub fn from_machine(
        root: &backends::SysfsRoot,
        pci_ids: Option<&std::path::Path>,
        vendors: Vendors,
    ) -> Inventory {
        Inventory {
            machine: backends::inventory::Inventory::from_machine(root, pci_ids, vendors),
            rt_limit: crate::plugin::rt::RtLimit::read(root.root()),
            health: BTreeMap::new(),
            withheld: Vec::new(),
        }
    }
}

/// [`Vendors`] for this binary: the real libraries, or a fixture's recorded answers (`--fixture`).
/// Bring it into scope to call `Vendors::for_machine` and `Vendors::for_root`.
pub trait FixtureVendors: Sized {
    /// The libraries this binary is built with (NVML always; Level Zero and verbs with the
    /// `level-zero` and `verbs` features): the fixture's recorded answers, or the real libraries.
    fn for_machine(fixture: Option<&str>) -> Self;

    /// [`FixtureVendors::for_machine`] for the tree under `root`: a tree that is not this machine's
    /// ([`is_this_machine`]) is read without the real libraries ([`Vendors::for_tree`]); a fixture
    /// gets its recorded answers.
    fn for_root(root: &backends::SysfsRoot, fixture: Option<&str>) -> Self;
}

impl FixtureVendors for Vendors {
    fn for_machine(fixture: Option<&str>) -> Vendors {
        Vendors {
            nvml: Some(nvml_for(fixture)),
            level_zero: level_zero_for(fixture),
            verbs: verbs_for(fixture),
        }
    }

    fn for_root(root: &backends::SysfsRoot, fixture: Option<&str>) -> Vendors {
        match fixture.is_some() || is_this_machine(root.root()) {
            true => <Vendors as FixtureVendors>::for_machine(fixture),
            false => Vendors::default(),
        }
    }
}

/// The NVML seam for a machine: the fixture's recorded answers, or the real library on a node.
fn nvml_for(fixture: Option<&str>) -> Box<dyn backends::nvml::NvmlApi> {
    use backends::nvml::{FakeNvml, RealNvml};
    match fixture {
        None => Box::new(RealNvml),
        Some(name) => Box::new(FakeNvml(
            recorded(name, "NVML", crate::fixtures::nvml_answers(name)).map_err(|e| e.to_string()),
        )),
    }
}

/// The Level Zero seam for a machine, with the `level-zero` feature.
fn level_zero_for(fixture: Option<&str>) -> Option<Box<dyn backends::level_zero::LevelZeroApi>> {
    #[cfg(feature = "level-zero")]
    {
        use backends::level_zero::{FakeLevelZero, RealLevelZero};
        Some(match fixture {
            None => Box::new(RealLevelZero),
            Some(name) => Box::new(FakeLevelZero(
                recorded(
                    name,
                    "Level Zero",
                    crate::fixtures::level_zero_answers(name),
                )
                .map_err(|e| e.to_string()),
            )),
        })
    }
    #[cfg(not(feature = "level-zero"))]
    {
        let _ = fixture;
        None
    }
}

/// The verbs seam for a machine, with the `verbs` feature.
fn verbs_for(fixture: Option<&str>) -> Option<Box<dyn backends::verbs::VerbsApi>> {
    #[cfg(feature = "verbs")]
    {
        use backends::verbs::{FakeVerbs, RealVerbs};
        Some(match fixture {
            None => Box::new(RealVerbs),
            Some(name) => Box::new(FakeVerbs(
                recorded(name, "verbs", crate::fixtures::verbs_answers(name))
                    .map_err(|e| e.to_string()),
            )),
        })
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = fixture;
        None
    }
}

/// Why a fixture's recorded answers of a vendor library cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    /// The fixture has none.
    #[error("fixture {fixture} has no recorded {library} answers")]
    Missing {
        /// The fixture.
        fixture: String,
        /// `NVML`, `Level Zero` or `verbs`.
        library: &'static str,
    },
    /// They are not the library's answers.
    #[error("{fixture} {library} answers: {source}")]
    Malformed {
        /// The fixture.
        fixture: String,
        /// `NVML`, `Level Zero` or `verbs`.
        library: &'static str,
        /// Why they do not parse.
        #[source]
        source: serde_json::Error,
    },
}

impl RecordedError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            RecordedError::Missing { .. } => hal::ErrorKind::NotFound,
            RecordedError::Malformed { .. } => hal::ErrorKind::Malformed,
        }
    }
}

/// A fixture's recorded answers of `library`, parsed. A fixture without any plays a library that cannot
/// be used (its wrapper asks only on machines with devices for it, and then says so once); the
/// backends' fake libraries take that failure as the text the real ones give (their seam's error).
fn recorded<T: serde::de::DeserializeOwned>(
    name: &str,
    library: &'static str,
    json: Option<&str>,
) -> Result<T, RecordedError> {
    let json = json.ok_or_else(|| RecordedError::Missing {
        fixture: name.to_owned(),
        library,
    })?;
    serde_json::from_str(json).map_err(|source| RecordedError::Malformed {
        fixture: name.to_owned(),
        library,
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod recorded_tests {
    use super::*;

    #[test]
    fn recorded_answers_that_are_missing_or_malformed_name_the_fixture_and_the_library() {
        let missing = recorded::<Vec<u32>>("xeon", "NVML", None).unwrap_err();
        assert_eq!(missing.kind(), hal::ErrorKind::NotFound);
        assert_eq!(
            missing.to_string(),
            "fixture xeon has no recorded NVML answers"
        );
        let malformed = recorded::<Vec<u32>>("gb300", "verbs", Some("{")).unwrap_err();
        assert_eq!(malformed.kind(), hal::ErrorKind::Malformed);
        assert!(
            malformed.to_string().starts_with("gb300 verbs answers: "),
            "{malformed}"
        );
        assert_eq!(
            recorded::<Vec<u32>>("gb300", "verbs", Some("[1]")).unwrap(),
            [1]
        );
    }
}

#[cfg(all(test, feature = "level-zero", feature = "verbs"))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod vendor_tests {
    use super::*;

    #[test]
    fn a_capture_gets_no_vendor_libraries_and_a_fixture_its_recorded_answers() {
        let capture = tempfile::tempdir().unwrap();
        let root = backends::SysfsRoot::new(capture.path());
        let vendors = Vendors::for_root(&root, None);
        assert!(vendors.nvml.is_none() && vendors.level_zero.is_none() && vendors.verbs.is_none());
        let fixture = Vendors::for_root(&root, Some("gb300"));
        assert!(
            fixture.nvml.is_some(),
            "a fixture plays its recorded answers"
        );
    }

    fn read(name: &str) -> Inventory {
        let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let root = backends::SysfsRoot::new(machine.root());
        Inventory::from_machine(&root, None, Vendors::for_machine(Some(name)))
    }

    #[test]
    fn fixtures_are_enriched_by_their_recorded_level_zero_answers() {
        let inventory = read("i915");
        assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
        let flex: Vec<_> = inventory
            .gpus
            .iter()
            .filter(|g| g.tiles.is_some())
            .collect();
        assert_eq!(flex.len(), 2);
        assert!(flex.iter().all(|g| g.execution_units == Some(512)));
    }

    #[test]
    fn fixtures_are_enriched_by_their_recorded_verbs_answers() {
        let inventory = read("gb300");
        assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
        assert_eq!(inventory.rdma.len(), 4);
        for device in &inventory.rdma {
            assert_eq!(device.max_qp, Some(131_072));
            assert_eq!(device.ports[0].active_mtu, Some(4096));
        }
    }
}
