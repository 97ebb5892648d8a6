//! A function bound to vfio-pci is reachable in the pod only through its IOMMU group, which the
//! kernel lets a container use only when every function of the group is on vfio-pci (or a driver
//! that leaves DMA to it) or has none, and only in one pod at a time: a group shared with a function
//! on a host driver, or with another claim's pod, is refused before anything changes.

use super::*;

/// Puts `peer` in the IOMMU group of `function` (a platform without ACS between them).
fn same_group(s: &Setup, function: &str, peer: &str) {
    set_driver_and_group(s, function, peer, None);
}

/// Puts `peer` in the IOMMU group of `function`, on `driver` when given (as the inventory says).
fn set_driver_and_group(s: &Setup, function: &str, peer: &str, driver: Option<Option<&str>>) {
    let mut inventory = s.inventory.write().unwrap();
    let group = inventory
        .function(hal::PciAddress::parse(function).unwrap())
        .unwrap()
        .iommu_group;
    let peer = hal::PciAddress::parse(peer).unwrap();
    let entry = inventory.machine.pci.iter_mut().find(|f| f.address == peer);
    let entry = entry.unwrap();
    entry.iommu_group = group;
    if let Some(driver) = driver {
        entry.driver = driver.map(str::to_owned);
    }
}

#[tokio::test]
async fn vfio_is_refused_when_the_group_has_a_function_on_a_host_driver() {
    let s = Setup::on("xeon");
    same_group(&s, "0000:3b:01.1", "0000:3b:01.2");
    assert_eq!(s.driver_of("0000:3b:01.2").as_deref(), Some("iavf"));
    s.claims.add(
        "alone",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("alone")]).await["alone"]
        .clone()
        .unwrap_err();
    assert!(
        error.contains("shares IOMMU group") && error.contains("0000:3b:01.2 (bound to iavf)"),
        "{error}"
    );
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("iavf"));
    assert!(preparer.recorded().await.is_empty());
    assert!(s.spec_files().is_empty());

    // A claim that binds both functions of the group makes it viable.
    let mut second = vf_config(Some("vfio-pci"), "net2");
    second[0]["requests"] = json!(["vf2"]);
    let mut configs = vf_config(Some("vfio-pci"), "net1");
    configs.as_array_mut().unwrap().push(second[0].clone());
    s.claims.add(
        "both",
        &[("vf", "nic-0000-3b-01-1"), ("vf2", "nic-0000-3b-01-2")],
        configs,
    );
    let results = preparer.prepare(vec![reference("both")]).await;
    assert!(results["both"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("vfio-pci"));
    assert_eq!(s.driver_of("0000:3b:01.2").as_deref(), Some("vfio-pci"));
}

#[tokio::test]
async fn vfio_is_allowed_beside_functions_without_a_driver_or_on_one_that_leaves_dma_to_vfio() {
    let s = Setup::on("xeon");
    let peers = [
        ("0000:3b:01.2", None),
        ("0000:3b:01.3", Some("pcieport")),
        ("0000:3b:01.4", Some("mlx5_vfio_pci")),
        ("0000:3b:01.5", Some("pci-stub")),
    ];
    for (peer, driver) in peers {
        set_driver_and_group(&s, "0000:3b:01.1", peer, Some(driver));
    }
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let results = s.preparer("boot-1").prepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("vfio-pci"));
}

/// The node's own NIC is withheld from the slices, but still in the group.
#[tokio::test]
async fn a_withheld_function_in_the_group_counts() {
    let s = Setup::on("xeon");
    same_group(&s, "0000:3b:01.1", "0000:3b:00.0");
    {
        let mut inventory = s.inventory.write().unwrap();
        let pf = hal::PciAddress::parse("0000:3b:00.0").unwrap();
        let at = inventory.pci.iter().position(|f| f.address == pf).unwrap();
        let function = inventory.machine.pci.remove(at);
        inventory.withheld.push(function);
    }
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let error = s.preparer("boot-1").prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(error.contains("0000:3b:00.0 (bound to ice)"), "{error}");
}

/// One open file holds a VFIO group: two claims' pods cannot both use it.
#[tokio::test]
async fn a_group_given_to_one_claim_is_refused_to_another() {
    let s = Setup::on("xeon");
    set_driver_and_group(&s, "0000:3b:01.1", "0000:3b:01.2", Some(Some("vfio-pci")));
    s.claims.add(
        "first",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    s.claims.add(
        "second",
        &[("vf", "nic-0000-3b-01-2")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    let first = preparer.prepare(vec![reference("first")]).await;
    assert!(first["first"].is_ok(), "{first:?}");
    let error = preparer.prepare(vec![reference("second")]).await["second"]
        .clone()
        .unwrap_err();
    assert!(
        error.contains("already given to claim first") && error.contains("/dev/vfio/"),
        "{error}"
    );
    // Once the first claim is unprepared its function is back on iavf: the group is not usable.
    preparer.unprepare(vec![reference("first")]).await;
    let error = preparer.prepare(vec![reference("second")]).await["second"]
        .clone()
        .unwrap_err();
    assert!(error.contains("0000:3b:01.1 (bound to iavf)"), "{error}");
}
