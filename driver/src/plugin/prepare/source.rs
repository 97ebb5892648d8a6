//! Where the preparer reads claims from and writes their device status: the API server, with every
//! call bounded in time, so a slow or hung server delays only the claims that need it.

use dra_kubelet_plugin::locks::KeyedLocks;
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

    /// Removes this driver's entries from the claim's `status.devices`, in turn with
    /// [`ClaimSource::change_device_status`] of the claim (the API server's source takes the same lock
    /// per claim), so a read-and-write under way lands first and one that comes after finds nothing.
    fn clear_device_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        driver: &'a str,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        self.set_device_status(namespace, name, driver, Vec::new())
    }

    /// Reads this driver's entries in the claim's `status.devices`, hands them to `change` and writes
    /// what it returns ([`ClaimSource::set_device_status`]; nothing when it returns `None`). The API
    /// server's source does the read and the write of one claim as one step: its writers (the
    /// preparer's tries again, the NRI plugin's `networkData`, the unprepare's clear) never
    /// interleave there and undo each other's entries.
    fn change_device_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        driver: &'a str,
        change: StatusChange,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(read_change_write(self, namespace, name, driver, change))
    }
}

/// What [`ClaimSource::change_device_status`] does with the driver's current entries: the entries to
/// write, or `None` to write nothing.
pub type StatusChange =
    Box<dyn FnOnce(Vec<serde_json::Value>) -> Option<Vec<serde_json::Value>> + Send>;

/// [`ClaimSource::change_device_status`] without a lock: reads the claim, writes `change` of this
/// driver's entries.
async fn read_change_write<S: ClaimSource + ?Sized>(
    source: &S,
    namespace: &str,
    name: &str,
    driver: &str,
    change: StatusChange,
) -> Result<(), StatusWriteError> {
    let current = source
        .get(namespace, name)
        .await
        .map_err(|e| StatusWriteError::Failed(e.to_string()))?
        .ok_or_else(|| {
            StatusWriteError::Gone(format!("ResourceClaim {namespace}/{name} is gone"))
        })?;
    let mine: Vec<serde_json::Value> = current
        .status
        .and_then(|s| s.devices)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.driver == driver)
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect();
    match change(mine) {
        Some(devices) => {
            source
                .set_device_status(namespace, name, driver, devices)
                .await
        }
        None => Ok(()),
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
    /// The claim is gone (deleted): there is nothing to write to.
    #[error("{0}")]
    Gone(String),
    /// Any other failure (unreachable, timed out, a conflict).
    #[error("{0}")]
    Failed(String),
}

/// Whether `error` says that the object `name` does not exist: a 404 whose details name it, as the
/// API server's does (`NewNotFound` in apimachinery's `pkg/api/errors/errors.go`). A 404 without
/// them (a path the server does not serve: the resource type disabled, a proxy's page) says nothing
/// about the claim, and taking it for "deleted" would unprepare every claim of the node.
fn is_missing(error: &kube::Error, name: &str) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 404 && status.details.as_ref().is_some_and(|d| d.name == name))
}

/// Claims from the API server. Its [`ClaimSource::change_device_status`] holds a lock per claim, so
/// share one between the preparer and the NRI plugin.
pub struct KubeClaims {
    client: kube::Client,
    status_locks: KeyedLocks,
}

impl KubeClaims {
    /// Claims through `client`.
    pub fn new(client: kube::Client) -> KubeClaims {
        KubeClaims {
            client,
            status_locks: KeyedLocks::default(),
        }
    }
}

impl ClaimSource for KubeClaims {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_owned();
        let claim = format!("{namespace}/{name}");
        Box::pin(async move {
            // The client's layer bounds the wait for the response to start; this bounds the whole
            // call (a body that never ends too).
            match tokio::time::timeout(CALL_LIMIT, api.get(&name)).await {
                Ok(Ok(found)) => Ok(Some(found)),
                Ok(Err(source)) if is_missing(&source, &name) => Ok(None),
                Ok(Err(source)) => Err(ClaimReadError::Api {
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
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), namespace);
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

    fn change_device_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        driver: &'a str,
        change: StatusChange,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.status_locks.lock(&format!("{namespace}/{name}")).await;
            read_change_write(self, namespace, name, driver, change).await
        })
    }

    fn clear_device_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        driver: &'a str,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.status_locks.lock(&format!("{namespace}/{name}")).await;
            self.set_device_status(namespace, name, driver, Vec::new())
                .await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::is_missing;

    /// A 404 as the API server writes it, with `details` as given.
    fn not_found(details: serde_json::Value) -> kube::Error {
        let status = serde_json::json!({"kind": "Status", "status": "Failure", "code": 404,
            "reason": "NotFound", "message": "not found", "details": details});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    #[test]
    fn only_a_404_naming_the_claim_says_it_is_gone() {
        let named = |name: &str| serde_json::json!({"name": name, "group": "resource.k8s.io", "kind": "resourceclaims"});
        assert!(is_missing(&not_found(named("claim-a")), "claim-a"));
        // The resource type not served, or a proxy's 404: not the claim's answer.
        assert!(!is_missing(&not_found(serde_json::Value::Null), "claim-a"));
        assert!(!is_missing(&not_found(serde_json::json!({})), "claim-a"));
        assert!(!is_missing(&not_found(named("claim-b")), "claim-a"));
    }

    /// Through the client, against the fake API server (whose 404s for objects carry details as
    /// the real one's do): a missing claim is `None`; a 404 without details is an error.
    #[tokio::test]
    async fn a_404_that_does_not_name_the_claim_is_an_error() {
        use super::{ClaimSource, KubeClaims};
        use crate::fake_api::FakeApi;
        use std::sync::{Arc, Mutex};
        let api = Arc::new(Mutex::new(FakeApi::with_node("node-1")));
        api.lock().unwrap().claims.insert(
            "ns/claim-a".into(),
            serde_json::json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "claim-a", "namespace": "ns", "uid": "a"},
                "spec": {"devices": {"requests": []}}}),
        );
        let client = FakeApi::mock_client(api.clone(), &crate::api::call_timeout_layer());
        let claims = KubeClaims::new(client);
        assert!(claims.get("ns", "claim-b").await.unwrap().is_none());
        let path = "GET /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-a";
        api.lock().unwrap().fail_once.push((path.into(), 404));
        let error = claims.get("ns", "claim-a").await.unwrap_err();
        assert_eq!(error.kind(), crate::api::ErrorKind::NotFound);
        assert!(claims.get("ns", "claim-a").await.unwrap().is_some());
    }
}
