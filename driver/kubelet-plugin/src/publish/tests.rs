use std::sync::{Arc, Mutex};

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, ResourcePool};

use super::*;
use crate::fake_api::FakeApi;

/// The driver of the tests' slices.
pub(super) const DRIVER: &str = "gpu.example.com";

/// A pool of node `node` for [`DRIVER`], as a driver builds it: one slice per entry of `slices`, named
/// `<node>-gpu-example-com-<i>`, holding that many devices named `<prefix>-<j>`.
pub(super) fn pool(node: &str, slices: &[(&str, usize)]) -> Vec<ResourceSlice> {
    slices
        .iter()
        .enumerate()
        .map(|(i, (prefix, count))| ResourceSlice {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{node}-gpu-example-com-{i}")),
                ..Default::default()
            },
            spec: ResourceSliceSpec {
                driver: DRIVER.to_owned(),
                node_name: Some(node.to_owned()),
                pool: ResourcePool {
                    name: node.to_owned(),
                    generation: 0,
                    resource_slice_count: slices.len() as i64,
                },
                devices: Some(
                    (0..*count)
                        .map(|j| Device {
                            name: format!("{prefix}-{j}"),
                            attributes: Some(BTreeMap::from([(
                                "index".to_owned(),
                                DeviceAttribute {
                                    int: Some(j as i64),
                                    ..Default::default()
                                },
                            )])),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            },
        })
        .collect()
}

/// One slice of ten GPUs.
pub(super) fn gpus(node: &str) -> Vec<ResourceSlice> {
    pool(node, &[("gpu", 10)])
}

/// One slice of three VFs: another machine than [`gpus`], in a slice of the same name.
pub(super) fn vfs(node: &str) -> Vec<ResourceSlice> {
    pool(node, &[("vf", 3)])
}

/// Two slices: CPUs, and the other devices.
pub(super) fn two_slices(node: &str) -> Vec<ResourceSlice> {
    pool(node, &[("cpu", 8), ("nic", 4)])
}

/// A publisher talking to a fake API server over a `tower_test` mock service, with the plugin's call
/// timeouts.
fn publisher(api: FakeApi, node: &str) -> (Publisher, Arc<Mutex<FakeApi>>) {
    let state = Arc::new(Mutex::new(api));
    let client = FakeApi::mock_client(state.clone(), &crate::client::call_timeout_layer());
    (Publisher::new(client, node, DRIVER), state)
}

fn requests(state: &Arc<Mutex<FakeApi>>) -> Vec<String> {
    let mut api = state.lock().unwrap();
    api.log.drain(..).map(|l| l.short()).collect()
}

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";

#[tokio::test]
async fn publishes_once_then_an_unchanged_rescan_makes_no_call() {
    let (mut publisher, state) = publisher(FakeApi::with_node("node-1"), "node-1");
    let desired = gpus("node-1");
    let report = publisher.publish(&desired).await.unwrap();
    assert_eq!(
        (
            report.created,
            report.updated,
            report.deleted,
            report.generation
        ),
        (1, 0, 0, 1)
    );
    assert_eq!(
        requests(&state),
        [
            "GET /api/v1/nodes/node-1".to_owned(),
            format!("GET {SLICES}"),
            format!("POST {SLICES}"),
        ]
    );
    {
        let api = state.lock().unwrap();
        let stored = &api.slices["node-1-gpu-example-com-0"];
        assert_eq!(stored["spec"]["pool"]["generation"], 1);
        assert_eq!(stored["spec"]["pool"]["name"], "node-1");
        assert_eq!(stored["spec"]["nodeName"], "node-1");
        assert_eq!(stored["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(
            stored["metadata"]["ownerReferences"][0]["uid"],
            "uid-node-1"
        );
        assert_eq!(stored["spec"]["devices"].as_array().unwrap().len(), 10);
    }
    for _ in 0..3 {
        let again = publisher.publish(&desired).await.unwrap();
        assert!(!again.wrote());
        assert_eq!(again.generation, 1);
    }
    assert_eq!(
        requests(&state),
        Vec::<String>::new(),
        "an unchanged rescan is free"
    );
}

#[tokio::test]
async fn the_list_request_selects_this_node_and_driver() {
    let (mut publisher, state) = publisher(FakeApi::with_node("n"), "n");
    publisher.publish(&[]).await.unwrap();
    let api = state.lock().unwrap();
    assert_eq!(
        api.log[1].uri,
        format!("{SLICES}?&fieldSelector=spec.nodeName%3Dn%2Cspec.driver%3Dgpu.example.com")
    );
}

#[tokio::test]
async fn an_added_device_writes_the_changed_slice_once() {
    let (mut publisher, state) = publisher(FakeApi::with_node("x"), "x");
    publisher.publish(&gpus("x")).await.unwrap();
    requests(&state);

    // One more device in the one slice (a VF made on the node).
    let report = publisher.publish(&pool("x", &[("gpu", 11)])).await.unwrap();
    assert_eq!(
        (
            report.created,
            report.updated,
            report.deleted,
            report.generation
        ),
        (0, 1, 0, 1),
        "one slice to write: the generation stays (upstream's syncPool)"
    );
    assert_eq!(
        requests(&state),
        [format!("PUT {SLICES}/x-gpu-example-com-0")]
    );
    let api = state.lock().unwrap();
    let devices = api.slices["x-gpu-example-com-0"]["spec"]["devices"]
        .as_array()
        .unwrap()
        .clone();
    assert!(devices.iter().any(|d| d["name"] == "gpu-10"), "the new one");
}

#[tokio::test]
async fn restarts_adopt_what_is_there_and_shrinking_deletes_slices() {
    let two = two_slices("x");
    let (mut first, state) = publisher(FakeApi::with_node("x"), "x");
    assert_eq!(first.publish(&two).await.unwrap().created, 2);
    let stored = std::mem::take(&mut *state.lock().unwrap());

    // A new process (a restart) finds the same slices: nothing to write.
    let mut api = FakeApi::with_node("x");
    api.slices = stored.slices;
    let (mut second, state) = publisher(api, "x");
    let report = second.publish(&two).await.unwrap();
    assert!(!report.wrote());
    assert_eq!(report.generation, 1);
    assert_eq!(
        requests(&state),
        ["GET /api/v1/nodes/x".to_owned(), format!("GET {SLICES}")]
    );

    // Fewer devices: one slice is enough; the new generation is written first, then the extra deleted.
    let api = std::mem::take(&mut *state.lock().unwrap());
    let (mut third, state) = publisher(api, "x");
    let report = third.publish(&pool("x", &[("nic", 4)])).await.unwrap();
    assert_eq!(
        (report.updated, report.deleted, report.generation),
        (1, 1, 2)
    );
    assert_eq!(
        requests(&state)[2..],
        [
            format!("PUT {SLICES}/x-gpu-example-com-0"),
            format!("DELETE {SLICES}/x-gpu-example-com-1")
        ]
    );
    let api = state.lock().unwrap();
    assert_eq!(api.slices.len(), 1);
    assert_eq!(
        api.slices["x-gpu-example-com-0"]["spec"]["pool"]["resourceSliceCount"],
        1
    );
}

#[tokio::test]
async fn conflicts_are_retried_after_a_fresh_read() {
    let (mut publisher, state) = publisher(FakeApi::with_node("n"), "n");
    publisher.publish(&gpus("n")).await.unwrap();
    requests(&state);
    let path = format!("PUT {SLICES}/n-gpu-example-com-0");
    state.lock().unwrap().fail_once.push((path.clone(), 409));
    let start = std::time::Instant::now();
    let report = publisher.publish(&vfs("n")).await.unwrap();
    assert!(
        start.elapsed() >= super::CONFLICT_PAUSE,
        "paused before the retry"
    );
    assert_eq!(report.updated, 1);
    assert_eq!(
        requests(&state),
        [
            path.clone(),
            format!("GET {SLICES}/n-gpu-example-com-0"),
            path
        ]
    );
}

#[tokio::test]
async fn a_write_that_keeps_conflicting_fails_with_its_kind_after_five_tries() {
    let (mut publisher, state) = publisher(FakeApi::with_node("n"), "n");
    publisher.publish(&gpus("n")).await.unwrap();
    requests(&state);
    let path = format!("PUT {SLICES}/n-gpu-example-com-0");
    for _ in 0..super::CONFLICT_RETRIES {
        state.lock().unwrap().fail_once.push((path.clone(), 409));
    }
    let error = publisher.publish(&vfs("n")).await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::Conflict), "{error}");
    assert!(
        error.to_string().starts_with("update n-gpu-example-com-0"),
        "{error}"
    );
    let puts = requests(&state).iter().filter(|r| **r == path).count();
    assert_eq!(puts, super::CONFLICT_RETRIES);
    // The next round reads the slice afresh and writes it.
    assert_eq!(publisher.publish(&vfs("n")).await.unwrap().updated, 1);
}

#[tokio::test]
async fn api_errors_name_the_operation_and_a_missing_node_fails_clearly() {
    let (mut ghost, _state) = publisher(FakeApi::default(), "ghost");
    let error = ghost.publish(&[]).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("get node ghost: "), "{text}");
    assert!(matches!(error, PublishError::Api { op: "get node", .. }));

    let (mut failing, state) = publisher(FakeApi::with_node("n"), "n");
    state
        .lock()
        .unwrap()
        .fail_once
        .push((format!("POST {SLICES}"), 500));
    let error = failing.publish(&gpus("n")).await.unwrap_err();
    assert!(
        matches!(error, PublishError::Api { op: "create", .. }),
        "{error}"
    );
    // The next attempt starts over from what the server holds and succeeds.
    let report = failing.publish(&gpus("n")).await.unwrap();
    assert_eq!(report.created, 1);
}

