//! Where the preparer reads claims from and writes their device status: the API server, with every
//! call bounded in time, so a slow or hung server delays only the claims that need it.

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;

use crate::api::{ErrorKind as ApiErrorKind, kind_of};
use crate::plugin::api::BoxFuture;

/// The most one API call of a prepare may take, end to end: twice the client's limit for the
/// response to start ([`crate::api::CALL_TIMEOUT`]), so a body that never ends is bounded too.
pub const CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where claims are read from.
pub trait ClaimSource: Send + Sync {
    /// The ResourceClaim `namespace/name`; `Ok(None)` when it does not exist.
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>>;

    /// Replaces this driver's entries in the claim's `status.devices` (server-side apply with the driver
    /// as field manager; an empty list removes them). Sources that cannot write do nothing.
    fn set_device_status(
        &self,
        _namespace: &str,
        _name: &str,
        _driver: &str,
        _devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why a ResourceClaim could not be read: the API server's answer, classified (404, 409, 5xx, ... as
/// [`ApiErrorKind`]), or none in time. The message names the claim.
#[derive(Debug, thiserror::Error)]
pub enum ClaimReadError {
    /// The API server or the connection to it failed.
    #[error("reading ResourceClaim {claim}: {source}")]
    Api {
        /// `namespace/name`.
        claim: String,
        /// The class of the failure.
        kind: ApiErrorKind,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No complete answer within [`CALL_LIMIT`].
    #[error("reading ResourceClaim {claim}: no answer from the API server in {} s", after.as_secs())]
    Timeout {
        /// `namespace/name`.
        claim: String,
        /// The deadline.
        after: std::time::Duration,
    },
}

impl ClaimReadError {
    /// The class of the failure, for deciding whether to retry.
    pub fn kind(&self) -> ApiErrorKind {
        match self {
            ClaimReadError::Api { kind, .. } => *kind,
            ClaimReadError::Timeout { .. } => ApiErrorKind::Timeout,
        }
    }
}

/// Why a claim's device status was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusWriteError {
    /// The API server refused the plugin the write (403): a configuration error of the cluster, not of
    /// the claim. Kubernetes 1.36+ checks, besides `patch` on `resourceclaims/status`,
    /// `associated-node:patch` on `resourceclaims/driver` for the driver's name.
    #[error("{0}")]
    Forbidden(String),
    /// Any other failure (unreachable, timed out, a conflict).
    #[error("{0}")]
    Failed(String),
}

/// Claims from the API server.
pub struct KubeClaims(pub kube::Client);

impl ClaimSource for KubeClaims {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.0.clone(), namespace);
        let name = name.to_owned();
        let claim = format!("{namespace}/{name}");
        Box::pin(async move {
            // The client's layer bounds the wait for the response to start; this bounds the whole
            // call (a body that never ends too).
            match tokio::time::timeout(CALL_LIMIT, api.get_opt(&name)).await {
                Ok(got) => got.map_err(|source| ClaimReadError::Api {
                    claim,
                    kind: kind_of(&source),
                    source,
                }),
                Err(_) => Err(ClaimReadError::Timeout {
                    claim,
                    after: CALL_LIMIT,
                }),
            }
        })
    }

    fn set_device_status(
        &self,
        namespace: &str,
        name: &str,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.0.clone(), namespace);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let params = kube::api::PatchParams::apply(driver).force();
        let driver = driver.to_owned();
        Box::pin(async move {
            let body = serde_json::json!({
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "status": {"devices": devices}
            });
            let patch = kube::api::Patch::Apply(body);
            let Ok(patched) =
                tokio::time::timeout(CALL_LIMIT, api.patch_status(&name, &params, &patch)).await
            else {
                return Err(StatusWriteError::Failed(format!(
                    "writing the device status of ResourceClaim {namespace}/{name}: no answer \
                     from the API server in {} s",
                    CALL_LIMIT.as_secs()
                )));
            };
            patched
                .map(|_| ())
                .map_err(|e| match &e {
                    kube::Error::Api(status) if status.code == 403 => {
                        StatusWriteError::Forbidden(format!(
                            "the API server forbids writing the device status of ResourceClaim \
                             {namespace}/{name} ({e}): grant patch on resourceclaims/status and, on \
                             Kubernetes 1.36+, associated-node:patch on resourceclaims/driver for \
                             resourceNames [{driver}] (the chart's ClusterRole does)"
                        ))
                    }
                    _ => StatusWriteError::Failed(format!(
                        "writing the device status of ResourceClaim {namespace}/{name}: {e}"
                    )),
                })
        })
    }
}
