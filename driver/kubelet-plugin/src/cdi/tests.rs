use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use super::dir::FailAt;
use super::*;

const CLAIM: &str = "8c1e4b1a-5d2f-4c3e-9a7b-0e6f1d2c3b4a";

fn char_node(path: &str, major: i64, minor: i64) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        r#type: Some("c".into()),
        major: Some(major),
        minor: Some(minor),
        permissions: Some("rw".into()),
        ..DeviceNode::default()
    }
}

fn rdma_spec() -> Spec {
    let edits = ContainerEdits {
        env: vec!["NCCL_IB_HCA=mlx5_0".into()],
        device_nodes: vec![
            char_node("/dev/infiniband/uverbs0", 231, 192),
            char_node("/dev/infiniband/umad0", 231, 0),
            char_node("/dev/infiniband/rdma_cm", 10, 58),
        ],
        ..ContainerEdits::default()
    };
    Spec::new(
        "hal.dra.dev/rdma",
        vec![Device::new(format!("{CLAIM}-mlx5_0"), edits)],
    )
}

fn gpu_spec() -> Spec {
    let mut card = char_node("/dev/dri/card1", 226, 1);
    card.host_path = Some("/dev/dri/card1".into());
    card.file_mode = Some(0o20660);
    card.uid = Some(0);
    card.gid = Some(44);
    let gpu = Device {
        name: "gpu-0000-41-00-0".into(),
        annotations: Some(BTreeMap::from([(
            "hal.dra.dev/pciBusID".to_owned(),
            "0000:41:00.0".to_owned(),
        )])),
        container_edits: ContainerEdits {
            device_nodes: vec![
                char_node("/dev/nvidia0", 195, 0),
                card,
                char_node("/dev/dri/renderD128", 226, 128),
            ],
            mounts: vec![Mount {
                host_path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into(),
                container_path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into(),
                r#type: Some("bind".into()),
                options: vec!["ro".into(), "nosuid".into(), "nodev".into(), "rbind".into()],
            }],
            hooks: vec![Hook {
                hook_name: "createContainer".into(),
                path: "/usr/bin/nvidia-cdi-hook".into(),
                args: vec!["nvidia-cdi-hook".into(), "update-ldcache".into()],
                env: vec!["LD_LIBRARY_PATH=/usr/lib".into()],
                timeout: Some(10),
            }],
            ..ContainerEdits::default()
        },
    };
    let mut spec = Spec::new("hal.dra.dev/gpu", vec![gpu]);
    spec.container_edits = Some(ContainerEdits {
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".into()],
        device_nodes: vec![char_node("/dev/nvidiactl", 195, 255)],
        ..ContainerEdits::default()
    });
    spec.raise_version_to_minimum();
    spec
}

fn round_trip(spec: &Spec) -> serde_json::Value {
    let json = serde_json::to_value(spec).unwrap();
    let back: Spec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, spec);
    let text = serde_json::to_string_pretty(spec).unwrap();
    assert_eq!(&serde_json::from_str::<Spec>(&text).unwrap(), spec);
    json
}

#[test]
fn rdma_spec_round_trips_with_the_go_json_keys() {
    let spec = rdma_spec();
    validate(&spec).unwrap();
    let node = |path: &str, major: i64, minor: i64| json!({"path": path, "type": "c", "major": major, "minor": minor, "permissions": "rw"});
    assert_eq!(
        round_trip(&spec),
        json!({
            // The device name starts with a digit (the claim UID): 0.5.0.
            "cdiVersion": "0.5.0",
            "kind": "hal.dra.dev/rdma",
            "devices": [{
                "name": format!("{CLAIM}-mlx5_0"),
                "containerEdits": {
                    "env": ["NCCL_IB_HCA=mlx5_0"],
                    "deviceNodes": [
                        node("/dev/infiniband/uverbs0", 231, 192),
                        node("/dev/infiniband/umad0", 231, 0),
                        node("/dev/infiniband/rdma_cm", 10, 58),
                    ],
                },
            }],
        })
    );
}

