//! A driver's ResourceClaims on the API server: read one ([`ClaimSource::get`]), and write, change or
//! clear the driver's entries of its `status.devices` (server-side apply, bound to the claim's UID:
//! a claim deleted and re-created under its name is never written), with every call bounded in time
//! so a slow or hung server delays only the claims that need it ([`KubeClaims`]). [`status`] keeps a
//! write (or a clear) going after the kubelet gave up on the call that started it, and tries it
//! again after a failure.

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;

use crate::client::{ErrorKind as ApiErrorKind, kind_of};
use crate::locks::KeyedLocks;

pub mod status;
use crate::handler::{BoxFuture, ClaimRef};

/// The most one API call of a prepare may take, end to end: twice the client's limit for the
/// response to start ([`crate::client::CALL_TIMEOUT`]), so a body that never ends is bounded too.
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
    /// as field manager; an empty list removes them). Sources that cannot write do nothing. The write
    /// is bound to the claim's UID: a claim deleted and re-created under its name meanwhile (another
    /// pod's) is not written ([`StatusWriteError::Replaced`]).
    fn set_device_status(
        &self,
        _claim: &ClaimRef,
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
        claim: &'a ClaimRef,
        driver: &'a str,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        self.set_device_status(claim, driver, Vec::new())
    }

    /// Reads this driver's entries in the claim's `status.devices`, hands them to `change` and writes
    /// what it returns ([`ClaimSource::set_device_status`]; nothing when it returns `None`). The API
    /// server's source does the read and the write of one claim as one step: its writers (the
    /// preparer's tries again, the NRI plugin's `networkData`, the unprepare's clear) never
    /// interleave there and undo each other's entries. A claim read with another UID than `claim`'s
    /// is not written ([`StatusWriteError::Replaced`]).
    fn change_device_status<'a>(
        &'a self,
        claim: &'a ClaimRef,
        driver: &'a str,
        change: StatusChange,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(read_change_write(self, claim, driver, change))
    }
}

/// What [`ClaimSource::change_device_status`] does with the driver's current entries: the entries to
/// write, or `None` to write nothing.
pub type StatusChange =
    Box<dyn FnOnce(Vec<serde_json::Value>) -> Option<Vec<serde_json::Value>> + Send>;

/// [`ClaimSource::change_device_status`] without a lock: reads the claim, writes `change` of this
/// driver's entries when it is still the claim `claim` names (its UID).
async fn read_change_write<S: ClaimSource + ?Sized>(
    source: &S,
    claim: &ClaimRef,
    driver: &str,
    change: StatusChange,
) -> Result<(), StatusWriteError> {
    let (namespace, name, uid) = (&claim.namespace, &claim.name, &claim.uid);
    let current = source
        .get(namespace, name)
        .await
        .map_err(|e| StatusWriteError::Failed(e.to_string()))?
        .ok_or_else(|| {
            StatusWriteError::Gone(format!(
                "ResourceClaim {namespace}/{name} (UID {uid}) is gone"
            ))
        })?;
    match current.metadata.uid.as_deref() {
        Some(found) if found == uid => {}
        // Deleted and re-created under its name: another pod's claim, not to be written.
        Some(found) => {
            return Err(StatusWriteError::Replaced(format!(
                "ResourceClaim {namespace}/{name} has UID {found}, not {uid}: it was deleted and \
                 re-created under its name; its device status is not written"
            )));
        }
        // An answer without a UID (a proxy's `{}` decodes as a claim with every field empty) says
        // nothing about the claim.
        None => {
            return Err(StatusWriteError::Failed(format!(
                "reading ResourceClaim {namespace}/{name} (UID {uid}): the answer has no UID"
            )));
        }
    }
    match change(entries_of(current, driver)) {
        Some(devices) => source.set_device_status(claim, driver, devices).await,
        None => Ok(()),
    }
}

