use hal::LinkLayer;

use super::*;
use crate::{SysfsRdma, SysfsRoot};

fn answers(name: &str) -> Vec<VerbsDevice> {
    serde_json::from_str(hal_mock::verbs_answers(name).unwrap()).unwrap()
}

fn devices(name: &str, api: FakeVerbs) -> Discovered<RdmaInfo> {
    let machine = hal_mock::by_name(name).unwrap().materialize().unwrap();
    let backend = VerbsRdma::new(
        SysfsRdma::new(SysfsRoot::new(machine.root())),
        Box::new(api),
    );
    backend.rdma_devices().unwrap()
}

#[test]
fn gb300_infiniband_ports_get_mtu_lid_and_gids_by_device_name() {
    let found = devices("gb300", FakeVerbs(Ok(answers("gb300"))));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    assert_eq!(found.items.len(), 4);
    for (i, device) in found.items.iter().enumerate() {
        assert_eq!(device.max_qp, Some(131_072));
        let port = &device.ports[0];
        assert_eq!(port.link_layer, Some(LinkLayer::Infiniband));
        assert_eq!(port.active_mtu, Some(4096));
        assert_eq!(port.lid, Some(0x21 + i as u16));
        // GID 0 is the link-local prefix and the port's GUID, which sysfs gives as the node GUID.
        let guid = device.node_guid.as_deref().unwrap();
        assert_eq!(port.gids[0].gid, format!("fe80:0000:0000:0000:{guid}"));
        // The sysfs view stays: rate, state, IB-only.
        assert_eq!(port.rate_mbps, Some(800_000));
        assert!(device.is_ib_only());
    }
}

#[test]
fn xeon_roce_functions_get_their_gid_tables() {
    let found = devices("xeon", FakeVerbs(Ok(answers("xeon"))));
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    let pf = found.items.iter().find(|d| d.name == "mlx5_0").unwrap();
    assert_eq!(pf.ports[0].lid, Some(0));
    assert_eq!(pf.ports[0].active_mtu, Some(1024));
    assert_eq!(pf.ports[0].gids.len(), 4);
    assert_eq!(
        pf.ports[0].gids[3].gid,
        "0000:0000:0000:0000:0000:ffff:c0a8:640a"
    );
    let vf = found.items.iter().find(|d| d.name == "mlx5_4").unwrap();
    assert_eq!(vf.ports[0].gids.len(), 2);
}

#[test]
fn names_match_exactly_never_by_prefix() {
    // mlx5_1's answers must not land on mlx5_10, nor mlx5_10's on mlx5_1.
    let mut answers = answers("gb300");
    answers.retain(|d| d.name == "mlx5_1");
    answers[0].name = "mlx5_10".into();
    let found = devices("gb300", FakeVerbs(Ok(answers)));
    assert!(found.items.iter().all(|d| d.max_qp.is_none()));
    let paths: Vec<_> = found.errors.iter().map(|e| e.path.as_str()).collect();
    // The four sysfs devices verbs does not list, then the one sysfs does not show.
    let expected = [
        "verbs/mlx5_0",
        "verbs/mlx5_1",
        "verbs/mlx5_2",
        "verbs/mlx5_3",
        "verbs/mlx5_10",
    ];
    assert_eq!(paths, expected);
    assert!(
        found.errors[1]
            .error
            .contains("libibverbs does not list mlx5_1")
    );
}

#[test]
fn an_empty_device_list_is_unavailable_verbs() {
    // In a container without /dev/infiniband, libibverbs lists nothing rather than failing.
    let found = devices("gb300", FakeVerbs(Ok(vec![])));
    assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    assert_eq!(found.errors[0].path, LIBRARY);
    assert!(found.errors[0].error.contains("lists no device"));
}

#[test]
fn unavailable_verbs_is_said_once_and_sysfs_goes_on() {
    let machine = hal_mock::by_name("gb300").unwrap().materialize().unwrap();
    let api = FakeVerbs(Err(
        "verbs unavailable: ibv_get_device_list: No such file".into()
    ));
    let backend = VerbsRdma::new(
        SysfsRdma::new(SysfsRoot::new(machine.root())),
        Box::new(api),
    );
    let first = backend.rdma_devices().unwrap();
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.errors.len(), 1);
    assert_eq!(first.errors[0].path, LIBRARY);
    assert!(
        first.errors[0]
            .error
            .ends_with("RDMA devices are described from sysfs alone")
    );
    assert!(
        backend.rdma_devices().unwrap().errors.is_empty(),
        "said once"
    );
}

#[test]
fn disagreements_unknown_ports_and_failed_devices_are_errors() {
    let mut answers = answers("gb300");
    answers[0].ports[0].link_layer = Some("Ethernet".into());
    answers[1].ports.push(VerbsPort {
        number: 2,
        lid: 7,
        ..VerbsPort::default()
    });
    answers[2] = VerbsDevice {
        name: "mlx5_2".into(),
        error: Some("ibv_open_device: Permission denied".into()),
        ..VerbsDevice::default()
    };
    let found = devices("gb300", FakeVerbs(Ok(answers)));
    let errors: Vec<_> = found
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(errors[0].0, "verbs/mlx5_0/1");
    assert!(
        errors[0]
            .1
            .contains("link layer: sysfs says Infiniband, verbs says Ethernet")
    );
    assert_eq!(errors[1].0, "verbs/mlx5_1/2");
    assert!(
        errors[1]
            .1
            .contains("port 2 of mlx5_1 that sysfs does not show")
    );
    assert_eq!(errors[2].0, "verbs/mlx5_2");
    assert!(errors[2].1.contains("Permission denied"));
    assert_eq!(found.items[1].ports.len(), 1, "no port is added");
    assert_eq!(found.items[2].max_qp, None);
    assert_eq!(found.items[2].ports[0].lid, None);
}

#[test]
fn mtus_and_gids_are_printed_as_the_kernel_does() {
    let mtus: Vec<_> = (0..=6).map(mtu_bytes).collect();
    assert_eq!(
        mtus,
        [
            None,
            Some(256),
            Some(512),
            Some(1024),
            Some(2048),
            Some(4096),
            None
        ]
    );
    let mut raw = [0u8; 16];
    raw[0] = 0xfe;
    raw[1] = 0x80;
    raw[15] = 0x01;
    assert_eq!(gid_text(&raw), "fe80:0000:0000:0000:0000:0000:0000:0001");
}

/// The real library, where the machine has one (CI installs libibverbs, with no RDMA device): it
/// lists devices sysfs shows in `/sys/class/infiniband` (none where that is absent; one without a
/// user-space provider is left out), or, where the kernel has no verbs interface
/// (`/sys/class/infiniband_verbs`), says so (ENOSYS); never panics.
#[cfg(feature = "verbs")]
#[test]
fn the_real_library_answers_or_says_why() {
    let entries = |dir: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let in_sysfs = entries("/sys/class/infiniband");
    match RealVerbs.query() {
        Ok(devices) => {
            let listed: std::collections::BTreeSet<String> =
                devices.into_iter().map(|d| d.name).collect();
            assert!(
                listed.is_subset(&in_sysfs),
                "libibverbs lists {listed:?}, /sys/class/infiniband has {in_sysfs:?}"
            );
        }
        Err(why) => {
            let enosys = std::io::Error::from_raw_os_error(38);
            assert_eq!(
                why,
                format!("verbs unavailable: ibv_get_device_list: {enosys}")
            );
            assert!(
                !std::path::Path::new("/sys/class/infiniband_verbs").exists(),
                "{why}, yet the kernel has a verbs interface"
            );
        }
    }
}