#[test]
fn gpu_spec_round_trips_with_the_go_json_keys() {
    let spec = gpu_spec();
    validate(&spec).unwrap();
    assert_eq!(spec.cdi_version, "0.6.0");
    let json = round_trip(&spec);
    assert_eq!(
        json["devices"][0]["annotations"],
        json!({"hal.dra.dev/pciBusID": "0000:41:00.0"})
    );
    let edits = &json["devices"][0]["containerEdits"];
    assert_eq!(
        edits["deviceNodes"][1],
        json!({"path": "/dev/dri/card1", "hostPath": "/dev/dri/card1", "type": "c", "major": 226,
               "minor": 1, "fileMode": 0o20660, "permissions": "rw", "uid": 0, "gid": 44})
    );
    assert_eq!(
        edits["mounts"][0]["hostPath"],
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    );
    assert_eq!(
        edits["mounts"][0]["containerPath"],
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    );
    assert_eq!(edits["mounts"][0]["type"], "bind");
    assert_eq!(
        edits["hooks"][0],
        json!({"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
               "args": ["nvidia-cdi-hook", "update-ldcache"], "env": ["LD_LIBRARY_PATH=/usr/lib"],
               "timeout": 10})
    );
    assert_eq!(
        json["containerEdits"]["env"],
        json!(["NVIDIA_VISIBLE_DEVICES=void"])
    );
}

#[test]
fn empty_edits_are_written_as_an_empty_object_and_empty_fields_are_omitted() {
    let spec = Spec::new(
        "vendor.com/class",
        vec![Device::new("a", ContainerEdits::default())],
    );
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        json!({"cdiVersion": "0.3.0", "kind": "vendor.com/class",
               "devices": [{"name": "a", "containerEdits": {}}]})
    );
    let net = ContainerEdits {
        net_devices: vec![NetDevice {
            host_interface_name: "eth1".into(),
            name: "net1".into(),
        }],
        additional_gids: vec![44],
        intel_rdt: Some(IntelRdt {
            clos_id: Some("gold".into()),
            ..IntelRdt::default()
        }),
        ..ContainerEdits::default()
    };
    assert_eq!(
        serde_json::to_value(&net).unwrap(),
        json!({"intelRdt": {"closID": "gold"}, "additionalGids": [44],
               "netDevices": [{"hostInterfaceName": "eth1", "name": "net1"}]})
    );
}

#[test]
fn parsing_denies_unknown_fields_and_accepts_null_collections() {
    let base = json!({"cdiVersion": "0.7.0", "kind": "v/c",
                      "devices": [{"name": "a", "containerEdits": {"env": ["A=1"]}}]});
    serde_json::from_value::<Spec>(base.clone()).unwrap();
    for (pointer, key) in [
        ("", "extra"),
        ("/devices/0", "extra"),
        // SPEC.md's spelling; the Go struct tag (authoritative) is `additionalGids`.
        ("/devices/0/containerEdits", "additionalGIDs"),
    ] {
        let mut bad = base.clone();
        bad.pointer_mut(pointer).unwrap()[key] = json!([1]);
        let error = serde_json::from_value::<Spec>(bad).unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{pointer}/{key}: {error}");
    }
    let nulls = json!({"cdiVersion": "0.3.0", "kind": "v/c", "annotations": null,
        "containerEdits": null,
        "devices": [{"name": "a", "annotations": null,
                     "containerEdits": {"env": null, "mounts": null, "deviceNodes": [{"path": "/dev/a"}]}}]});
    let spec: Spec = serde_json::from_value(nulls).unwrap();
    validate(&spec).unwrap();
}

fn with_edits(edits: ContainerEdits) -> Spec {
    Spec::new("vendor.com/class", vec![Device::new("dev", edits)])
}

fn node_edits() -> ContainerEdits {
    ContainerEdits {
        device_nodes: vec![DeviceNode::new("/dev/a")],
        ..ContainerEdits::default()
    }
}

