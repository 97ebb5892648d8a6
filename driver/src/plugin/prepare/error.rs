//! Why a claim could not be prepared or unprepared: one error type for the whole prepare path, with a
//! [`PrepareError::kind`] that says whose fault it is and whether a retry can help. The typed errors
//! underneath (claim decoding, the checkpoint, CDI, the API server) stay as sources; the kubelet gets
//! the message (which names the claim, device, file or field) only at the gRPC boundary.

use dra_kubelet_plugin::cdi::CdiError;
use dra_kubelet_plugin::metadata::MetadataError;

use super::ClaimReadError;
use crate::api::ErrorKind as ApiErrorKind;
use crate::plugin::checkpoint::CheckpointError;
use crate::plugin::claims::ClaimError;
use crate::plugin::cpus::AllocError;
use crate::plugin::rt::PlaceError;

/// What kind of failure a prepare or unprepare had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The claim, its reference or its configuration is wrong: asking again cannot help.
    InvalidClaim,
    /// A device of the claim is not (or no longer) published on this node, or is tainted unhealthy.
    NotPublished,
    /// A device, CPUs or RT bandwidth the claim needs are held by another claim.
    Conflict,
    /// A call to the API server failed; its class (404, 409, 5xx, timeout, ...) decides a retry.
    Api(ApiErrorKind),
    /// A file or sysfs operation failed, or the machine is not in the state the claim needs.
    Io,
    /// Not expected: a poisoned lock, a spec this driver made that does not serialize, a crash a test
    /// injected.
    Internal,
}

/// Why a claim could not be prepared or unprepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The claim reference or the ResourceClaim does not fit (replaced, unallocated, not ours, a bad
    /// opaque configuration).
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The ResourceClaim could not be read.
    #[error(transparent)]
    ClaimRead(#[from] ClaimReadError),
    /// The ResourceClaim does not exist.
    #[error("ResourceClaim {namespace}/{name} not found")]
    ClaimNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The configuration of a device does not fit the device (the message names the device and the
    /// configuration's field).
    #[error("{0}")]
    InvalidConfig(String),
    /// A device of the claim is not published on this node.
    #[error("device {device} is not published on this node (any more)")]
    NotPublished {
        /// The device name.
        device: String,
    },
    /// A device of the claim is tainted unhealthy with an effect that refuses prepares.
    #[error("device {device}: {message} (tainted unhealthy={reason})")]
    Unhealthy {
        /// The device name.
        device: String,
        /// What is wrong with it.
        message: String,
        /// The taint's reason.
        reason: String,
    },
    /// Another claim holds what this one needs (the message names both).
    #[error("{0}")]
    Held(String),
    /// The CPUs of a CPU group device could not be chosen.
    #[error("{device}: {source}")]
    Cpus {
        /// The device name.
        device: String,
        /// Why.
        #[source]
        source: AllocError,
    },
    /// The RT tasks of an `rt-<group>` device could not be placed.
    #[error(transparent)]
    Rt(#[from] PlaceError),
    /// A sysfs operation on a device failed (binding a driver, creating VFs).
    #[error("{context}: {source}")]
    Device {
        /// What was being done, naming the device.
        context: String,
        /// The error of the operation.
        #[source]
        source: hal::Error,
    },
    /// The machine is not in the state the claim needs (VFs made outside this driver, no DRM node).
    #[error("{0}")]
    Machine(String),
    /// The checkpoint could not be written or would not hold the claim.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The claim's CDI spec could not be written or removed.
    #[error("{context}: {source}")]
    Cdi {
        /// What was being done (`writing the CDI spec`).
        context: &'static str,
        /// The error.
        #[source]
        source: CdiError,
    },
    /// The CDI spec of a checkpointed claim does not decode.
    #[error("checkpointed CDI spec: {0}")]
    CheckpointedSpec(#[source] serde_json::Error),
    /// The claim's CDI spec does not serialize (not expected).
    #[error("serializing the CDI spec: {0}")]
    SpecJson(#[source] serde_json::Error),
    /// The device metadata of a request could not be written.
    #[error("{context}: {source}")]
    Metadata {
        /// What was being done, naming the request.
        context: String,
        /// The error.
        #[source]
        source: MetadataError,
    },
    /// Undoing what a claim changed failed.
    #[error("rolling back: {0}")]
    RollingBack(Box<PrepareError>),
    /// A prepare failed after it was recorded, and giving it up failed too; the kind is the
    /// first failure's.
    #[error("{cause}{}", also.iter().map(|e| format!("; {e}")).collect::<String>())]
    Abandoned {
        /// What made the prepare fail.
        cause: Box<PrepareError>,
        /// What failed while giving it up.
        also: Vec<PrepareError>,
    },
    /// A crash a test injected ([`super::FaultHook`]).
    #[error("{0}")]
    Injected(#[from] InjectedFault),
    /// Not expected (a poisoned lock).
    #[error("{0}")]
    Internal(String),
}

impl PrepareError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PrepareError::Claim(_) | PrepareError::InvalidConfig(_) => ErrorKind::InvalidClaim,
            PrepareError::ClaimRead(e) => ErrorKind::Api(e.kind()),
            PrepareError::ClaimNotFound { .. } => ErrorKind::Api(ApiErrorKind::NotFound),
            PrepareError::NotPublished { .. } | PrepareError::Unhealthy { .. } => {
                ErrorKind::NotPublished
            }
            PrepareError::Held(_) => ErrorKind::Conflict,
            PrepareError::Cpus { source, .. } if source.is_invalid_claim() => {
                ErrorKind::InvalidClaim
            }
            PrepareError::Cpus { .. } => ErrorKind::Conflict,
            PrepareError::Rt(PlaceError::OverConsumed { .. }) => ErrorKind::InvalidClaim,
            PrepareError::Rt(PlaceError::NoRoom { .. }) => ErrorKind::Conflict,
            PrepareError::Device { .. } | PrepareError::Machine(_) => ErrorKind::Io,
            PrepareError::Checkpoint(CheckpointError::ClaimTooLarge { .. }) => {
                ErrorKind::InvalidClaim
            }
            PrepareError::Checkpoint(CheckpointError::Serialize { .. }) => ErrorKind::Internal,
            PrepareError::Checkpoint(_) => ErrorKind::Io,
            PrepareError::Cdi { source, .. } => match source.io_kind() {
                Some(_) => ErrorKind::Io,
                None => ErrorKind::Internal,
            },
            PrepareError::Metadata { source, .. } => match source.io_kind() {
                Some(_) => ErrorKind::Io,
                None => ErrorKind::InvalidClaim,
            },
            PrepareError::RollingBack(inner) => inner.kind(),
            PrepareError::Abandoned { cause, .. } => cause.kind(),
            PrepareError::CheckpointedSpec(_)
            | PrepareError::SpecJson(_)
            | PrepareError::Injected(_)
            | PrepareError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The claim-state or inventory lock was poisoned by a panic elsewhere.
    pub(super) fn poisoned(what: &str) -> Self {
        PrepareError::Internal(format!("{what} lock poisoned"))
    }
}

/// A crash a test injects after a prepare step: the prepare stops right there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InjectedFault(pub String);

impl From<String> for InjectedFault {
    fn from(text: String) -> Self {
        InjectedFault(text)
    }
}

impl From<&str> for InjectedFault {
    fn from(text: &str) -> Self {
        InjectedFault(text.to_owned())
    }
}
