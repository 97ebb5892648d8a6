//! What a ResourceClaim asks of this driver on this node: its allocated devices and their opaque
//! configuration, decoded strictly (an unknown field is an error that names it).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::resource::v1::{DeviceAllocationConfiguration, ResourceClaim};

use super::api::ClaimRef;

mod reference;

pub use reference::check_claim_ref;

/// The kinds of opaque configuration this driver understands, in API version `<driver>/v1alpha1`.
pub const CONFIG_VERSION: &str = "v1alpha1";
/// Environment variables one config may set.
const MAX_ENV: usize = 64;

/// A problem with one field of a configuration; shown as `field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The field, relative to the configuration (`env.A`, `periodUs`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    /// `field: problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// One device allocated to the claim by this driver on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The claim's request it serves.
    pub request: String,
    /// The device in this node's pool.
    pub device: String,
    /// Admin access (the device is not exclusively given).
    pub admin_access: bool,
    /// Share id of a consumable-capacity allocation.
    pub share_id: Option<String>,
    /// The configuration that applies to it (class configs first, then the claim's).
    pub config: DeviceConfig,
    /// The VF configuration that applies to it, the last one given.
    pub vf: Option<VfConfig>,
    /// The direct-mode network configuration (`kind: NetworkConfig`) that applies to it, the last one
    /// given, parsed.
    pub network: Option<crate::podnet::config::Checked>,
    /// The CPU configuration that applies to it, the last one given.
    pub cpu: Option<CpuConfig>,
    /// The GPU configuration that applies to it, the last one given.
    pub gpu: Option<GpuConfig>,
    /// CPUs consumed from a shared CPU group (`consumedCapacity` `cpu`), when the scheduler says.
    pub consumed_cpus: Option<usize>,
    /// The RT configuration that applies to it, the last one given.
    pub rt: Option<super::rt::RtConfig>,
    /// RT bandwidth consumed from an `rt-<group>` device (`consumedCapacity` `rtBandwidth`), in
    /// millionths of a CPU, when the scheduler says.
    pub consumed_rt: Option<u64>,
}

impl Allocated {
    /// The kernel driver its `VfConfig` or `GpuConfig` asks to bind it to (`vfio-pci`, `iavf`).
    pub fn driver(&self) -> Option<&str> {
        let vf = self.vf.as_ref().and_then(|v| v.driver.as_deref());
        vf.or_else(|| self.gpu.as_ref().and_then(|g| g.driver.as_deref()))
    }
}

/// How a GPU is given (`kind: GpuConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuConfig {
    /// `vfio-pci` to pass the whole GPU through to a VM (KubeVirt); absent: the GPU's own driver.
    #[serde(default)]
    pub driver: Option<String>,
}

/// Explicit CPUs for a CPU group claim (`kind: CpuConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuConfig {
    /// The exact CPUs wanted, as a cpulist (`4-7`); checked to be in the group, free, and as many as
    /// the claim consumes.
    pub cpuset: hal::CpuSet,
}

/// How a network function (an SR-IOV VF, usually) is given to the workload (`kind: VfConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfConfig {
    /// The kernel driver to bind (`iavf`, `mlx5_core`), or `vfio-pci` for passthrough.
    #[serde(default)]
    pub driver: Option<String>,
    /// The interface name the workload wants inside the pod (`net1`), for the CNI.
    #[serde(default)]
    pub if_name: Option<String>,
    /// The NetworkAttachmentDefinition the CNI (Multus) attaches the VF with.
    #[serde(default)]
    pub net_attach_def_name: Option<String>,
    /// Its namespace (default: the claim's).
    #[serde(default)]
    pub net_attach_def_namespace: Option<String>,
}

