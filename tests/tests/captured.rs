//! Captured trees: a real machine read back through the backends, and the capture script round trip
//! (capturing a fixture's tree must not change what the backends see).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use backends::{SysfsCpuTopology, SysfsPci, SysfsRoot, SysfsSriov};
use hal::{CpuTopology, NumaNode, PciAddress, PciDevice, SriovPf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn captured_dev_vm_reads_as_the_machine_it_was() {
    let root = SysfsRoot::new(workspace().join("testdata/captured/dev-vm"));
    let cpu = SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap();
    assert!(cpu.errors.is_empty(), "{:?}", cpu.errors);
    assert_eq!(cpu.online().to_string(), "0-1");
    assert_eq!(cpu.numa_nodes.len(), 1);
    assert!(
        cpu.cpus
            .iter()
            .all(|c| c.numa_node == Some(NumaNode(0)) && c.package == Some(0))
    );

    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap();
    assert!(pci.errors.is_empty(), "{:?}", pci.errors);
    assert_eq!(pci.items.len(), 6);
    let net = pci
        .items
        .iter()
        .find(|f| f.address == PciAddress::parse("0000:00:03.0").unwrap())
        .unwrap();
    assert_eq!(
        (net.vendor_id, net.device_id, net.class),
        (0x1af4, 0x1041, 0x020000)
    );
    assert_eq!(
        net.netdevs,
        ["eth0"],
        "virtio-net's interface hangs under virtio0/"
    );
    assert_eq!(net.driver.as_deref(), Some("virtio-pci"));
    assert_eq!(net.numa_node, None, "a one-node VM says -1");
    assert_eq!(net.pcie_root.unwrap().to_string(), "pci0000:00");
    assert!(SysfsSriov::new(root).sriov_pfs().unwrap().items.is_empty());

    // What the plugin reads beside the hardware: eth0's link state, the node's default route on
    // eth0 (so it is withheld), and the kernel's real-time limit (one `rt-` device).
    let published = published(&workspace().join("testdata/captured/dev-vm"));
    assert!(
        published.contains(
            r#"NetLink { name: "eth0", admin_up: Some(true), operstate: Some("up"), carrier: Some(true) }"#
        ),
        "{published}"
    );
    assert!(
        published.contains(r#"withheld {"0000:00:03.0": "eth0 carries the IPv4 default route"#),
        "{published}"
    );
    assert!(published.contains("\"name\": \"rt-"), "{published}");
}

/// What the backends see in a tree, with paths made relative so two trees compare.
fn view(root: &Path) -> String {
    let root = SysfsRoot::new(root);
    let cpu = SysfsCpuTopology::new(root.clone()).cpu_inventory().unwrap();
    let pci = SysfsPci::new(root.clone()).pci_functions().unwrap();
    let sriov = SysfsSriov::new(root).sriov_pfs().unwrap();
    format!(
        "{:?}\n{:?}\n{:?}",
        (cpu.cpus, cpu.numa_nodes, cpu.errors),
        pci,
        sriov
    )
}

/// What the driver publishes from a tree, as the plugin reads it: each interface's link state, the
/// node's own network as the guard reads it and the functions it withholds (with why), the health
/// taints, and the slices (`rt-<group>` devices included); the root's path left out.
fn published(root: &Path) -> String {
    let sysfs = SysfsRoot::new(root);
    let mut inventory = driver::inventory::Inventory::from_sysfs(&sysfs, None);
    let files = driver::podnet::TreeFiles(backends::sysfs::tree::Tree::open(&sysfs));
    let node = driver::podnet::hostnet::NodeNetwork::read(&files, &[]);
    let mut config = driver::slices::SliceConfig::new("node");
    config.rt_bandwidth = true;
    let withheld = driver::podnet::withhold(&mut inventory, &config, &node, &[], None);
    driver::health::Health::default().apply(&mut inventory);
    let slices = driver::slices::build_slices(&inventory, &config, 0);
    let text = format!(
        "links {:?}\nerrors {:?}\nnode {node:?}\nwithheld {withheld:?}\nhealth {:?}\nslices {}",
        inventory.net_links,
        inventory.errors,
        inventory.health,
        serde_json::to_string_pretty(&slices).unwrap(),
    );
    let text = text.replace(root.to_str().unwrap(), "<root>");
    // When a device was first seen unhealthy is the time of the read, not the tree's.
    let text = blank_after(&text, "since: Time(", ')');
    let text = blank_after(&text, "\"timeAdded\": \"", '"');
    // The capture masks GPU UUIDs.
    blank_after(&text, "\"GPU-", '"')
}

/// `text` with what follows each `marker`, up to `end`, left out.
fn blank_after(text: &str, marker: &str, end: char) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let (head, tail) = rest.split_at(at + marker.len());
        out.push_str(head);
        rest = &tail[tail.find(end).unwrap_or(tail.len())..];
    }
    out.push_str(rest);
    out
}

