use std::path::Path;
use std::time::Duration;

use super::filter::{DeviceFilter, FilterErrorKind};
use super::hostnet::*;
use super::*;
use crate::slices::build_slices;

const DEV_VM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/captured/dev-vm");

fn if_names(inventory: &Inventory, config: &SliceConfig) -> Vec<String> {
    build_slices(inventory, config, 1)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .filter_map(|d| d.attributes?.get("ifName")?.string.clone())
        .collect()
}

fn device_names(inventory: &Inventory, config: &SliceConfig) -> Vec<String> {
    build_slices(inventory, config, 1)
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .map(|d| d.name)
        .filter(|n| n.starts_with("nic-"))
        .collect()
}

fn xeon() -> (hal_mock::MaterializedFixture, Inventory) {
    let machine = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = backends::SysfsRoot::new(machine.root());
    let inventory = Inventory::from_sysfs(&root, None);
    (machine, inventory)
}

#[test]
fn dev_vm_management_interface_carrying_the_default_route_is_never_published() {
    let root = backends::SysfsRoot::new(DEV_VM);
    let config = SliceConfig::new("dev-vm");
    let mut inventory = Inventory::from_sysfs(&root, None);
    // Without the guard, eth0 (0000:00:03.0, the VM's only management interface) is a NIC device.
    assert_eq!(if_names(&inventory, &config), ["eth0"]);
    let node = NodeNetwork::read(&TreeFiles(Tree::open(&root)), &[]);
    assert_eq!(
        node.interfaces.get("eth0"),
        Some(&Reason::DefaultRouteV4),
        "{node:?}"
    );
    let withheld = withhold(&mut inventory, &config, &node, &[], None);
    assert_eq!(withheld.keys().collect::<Vec<_>>(), ["0000:00:03.0"]);
    assert!(withheld["0000:00:03.0"].contains("IPv4 default route"));
    assert!(if_names(&inventory, &config).is_empty());
    assert!(
        inventory
            .function("0000:00:03.0".parse().unwrap())
            .is_none()
    );
    // The guard the plugin uses reads the same.
    let guard = NodeGuard::new(DEV_VM, Some(Vec::new()), NodeNetArgs::default()).unwrap();
    let mut fresh = Inventory::from_sysfs(&root, None);
    assert_eq!(guard.apply(&mut fresh, &config).len(), 1);
    assert!(if_names(&fresh, &config).is_empty());
}

