//! Device metadata (KEP-5304, `--device-metadata`): for each request of a prepared claim, a file
//! with its devices' published attributes, bind-mounted read-only into the containers that use the
//! request, at the path the Kubernetes protocol names (see [`dra_kubelet_plugin::metadata`]).
//!
//! As the Go helper does, each request gets a CDI device of its own in the claim's spec
//! (`<claim uid>-metadata-<request>`), holding only the mount, and its ID is added to the request's
//! devices in the answer to the kubelet: a container that asks for one request of the claim sees that
//! request's file only. The file is written with the CDI spec and removed with the claim.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dra_kubelet_plugin::metadata::{self, ClaimIdentity, MetadataDevice};
use k8s_openapi::api::resource::v1::{DeviceAttribute, ResourceClaim};

use super::{PrepareError, Preparer};
use crate::plugin::api::{ClaimRef, PreparedDevice};
use crate::plugin::cdi::{ContainerEdits, Device as CdiDevice, Spec, qualified_device};
use crate::plugin::claims::Allocated;

/// How the CDI device of a request's metadata file is named after the claim UID: no device this driver
/// publishes has a name starting so.
pub(super) const CDI_PREFIX: &str = "metadata-";

/// The undo entry of a claim with metadata files. They are written without fsync, so a power loss
/// may lose them; an undo entry makes the claim one that a reboot has undone, forgotten at start and
/// prepared afresh (see `Preparer::new`), which writes them again. Undoing it is their removal,
/// which unprepare does for every claim.
pub(super) const UNDO_KEY: &str = "metadata";

/// The [`UNDO_KEY`] entry of a claim's record.
pub(super) fn undo_entry() -> (String, serde_json::Value) {
    let files = serde_json::json!("device metadata files, written without fsync");
    (UNDO_KEY.to_owned(), files)
}

/// The metadata files of one prepare.
pub(super) struct MetadataPlan {
    /// The plugin's data directory.
    dir: PathBuf,
    claim: ClaimIdentity,
    /// Each request (as allocated, subrequest included) with its devices.
    requests: BTreeMap<String, Vec<MetadataDevice>>,
}

impl Preparer {
    /// With metadata on, adds each request's mount device to `spec` and its ID to the request's
    /// `devices`, and returns the files to write; `attributes` are the allocated devices' published
    /// ones, by device name.
    pub(super) fn plan_metadata(
        &self,
        claim: &ClaimRef,
        resource_claim: &ResourceClaim,
        allocated: &[Allocated],
        attributes: &BTreeMap<String, BTreeMap<String, DeviceAttribute>>,
        spec: &mut Spec,
        devices: &mut [PreparedDevice],
    ) -> Result<Option<MetadataPlan>, PrepareError> {
        let Some(dir) = &self.metadata_dir else {
            return Ok(None);
        };
        let driver = &self.config.slices.driver_name;
        let pool = &self.config.slices.node_name;
        let identity = ClaimIdentity {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            uid: claim.uid.clone(),
            pod_claim_name: resource_claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(metadata::POD_CLAIM_NAME_ANNOTATION))
                .cloned(),
        };
        let mut requests: BTreeMap<String, Vec<MetadataDevice>> = BTreeMap::new();
        for a in allocated {
            requests
                .entry(a.request.clone())
                .or_default()
                .push(MetadataDevice {
                    driver: driver.clone(),
                    pool: pool.clone(),
                    name: a.device.clone(),
                    attributes: attributes.get(&a.device).cloned().unwrap_or_default(),
                    network_data: None,
                });
        }
        for request in requests.keys() {
            let base = metadata::base_request(request);
            let host = metadata::host_path(dir, &claim.uid, request).map_err(|source| {
                PrepareError::Metadata {
                    context: format!("the device metadata of request {request}"),
                    source,
                }
            })?;
            let name = format!("{}-{CDI_PREFIX}{base}", claim.uid);
            spec.devices.push(CdiDevice {
                name: name.clone(),
                annotations: None,
                container_edits: ContainerEdits {
                    mounts: vec![crate::plugin::cdi::Mount {
                        host_path: host.to_string_lossy().into_owned(),
                        container_path: metadata::container_path(driver, &identity, request),
                        r#type: None,
                        options: vec!["ro".into(), "bind".into()],
                    }],
                    ..Default::default()
                },
            });
            let id = qualified_device(&self.kind, &name);
            for device in devices.iter_mut() {
                if device.request_names.iter().any(|r| r == request) {
                    device.cdi_device_ids.push(id.clone());
                }
            }
        }
        Ok(Some(MetadataPlan {
            dir: dir.clone(),
            claim: identity,
            requests,
        }))
    }

    /// Writes the files of `plan`.
    pub(super) fn write_metadata(&self, plan: &MetadataPlan) -> Result<(), PrepareError> {
        let driver = &self.config.slices.driver_name;
        for (request, devices) in &plan.requests {
            // Without fsync: a claim with metadata files is prepared afresh after a reboot
            // ([`UNDO_KEY`]), which writes them again; unless the boot id is unknown, and with it
            // whether there was a reboot.
            let durability = match super::boot_id_known(&self.config.boot_id) {
                true => dra_kubelet_plugin::files::Durability::Unsynced,
                false => dra_kubelet_plugin::files::Durability::Synced,
            };
            let written = metadata::write_request(
                &plan.dir,
                driver,
                &plan.claim,
                request,
                devices,
                durability,
            );
            written.map_err(|source| PrepareError::Metadata {
                context: format!("writing the device metadata of request {request}"),
                source,
            })?;
        }
        Ok(())
    }

    /// Removes the claim's metadata files (logged, not fatal: they are a few KiB under the data
    /// directory and the next prepare of the claim replaces them).
    pub(super) fn remove_metadata(&self, uid: &str) {
        if let Some(dir) = &self.metadata_dir
            && let Err(error) = metadata::remove_claim(dir, uid)
        {
            tracing::warn!(claim = %uid, %error, "device metadata not removed");
        }
    }
}
