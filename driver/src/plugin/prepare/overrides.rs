//! The `driver_override` of a function a claim rebinds, as it was before: recorded with the
//! original driver ([`Rebind::original_override`]) and put back by every undo (unprepare, the
//! rollback of a failed prepare, the rollback at start), so the node is left as the claim found
//! it. Binding writes the override (`SriovPf::bind_driver`), and giving the function back to its
//! driver wrote that driver's name there, where the override was usually unset: a later manual
//! bind of the function to another driver was refused until someone cleared it.

use hal::device::sriov::check_driver_override;

use super::{PrepareError, Rebind};
use crate::inventory::Inventory;

/// A function's `driver_override` before a claim rebound it. In the record: `"unset"`, or
/// `{"set": "<name>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DriverOverride {
    /// Unset (the kernel shows `(null)`).
    Unset,
    /// Set to this name.
    Set(String),
}

/// The override of the function at `address` before `driver` is bound to it, from the inventory
/// (kept as this process changes it: see `apply::note_driver`); `None` when the function is not in
/// it (the undo then does what earlier versions did: [`to_put_back`]). An override the undo could
/// not write back as it was ([`check_driver_override`]: longer than the kernel takes, with a
/// newline, ...) refuses the rebind, before anything is changed.
pub(super) fn before_rebind(
    inventory: &Inventory,
    device: &str,
    address: hal::PciAddress,
    driver: &str,
) -> Result<Option<DriverOverride>, PrepareError> {
    let Some(function) = inventory.function(address) else {
        return Ok(None);
    };
    match &function.driver_override {
        None => Ok(Some(DriverOverride::Unset)),
        Some(value) => match check_driver_override(value) {
            Ok(()) => Ok(Some(DriverOverride::Set(value.clone()))),
            Err(error) => Err(PrepareError::Machine(format!(
                "{device}: {address} is not bound to {driver}: its {error}"
            ))),
        },
    }
}

/// The override the undo of `rebind` puts back (`None`: unset). A record of an earlier version has
/// none: the undo leaves the override as those versions did (naming the original driver, or unset
/// when there was none), since the record does not say what it was, and clearing it could drop an
/// override an operator set to keep the function on its driver. A recorded one that could not be
/// written back as it was (a record edited by hand) is treated alike, and logged.
pub(super) fn to_put_back(rebind: &Rebind) -> Option<&str> {
    let earlier = rebind.original.as_deref();
    match &rebind.original_override {
        None => earlier,
        Some(DriverOverride::Unset) => None,
        Some(DriverOverride::Set(value)) => match check_driver_override(value) {
            Ok(()) => Some(value),
            Err(error) => {
                tracing::warn!(function = %rebind.function, %error,
                    "the recorded driver_override is not put back; left as earlier versions left it");
                earlier
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rebind(original: Option<&str>, recorded: serde_json::Value) -> Rebind {
        let mut value = serde_json::json!({"function": "0000:3b:01.1", "driver": "vfio-pci",
                                           "original": original});
        if !recorded.is_null() {
            value["originalOverride"] = recorded;
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_override_put_back_is_the_recorded_one_else_what_earlier_versions_left() {
        let set = serde_json::json!({"set": "none"});
        assert_eq!(
            to_put_back(&rebind(Some("iavf"), set.clone())),
            Some("none")
        );
        assert_eq!(to_put_back(&rebind(None, set)), Some("none"));
        let unset = serde_json::json!("unset");
        assert_eq!(to_put_back(&rebind(Some("iavf"), unset.clone())), None);
        assert_eq!(to_put_back(&rebind(None, unset)), None);
        // Written by an earlier version: no field.
        let old = rebind(Some("iavf"), serde_json::Value::Null);
        assert_eq!(old.original_override, None);
        assert_eq!(to_put_back(&old), Some("iavf"));
        assert_eq!(to_put_back(&rebind(None, serde_json::Value::Null)), None);
        // Edited into something the kernel would not keep as written.
        for bad in ["a\nb", "", "(null)", " iavf"] {
            let edited = rebind(Some("iavf"), serde_json::json!({ "set": bad }));
            assert_eq!(to_put_back(&edited), Some("iavf"), "{bad:?}");
        }
    }

    #[test]
    fn a_rebind_records_its_override_and_reads_back_the_same() {
        let recorded = Rebind {
            function: hal::PciAddress::parse("0000:3b:01.1").unwrap(),
            driver: "vfio-pci".into(),
            original: Some("iavf".into()),
            original_override: Some(DriverOverride::Unset),
        };
        let value = serde_json::to_value(&recorded).unwrap();
        assert_eq!(value["originalOverride"], "unset");
        assert_eq!(serde_json::from_value::<Rebind>(value).unwrap(), recorded);
        let set = Rebind {
            original_override: Some(DriverOverride::Set("iavf".into())),
            ..recorded
        };
        let value = serde_json::to_value(&set).unwrap();
        assert_eq!(
            value["originalOverride"],
            serde_json::json!({"set": "iavf"})
        );
        assert_eq!(serde_json::from_value::<Rebind>(value).unwrap(), set);
    }
}
