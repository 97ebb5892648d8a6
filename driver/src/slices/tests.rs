use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};

use super::names::*;
use super::*;
use crate::publish::kube_version;
use dra_kubelet_plugin::slices::KubeVersion;
use dra_kubelet_plugin::slices::{MAX_DEVICES_PER_SLICE_ADVANCED, slice_name, validate_pool};

const PCI_IDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/pci.ids");

fn inventory(name: &str) -> Inventory {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let root = backends::SysfsRoot::new(machine.root());
    Inventory::from_sysfs(&root, Some(std::path::Path::new(PCI_IDS)))
}

fn by_name(slices: &[ResourceSlice]) -> BTreeMap<String, Device> {
    slices
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .map(|d| (d.name.clone(), d))
        .collect()
}

fn attr<'a>(device: &'a Device, name: &str) -> Option<&'a DeviceAttribute> {
    device.attributes.as_ref()?.get(name)
}

fn int(device: &Device, name: &str) -> Option<i64> {
    attr(device, name)?.int
}

fn string<'a>(device: &'a Device, name: &str) -> Option<&'a str> {
    attr(device, name)?.string.as_deref()
}

#[test]
fn gb300_publishes_gpus_ib_only_nics_and_numa_groups_aligned_by_numa() {
    let config = SliceConfig::new("gb300-node");
    let slices = build_slices(&inventory("gb300"), &config, 1);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    assert_eq!(slices.len(), 1);
    let devices = by_name(&slices);
    let names: Vec<&String> = devices.keys().collect();
    assert_eq!(
        names,
        [
            "cpus-numa-0",
            "cpus-numa-1",
            "gpu-0008-06-00-0",
            "gpu-0009-06-00-0",
            "gpu-0018-06-00-0",
            "gpu-0019-06-00-0",
            "rdma-0101-00-00-0",
            "rdma-0102-00-00-0",
            "rdma-0103-00-00-0",
            "rdma-0104-00-00-0",
        ]
    );
    let gpu0 = &devices["gpu-0008-06-00-0"];
    assert_eq!(
        string(gpu0, "resource.kubernetes.io/pciBusID"),
        Some("0008:06:00.0")
    );
    assert_eq!(
        string(gpu0, "resource.kubernetes.io/pcieRoot"),
        Some("pci0008:00")
    );
    assert_eq!(
        string(gpu0, "uuid"),
        Some("GPU-3b1f0a52-7c44-4e1d-9a2b-6f0e8d7c0000")
    );
    assert_eq!(int(gpu0, "numaNode"), Some(0));
    assert_eq!(int(gpu0, "dra.net/numaNode"), Some(0));

    // The seed's claims: GPU 0 with mlx5_0 (aligned), with both NUMA-0 RDMA NICs, and with mlx5_2
    // (unaligned). Each NIC carries its rdmaDevice, its NUMA node in both domains, and the pcieRoot
    // of its VMBUS path, which the live dranet slices could not publish.
    for (i, node) in [0, 0, 1, 1].into_iter().enumerate() {
        let nic = &devices[&format!("rdma-010{}-00-00-0", i + 1)];
        assert_eq!(
            string(nic, "rdmaDevice"),
            Some(format!("mlx5_{i}").as_str())
        );
        assert_eq!(attr(nic, "ibOnly").and_then(|a| a.bool), Some(true));
        assert_eq!(attr(nic, "rdma").and_then(|a| a.bool), Some(true));
        assert_eq!(int(nic, "numaNode"), Some(node));
        assert_eq!(int(nic, "dra.net/numaNode"), Some(node));
        assert_eq!(
            string(nic, "resource.kubernetes.io/pcieRoot"),
            Some(format!("pci010{}:00", i + 1).as_str())
        );
        assert_eq!(string(nic, "linkLayer"), Some("InfiniBand"));
        let bandwidth = &nic.capacity.as_ref().unwrap()["bandwidth"].value.0;
        assert_eq!(bandwidth, "800G");
    }
    let aligned: Vec<&str> = devices
        .values()
        .filter(|d| {
            string(d, "type") == Some("rdma") && int(d, "numaNode") == int(gpu0, "numaNode")
        })
        .filter_map(|d| string(d, "rdmaDevice"))
        .collect();
    assert_eq!(aligned, ["mlx5_0", "mlx5_1"]);

    let numa0 = &devices["cpus-numa-0"];
    assert_eq!(numa0.allow_multiple_allocations, Some(true));
    assert_eq!(numa0.capacity.as_ref().unwrap()["cpu"].value.0, "64");
    assert_eq!(int(numa0, "numaNode"), Some(0));
}