#[test]
fn minimum_versions_follow_the_fields_used() {
    let base = with_edits(node_edits());
    assert_eq!(minimum_version(&base), "0.3.0");
    let check = |f: &dyn Fn(&mut Spec), want: &str| {
        let mut spec = base.clone();
        f(&mut spec);
        assert_eq!(minimum_version(&spec), want, "{spec:?}");
        assert_eq!(
            Spec::new(spec.kind.clone(), spec.devices.clone()).cdi_version,
            {
                // Spec::new sees only kind and devices.
                let mut only = spec.clone();
                only.annotations = None;
                only.container_edits = None;
                minimum_version(&only)
            }
        );
    };
    fn edits(spec: &mut Spec) -> &mut ContainerEdits {
        &mut spec.devices[0].container_edits
    }
    check(
        &|s| {
            edits(s).mounts.push(Mount {
                host_path: "/a".into(),
                container_path: "/a".into(),
                r#type: Some("bind".into()),
                options: vec![],
            })
        },
        "0.4.0",
    );
    check(
        &|s| {
            edits(s).mounts.push(Mount {
                host_path: "/a".into(),
                container_path: "/a".into(),
                r#type: Some(String::new()),
                options: vec![],
            })
        },
        "0.3.0",
    );
    check(
        &|s| edits(s).device_nodes[0].host_path = Some("/dev/b".into()),
        "0.5.0",
    );
    check(
        &|s| edits(s).device_nodes[0].host_path = Some(String::new()),
        "0.3.0",
    );
    check(&|s| s.devices[0].name = "0dev".into(), "0.5.0");
    check(
        &|s| s.annotations = Some(BTreeMap::from([("a".into(), "b".into())])),
        "0.6.0",
    );
    check(&|s| s.annotations = Some(BTreeMap::new()), "0.3.0");
    check(
        &|s| s.devices[0].annotations = Some(BTreeMap::from([("a".into(), "b".into())])),
        "0.6.0",
    );
    check(&|s| s.kind = "vendor.com/class.v2".into(), "0.6.0");
    check(&|s| edits(s).additional_gids.push(44), "0.7.0");
    check(&|s| edits(s).intel_rdt = Some(IntelRdt::default()), "0.7.0");
    check(
        &|s| {
            edits(s).intel_rdt = Some(IntelRdt {
                schemata: Some(vec![]),
                ..IntelRdt::default()
            })
        },
        "1.1.0",
    );
    check(
        &|s| {
            s.container_edits = Some(ContainerEdits {
                net_devices: vec![NetDevice {
                    host_interface_name: "eth1".into(),
                    name: "net1".into(),
                }],
                ..ContainerEdits::default()
            })
        },
        "1.1.0",
    );
    // The highest trigger wins.
    check(
        &|s| {
            s.devices[0].name = "0dev".into();
            edits(s).additional_gids.push(44);
        },
        "0.7.0",
    );
}

#[test]
fn raising_the_version_keeps_a_higher_known_one() {
    let mut spec = with_edits(node_edits());
    spec.cdi_version = "1.0.0".into();
    spec.raise_version_to_minimum();
    assert_eq!(spec.cdi_version, "1.0.0");
    spec.devices[0].container_edits.additional_gids.push(5);
    spec.cdi_version = "0.5.0".into();
    spec.raise_version_to_minimum();
    assert_eq!(spec.cdi_version, "0.7.0");
    for unknown in ["", "2.0.0", "0.2.0"] {
        spec.cdi_version = unknown.into();
        spec.raise_version_to_minimum();
        assert_eq!(spec.cdi_version, "0.7.0");
    }
}

/// Asserts that `spec` fails validation on `field` with a message containing `problem`.
#[track_caller]
fn rejects(spec: &Spec, field: &str, problem: &str) {
    let result = validate(spec);
    assert!(
        matches!(&result, Err(CdiError::Invalid { field: f, problem: p }) if f == field && p.contains(problem)),
        "expected `{field}: ..{problem}..`, got {result:?}"
    );
}

/// Asserts that `spec` is valid.
#[track_caller]
fn accepts(spec: &Spec, context: &str) {
    let result = validate(spec);
    assert!(result.is_ok(), "{context}: {result:?}");
}

#[test]
fn versions_must_be_known_and_high_enough() {
    let mut spec = with_edits(node_edits());
    for unknown in ["", "0.2.0", "2.0.0", "0.3", "latest"] {
        spec.cdi_version = unknown.into();
        rejects(&spec, "cdiVersion", "unknown version");
    }
    for known in KNOWN_VERSIONS {
        spec.cdi_version = known.into();
        validate(&spec).unwrap();
    }
    spec.cdi_version = "v0.3.0".into(); // Go trims a leading v
    validate(&spec).unwrap();

    spec.kind = "vendor.com/class.v2".into();
    spec.cdi_version = "0.5.0".into();
    rejects(&spec, "cdiVersion", "0.5.0 is lower than 0.6.0");
    spec.cdi_version = "0.6.0".into();
    validate(&spec).unwrap();
    spec.devices[0].container_edits.net_devices.push(NetDevice {
        host_interface_name: "eth1".into(),
        name: "net1".into(),
    });
    rejects(
        &spec,
        "cdiVersion",
        "minimum for the fields used (netDevices)",
    );
}

