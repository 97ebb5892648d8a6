use super::*;
use serde_json::json;

const DRIVER: &str = "hal.dra.dev";

fn claim(uid: &str, results: serde_json::Value, config: serde_json::Value) -> ResourceClaim {
    serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"namespace": "ns", "name": "c", "uid": uid},
        "spec": {"devices": {"requests": []}},
        "status": {"allocation": {"devices": {"results": results, "config": config}}}
    }))
    .unwrap()
}

fn reference(uid: &str) -> ClaimRef {
    ClaimRef {
        namespace: "ns".into(),
        uid: uid.into(),
        name: "c".into(),
    }
}

fn result(request: &str, driver: &str, pool: &str, device: &str) -> serde_json::Value {
    json!({"request": request, "driver": driver, "pool": pool, "device": device})
}

fn opaque(source: &str, requests: &[&str], parameters: serde_json::Value) -> serde_json::Value {
    json!({"source": source, "requests": requests, "opaque": {"driver": DRIVER, "parameters": parameters}})
}

#[test]
fn takes_this_drivers_devices_on_this_node_with_merged_config() {
    let results = json!([
        result("gpu", DRIVER, "node-1", "gpu-0008-06-00-0"),
        result("nic/ib", DRIVER, "node-1", "rdma-0101-00-00-0"),
        result("nic", "dra.net", "node-1", "pci-0101-00-00-0"),
        result("gpu", DRIVER, "node-2", "gpu-0009-06-00-0"),
    ]);
    let config = json!([
        opaque(
            "FromClaim",
            &["gpu"],
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"A": "claim"}})
        ),
        opaque(
            "FromClass",
            &[],
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"A": "class", "B": "1"}})
        ),
        opaque(
            "FromClaim",
            &["nic"],
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"C": "2"}})
        ),
        json!({"source": "FromClaim", "opaque": {"driver": "dra.net", "parameters": {"whatever": 1}}}),
    ]);
    let devices = allocated_devices(
        &reference("u1"),
        &claim("u1", results, config),
        DRIVER,
        "node-1",
    )
    .unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].device, "gpu-0008-06-00-0");
    let env = |d: &Allocated| d.config.env.clone().into_iter().collect::<Vec<_>>();
    assert_eq!(
        env(&devices[0]),
        [("A".into(), "claim".into()), ("B".into(), "1".into())]
    );
    assert_eq!(
        env(&devices[1]),
        [
            ("A".into(), "class".into()),
            ("B".into(), "1".into()),
            ("C".into(), "2".into())
        ],
        "nic/ib is a sub-request of nic"
    );
}

#[test]
fn bad_claims_get_errors_that_say_why() {
    let ok = json!([result("gpu", DRIVER, "node-1", "gpu-0")]);
    let uid = allocated_devices(
        &reference("u1"),
        &claim("u2", ok.clone(), json!([])),
        DRIVER,
        "node-1",
    );
    assert!(uid.unwrap_err().to_string().contains("has uid u2, not u1"));
    let other = allocated_devices(
        &reference("u1"),
        &claim("u1", ok, json!([])),
        DRIVER,
        "node-9",
    );
    assert_eq!(
        other.unwrap_err().to_string(),
        "claim ns/c has no device of driver hal.dra.dev in pool node-9"
    );
    let mut unallocated = claim("u1", json!([]), json!([]));
    unallocated.status = None;
    assert!(matches!(
        allocated_devices(&reference("u1"), &unallocated, DRIVER, "node-1"),
        Err(ClaimError::NotAllocated(_))
    ));
}

/// The CPUs consumed from a CPU group are whole CPUs: a fraction is rounded up (it would have been
/// by the published request policy), never taken for "not said" (the whole group); a quantity that
/// does not parse, or zero, is an error naming the field.
#[test]
fn consumed_cpus_are_whole_cpus_rounded_up() {
    let consumed = |cpu: &str| {
        let mut r = result("cpus", DRIVER, "node-1", "cpus-numa-0");
        r["consumedCapacity"] = json!({"cpu": cpu});
        allocated_devices(
            &reference("u1"),
            &claim("u1", json!([r]), json!([])),
            DRIVER,
            "node-1",
        )
        .map(|devices| devices[0].consumed_cpus)
    };
    assert_eq!(consumed("2").unwrap(), Some(2));
    assert_eq!(consumed("1500m").unwrap(), Some(2));
    assert_eq!(consumed("500m").unwrap(), Some(1));
    assert_eq!(consumed("1k").unwrap(), Some(1000));
    for bad in ["0", "-1", "two", "1e40"] {
        let error = consumed(bad).unwrap_err().to_string();
        assert!(
            error.contains("results[cpus-numa-0].consumedCapacity.cpu"),
            "{bad}: {error}"
        );
    }
    let unsaid = result("cpus", DRIVER, "node-1", "cpus-numa-0");
    let devices = allocated_devices(
        &reference("u1"),
        &claim("u1", json!([unsaid]), json!([])),
        DRIVER,
        "node-1",
    );
    assert_eq!(devices.unwrap()[0].consumed_cpus, None);
}

