//! Hostile claims: a shareID on a device that is not shareable, names that are not Kubernetes names.

use super::*;

fn shared_gpu(s: &Setup, uid: &str, share: &str) {
    let result = json!({"request": "gpu", "driver": DRIVER, "pool": NODE,
                        "device": "gpu-0008-06-00-0", "shareID": share});
    s.claims.add_results(uid, vec![result], json!([]));
}

#[tokio::test]
async fn a_share_id_on_a_device_not_published_as_shareable_gives_it_no_second_owner() {
    let s = Setup::new();
    shared_gpu(&s, "a", "share-a");
    shared_gpu(&s, "b", "share-b");
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("a")]).await["a"].is_ok());
    let b = preparer.prepare(vec![reference("b")]).await;
    let error = b["b"].clone().unwrap_err();
    assert_eq!(
        error,
        "device gpu-0008-06-00-0 is already prepared for claim a"
    );
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_a.json"]);
}

#[tokio::test]
async fn claim_references_that_are_not_kubernetes_names_are_refused_before_any_api_call() {
    let s = Setup::new();
    s.claims
        .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    let cases = [
        ("ns", "plain/status", "u1", "name"),
        ("ns/x", "claim-u1", "u1", "namespace"),
        ("ns", "Claim", "u1", "name"),
        ("ns", "..", "u1", "name"),
        ("", "claim-u1", "u1", "namespace"),
        ("ns", "claim-u1", "../u1", "uid"),
        ("ns", "claim-u1", "", "uid"),
        // Refused by the CDI spec's file name check: refused here, before any record is written.
        ("ns", "claim-u1", "u..1", "uid"),
        ("ns", "claim-u1", ".u1", "uid"),
    ];
    for (namespace, name, uid, field) in cases {
        let claim = ClaimRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let prepared = preparer.prepare(vec![claim.clone()]).await;
        let error = prepared[uid].clone().unwrap_err();
        assert!(
            error.starts_with(&format!("claim reference {field} ")),
            "{namespace}/{name}/{uid}: {error}"
        );
        let unprepared = preparer.unprepare(vec![claim]).await;
        assert!(unprepared[uid].is_err(), "{namespace}/{name}/{uid}");
    }
    assert!(preparer.recorded().await.is_empty());
    assert!(s.claims.1.lock().unwrap().is_empty(), "no status written");
}
