//! `kind: NetworkConfig` (direct mode) in a claim's opaque config: decoded strictly, each error naming
//! its field from the claim's `status.allocation` down.

use serde_json::json;

use super::*;

const DRIVER: &str = "hal.dra.dev";

fn network(fields: serde_json::Value) -> serde_json::Value {
    let mut parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "NetworkConfig"});
    if let (Some(map), Some(extra)) = (parameters.as_object_mut(), fields.as_object()) {
        map.extend(extra.clone());
    }
    parameters
}

#[test]
fn network_config_errors_name_the_field() {
    let cases = [
        (
            json!({"interface": {"name": "net1", "mtuu": 1400}}),
            ".interface.mtuu",
            "unknown field `mtuu`",
        ),
        (
            json!({"interface": {"addresses": ["10.0.0.2/24", "10.0.0.3/33"]}}),
            ".interface.addresses[1]",
            "the prefix length must be 0 to 32",
        ),
        (
            json!({"interface": {"addresses": ["10.0.0.x/24"]}}),
            ".interface.addresses[0]",
            "is not an IP address",
        ),
        (
            json!({"interface": {"addresses": ["224.0.0.1/24"]}}),
            ".interface.addresses[0]",
            "not a unicast address",
        ),
        (
            json!({"interface": {"mtu": 10}}),
            ".interface.mtu",
            "outside 68..=65535",
        ),
        (
            json!({"interface": {"mtu": "1400"}}),
            ".interface.mtu",
            "invalid type",
        ),
        (
            json!({"interface": {"name": "a-very-long-name0"}}),
            ".interface.name",
            "longer than 15 bytes",
        ),
        (
            json!({"routes": [{"destination": "198.51.100.0/24", "gateway": "fd00::1"}]}),
            ".routes[0].gateway",
            "not of the destination's IP family",
        ),
        (
            json!({"routes": [{"destination": "0.0.0.0/0"}]}),
            ".routes[0].gateway",
            "a default route needs a gateway",
        ),
        (
            json!({"routes": [{"gateway": "192.0.2.1"}]}),
            ".routes[0]",
            "missing field `destination`",
        ),
        (
            json!({"interfaces": {}}),
            ".interfaces",
            "unknown field `interfaces`",
        ),
    ];
    for (fields, field, problem) in cases {
        let (at, why) = decode_opaque(&network(fields.clone()), DRIVER).unwrap_err();
        assert_eq!(at, field, "{fields}");
        assert!(why.contains(problem), "{fields}: {why}");
    }
}

#[test]
fn a_claims_network_config_applies_to_its_requests_and_a_bad_one_fails_naming_the_field() {
    let claim = |parameters: serde_json::Value| -> ResourceClaim {
        serde_json::from_value(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": "ns", "name": "c", "uid": "u1"},
            "spec": {"devices": {"requests": []}},
            "status": {"allocation": {"devices": {
                "results": [
                    {"request": "vf", "driver": DRIVER, "pool": "node-1", "device": "nic-0000-3b-02-0"},
                    {"request": "gpu", "driver": DRIVER, "pool": "node-1", "device": "gpu-0"}
                ],
                "config": [{"source": "FromClaim", "requests": ["vf"],
                            "opaque": {"driver": DRIVER, "parameters": parameters}}]
            }}}
        }))
        .unwrap()
    };
    let reference = ClaimRef {
        namespace: "ns".into(),
        uid: "u1".into(),
        name: "c".into(),
    };
    let good = network(json!({
        "interface": {"name": "net1", "addresses": ["192.0.2.10/24", "fd00:9::10/64"], "mtu": 1400},
        "routes": [{"destination": "198.51.100.0/24", "gateway": "192.0.2.1"}]
    }));
    let devices = allocated_devices(&reference, &claim(good), DRIVER, "node-1").unwrap();
    let vf = devices[0]
        .network
        .as_ref()
        .expect("the VF has the NetworkConfig");
    assert_eq!(vf.name.as_deref(), Some("net1"));
    assert_eq!(vf.mtu, Some(1400));
    let addresses: Vec<String> = vf.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addresses, ["192.0.2.10/24", "fd00:9::10/64"]);
    assert_eq!(vf.routes.len(), 1);
    assert_eq!(devices[1].network, None, "the GPU's request has no config");

    let bad = network(json!({"interface": {"addresses": ["10.0.0.2/33"]}}));
    let error = allocated_devices(&reference, &claim(bad), DRIVER, "node-1")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "claim ns/c: status.allocation.devices.config[0].opaque.parameters.interface.addresses[0]: \
         \"10.0.0.2/33\": the prefix length must be 0 to 32"
    );
}