#[test]
fn opaque_config_is_strict_and_errors_name_the_field() {
    let cases = [
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "evn": {}}),
            ".evn",
            "unknown field `evn`",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"A": 1}}),
            ".env.A",
            "invalid type",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"1A": "x"}}),
            ".env.1A",
            "not an environment variable name",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"NVIDIA_VISIBLE_DEVICES": "all"}}),
            ".env.NVIDIA_VISIBLE_DEVICES",
            "NVIDIA_VISIBLE_DEVICES is set by the driver itself",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"NCCL_IB_HCA": "mlx5"}}),
            ".env.NCCL_IB_HCA",
            "set by the driver itself",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"DRA_HAL_CPUSET": "0-63"}}),
            ".env.DRA_HAL_CPUSET",
            "DRA_ is set by the driver itself",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {"GPU_DEVICE_0": "gpu-x"}}),
            ".env.GPU_DEVICE_0",
            "GPU_DEVICE_ is set by the driver itself",
        ),
        (
            json!({"apiVersion": "v1", "kind": "DeviceConfig"}),
            ".apiVersion",
            "expected \"hal.dra.dev/v1alpha1\"",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "NicConfig"}),
            ".kind",
            "\"NicConfig\"",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifName": "a-very-long-name0"}),
            ".ifName",
            "longer than 15 bytes",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifName": "net 1"}),
            ".ifName",
            "whitespace",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifName": ".."}),
            ".ifName",
            "is . or ..",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifName": "a/b"}),
            ".ifName",
            "contains '/'",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "driver": "vfio pci"}),
            ".driver",
            "not a kernel driver name",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "netAttachDefName": "Bad_Name"}),
            ".netAttachDefName",
            "not a DNS subdomain",
        ),
        (
            json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifname": "net1"}),
            ".ifname",
            "unknown field `ifname`",
        ),
        (json!("text"), "", "must be an object"),
    ];
    for (parameters, field, problem) in cases {
        let (at, why) = decode_opaque(&parameters, DRIVER).unwrap_err();
        assert_eq!(at, field, "{parameters}");
        assert!(why.contains(problem), "{parameters}: {why}");
    }
    // Keys that would set a terminal's title, clear its screen and forge a log line are named
    // escaped: the message reaches the kubelet (the pod's events) and the log.
    let forged = "x\u{1b}]0;owned\u{7}\u{1b}[2J\nINFO claim prepared \u{202e}";
    for parameters in [
        json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", forged: 1}),
        json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "env": {forged: "v"}}),
    ] {
        let (at, why) = decode_opaque(&parameters, DRIVER).unwrap_err();
        assert!(!at.contains(hal::text::acts_on_terminal), "{at:?}");
        assert!(!why.contains(hal::text::acts_on_terminal), "{why:?}");
        assert!(
            at.contains(r"x\u001b]0;owned\u0007\u001b[2J\u000aINFO"),
            "{at:?}"
        );
    }
    let config = json!([opaque(
        "FromClaim",
        &[],
        json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "bogus": true})
    )]);
    let err = allocated_devices(
        &reference("u1"),
        &claim(
            "u1",
            json!([result("gpu", DRIVER, "node-1", "gpu-0")]),
            config,
        ),
        DRIVER,
        "node-1",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("claim ns/c: status.allocation.devices.config[0].opaque.parameters.bogus: unknown field `bogus`"),
        "{err}"
    );
    let empty = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig"});
    assert_eq!(
        decode_opaque(&empty, DRIVER).unwrap(),
        OpaqueConfig::Device(DeviceConfig::default())
    );
    let vf = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "driver": "vfio-pci",
                    "ifName": "net1", "netAttachDefName": "vf-test1", "netAttachDefNamespace": "vf-test5"});
    let OpaqueConfig::Vf(vf) = decode_opaque(&vf, DRIVER).unwrap() else {
        panic!("a VfConfig")
    };
    assert_eq!(
        (vf.driver.as_deref(), vf.if_name.as_deref()),
        (Some("vfio-pci"), Some("net1"))
    );
}

#[test]
fn a_vf_config_names_its_network_attachment_as_the_cdi_env_and_the_nri_plugin_read_it() {
    let named = |name: Option<&str>, namespace: Option<&str>| VfConfig {
        net_attach_def_name: name.map(str::to_owned),
        net_attach_def_namespace: namespace.map(str::to_owned),
        ..VfConfig::default()
    };
    assert_eq!(named(None, Some("other")).network_attachment(), None);
    let own = named(Some("vf-test1"), None).network_attachment().unwrap();
    assert_eq!(own.to_string(), "vf-test1");
    assert_eq!(
        own.in_namespace("vf-test5"),
        ("vf-test5".into(), "vf-test1".into())
    );
    // An empty namespace counts as none given.
    assert_eq!(
        named(Some("vf-test1"), Some("")).network_attachment(),
        Some(own)
    );
    let other = named(Some("vf-test1"), Some("nets"))
        .network_attachment()
        .unwrap();
    assert_eq!(other.to_string(), "nets/vf-test1");
    assert_eq!(
        NetworkAttachment::parse("nets/vf-test1"),
        Some(other.clone())
    );
    assert_eq!(
        other.in_namespace("vf-test5"),
        ("nets".into(), "vf-test1".into())
    );
    for bad in ["", "/vf-test1", "nets/"] {
        assert_eq!(NetworkAttachment::parse(bad), None, "{bad:?}");
    }
}