/// The entries of `claim`'s `status.devices` that `driver` wrote, as JSON (what a
/// [`StatusChange`] gets).
pub fn entries_of(claim: ResourceClaim, driver: &str) -> Vec<serde_json::Value> {
    claim
        .status
        .and_then(|s| s.devices)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.driver == driver)
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect()
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
    /// The claim was deleted and re-created under its name: the object there now has another UID
    /// (another pod's claim), so nothing of this claim is written to it. The API server answers a
    /// status apply whose `metadata.uid` is not the stored object's with `422 Invalid` ("field is
    /// immutable"); a read-and-write sees the other UID in its read.
    #[error("{0}")]
    Replaced(String),
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
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim.namespace);
        let claim = claim.clone();
        let params = kube::api::PatchParams::apply(driver).force();
        let driver = driver.to_owned();
        Box::pin(async move {
            let ClaimRef {
                namespace,
                name,
                uid,
            } = &claim;
            // `metadata.uid` binds the write to this claim: the API server refuses it (422) when
            // the object under the name has another UID ([`is_replaced`]).
            let body = serde_json::json!({
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "status": {"devices": devices}
            });
            let patch = kube::api::Patch::Apply(body);
            let Ok(patched) =
                tokio::time::timeout(CALL_LIMIT, api.patch_status(name, &params, &patch)).await
            else {
                return Err(StatusWriteError::Failed(format!(
                    "writing the device status of ResourceClaim {namespace}/{name} (UID {uid}): no \
                     answer from the API server in {} s",
                    CALL_LIMIT.as_secs()
                )));
            };
            patched.map(|_| ()).map_err(|e| match &e {
                kube::Error::Api(status) if status.code == 403 => {
                    StatusWriteError::Forbidden(format!(
                        "the API server forbids writing the device status of ResourceClaim \
                         {namespace}/{name} ({e}): grant patch on resourceclaims/status and, on \
                         Kubernetes 1.36+, associated-node:patch on resourceclaims/driver for \
                         resourceNames [{driver}] (the chart's ClusterRole does)"
                    ))
                }
                _ if is_replaced(&e) => StatusWriteError::Replaced(format!(
                    "ResourceClaim {namespace}/{name} is no longer the claim with UID {uid}: it was \
                     deleted and re-created under its name; its device status is not written ({e})"
                )),
                _ if is_missing(&e, name) => StatusWriteError::Gone(format!(
                    "ResourceClaim {namespace}/{name} (UID {uid}) is gone: {e}"
                )),
                _ => StatusWriteError::Failed(format!(
                    "writing the device status of ResourceClaim {namespace}/{name} (UID {uid}): {e}"
                )),
            })
        })
    }

    fn change_device_status<'a>(
        &'a self,
        claim: &'a ClaimRef,
        driver: &'a str,
        change: StatusChange,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.status_locks.lock(&status_key(claim)).await;
            read_change_write(self, claim, driver, change).await
        })
    }

    fn clear_device_status<'a>(
        &'a self,
        claim: &'a ClaimRef,
        driver: &'a str,
    ) -> BoxFuture<'a, Result<(), StatusWriteError>> {
        Box::pin(async move {
            let _claim = self.status_locks.lock(&status_key(claim)).await;
            self.set_device_status(claim, driver, Vec::new()).await
        })
    }
}

/// The key of a claim's status lock: its name, which a re-created claim shares (its writes are
/// refused, so they may wait in the same turn).
fn status_key(claim: &ClaimRef) -> String {
    format!("{}/{}", claim.namespace, claim.name)
}

