//! A claim's `NetworkConfig` (direct mode) through prepare: recorded for its network function with the
//! name in the pod, in the CDI environment and the device status; refused, naming the fields, where
//! it cannot apply.

use super::*;

fn network_config(name: Option<&str>) -> serde_json::Value {
    let mut parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "NetworkConfig",
        "interface": {"addresses": ["192.0.2.10/24"], "mtu": 1400},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]});
    if let Some(name) = name {
        parameters["interface"]["name"] = json!(name);
    }
    json!({"source": "FromClaim", "requests": ["vf"], "opaque": {"driver": DRIVER, "parameters": parameters}})
}

fn vf(fields: serde_json::Value) -> serde_json::Value {
    let mut parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig"});
    for (k, v) in fields.as_object().unwrap() {
        parameters[k] = v.clone();
    }
    json!({"source": "FromClaim", "requests": ["vf"], "opaque": {"driver": DRIVER, "parameters": parameters}})
}

#[tokio::test]
async fn a_network_config_is_recorded_for_its_function_with_the_name_in_the_pod() {
    let s = Setup::on("xeon");
    // The name comes from VfConfig.ifName when the NetworkConfig gives none.
    s.claims.add(
        "d",
        &[("vf", "nic-0000-b1-00-2"), ("gpu", "gpu-0000-b3-00-0")],
        json!([vf(json!({"ifName": "net1"})), network_config(None)]),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("d")]).await;
    assert!(results["d"].is_ok(), "{results:?}");
    let records = crate::podnet::pods::read_prepared(&s.checkpoint_path()).unwrap();
    let record = &records["d"];
    assert_eq!(
        record.network.keys().collect::<Vec<_>>(),
        ["nic-0000-b1-00-2"],
        "the GPU gets none"
    );
    let config = &record.network["nic-0000-b1-00-2"];
    assert_eq!(config.name.as_deref(), Some("net1"));
    assert_eq!(config.mtu, Some(1400));
    assert_eq!(config.addresses[0].to_string(), "192.0.2.10/24");
    assert_eq!(config.routes[0].0.to_string(), "198.51.100.0/24");
    let env = s.spec("d")["devices"][0]["containerEdits"]["env"].clone();
    let env: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"DRA_HAL_NIC_0_IFNAME=net1"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("DRA_HAL_NIC_0_NETWORK")),
        "{env:?}"
    );
    let statuses = s.claims.1.lock().unwrap()["ns/claim-d"].clone();
    assert_eq!(statuses[0]["networkData"]["interfaceName"], "net1");

    // What the NRI plugin reads for the pod: the config, the netdev and the RDMA device.
    let mut record = record.clone();
    record.pods = vec!["pod-1".into()];
    let functions = crate::podnet::pods::of_pod(&[("d".to_owned(), record)].into(), "pod-1");
    assert_eq!(functions.len(), 1);
    assert_eq!(functions[0].direct.as_ref(), Some(config));
    assert_eq!(functions[0].netdev.as_deref(), Some("ens2f0v0"));
    assert_eq!(functions[0].rdma.as_deref(), Some("mlx5_1"));
    assert_eq!(functions[0].network, None);
}