#[test]
fn kinds_are_vendor_slash_class() {
    let mut spec = with_edits(node_edits());
    spec.cdi_version = "0.6.0".into();
    for good in [
        "vendor.com/class",
        "a/b",
        "nvidia.com/gpu",
        "v_1-x.y/c_2-z.w",
        "V/C9",
    ] {
        spec.kind = good.into();
        accepts(&spec, good);
    }
    for (bad, problem) in [
        ("foo", "exactly one '/'"),
        ("vendor.com/foo/", "exactly one '/'"),
        ("vendor.com/foo/bar", "exactly one '/'"),
        ("/foo", "vendor is empty"),
        ("vendor.com/", "class is empty"),
        ("1vendor/foo", "must start with a letter"),
        ("vendor-/foo", "must end with a letter or digit"),
        ("vendor/_foo", "must start with a letter"),
        ("vendor/fo+o", "invalid character '+'"),
        ("vendor/fo:o", "invalid character ':'"),
        ("vendör/foo", "invalid character 'ö'"),
    ] {
        spec.kind = bad.into();
        rejects(&spec, "kind", problem);
    }
}

#[test]
fn devices_need_valid_unique_names_and_edits() {
    let mut spec = with_edits(node_edits());
    spec.devices.clear();
    rejects(&spec, "devices", "at least one device");

    let mut spec = with_edits(node_edits());
    spec.cdi_version = "0.5.0".into();
    for good in ["a", "9", "0000:00:02.0", "A_b.c:d-e", "claim-1-mlx5_0"] {
        spec.devices[0].name = good.into();
        accepts(&spec, good);
    }
    for (bad, problem) in [
        ("", "is empty"),
        ("-a", "must start with a letter or digit"),
        ("a-", "must end with a letter or digit"),
        ("a/b", "invalid character '/'"),
        ("a b", "invalid character ' '"),
        ("a=b", "invalid character '='"),
    ] {
        spec.devices[0].name = bad.into();
        rejects(&spec, "devices[0].name", problem);
    }

    let mut spec = with_edits(node_edits());
    spec.devices.push(Device::new("other", node_edits()));
    spec.devices.push(Device::new("dev", node_edits()));
    rejects(
        &spec,
        "devices[2].name",
        "duplicate device name \"dev\" (also devices[0])",
    );

    let spec = with_edits(ContainerEdits::default());
    rejects(&spec, "devices[0].containerEdits", "at least one edit");
    // Empty spec-level edits are fine.
    let mut spec = with_edits(node_edits());
    spec.container_edits = Some(ContainerEdits::default());
    validate(&spec).unwrap();
}

#[test]
fn annotations_need_qualified_keys_and_a_bounded_size() {
    let mut spec = with_edits(node_edits());
    spec.cdi_version = "0.6.0".into();
    let set = |spec: &mut Spec, key: &str, value: String| {
        spec.annotations = Some(BTreeMap::from([(key.to_owned(), value)]));
    };
    for good in ["a", "Example.COM/Key_1.x-y", "hal.dra.dev/pciBusID"] {
        set(&mut spec, good, "v".into());
        accepts(&spec, good);
    }
    for (bad, problem) in [
        ("-a", "must start with a letter or digit"),
        ("a/b/c", "invalid character '/'"),
        ("/a", "is not a DNS subdomain"),
        ("exa_mple.com/a", "is not a DNS subdomain"),
        ("a/", "must have 1 to 63"),
    ] {
        set(&mut spec, bad, "v".into());
        rejects(&spec, &format!("annotations[{bad:?}]"), problem);
    }
    set(&mut spec, &"k".repeat(64), "v".into());
    rejects(
        &spec,
        &format!("annotations[{:?}]", "k".repeat(64)),
        "1 to 63",
    );
    set(&mut spec, "big", "x".repeat(256 * 1024));
    rejects(&spec, "annotations", "more than 262144");

    let mut spec = with_edits(node_edits());
    spec.cdi_version = "0.6.0".into();
    spec.devices[0].annotations = Some(BTreeMap::from([("a b".to_owned(), "v".to_owned())]));
    rejects(
        &spec,
        "devices[0].annotations[\"a b\"]",
        "invalid character ' '",
    );
}