/// An interval past the clock's range (`--rescan-interval 18446744073709551615` before the flag was
/// bounded) publishes once and waits, rather than panicking at `Instant + interval`.
#[tokio::test(start_paused = true)]
async fn an_interval_past_the_clocks_range_is_a_rescan_never_due() {
    let (publisher, state) = publisher(FakeApi::with_node("n"), "n");
    let changed = Arc::new(tokio::sync::Notify::new());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(publish_loop(
        publisher,
        || gpus("n"),
        std::time::Duration::MAX,
        changed,
        shutdown,
    ));
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    let writes = requests(&state)
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .count();
    assert_eq!(writes, 1);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_loop_publishes_changes_on_notification_and_rescans_for_free() {
    let (publisher, state) = publisher(FakeApi::with_node("n"), "n");
    let current = Arc::new(Mutex::new(gpus("n")));
    let read = {
        let current = current.clone();
        move || current.lock().unwrap().clone()
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let interval = std::time::Duration::from_secs(30);
    let task = tokio::spawn(publish_loop(
        publisher,
        read,
        interval,
        changed.clone(),
        shutdown,
    ));

    // Ten periodic rescans of the same machine: only the first publish writes.
    tokio::time::sleep(interval * 10).await;
    let writes = |log: &[String]| log.iter().filter(|r| !r.starts_with("GET")).count();
    assert_eq!(writes(&requests(&state)), 1);

    // The machine changes and the watcher says so: published without waiting for the interval.
    *current.lock().unwrap() = vfs("n");
    changed.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(
        requests(&state),
        [format!("PUT {SLICES}/n-gpu-example-com-0")]
    );

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn slices_the_check_refuses_or_of_another_node_or_driver_are_never_sent() {
    let (publisher, state) = publisher(FakeApi::with_node("n"), "n");
    let mut publisher = publisher.with_check(|slices| {
        slices
            .iter()
            .filter(|s| s.spec.devices.as_ref().is_some_and(|d| d.len() > 10))
            .map(|s| format!("slice {:?}: spec.devices: more than 10", s.metadata.name))
            .collect()
    });
    let error = publisher
        .publish(&pool("n", &[("gpu", 11)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PublishError::Invalid(e) if e.len() == 1),
        "{error}"
    );
    assert_eq!(error.kind(), None, "retrying cannot help");
    assert!(
        error.to_string().contains("spec.devices: more than 10"),
        "{error}"
    );

    let mut foreign = pool("m", &[("gpu", 2), ("vf", 2)]);
    foreign[0].metadata.name = None;
    for slice in &mut foreign {
        slice.spec.driver = "other.example.com".into();
    }
    let PublishError::Invalid(errors) = publisher.publish(&foreign).await.unwrap_err() else {
        panic!("not Invalid");
    };
    assert_eq!(
        errors,
        [
            "slice #0: metadata.name: missing",
            "slice m-gpu-example-com-1: spec.nodeName: Some(\"m\"), not this publisher's node \"n\"",
            "slice m-gpu-example-com-1: spec.driver: \"other.example.com\", not this publisher's driver \"gpu.example.com\""
        ]
    );

    // The API server's rules need no check of the driver's: a device name that is not a DNS label.
    let (mut plain, plain_state) = self::publisher(FakeApi::with_node("n"), "n");
    let mut bad = gpus("n");
    bad[0].spec.devices.as_mut().unwrap()[3].name = "GPU_3".into();
    let PublishError::Invalid(errors) = plain.publish(&bad).await.unwrap_err() else {
        panic!("not Invalid");
    };
    assert_eq!(
        errors,
        ["slice n-gpu-example-com-0: spec.devices[3].name: \"GPU_3\" is not a DNS label"]
    );
    assert!(
        requests(&plain_state).iter().all(|r| r.starts_with("GET")),
        "nothing written"
    );
    // Two slices of one name: the second would overwrite the first on the API server.
    let mut twins = pool("n", &[("gpu", 2), ("vf", 2)]);
    twins[1].metadata.name = twins[0].metadata.name.clone();
    let PublishError::Invalid(errors) = plain.publish(&twins).await.unwrap_err() else {
        panic!("not Invalid");
    };
    assert_eq!(
        errors,
        ["slice #1: metadata.name: \"n-gpu-example-com-0\" is the name of an earlier slice"]
    );
    // The pool generation is the publisher's: slices that disagree on it are not refused for that.
    let mut mixed = pool("n", &[("gpu", 2), ("vf", 2)]);
    mixed[1].spec.pool.generation = 7;
    let report = plain.publish(&mixed).await.unwrap();
    assert_eq!((report.created, report.generation), (2, 1));

    let log = requests(&state);
    assert!(
        log.iter().all(|r| r.starts_with("GET")),
        "nothing written: {log:?}"
    );
    assert_eq!(publisher.publish(&gpus("n")).await.unwrap().created, 1);
}

/// Two driver names that make the same slice names (`gpu.example.com` and `gpu-example.com`): the
/// other driver's slice is not overwritten when creating ours meets it (409).
#[tokio::test]
async fn a_slice_of_the_same_name_of_another_driver_is_not_taken_over() {
    let mut api = FakeApi::with_node("n");
    let mut foreign = gpus("n").remove(0);
    foreign.spec.driver = "gpu-example.com".into();
    let reply = api.handle("POST", SLICES, &serde_json::to_vec(&foreign).unwrap());
    assert_eq!(reply.status(), Some(201));
    api.log.clear();
    let (mut publisher, state) = publisher(api, "n");
    let error = publisher.publish(&gpus("n")).await.unwrap_err();
    assert!(
        matches!(&error, PublishError::Taken { driver, .. } if driver == "gpu-example.com"),
        "{error}"
    );
    assert_eq!(error.kind(), Some(ErrorKind::Conflict), "retried later");
    let api = state.lock().unwrap();
    assert_eq!(
        api.slices["n-gpu-example-com-0"]["spec"]["driver"],
        "gpu-example.com"
    );
    assert!(
        !api.log.iter().any(|l| l.short().starts_with("PUT")),
        "{:?}",
        api.log
    );
}

/// As upstream's `removeSlices`: an extra slice is deleted only as observed (UID and
/// resourceVersion); one changed meanwhile is not deleted blind, and the next attempt starts over
/// from a fresh list.
#[tokio::test]
async fn an_extra_slice_changed_meanwhile_is_not_deleted_until_listed_again() {
    let (mut publisher, state) = publisher(FakeApi::with_node("x"), "x");
    assert_eq!(
        publisher.publish(&two_slices("x")).await.unwrap().created,
        2
    );
    let extra = format!("{SLICES}/x-gpu-example-com-1");
    {
        // An admin labels the second slice; the publisher has not seen it (no watch here).
        let mut api = state.lock().unwrap();
        let mut edited = api.slices["x-gpu-example-com-1"].clone();
        edited["metadata"]["labels"] = serde_json::json!({"edited": "yes"});
        let reply = api.handle("PUT", &extra, &serde_json::to_vec(&edited).unwrap());
        assert_eq!(reply.status(), Some(200));
        api.log.clear();
    }
    let error = publisher
        .publish(&pool("x", &[("nic", 4)]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::Conflict), "{error}");
    assert!(error.to_string().contains("Precondition failed"), "{error}");
    assert!(
        state
            .lock()
            .unwrap()
            .slices
            .contains_key("x-gpu-example-com-1")
    );
    let log = requests(&state);
    assert_eq!(log.last(), Some(&format!("DELETE {extra}")), "{log:?}");

    let report = publisher.publish(&pool("x", &[("nic", 4)])).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(
        requests(&state)[0],
        format!("GET {SLICES}"),
        "listed afresh"
    );
    assert!(
        !state
            .lock()
            .unwrap()
            .slices
            .contains_key("x-gpu-example-com-1")
    );
}
