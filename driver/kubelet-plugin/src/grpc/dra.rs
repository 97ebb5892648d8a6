//! The DRA service, `v1.DRAPlugin` and `v1beta1.DRAPlugin`, both served by one [`DraHandler`].

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::{v1, v1beta1};
use crate::handler::{ClaimRef, DraHandler, PrepareResults, PreparedDevice, UnprepareResults};

/// The most claims one call may name. The kubelet sends the claims of one pod per call, and a pod
/// references a handful; a call naming thousands would take as long as all its claims (and, with a
/// handler that is not concurrent, hold every other call as long), so it is refused as a whole.
pub const MAX_CLAIMS_PER_CALL: usize = 128;

/// The answer for a claim the handler left out of its results: the kubelet retries such claims.
const NO_RESULT: &str = "the driver returned no result for this claim";

/// The DRA gRPC service over one [`DraHandler`]; it implements both the v1 and the v1beta1
/// `DRAPlugin` traits, so one handler serves whichever version the kubelet picked.
///
/// What it guarantees the kubelet, whatever the handler answers:
/// * every claim UID of a request gets exactly one entry in the response map (a UID the handler
///   left out gets an error entry, entries for UIDs nobody asked for are dropped, a UID asked
///   for twice is passed to the handler once);
/// * a claim with an empty UID is not passed to the handler: it is answered by one entry keyed by
///   the empty string whose error names the claim(s), since the kubelet keys answers by UID and
///   there is no better key (the kubelet always sends UIDs, so this only guards against bad callers);
/// * calls reach the handler one at a time, across both versions (like the Go kubelet-plugin
///   helper's default serialization), so the claim logic needs no locking of its own; unless the
///   handler says it is [`DraHandler::concurrent`].
///
/// `Device.share_id` is passed on by v1 and dropped by v1beta1, which has no such field.
#[derive(Clone)]
pub struct DraService {
    inner: Arc<Inner>,
}

struct Inner {
    handler: Arc<dyn DraHandler>,
    serialize: Mutex<()>,
}

impl std::fmt::Debug for DraService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraService").finish_non_exhaustive()
    }
}

impl DraService {
    /// A service calling `handler`.
    pub fn new(handler: Arc<dyn DraHandler>) -> Self {
        DraService {
            inner: Arc::new(Inner {
                handler,
                serialize: Mutex::new(()),
            }),
        }
    }

    /// The `v1.DRAPlugin` server, for `tonic::transport::Server::add_service`.
    pub fn v1_server(&self) -> v1::dra_plugin_server::DraPluginServer<Self> {
        v1::dra_plugin_server::DraPluginServer::new(self.clone())
    }

    /// The `v1beta1.DRAPlugin` server, for `tonic::transport::Server::add_service`.
    pub fn v1beta1_server(&self) -> v1beta1::dra_plugin_server::DraPluginServer<Self> {
        v1beta1::dra_plugin_server::DraPluginServer::new(self.clone())
    }

    /// Prepares `claims`: one answer per UID of the request.
    async fn prepare(&self, version: &'static str, claims: Vec<ClaimRef>) -> PrepareResults {
        let (valid, mut answers) = split_claims(claims);
        tracing::debug!(version, claims = valid.len(), "NodePrepareResources");
        if !valid.is_empty() {
            let uids: Vec<String> = valid.iter().map(|claim| claim.uid.clone()).collect();
            let mut results = if self.inner.handler.concurrent() {
                self.inner.handler.prepare(valid).await
            } else {
                let _serial = self.inner.serialize.lock().await;
                self.inner.handler.prepare(valid).await
            };
            for uid in uids {
                let result = results
                    .remove(&uid)
                    .unwrap_or_else(|| Err(NO_RESULT.to_owned()));
                answers.insert(uid, result);
            }
        }
        for (uid, result) in &answers {
            if let Err(error) = result {
                tracing::warn!(version, claim_uid = %uid, %error, "preparing claim failed");
            }
        }
        answers
    }

    /// Unprepares `claims`: one answer per UID of the request.
    async fn unprepare(&self, version: &'static str, claims: Vec<ClaimRef>) -> UnprepareResults {
        let (valid, errors) = split_claims(claims);
        let mut answers: UnprepareResults = errors
            .into_iter()
            .map(|(uid, result)| (uid, result.map(|_| ())))
            .collect();
        tracing::debug!(version, claims = valid.len(), "NodeUnprepareResources");
        if !valid.is_empty() {
            let uids: Vec<String> = valid.iter().map(|claim| claim.uid.clone()).collect();
            let mut results = if self.inner.handler.concurrent() {
                self.inner.handler.unprepare(valid).await
            } else {
                let _serial = self.inner.serialize.lock().await;
                self.inner.handler.unprepare(valid).await
            };
            for uid in uids {
                let result = results
                    .remove(&uid)
                    .unwrap_or_else(|| Err(NO_RESULT.to_owned()));
                answers.insert(uid, result);
            }
        }
        for (uid, result) in &answers {
            if let Err(error) = result {
                tracing::warn!(version, claim_uid = %uid, %error, "unpreparing claim failed");
            }
        }
        answers
    }
}

