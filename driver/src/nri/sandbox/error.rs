//! Why a pod sandbox event failed; every message names the pod or the claim, device and field.

use hal::ErrorKind;

use crate::plugin::checkpoint::CheckpointError;
use crate::podnet::cni::{CniError, CniErrorKind};
use crate::podnet::error::{NetError, NetErrorKind};

/// Why attaching or tearing down a sandbox's network functions failed. `claim` fields read
/// `claim <namespace>/<name> device <device> (<pci>)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The prepared claims could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The sandbox has no network namespace.
    #[error(
        "pod {namespace}/{name}: the sandbox has no network namespace (hostNetwork?), so its \
         claims' network functions (VfConfig.netAttachDefName, NetworkConfig) cannot be attached"
    )]
    NoNetns {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// Two functions of the pod would get the same interface name.
    #[error("{claim}: {field} {if_name:?} is used twice in the pod")]
    NameUsedTwice {
        /// The claim and device.
        claim: String,
        /// `VfConfig.ifName` or `NetworkConfig interface.name`.
        field: &'static str,
        /// The name.
        if_name: String,
    },
    /// The NetworkAttachmentDefinition could not be read.
    #[error("{claim}: VfConfig.netAttachDefName: {source}")]
    Nad {
        /// The claim and device.
        claim: String,
        /// Why.
        #[source]
        source: CniError,
    },
    /// The CNI `ADD` failed.
    #[error("{claim}: network {network}: {source}")]
    Cni {
        /// The claim and device.
        claim: String,
        /// The NetworkAttachmentDefinition (`namespace/name`).
        network: String,
        /// Why.
        #[source]
        source: CniError,
    },
    /// The function has no netdev on the host to move (direct mode).
    #[error("{claim}: NetworkConfig: the function has no netdev on the host to move")]
    NoNetdev {
        /// The claim and device.
        claim: String,
    },
    /// The interface name in the pod is not a valid one (direct mode).
    #[error("{claim}: NetworkConfig interface.name: {if_name:?} {problem}")]
    BadName {
        /// The claim and device.
        claim: String,
        /// The name.
        if_name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The sandbox id is not a container id (it names the direct-mode state file).
    #[error("{claim}: the sandbox id {id:?} is not a container id")]
    BadSandboxId {
        /// The claim and device.
        claim: String,
        /// The id.
        id: String,
    },
    /// Moving the netdev into the pod failed (direct mode).
    #[error("{claim}: NetworkConfig: {source}")]
    Direct {
        /// The claim and device.
        claim: String,
        /// Why.
        #[source]
        source: NetError,
    },
    /// The blocking task of an attachment failed (panicked or was cancelled).
    #[error("{claim}: {source}")]
    Task {
        /// The claim and device.
        claim: String,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Tearing the sandbox down left attachments or netdevs behind, each named with its failure.
    #[error("{}", failures.join("; "))]
    Teardown {
        /// `<attachment or netdev state file>: <why>`, one each.
        failures: Vec<String>,
    },
}

impl SandboxError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::Checkpoint(e) => e.kind(),
            SandboxError::NoNetns { .. }
            | SandboxError::NameUsedTwice { .. }
            | SandboxError::NoNetdev { .. }
            | SandboxError::BadName { .. }
            | SandboxError::BadSandboxId { .. } => ErrorKind::InvalidInput,
            SandboxError::Nad { source, .. } | SandboxError::Cni { source, .. } => {
                cni_kind(source.kind())
            }
            SandboxError::Direct { source, .. } => net_kind(source.kind()),
            SandboxError::Task { .. } | SandboxError::Teardown { .. } => ErrorKind::Io,
        }
    }
}

fn cni_kind(kind: CniErrorKind) -> ErrorKind {
    match kind {
        CniErrorKind::Config => ErrorKind::InvalidInput,
        CniErrorKind::NotFound => ErrorKind::NotFound,
        CniErrorKind::Api
        | CniErrorKind::Exec
        | CniErrorKind::Plugin
        | CniErrorKind::Timeout
        | CniErrorKind::Cache => ErrorKind::Io,
    }
}

fn net_kind(kind: NetErrorKind) -> ErrorKind {
    match kind {
        NetErrorKind::Config => ErrorKind::InvalidInput,
        NetErrorKind::NotFound => ErrorKind::NotFound,
        NetErrorKind::Protected => ErrorKind::PermissionDenied,
        NetErrorKind::Namespace | NetErrorKind::Netlink | NetErrorKind::State => ErrorKind::Io,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_tell_the_claims_mistakes_from_failures_of_the_node() {
        let claim = "claim ns/c device nic-0 (0000:3b:02.0)".to_owned();
        let config = SandboxError::Nad {
            claim: claim.clone(),
            source: CniError::config("spec.config", "not JSON"),
        };
        assert_eq!(config.kind(), ErrorKind::InvalidInput);
        assert!(config.to_string().starts_with(&claim), "{config}");
        let plugin = SandboxError::Cni {
            claim: claim.clone(),
            network: "ns/sriov".into(),
            source: CniError::new(CniErrorKind::Timeout, "sriov: killed after 30 s"),
        };
        assert_eq!(plugin.kind(), ErrorKind::Io);
        assert!(plugin.to_string().contains("network ns/sriov"), "{plugin}");
        let protected = SandboxError::Direct {
            claim,
            source: NetError::new(NetErrorKind::Protected, "eth0 carries the default route"),
        };
        assert_eq!(protected.kind(), ErrorKind::PermissionDenied);
        let teardown = SandboxError::Teardown {
            failures: vec!["a: gone".into(), "b: busy".into()],
        };
        assert_eq!(teardown.to_string(), "a: gone; b: busy");
    }
}
