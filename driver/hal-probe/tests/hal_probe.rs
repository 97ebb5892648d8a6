//! `hal-probe` end to end: the real binary on fixtures, on broken trees, and on this machine's `/sys`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

/// The test pci.ids, so names do not depend on the host's database.
const PCI_IDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/pci.ids");

fn hal_probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hal-probe"))
        .args(["--pci-ids", PCI_IDS])
        .args(args)
        .output()
        .expect("run hal-probe")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "hal-probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn json_contract_on_the_xeon_fixture() {
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&[
        "--fixture",
        "xeon",
        "--format",
        "json",
        "cpu",
    ])))
    .unwrap();
    let top: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["cpu", "errors"]);
    let cpus = json["cpu"]["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 224);
    // serde_json::Value sorts keys.
    let keys: Vec<&str> = cpus[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "cluster",
            "core",
            "core_type",
            "die",
            "id",
            "l3",
            "numa_node",
            "online",
            "package",
            "siblings"
        ]
    );
    let node_keys: Vec<&str> = json["cpu"]["numa_nodes"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(node_keys, ["cpus", "distances", "id", "memory_bytes"]);
    assert_eq!(cpus[0]["siblings"], "0,112");
    assert_eq!(cpus[200]["package"], 1);
    assert_eq!(cpus[200]["numa_node"], 1);
    let nodes = json["cpu"]["numa_nodes"].as_array().unwrap();
    assert_eq!(nodes[1]["cpus"], "56-111,168-223");
    assert_eq!(nodes[1]["distances"], serde_json::json!([21, 10]));
    assert_eq!(nodes[0]["memory_bytes"], 256u64 << 30);
    assert_eq!(json["errors"], serde_json::json!([]));
}

#[test]
fn json_snapshot_of_the_hybrid_fixture() {
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&[
        "--fixture",
        "hybrid",
        "--format",
        "json",
    ])))
    .unwrap();
    insta::assert_json_snapshot!("hybrid.json", json);
}

#[test]
fn table_snapshots_of_every_fixture() {
    for name in hal_mock::FIXTURES {
        let table = stdout(&hal_probe(&["--fixture", name]));
        insta::assert_snapshot!(format!("table-{name}"), table);
    }
}

#[test]
fn a_broken_file_is_listed_and_the_rest_is_reported() {
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root();
    let bad = root.join("sys/devices/system/cpu/cpu3/topology/core_id");
    fs::write(&bad, "three\n").unwrap();
    fs::remove_dir_all(root.join("sys/devices/system/node/node1")).unwrap();
    let output = hal_probe(&["--sysfs-root", root.to_str().unwrap(), "--format", "json"]);
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let errors = json["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["path"] == bad.to_str().unwrap()
            && e["error"].as_str().unwrap().contains("\"three\"")),
        "{errors:?}"
    );
    let cpus = json["cpu"]["cpus"].as_array().unwrap();
    assert_eq!(
        cpus.len(),
        224,
        "one bad file degrades one CPU's core id only"
    );
    assert_eq!(cpus[4]["core"], 4);
    assert_eq!(json["cpu"]["numa_nodes"].as_array().unwrap().len(), 1);
    assert_eq!(
        cpus[100]["numa_node"],
        Value::Null,
        "CPUs of the vanished node have no node"
    );
}