#[tokio::test]
async fn a_network_config_that_cannot_apply_fails_the_prepare_naming_the_fields() {
    let s = Setup::on("xeon");
    s.claims.add(
        "cni",
        &[("vf", "nic-0000-3b-01-1")],
        json!([
            vf(json!({"netAttachDefName": "vf-test1"})),
            network_config(Some("net1"))
        ]),
    );
    s.claims.add(
        "vfio",
        &[("vf", "nic-0000-3b-01-2")],
        json!([
            vf(json!({"driver": "vfio-pci"})),
            network_config(Some("net1"))
        ]),
    );
    s.claims.add(
        "names",
        &[("vf", "nic-0000-3b-01-3")],
        json!([vf(json!({"ifName": "net1"})), network_config(Some("net2"))]),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer
        .prepare(vec![
            reference("cni"),
            reference("vfio"),
            reference("names"),
        ])
        .await;
    let error = |uid: &str| results[uid].clone().unwrap_err();
    assert!(
        error("cni").contains(
            "device nic-0000-3b-01-1: both VfConfig.netAttachDefName \"vf-test1\" (CNI mode) and a \
             NetworkConfig (direct mode) apply"
        ),
        "{}",
        error("cni")
    );
    assert!(
        error("vfio").contains("its VfConfig.driver is vfio-pci"),
        "{}",
        error("vfio")
    );
    assert!(
        error("names").contains(
            "NetworkConfig interface.name \"net2\" differs from VfConfig.ifName \"net1\""
        ),
        "{}",
        error("names")
    );
    assert!(preparer.recorded().await.is_empty());
    // Nothing was bound: the vfio claim's VF keeps its driver.
    assert_eq!(s.driver_of("0000:3b:01.2").as_deref(), Some("iavf"));
}

#[tokio::test]
async fn a_claim_rebuilt_after_its_record_was_lost_gets_its_network_config_back() {
    let s = Setup::on("xeon");
    s.claims.add(
        "d",
        &[("vf", "nic-0000-b1-00-2")],
        json!([network_config(Some("net1"))]),
    );
    let before = s.preparer("boot-1");
    assert!(before.prepare(vec![reference("d")]).await["d"].is_ok());
    drop(before);
    std::fs::remove_dir_all(s.checkpoint_path()).unwrap();

    // Rebuilt from the CDI spec (which does not hold the config), then completed from the claim when
    // the kubelet asks again.
    let after = s.preparer("boot-1");
    let rebuilt = crate::podnet::pods::read_prepared(&s.checkpoint_path()).unwrap();
    assert!(rebuilt["d"].recovered && rebuilt["d"].network.is_empty());
    assert!(after.prepare(vec![reference("d")]).await["d"].is_ok());
    let completed = crate::podnet::pods::read_prepared(&s.checkpoint_path()).unwrap();
    assert!(!completed["d"].recovered);
    let config = &completed["d"].network["nic-0000-b1-00-2"];
    assert_eq!(config.name.as_deref(), Some("net1"));
    assert_eq!(config.mtu, Some(1400));
}

#[tokio::test]
async fn two_functions_of_a_claim_given_one_name_in_the_pod_are_refused_at_prepare() {
    let s = Setup::on("xeon");
    let for_request = |request: &str, mut config: serde_json::Value| {
        config["requests"] = json!([request]);
        config
    };
    // One VfConfig for a request of two VFs: both would be net1.
    s.claims.add(
        "same",
        &[("vf", "nic-0000-3b-01-1"), ("vf", "nic-0000-3b-01-2")],
        json!([vf(
            json!({"ifName": "net1", "netAttachDefName": "vf-test1"})
        )]),
    );
    // A NetworkConfig's interface.name on one request, a VfConfig.ifName on the other.
    s.claims.add(
        "mixed",
        &[("vf", "nic-0000-3b-01-3"), ("vf2", "nic-0000-b1-00-2")],
        json!([
            network_config(Some("net2")),
            for_request("vf2", vf(json!({"ifName": "net2"})))
        ]),
    );
    // Distinct names: prepared.
    s.claims.add(
        "distinct",
        &[("vf", "nic-0000-3b-01-1"), ("vf2", "nic-0000-3b-01-2")],
        json!([
            vf(json!({"ifName": "net1", "netAttachDefName": "vf-test1"})),
            for_request(
                "vf2",
                vf(json!({"ifName": "net2", "netAttachDefName": "vf-test1"}))
            )
        ]),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer
        .prepare(vec![reference("same"), reference("mixed")])
        .await;
    let error = |uid: &str| results[uid].clone().unwrap_err();
    assert!(
        error("same").contains(
            "VfConfig.ifName \"net1\" of device nic-0000-3b-01-2 is also the VfConfig.ifName of \
             device nic-0000-3b-01-1"
        ),
        "{}",
        error("same")
    );
    assert!(
        error("mixed").contains(
            "VfConfig.ifName \"net2\" of device nic-0000-b1-00-2 is also the NetworkConfig \
             interface.name of device nic-0000-3b-01-3"
        ),
        "{}",
        error("mixed")
    );
    assert!(preparer.recorded().await.is_empty());
    let results = preparer.prepare(vec![reference("distinct")]).await;
    assert!(results["distinct"].is_ok(), "{results:?}");
    let env = env_of(&s.spec("distinct"));
    assert!(
        env.contains(&"DRA_HAL_NIC_0_IFNAME=net1".to_owned()),
        "{env:?}"
    );
    assert!(
        env.contains(&"DRA_HAL_NIC_1_IFNAME=net2".to_owned()),
        "{env:?}"
    );
}