#[test]
fn xeon_vf_and_gpu_share_numa_node_and_pcie_root() {
    let slices = build_slices(&inventory("xeon"), &SliceConfig::new("xeon-node"), 0);
    assert_eq!(validate_pool(&slices, KubeVersion::V1_34), []);
    let devices = by_name(&slices);
    let gpu = &devices["gpu-0000-b3-00-0"];
    let vf = &devices["nic-0000-b1-00-2"];
    assert_eq!(attr(vf, "isSriovVf").and_then(|a| a.bool), Some(true));
    assert_eq!(string(vf, "parentPf"), Some("0000:b1:00.0"));
    assert_eq!(string(vf, "rdmaDevice"), Some("mlx5_1"));
    assert_eq!(string(vf, "ifName"), Some("ens2f0v0"));
    assert_eq!(int(vf, "vfIndex"), Some(0));
    for key in ["numaNode", "resource.kubernetes.io/pcieRoot"] {
        assert_eq!(attr(vf, key), attr(gpu, key), "{key}");
        assert!(attr(vf, key).is_some(), "{key}");
    }
    let pf = &devices["nic-0000-3b-00-0"];
    assert_eq!(attr(pf, "sriov").and_then(|a| a.bool), Some(true));
    assert_eq!(int(pf, "sriovVfs"), Some(128));
    assert_eq!(
        string(pf, "productName"),
        Some("Ethernet Controller E810-C for QSFP")
    );
    // 1 + 8 iavf VFs, 1 + 4 mlx5 VFs, 2 GPUs, 2 NUMA groups.
    assert_eq!(devices.len(), 9 + 5 + 2 + 2);
}

#[test]
fn individual_cpus_skip_reserved_and_split_into_slices_of_128() {
    let mut config = SliceConfig::new("xeon-node");
    config.cpu_mode = CpuMode::Individual;
    config.families.gpus = false;
    config.families.nics = false;
    config.reserved_cpus = hal::CpuSet::from_cpulist("0,112").unwrap();
    let slices = build_slices(&inventory("xeon"), &config, 7);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    assert_eq!(slices.len(), 2, "222 CPUs: 128 + 94");
    assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == 2
        && s.spec.pool.generation == 7
        && s.spec.node_name.as_deref() == Some("xeon-node")));
    let devices = by_name(&slices);
    assert_eq!(devices.len(), 222);
    assert!(!devices.contains_key("cpu-0") && !devices.contains_key("cpu-112"));
    let cpu1 = &devices["cpu-1"];
    assert_eq!(int(cpu1, "socket"), Some(0));
    assert_eq!(string(cpu1, "smtSiblings"), Some("1,113"));
    assert_eq!(string(cpu1, "coreType"), Some("standard"));
    let cpu200 = &devices["cpu-200"];
    assert_eq!(
        (int(cpu200, "socket"), int(cpu200, "numaNode")),
        (Some(1), Some(1))
    );
}

/// Individual CPUs publish the kernel's numbering as it is: a Raptor Lake's P-core ids step by 4 and
/// a core's threads are adjacent CPUs, its E-cores are ids 24-31; and a core whose other thread is
/// offline (the epyc's CPUs 62-63) is its online thread alone.
#[test]
fn individual_cpus_publish_the_kernels_core_ids_and_online_siblings() {
    let mut config = SliceConfig::new("n");
    config.cpu_mode = CpuMode::Individual;
    config.families.gpus = false;
    config.families.nics = false;
    let slices = build_slices(&inventory("hybrid"), &config, 0);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    let devices = by_name(&slices);
    let cpu = |n: u32| {
        let d = &devices[&format!("cpu-{n}")];
        (
            int(d, "coreId"),
            string(d, "smtSiblings"),
            string(d, "coreType"),
        )
    };
    assert_eq!(cpu(2), (Some(4), Some("2-3"), Some("performance")));
    assert_eq!(cpu(3), (Some(4), Some("2-3"), Some("performance")));
    assert_eq!(cpu(11), (Some(20), Some("10-11"), Some("performance")));
    assert_eq!(cpu(13), (Some(25), Some("13"), Some("efficiency")));
    let slices = build_slices(&inventory("epyc"), &config, 0);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    let epyc = by_name(&slices);
    assert_eq!(epyc.len(), 62);
    let cpu30 = &epyc["cpu-30"];
    assert_eq!(
        (int(cpu30, "coreId"), string(cpu30, "smtSiblings")),
        (Some(30), Some("30"))
    );
    assert_eq!(string(&epyc["cpu-29"], "smtSiblings"), Some("29,61"));
}

