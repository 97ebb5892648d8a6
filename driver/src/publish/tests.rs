use std::sync::{Arc, Mutex};

use super::*;
use crate::fake_api::FakeApi;

fn inventory(name: &str) -> Inventory {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    Inventory::from_sysfs(&backends::SysfsRoot::new(machine.root()), None)
}

/// A publisher talking to a fake API server over a `tower_test` mock service, with the plugin's call
/// timeouts.
fn publisher(api: FakeApi, config: SliceConfig) -> (Publisher, Arc<Mutex<FakeApi>>) {
    let state = Arc::new(Mutex::new(api));
    let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
    (Publisher::new(client, config), state)
}

fn requests(state: &Arc<Mutex<FakeApi>>) -> Vec<String> {
    let mut api = state.lock().unwrap();
    api.log.drain(..).map(|l| l.short()).collect()
}

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";

#[tokio::test]
async fn publishes_once_then_an_unchanged_rescan_makes_no_call() {
    let (mut publisher, state) =
        publisher(FakeApi::with_node("node-1"), SliceConfig::new("node-1"));
    let gb300 = inventory("gb300");
    let report = publisher.publish(&gb300).await.unwrap();
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
        let stored = &api.slices["node-1-hal-dra-dev-0"];
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
        let again = publisher.publish(&gb300).await.unwrap();
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
    let (mut publisher, state) = publisher(FakeApi::with_node("n"), SliceConfig::new("n"));
    publisher.publish(&Inventory::default()).await.unwrap();
    let api = state.lock().unwrap();
    assert_eq!(
        api.log[1].uri,
        format!("{SLICES}?&fieldSelector=spec.nodeName%3Dn%2Cspec.driver%3Dhal.dra.dev")
    );
}

#[tokio::test]
async fn an_added_vf_writes_the_changed_slice_once() {
    let (mut publisher, state) = publisher(FakeApi::with_node("x"), SliceConfig::new("x"));
    let xeon = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = backends::SysfsRoot::new(xeon.root());
    publisher
        .publish(&Inventory::from_sysfs(&root, None))
        .await
        .unwrap();
    requests(&state);

    // The kernel gets one more VF on the ConnectX (4 -> 5), as a real sriov_numvfs write would do.
    let kernel = Arc::new(hal_mock::EmulatedKernel::new(xeon.root()));
    let sriov = backends::SysfsSriov::with_writer(root.clone(), kernel);
    let pf = hal::PciAddress::parse("0000:b1:00.0").unwrap();
    hal::SriovPf::set_num_vfs(&sriov, pf, 5).unwrap();
    let report = publisher
        .publish(&Inventory::from_sysfs(&root, None))
        .await
        .unwrap();
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
    assert_eq!(requests(&state), [format!("PUT {SLICES}/x-hal-dra-dev-0")]);
    let api = state.lock().unwrap();
    let devices = api.slices["x-hal-dra-dev-0"]["spec"]["devices"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        devices.iter().any(|d| d["name"] == "nic-0000-b1-00-6"),
        "the fifth VF"
    );
}

#[tokio::test]
async fn restarts_adopt_what_is_there_and_shrinking_deletes_slices() {
    let mut config = SliceConfig::new("x");
    config.cpu_mode = crate::slices::CpuMode::Individual;
    let xeon = inventory("xeon");
    let (mut first, state) = publisher(FakeApi::with_node("x"), config.clone());
    assert_eq!(
        first.publish(&xeon).await.unwrap().created,
        2,
        "224 CPUs and 18 devices: 2 slices"
    );
    let stored = std::mem::take(&mut *state.lock().unwrap());

    // A new process (a restart) finds the same slices: nothing to write.
    let mut api = FakeApi::with_node("x");
    api.slices = stored.slices;
    let (mut second, state) = publisher(api, config.clone());
    let report = second.publish(&xeon).await.unwrap();
    assert!(!report.wrote());
    assert_eq!(report.generation, 1);
    assert_eq!(
        requests(&state),
        ["GET /api/v1/nodes/x".to_owned(), format!("GET {SLICES}")]
    );

    // Fewer devices: one slice is enough; the new generation is written first, then the extra deleted.
    config.families.cpus = false;
    let api = std::mem::take(&mut *state.lock().unwrap());
    let (mut third, state) = publisher(api, config);
    let report = third.publish(&xeon).await.unwrap();
    assert_eq!(
        (report.updated, report.deleted, report.generation),
        (1, 1, 2)
    );
    assert_eq!(
        requests(&state)[2..],
        [
            format!("PUT {SLICES}/x-hal-dra-dev-0"),
            format!("DELETE {SLICES}/x-hal-dra-dev-1")
        ]
    );
    let api = state.lock().unwrap();
    assert_eq!(api.slices.len(), 1);
    assert_eq!(
        api.slices["x-hal-dra-dev-0"]["spec"]["pool"]["resourceSliceCount"],
        1
    );
}

#[tokio::test]
async fn conflicts_are_retried_after_a_fresh_read() {
    let (mut publisher, state) = publisher(FakeApi::with_node("n"), SliceConfig::new("n"));
    publisher.publish(&inventory("gb300")).await.unwrap();
    requests(&state);
    let path = format!("PUT {SLICES}/n-hal-dra-dev-0");
    state.lock().unwrap().fail_once.push((path.clone(), 409));
    let report = publisher.publish(&inventory("i915")).await.unwrap();
    assert_eq!(report.updated, 1);
    assert_eq!(
        requests(&state),
        [path.clone(), format!("GET {SLICES}/n-hal-dra-dev-0"), path]
    );
}

#[tokio::test]
async fn api_errors_name_the_operation_and_a_missing_node_fails_clearly() {
    let (mut ghost, _state) = publisher(FakeApi::default(), SliceConfig::new("ghost"));
    let error = ghost.publish(&Inventory::default()).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("get node ghost: "), "{text}");
    assert!(matches!(error, PublishError::Api { op: "get node", .. }));

    let (mut failing, state) = publisher(FakeApi::with_node("n"), SliceConfig::new("n"));
    state
        .lock()
        .unwrap()
        .fail_once
        .push((format!("POST {SLICES}"), 500));
    let error = failing.publish(&inventory("gb300")).await.unwrap_err();
    assert!(
        matches!(error, PublishError::Api { op: "create", .. }),
        "{error}"
    );
    // The next attempt starts over from what the server holds and succeeds.
    let report = failing.publish(&inventory("gb300")).await.unwrap();
    assert_eq!(report.created, 1);
}

#[tokio::test(start_paused = true)]
async fn the_loop_publishes_changes_on_notification_and_rescans_for_free() {
    let (publisher, state) = publisher(FakeApi::with_node("n"), SliceConfig::new("n"));
    let current = Arc::new(Mutex::new(inventory("gb300")));
    let read = {
        let current = current.clone();
        move || build_slices(&current.lock().unwrap(), &SliceConfig::new("n"), 0)
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
    *current.lock().unwrap() = inventory("i915");
    changed.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(requests(&state), [format!("PUT {SLICES}/n-hal-dra-dev-0")]);

    stop.send(true).unwrap();
    task.await.unwrap();
}
