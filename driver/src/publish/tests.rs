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

/// Another machine's inventory under the same node (the loop's rescan after a change; the loop
/// itself is tested in the kit): its slice is written again, holding that inventory's devices.
#[tokio::test]
async fn a_changed_inventory_rewrites_the_slice_with_its_devices() {
    let config = SliceConfig::new("n");
    let (mut publisher, state) = start(FakeApi::with_node("n"), &config);
    let gb300 = build_slices(&inventory("gb300"), &config, 0);
    assert_eq!(publisher.publish(&gb300).await.unwrap().created, 1);
    requests(&state);
    let i915 = build_slices(&inventory("i915"), &config, 0);
    assert_eq!(i915.len(), 1);
    let report = publisher.publish(&i915).await.unwrap();
    assert_eq!((report.created, report.updated, report.deleted), (0, 1, 0));
    assert_eq!(requests(&state), [format!("PUT {SLICES}/n-hal-dra-dev-0")]);
    let names = |devices: &serde_json::Value| -> Vec<String> {
        devices
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let stored = state.lock().unwrap().slices["n-hal-dra-dev-0"]["spec"]["devices"].clone();
    let built = serde_json::to_value(i915[0].spec.devices.as_ref().unwrap()).unwrap();
    assert_eq!(names(&stored), names(&built));
    assert_ne!(
        names(&stored),
        names(&serde_json::to_value(gb300[0].spec.devices.as_ref().unwrap()).unwrap()),
        "the fixtures differ"
    );
}