#[test]
fn families_can_be_turned_off_and_grouping_by_socket() {
    let mut config = SliceConfig::new("n");
    config.families.gpus = false;
    config.cpu_mode = CpuMode::GroupedBySocket;
    config.reserved_cpus = hal::CpuSet::from_cpulist("0-3").unwrap();
    let devices = by_name(&build_slices(&inventory("gb300"), &config, 0));
    assert!(devices.keys().all(|n| !n.starts_with("gpu-")));
    let socket0 = &devices["cpus-socket-0"];
    let cpu = &socket0.capacity.as_ref().unwrap()["cpu"];
    assert_eq!(cpu.value.0, "60");
    assert_eq!(int(socket0, "numCpus"), Some(60));
    // Whole CPUs: the scheduler rounds `1500m` up to 2; a claim that does not ask takes all.
    let policy = cpu.request_policy.as_ref().unwrap();
    let range = policy.valid_range.as_ref().unwrap();
    assert_eq!(
        (
            range.min.0.as_str(),
            range.step.as_ref().unwrap().0.as_str()
        ),
        ("1", "1")
    );
    // A default is required with a range: all of it, as a claim that does not ask takes.
    assert_eq!(policy.default.as_ref().unwrap().0, "60");
    assert_eq!(range.max, None);
}

#[test]
fn every_fixture_gives_a_valid_pool() {
    for name in hal_mock::FIXTURES {
        for mode in [
            CpuMode::Individual,
            CpuMode::GroupedByNuma,
            CpuMode::GroupedBySocket,
        ] {
            // Both layouts, each checked for its Kubernetes version (1.34, 1.35), with partitions.
            for layout in [CounterLayout::SameSlice, CounterLayout::OwnSlice] {
                let mut config = SliceConfig::new(name);
                config.cpu_mode = mode;
                config.counter_layout = layout;
                config.informational_taints = layout == CounterLayout::OwnSlice;
                config.gpu_partitions = 4;
                let slices = build_slices(&inventory(name), &config, 0);
                let version = kube_version(&config);
                assert_eq!(
                    validate_pool(&slices, version),
                    [],
                    "{name} {mode:?} {layout:?} {version}"
                );
            }
        }
    }
}

/// Quantities are published in the form the API server stores them in (apimachinery's canonical
/// form: the largest suffix that keeps the number whole, binary for binary input), so that a slice
/// read back after a restart equals the one built and is not written again; the value is the same.
#[test]
fn quantities_are_published_in_their_stored_form() {
    assert_eq!(megabits(25_000), "25G");
    assert_eq!(megabits(100_000), "100G");
    assert_eq!(megabits(2_500), "2500M");
    assert_eq!(mebibytes(16_384), "16Gi");
    assert_eq!(mebibytes(1_536), "1536Mi");
    assert_eq!(mebibytes(1_048_576), "1Ti");
    assert_eq!(millis(8_000), "8");
    assert_eq!(millis(7_600), "7600m");
    assert_eq!(millis(950), "950m");
    assert_eq!(whole(112), "112");
    assert_eq!(whole(1_000), "1k");
    assert_eq!(whole(1_024), "1024");
    assert_eq!(whole(2_000_000), "2M");
    assert_eq!(
        (megabits(0), mebibytes(0), millis(0), whole(0)),
        ("0".into(), "0".into(), "0".into(), "0".into())
    );
    let q = |text: &str| hal::quantity::Quantity::parse(text).unwrap();
    for n in [
        1,
        999,
        1000,
        1024,
        3000,
        25_000,
        16_384,
        400_000,
        1 << 20,
        10u64.pow(9),
    ] {
        assert_eq!(q(&megabits(n)), q(&format!("{n}M")), "{n}");
        assert_eq!(q(&mebibytes(n)), q(&format!("{n}Mi")), "{n}");
        assert_eq!(q(&millis(n)), q(&format!("{n}m")), "{n}");
        assert_eq!(q(&whole(n)), q(&n.to_string()), "{n}");
    }
}

