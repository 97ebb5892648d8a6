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

fn gpu_with_admin_access(s: &Setup, uid: &str, admin: bool) {
    let result = json!({"request": "gpu", "driver": DRIVER, "pool": NODE,
                        "device": "gpu-0008-06-00-0", "adminAccess": admin});
    s.claims.add_results(uid, vec![result], json!([]));
}

/// Admin access (KEP-5018: monitoring, diagnostics) shares a device in use: the scheduler allocates
/// it beside the claim that uses it, in either order, and a restart keeps that.
#[tokio::test]
async fn admin_access_shares_a_device_in_either_order_and_gives_no_second_owner() {
    let s = Setup::new();
    gpu_with_admin_access(&s, "monitor", true);
    gpu_with_admin_access(&s, "user", false);
    gpu_with_admin_access(&s, "second-user", false);
    gpu_with_admin_access(&s, "second-monitor", true);
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("monitor")]).await["monitor"].is_ok());
    let user = preparer.prepare(vec![reference("user")]).await;
    assert!(user["user"].is_ok(), "after an admin claim: {user:?}");
    let second = preparer.prepare(vec![reference("second-monitor")]).await;
    assert!(second["second-monitor"].is_ok(), "after a user: {second:?}");
    drop(preparer);
    let restarted = s.preparer("boot-1");
    let refused = restarted.prepare(vec![reference("second-user")]).await;
    assert_eq!(
        refused["second-user"].clone().unwrap_err(),
        "device gpu-0008-06-00-0 is already prepared for claim user"
    );
    // With the user gone, a second user may come even beside the admin claims.
    assert!(restarted.unprepare(vec![reference("user")]).await["user"].is_ok());
    let second_user = restarted.prepare(vec![reference("second-user")]).await;
    assert!(second_user["second-user"].is_ok(), "{second_user:?}");
}

/// A claim with admin access whose record was lost is rebuilt from its spec, which cannot say
/// admin access; asked again, it is completed from its ResourceClaim, admin access included.
#[tokio::test]
async fn a_rebuilt_admin_claim_gets_its_admin_access_back_when_asked_again() {
    let s = Setup::new();
    gpu_with_admin_access(&s, "monitor", true);
    gpu_with_admin_access(&s, "user", false);
    let before = s.preparer("boot-1");
    assert!(before.prepare(vec![reference("monitor")]).await["monitor"].is_ok());
    drop(before);
    std::fs::write(s.checkpoint_path().join("monitor.json"), "garbage").unwrap();
    let after = s.preparer("boot-1");
    let refused = after.prepare(vec![reference("user")]).await;
    assert!(
        refused["user"].is_err(),
        "rebuilt: the GPU is its own until asked again"
    );
    assert!(after.prepare(vec![reference("monitor")]).await["monitor"].is_ok());
    let user = after.prepare(vec![reference("user")]).await;
    assert!(user["user"].is_ok(), "{user:?}");
}

#[tokio::test]
async fn a_claim_with_admin_access_cannot_rebind_the_device_or_take_its_netdev() {
    let s = Setup::on("xeon");
    let result = json!({"request": "vf", "driver": DRIVER, "pool": NODE,
                        "device": "nic-0000-3b-01-2", "adminAccess": true});
    let rebind = json!([{"source": "FromClaim", "requests": ["vf"], "opaque": {"driver": DRIVER,
        "parameters": {"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "driver": "vfio-pci"}}}]);
    s.claims.add_results("rebind", vec![result.clone()], rebind);
    s.claims
        .add_results("attach", vec![result], vf_config(None, "net1"));
    let preparer = s.preparer("boot-1");
    for (uid, why) in [
        (
            "rebind",
            "admin access cannot bind 0000:3b:01.2 to vfio-pci",
        ),
        (
            "attach",
            "admin access cannot attach the function's netdev to its pod",
        ),
    ] {
        let error = preparer.prepare(vec![reference(uid)]).await[uid]
            .clone()
            .unwrap_err();
        assert!(error.contains(why), "{uid}: {error}");
    }
    assert_eq!(s.driver_of("0000:3b:01.2").as_deref(), Some("iavf"));
    assert!(preparer.recorded().await.is_empty());
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

/// The scheduler may give one exclusive device to a request and to another with admin access of
/// the same claim: refused, naming both requests, with nothing left behind. Two requests that both
/// have admin access (a monitoring claim: all GPUs, and this one) take nothing: prepared, the GPU
/// named once to the containers.
#[tokio::test]
async fn an_exclusive_device_given_to_two_requests_of_a_claim_is_refused_naming_both() {
    let s = Setup::new();
    let result = |request: &str, admin: bool| {
        json!({"request": request, "driver": DRIVER, "pool": NODE,
               "device": "gpu-0008-06-00-0", "adminAccess": admin})
    };
    s.claims.add_results(
        "twice",
        vec![result("train", false), result("watch", true)],
        json!([]),
    );
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("twice")]).await["twice"]
        .clone()
        .unwrap_err();
    assert!(
        error.starts_with(
            "device gpu-0008-06-00-0 is allocated to requests train and watch of this claim"
        ),
        "{error}"
    );
    assert!(preparer.recorded().await.is_empty());
    assert!(s.spec_files().is_empty());
    s.claims.add_results(
        "watch",
        vec![result("all", true), result("this", true)],
        json!([]),
    );
    let devices = preparer.prepare(vec![reference("watch")]).await["watch"]
        .clone()
        .unwrap();
    let ids: Vec<_> = devices.iter().map(|d| d.cdi_device_ids.clone()).collect();
    assert_eq!(
        ids,
        [
            vec!["hal.dra.dev/device=watch-gpu-0008-06-00-0".to_owned()],
            vec!["hal.dra.dev/device=watch-gpu-0008-06-00-0_2".to_owned()]
        ]
    );
    let env = env_of(&s.spec("watch"));
    assert!(
        env.contains(&"GPU_DEVICE_0=gpu-0008-06-00-0".to_owned()),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|e| e.starts_with("GPU_DEVICE_1=")),
        "{env:?}"
    );
}