#[test]
fn container_edits_follow_the_go_rules() {
    let base = {
        let mut spec = with_edits(node_edits());
        spec.devices.push(Device::new("b", node_edits()));
        spec.devices.push(Device::new("c", node_edits()));
        spec.cdi_version = "1.1.0".into();
        spec
    };
    let check = |f: &dyn Fn(&mut ContainerEdits), field: &str, problem: &str| {
        let mut spec = base.clone();
        f(&mut spec.devices[2].container_edits);
        rejects(
            &spec,
            &format!("devices[2].containerEdits.{field}"),
            problem,
        );
        let mut spec = base.clone();
        let mut edits = ContainerEdits::default();
        f(&mut edits);
        spec.container_edits = Some(edits);
        rejects(&spec, &format!("containerEdits.{field}"), problem);
    };
    let mut spec = base.clone();
    spec.devices[2].container_edits.device_nodes[0].path = "dev/a".into();
    // The exact form callers see.
    assert_eq!(
        validate(&spec).unwrap_err().to_string(),
        "devices[2].containerEdits.deviceNodes[0].path: must be absolute"
    );

    check(
        &|e| e.env = vec!["A=1".into(), "FOO".into()],
        "env[1]",
        "not NAME=value",
    );
    check(&|e| e.env = vec!["=bar".into()], "env[0]", "non-empty NAME");
    check(
        &|e| e.device_nodes = vec![DeviceNode::new("")],
        "deviceNodes[0].path",
        "absolute",
    );
    let node = |f: fn(&mut DeviceNode)| {
        let mut node = DeviceNode::new("/dev/x");
        f(&mut node);
        vec![DeviceNode::new("/dev/ok"), node]
    };
    check(
        &|e| e.device_nodes = node(|n| n.host_path = Some("dev/x".into())),
        "deviceNodes[1].hostPath",
        "absolute",
    );
    check(
        &|e| e.device_nodes = node(|n| n.r#type = Some("x".into())),
        "deviceNodes[1].type",
        "not one of b, c, u, p",
    );
    check(
        &|e| e.device_nodes = node(|n| n.major = Some(-1)),
        "deviceNodes[1].major",
        "negative",
    );
    check(
        &|e| e.device_nodes = node(|n| n.minor = Some(-1)),
        "deviceNodes[1].minor",
        "negative",
    );
    for perms in ["rwx", "none", "RW"] {
        let mut spec = base.clone();
        spec.devices[0].container_edits.device_nodes[0].permissions = Some(perms.into());
        rejects(
            &spec,
            "devices[0].containerEdits.deviceNodes[0].permissions",
            "subset",
        );
    }
    for perms in ["", "r", "rw", "rwm", "mwr"] {
        let mut spec = base.clone();
        spec.devices[0].container_edits.device_nodes[0].permissions = Some(perms.into());
        spec.devices[0].container_edits.device_nodes[0].r#type = Some("b".into());
        validate(&spec).unwrap();
    }

    let hook = |f: fn(&mut Hook)| {
        let mut hook = Hook {
            hook_name: "poststop".into(),
            path: "/bin/true".into(),
            ..Hook::default()
        };
        f(&mut hook);
        vec![hook]
    };
    check(
        &|e| e.hooks = hook(|h| h.hook_name = "prestop".into()),
        "hooks[0].hookName",
        "not one of createRuntime",
    );
    check(
        &|e| e.hooks = hook(|h| h.path = "true".into()),
        "hooks[0].path",
        "absolute",
    );
    check(
        &|e| e.hooks = hook(|h| h.env = vec!["X".into()]),
        "hooks[0].env[0]",
        "NAME=value",
    );
    check(
        &|e| e.hooks = hook(|h| h.timeout = Some(0)),
        "hooks[0].timeout",
        "greater than 0",
    );
    for name in HOOK_NAMES_FOR_TEST {
        let mut spec = base.clone();
        spec.devices[0].container_edits.hooks = hook(|h| h.timeout = Some(1));
        spec.devices[0].container_edits.hooks[0].hook_name = name.into();
        validate(&spec).unwrap();
    }

    let mount = |host: &str, container: &str| {
        vec![Mount {
            host_path: host.into(),
            container_path: container.into(),
            ..Mount::default()
        }]
    };
    check(
        &|e| e.mounts = mount("", "/a"),
        "mounts[0].hostPath",
        "empty",
    );
    check(
        &|e| e.mounts = mount("/a", ""),
        "mounts[0].containerPath",
        "empty",
    );
    let mut spec = base.clone();
    spec.devices[0].container_edits.mounts = mount("tmpfs", "/a"); // a source, not a path: fine
    accepts(&spec, "tmpfs mount");

    let nets = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(h, n)| NetDevice {
                host_interface_name: (*h).into(),
                name: (*n).into(),
            })
            .collect::<Vec<_>>()
    };
    check(
        &|e| e.net_devices = nets(&[("", "net0")]),
        "netDevices[0].hostInterfaceName",
        "empty",
    );
    check(
        &|e| e.net_devices = nets(&[("eth0", "")]),
        "netDevices[0].name",
        "empty",
    );
    check(
        &|e| e.net_devices = nets(&[("eth0", "net0"), ("eth0", "net1")]),
        "netDevices[1].hostInterfaceName",
        "used by another",
    );
    check(
        &|e| e.net_devices = nets(&[("eth0", "net0"), ("eth1", "net0")]),
        "netDevices[1].name",
        "used by another",
    );
    for bad in ["..", ".", "a/b", "a\nb"] {
        check(
            &|e| {
                e.intel_rdt = Some(IntelRdt {
                    clos_id: Some(bad.into()),
                    ..IntelRdt::default()
                })
            },
            "intelRdt.closID",
            "not a file name",
        );
    }
    let mut spec = base.clone();
    spec.devices[0].container_edits.intel_rdt = Some(IntelRdt {
        clos_id: Some("/".into()),
        ..IntelRdt::default()
    });
    validate(&spec).unwrap();
}