#[test]
fn this_drivers_names_and_values() {
    assert_eq!(
        semver_from_dotted("580.105.08").as_deref(),
        Some("580.105.8")
    );
    assert_eq!(semver_from_dotted("13.0").as_deref(), Some("13.0.0"));
    assert_eq!(semver_from_dotted("10.3").as_deref(), Some("10.3.0"));
    assert_eq!(semver_from_dotted("1.2.3.4"), None);
    assert_eq!(semver_from_dotted("r580"), None);
    // 64 bytes cut on a character boundary: 'é' is 2 bytes.
    let long = format!("{}é", "a".repeat(63));
    assert_eq!(attribute_string(&long), "a".repeat(63));
    assert_eq!(
        address_label(hal::PciAddress::parse("10000:00:04.0").unwrap()),
        "10000-00-04-0"
    );
    assert_eq!(
        slice_name("node-1", DEFAULT_DRIVER_NAME, 0),
        "node-1-hal-dra-dev-0"
    );
}

#[test]
fn config_errors_name_the_field() {
    let mut config = SliceConfig::new("node-1");
    assert_eq!(config.validate(), Ok(()));
    config.driver_name = "Not A Domain".into();
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("driver name")
    );
    let mut config = SliceConfig::new("Node_1");
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node name")
    );
    config.node_name = "n".into();
    config.compat_domains = vec![
        "dra.net".into(),
        "x".into(),
        "y".into(),
        "z".into(),
        "w".into(),
    ];
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at most 4")
    );
}

#[test]
fn gpu_vendor_facts_become_version_attributes() {
    let mut gb300 = inventory("gb300");
    let gpu = &mut gb300.gpus[0];
    gpu.architecture = Some("Blackwell".into());
    gpu.compute_capability = Some("10.3".into());
    gpu.driver_version = Some("580.105.08".into());
    gpu.cuda_driver_version = Some("13.0".into());
    gpu.memory_bytes = Some(284_208 * 1024 * 1024);
    gb300.gpus[1].driver_version = Some("r580-beta".into());
    let slices = build_slices(&gb300, &SliceConfig::new("n"), 0);
    assert_eq!(validate_pool(&slices, KubeVersion::V1_34), []);
    let devices = by_name(&slices);
    let gpu0 = &devices["gpu-0008-06-00-0"];
    let version = |d: &Device, k: &str| attr(d, k).and_then(|a| a.version.clone());
    assert_eq!(
        version(gpu0, "cudaComputeCapability").as_deref(),
        Some("10.3.0")
    );
    assert_eq!(version(gpu0, "driverVersion").as_deref(), Some("580.105.8"));
    assert_eq!(
        version(gpu0, "cudaDriverVersion").as_deref(),
        Some("13.0.0")
    );
    assert_eq!(string(gpu0, "architecture"), Some("Blackwell"));
    assert_eq!(
        gpu0.capacity.as_ref().unwrap()["memory"].value.0,
        "284208Mi"
    );
    assert_eq!(
        attr(&devices["gpu-0009-06-00-0"], "driverVersion"),
        None,
        "not semver: left out"
    );
}

