//! A function bound to vfio-pci is reachable in the pod only through its IOMMU group, which the
//! kernel opens only when every function of the group is on vfio-pci (or a driver that leaves DMA to
//! it) or has none: a group shared with a function on a host driver is refused before anything
//! changes.

use super::*;

/// Puts `peer` in the IOMMU group of `function` (a platform without ACS between them).
fn same_group(s: &Setup, function: &str, peer: &str) {
    let mut inventory = s.inventory.write().unwrap();
    let group = inventory
        .function(hal::PciAddress::parse(function).unwrap())
        .unwrap()
        .iommu_group;
    let peer = hal::PciAddress::parse(peer).unwrap();
    let entry = inventory.machine.pci.iter_mut().find(|f| f.address == peer);
    entry.unwrap().iommu_group = group;
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
async fn vfio_is_allowed_beside_functions_without_a_driver_or_on_a_port_driver() {
    let s = Setup::on("xeon");
    for (peer, driver) in [("0000:3b:01.2", None), ("0000:3b:01.3", Some("pcieport"))] {
        same_group(&s, "0000:3b:01.1", peer);
        let address = hal::PciAddress::parse(peer).unwrap();
        let mut inventory = s.inventory.write().unwrap();
        let entry = inventory
            .machine
            .pci
            .iter_mut()
            .find(|f| f.address == address);
        entry.unwrap().driver = driver.map(str::to_owned);
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