const HOOK_NAMES_FOR_TEST: [&str; 6] = [
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
    "prestart",
];

#[test]
fn qualified_device_ids_are_kind_equals_name() {
    assert_eq!(
        qualified_device("hal.dra.dev/gpu", "uid-gpu-0"),
        "hal.dra.dev/gpu=uid-gpu-0"
    );
}

/// File names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn claim_spec_paths_use_the_transient_naming_and_safe_uids() {
    let cdi = CdiDir::new("/run/test-cdi");
    assert_eq!(cdi.dir(), Path::new("/run/test-cdi"));
    assert_eq!(
        cdi.claim_spec_path("hal.dra.dev/gpu", CLAIM).unwrap(),
        Path::new(&format!("/run/test-cdi/hal.dra.dev-gpu_{CLAIM}.json"))
    );
    let long = "a".repeat(129);
    for bad in [
        "",
        "..",
        "a/../b",
        "a/b",
        "/etc",
        "a\0b",
        ".hidden",
        "a b",
        long.as_str(),
    ] {
        let error = cdi.claim_spec_path("hal.dra.dev/gpu", bad).unwrap_err();
        assert!(
            matches!(&error, CdiError::Invalid { field, .. } if field == "claimUID"),
            "{bad:?}: {error}"
        );
    }
    cdi.claim_spec_path("hal.dra.dev/gpu", &"a".repeat(128))
        .unwrap();
    let error = cdi.claim_spec_path("hal.dra.dev", CLAIM).unwrap_err();
    assert!(matches!(&error, CdiError::Invalid { field, .. } if field == "kind"));
}

#[test]
fn writes_are_atomic_and_replace_the_previous_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run/cdi"); // created on demand
    let cdi = CdiDir::new(&dir);

    let spec = rdma_spec();
    let path = cdi.write_claim_spec(CLAIM, &spec).unwrap();
    assert_eq!(path, dir.join(format!("hal.dra.dev-rdma_{CLAIM}.json")));
    let written: Spec = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(written, spec);
    assert_eq!(names(&dir), [format!("hal.dra.dev-rdma_{CLAIM}.json")]);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "created private: {mode:o}");

    // A rewrite replaces the content; the cdiVersion is recomputed (annotations need 0.6.0).
    let mut second = rdma_spec();
    second.devices[0].container_edits.env = vec!["NCCL_IB_HCA=mlx5_1".into()];
    second.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
    assert_eq!(second.cdi_version, "0.5.0");
    cdi.write_claim_spec(CLAIM, &second).unwrap();
    let written: Spec = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(written.cdi_version, "0.6.0");
    assert_eq!(
        written.devices[0].container_edits.env,
        ["NCCL_IB_HCA=mlx5_1"]
    );
    assert_eq!(names(&dir), [format!("hal.dra.dev-rdma_{CLAIM}.json")]);

    // An invalid spec is rejected before anything is touched.
    let mut bad = rdma_spec();
    bad.devices[0].container_edits.device_nodes[0].path = "uverbs0".into();
    let error = cdi.write_claim_spec(CLAIM, &bad).unwrap_err();
    assert!(matches!(error, CdiError::Invalid { .. }), "{error}");
    assert_eq!(
        serde_json::from_slice::<Spec>(&fs::read(&path).unwrap()).unwrap(),
        written
    );
    let error = cdi.write_claim_spec("../escape", &rdma_spec()).unwrap_err();
    assert!(matches!(&error, CdiError::Invalid { field, .. } if field == "claimUID"));
    assert_eq!(names(&dir), [format!("hal.dra.dev-rdma_{CLAIM}.json")]);
}

