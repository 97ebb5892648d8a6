//! Device metadata (KEP-5304, Kubernetes 1.36+): the attributes of a claim's allocated devices as a
//! file inside the container, so a workload learns its GPU's UUID or its NIC's PCI address without
//! asking the API server.
//!
//! The protocol, as the Kubernetes documentation ("Device metadata protocol") and the Go kubelet-plugin
//! helper (`k8s.io/dynamic-resource-allocation/kubeletplugin`, `EnableDeviceMetadata`) define it:
//! - inside the container the file is
//!   `/var/run/kubernetes.io/dra-device-attributes/resourceclaims/<claim>/<request>/<driver>-metadata.json`,
//!   or `resourceclaimtemplates/<podClaimName>/<request>/...` for a claim made from a template (the
//!   claim's `resource.kubernetes.io/pod-claim-name` annotation); `<request>` is the top-level request
//!   (a `firstAvailable` subrequest is dropped from the path and kept in the JSON);
//! - the file is a `DeviceMetadata` object of `metadata.resource.k8s.io/v1alpha1` (the only version
//!   today), whose `metadata.generation` grows with every rewrite;
//! - it is read-only in the container, here through a CDI bind mount (`ro`, `bind`).
//!
//! On the host the file lives under the plugin's data directory, in `dra-device-metadata/<claim
//! uid>/<request>/metadata.json` (the UID rather than the Go helper's `<namespace>_<name>`: a claim
//! deleted and made again under its name gets a directory of its own).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::resource::v1::{DeviceAttribute, NetworkDeviceData};
use serde::Serialize;

use crate::cdi::Mount;
use crate::files;

/// Where the metadata files appear inside containers.
pub const CONTAINER_DIR: &str = "/var/run/kubernetes.io/dra-device-attributes";
/// The API version of the metadata objects written.
pub const API_VERSION: &str = "metadata.resource.k8s.io/v1alpha1";
/// The annotation that names the pod's claim entry of a claim made from a template.
pub const POD_CLAIM_NAME_ANNOTATION: &str = "resource.kubernetes.io/pod-claim-name";
/// The host directory, under the plugin's data directory, that holds the metadata files.
pub const HOST_SUBDIR: &str = "dra-device-metadata";
/// Mode of a metadata file: a container may run as any user and must be able to read it.
const FILE_MODE: u32 = 0o644;

/// Which claim the metadata is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimIdentity {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// The claim's UID.
    pub uid: String,
    /// `pod.spec.resourceClaims[].name` when the claim was made from a template.
    pub pod_claim_name: Option<String>,
}

/// One allocated device as the metadata shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetadataDevice {
    /// The driver that allocated it.
    pub driver: String,
    /// Its pool.
    pub pool: String,
    /// Its name in the pool.
    pub name: String,
    /// Its published attributes, under their qualified names.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, DeviceAttribute>,
    /// Network data, when the driver knows it.
    #[serde(rename = "networkData", skip_serializing_if = "Option::is_none")]
    pub network_data: Option<NetworkDeviceData>,
}

/// A failed metadata write or removal: the file or directory and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A request name that cannot be a path segment (empty, `.`, `..`, or with `/` after the base).
    #[error("request {0:?} cannot name a metadata directory")]
    BadRequest(String),
    /// A claim UID that cannot be a path segment.
    #[error("claim UID {0:?} cannot name a metadata directory")]
    BadUid(String),
    /// The file could not be written.
    #[error("device metadata: {0}")]
    Write(#[from] files::AtomicWriteError),
    /// Another file operation failed.
    #[error("device metadata {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl MetadataError {
    /// The I/O error kind behind it, if any (`ENOSPC`, `EACCES`, ...).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            MetadataError::Write(e) => Some(e.source.kind()),
            MetadataError::Io { source, .. } => Some(source.kind()),
            MetadataError::BadRequest(_) | MetadataError::BadUid(_) => None,
        }
    }
}

