use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use backends::SysfsRoot;
use hal::PciAddress;

use super::*;
use driver::inventory::{FixtureVendors as _, Vendors};

/// The test pci.ids, so names do not depend on the host's database.
fn pci_ids() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pci.ids")
}

/// A fixture's inventory, read as `hal-probe --pci-ids testdata/pci.ids --fixture NAME` reads it.
fn fixture(name: &str) -> Inventory {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let root = SysfsRoot::new(machine.root());
    Inventory::from_machine(
        &root,
        Some(&pci_ids()),
        Vendors::for_root(&root, Some(name)),
    )
}

/// `hal-probe draw`'s configuration: the slice flags' defaults.
fn config(node: &str) -> SliceConfig {
    let mut config = SliceConfig::new(node);
    config.compat_domains = vec!["dra.net".into()];
    config
}

fn draw(inventory: &Inventory, name: &str, claims: Vec<Claim>) -> String {
    let options = Options {
        title: name.to_owned(),
        claims,
    };
    draw_svg(inventory, &config(name), &options)
}

fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split(' ').any(|w| w == class))
}

/// The `data-<key>` of the nearest enclosing group of `class`.
fn enclosing(node: roxmltree::Node<'_, '_>, class: &str, key: &str) -> Option<String> {
    node.ancestors()
        .skip(1)
        .find(|a| has_class(a, class))
        .and_then(|a| a.attribute(key).map(str::to_owned))
}

/// The `data-numa` and `data-root` of the groups around a device (`None` outside any).
type DrawnPlace = (Option<String>, Option<String>);

/// Every published device of a picture: name -> where each of its boxes is.
fn drawn_devices(svg: &str) -> BTreeMap<String, Vec<DrawnPlace>> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for node in doc.descendants().filter(|n| has_class(n, "device")) {
        let name = node.attribute("data-device").unwrap().to_owned();
        let place = (
            enclosing(node, "numa", "data-numa"),
            enclosing(node, "pcie-root", "data-root"),
        );
        out.entry(name).or_default().push(place);
    }
    out
}

/// Checks that every published device of `inventory` appears exactly once, under the NUMA node and
/// PCIe root the inventory gives it.
fn check_structure(inventory: &Inventory, config: &SliceConfig, svg: &str) {
    let drawn = drawn_devices(svg);
    let published = devices_with_sources(inventory, config);
    assert_eq!(
        drawn.len(),
        published.len(),
        "drawn {:?}",
        drawn.keys().collect::<Vec<_>>()
    );
    let numa_of = |n: Option<hal::NumaNode>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
    for (device, source) in &published {
        let places = drawn
            .get(&device.name)
            .unwrap_or_else(|| panic!("{} is not drawn", device.name));
        assert_eq!(
            places.len(),
            1,
            "{} drawn {} times",
            device.name,
            places.len()
        );
        let (numa, root) = &places[0];
        let address = match source {
            DeviceSource::Gpu(g) => Some(g.pci_address),
            DeviceSource::GpuPartition { pf, .. } => Some(pf.pci_address),
            DeviceSource::Nic { function, .. } => Some(function.address),
            _ => None,
        };
        match address {
            Some(address) => {
                let f = inventory.function(address).unwrap();
                assert_eq!(
                    numa.as_deref(),
                    Some(numa_of(f.numa_node).as_str()),
                    "{}",
                    device.name
                );
                let want = f
                    .pcie_root
                    .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
                assert_eq!(root.as_deref(), Some(want.as_str()), "{}", device.name);
            }
            None => {
                // CPU groups sit in their NUMA node's box, outside any PCIe root.
                assert!(root.is_none(), "{}", device.name);
                if let Some(n) = device.name.strip_prefix("cpus-numa-") {
                    assert_eq!(numa.as_deref(), Some(n), "{}", device.name);
                }
            }
        }
    }
}

#[test]
fn every_fixture_draws_each_published_device_once_under_its_numa_node_and_root() {
    for name in hal_mock::FIXTURES {
        let inventory = fixture(name);
        let svg = draw(&inventory, name, Vec::new());
        check_structure(&inventory, &config(name), &svg);
        // PCIe roots where there are devices besides CPUs (not the CPU-only hybrid and epyc).
        let pci_devices =
            !inventory.gpus.is_empty() || inventory.pci.iter().any(|f| f.is_network());
        assert_eq!(svg.contains("class=\"pcie-root\""), pci_devices, "{name}");
        assert_eq!(
            pci_devices,
            matches!(name, "xeon" | "gb300" | "i915"),
            "{name}"
        );
    }
}

/// A VF whose NUMA node differs from its PF's (firmware said -1 for the PF, an administrator set
/// it; the VFs came later) is drawn under its PF, and the PF once.
#[test]
fn a_vf_on_another_numa_node_than_its_pf_is_drawn_under_it_and_the_pf_once() {
    let mut inventory = fixture("xeon");
    let vf: hal::PciAddress = "0000:b1:00.2".parse().unwrap();
    let function = inventory.pci.iter_mut().find(|f| f.address == vf).unwrap();
    assert_eq!(function.numa_node, Some(hal::NumaNode(1)));
    function.numa_node = Some(hal::NumaNode(0));
    let drawn = drawn_devices(&draw(&inventory, "xeon", Vec::new()));
    for name in ["nic-0000-b1-00-0", "nic-0000-b1-00-2"] {
        assert_eq!(drawn[name].len(), 1, "{name}: {:?}", drawn[name]);
        assert_eq!(drawn[name][0].0.as_deref(), Some("1"), "{name}");
    }
}

