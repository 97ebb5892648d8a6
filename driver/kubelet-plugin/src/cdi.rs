//! CDI (Container Device Interface) specs: the serde types of a spec with the exact JSON keys of the
//! upstream Go structs (`tags.cncf.io/container-device-interface/specs-go`), the minimum `cdiVersion`
//! a spec needs, a validator with the semantics of the upstream Go parser and default validator, and
//! [`CdiDir`], which writes one transient spec per prepared claim atomically into a spec directory
//! (the plugin passes `/var/run/cdi`; this module never assumes it).
//!
//! ```
//! use dra_kubelet_plugin::cdi::{ContainerEdits, Device, DeviceNode, Spec, qualified_device, validate};
//!
//! let mut node = DeviceNode::new("/dev/infiniband/uverbs0");
//! node.r#type = Some("c".into());
//! node.major = Some(231);
//! node.minor = Some(192);
//! let edits = ContainerEdits { device_nodes: vec![node], ..ContainerEdits::default() };
//! let spec = Spec::new("hal.dra.dev/rdma", vec![Device::new("claim-1-mlx5_0", edits)]);
//! assert_eq!(spec.cdi_version, "0.3.0");
//! assert!(validate(&spec).is_ok());
//! assert_eq!(qualified_device(&spec.kind, "claim-1-mlx5_0"), "hal.dra.dev/rdma=claim-1-mlx5_0");
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

mod dir;
mod validate;
mod version;

pub use dir::CdiDir;
pub use validate::validate;
pub use version::{KNOWN_VERSIONS, minimum_version};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;

/// A CDI spec: the content of one `.json` file in a CDI spec directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The spec version (`cdiVersion`), e.g. `0.5.0`. [`Spec::new`] and [`CdiDir::write_claim_spec`]
    /// set it to at least [`minimum_version`].
    #[serde(rename = "cdiVersion")]
    pub cdi_version: String,
    /// `<vendor>/<class>`, e.g. `hal.dra.dev/gpu`.
    pub kind: String,
    /// Spec annotations (CDI metadata, not container annotations; 0.6.0 when not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The devices; a valid spec has at least one.
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<Device>,
    /// Edits applied whenever any device of this spec is injected.
    #[serde(
        rename = "containerEdits",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_edits: Option<ContainerEdits>,
}

/// One device of a spec, referenced by containers as `<kind>=<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Device name: letters, digits, `_ . : -`, starting and ending with a letter or digit.
    pub name: String,
    /// Device annotations (0.6.0 when not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The edits of this device. Required by the schema and always written (`{}` when empty), but a
    /// device with no edits at all is rejected by [`validate`], as by the Go validator.
    #[serde(rename = "containerEdits")]
    pub container_edits: ContainerEdits,
}

/// Changes a container runtime makes to the OCI spec of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerEdits {
    /// Environment variables, each `NAME=value`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// Device nodes to create in the container.
    #[serde(
        rename = "deviceNodes",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub device_nodes: Vec<DeviceNode>,
    /// OCI hooks to add.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hooks: Vec<Hook>,
    /// Mounts to add.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<Mount>,
    /// Intel RDT (cache/memory-bandwidth allocation) settings (0.7.0).
    #[serde(rename = "intelRdt", default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<IntelRdt>,
    /// Supplementary group ids of the container process (0.7.0; 0 is ignored by runtimes).
    #[serde(
        rename = "additionalGids",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub additional_gids: Vec<u32>,
    /// Host network interfaces moved into the container's network namespace (1.1.0).
    #[serde(
        rename = "netDevices",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub net_devices: Vec<NetDevice>,
}

/// A device node (`/dev/...`) to create in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceNode {
    /// Absolute path in the container.
    pub path: String,
    /// Path on the host when it differs from `path` (0.5.0).
    #[serde(rename = "hostPath", default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c` (char), `b` (block), `u` (unbuffered char) or `p` (FIFO); runtimes stat the host node when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Major number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Minor number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// File mode of the node (Go `os.FileMode`).
    #[serde(rename = "fileMode", default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Device cgroup access: a subset of `rwm` (absent or empty: `rwm`). Newer Go code also knows
    /// `none`, but the runtimes' default validator rejects it, so [`validate`] does too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount to add to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Source on the host.
    #[serde(rename = "hostPath")]
    pub host_path: String,
    /// Destination in the container.
    #[serde(rename = "containerPath")]
    pub container_path: String,
    /// Mount type, e.g. `bind` (0.4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Mount options, e.g. `["ro", "nosuid", "rbind"]`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
}