#[test]
fn nvlink_cliques_tiles_and_execution_units_are_attributes_where_known() {
    let mut gb300 = inventory("gb300");
    let clique = "3b1f0a52-7c44-4e1d-9a2b-6f0e8d7c0001.32766";
    gb300.gpus[0].nvlink_clique = Some(clique.into());
    let mut i915 = inventory("i915");
    for gpu in &mut i915.gpus {
        gpu.tiles = Some(1);
        gpu.execution_units = Some(512);
    }
    let gb300 = by_name(&build_slices(&gb300, &SliceConfig::new("n"), 0));
    assert_eq!(
        string(&gb300["gpu-0008-06-00-0"], "nvlinkClique"),
        Some(clique)
    );
    assert_eq!(string(&gb300["gpu-0009-06-00-0"], "nvlinkClique"), None);
    assert_eq!(int(&gb300["gpu-0008-06-00-0"], "tiles"), None);
    let slices = build_slices(&i915, &SliceConfig::new("n"), 0);
    assert_eq!(validate_pool(&slices, KubeVersion::V1_34), []);
    let i915 = by_name(&slices);
    assert_eq!(int(&i915["gpu-0000-4d-00-0"], "tiles"), Some(1));
    assert_eq!(int(&i915["gpu-0000-4d-00-0"], "executionUnits"), Some(512));
}

#[test]
fn intel_gpus_are_published_whole_and_as_partitions_sharing_counters() {
    let mut config = SliceConfig::new("i915-node");
    config.gpu_partitions = 4;
    let slices = build_slices(&inventory("i915"), &config, 1);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    let devices = by_name(&slices);
    let whole = &devices["gpu-0000-4d-00-0"];
    assert_eq!(int(whole, "partitions"), Some(4));
    let consumes = whole.consumes_counters.as_ref().unwrap();
    assert_eq!(consumes[0].counter_set, "gpu-0000-4d-00-0");
    assert_eq!(consumes[0].counters["vfs"].value.0, "4");
    assert_eq!(consumes[0].counters["memory"].value.0, "14248Mi");
    for index in 0..4 {
        let part = &devices[&format!("gpu-0000-4d-00-0-vf{index}")];
        assert_eq!(int(part, "partitionIndex"), Some(index));
        assert_eq!(string(part, "parentPciAddress"), Some("0000:4d:00.0"));
        assert_eq!(string(part, "type"), Some("gpu"));
        assert_eq!(int(part, "numaNode"), int(whole, "numaNode"));
        assert_eq!(
            string(part, "resource.kubernetes.io/pcieRoot"),
            string(whole, "resource.kubernetes.io/pcieRoot")
        );
        assert_eq!(
            string(part, "resource.kubernetes.io/pciBusID"),
            None,
            "a VF has its own address"
        );
        let c = &part.consumes_counters.as_ref().unwrap()[0];
        assert_eq!(
            (
                c.counters["vfs"].value.0.as_str(),
                c.counters["memory"].value.0.as_str()
            ),
            ("1", "3562Mi")
        );
        assert_eq!(part.capacity.as_ref().unwrap()["memory"].value.0, "3562Mi");
    }
    // Each GPU's counter set is in the slice of its devices (Kubernetes 1.34).
    for slice in &slices {
        let sets: Vec<&str> = slice
            .spec
            .shared_counters
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        for device in slice.spec.devices.iter().flatten() {
            for c in device.consumes_counters.iter().flatten() {
                assert!(
                    sets.contains(&c.counter_set.as_str()),
                    "{} without its set",
                    device.name
                );
            }
        }
    }
    // Off by default; the BMC's VGA never; nothing but Intel GPUs.
    let plain = by_name(&build_slices(&inventory("i915"), &SliceConfig::new("n"), 1));
    assert!(plain.values().all(|d| d.consumes_counters.is_none()));
    assert!(!plain.contains_key("gpu-0000-4d-00-0-vf0"));
    let mut gb300 = SliceConfig::new("n");
    gb300.gpu_partitions = 4;
    assert!(
        by_name(&build_slices(&inventory("gb300"), &gb300, 1))
            .values()
            .all(|d| d.consumes_counters.is_none())
    );
}

#[test]
fn counter_groups_are_never_split_across_slices() {
    let mut config = SliceConfig::new("i915-node");
    config.gpu_partitions = 31;
    config.cpu_mode = CpuMode::Individual;
    let slices = build_slices(&inventory("i915"), &config, 1);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    for slice in &slices {
        assert!(slice.spec.devices.as_ref().unwrap().len() <= MAX_DEVICES_PER_SLICE_ADVANCED);
    }
    let holding = |name: &str| {
        slices
            .iter()
            .position(|s| s.spec.devices.iter().flatten().any(|d| d.name == name))
            .unwrap()
    };
    assert_eq!(
        holding("gpu-0000-4d-00-0"),
        holding("gpu-0000-4d-00-0-vf30")
    );
}

