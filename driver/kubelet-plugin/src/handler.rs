//! The plugin's domain view of the kubelet's DRA calls, independent of the gRPC types: the gRPC layer
//! (`grpc`) maps the v1 and v1beta1 messages onto these, and the claim logic implements
//! [`DraHandler`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// A claim as the kubelet names it (`Claim { namespace, uid, name }`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ClaimRef {
    /// Namespace of the ResourceClaim.
    pub namespace: String,
    /// UID of the ResourceClaim: the key of every answer.
    pub uid: String,
    /// Name of the ResourceClaim.
    pub name: String,
}

/// The most bytes a claim UID may have (the API server's UIDs are 36: a UUID).
pub const MAX_CLAIM_UID_BYTES: usize = 128;

/// Checks a claim UID before it names a file (a checkpoint record, a CDI spec) or a URL segment:
/// 1 to [`MAX_CLAIM_UID_BYTES`] ASCII letters, digits, `-`, `_` or `.`, not starting with `.`
/// and without `..`. The one check of the plugin; `Err` says what is wrong.
pub fn check_claim_uid(uid: &str) -> Result<(), &'static str> {
    if uid.is_empty() || uid.len() > MAX_CLAIM_UID_BYTES {
        return Err("must have 1 to 128 bytes");
    }
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("may only contain ASCII letters, digits, '_', '.' and '-'");
    }
    if uid.starts_with('.') || uid.contains("..") {
        return Err("must not start with '.' or contain '..'");
    }
    Ok(())
}

/// One prepared device, as returned to the kubelet (`Device` of NodePrepareResourceResponse).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreparedDevice {
    /// The claim's requests this device serves (empty: all).
    pub request_names: Vec<String>,
    /// Pool (the node name).
    pub pool_name: String,
    /// Device name in the pool.
    pub device_name: String,
    /// Fully qualified CDI device ids (`vendor/class=name`).
    pub cdi_device_ids: Vec<String>,
    /// Share id of a shared (consumable-capacity) allocation, v1 only.
    pub share_id: Option<String>,
}

/// Answers per claim UID: devices or an error text.
pub type PrepareResults = BTreeMap<String, Result<Vec<PreparedDevice>, String>>;
/// Answers per claim UID: done or an error text.
pub type UnprepareResults = BTreeMap<String, Result<(), String>>;

/// A boxed future, so the handler is object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the DRA gRPC service calls. Every claim of a call gets its own answer; one bad claim never
/// fails the others.
pub trait DraHandler: Send + Sync + 'static {
    /// NodePrepareResources.
    fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults>;
    /// NodeUnprepareResources.
    fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults>;
    /// Whether calls may reach the handler side by side. `false` (the default): one call at a time,
    /// as the Go kubelet-plugin helper serializes by default. A handler that orders its own claims
    /// (a lock per claim, no lock across I/O) says `true`.
    fn concurrent(&self) -> bool {
        false
    }
}

/// A device's health as the kubelet is told it (`DRAResourceHealth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Cannot be told.
    Unknown,
    /// Works.
    Healthy,
    /// Does not work, or should not be used.
    Unhealthy,
}

/// One published device's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    /// Pool of the device (the node name).
    pub pool_name: String,
    /// Device name in the pool, as published.
    pub device_name: String,
    /// Its health.
    pub status: HealthStatus,
    /// When it was last checked, in Unix seconds.
    pub last_updated: i64,
    /// Why (empty when healthy); the kubelet keeps at most 1024 characters.
    pub message: String,
}

/// The health of every published device at one check, and how long the kubelet should trust it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Every published device, healthy ones included.
    pub devices: Vec<DeviceHealth>,
    /// Seconds after which the kubelet takes a device's health as unknown without a newer report; 0:
    /// the kubelet's default.
    pub timeout_seconds: i64,
}