/// An OCI hook to add to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// OCI hook name: `createRuntime`, `createContainer`, `startContainer`, `poststart`, `poststop`
    /// (or the deprecated `prestart`).
    #[serde(rename = "hookName")]
    pub hook_name: String,
    /// Absolute path of the executable.
    pub path: String,
    /// Arguments, `argv[0]` included.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<String>,
    /// Environment of the hook, each `NAME=value`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// Timeout in seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Intel RDT settings of the container (0.7.0; `schemata` and `enableMonitoring` 1.1.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelRdt {
    /// Class of service: a resctrl group name (a file name), or `/` for the root group.
    #[serde(rename = "closID", default, skip_serializing_if = "Option::is_none")]
    pub clos_id: Option<String>,
    /// L3 cache allocation schema.
    #[serde(
        rename = "l3CacheSchema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub l3_cache_schema: Option<String>,
    /// Memory bandwidth allocation schema.
    #[serde(
        rename = "memBwSchema",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mem_bw_schema: Option<String>,
    /// Raw resctrl schemata lines (1.1.0; present, even empty, needs 1.1.0 as in Go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemata: Option<Vec<String>>,
    /// Enables resctrl monitoring (1.1.0).
    #[serde(
        rename = "enableMonitoring",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub enable_monitoring: bool,
}

/// A host network interface moved into the container (1.1.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDevice {
    /// Interface name on the host.
    #[serde(rename = "hostInterfaceName")]
    pub host_interface_name: String,
    /// Interface name in the container.
    pub name: String,
}

/// Why a spec could not be validated, named, written, removed or listed.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// The spec, the kind or the claim UID breaks a CDI rule; `field` is a JSON path such as
    /// `devices[2].containerEdits.deviceNodes[0].path`.
    #[error("{field}: {problem}")]
    Invalid {
        /// Where in the spec (or which argument) the problem is.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A file-system operation failed; `source.kind()` (or [`CdiError::io_kind`]) tells e.g. a full
    /// disk (`StorageFull`, ENOSPC) or a read-only one apart.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `rename`, `create directory`, ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The spec could not be serialized (not expected for these types).
    #[error("failed to serialize the CDI spec: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl CdiError {
    /// The I/O error kind for [`CdiError::Io`], `None` otherwise.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            CdiError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The file or directory of an [`CdiError::Io`], `None` otherwise.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            CdiError::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        CdiError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl Spec {
    /// A spec of `kind` with `devices`, its `cdiVersion` set to [`minimum_version`].
    pub fn new(kind: impl Into<String>, devices: Vec<Device>) -> Self {
        let mut spec = Spec {
            cdi_version: String::new(),
            kind: kind.into(),
            annotations: None,
            devices,
            container_edits: None,
        };
        spec.cdi_version = minimum_version(&spec).to_owned();
        spec
    }

    /// Raises `cdi_version` to [`minimum_version`] when it is lower, empty or unknown; a known version
    /// at or above the minimum is kept.
    pub fn raise_version_to_minimum(&mut self) {
        let minimum = minimum_version(self);
        let current = version::rank(&self.cdi_version);
        if current.is_none_or(|rank| Some(rank) < version::rank(minimum)) {
            self.cdi_version = minimum.to_owned();
        }
    }
}

impl Device {
    /// A device named `name` with `container_edits` and no annotations.
    pub fn new(name: impl Into<String>, container_edits: ContainerEdits) -> Self {
        Device {
            name: name.into(),
            annotations: None,
            container_edits,
        }
    }
}

impl ContainerEdits {
    /// True when there is nothing to edit (the form a device may not have).
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
            && self.net_devices.is_empty()
    }
}

impl DeviceNode {
    /// A node at `path` with every optional field unset (the runtime fills them in from the host node).
    pub fn new(path: impl Into<String>) -> Self {
        DeviceNode {
            path: path.into(),
            ..DeviceNode::default()
        }
    }
}

/// The fully qualified CDI device id `vendor/class=name`, what DRA returns in `cdi_device_ids`.
pub fn qualified_device(kind: &str, name: &str) -> String {
    format!("{kind}={name}")
}

/// Go's YAML/JSON decoders accept `null` for slices and maps; so do we.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