/// A hostile tree whose two functions name each other as their PF draws, without looping.
#[test]
fn functions_that_name_each_other_as_their_pf_do_not_loop() {
    let mut inventory = fixture("xeon");
    let (a, b): (hal::PciAddress, hal::PciAddress) = (
        "0000:3b:00.0".parse().unwrap(),
        "0000:b1:00.0".parse().unwrap(),
    );
    for function in inventory.pci.iter_mut() {
        if function.address == a {
            function.physfn = Some(b);
        } else if function.address == b {
            function.physfn = Some(a);
        }
    }
    let svg = draw(&inventory, "xeon", Vec::new());
    assert!(svg.contains("nic-0000-3b-01-0"), "the rest is drawn");
}

#[test]
fn every_fixture_matches_its_snapshot() {
    for name in hal_mock::FIXTURES {
        let svg = draw(&fixture(name), name, Vec::new());
        insta::assert_snapshot!(format!("draw-{name}"), svg);
    }
}

#[test]
fn cores_collapse_into_runs_and_packages_nest_numa_nodes_and_l3_groups() {
    let svg = draw(&fixture("xeon"), "xeon", Vec::new());
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let runs: Vec<(String, String, Option<String>)> = doc
        .descendants()
        .filter(|n| has_class(n, "cores"))
        .map(|n| {
            (
                n.attribute("data-cpus").unwrap().to_owned(),
                n.attribute("data-count").unwrap().to_owned(),
                enclosing(n, "package", "data-package"),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("0-55,112-167".into(), "56".into(), Some("0".into())),
            ("56-111,168-223".into(), "56".into(), Some("1".into())),
        ]
    );
    assert!(svg.contains("56 cores x 2 threads: cpus 0-55,112-167"));
    assert!(svg.contains("NUMA node 0 · 256.0 GiB"));
    // The E810's eight VFs are folded under their PF, the ConnectX's four listed.
    let vfs = doc.descendants().find(|n| has_class(n, "vfs")).unwrap();
    assert_eq!(
        enclosing(vfs, "device", "data-device").as_deref(),
        Some("nic-0000-3b-00-0")
    );
    assert_eq!(
        vfs.descendants().filter(|n| has_class(n, "device")).count(),
        8
    );
    // The hybrid machine's P-cores and E-cores are runs of their own.
    let hybrid = draw(&fixture("hybrid"), "hybrid", Vec::new());
    assert!(
        hybrid.contains("P-core") && hybrid.contains("E-core"),
        "{hybrid}"
    );
}

#[test]
fn labels_from_the_kernel_are_escaped() {
    let mut inventory = fixture("xeon");
    let hostile = "<script>alert('x')</script> & \"quoted\" \u{1}\u{7}";
    let nic = inventory
        .pci
        .iter_mut()
        .find(|f| f.address == PciAddress::parse("0000:3b:00.0").unwrap())
        .unwrap();
    nic.device_name = Some(hostile.to_owned());
    nic.netdevs = vec!["a<b>&\"".to_owned()];
    let svg = draw(&inventory, "node</svg>&", Vec::new());
    assert!(!svg.contains("<script>") && !svg.contains("</svg>&"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    let all = texts.concat();
    assert!(
        all.contains("<script>alert('x')</script> & \"quoted\" \u{fffd}\u{fffd}"),
        "{all}"
    );
    assert!(all.contains("a<b>&\""), "{all}");
    assert!(all.contains("hal-probe draw: node</svg>&"), "{all}");
    check_structure(&inventory, &config("node"), &svg);
}

#[test]
fn long_labels_are_cut_and_kept_whole_in_the_tooltip() {
    let mut inventory = fixture("xeon");
    let long = "x".repeat(500);
    let ice = inventory
        .pci
        .iter_mut()
        .find(|f| f.address.to_string() == "0000:3b:00.0")
        .unwrap();
    ice.device_name = Some(long.clone());
    let svg = draw(&inventory, "xeon", Vec::new());
    let doc = roxmltree::Document::parse(&svg).unwrap();
    // `NIC · ` and the name, cut to the longest line.
    let cut = format!("NIC · {}…", "x".repeat(layout::MAX_LINE - 7));
    assert_eq!(cut.chars().count(), layout::MAX_LINE);
    assert!(
        doc.descendants().any(|n| n.text() == Some(cut.as_str())),
        "{svg}"
    );
    assert!(
        doc.descendants()
            .any(|n| n.has_tag_name("title") && n.text().is_some_and(|t| t.contains(&long)))
    );
}

#[test]
fn an_empty_inventory_still_draws() {
    let svg = draw(&Inventory::default(), "empty", Vec::new());
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(doc.descendants().any(|n| has_class(&n, "legend")));
    assert!(!doc.descendants().any(|n| has_class(&n, "device")));
}

#[test]
fn explain_highlights_the_devices_of_each_claim_with_the_numa_verdict_in_the_legend() {
    let inventory = fixture("gb300");
    let config = config("gb300");
    let slices = driver::slices::build_slices(&inventory, &config, 0);
    let request = crate::explain::Request {
        claims: vec![
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deployments/examples/gb300-templates.yaml"),
        ],
        classes: Vec::new(),
        slices: Vec::new(),
        allocated: Vec::new(),
        node: Some("gb300".into()),
        node_labels: Default::default(),
        no_builtin_classes: false,
        driver_name: config.driver_name.clone(),
        step_limit: None,
        version: allocator::KubernetesVersion::NEWEST,
        gates: allocator::FeatureGates::defaults(allocator::KubernetesVersion::NEWEST),
    };
    let report = crate::explain::explain(&request, slices).unwrap();
    let claims: Vec<Claim> = report
        .claims
        .iter()
        .map(|o| Claim::from_outcome(o, &config.driver_name, "gb300"))
        .collect();
    assert_eq!(claims.len(), 3);
    let svg = draw(&inventory, "gb300", claims);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let highlighted: BTreeMap<&str, &str> = doc
        .descendants()
        .filter(|n| has_class(n, "highlight"))
        .map(|n| {
            (
                n.attribute("data-device").unwrap(),
                n.attribute("data-claims").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        highlighted,
        BTreeMap::from([
            ("gpu-0008-06-00-0", "0 1 2"),
            ("rdma-0101-00-00-0", "0 1"),
            ("rdma-0102-00-00-0", "1"),
            ("rdma-0103-00-00-0", "2"),
        ])
    );
    let legend: Vec<String> = doc
        .descendants()
        .filter(|n| has_class(n, "claim"))
        .map(|n| {
            n.descendants()
                .filter_map(|t| t.text())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert_eq!(legend.len(), 3);
    assert!(
        legend[0].contains("1nic-aligned: allocated")
            && legend[0].contains("aligned on NUMA node 0")
    );
    assert!(
        legend[2].contains("1nic-unaligned") && legend[2].contains("cross-NUMA"),
        "{}",
        legend[2]
    );
    // The structure is unchanged by highlighting.
    check_structure(&inventory, &config, &svg);
}

/// `docs/gb300.svg`, the README's picture, is what `hal-probe draw --fixture gb300 --pci-ids
/// testdata/pci.ids` writes today. `DRA_HAL_REGENERATE=1` rewrites it.
#[test]
fn the_readme_picture_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gb300.svg");
    let svg = draw(&fixture("gb300"), "gb300", Vec::new());
    if std::env::var_os("DRA_HAL_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(&path, &svg).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == svg,
        "{} is stale: regenerate it with DRA_HAL_REGENERATE=1 cargo test -p hal-probe --lib the_readme_picture",
        path.display()
    );
}

#[cfg(feature = "png")]
#[test]
fn png_has_the_pictures_size_and_more_than_the_background() {
    let svg = draw(&fixture("gb300"), "gb300", Vec::new());
    let png = svg_to_png(&svg).unwrap();
    let pixmap = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let width: u32 = doc
        .root_element()
        .attribute("width")
        .unwrap()
        .parse()
        .unwrap();
    let height: u32 = doc
        .root_element()
        .attribute("height")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((pixmap.width(), pixmap.height()), (width, height));
    let white = pixmap
        .pixels()
        .iter()
        .filter(|p| p.red() == 255 && p.green() == 255 && p.blue() == 255)
        .count();
    assert!(white < pixmap.pixels().len(), "all white");
    // Highlight colours and box fills are there: more than two distinct colours.
    let colours: std::collections::BTreeSet<(u8, u8, u8)> = pixmap
        .pixels()
        .iter()
        .map(|p| (p.red(), p.green(), p.blue()))
        .collect();
    assert!(colours.len() > 2, "{colours:?}");
}

#[cfg(feature = "png")]
#[test]
fn png_is_not_written_for_svg_that_is_not_one() {
    assert!(svg_to_png("<svg").is_err());
}

/// Debian's chromium opens the README's gb300 picture and takes a screenshot that is not blank.
#[cfg(feature = "png")]
#[test]
#[ignore = "needs Debian's chromium"]
fn chromium_renders_the_gb300_svg_needs_packages() {
    let svg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gb300.svg");
    let svg = svg.canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("gb300.png");
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,1000",
            &format!("file://{}", svg.display()),
        ])
        .output()
        .expect("run chromium (Debian package chromium)");
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&shot).unwrap();
    assert!(!bytes.is_empty());
    let pixmap = resvg::tiny_skia::Pixmap::decode_png(&bytes).unwrap();
    assert_eq!((pixmap.width(), pixmap.height()), (1000, 1000));
    let colours: std::collections::BTreeSet<(u8, u8, u8)> = pixmap
        .pixels()
        .iter()
        .map(|p| (p.red(), p.green(), p.blue()))
        .collect();
    assert!(colours.len() > 2, "a blank screenshot: {colours:?}");
}