/// The NetworkAttachmentDefinition a `VfConfig` names: `netAttachDefNamespace` (none: the claim's)
/// and `netAttachDefName`. Written as `namespace/name`, or `name` alone, in the claim's CDI
/// environment (`DRA_HAL_NIC_<i>_NETWORK`) and its status (`data.network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    /// Its namespace when the config gives one.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl NetworkAttachment {
    /// Parses `namespace/name` or `name` (the form of [`fmt::Display`]); `None` for an empty part.
    pub fn parse(text: &str) -> Option<NetworkAttachment> {
        let (namespace, name) = match text.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_owned()), name),
            None => (None, text),
        };
        if name.is_empty() || namespace.as_deref() == Some("") {
            return None;
        }
        Some(NetworkAttachment {
            namespace,
            name: name.to_owned(),
        })
    }

    /// (namespace, name), the namespace defaulting to `claim_namespace`.
    pub fn in_namespace(&self, claim_namespace: &str) -> (String, String) {
        let namespace = self.namespace.as_deref().unwrap_or(claim_namespace);
        (namespace.to_owned(), self.name.clone())
    }
}

impl fmt::Display for NetworkAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl VfConfig {
    /// The NetworkAttachmentDefinition it names (`netAttachDefName`, `netAttachDefNamespace`), if
    /// any: the function is attached in CNI mode. An empty namespace counts as none given.
    pub fn network_attachment(&self) -> Option<NetworkAttachment> {
        let name = self.net_attach_def_name.clone()?;
        let namespace = self
            .net_attach_def_namespace
            .clone()
            .filter(|ns| !ns.is_empty());
        Some(NetworkAttachment { namespace, name })
    }

    fn check(&self) -> Result<(), FieldError> {
        if let Some(driver) = &self.driver {
            let ok = !driver.is_empty()
                && driver.len() <= 64
                && driver
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                let problem = format!("{driver:?} is not a kernel driver name");
                return Err(FieldError::new("driver", problem));
            }
        }
        if let Some(name) = &self.if_name {
            let problem = crate::podnet::config::if_name_problem(name);
            if let Some(problem) = problem {
                return Err(FieldError::new("ifName", format!("{name:?} {problem}")));
            }
        }
        for (field, value) in [
            ("netAttachDefName", &self.net_attach_def_name),
            ("netAttachDefNamespace", &self.net_attach_def_namespace),
        ] {
            if let Some(value) = value
                && !dra_kubelet_plugin::slices::names::is_dns_subdomain(value, 253)
            {
                let problem = format!("{value:?} is not a DNS subdomain");
                return Err(FieldError::new(field, problem));
            }
        }
        Ok(())
    }
}

/// One decoded opaque configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpaqueConfig {
    /// `kind: DeviceConfig`.
    Device(DeviceConfig),
    /// `kind: VfConfig`.
    Vf(VfConfig),
    /// `kind: CpuConfig`.
    Cpu(CpuConfig),
    /// `kind: GpuConfig`.
    Gpu(GpuConfig),
    /// `kind: RtConfig`.
    Rt(super::rt::RtConfig),
    /// `kind: NetworkConfig` (direct mode), parsed.
    Network(crate::podnet::config::Checked),
}