/// Asserts that two views are the same, showing the first lines that differ.
fn assert_same(captured: &str, original: &str, name: &str) {
    let show = |text: &str, line: usize| {
        text.lines()
            .skip(line)
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let difference = captured
        .lines()
        .zip(original.lines())
        .position(|(a, b)| a != b)
        .map(|line| {
            format!(
                "line {line}:\n captured: {}\n original: {}",
                show(captured, line),
                show(original, line)
            )
        });
    assert!(
        difference.is_none(),
        "{name}: the capture differs at {}",
        difference.unwrap_or_default()
    );
    assert_eq!(
        captured.lines().count(),
        original.lines().count(),
        "{name}: one view is longer"
    );
}

/// Runs the capture script on `root`; the captured tree is `scratch/name`.
fn capture(root: &Path, scratch: &Path, name: &str) -> PathBuf {
    let out = scratch.join(name);
    let status = Command::new("bash")
        .arg(workspace().join("scripts/capture-fixture.sh"))
        .arg("--root")
        .arg(root)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

#[test]
fn capturing_a_fixture_changes_nothing_the_backends_see_runs_capture_script() {
    let script = workspace().join("scripts/capture-fixture.sh");
    for name in hal_mock::FIXTURES {
        let fixture = hal_mock::by_name(name).unwrap().materialize().unwrap();
        let scratch = hal_mock::scratch_dir("capture-").unwrap();
        let out = capture(fixture.root(), scratch.path(), name);
        assert_eq!(view(&out), view(fixture.root()), "{name}");
        assert_same(&published(&out), &published(fixture.root()), name);
    }
    // A real capture, captured again.
    let dev_vm = workspace().join("testdata/captured/dev-vm");
    let scratch = hal_mock::scratch_dir("capture-").unwrap();
    let out = capture(&dev_vm, scratch.path(), "dev-vm");
    assert_eq!(view(&out), view(&dev_vm), "dev-vm");
    assert_same(&published(&out), &published(&dev_vm), "dev-vm");
    let refuse = Command::new("bash")
        .arg(&script)
        .arg(workspace().join("testdata"))
        .output()
        .unwrap();
    assert!(
        !refuse.status.success(),
        "an existing output directory is refused"
    );
}

/// Writes `text` (and a newline) at `root/relative`, creating its directory.
fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

/// A symlink at `root/relative` with the text `target`.
fn link(root: &Path, relative: &str, target: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// A virtual interface (`sys/devices/virtual/net/NAME`, up) with its class link.
fn virtual_netdev(root: &Path, name: &str, ifindex: u32) {
    let dir = format!("sys/devices/virtual/net/{name}");
    write(root, &format!("{dir}/ifindex"), &ifindex.to_string());
    write(root, &format!("{dir}/flags"), "0x1003");
    write(root, &format!("{dir}/operstate"), "up");
    write(root, &format!("{dir}/carrier"), "1");
    link(
        root,
        &format!("sys/class/net/{name}"),
        &format!("../../devices/virtual/net/{name}"),
    );
}

/// The xeon fixture as a node whose own network is on its ConnectX PF: the IPv4 default route on a
/// bridge `br0` whose port is the bond `bond0`, whose slave is `ens2f0np0`; the IPv6 default route
/// on the VLAN `bond0.7` above `bond0`. One VF's link is down (`ens1f0v3`: up, no carrier), one VF
/// is down administratively (`ens1f0v5`: its carrier unreadable, an empty file as captured).
/// Everything the guard and the health read must survive the capture.
#[test]
fn capturing_a_nodes_network_and_link_states_changes_nothing_published_runs_capture_script() {
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root();
    let header =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";
    write(
        root,
        "proc/net/route",
        &format!(
            "{header:<127}\n{:<127}\n{:<127}",
            "br0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0",
            "br0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
        ),
    );
    write(
        root,
        "proc/net/ipv6_route",
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
         fd000000000000000000000000000001 00000400 00000003 00000000 00000003  bond0.7",
    );
    write(
        root,
        "proc/net/if_inet6",
        "fd000000000000000000000000000002 0c 40 00 80  bond0.7",
    );
    virtual_netdev(root, "lo", 1);
    virtual_netdev(root, "br0", 40);
    virtual_netdev(root, "bond0", 41);
    virtual_netdev(root, "bond0.7", 42);
    let net = "sys/devices/virtual/net";
    link(root, &format!("{net}/br0/brif/bond0"), "../../bond0/brport");
    write(root, &format!("{net}/bond0/brport/state"), "3");
    write(root, &format!("{net}/bond0/bonding/slaves"), "ens2f0np0");
    let port = std::fs::read_link(root.join("sys/class/net/ens2f0np0")).unwrap();
    let port = port.to_str().unwrap().strip_prefix("../../").unwrap();
    link(
        root,
        &format!("{net}/bond0/lower_ens2f0np0"),
        &format!("../../../../{port}"),
    );
    link(root, &format!("{net}/bond0.7/lower_bond0"), "../bond0");
    let class = root.join("sys/class/net");
    std::fs::write(class.join("ens1f0v3/operstate"), "down\n").unwrap();
    std::fs::write(class.join("ens1f0v3/carrier"), "0\n").unwrap();
    std::fs::write(class.join("ens1f0v5/flags"), "0x1002\n").unwrap();
    std::fs::write(class.join("ens1f0v5/operstate"), "down\n").unwrap();
    std::fs::write(class.join("ens1f0v5/carrier"), "").unwrap();

    let before = published(root);
    // What this test is about is there to lose.
    let slices_start = before.find("\nslices ").unwrap();
    let (facts, slices) = before.split_at(slices_start);
    for expected in [
        r#"name: "ens1f0v3", admin_up: Some(true), operstate: Some("down"), carrier: Some(false)"#,
        r#"name: "ens1f0v5", admin_up: Some(false), operstate: Some("down"), carrier: None"#,
        r#""br0": DefaultRouteV4"#,
        r#""bond0": Below("br0")"#,
        r#""ens2f0np0": Below("bond0")"#,
        r#""bond0.7": DefaultRouteV6"#,
        "ens2f0np0 is a member or lower device of bond0",
        "link-down",
    ] {
        assert!(facts.contains(expected), "{expected}: {facts}");
    }
    assert!(!facts.contains("unread: [\""), "{facts}");
    assert!(slices.contains("\"rt-"), "rt devices: {slices}");
    assert!(slices.contains("ens1f0v3") && !slices.contains("\"ens2f0np0\""));

    let scratch = hal_mock::scratch_dir("capture-").unwrap();
    let out = capture(root, scratch.path(), "xeon-node");
    assert_same(&published(&out), &before, "xeon-node");
    assert_eq!(view(&out), view(root));
    // Links are copied as links: the bridge's port and the bond's lower device dangle as in the
    // node's tree (what they lead to is not read).
    assert_eq!(
        std::fs::read_link(out.join(format!("{net}/br0/brif/bond0"))).unwrap(),
        Path::new("../../bond0/brport")
    );
    assert!(out.join(format!("{net}/bond0.7/lower_bond0")).is_symlink());
}

/// A FIFO at `root/relative` (`mkfifo`: the capture script needs coreutils anyway).
fn fifo(root: &Path, relative: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A hostile tree: directories that lead out of the root (on the way to what is read, and inside a
/// pattern), FIFOs and a link to `/dev/zero` where files are read, and a route file longer than the
/// 16 MiB bound. The capture must finish, copy nothing from outside, and keep the lines in the bound.
#[test]
fn capture_reads_nothing_outside_the_root_and_never_blocks_runs_capture_script() {
    let scratch = hal_mock::scratch_dir("capture-").unwrap();
    let root = scratch.path().join("root");
    let outside = scratch.path().join("outside");
    write(&outside, "node0/cpulist", "SECRET");
    write(&outside, "core_id", "SECRET");
    write(&outside, "information", "SECRET");
    let outside = outside.to_str().unwrap();
    let cpu = "sys/devices/system/cpu";
    write(&root, &format!("{cpu}/online"), "0");
    write(
        &root,
        &format!("{cpu}/cpu0/regs/identification/midr_el1"),
        "0x410fd050",
    );
    fifo(&root, &format!("{cpu}/present"));
    link(&root, &format!("{cpu}/possible"), "/dev/zero");
    link(&root, &format!("{cpu}/cpu0/topology"), outside);
    link(&root, "sys/devices/system/node", outside);
    fifo(&root, "proc/cpuinfo");
    let gpus = "proc/driver/nvidia/gpus";
    fifo(&root, &format!("{gpus}/0000:01:00.0/information"));
    link(&root, &format!("{gpus}/0000:02:00.0"), outside);
    // 16 MiB + 5 lines of the kernel's 128-byte lines: 16 MiB ends a line, and all 131072 are kept.
    let line = |i: usize| format!("{:<127}\n", format!("eth{i}\t00000000\t00000000\t0001"));
    let route: String = (0..131_077).map(line).collect();
    std::fs::create_dir_all(root.join("proc/net")).unwrap();
    std::fs::write(root.join("proc/net/route"), &route).unwrap();
    link(&root, "proc/net/ipv6_route", "/dev/zero");

    let out = scratch.path().join("out");
    let mut child = Command::new("bash")
        .arg(workspace().join("scripts/capture-fixture.sh"))
        .arg("--root")
        .arg(&root)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the capture blocked (a FIFO or an endless file was read)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");

    // Nothing from outside: every file copied is a regular file of the root, none says SECRET.
    let mut files = vec![out.clone()];
    let mut copied = Vec::new();
    while let Some(path) = files.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                files.push(entry.path());
            } else if kind.is_file() {
                let relative = entry.path().strip_prefix(&out).unwrap().to_path_buf();
                let text = std::fs::read_to_string(entry.path()).unwrap();
                assert!(!text.contains("SECRET"), "{}", relative.display());
                copied.push(relative);
            }
        }
    }
    copied.sort();
    assert_eq!(
        copied,
        [
            "proc/net/route".to_owned(),
            format!("{cpu}/cpu0/regs/identification/midr_el1"),
            format!("{cpu}/online"),
        ]
        .map(PathBuf::from),
        "only the root's regular files are copied"
    );
    // Links are copied as links, not followed.
    for (relative, target) in [
        (format!("{cpu}/possible"), "/dev/zero"),
        ("proc/net/ipv6_route".to_owned(), "/dev/zero"),
    ] {
        assert_eq!(
            std::fs::read_link(out.join(relative)).unwrap(),
            Path::new(target)
        );
    }
    // The whole lines of the first 16 MiB, the last one included.
    let captured = std::fs::read_to_string(out.join("proc/net/route")).unwrap();
    assert_eq!(captured.len(), 16 * 1024 * 1024);
    assert_eq!(captured.lines().count(), 131_072);
    assert_eq!(captured, route[..16 * 1024 * 1024]);
}

/// Attributes are copied byte for byte up to 64 KiB and a byte: NUL bytes (a NUL-separated list, as
/// some kernels print), bytes that are not UTF-8, and multibyte characters counted as bytes.
#[test]
fn capture_copies_attributes_byte_for_byte_runs_capture_script() {
    let scratch = hal_mock::scratch_dir("capture-").unwrap();
    let root = scratch.path().join("root");
    let cpu = "sys/devices/system/cpu";
    let bound = 64 * 1024 + 1;
    let attributes: [(String, Vec<u8>); 5] = [
        (format!("{cpu}/online"), b"0-1\n\0".to_vec()),
        (format!("{cpu}/possible"), b"0\x001\0\xff\xfe\n".to_vec()),
        (format!("{cpu}/present"), vec![0; bound + 100]),
        (format!("{cpu}/offline"), "é".repeat(bound).into_bytes()),
        (format!("{cpu}/kernel_max"), vec![b'7'; bound + 1]),
    ];
    for (relative, bytes) in &attributes {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let out = capture(&root, scratch.path(), "out");
    for (relative, bytes) in &attributes {
        let copied = std::fs::read(out.join(relative)).unwrap();
        let kept = &bytes[..bytes.len().min(bound)];
        assert!(
            copied == kept,
            "{relative}: {} bytes of {}",
            copied.len(),
            kept.len()
        );
    }
}