/// Splits a request's claims into those to pass to the handler (non-empty UID, each UID once) and
/// the answer for claims without a UID (one entry keyed by "", naming them all).
fn split_claims(claims: Vec<ClaimRef>) -> (Vec<ClaimRef>, PrepareResults) {
    let mut valid: Vec<ClaimRef> = Vec::with_capacity(claims.len());
    let mut without_uid = Vec::new();
    for claim in claims {
        if claim.uid.is_empty() {
            without_uid.push(format!("{}/{}", claim.namespace, claim.name));
        } else if !valid.iter().any(|seen| seen.uid == claim.uid) {
            valid.push(claim);
        }
    }
    let mut answers = BTreeMap::new();
    if !without_uid.is_empty() {
        answers.insert(
            String::new(),
            Err(format!("claim without a UID: {}", without_uid.join(", "))),
        );
    }
    (valid, answers)
}

/// `claims`, or `InvalidArgument` when they are more than [`MAX_CLAIMS_PER_CALL`].
fn bounded<T>(claims: Vec<T>) -> Result<Vec<T>, Status> {
    if claims.len() > MAX_CLAIMS_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "{} claims in one call; at most {MAX_CLAIMS_PER_CALL} are accepted (one pod's claims)",
            claims.len()
        )));
    }
    Ok(claims)
}

/// What differs between the two versions of the DRA service: only the message types. The service
/// itself is one generic implementation ([`DraService::prepare_call`], [`DraService::unprepare_call`]);
/// each version's tonic trait impl only unwraps the request and wraps the answer.
trait Version {
    /// `v1`, `v1beta1`: for the logs.
    const NAME: &'static str;
    /// The version's `Claim`.
    type Claim;
    /// The version's `NodePrepareResourceResponse` (one claim's answer).
    type Prepared;
    /// The version's `NodeUnprepareResourceResponse` (one claim's answer).
    type Unprepared;
    /// The claim as the handler sees it.
    fn claim(claim: Self::Claim) -> ClaimRef;
    /// One claim's prepare answer: its devices, or the error text.
    fn prepared(result: Result<Vec<PreparedDevice>, String>) -> Self::Prepared;
    /// One claim's unprepare answer: the error text, empty when done.
    fn unprepared(error: String) -> Self::Unprepared;
}

/// `v1.DRAPlugin`.
struct V1;

impl Version for V1 {
    const NAME: &'static str = "v1";
    type Claim = v1::Claim;
    type Prepared = v1::NodePrepareResourceResponse;
    type Unprepared = v1::NodeUnprepareResourceResponse;

    fn claim(claim: v1::Claim) -> ClaimRef {
        ClaimRef {
            namespace: claim.namespace,
            uid: claim.uid,
            name: claim.name,
        }
    }

    fn prepared(result: Result<Vec<PreparedDevice>, String>) -> Self::Prepared {
        let (devices, error) = split_result(result);
        let devices = devices
            .into_iter()
            .map(|device| v1::Device {
                request_names: device.request_names,
                pool_name: device.pool_name,
                device_name: device.device_name,
                cdi_device_ids: device.cdi_device_ids,
                share_id: device.share_id,
            })
            .collect();
        v1::NodePrepareResourceResponse { devices, error }
    }

    fn unprepared(error: String) -> Self::Unprepared {
        v1::NodeUnprepareResourceResponse { error }
    }
}

/// `v1beta1.DRAPlugin`: no share ids.
struct V1beta1;

impl Version for V1beta1 {
    const NAME: &'static str = "v1beta1";
    type Claim = v1beta1::Claim;
    type Prepared = v1beta1::NodePrepareResourceResponse;
    type Unprepared = v1beta1::NodeUnprepareResourceResponse;

    fn claim(claim: v1beta1::Claim) -> ClaimRef {
        ClaimRef {
            namespace: claim.namespace,
            uid: claim.uid,
            name: claim.name,
        }
    }

    fn prepared(result: Result<Vec<PreparedDevice>, String>) -> Self::Prepared {
        let (devices, error) = split_result(result);
        let devices = devices
            .into_iter()
            .map(|device| v1beta1::Device {
                request_names: device.request_names,
                pool_name: device.pool_name,
                device_name: device.device_name,
                cdi_device_ids: device.cdi_device_ids,
            })
            .collect();
        v1beta1::NodePrepareResourceResponse { devices, error }
    }

    fn unprepared(error: String) -> Self::Unprepared {
        v1beta1::NodeUnprepareResourceResponse { error }
    }
}

fn split_result(result: Result<Vec<PreparedDevice>, String>) -> (Vec<PreparedDevice>, String) {
    match result {
        Ok(devices) => (devices, String::new()),
        Err(error) => (Vec::new(), error),
    }
}

impl DraService {
    /// NodePrepareResources of version `V`: at most [`MAX_CLAIMS_PER_CALL`] claims, one answer each.
    async fn prepare_call<V: Version, C: FromIterator<(String, V::Prepared)>>(
        &self,
        claims: Vec<V::Claim>,
    ) -> Result<C, Status> {
        let claims = bounded(claims)?.into_iter().map(V::claim).collect();
        let answers = self.prepare(V::NAME, claims).await;
        Ok(answers
            .into_iter()
            .map(|(uid, result)| (uid, V::prepared(result)))
            .collect())
    }