/// Whether `error` is the API server's refusal of a write whose `metadata.uid` is not the stored
/// object's: the claim was deleted and re-created under its name.
///
/// Upstream (`k8s.io/apiserver`, `k8s.io/apimachinery`): a patch carries no UID precondition, as
/// `patchResource` (`pkg/endpoints/handlers/patch.go`) passes `rest.DefaultUpdatedObjectInfo(nil,
/// ...)`, whose `Preconditions()` (`pkg/registry/rest/update.go`) is nil without an object; so no
/// `409 Conflict` "Precondition failed: UID in precondition" (only a `PUT` with a UID, or a
/// `DELETE` with preconditions, gets one). The applied UID is merged into the object, and
/// `Store.Update` (`pkg/registry/generic/registry/store.go`) calls `rest.BeforeUpdate`, whose
/// `validateCommonFields` runs `ValidateObjectMetaAccessorUpdate` (`pkg/api/validation/
/// objectmeta.go`: `ValidateImmutableField` of `metadata.uid`), turned by `errors.NewInvalid` into
/// `422`, reason `Invalid`, message `ResourceClaim.resource.k8s.io "NAME" is invalid: metadata.uid:
/// Invalid value: "UID": field is immutable`, with a cause whose field is `metadata.uid`. A missing
/// claim is a 404 before that: the status subresource never creates (`StatusREST.Update` in
/// `pkg/registry/resource/resourceclaim/storage/storage.go`).
fn is_replaced(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    let uid_cause = |d: &kube::core::response::StatusDetails| {
        d.causes.iter().any(|c| c.field == "metadata.uid")
    };
    status.code == 422 && status.details.as_ref().is_some_and(uid_cause)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
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
        let client = FakeApi::mock_client(api.clone(), &crate::client::call_timeout_layer());
        let claims = KubeClaims::new(client);
        assert!(claims.get("ns", "claim-b").await.unwrap().is_none());
        let path = "GET /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-a";
        api.lock().unwrap().fail_once.push((path.into(), 404));
        let error = claims.get("ns", "claim-a").await.unwrap_err();
        assert_eq!(error.kind(), crate::client::ErrorKind::NotFound);
        assert!(claims.get("ns", "claim-a").await.unwrap().is_some());
    }

    /// A write bound to a claim deleted and re-created under its name since: the apply (its
    /// `metadata.uid`) is refused by the API server, 422, and the read-and-write sees the other
    /// UID in its read and writes nothing (no apply sent); both say `Replaced`, naming the claim.
    /// The claim there now is written as before.
    #[tokio::test]
    async fn a_status_write_to_a_claim_re_created_under_its_name_is_refused() {
        use super::{ClaimSource, KubeClaims, StatusWriteError};
        use crate::fake_api::FakeApi;
        use crate::handler::ClaimRef;
        use std::sync::{Arc, Mutex};
        let theirs =
            serde_json::json!([{"driver": "hal.dra.dev", "pool": "node-2", "device": "vf-9"}]);
        let api = Arc::new(Mutex::new(FakeApi::with_node("node-1")));
        api.lock().unwrap().claims.insert(
            "ns/claim-a".into(),
            serde_json::json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "claim-a", "namespace": "ns", "uid": "a-2"},
                "spec": {"devices": {"requests": []}}, "status": {"devices": theirs}}),
        );
        let claims = KubeClaims::new(FakeApi::mock_client(
            api.clone(),
            &crate::client::call_timeout_layer(),
        ));
        let old = ClaimRef {
            namespace: "ns".into(),
            name: "claim-a".into(),
            uid: "a-1".into(),
        };
        let mine =
            vec![serde_json::json!({"driver": "hal.dra.dev", "pool": "node-1", "device": "vf-0"})];
        let applies = |api: &Arc<Mutex<FakeApi>>| {
            api.lock()
                .unwrap()
                .log
                .iter()
                .filter(|l| l.method == "PATCH")
                .count()
        };

        let error = claims
            .set_device_status(&old, "hal.dra.dev", mine.clone())
            .await
            .unwrap_err();
        let StatusWriteError::Replaced(message) = &error else {
            panic!("not Replaced: {error:?}");
        };
        assert!(
            message.contains("ns/claim-a") && message.contains("a-1"),
            "{message}"
        );
        assert_eq!(applies(&api), 1);
        let error = claims
            .clear_device_status(&old, "hal.dra.dev")
            .await
            .unwrap_err();
        assert!(matches!(error, StatusWriteError::Replaced(_)), "{error:?}");

        let change = Box::new(
            |_: Vec<serde_json::Value>| -> Option<Vec<serde_json::Value>> {
                panic!("changed the status of another claim")
            },
        );
        let error = claims
            .change_device_status(&old, "hal.dra.dev", change)
            .await
            .unwrap_err();
        let StatusWriteError::Replaced(message) = &error else {
            panic!("not Replaced: {error:?}");
        };
        assert!(
            message.contains("a-1") && message.contains("a-2"),
            "{message}"
        );
        assert_eq!(applies(&api), 2, "no apply after the read");
        let stored = api.lock().unwrap().claims["ns/claim-a"]["status"]["devices"].clone();
        assert_eq!(stored, theirs);

        let new = ClaimRef {
            uid: "a-2".into(),
            ..old
        };
        claims
            .set_device_status(&new, "hal.dra.dev", mine.clone())
            .await
            .unwrap();
        let stored = api.lock().unwrap().claims["ns/claim-a"]["status"]["devices"].clone();
        assert_eq!(stored, serde_json::json!(mine));
    }
}