#[test]
fn rt_bandwidth_is_a_shareable_device_per_cpu_group() {
    let mut config = SliceConfig::new("xeon-node");
    config.rt_bandwidth = true;
    let slices = build_slices(&inventory("xeon"), &config, 1);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    let devices = by_name(&slices);
    let rt = &devices["rt-numa-0"];
    assert_eq!(string(rt, "type"), Some("rt"));
    assert_eq!(int(rt, "numaNode"), Some(0));
    assert_eq!(string(rt, "perCpuRtBandwidth"), Some("950m"));
    assert_eq!(rt.allow_multiple_allocations, Some(true));
    // 112 CPUs at 95% each.
    assert_eq!(
        rt.capacity.as_ref().unwrap()["rtBandwidth"].value.0,
        "106400m"
    );
    assert!(devices.contains_key("rt-numa-1"));
    // Off by default; refused with individual CPUs.
    assert!(
        !by_name(&build_slices(&inventory("xeon"), &SliceConfig::new("n"), 1))
            .contains_key("rt-numa-0")
    );
    config.cpu_mode = CpuMode::Individual;
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--cpu-mode numa or socket")
    );
}

#[test]
fn kubernetes_1_35_layout_puts_counter_sets_in_slices_of_their_own() {
    let mut config = SliceConfig::new("i915-node");
    config.gpu_partitions = 4;
    config.counter_layout = CounterLayout::OwnSlice;
    let slices = build_slices(&inventory("i915"), &config, 1);
    assert_eq!(validate_pool(&slices, kube_version(&config)), []);
    let counters: Vec<&ResourceSlice> = slices
        .iter()
        .filter(|s| s.spec.shared_counters.is_some())
        .collect();
    assert_eq!(counters.len(), 1);
    assert!(
        counters[0].spec.devices.is_none(),
        "no devices beside the sets"
    );
    assert_eq!(
        counters[0].spec.shared_counters.as_ref().unwrap().len(),
        2,
        "one set per GPU"
    );
    assert!(
        slices
            .iter()
            .all(|s| s.spec.pool.resource_slice_count == slices.len() as i64)
    );
    let devices = by_name(&slices);
    assert!(devices["gpu-0000-4d-00-0-vf3"].consumes_counters.is_some());
    // The same slices in the 1.34 layout would be refused if mixed: sets and devices together.
    let mut mixed = slices.clone();
    mixed[0].spec.shared_counters = counters[0].spec.shared_counters.clone();
    let problems = validate_pool(&mixed, kube_version(&config));
    assert!(
        problems.iter().any(|p| p
            .to_string()
            .contains("sharedCounters and devices in one slice")),
        "{problems:?}"
    );
}

#[test]
fn no_counter_set_is_published_that_no_published_device_consumes() {
    for layout in [CounterLayout::SameSlice, CounterLayout::OwnSlice] {
        let mut config = SliceConfig::new("i915-node");
        config.gpu_partitions = 4;
        config.counter_layout = layout;
        config.families.gpus = false;
        let slices = build_slices(&inventory("i915"), &config, 1);
        assert!(
            slices.iter().all(|s| s.spec.shared_counters.is_none()),
            "{layout:?}: sets of GPUs not published"
        );
        assert!(
            slices
                .iter()
                .all(|s| s.spec.pool.resource_slice_count == slices.len() as i64)
        );
    }
}

#[test]
fn a_partitions_name_gives_its_gpu() {
    use crate::slices::partitions::partition_gpu;
    let gpu = hal::PciAddress::parse("0000:4d:00.0").unwrap();
    assert_eq!(partition_gpu("gpu-0000-4d-00-0-vf3"), Some(gpu));
    assert_eq!(partition_gpu("gpu-0000-4d-00-0-vf30"), Some(gpu));
    for other in [
        "gpu-0000-4d-00-0",
        "gpu-0000-4d-00-0-vf",
        "nic-0000-3b-01-1-vf2",
        "gpu-0000-4d-00-0-vfx",
        "gpu-4d-00-0-vf1",
    ] {
        assert_eq!(partition_gpu(other), None, "{other}");
    }
}