#[test]
fn concurrent_writes_of_one_claim_leave_one_complete_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    let specs: Vec<Spec> = (0..8)
        .map(|i| {
            let mut spec = rdma_spec();
            spec.devices[0].container_edits.env = vec![format!("N={i}"); 50];
            spec
        })
        .collect();
    std::thread::scope(|s| {
        for spec in &specs {
            let cdi = &cdi;
            s.spawn(move || {
                for _ in 0..20 {
                    cdi.write_claim_spec(CLAIM, spec).unwrap();
                }
            });
        }
    });
    let path = cdi.claim_spec_path("hal.dra.dev/rdma", CLAIM).unwrap();
    let written: Spec = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    assert!(specs.contains(&written));
    assert_eq!(names(tmp.path()).len(), 1, "{:?}", names(tmp.path()));
}

#[test]
fn failed_writes_leave_the_previous_spec_and_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    let path = cdi.write_claim_spec(CLAIM, &rdma_spec()).unwrap();
    let before = fs::read(&path).unwrap();
    let mut next = rdma_spec();
    next.devices[0].container_edits.env = vec!["NEW=1".into()];
    for fail in [FailAt::Write, FailAt::Rename] {
        let error = cdi
            .write_claim_spec_failing(CLAIM, &next, fail)
            .unwrap_err();
        // The injected error is a full disk: callers can tell it apart.
        assert_eq!(error.io_kind(), Some(io::ErrorKind::StorageFull), "{error}");
        let at = error.path().unwrap();
        assert!(at.starts_with(tmp.path()), "{}", at.display());
        assert!(
            error
                .to_string()
                .contains(&tmp.path().display().to_string())
        );
        assert_eq!(fs::read(&path).unwrap(), before, "{fail:?}");
        assert_eq!(
            names(tmp.path()),
            [format!("hal.dra.dev-rdma_{CLAIM}.json")]
        );
    }
}

/// A write into `dir` (mode 0555) fails with EACCES and names the path.
fn assert_a_write_into_fails_with_the_path(dir: &Path) {
    let mut next = rdma_spec();
    next.devices[0].container_edits.env = vec!["NEW=1".into()];
    let error = CdiDir::new(dir).write_claim_spec(CLAIM, &next).unwrap_err();
    assert_eq!(
        error.io_kind(),
        Some(io::ErrorKind::PermissionDenied),
        "{error}"
    );
    assert!(error.path().unwrap().starts_with(dir), "{error}");
    assert!(
        error.to_string().contains(&dir.display().to_string()),
        "{error}"
    );
}

/// Root writes whatever a directory's mode says (CAP_DAC_OVERRIDE): as root, the write runs on a
/// thread without the capabilities that pass over permissions (capabilities are per thread).
#[test]
fn writes_into_a_read_only_directory_fail_with_the_path_and_keep_the_previous_spec() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    let path = cdi.write_claim_spec(CLAIM, &rdma_spec()).unwrap();
    let before = fs::read(&path).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o555)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut sets = capabilities(None).unwrap();
            sets.effective -= CapabilitySet::DAC_OVERRIDE
                | CapabilitySet::DAC_READ_SEARCH
                | CapabilitySet::FOWNER;
            set_capabilities(None, sets).unwrap();
            assert_a_write_into_fails_with_the_path(tmp.path());
        })
        .join()
        .unwrap();
    });
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(
        names(tmp.path()),
        [format!("hal.dra.dev-rdma_{CLAIM}.json")]
    );
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn writes_below_a_file_fail_with_the_directory_path() {
    // Fails for root as well: a path component is a regular file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let dir = file.join("cdi");
    let error = CdiDir::new(&dir)
        .write_claim_spec(CLAIM, &rdma_spec())
        .unwrap_err();
    assert!(
        matches!(&error, CdiError::Io { action: "create directory", path, .. } if *path == dir)
    );
    assert_eq!(error.io_kind(), Some(io::ErrorKind::NotADirectory));
    assert!(
        error.to_string().contains(&dir.display().to_string()),
        "{error}"
    );
}