/// A hostile tree's names reach a terminal as text: an interface name with escape sequences (a
/// colour, a window title) is printed with them escaped.
#[test]
fn the_table_escapes_control_characters_of_hostile_names() {
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root();
    let net = fs::read_dir(root.join("sys/bus/pci/devices/0000:3b:00.0/net"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::rename(&net, net.with_file_name("eth\u{1b}]0;PWN\u{7}")).unwrap();
    let output = hal_probe(&["--sysfs-root", root.to_str().unwrap(), "pci"]);
    let text = stdout(&output);
    assert!(text.contains("[eth\\u001b]0;PWN\\u0007]"), "{text}");
    assert!(
        !text.bytes().any(|b| b < 0x20 && b != b'\n' && b != b'\t'),
        "{text:?}"
    );
}

/// Whether a terminal acts on `c`: control characters other than the table's own newlines, bidi
/// controls, line and paragraph separators.
fn acts_on_a_terminal(c: char) -> bool {
    hal::text::acts_on_terminal(c) && c != '\n'
}

/// Each string of a hostile tree goes into its table cell escaped: an interface name, an RDMA port's
/// state and rate, a GPU's product name cannot add a row (newline, carriage return) or reorder the
/// line (bidi controls), and a 60 KB product name is cut.
#[test]
fn the_table_escapes_each_hostile_value_so_none_forges_a_row_or_reorders_text() {
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root();
    let net = root.join("sys/bus/pci/devices/0000:3b:00.0/net");
    fs::rename(
        net.join("ens1f0"),
        net.join("x\n  0000:00:1f.0  8086:1234  network \u{202e}evil"),
    )
    .unwrap();
    let port = fs::canonicalize(root.join("sys/class/infiniband/mlx5_0/ports/1")).unwrap();
    fs::write(port.join("state"), "4: ACTIVE\r\n    port 9  FORGED\n").unwrap();
    fs::write(port.join("rate"), "100 Gb/sec\u{2067} (4X EDR)\t\n").unwrap();
    // Without NVML's model, the product name is the attribute's.
    let information = root.join("proc/driver/nvidia/gpus/0000:4b:00.0/information");
    let text = fs::read_to_string(&information).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("Model"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&information, text).unwrap();
    let product = format!("AMD\n  0000:00:1e.0 fake\u{202e}{}", "y".repeat(60_000));
    fs::write(
        root.join("sys/bus/pci/devices/0000:4b:00.0/product_name"),
        &product,
    )
    .unwrap();

    let output = hal_probe(&[
        "--sysfs-root",
        root.to_str().unwrap(),
        "pci",
        "rdma",
        "gpus",
        "topology",
    ]);
    let table = stdout(&output);
    assert!(
        table.contains("  [x\\u000a  0000:00:1f.0  8086:1234  network \\u202eevil]"),
        "{table}"
    );
    assert!(
        table.contains(": x\\u000a  0000:00:1f.0  8086:1234  network \\u202eevil 0000:3b:00.0\n"),
        "the topology's name, {table}"
    );
    assert!(
        table.contains(
            "    port 1  ACTIVE\\u000d\\u000a    port 9  FORGED LinkUp  Ethernet  100 Gb/sec\\u2067 (4X EDR)\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("  AMD\\u000a  0000:00:1e.0 fake\\u202eyyy"),
        "{table}"
    );
    for forged in ["  0000:00:1f.0", "  0000:00:1e.0", "    port 9"] {
        assert!(
            !table.lines().any(|l| l.starts_with(forged)),
            "{forged:?} forged a row: {table}"
        );
    }
    assert!(!table.contains(acts_on_a_terminal), "{table:?}");
    // The 60 KB name is cut to MAX_CELL_CHARS with a marker; the JSON keeps it whole.
    let gpu = table
        .lines()
        .find(|l| l.starts_with("  0000:4b:00.0  nvidia   /dev/nvidia0"))
        .unwrap();
    let start = gpu.find("  AMD").unwrap() + 2;
    let end = gpu.find('…').expect("the product name is cut") + '…'.len_utf8();
    let shown = &gpu[start..end];
    assert_eq!(shown.chars().count(), hal_probe::report::MAX_CELL_CHARS + 1);
    assert!(shown.ends_with("y…"), "{shown}");
    let json = stdout(&hal_probe(&[
        "--sysfs-root",
        root.to_str().unwrap(),
        "--format",
        "json",
        "gpus",
    ]));
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["gpus"][0]["product"], product.as_str());
}

/// A GPU model with C1 controls (`\u{9b}` is a CSI to xterm), DEL and a bidi control: the YAML of
/// `slices` escapes them and `explain --slices` reads it back (it failed on "unexpected character"),
/// and the JSON shows none raw.
#[test]
fn slices_escape_c1_del_and_bidi_and_explain_reads_them_back() {
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root();
    let model = "NVIDIA GB300\u{9b}31mC1RED\u{9b}0m \u{7f} \u{2028}\u{202e}evil";
    let information = root.join("proc/driver/nvidia/gpus/0000:4b:00.0/information");
    let text = fs::read_to_string(&information)
        .unwrap()
        .replace("NVIDIA H100 PCIe", model);
    fs::write(&information, text).unwrap();
    let root = root.to_str().unwrap();
    let yaml = stdout(&hal_probe(&[
        "--sysfs-root",
        root,
        "--node-name",
        "n1",
        "slices",
    ]));
    assert!(!yaml.contains(acts_on_a_terminal), "{yaml:?}");
    assert!(
        yaml.contains(r#"string: "NVIDIA GB300\u009b31mC1RED\u009b0m \u007f \u2028\u202eevil""#),
        "{yaml}"
    );
    let dir = tempfile::tempdir().unwrap();
    let slices = dir.path().join("s.yaml");
    fs::write(&slices, &yaml).unwrap();
    // A claim for the GPU of that model, by its name; the claim's name and a skipped document's
    // are the user's, unvalidated.
    let claim = dir.path().join("claim.yaml");
    fs::write(
        &claim,
        r#"apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: "c\u009b\u202e", namespace: ns}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: gpu.hal.dra.dev
        selectors:
        - cel: {expression: "device.attributes[\"hal.dra.dev\"].productName == \"NVIDIA GB300\u009b31mC1RED\u009b0m \u007f \u2028\u202eevil\""}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: "m\nhal-probe: forged\u202e"}
"#,
    )
    .unwrap();
    let explain = |format: &str| {
        hal_probe(&[
            "explain",
            "--format",
            format,
            "--slices",
            slices.to_str().unwrap(),
            claim.to_str().unwrap(),
        ])
    };
    let output = explain("table");
    let table = stdout(&output);
    assert!(
        table.starts_with("ResourceClaim ns/c\\u009b\\u202e: fits"),
        "{table}"
    );
    assert!(
        table.contains("gpu      hal.dra.dev  n1    gpu-0000-4b-00-0"),
        "{table}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("skipped (ConfigMap m\\u000ahal-probe: forged\\u202e)"),
        "{stderr}"
    );
    assert!(!stderr.contains(acts_on_a_terminal), "{stderr:?}");
    let json = stdout(&explain("json"));
    assert!(!json.contains(acts_on_a_terminal), "{json:?}");
    assert!(
        json.contains(r#""claim": "ResourceClaim ns/c\u009b\u202e""#),
        "{json}"
    );
    let json = stdout(&hal_probe(&[
        "--sysfs-root",
        root,
        "--format",
        "json",
        "slices",
    ]));
    assert!(!json.contains(acts_on_a_terminal), "{json:?}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json[0]["spec"]["devices"][0]["attributes"]["productName"]["string"],
        model
    );
    let report = stdout(&hal_probe(&[
        "--sysfs-root",
        root,
        "--format",
        "json",
        "gpus",
    ]));
    assert!(!report.contains(acts_on_a_terminal), "{report:?}");
}

#[test]
fn a_tree_from_another_machine_is_read_without_this_machines_vendor_libraries() {
    // A fixture written to disk is a capture: no boot id of this kernel, so NVML (whose answers
    // describe this host's GPUs) is not asked, and nothing says it is missing.
    let fixture = hal_mock::by_name("xeon").unwrap().materialize().unwrap();
    let root = fixture.root().to_str().unwrap().to_owned();
    let output = hal_probe(&["--sysfs-root", &root, "--format", "json", "gpus"]);
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(json["errors"], serde_json::json!([]), "no NVML entry");
    // The same machine as the embedded fixture, where recorded NVML answers fill in the architecture.
    let embedded = hal_probe(&["--fixture", "xeon", "--format", "json", "gpus"]);
    let embedded: Value = serde_json::from_str(&stdout(&embedded)).unwrap();
    assert_eq!(embedded["gpus"][0]["architecture"], "Hopper", "{embedded}");
    assert!(json["gpus"][0]["architecture"].is_null(), "{json}");
}

#[test]
fn bad_usage_and_bad_roots_fail_clearly() {
    let unknown = hal_probe(&["--fixture", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("unknown fixture \"nope\"") && stderr.contains("xeon"),
        "{stderr}"
    );

    let format = hal_probe(&["--format", "xml"]);
    assert_eq!(format.status.code(), Some(2));

    let empty = tempfile::tempdir().unwrap();
    let output = hal_probe(&["--sysfs-root", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no sys/ directory inside"),
        "says what is missing: {stderr}"
    );

    // A tree with sys/ but no CPU directory: the other families still report, the gap is listed.
    std::fs::create_dir_all(empty.path().join("sys/bus/pci/devices")).unwrap();
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&[
        "--sysfs-root",
        empty.path().to_str().unwrap(),
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(json["pci"], serde_json::json!([]));
    assert!(
        json["errors"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("sys/devices/system/cpu"),
        "{json}"
    );

    let help = stdout(&hal_probe(&["--help"]));
    assert!(
        help.contains("--sysfs-root") && help.contains("--fixture") && help.contains("Exit status"),
        "{help}"
    );

    // `slices` has no table: refused, not printed as YAML in silence.
    let table = hal_probe(&["--fixture", "xeon", "--format", "table", "slices"]);
    assert_eq!(table.status.code(), Some(2));
    assert!(table.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&table.stderr);
    assert!(
        stderr.contains("--format table: `slices` prints yaml (the default) or json"),
        "{stderr}"
    );
    // explain's --help shows the default of --max-steps.
    let help = stdout(&hal_probe(&["explain", "--help"]));
    assert!(
        help.contains(&format!("[default: {}]", allocator::DEFAULT_STEP_LIMIT)),
        "{help}"
    );
}

/// Flags the subcommand would not see are refused, not dropped; usage errors found after parsing
/// exit 2, as clap's own.
#[test]
fn slice_flags_before_a_subcommand_and_late_usage_errors_exit_2() {
    let claims = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deployments/examples/cpu-claims.yaml"
    );
    let early = hal_probe(&[
        "--cpu-mode",
        "individual",
        "explain",
        "--fixture",
        "xeon",
        claims,
    ]);
    assert_eq!(early.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(
        stderr.contains("--cpu-mode must come after `explain`"),
        "{stderr}"
    );
    let draw = hal_probe(&["--format", "json", "draw", "--fixture", "xeon"]);
    assert_eq!(draw.status.code(), Some(2));
    // Machine flags and --format (for explain) may come before it.
    let late = hal_probe(&["--fixture", "xeon", "--format", "json", "explain", claims]);
    assert!(late.stdout.starts_with(b"["), "{late:?}");
    for args in [
        &["--fixture", "xeon", "explain", "--sysfs-root", "/", claims][..],
        &["--fixture", "xeon", "cpu", "slices"],
        &[
            "explain",
            "--fixture",
            "xeon",
            "--kubernetes-version",
            "9.9",
            claims,
        ],
        &[
            "explain",
            "--fixture",
            "xeon",
            "--feature-gates",
            "Nope=true",
            claims,
        ],
    ] {
        assert_eq!(hal_probe(args).status.code(), Some(2), "{args:?}");
    }
}

/// `NODE_NAME=` (set, but empty) is no name: the fixture's name is the pool, as without it.
#[test]
fn an_empty_node_name_falls_back_to_the_fixtures() {
    let output = Command::new(env!("CARGO_BIN_EXE_hal-probe"))
        .args(["--fixture", "xeon", "--format", "json", "slices"])
        .env("NODE_NAME", "")
        .output()
        .expect("run hal-probe");
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json[0]["spec"]["nodeName"], "xeon", "{json}");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // `hal-probe | head`: the xeon JSON (about 77 KB) is more than a pipe holds, so the write meets
    // a closed pipe whether or not it started before the reader went away.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hal-probe"))
        .args(["--fixture", "xeon", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn probes_this_machines_real_sysfs() {
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&["--format", "json"]))).unwrap();
    let cpus = json["cpu"]["cpus"].as_array().unwrap();
    assert!(!cpus.is_empty());
    assert!(cpus.iter().any(|c| c["online"] == true));
    let table = stdout(&hal_probe(&[]));
    assert!(table.starts_with("cpus: "), "{table}");
}

#[test]
fn json_devices_and_topology_on_the_gb300_fixture() {
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&[
        "--fixture",
        "gb300",
        "--format",
        "json",
        "rdma",
        "gpus",
        "topology",
    ])))
    .unwrap();
    let top: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        ["errors", "gpus", "rdma", "topology"],
        "pci is read, not shown"
    );
    assert_eq!(json["errors"], serde_json::json!([]));

    let rdma = json["rdma"].as_array().unwrap();
    assert_eq!(rdma.len(), 4);
    let mlx5_1 = &rdma[1];
    assert_eq!(mlx5_1["name"], "mlx5_1");
    assert_eq!(mlx5_1["pci_address"], "0102:00:00.0");
    assert_eq!(mlx5_1["ib_only"], true);
    assert_eq!(mlx5_1["netdevs"], serde_json::json!([]));
    let paths: Vec<&str> = mlx5_1["char_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/dev/infiniband/uverbs1",
            "/dev/infiniband/umad1",
            "/dev/infiniband/issm1",
            "/dev/infiniband/rdma_cm"
        ]
    );
    assert_eq!(
        mlx5_1["char_devices"][0]["dev"],
        serde_json::json!([231, 193])
    );
    assert_eq!(mlx5_1["ports"][0]["rate_mbps"], 800_000);
    assert_eq!(mlx5_1["ports"][0]["link_layer"], "infiniband");

    let gpus = json["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    assert_eq!(gpus[2]["pci_address"], "0018:06:00.0");
    assert_eq!(gpus[2]["nvidia_minor"], 2);
    assert_eq!(gpus[2]["product"], "NVIDIA GB300");
    assert_eq!(gpus[2]["vendor"], "nvidia");

    let topology = &json["topology"];
    let labels: Vec<&str> = topology["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "GPU0", "GPU1", "GPU2", "GPU3", "NIC0", "NIC1", "NIC2", "NIC3"
        ]
    );
    assert_eq!(topology["devices"][4]["name"], "mlx5_0");
    assert_eq!(topology["devices"][4]["pcie_root"], "pci0101:00");
    assert_eq!(
        topology["links"][0],
        serde_json::json!(["X", "NODE", "SYS", "SYS", "NODE", "NODE", "SYS", "SYS"])
    );
    assert_eq!(
        topology["links"][3],
        serde_json::json!(["SYS", "SYS", "NODE", "X", "SYS", "SYS", "NODE", "NODE"])
    );
}

#[test]
fn slices_snapshots_of_every_fixture() {
    for name in hal_mock::FIXTURES {
        let yaml = stdout(&hal_probe(&[
            "--fixture",
            name,
            "--node-name",
            "node-1",
            "slices",
        ]));
        assert!(
            yaml.starts_with("---\napiVersion: \"resource.k8s.io/v1\"\nkind: \"ResourceSlice\"\n"),
            "{yaml}"
        );
        insta::assert_snapshot!(format!("slices-{name}"), yaml);
    }
    let json: Value = serde_json::from_str(&stdout(&hal_probe(&[
        "--fixture",
        "gb300",
        "--format",
        "json",
        "--cpu-mode",
        "individual",
        "--reserved-cpus",
        "0-1",
        "--publish",
        "cpus",
        "slices",
    ])))
    .unwrap();
    let devices = json[0]["spec"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 126);
    assert_eq!(devices[0]["name"], "cpu-2");
    let bad = hal_probe(&["--fixture", "gb300", "--driver-name", "Bad Name", "slices"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("driver name \"Bad Name\""));
    let mixed = hal_probe(&["--fixture", "gb300", "slices", "cpu"]);
    assert_eq!(mixed.status.code(), Some(2), "bad usage");
}

#[test]
fn slices_leave_out_the_management_interface_as_the_plugin_does() {
    // The captured VM's eth0 (0000:00:03.0) carries its default route (proc/net/route): the plugin
    // never publishes it, and `hal-probe slices` shows what the plugin would publish.
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/captured/dev-vm"
    );
    let output = hal_probe(&["--sysfs-root", root, "--format", "json", "slices"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "0000:00:03.0 not published: eth0 carries the IPv4 default route (the node's own network)"
        ),
        "{stderr}"
    );
    let text = stdout(&output);
    assert!(!text.contains("0000:00:03.0"), "{text}");
    // The PCI report still lists it: only publication is withheld.
    let pci = hal_probe(&["--sysfs-root", root, "--format", "json", "pci"]);
    assert!(stdout(&pci).contains("0000:00:03.0"));
}
