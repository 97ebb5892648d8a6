//! `hal-probe draw` on every Linux dump of hwloc's test suite: each one renders, every online CPU is in
//! exactly one run of cores, every published device is drawn once, and the largest dumps render to PNG.
//!
//! Needs `../shared/corpora/hwloc-linux` and `tar`/`bzip2`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Instant;

use backends::SysfsRoot;
use driver::inventory::Inventory;
use driver::slices::SliceConfig;
use driver::slices::devices::devices_with_sources;
use hal::CpuSet;
use hal_probe::draw::{Options, draw_svg};
use stack_tests::hwloc;

fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split(' ').any(|w| w == class))
}

#[test]
#[ignore = "needs ../shared corpora"]
fn every_hwloc_dump_draws_needs_shared_corpora() {
    let scratch = hal_mock::scratch_dir("draw-corpus-").unwrap();
    let dumps = hwloc::dumps().unwrap();
    assert!(dumps.len() >= 30, "found {} dumps", dumps.len());
    let mut failures = Vec::new();
    // (CPUs, name, SVG) of the largest dumps.
    let mut sizes: Vec<(usize, String, String)> = Vec::new();
    for dump in &dumps {
        let root = dump.extract(scratch.path()).unwrap();
        let inventory = Inventory::from_sysfs(&SysfsRoot::new(&root), None);
        let config = SliceConfig::new("dump");
        let options = Options {
            title: dump.name.clone(),
            claims: Vec::new(),
        };
        let start = Instant::now();
        let svg = draw_svg(&inventory, &config, &options);
        let took = start.elapsed();
        let doc = match roxmltree::Document::parse(&svg) {
            Ok(doc) => doc,
            Err(e) => {
                failures.push(format!("{}: not XML: {e}", dump.name));
                continue;
            }
        };
        // Every online CPU in exactly one run of cores.
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        for runs in doc.descendants().filter(|n| has_class(n, "cores")) {
            let set = CpuSet::from_cpulist(runs.attribute("data-cpus").unwrap()).unwrap();
            for cpu in set.iter() {
                *seen.entry(cpu).or_default() += 1;
            }
        }
        let online = inventory
            .cpu
            .as_ref()
            .map(|c| c.online())
            .unwrap_or_default();
        let drawn: CpuSet = seen.keys().copied().collect();
        if drawn != online || seen.values().any(|n| *n != 1) {
            failures.push(format!(
                "{}: CPUs drawn {} (some twice: {}), online {}",
                dump.name,
                drawn.to_cpulist(),
                seen.values().any(|n| *n != 1),
                online.to_cpulist()
            ));
        }
        // Every published device once.
        let mut devices: BTreeMap<String, usize> = BTreeMap::new();
        for d in doc.descendants().filter(|n| has_class(n, "device")) {
            *devices
                .entry(d.attribute("data-device").unwrap().to_owned())
                .or_default() += 1;
        }
        for (device, _) in devices_with_sources(&inventory, &config) {
            if devices.get(&device.name) != Some(&1) {
                failures.push(format!(
                    "{}: {} drawn {:?} times",
                    dump.name,
                    device.name,
                    devices.get(&device.name)
                ));
            }
        }
        eprintln!(
            "{}: {} CPUs, {} bytes of SVG in {:.1} ms",
            dump.name,
            online.len(),
            svg.len(),
            took.as_secs_f64() * 1000.0
        );
        sizes.push((online.len(), dump.name.clone(), svg));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The three largest also become PNGs of their own size.
    sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (cpus, name, svg) in sizes.iter().take(3) {
        let start = Instant::now();
        let png = hal_probe::draw::svg_to_png(svg).unwrap();
        eprintln!(
            "{name}: {cpus} CPUs, PNG of {} bytes in {:.0} ms",
            png.len(),
            start.elapsed().as_secs_f64() * 1000.0
        );
        assert!(png.starts_with(b"\x89PNG"), "{name}");
    }
}