    /// NodeUnprepareResources of version `V`: at most [`MAX_CLAIMS_PER_CALL`] claims, one answer each.
    async fn unprepare_call<V: Version, C: FromIterator<(String, V::Unprepared)>>(
        &self,
        claims: Vec<V::Claim>,
    ) -> Result<C, Status> {
        let claims = bounded(claims)?.into_iter().map(V::claim).collect();
        let answers = self.unprepare(V::NAME, claims).await;
        Ok(answers
            .into_iter()
            .map(|(uid, result)| (uid, V::unprepared(result.err().unwrap_or_default())))
            .collect())
    }
}

#[tonic::async_trait]
impl v1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        let claims = self
            .prepare_call::<V1, _>(request.into_inner().claims)
            .await?;
        Ok(Response::new(v1::NodePrepareResourcesResponse { claims }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        let claims = self
            .unprepare_call::<V1, _>(request.into_inner().claims)
            .await?;
        Ok(Response::new(v1::NodeUnprepareResourcesResponse { claims }))
    }
}

#[tonic::async_trait]
impl v1beta1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        request: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let claims = self
            .prepare_call::<V1beta1, _>(request.into_inner().claims)
            .await?;
        Ok(Response::new(v1beta1::NodePrepareResourcesResponse {
            claims,
        }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let claims = self
            .unprepare_call::<V1beta1, _>(request.into_inner().claims)
            .await?;
        Ok(Response::new(v1beta1::NodeUnprepareResourcesResponse {
            claims,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claim(uid: &str, name: &str) -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            uid: uid.into(),
            name: name.into(),
        }
    }

    #[test]
    fn claims_without_uid_get_one_entry_and_duplicates_are_passed_once() {
        let (valid, answers) = split_claims(vec![
            claim("a", "one"),
            claim("", "two"),
            claim("a", "one-again"),
            claim("", "three"),
            claim("b", "four"),
        ]);
        let uids: Vec<&str> = valid.iter().map(|claim| claim.uid.as_str()).collect();
        assert_eq!(uids, ["a", "b"]);
        assert_eq!(answers.len(), 1);
        assert_eq!(
            answers.get(""),
            Some(&Err("claim without a UID: ns/two, ns/three".to_owned()))
        );
    }

    /// Counts the claims it is given.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl DraHandler for Counting {
        fn prepare(&self, claims: Vec<ClaimRef>) -> crate::handler::BoxFuture<'_, PrepareResults> {
            self.0
                .fetch_add(claims.len(), std::sync::atomic::Ordering::SeqCst);
            let answers = claims
                .into_iter()
                .map(|c| (c.uid, Ok(Vec::new())))
                .collect();
            Box::pin(async move { answers })
        }

        fn unprepare(
            &self,
            claims: Vec<ClaimRef>,
        ) -> crate::handler::BoxFuture<'_, UnprepareResults> {
            self.0
                .fetch_add(claims.len(), std::sync::atomic::Ordering::SeqCst);
            let answers = claims.into_iter().map(|c| (c.uid, Ok(()))).collect();
            Box::pin(async move { answers })
        }
    }

    #[tokio::test]
    async fn a_call_naming_more_claims_than_the_bound_is_refused_before_any_work() {
        use v1::dra_plugin_server::DraPlugin as V1;
        use v1beta1::dra_plugin_server::DraPlugin as V1beta1;
        let handler = Arc::new(Counting(std::sync::atomic::AtomicUsize::new(0)));
        let service = DraService::new(handler.clone());
        let v1_claims = |n: usize| -> Vec<v1::Claim> {
            (0..n)
                .map(|i| v1::Claim {
                    namespace: "ns".into(),
                    uid: format!("u{i}"),
                    name: format!("c{i}"),
                })
                .collect()
        };
        let too_many = MAX_CLAIMS_PER_CALL + 1;
        let refused = V1::node_prepare_resources(
            &service,
            Request::new(v1::NodePrepareResourcesRequest {
                claims: v1_claims(too_many),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused
                .message()
                .starts_with("129 claims in one call; at most 128")
        );
        let refused = V1::node_unprepare_resources(
            &service,
            Request::new(v1::NodeUnprepareResourcesRequest {
                claims: v1_claims(20_000),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let beta: Vec<v1beta1::Claim> = (0..too_many)
            .map(|i| v1beta1::Claim {
                namespace: "ns".into(),
                uid: format!("u{i}"),
                name: format!("c{i}"),
            })
            .collect();
        let refused = V1beta1::node_prepare_resources(
            &service,
            Request::new(v1beta1::NodePrepareResourcesRequest { claims: beta }),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        let answered = V1::node_prepare_resources(
            &service,
            Request::new(v1::NodePrepareResourcesRequest {
                claims: v1_claims(MAX_CLAIMS_PER_CALL),
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(answered.claims.len(), MAX_CLAIMS_PER_CALL);
    }
}