/// dev-vm as the capture script used to leave it, without `proc/`: its routes unknown, `eth0`
/// (the VM's management interface) was published as `nic-0000-00-03-0`. Now no network function
/// is, and the reason names the missing file.
#[test]
fn dev_vm_without_its_routes_publishes_no_network_function() {
    let dir = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(Path::new(DEV_VM).join("sys"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let root = backends::SysfsRoot::new(dir.path());
    let config = SliceConfig::new("dev-vm");
    let mut inventory = Inventory::from_sysfs(&root, None);
    assert_eq!(device_names(&inventory, &config), ["nic-0000-00-03-0"]);
    let guard = NodeGuard::new(dir.path(), Some(Vec::new()), NodeNetArgs::default()).unwrap();
    let withheld = guard.apply(&mut inventory, &config);
    assert_eq!(withheld.keys().collect::<Vec<_>>(), ["0000:00:03.0"]);
    assert!(
        withheld["0000:00:03.0"].contains("proc/net/route: missing"),
        "{withheld:?}"
    );
    assert!(device_names(&inventory, &config).is_empty());
}

#[test]
fn exclude_interfaces_removes_devices_from_the_slices() {
    let (_machine, mut inventory) = xeon();
    let config = SliceConfig::new("xeon");
    let before = if_names(&inventory, &config);
    assert!(before.contains(&"ens1f0v3".to_owned()), "{before:?}");
    let globs = vec!["ens1f0v*".to_owned(), "ens2f0np0".to_owned()];
    let withheld = withhold(
        &mut inventory,
        &config,
        &NodeNetwork::default(),
        &globs,
        None,
    );
    assert_eq!(withheld.len(), 9, "{withheld:?}");
    let after = if_names(&inventory, &config);
    assert!(after.iter().all(|n| !n.starts_with("ens1f0v")), "{after:?}");
    assert!(!after.contains(&"ens2f0np0".to_owned()));
    assert!(after.contains(&"ens1f0".to_owned()));
    assert!(after.contains(&"ens2f0v0".to_owned()));
}

#[test]
fn device_filter_in_cel_removes_unselected_devices_from_the_slices() {
    let (_machine, mut inventory) = xeon();
    let config = SliceConfig::new("xeon");
    let nics = device_names(&inventory, &config);
    let filter = DeviceFilter::new(
        r#"device.attributes["hal.dra.dev"].isSriovVf && device.attributes["hal.dra.dev"].ifName.startsWith("ens2")"#,
    )
    .unwrap();
    let withheld = withhold(
        &mut inventory,
        &config,
        &NodeNetwork::default(),
        &[],
        Some(&filter),
    );
    let after = if_names(&inventory, &config);
    assert_eq!(after, ["ens2f0v0", "ens2f0v1", "ens2f0v2", "ens2f0v3"]);
    assert_eq!(withheld.len() + 4, nics.len());
    // CPUs and GPUs are not filtered.
    assert!(
        build_slices(&inventory, &config, 1)
            .iter()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .any(|d| d.name.starts_with("cpus-"))
    );
}

#[test]
fn device_filter_errors_have_a_kind_and_a_failing_device_is_withheld() {
    let error = DeviceFilter::new("device.attributes[").err().unwrap();
    assert_eq!(error.kind(), FilterErrorKind::Syntax);
    assert!(
        NodeGuard::new(
            "/nonexistent",
            Some(Vec::new()),
            NodeNetArgs {
                device_filter: Some("(".into()),
                ..Default::default()
            }
        )
        .is_err()
    );
    let (_machine, mut inventory) = xeon();
    let config = SliceConfig::new("xeon");
    // `nope` is on no device: an evaluation error, so nothing is published.
    let filter = DeviceFilter::new(r#"device.attributes["hal.dra.dev"].nope == 1"#).unwrap();
    let withheld = withhold(
        &mut inventory,
        &config,
        &NodeNetwork::default(),
        &[],
        Some(&filter),
    );
    assert!(if_names(&inventory, &config).is_empty());
    assert!(
        withheld.values().all(|w| w.contains("nope")),
        "{withheld:?}"
    );
    let not_bool = DeviceFilter::new("1").unwrap();
    let device = k8s_openapi::api::resource::v1::Device {
        name: "d".into(),
        ..Default::default()
    };
    assert_eq!(
        not_bool.selects(&device, "x").unwrap_err().kind(),
        FilterErrorKind::Evaluation
    );
}

/// A filter kube-cel cannot run fails on each device instead of panicking; one nested deeper than
/// a worker thread's stack holds is refused at start; the deepest accepted runs on 2 MiB.
#[test]
fn hostile_device_filters_are_errors_not_crashes() {
    use super::filter::{MAX_FILTER_LENGTH, MAX_FILTER_OPERATORS};
    let device = k8s_openapi::api::resource::v1::Device {
        name: "d".into(),
        ..Default::default()
    };
    let message = DeviceFilter::new("Foo{} == 1").unwrap();
    let error = message.selects(&device, "x").unwrap_err();
    assert_eq!(error.kind(), FilterErrorKind::Evaluation, "{error}");
    for refused in [
        format!("{}1 == 0", "1+".repeat(MAX_FILTER_OPERATORS)),
        format!("device.driver == '{}'", "x".repeat(MAX_FILTER_LENGTH)),
    ] {
        let error = DeviceFilter::new(&refused).err().unwrap();
        assert_eq!(error.kind(), FilterErrorKind::Syntax, "{error}");
    }
    let deepest = format!("{}1 == 0", "1+".repeat(MAX_FILTER_OPERATORS - 2));
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let filter = DeviceFilter::new(&deepest).unwrap();
            assert_eq!(filter.selects(&device, "x"), Ok(false));
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
}

#[test]
fn network_config_is_validated_strictly_and_errors_name_the_field() {
    use super::config::NetworkConfig;
    let ok = NetworkConfig::decode(serde_json::json!({
        "interface": {"name": "net1", "addresses": ["10.0.0.2/24", "fd00::2/64"], "mtu": 9000},
        "routes": [{"destination": "0.0.0.0/0", "gateway": "10.0.0.1"}, {"destination": "10.9.0.0/16"}]
    }))
    .unwrap();
    assert_eq!(ok.name.as_deref(), Some("net1"));
    assert_eq!(ok.addresses[1].to_string(), "fd00::2/64");
    assert_eq!(ok.routes[1].1, None);
    for (config, field) in [
        (
            serde_json::json!({"interface": {"nmae": "x"}}),
            "interface.nmae: unknown field `nmae`",
        ),
        (
            serde_json::json!({"extra": 1}),
            "extra: unknown field `extra`",
        ),
        (
            serde_json::json!({"interface": {"name": "a-very-long-name0"}}),
            "interface.name:",
        ),
        (
            serde_json::json!({"interface": {"name": "a/b"}}),
            "interface.name:",
        ),
        (
            serde_json::json!({"interface": {"addresses": ["10.0.0.2"]}}),
            "interface.addresses[0]:",
        ),
        (
            serde_json::json!({"interface": {"addresses": ["ok", "10.0.0.2/24"]}}),
            "interface.addresses[0]:",
        ),
        (
            serde_json::json!({"interface": {"addresses": ["10.0.0.2/24", "10.0.0.2/33"]}}),
            "interface.addresses[1]:",
        ),
        (
            serde_json::json!({"interface": {"addresses": ["fd00::1/129"]}}),
            "interface.addresses[0]:",
        ),
        (
            serde_json::json!({"interface": {"addresses": ["0.0.0.0/8"]}}),
            "interface.addresses[0]:",
        ),
        (
            serde_json::json!({"interface": {"mtu": 20}}),
            "interface.mtu:",
        ),
        (
            serde_json::json!({"interface": {"mtu": -1}}),
            "interface.mtu:",
        ),
        (
            serde_json::json!({"routes": [{"destination": "10.0.0.0/8", "gateway": "fd00::1"}]}),
            "routes[0].gateway:",
        ),
        (
            serde_json::json!({"routes": [{"destination": "0.0.0.0/0"}]}),
            "routes[0].gateway:",
        ),
        (
            serde_json::json!({"routes": [{"destination": "x"}]}),
            "routes[0].destination:",
        ),
        (
            serde_json::json!({"routes": [{"gateway": "10.0.0.1"}]}),
            "routes[0]:",
        ),
    ] {
        let error = NetworkConfig::decode(config.clone()).unwrap_err();
        assert!(error.to_string().starts_with(field), "{config}: {error}");
    }
}

/// A captured tree (`hal-probe --sysfs-root`) is untrusted: a FIFO, a link to `/dev/zero` and an
/// over-long file in place of the network files are not read past their bound, within seconds, and
/// the rest is read; the files that could not be read withhold every interface.
#[test]
fn the_node_network_of_a_hostile_tree_is_read_without_blocking_or_leaving_the_root() {
    use rustix::fs::{CWD, FileType, Mode};
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("proc/net");
    std::fs::create_dir_all(&net).unwrap();
    let route = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    std::fs::write(net.join("route"), route).unwrap();
    let fifo = net.join("ipv6_route");
    rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    std::os::unix::fs::symlink("/dev/zero", net.join("if_inet6")).unwrap();
    let bond = dir.path().join("sys/class/net/eth0/bonding");
    std::fs::create_dir_all(&bond).unwrap();
    let slaves = std::fs::File::create(bond.join("slaves")).unwrap();
    slaves.set_len(MAX_FILE_BYTES + 1).unwrap();
    let root = dir.path().to_owned();
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let files = TreeFiles(Tree::open(&backends::SysfsRoot::new(&root)));
        let skipped = ["proc/net/ipv6_route", "proc/net/if_inet6"]
            .map(|p| files.read(Path::new(p)))
            .into_iter()
            .chain([files.read(Path::new("sys/class/net/eth0/bonding/slaves"))])
            .collect::<Vec<_>>();
        let node = NodeNetwork::read(&files, &["fd00::2".parse().unwrap()]);
        let _ = sender.send((skipped, node));
    });
    let (skipped, node) = answer
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("read within 10 s");
    // The FIFO and the device node are refused, the over-long file read up to its last whole line
    // within the bound (none: it is all NUL bytes).
    assert!(
        skipped[0].as_ref().is_err_and(|e| e.contains("ipv6_route")),
        "{skipped:?}"
    );
    assert!(
        skipped[1].as_ref().is_err_and(|e| e.contains("if_inet6")),
        "{skipped:?}"
    );
    assert_eq!(skipped[2], Ok(Some(String::new())));
    assert_eq!(
        node.interfaces,
        BTreeMap::from([("eth0".to_owned(), Reason::DefaultRouteV4)])
    );
    // Files that are there but could not be read: which interfaces are the node's is not known,
    // so none is free (not taken for empty files, which would leave the node's NIC open).
    assert_eq!(node.unread.len(), 2, "{:?}", node.unread);
    assert!(matches!(node.protects("ens9", &[]), Some(Reason::Unread(files)) if files.len() == 2));
}

#[test]
fn the_kernels_addresses_are_asked_for_on_the_node_only() {
    let live = TreeFiles(Tree::open(&backends::SysfsRoot::new("/")));
    let addresses = live.addresses().expect("netlink answers in any namespace");
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert!(
        addresses.contains(&("lo".to_owned(), loopback)),
        "{addresses:?}"
    );
    // A captured tree: this machine's addresses are not its.
    let captured = TreeFiles(Tree::open(&backends::SysfsRoot::new(DEV_VM)));
    assert_eq!(captured.addresses(), None);
}

/// The xeon with a connected route for `ens1f0`'s subnet (10.0.0.0/24) and no default route.
fn xeon_with_a_node_subnet() -> (hal_mock::MaterializedFixture, Inventory) {
    let (machine, inventory) = xeon();
    let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 ens1f0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    std::fs::write(machine.root().join("proc/net/route"), route).unwrap();
    (machine, inventory)
}

/// The Node's InternalIP not read at the start (the API server was slow then): every netdev is
/// withheld, since which one carries it is not known; once read, the next read withholds only the
/// interface carrying it (and what the default routes name).
#[test]
fn internal_ips_set_after_the_start_are_withheld_from_the_next_read() {
    let (machine, inventory) = xeon_with_a_node_subnet();
    let config = SliceConfig::new("xeon");
    let guard = NodeGuard::new(machine.root(), None, NodeNetArgs::default()).unwrap();
    let mut first = inventory.clone();
    let withheld = guard.apply(&mut first, &config);
    assert!(
        if_names(&first, &config).is_empty(),
        "{:?}",
        if_names(&first, &config)
    );
    assert!(
        withheld
            .values()
            .any(|w| w.contains("the Node's InternalIPs (not read from the API server yet)")),
        "{withheld:?}"
    );
    assert!(
        guard.set_internal_ips(vec!["10.0.0.5".parse().unwrap()]),
        "the first read"
    );
    assert!(
        !guard.set_internal_ips(vec!["10.0.0.5".parse().unwrap()]),
        "the same"
    );
    let mut next = inventory.clone();
    let withheld = guard.apply(&mut next, &config);
    assert!(!if_names(&next, &config).contains(&"ens1f0".to_owned()));
    assert!(
        withheld.values().any(|w| w.contains("InternalIP 10.0.0.5")),
        "{withheld:?}"
    );
    // A read without it (a Node whose addresses are being rewritten) keeps it one more read.
    let published = |guard: &NodeGuard| {
        let mut read = inventory.clone();
        guard.apply(&mut read, &config);
        if_names(&read, &config).contains(&"ens1f0".to_owned())
    };
    guard.set_internal_ips(Vec::new());
    assert!(!published(&guard), "let go after one read without it");
    guard.set_internal_ips(Vec::new());
    assert!(published(&guard), "kept after two reads without it");
}

/// The plugin's reader of the Node's InternalIPs: retried until read, then read again every
/// period; a failed read keeps what was read before.
#[tokio::test(start_paused = true)]
async fn the_nodes_internal_ips_are_read_until_read_and_then_kept_current() {
    use std::sync::{Arc, Mutex};
    let (machine, inventory) = xeon_with_a_node_subnet();
    let config = SliceConfig::new("xeon");
    let guard = NodeGuard::new(machine.root(), None, NodeNetArgs::default()).unwrap();
    let api = Arc::new(Mutex::new(crate::fake_api::FakeApi::default()));
    let client =
        crate::fake_api::FakeApi::mock_client(api.clone(), &crate::api::call_timeout_layer());
    let (retry, period) = (Duration::from_secs(30), Duration::from_secs(600));
    let ens1f0_published = |guard: &NodeGuard| {
        let mut read = inventory.clone();
        guard.apply(&mut read, &config);
        if_names(&read, &config).contains(&"ens1f0".to_owned())
    };
    let published = |guard: &NodeGuard| {
        let mut read = inventory.clone();
        guard.apply(&mut read, &config);
        if_names(&read, &config).len()
    };
    let all = if_names(&inventory, &config).len();
    let changed = tokio::sync::Notify::new();
    // Whether `changed` was notified since the last look (a permit is kept).
    let notified = || async {
        tokio::time::timeout(Duration::from_millis(1), changed.notified())
            .await
            .is_ok()
    };
    let keep = keep_internal_ips(&guard, &client, "node-1", retry, period, &changed);
    let check = async {
        // No Node yet (404): nothing known, every netdev withheld, retried every 30 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(published(&guard), 0);
        assert!(!notified().await);
        {
            let mut api = api.lock().unwrap();
            api.nodes.insert("node-1".into(), "uid-1".into());
            api.node_ips
                .insert("node-1".into(), vec!["10.0.0.5".into()]);
        }
        tokio::time::sleep(retry).await;
        assert!(!ens1f0_published(&guard), "read at the retry");
        assert_eq!(published(&guard), all - 1, "only ens1f0 withheld");
        assert!(notified().await, "a publish is asked for at once");
        // The Node gone for a while (a failed read): what was read is kept.
        api.lock().unwrap().nodes.clear();
        tokio::time::sleep(period).await;
        assert!(
            !ens1f0_published(&guard),
            "a failed read keeps the addresses"
        );
        assert!(!notified().await);
        // Back with another address: the next read takes it, and the one after lets the old go.
        {
            let mut api = api.lock().unwrap();
            api.nodes.insert("node-1".into(), "uid-1".into());
            api.node_ips
                .insert("node-1".into(), vec!["192.168.9.9".into()]);
        }
        // The reads after the failed ones come every 30 s: the next within `retry`.
        tokio::time::sleep(retry).await;
        assert!(!ens1f0_published(&guard), "kept for one more read");
        assert!(notified().await, "the new address withheld too");
        tokio::time::sleep(period).await;
        assert!(ens1f0_published(&guard), "the new address is elsewhere");
        assert!(notified().await);
    };
    tokio::select! {
        () = keep => panic!("it never ends"),
        () = check => {}
    }
}

/// A completed record of the claim `uid`, reserved for the pod `pod-<uid>`.
fn pod_record(uid: &str) -> crate::plugin::checkpoint::ClaimRecord {
    use crate::plugin::checkpoint::{ClaimRecord, Phase, SpecJson};
    ClaimRecord {
        claim: crate::plugin::api::ClaimRef {
            namespace: "ns".into(),
            uid: uid.into(),
            name: format!("claim-{uid}"),
        },
        phase: Phase::Completed,
        boot_id: "boot-1".into(),
        devices: Vec::new(),
        cdi_spec: SpecJson::from(serde_json::json!({"cdiVersion": "0.5.0"})),
        undo: Default::default(),
        cpus: Default::default(),
        rt: Default::default(),
        pods: vec![format!("pod-{uid}")],
        network: Default::default(),
        admin: Vec::new(),
        recovered: false,
    }
}

/// A checkpoint directory holding the completed records of `uids`.
fn checkpoint_of(uids: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    use crate::plugin::checkpoint::{CheckpointFile, files::Durability};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint");
    for uid in uids {
        CheckpointFile::new(&path)
            .put(&pod_record(uid), Durability::Synced)
            .unwrap();
    }
    (dir, path)
}

/// One record file that cannot be read (EIO from a bad block) does not fail the NRI side's read:
/// the others are served (a pod sandbox without claims, or with readable ones, starts as before).
#[test]
fn a_record_that_cannot_be_read_is_left_out_and_the_others_are_served() {
    let (_dir, path) = checkpoint_of(&["a", "b"]);
    let failing = path.join("a.json");
    let checkpoint = crate::plugin::checkpoint::CheckpointFile::new(&path).with_read_fault(
        std::sync::Arc::new(move |read: &Path| match read == failing {
            true => Err(std::io::Error::from_raw_os_error(5)),
            false => Ok(()),
        }),
    );
    let read = pods::read_prepared_from(&checkpoint).expect("one unreadable record fails no read");
    assert_eq!(read.keys().collect::<Vec<_>>(), ["b"]);
    let both = pods::read_prepared(&path).unwrap();
    assert_eq!(both.keys().collect::<Vec<_>>(), ["a", "b"]);
}

/// A read per pod sandbox logs an unreadable record once per file and error, not at every read.
#[test]
fn an_unreadable_record_is_logged_once_per_distinct_error() {
    use crate::plugin::checkpoint::Unreadable;
    let unreadable = |errno: i32| Unreadable {
        uid: "a".into(),
        path: "/checkpoint/a.json".into(),
        error: std::io::Error::from_raw_os_error(errno),
    };
    let seen = std::sync::Mutex::default();
    assert_eq!(pods::report_unreadable(&seen, &[unreadable(5)]), 1);
    assert_eq!(pods::report_unreadable(&seen, &[unreadable(5)]), 0);
    assert_eq!(pods::report_unreadable(&seen, &[unreadable(13)]), 1);
    assert_eq!(pods::report_unreadable(&seen, &[unreadable(13)]), 0);
    // It reads again; failing later is news again.
    assert_eq!(pods::report_unreadable(&seen, &[]), 0);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(pods::report_unreadable(&seen, &[unreadable(13)]), 1);
}

/// The same with a real EACCES: a record of mode 000 read by a root without CAP_DAC_OVERRIDE
/// (capabilities are per thread: the read runs on a thread of its own).
#[test]
#[ignore = "needs root (capabilities to drop)"]
fn a_record_the_nri_side_may_not_read_is_left_out_needs_root() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = checkpoint_of(&["a", "b"]);
    let record = path.join("a.json");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o000)).unwrap();
    let read = std::thread::spawn(move || {
        let mut sets = capabilities(None).unwrap();
        sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
        set_capabilities(None, sets).unwrap();
        pods::read_prepared(&path)
    })
    .join()
    .unwrap()
    .expect("one unreadable record fails no read");
    assert_eq!(read.keys().collect::<Vec<_>>(), ["b"]);
    assert!(record.exists());
}