#[test]
fn removal_tolerates_missing_files_and_clears_stray_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = CdiDir::new(tmp.path().join("missing"));
    missing
        .remove_claim_spec("hal.dra.dev/rdma", CLAIM)
        .unwrap();
    assert!(missing.list_claim_specs("hal.dra.dev/rdma").is_empty());

    let cdi = CdiDir::new(tmp.path());
    let path = cdi.write_claim_spec(CLAIM, &rdma_spec()).unwrap();
    cdi.write_claim_spec("other", &rdma_spec()).unwrap();
    let stray = format!(".hal.dra.dev-rdma_{CLAIM}.json.1-2-3.tmp");
    let other_stray = ".hal.dra.dev-rdma_other.json.1-2-3.tmp";
    fs::write(tmp.path().join(&stray), b"{\"cdiVer").unwrap();
    fs::write(tmp.path().join(other_stray), b"{").unwrap();

    cdi.remove_claim_spec("hal.dra.dev/rdma", CLAIM).unwrap();
    assert!(!path.exists());
    assert_eq!(
        names(tmp.path()),
        [other_stray, "hal.dra.dev-rdma_other.json"]
    );
    cdi.remove_claim_spec("hal.dra.dev/rdma", CLAIM).unwrap();
    let error = cdi
        .remove_claim_spec("hal.dra.dev/rdma", "../x")
        .unwrap_err();
    assert!(matches!(error, CdiError::Invalid { .. }));
}

#[test]
fn listing_finds_the_claims_of_one_kind_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    for uid in ["b-2", CLAIM, "a-1"] {
        cdi.write_claim_spec(uid, &rdma_spec()).unwrap();
    }
    cdi.write_claim_spec("gpu-claim", &gpu_spec()).unwrap();
    // Not ours or not specs: temp files, other suffixes, directories, unsafe names.
    for name in [
        ".hal.dra.dev-rdma_c-3.json.1-2-3.tmp",
        "hal.dra.dev-rdma_d-4.yaml",
        "hal.dra.dev-rdma.json",
        "hal.dra.dev-rdma_.json",
        "hal.dra.dev-rdma_..json",
    ] {
        fs::write(tmp.path().join(name), b"{}").unwrap();
    }
    fs::create_dir(tmp.path().join("hal.dra.dev-rdma_e-5.json")).unwrap();

    assert_eq!(
        cdi.list_claim_specs("hal.dra.dev/rdma"),
        [CLAIM, "a-1", "b-2"]
    );
    assert_eq!(cdi.list_claim_specs("hal.dra.dev/gpu"), ["gpu-claim"]);
    assert!(cdi.list_claim_specs("other.dev/rdma").is_empty());
    assert!(cdi.list_claim_specs("bad kind").is_empty());
    assert!(matches!(
        cdi.try_list_claim_specs("bad kind"),
        Err(CdiError::Invalid { .. })
    ));
    let missing = CdiDir::new(tmp.path().join("missing"));
    assert!(
        missing
            .try_list_claim_specs("hal.dra.dev/rdma")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_spec_is_read_back_only_from_a_regular_file_and_never_waits_on_a_fifo() {
    let tmp = tempfile::tempdir().unwrap();
    let cdi = CdiDir::new(tmp.path());
    let kind = "hal.dra.dev/rdma";
    let path = cdi.write_claim_spec(CLAIM, &rdma_spec()).unwrap();
    assert_eq!(cdi.read_claim_spec(kind, CLAIM).unwrap(), rdma_spec());

    // A spec of another kind under this kind's name (edited by hand) is not ours.
    let mut other = rdma_spec();
    other.kind = "other.example.com/gpu".into();
    fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
    let error = cdi.read_claim_spec(kind, CLAIM).unwrap_err().to_string();
    assert!(
        error.contains("its kind is \"other.example.com/gpu\""),
        "{error}"
    );

    // A FIFO there (a hostile or broken node): an error at once, not a start that waits for a writer.
    fs::remove_file(&path).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    let reader = cdi.clone();
    std::thread::spawn(move || {
        let _ = done.send(reader.read_claim_spec(kind, CLAIM).map(drop));
    });
    let read = wait
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("read_claim_spec waited on the FIFO");
    let error = read.unwrap_err().to_string();
    assert!(error.contains("not a regular file"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");

    // A link to a valid spec is not followed.
    fs::remove_file(&path).unwrap();
    let elsewhere = tmp.path().join("elsewhere.json");
    fs::write(&elsewhere, serde_json::to_vec(&rdma_spec()).unwrap()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert!(cdi.read_claim_spec(kind, CLAIM).is_err());
}
