//! Each failure of a prepare has a kind that says whose fault it is; API failures keep their class
//! (404, 409, 5xx, timeout) up to the preparer, and the kubelet still gets the message.

use super::*;
use crate::api::ErrorKind as ApiErrorKind;

/// A claim source whose reads fail as the API server would.
struct Failing(ApiErrorKind);

impl ClaimSource for Failing {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, ClaimReadError>> {
        let claim = format!("{namespace}/{name}");
        let error = match self.0 {
            ApiErrorKind::Timeout => ClaimReadError::Timeout {
                claim,
                after: CALL_LIMIT,
            },
            kind => {
                let code = match kind {
                    ApiErrorKind::Conflict => 409,
                    ApiErrorKind::Rejected(code) | ApiErrorKind::Server(code) => code,
                    _ => 500,
                };
                let status = kube::core::Status::failure("injected", "Injected").with_code(code);
                let source = kube::Error::Api(status.boxed());
                ClaimReadError::Api {
                    claim,
                    kind: crate::api::kind_of(&source),
                    source,
                }
            }
        };
        Box::pin(async move { Err(error) })
    }
}

#[tokio::test]
async fn a_failed_claim_read_keeps_the_api_servers_class() {
    let s = Setup::new();
    for kind in [
        ApiErrorKind::Server(503),
        ApiErrorKind::Conflict,
        ApiErrorKind::Rejected(403),
        ApiErrorKind::Timeout,
    ] {
        let config = s.config("boot-1", SliceConfig::new(NODE));
        let preparer = Preparer::new(config, Arc::new(Failing(kind)), s.inventory.clone()).unwrap();
        let error = preparer.prepare_locked(reference("u1")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Api(kind), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("reading ResourceClaim ns/claim-u1: "),
            "the message names the claim: {error}"
        );
        // The kubelet gets the same message.
        let answer = preparer.prepare(vec![reference("u1")]).await;
        assert_eq!(answer["u1"].clone().unwrap_err(), error.to_string());
    }
}

#[tokio::test]
async fn each_failure_of_a_prepare_has_its_kind() {
    let s = Setup::new();
    s.claims
        .add("a", &[("nic", "rdma-0102-00-00-0")], json!([]));
    s.claims
        .add("b", &[("nic", "rdma-0102-00-00-0")], json!([]));
    s.claims.add("gone", &[("gpu", "gpu-not-here")], json!([]));
    let preparer = s.preparer("boot-1");
    preparer.prepare_locked(reference("a")).await.unwrap();

    let held = preparer.prepare_locked(reference("b")).await.unwrap_err();
    assert_eq!(held.kind(), ErrorKind::Conflict, "{held}");
    assert!(
        held.to_string().contains("already prepared for claim a"),
        "{held}"
    );

    let missing = preparer
        .prepare_locked(reference("none"))
        .await
        .unwrap_err();
    assert_eq!(
        missing.kind(),
        ErrorKind::Api(ApiErrorKind::NotFound),
        "{missing}"
    );
    assert_eq!(missing.to_string(), "ResourceClaim ns/claim-none not found");

    let unpublished = preparer
        .prepare_locked(reference("gone"))
        .await
        .unwrap_err();
    assert_eq!(unpublished.kind(), ErrorKind::NotPublished, "{unpublished}");
    assert!(
        unpublished.to_string().contains("gpu-not-here"),
        "{unpublished}"
    );

    let replaced = ClaimRef {
        uid: "other".into(),
        ..reference("a")
    };
    let replaced = preparer.prepare_locked(replaced).await.unwrap_err();
    assert_eq!(replaced.kind(), ErrorKind::InvalidClaim, "{replaced}");
    assert!(matches!(
        replaced,
        PrepareError::Claim(crate::plugin::claims::ClaimError::UidMismatch { .. })
    ));
}

#[test]
fn a_rollback_failure_keeps_the_first_failures_kind_and_both_messages() {
    let cause = PrepareError::Held("device d is already prepared for claim a".into());
    let also = PrepareError::RollingBack(Box::new(PrepareError::Machine("gone".into())));
    let error = PrepareError::Abandoned {
        cause: Box::new(cause),
        also: vec![also],
    };
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(
        error.to_string(),
        "device d is already prepared for claim a; rolling back: gone"
    );
}