/// Generic device configuration (`kind: DeviceConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceConfig {
    /// Extra environment variables for the containers that use the device.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl DeviceConfig {
    fn check(&self) -> Result<(), FieldError> {
        if self.env.len() > MAX_ENV {
            let problem = format!("{} entries; at most {MAX_ENV}", self.env.len());
            return Err(FieldError::new("env", problem));
        }
        for (name, value) in &self.env {
            let field = || format!("env.{}", hal::text::escape_controls(name));
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(FieldError::new(field(), "not an environment variable name"));
            }
            if let Some(reserved) = reserved_env(name) {
                let problem =
                    format!("{reserved} is set by the driver itself and cannot be overridden");
                return Err(FieldError::new(field(), problem));
            }
            if value.contains('\0') {
                return Err(FieldError::new(field(), "contains a NUL byte"));
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: &DeviceConfig) {
        self.env
            .extend(other.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// Environment variables the driver sets in a claim's CDI spec, by exact name.
pub const RESERVED_ENV: &[&str] = &["NVIDIA_VISIBLE_DEVICES", "NCCL_IB_HCA"];
/// Prefixes of environment variables the driver sets (`DRA_HAL_*`, `DRA_CPUSET_<uid>`, `DRA_RT_*`,
/// `GPU_DEVICE_<i>`).
pub const RESERVED_ENV_PREFIXES: &[&str] = &["DRA_", "GPU_DEVICE_"];

/// The reserved name or prefix `name` falls under, if any: a config may not set what the driver
/// sets, since the later value would win in the container and could expose other devices.
fn reserved_env(name: &str) -> Option<&'static str> {
    RESERVED_ENV
        .iter()
        .find(|r| **r == name)
        .or_else(|| RESERVED_ENV_PREFIXES.iter().find(|p| name.starts_with(**p)))
        .copied()
}

/// Why a claim cannot be prepared by this driver here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The API server has a different claim under that name (deleted and re-created).
    #[error("claim {namespace}/{name} has uid {found}, not {wanted}: it was replaced")]
    UidMismatch {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// UID the kubelet asked for.
        wanted: String,
        /// UID the API server holds.
        found: String,
    },
    /// Not allocated yet.
    #[error("claim {0} is not allocated")]
    NotAllocated(String),
    /// Allocated, but nothing by this driver on this node.
    #[error("claim {claim} has no device of driver {driver} in pool {pool}")]
    NotOurs {
        /// `namespace/name`.
        claim: String,
        /// This driver.
        driver: String,
        /// This node's pool.
        pool: String,
    },
    /// The kubelet named a claim that cannot exist: a namespace, name or UID Kubernetes would not
    /// accept (a `/` would reach into another API path).
    #[error("claim reference {field} {value:?}: {problem}")]
    InvalidRef {
        /// `namespace`, `name` or `uid`.
        field: &'static str,
        /// The value given (cut to 300 bytes).
        value: String,
        /// What Kubernetes requires.
        problem: &'static str,
    },
    /// Opaque configuration that does not decode or validate.
    #[error("claim {claim}: {field}: {problem}")]
    BadConfig {
        /// `namespace/name`.
        claim: String,
        /// Where, e.g. `status.allocation.devices.config[1].opaque.parameters.env`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// This driver's devices of `claim` on `pool`, with their configuration. `claim_ref` is what the kubelet
/// asked for; its UID must be the claim's.
pub fn allocated_devices(
    claim_ref: &ClaimRef,
    claim: &ResourceClaim,
    driver: &str,
    pool: &str,
) -> Result<Vec<Allocated>, ClaimError> {
    let id = format!("{}/{}", claim_ref.namespace, claim_ref.name);
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    if uid != claim_ref.uid {
        return Err(ClaimError::UidMismatch {
            namespace: claim_ref.namespace.clone(),
            name: claim_ref.name.clone(),
            wanted: claim_ref.uid.clone(),
            found: uid,
        });
    }
    let devices = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .ok_or_else(|| ClaimError::NotAllocated(id.clone()))?;
    let configs = decode_configs(&id, devices.config.as_deref().unwrap_or_default(), driver)?;
    let ours: Vec<Allocated> = devices
        .results
        .iter()
        .flatten()
        .filter(|r| r.driver == driver && r.pool == pool)
        .map(|r| {
            let consumed = r.consumed_capacity.as_ref();
            let consumed_cpus =
                consumed_cpus(consumed, driver).map_err(|problem| ClaimError::BadConfig {
                    claim: id.clone(),
                    field: format!(
                        "status.allocation.devices.results[{}].consumedCapacity.cpu",
                        r.device
                    ),
                    problem,
                })?;
            let mut config = DeviceConfig::default();
            let mut vf = None;
            let mut network = None;
            let mut cpu = None;
            let mut gpu = None;
            let mut rt = None;
            for (requests, c) in &configs {
                if requests.is_empty() || requests.iter().any(|q| request_matches(q, &r.request)) {
                    match c {
                        OpaqueConfig::Device(c) => config.merge(c),
                        OpaqueConfig::Vf(c) => vf = Some(c.clone()),
                        OpaqueConfig::Network(c) => network = Some(c.clone()),
                        OpaqueConfig::Cpu(c) => cpu = Some(c.clone()),
                        OpaqueConfig::Gpu(c) => gpu = Some(c.clone()),
                        OpaqueConfig::Rt(c) => rt = Some(c.clone()),
                    }
                }
            }
            Ok(Allocated {
                request: r.request.clone(),
                device: r.device.clone(),
                admin_access: r.admin_access == Some(true),
                share_id: r.share_id.clone(),
                config,
                vf,
                network,
                cpu,
                gpu,
                consumed_cpus,
                rt,
                consumed_rt: consumed_rt(consumed, driver),
            })
        })
        .collect::<Result<_, ClaimError>>()?;
    if ours.is_empty() {
        return Err(ClaimError::NotOurs {
            claim: id,
            driver: driver.to_owned(),
            pool: pool.to_owned(),
        });
    }
    Ok(ours)
}

/// The `cpu` capacity consumed, under its plain or driver-qualified name, as a number of whole CPUs:
/// a fraction (`1500m`, which a scheduler without the published request policy may record) is
/// rounded up, as the policy's step of 1 would have. `Err` for a quantity that is not one, or is not
/// above zero: never "the whole group", which is what a claim that does not say gets.
fn consumed_cpus(
    consumed: Option<&ConsumedCapacity>,
    driver: &str,
) -> Result<Option<usize>, String> {
    let Some(quantity) = consumed_capacity(consumed, driver, "cpu") else {
        return Ok(None);
    };
    let parsed = hal::quantity::Quantity::parse(&quantity.0).map_err(|e| e.to_string())?;
    const ONE: i128 = 1_000_000_000;
    let nanos = parsed.nano_units();
    if nanos <= 0 {
        return Err(format!("{:?}: not a number of CPUs above zero", quantity.0));
    }
    let whole = nanos / ONE + i128::from(nanos % ONE != 0);
    usize::try_from(whole)
        .map(Some)
        .map_err(|_| format!("{:?}: more CPUs than a node has", quantity.0))
}

/// The `rtBandwidth` capacity consumed, in millionths of a CPU (`300m` is 300000).
fn consumed_rt(consumed: Option<&ConsumedCapacity>, driver: &str) -> Option<u64> {
    let quantity = consumed_capacity(consumed, driver, "rtBandwidth")?;
    let nanos = hal::quantity::Quantity::parse(&quantity.0)
        .ok()?
        .nano_units();
    u64::try_from(nanos / 1000).ok()
}

/// `consumedCapacity` of an allocation result, by capacity name.
type ConsumedCapacity = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

/// One consumed capacity, under its plain or driver-qualified name.
fn consumed_capacity<'a>(
    consumed: Option<&'a ConsumedCapacity>,
    driver: &str,
    name: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    let consumed = consumed?;
    consumed
        .get(name)
        .or_else(|| consumed.get(&format!("{driver}/{name}")))
}

/// A config's request `gpu` also applies to the sub-requests `gpu/<name>` of `firstAvailable`.
fn request_matches(config_request: &str, result_request: &str) -> bool {
    result_request == config_request
        || result_request
            .strip_prefix(config_request)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The configs of this driver, class configs before claim configs (later ones win), each with the
/// requests it applies to (empty: all).
fn decode_configs(
    claim: &str,
    configs: &[DeviceAllocationConfiguration],
    driver: &str,
) -> Result<Vec<(Vec<String>, OpaqueConfig)>, ClaimError> {
    let mut decoded = Vec::new();
    for source in ["FromClass", "FromClaim"] {
        for (i, config) in configs.iter().enumerate() {
            if config.source != source {
                continue;
            }
            let Some(opaque) = config.opaque.as_ref().filter(|o| o.driver == driver) else {
                continue;
            };
            let field = format!("status.allocation.devices.config[{i}].opaque.parameters");
            let parsed = decode_opaque(&opaque.parameters.0, driver).map_err(|(at, problem)| {
                ClaimError::BadConfig {
                    claim: claim.to_owned(),
                    field: format!("{field}{at}"),
                    problem,
                }
            })?;
            decoded.push((config.requests.clone().unwrap_or_default(), parsed));
        }
    }
    Ok(decoded)
}

/// A check's problem as (`.field`, problem).
fn at_field(error: FieldError) -> (String, String) {
    (format!(".{}", error.field), error.problem)
}

/// Decodes one opaque parameters object: `apiVersion: <driver>/v1alpha1`, `kind: DeviceConfig`,
/// `VfConfig`, `NetworkConfig`, `CpuConfig`, `GpuConfig` or `RtConfig`, and no field the kind does not
/// have. Errors are (field suffix, problem).
pub fn decode_opaque(
    parameters: &serde_json::Value,
    driver: &str,
) -> Result<OpaqueConfig, (String, String)> {
    let serde_json::Value::Object(map) = parameters else {
        return Err((String::new(), "must be an object".into()));
    };
    let expected = format!("{driver}/{CONFIG_VERSION}");
    match map.get("apiVersion").and_then(|v| v.as_str()) {
        Some(v) if v == expected => {}
        other => {
            let found = other.map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"));
            return Err((
                ".apiVersion".into(),
                format!("{found}; expected {expected:?}"),
            ));
        }
    }
    let mut rest = map.clone();
    rest.remove("apiVersion");
    let kind = rest.remove("kind");
    let rest = serde_json::Value::Object(rest);
    let located = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        // Both quote the config's keys as written: no control character reaches a message.
        let problem = e.into_inner().to_string();
        let escape = |text: &str| hal::text::escape_controls(text).into_owned();
        (escape(&at), escape(&problem))
    };
    let checked = |result: Result<(), FieldError>| result.map_err(at_field);
    match kind.as_ref().and_then(|k| k.as_str()) {
        Some("DeviceConfig") => {
            let config: DeviceConfig = serde_path_to_error::deserialize(rest).map_err(located)?;
            checked(config.check())?;
            Ok(OpaqueConfig::Device(config))
        }
        Some("CpuConfig") => {
            let config: CpuConfig = serde_path_to_error::deserialize(rest).map_err(located)?;
            if config.cpuset.is_empty() {
                return Err((".cpuset".into(), "is empty".into()));
            }
            Ok(OpaqueConfig::Cpu(config))
        }
        Some("GpuConfig") => {
            let config: GpuConfig = serde_path_to_error::deserialize(rest).map_err(located)?;
            if let Some(driver) = config.driver.as_deref().filter(|d| *d != "vfio-pci") {
                return Err((
                    ".driver".into(),
                    format!("{driver:?}; only \"vfio-pci\" is supported"),
                ));
            }
            Ok(OpaqueConfig::Gpu(config))
        }
        Some("RtConfig") => {
            let config: super::rt::RtConfig =
                serde_path_to_error::deserialize(rest).map_err(located)?;
            checked(config.check())?;
            Ok(OpaqueConfig::Rt(config))
        }
        Some("VfConfig") => {
            let config: VfConfig = serde_path_to_error::deserialize(rest).map_err(located)?;
            checked(config.check())?;
            Ok(OpaqueConfig::Vf(config))
        }
        Some("NetworkConfig") => {
            let config: crate::podnet::config::NetworkConfig =
                serde_path_to_error::deserialize(rest).map_err(located)?;
            config.check().map(OpaqueConfig::Network).map_err(at_field)
        }
        other => {
            let found = other.map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"));
            Err((
                ".kind".into(),
                format!(
                    "{found}; expected DeviceConfig, VfConfig, NetworkConfig, CpuConfig, GpuConfig or RtConfig"
                ),
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod network_tests;