/// The top-level request of a request reference: `gpu/high-memory` is `gpu`.
pub fn base_request(request: &str) -> &str {
    request.split('/').next().unwrap_or(request)
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// The file's path inside the container.
pub fn container_path(driver: &str, claim: &ClaimIdentity, request: &str) -> String {
    let owner = match &claim.pod_claim_name {
        Some(pod_claim) => format!("resourceclaimtemplates/{pod_claim}"),
        None => format!("resourceclaims/{}", claim.name),
    };
    format!(
        "{CONTAINER_DIR}/{owner}/{}/{driver}-metadata.json",
        base_request(request)
    )
}

/// The directory of a claim's metadata files on the host.
pub fn claim_dir(data_dir: &Path, uid: &str) -> Result<PathBuf, MetadataError> {
    if !segment_ok(uid) {
        return Err(MetadataError::BadUid(uid.into()));
    }
    Ok(data_dir.join(HOST_SUBDIR).join(uid))
}

/// The file's path on the host.
pub fn host_path(data_dir: &Path, uid: &str, request: &str) -> Result<PathBuf, MetadataError> {
    let base = base_request(request);
    if !segment_ok(base) {
        return Err(MetadataError::BadRequest(request.into()));
    }
    Ok(claim_dir(data_dir, uid)?.join(base).join("metadata.json"))
}

/// The `DeviceMetadata` object of one request (`request` as allocated, subrequest included).
pub fn document(
    claim: &ClaimIdentity,
    generation: i64,
    request: &str,
    devices: &[MetadataDevice],
) -> serde_json::Value {
    let mut object = serde_json::json!({
        "kind": "DeviceMetadata",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": claim.name,
            "namespace": claim.namespace,
            "uid": claim.uid,
            "generation": generation,
        },
        "requests": [{ "name": request, "devices": devices }],
    });
    if let (Some(pod_claim), Some(map)) = (&claim.pod_claim_name, object.as_object_mut()) {
        map.insert("podClaimName".into(), pod_claim.clone().into());
    }
    object
}

/// The generation of the metadata file at `path`, or 0 when there is none (or it cannot be read).
fn generation_at(path: &Path) -> i64 {
    let Ok(file) = files::open_no_follow(path) else {
        return 0;
    };
    let mut bytes = Vec::new();
    // A metadata file this plugin wrote is a few KiB; never read more than 1 MiB of it.
    if io::Read::read_to_end(&mut io::Read::take(file, 1 << 20), &mut bytes).is_err() {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("metadata")?.get("generation")?.as_i64())
        .unwrap_or(0)
}

/// Writes (or rewrites, with the next generation) the metadata file of one request, atomically, and
/// returns the CDI mount that shows it read-only in the container. With
/// [`files::Durability::Unsynced`] a power loss may take the file (and its new directories) away: the
/// driver must then write it again after the reboot, as it must the CDI spec.
pub fn write_request(
    data_dir: &Path,
    driver: &str,
    claim: &ClaimIdentity,
    request: &str,
    devices: &[MetadataDevice],
    durability: files::Durability,
) -> Result<Mount, MetadataError> {
    let path = host_path(data_dir, &claim.uid, request)?;
    let generation = generation_at(&path).saturating_add(1);
    let body = document(claim, generation, request, devices);
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    bytes.push(b'\n');
    files::replace(&path, &bytes, &|_| Ok(()), durability)?;
    std::fs::set_permissions(
        &path,
        std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE),
    )
    .map_err(|source| MetadataError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(Mount {
        host_path: path.to_string_lossy().into_owned(),
        container_path: container_path(driver, claim, request),
        r#type: None,
        options: vec!["ro".into(), "bind".into()],
    })
}

/// The UIDs of the claims that have metadata files under `data_dir` (none when its directory is
/// missing): its directories, but for names that cannot be a claim UID (hidden ones included).
pub fn claims_with_files(data_dir: &Path) -> Result<Vec<String>, MetadataError> {
    let dir = data_dir.join(HOST_SUBDIR);
    let io = |source| MetadataError::Io {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
        Ok(entries) => entries,
    };
    let mut uids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let is_dir = entry.file_type().map_err(io)?.is_dir();
        let name = entry.file_name();
        if let Some(name) = name.to_str()
            && is_dir
            && segment_ok(name)
            && !name.starts_with('.')
        {
            uids.push(name.to_owned());
        }
    }
    uids.sort();
    Ok(uids)
}

/// Removes a claim's metadata files (nothing to do when there are none).
pub fn remove_claim(data_dir: &Path, uid: &str) -> Result<(), MetadataError> {
    let dir = claim_dir(data_dir, uid)?;
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(MetadataError::Io {
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "metadata/tests.rs"]
mod tests;
