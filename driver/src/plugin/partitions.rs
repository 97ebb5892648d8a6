//! Preparing SR-IOV partitions of Intel GPUs (see [`crate::slices::partitions`]): the first prepared
//! partition of a GPU creates its VFs (`sriov_numvfs`), each partition is then the VF of its index
//! (its DRM nodes go to the container), and the last one unprepared removes them, giving the GPU back
//! to whole-GPU use. The whole GPU and its partitions never go to two claims at once: the scheduler
//! keeps them apart through the shared counters, and this is checked again here.
//!
//! The VFs are created before the claim is recorded (the CDI spec needs the VF's DRM nodes): a prepare
//! that fails after that removes them again when no claim holds them; a crash in between leaves VFs
//! that no claim holds, which the next partition prepare uses as they are and a whole-GPU prepare
//! removes first. Rolling back an interrupted claim at start releases its partitions too.

use std::collections::BTreeMap;

use hal::{GpuDevice, PciAddress, SriovPf};

use super::checkpoint::ClaimRecord;
use super::prepare::PrepareError;
use crate::slices::devices::DeviceSource;
use crate::slices::partitions::counter_set_name;

/// The undo entry of a claim holding partitions of `pf`.
pub(crate) fn undo_key(pf: PciAddress) -> String {
    format!("{UNDO_PREFIX}{pf}")
}

/// The start of the undo keys of [`undo_key`].
pub(crate) const UNDO_PREFIX: &str = "partitions:";

/// Another claim (not `uid`) that holds partitions of `pf`.
fn partition_holder<'a>(
    state: &'a BTreeMap<String, ClaimRecord>,
    uid: &str,
    pf: PciAddress,
) -> Option<&'a str> {
    let key = undo_key(pf);
    state
        .iter()
        .find(|(other, record)| other.as_str() != uid && record.undo.contains_key(&key))
        .map(|(other, _)| other.as_str())
}

/// Turns the claim's partition sources into the GPUs (VFs) they are, creating the VFs when the GPU has
/// none; returns the undo entries that mark the claim as holding partitions. A whole GPU is refused
/// while another claim holds its partitions, and a partition while another claim holds the whole GPU.
pub fn prepare(
    binder: &dyn SriovPf,
    gpus: &dyn GpuDevice,
    state: &BTreeMap<String, ClaimRecord>,
    uid: &str,
    sources: &mut [DeviceSource],
    partitioned: &std::collections::BTreeSet<PciAddress>,
) -> Result<BTreeMap<String, serde_json::Value>, PrepareError> {
    let mut undo = BTreeMap::new();
    for source in sources.iter_mut() {
        match source {
            DeviceSource::Gpu(gpu) => {
                if let Some(other) = partition_holder(state, uid, gpu.pci_address) {
                    return Err(PrepareError::Held(format!(
                        "{}: claim {other} holds partitions (VFs) of this GPU",
                        gpu.pci_address
                    )));
                }
                // VFs that this driver made and no claim holds (a crash, a failed prepare) go before
                // the whole GPU is given.
                if partitioned.contains(&gpu.pci_address) {
                    let vfs = binder
                        .sriov_state(gpu.pci_address)
                        .ok()
                        .flatten()
                        .map_or(0, |s| s.num_vfs);
                    if vfs > 0 {
                        binder.set_num_vfs(gpu.pci_address, 0).map_err(|source| {
                            PrepareError::Device {
                                context: format!(
                                    "{}: removing {vfs} VFs no claim holds",
                                    gpu.pci_address
                                ),
                                source,
                            }
                        })?;
                    }
                }
            }
            DeviceSource::GpuPartition { pf, index, count } => {
                let whole = counter_set_name(pf);
                let held = state.iter().find(|(other, record)| {
                    other.as_str() != uid && record.devices.iter().any(|d| d.device_name == whole)
                });
                if let Some((other, _)) = held {
                    let held = format!("{whole}: claim {other} holds the whole GPU");
                    return Err(PrepareError::Held(held));
                }
                let vf = ensure_vf(binder, gpus, pf.pci_address, *index, *count)?;
                undo.insert(
                    undo_key(pf.pci_address),
                    serde_json::json!({"pf": pf.pci_address.to_string(), "vfs": count}),
                );
                *source = DeviceSource::Gpu(vf);
            }
            _ => {}
        }
    }
    Ok(undo)
}

/// VF `index` of `pf` as a GPU, after creating `count` VFs if the GPU has none.
fn ensure_vf(
    binder: &dyn SriovPf,
    gpus: &dyn GpuDevice,
    pf: PciAddress,
    index: u32,
    count: u32,
) -> Result<hal::GpuInfo, PrepareError> {
    let state = |what: &str| {
        binder
            .sriov_state(pf)
            .map_err(|source| PrepareError::Device {
                context: format!("{pf}: reading SR-IOV state {what}"),
                source,
            })?
            .ok_or_else(|| PrepareError::Machine(format!("{pf}: not SR-IOV capable")))
    };
    let before = state("before creating VFs")?;
    match before.num_vfs {
        0 => binder
            .set_num_vfs(pf, count)
            .map_err(|source| PrepareError::Device {
                context: format!("{pf}: creating {count} VFs"),
                source,
            })?,
        n if n == count => {}
        n => {
            return Err(PrepareError::Machine(format!(
                "{pf}: has {n} VFs made outside this driver; its partitions need {count}"
            )));
        }
    }
    let after = state("after creating VFs")?;
    let address = after
        .vfs
        .iter()
        .find(|v| v.index == index)
        .map(|v| v.address)
        .ok_or_else(|| {
            PrepareError::Machine(format!("{pf}: no VF {index} after creating {count}"))
        })?;
    let vf = gpus
        .gpus()
        .map_err(|source| PrepareError::Device {
            context: "reading GPUs".into(),
            source,
        })?
        .items
        .into_iter()
        .find(|g| g.pci_address == address)
        .ok_or_else(|| {
            PrepareError::Machine(format!(
                "{pf}: VF {address} is not a GPU (no driver bound?)"
            ))
        })?;
    if vf.drm_card.is_none() && vf.drm_render.is_none() {
        return Err(PrepareError::Machine(format!(
            "{pf}: VF {address} has no DRM node (is i915 or xe bound to it?)"
        )));
    }
    Ok(vf)
}

/// After `record` is gone from `state`: removes the VFs of every GPU whose partitions no remaining
/// claim holds. Errors are returned per GPU, for the log; the VFs are then left in place.
pub fn release(
    binder: &dyn SriovPf,
    state: &BTreeMap<String, ClaimRecord>,
    record: &ClaimRecord,
) -> Vec<String> {
    let keys: Vec<String> = record.undo.keys().cloned().collect();
    release_keys(binder, state, &record.claim.uid, &keys)
}

/// [`release`] for the undo `keys` of claim `uid` (a claim that failed before it was recorded).
pub fn release_keys(
    binder: &dyn SriovPf,
    state: &BTreeMap<String, ClaimRecord>,
    uid: &str,
    keys: &[String],
) -> Vec<String> {
    let mut errors = Vec::new();
    for key in keys {
        let Some(pf) = key
            .strip_prefix("partitions:")
            .and_then(|a| PciAddress::parse(a).ok())
        else {
            continue;
        };
        if partition_holder(state, uid, pf).is_some() {
            continue;
        }
        if let Err(e) = binder.set_num_vfs(pf, 0) {
            errors.push(format!("{pf}: removing its VFs: {e}"));
        }
    }
    errors
}
