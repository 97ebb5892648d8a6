//! What is wrong with a device, as the inventory keeps it and the slices publish it: the
//! [`DeviceKey`] that stays the same while it is the same device, the [`Severity`] that decides the
//! taint's effect, and the [`Unhealthy`] fact (kept by `health::Health`, a module of its own so that
//! `inventory` and `health` do not use each other).

use k8s_openapi::api::resource::v1::DeviceTaint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::slices::SliceConfig;
use hal::PciAddress;

/// The reason of a device seen before and gone from the machine now.
pub const MISSING: &str = "missing";
/// The reason of a CPU seen online and offline now.
pub const OFFLINE: &str = "offline";

/// A device across rescans: what stays the same while it is the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKey {
    /// A GPU, by PCI address (its UUID decides whether an XID still holds).
    Gpu(PciAddress),
    /// A network function (NIC, SR-IOV PF or VF, IB-only RDMA function), by PCI address.
    Function(PciAddress),
    /// A logical CPU, by id.
    Cpu(u32),
}

impl DeviceKey {
    /// What the device is, for people (`GPU`, `network function`, `CPU`).
    pub fn noun(&self) -> &'static str {
        match self {
            DeviceKey::Gpu(_) => "GPU",
            DeviceKey::Function(_) => "network function",
            DeviceKey::Cpu(_) => "CPU",
        }
    }
}

impl std::fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKey::Gpu(address) => write!(f, "GPU {address}"),
            DeviceKey::Function(address) => write!(f, "network function {address}"),
            DeviceKey::Cpu(id) => write!(f, "CPU {id}"),
        }
    }
}

/// How unhealthy: what the taint's effect is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works again once the outside comes back (a link down, an IB port waiting for its subnet
    /// manager): the informational effect `None` (Kubernetes 1.35+), no taint for older servers.
    Degraded,
    /// Cannot be used (gone, offline, a critical XID): `NoSchedule`.
    Unusable,
}

/// Why a device is unhealthy, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The taint's value: a label value (`xid-79`, `missing`, `link-down`, `port-init`).
    pub reason: String,
    /// Why, for people (the kubelet's health message): `link down on ens1f0 (operstate down, carrier 0)`.
    pub message: String,
    /// Whether the device can still be used.
    pub severity: Severity,
    /// When it was first seen (whole seconds, as the API server keeps it).
    pub since: Time,
}

impl Unhealthy {
    /// Unhealthy for `reason` from now on.
    pub(crate) fn now(reason: &str, message: String, severity: Severity) -> Unhealthy {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let since = k8s_openapi::jiff::Timestamp::from_second(now)
            .map(Time)
            .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        Unhealthy {
            reason: reason.to_owned(),
            message,
            severity,
            since,
        }
    }

    /// The taint effect: `NoSchedule` for an unusable device; `None` for a degraded one where the
    /// API server accepts it (`config.informational_taints`), else no taint.
    pub fn effect(&self, config: &SliceConfig) -> Option<&'static str> {
        match (self.severity, config.informational_taints) {
            (Severity::Unusable, _) => Some("NoSchedule"),
            (Severity::Degraded, true) => Some("None"),
            (Severity::Degraded, false) => None,
        }
    }

    /// The device taint that says so (`<driver>/unhealthy=<reason>:<effect>`), if one is published.
    /// The key's domain is the driver name lower-cased: the API server accepts a driver name in any
    /// case (it checks the lower-cased form), a taint key only in lower case.
    pub fn taint(&self, config: &SliceConfig) -> Option<DeviceTaint> {
        Some(DeviceTaint {
            key: format!("{}/unhealthy", config.driver_name.to_ascii_lowercase()),
            value: Some(self.reason.clone()),
            effect: self.effect(config)?.to_owned(),
            time_added: Some(self.since.clone()),
        })
    }

    /// Whether Prepare must refuse the device: it is gone or offline (a device with an XID or a
    /// link down is the tolerating claim's choice).
    pub fn refuses_prepare(&self) -> bool {
        self.reason == MISSING || self.reason == OFFLINE
    }
}
