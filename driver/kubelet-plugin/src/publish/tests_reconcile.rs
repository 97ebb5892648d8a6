//! The publisher's loop against the fake API server, on tokio's paused clock: time passes only when
//! every task waits, so `sleep(d)` here lets `d` of virtual time pass after all pending work ran, and
//! request times (`Logged::at`) are exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::{Instant, sleep};
use tokio_stream::StreamExt;

use super::tests::{DRIVER, gpus, two_slices, vfs};
use super::*;
use crate::client::{Backoff, call_timeout_layer};
use crate::fake_api::{FakeApi, Logged};

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
const INTERVAL: Duration = Duration::from_secs(60);

/// The publisher's loop on node `n`, with the fake server, the plugin's call timeouts, and the handles
/// a test needs.
struct Running {
    state: Arc<Mutex<FakeApi>>,
    client: kube::Client,
    current: Arc<Mutex<Vec<ResourceSlice>>>,
    changed: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(api: FakeApi, desired: Vec<ResourceSlice>) -> Running {
    let state = Arc::new(Mutex::new(api));
    let client = FakeApi::mock_client(state.clone(), &call_timeout_layer());
    let current = Arc::new(Mutex::new(desired));
    let read = {
        let current = current.clone();
        move || current.lock().unwrap().clone()
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let publisher = Publisher::new(client.clone(), "n", DRIVER);
    let task = tokio::spawn(publish_loop(
        publisher,
        read,
        INTERVAL,
        changed.clone(),
        shutdown,
    ));
    Running {
        state,
        client,
        current,
        changed,
        stop,
        task,
    }
}

impl Running {
    /// Empties the request log and returns it.
    fn drain(&self) -> Vec<Logged> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }

    /// A request of another actor (the kubelet, an admin), straight to the server; its status.
    fn act(&self, method: &str, uri: &str, body: &Value) -> u16 {
        let mut api = self.state.lock().unwrap();
        let reply = api.handle(method, uri, &serde_json::to_vec(body).unwrap());
        api.log.pop();
        reply.status().unwrap()
    }

    fn slices(&self) -> std::collections::BTreeMap<String, Value> {
        self.state.lock().unwrap().slices.clone()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn short(log: &[Logged]) -> Vec<String> {
    log.iter().map(Logged::short).collect()
}

#[tokio::test(start_paused = true)]
async fn slices_the_kubelet_deletes_come_back_within_5_s() {
    let running = start(FakeApi::with_node("n"), two_slices("n"));
    sleep(Duration::from_secs(1)).await;
    let before = running.slices();
    assert_eq!(before.len(), 2);
    running.drain();

    // As the kubelet does at its start: DeleteCollection with the node's field selector.
    let wiped = Instant::now();
    let wipe = format!("{SLICES}?fieldSelector=spec.nodeName%3Dn");
    assert_eq!(running.act("DELETE", &wipe, &Value::Null), 200);
    assert!(running.slices().is_empty());

    sleep(Duration::from_secs(5)).await;
    let log = running.drain();
    assert_eq!(
        short(&log),
        [
            "GET /api/v1/nodes/n".to_owned(),
            format!("POST {SLICES}"),
            format!("POST {SLICES}")
        ],
        "recreated from the watch events, without listing, after checking the Node"
    );
    assert!(log.iter().all(|r| r.at - wiped < Duration::from_secs(5)));
    let after = running.slices();
    for (name, slice) in &before {
        assert_eq!(after[name]["spec"], slice["spec"], "{name}");
        assert_eq!(
            after[name]["metadata"]["ownerReferences"],
            slice["metadata"]["ownerReferences"]
        );
    }
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slice_another_actor_changes_is_restored_in_one_write() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    let name = "n-gpu-example-com-0";
    let original = running.slices()[name].clone();
    running.drain();

    let mut edited = original.clone();
    edited["spec"]["devices"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let uri = format!("{SLICES}/{name}");
    assert_eq!(running.act("PUT", &uri, &edited), 200);
    let edited_at = Instant::now();

    sleep(Duration::from_secs(5)).await;
    let log = running.drain();
    assert_eq!(short(&log), [format!("PUT {uri}")]);
    assert!(log[0].at - edited_at < Duration::from_secs(5));
    let restored = &running.slices()[name];
    assert_eq!(restored["spec"], original["spec"]);
    assert_eq!(
        restored["spec"]["pool"]["generation"], 1,
        "one write repairs it: the generation stays"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_foreign_slice_of_this_driver_and_node_is_removed_and_nothing_else() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    let ours = running.slices()["n-gpu-example-com-0"].clone();
    running.drain();

    let mut foreign = ours.clone();
    foreign["metadata"] = serde_json::json!({"name": "n-intruder"});
    foreign["spec"]["pool"]["name"] = "elsewhere".into();
    assert_eq!(running.act("POST", SLICES, &foreign), 201);
    // Another node's slice of this driver, and this node's slice of another driver: not ours.
    let mut other_node = foreign.clone();
    other_node["metadata"]["name"] = "m-slice".into();
    other_node["spec"]["nodeName"] = "m".into();
    assert_eq!(running.act("POST", SLICES, &other_node), 201);
    let mut other_driver = foreign.clone();
    other_driver["metadata"]["name"] = "n-gpu-nvidia".into();
    other_driver["spec"]["driver"] = "gpu.nvidia.com".into();
    assert_eq!(running.act("POST", SLICES, &other_driver), 201);

    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        short(&running.drain()),
        [format!("DELETE {SLICES}/n-intruder")]
    );
    let slices = running.slices();
    assert_eq!(
        slices.keys().collect::<Vec<_>>(),
        ["m-slice", "n-gpu-example-com-0", "n-gpu-nvidia"]
    );
    assert_eq!(slices["n-gpu-example-com-0"], ours, "untouched");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_node_costs_no_write_across_rescans_and_watch_events() {
    let running = start(FakeApi::with_node("n"), two_slices("n"));
    sleep(Duration::from_secs(1)).await;
    let before = running.slices();
    running.drain();

    // A write that changes nothing (a MODIFIED event with the same content), and another node's
    // slice coming and going (not even sent: the watch selects this node).
    let name = "n-gpu-example-com-0";
    assert_eq!(
        running.act("PUT", &format!("{SLICES}/{name}"), &before[name]),
        200
    );
    let mut other = before[name].clone();
    other["metadata"] = serde_json::json!({"name": "m-0"});
    other["spec"]["nodeName"] = "m".into();
    assert_eq!(running.act("POST", SLICES, &other), 201);
    assert_eq!(
        running.act("DELETE", &format!("{SLICES}/m-0"), &Value::Null),
        200
    );

    // Ten rescans; the server ends the watch after 290 s twice.
    sleep(INTERVAL * 10).await;
    let log = running.drain();
    assert!(
        log.iter().all(|r| r.method == "GET" && r.is_watch()),
        "only resumed watches: {log:?}"
    );
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter().all(|r| r.uri.contains("resourceVersion=")),
        "resumed from the last version seen: {log:?}"
    );
    for (name, slice) in &before {
        assert_eq!(running.slices()[name]["spec"], slice["spec"]);
    }
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn fields_the_api_server_drops_cost_one_write_not_a_write_per_event() {
    // Kubernetes 1.34 without DRAConsumableCapacity: shared devices (say, CPU groups) lose
    // `allowMultipleAllocations` on every write.
    let mut api = FakeApi::with_node("n");
    api.disabled_device_fields = vec!["allowMultipleAllocations".into()];
    let mut desired = gpus("n");
    for device in desired[0].spec.devices.iter_mut().flatten().take(2) {
        device.allow_multiple_allocations = Some(true);
    }
    let running = start(api, desired);
    sleep(Duration::from_secs(1)).await;
    let first = running.drain();
    assert_eq!(
        first.iter().filter(|r| r.method == "POST").count(),
        1,
        "{first:?}"
    );
    let stored = running.slices();
    assert!(
        !serde_json::to_string(&stored)
            .unwrap()
            .contains("allowMultipleAllocations"),
        "the fake dropped the field"
    );

    // Rescans, a watch event, and still no write.
    let name = "n-gpu-example-com-0";
    assert_eq!(
        running.act("PUT", &format!("{SLICES}/{name}"), &stored[name]),
        200
    );
    sleep(INTERVAL * 3).await;
    let log = running.drain();
    assert!(log.iter().all(|r| r.method == "GET"), "{log:?}");

    // A real change by another actor is still repaired, to the form the server keeps.
    let mut edited = running.slices()[name].clone();
    edited["spec"]["devices"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    assert_eq!(
        running.act("PUT", &format!("{SLICES}/{name}"), &edited),
        200
    );
    sleep(Duration::from_secs(5)).await;
    assert_eq!(short(&running.drain()), [format!("PUT {SLICES}/{name}")]);
    assert_eq!(running.slices()[name]["spec"], stored[name]["spec"]);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_calls_are_retried_with_backoff_not_after_the_rescan_interval() {
    let mut api = FakeApi::with_node("n");
    let post = format!("POST {SLICES}");
    for _ in 0..3 {
        api.fail_once.push((post.clone(), 500));
    }
    let started = Instant::now();
    let running = start(api, gpus("n"));
    sleep(Duration::from_secs(20)).await;

    let log = running.drain();
    let posts: Vec<Instant> = log
        .iter()
        .filter(|r| r.short() == post)
        .map(|r| r.at)
        .collect();
    assert_eq!(posts.len(), 4, "three 500s, then success: {log:?}");
    for (i, pair) in posts.windows(2).enumerate() {
        let base = Duration::from_secs(1 << i);
        let gap = pair[1] - pair[0];
        assert!(
            gap >= base && gap <= base.mul_f64(1.2),
            "retry {i}: {gap:?}, expected {base:?} plus at most 20%"
        );
    }
    assert!(posts[3] - started < INTERVAL / 4);
    // Each retry starts from a fresh list.
    let lists = log
        .iter()
        .filter(|r| r.short() == format!("GET {SLICES}") && !r.is_watch())
        .count();
    assert_eq!(lists, 4);
    assert_eq!(running.slices().len(), 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_server_times_calls_out_and_the_publisher_recovers_when_it_answers() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    let gpus = running.slices()["n-gpu-example-com-0"]["spec"]["devices"].clone();
    running.drain();

    // The server accepts requests and never answers; the machine changes meanwhile.
    running.state.lock().unwrap().set_hung(true);
    *running.current.lock().unwrap() = vfs("n");
    running.changed.notify_one();

    // The kubelet's calls share the client: a claim read fails after the deadline, it is not held.
    let asked = Instant::now();
    let claims: Api<k8s_openapi::api::resource::v1::ResourceClaim> =
        Api::namespaced(running.client.clone(), "ns");
    let read = tokio::time::timeout(CALL_TIMEOUT * 3, claims.get("claim"))
        .await
        .expect("the claim read ended");
    let error = read.unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Timeout, "{error}");
    assert_eq!(asked.elapsed(), CALL_TIMEOUT);

    sleep(Duration::from_secs(60)).await;
    let log = running.drain();
    let publisher: Vec<&Logged> = log.iter().filter(|r| !r.uri.contains("claim")).collect();
    assert!(
        publisher.len() >= 4,
        "the write, then lists retried: {log:?}"
    );
    for pair in publisher.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= CALL_TIMEOUT + Backoff::START,
            "each call waits for its deadline, then the backoff: {log:?}"
        );
    }
    assert_eq!(
        running.slices()["n-gpu-example-com-0"]["spec"]["devices"],
        gpus
    );

    // It answers again: within one deadline and the longest backoff, the new machine is published
    // and the watch is back (a wipe is repaired at once).
    running.state.lock().unwrap().set_hung(false);
    sleep(CALL_TIMEOUT + Backoff::CAP.mul_f64(1.2)).await;
    let vfs = running.slices()["n-gpu-example-com-0"]["spec"]["devices"].clone();
    assert_ne!(vfs, gpus);
    assert_eq!(vfs.as_array().unwrap().len(), 3);
    running.drain();
    let wipe = format!("{SLICES}?fieldSelector=spec.nodeName%3Dn");
    assert_eq!(running.act("DELETE", &wipe, &Value::Null), 200);
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        short(&running.drain()),
        ["GET /api/v1/nodes/n".to_owned(), format!("POST {SLICES}")]
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_watch_resumed_from_a_compacted_version_lists_again() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    running.drain();
    {
        // The server closes the watch (an API server restart); before the publisher resumes it, the
        // slice is deleted and the history compacted.
        let mut api = running.state.lock().unwrap();
        api.end_watches();
        let uri = format!("{SLICES}/n-gpu-example-com-0");
        assert_eq!(api.handle("DELETE", &uri, b"").status(), Some(200));
        api.compact();
        api.log.clear();
    }
    let resumed = Instant::now();
    sleep(Duration::from_secs(5)).await;
    let log = running.drain();
    // Resumed from its version: 410 Expired; after the backoff, a list, the repair and a new watch.
    assert_eq!(
        short(&log),
        [
            format!("GET {SLICES}"),
            format!("GET {SLICES}"),
            "GET /api/v1/nodes/n".to_owned(),
            format!("POST {SLICES}"),
            format!("GET {SLICES}"),
        ],
        "{log:?}"
    );
    assert!(log[0].is_watch() && !log[1].is_watch() && log[4].is_watch());
    assert!(log[3].at - resumed <= Backoff::START.mul_f64(1.2));
    assert_eq!(running.slices().len(), 1);
    running.stop().await;
}

/// A watch that breaks after each event (an overloaded server, a proxy cutting streams) backs off
/// as client-go's reflector does: the event does not reset the backoff, only 2 minutes of a healthy
/// watch do. Before, every event reset it and the watch was opened again about once a second.
#[tokio::test(start_paused = true)]
async fn a_watch_that_breaks_after_each_event_backs_off() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    let mut opened = running.drain().iter().filter(|l| l.is_watch()).count();
    assert_eq!(opened, 1);
    let uri = format!("{SLICES}/n-gpu-example-com-0");
    let mut broken = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        sleep(Duration::from_millis(100)).await;
        opened += running.drain().iter().filter(|l| l.is_watch()).count();
        if opened > broken {
            // An event on the open watch (a label another actor sets), then the watch breaks.
            let mut slice = running.slices()[&"n-gpu-example-com-0".to_owned()].clone();
            slice["metadata"]["labels"] = serde_json::json!({"round": broken.to_string()});
            assert_eq!(running.act("PUT", &uri, &slice), 200);
            sleep(Duration::from_millis(10)).await;
            running.state.lock().unwrap().end_watches();
            broken = opened;
        }
    }
    // 1 + 2 + 4 + 8 + 16 + 30 s of backoff (with jitter): about 6 watches in 60 s, not 50.
    assert!((4..=10).contains(&opened), "{opened} watches in 60 s");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_goes_silent_is_replaced_after_the_server_side_timeout() {
    let running = start(FakeApi::with_node("n"), gpus("n"));
    sleep(Duration::from_secs(1)).await;
    running.drain();
    let silent = Instant::now();
    {
        // The watch's connection dies without a word (the server hung for a moment); the kubelet then
        // wipes the slices, and the dead watch does not say so.
        let mut api = running.state.lock().unwrap();
        api.set_hung(true);
        api.set_hung(false);
    }
    let wipe = format!("{SLICES}?fieldSelector=spec.nodeName%3Dn");
    assert_eq!(running.act("DELETE", &wipe, &Value::Null), 200);

    // Past 290 s (the watch's timeoutSeconds) + 10 s without even its end: listed again, repaired.
    sleep(Duration::from_secs(299)).await;
    assert!(running.slices().is_empty(), "not before the limit");
    sleep(Duration::from_secs(1) + Backoff::START.mul_f64(1.2)).await;
    let log = running.drain();
    assert_eq!(
        short(&log),
        [
            format!("GET {SLICES}"),
            "GET /api/v1/nodes/n".to_owned(),
            format!("POST {SLICES}"),
            format!("GET {SLICES}"),
        ],
        "{log:?}"
    );
    assert!(!log[0].is_watch() && log[3].is_watch());
    assert!(log[0].at - silent >= Duration::from_secs(300));
    assert_eq!(running.slices().len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_wipe_between_the_first_publish_and_the_watch_is_not_lost() {
    // The watch starts from the first list's version, even on an empty server, so the changes made
    // after that list (the publisher's own create, then the kubelet's wipe) come as events.
    let state = Arc::new(Mutex::new(FakeApi::with_node("n")));
    let client = FakeApi::mock_client(state.clone(), &call_timeout_layer());
    let mut publisher = Publisher::new(client, "n", DRIVER);
    let desired = gpus("n");
    assert_eq!(publisher.publish(&desired).await.unwrap().created, 1);
    let wipe = format!("{SLICES}?fieldSelector=spec.nodeName%3Dn");
    let reply = state.lock().unwrap().handle("DELETE", &wipe, b"");
    assert_eq!(reply.status(), Some(200));

    let mut events = publisher.watch().await.unwrap();
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the wipe comes as an event")
            .unwrap()
            .unwrap();
        seen.push(match &event {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Bookmark(_) => "BOOKMARK",
            WatchEvent::Error(_) => "ERROR",
        });
        if publisher.apply(event).unwrap() {
            break;
        }
    }
    assert_eq!(seen, ["ADDED", "DELETED"], "the own create, then the wipe");
    assert_eq!(publisher.publish(&desired).await.unwrap().created, 1);
}

#[tokio::test(start_paused = true)]
async fn slices_of_a_node_recreated_under_its_name_get_the_new_node_as_owner() {
    let running = start(FakeApi::with_node("n"), two_slices("n"));
    sleep(Duration::from_secs(1)).await;
    let owner = |slices: &std::collections::BTreeMap<String, Value>| -> Vec<Value> {
        slices
            .values()
            .map(|s| s["metadata"]["ownerReferences"][0]["uid"].clone())
            .collect()
    };
    assert_eq!(owner(&running.slices()), ["uid-n", "uid-n"]);

    // The Node is deleted and re-created (another UID); the garbage collector deletes the slices
    // the old Node owned.
    running
        .state
        .lock()
        .unwrap()
        .nodes
        .insert("n".into(), "uid-n-2".into());
    let wipe = format!("{SLICES}?fieldSelector=spec.nodeName%3Dn");
    assert_eq!(running.act("DELETE", &wipe, &Value::Null), 200);

    sleep(Duration::from_secs(5)).await;
    assert_eq!(owner(&running.slices()), ["uid-n-2", "uid-n-2"]);
    running.stop().await;
}
