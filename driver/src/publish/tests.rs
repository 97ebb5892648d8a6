//! The driver's pool through the kit's publisher, against the fake API server: the inventory's slices
//! on the fixtures, this driver's names, and its validation. The publisher's own behaviour (watch,
//! repair, generations, retries) is tested in the kit.

use std::sync::{Arc, Mutex};

use super::*;
use crate::fake_api::FakeApi;
use crate::inventory::Inventory;
use crate::slices::build_slices;

fn inventory(name: &str) -> Inventory {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    Inventory::from_sysfs(&backends::SysfsRoot::new(machine.root()), None)
}

/// This driver's publisher talking to a fake API server, with the plugin's call timeouts.
fn start(api: FakeApi, config: &SliceConfig) -> (Publisher, Arc<Mutex<FakeApi>>) {
    let state = Arc::new(Mutex::new(api));
    let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
    (publisher(client, config), state)
}

fn requests(state: &Arc<Mutex<FakeApi>>) -> Vec<String> {
    let mut api = state.lock().unwrap();
    api.log.drain(..).map(|l| l.short()).collect()
}

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";

#[tokio::test]
async fn the_inventory_is_published_under_this_drivers_names_then_a_rescan_is_free() {
    let config = SliceConfig::new("node-1");
    let (mut publisher, state) = start(FakeApi::with_node("node-1"), &config);
    let gb300 = build_slices(&inventory("gb300"), &config, 0);
    let report = publisher.publish(&gb300).await.unwrap();
    assert_eq!((report.created, report.generation), (1, 1));
    {
        let api = state.lock().unwrap();
        assert_eq!(
            api.log[1].uri,
            format!("{SLICES}?&fieldSelector=spec.nodeName%3Dnode-1%2Cspec.driver%3Dhal.dra.dev")
        );
        let stored = &api.slices["node-1-hal-dra-dev-0"];
        assert_eq!(stored["spec"]["driver"], "hal.dra.dev");
        assert_eq!(stored["spec"]["pool"]["name"], "node-1");
        assert_eq!(stored["spec"]["pool"]["generation"], 1);
        assert_eq!(stored["spec"]["devices"].as_array().unwrap().len(), 10);
    }
    requests(&state);
    let again = build_slices(&inventory("gb300"), &config, 0);
    assert!(!publisher.publish(&again).await.unwrap().wrote());
    assert_eq!(requests(&state), Vec::<String>::new());
}

#[tokio::test]
async fn an_added_vf_writes_the_changed_slice_once() {
    let config = SliceConfig::new("x");
    let (mut publisher, state) = start(FakeApi::with_node("x"), &config);
    let xeon = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = backends::SysfsRoot::new(xeon.root());
    let before = build_slices(&Inventory::from_sysfs(&root, None), &config, 0);
    publisher.publish(&before).await.unwrap();
    requests(&state);

    // The kernel gets one more VF on the ConnectX (4 -> 5), as a real sriov_numvfs write would do.
    let kernel = Arc::new(hal_mock::EmulatedKernel::new(xeon.root()));
    let sriov = backends::SysfsSriov::with_writer(root.clone(), kernel);
    let pf = hal::PciAddress::parse("0000:b1:00.0").unwrap();
    hal::SriovPf::set_num_vfs(&sriov, pf, 5).unwrap();
    let after = build_slices(&Inventory::from_sysfs(&root, None), &config, 0);
    let report = publisher.publish(&after).await.unwrap();
    assert_eq!(
        (report.created, report.updated, report.generation),
        (0, 1, 1)
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
async fn individual_cpus_take_two_slices_and_leaving_cpus_out_deletes_one() {
    let mut config = SliceConfig::new("x");
    config.cpu_mode = crate::slices::CpuMode::Individual;
    let xeon = inventory("xeon");
    let (mut first, state) = start(FakeApi::with_node("x"), &config);
    let report = first
        .publish(&build_slices(&xeon, &config, 0))
        .await
        .unwrap();
    assert_eq!(report.created, 2, "224 CPUs and 18 devices: 2 slices");

    config.families.cpus = false;
    requests(&state);
    let api = std::mem::take(&mut *state.lock().unwrap());
    let (mut second, state) = start(api, &config);
    let report = second
        .publish(&build_slices(&xeon, &config, 0))
        .await
        .unwrap();
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
}

#[tokio::test]
async fn slices_that_break_the_api_rules_are_never_sent() {
    let mut config = SliceConfig::new("n");
    config.driver_name = "Not_A_Driver".to_owned();
    let (mut publisher, state) = start(FakeApi::with_node("n"), &config);
    let error = publisher
        .publish(&build_slices(&inventory("gb300"), &config, 0))
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Invalid(_)), "{error}");
    assert_eq!(error.kind(), None);
    assert!(error.to_string().contains("spec.driver"), "{error}");
    assert_eq!(requests(&state), ["GET /api/v1/nodes/n".to_owned()]);
    assert!(state.lock().unwrap().slices.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_loop_publishes_a_changed_inventory_on_notification() {
    let config = SliceConfig::new("n");
    let (publisher, state) = start(FakeApi::with_node("n"), &config);
    let current = Arc::new(Mutex::new(inventory("gb300")));
    let read = {
        let current = current.clone();
        move || build_slices(&current.lock().unwrap(), &config, 0)
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
    tokio::time::sleep(interval * 3).await;
    let writes = |log: &[String]| log.iter().filter(|r| !r.starts_with("GET")).count();
    assert_eq!(writes(&requests(&state)), 1);

    *current.lock().unwrap() = inventory("i915");
    changed.notify_one();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(requests(&state), [format!("PUT {SLICES}/n-hal-dra-dev-0")]);
    let devices = state.lock().unwrap().slices["n-hal-dra-dev-0"]["spec"]["devices"].clone();
    let i915 = build_slices(&inventory("i915"), &SliceConfig::new("n"), 0);
    assert_eq!(
        devices.as_array().unwrap().len(),
        i915[0].spec.devices.as_ref().map_or(0, Vec::len)
    );

    stop.send(true).unwrap();
    task.await.unwrap();
}
