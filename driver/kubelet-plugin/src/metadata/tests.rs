use super::*;
use crate::files::Durability::{Synced, Unsynced};
use std::os::unix::fs::PermissionsExt;

fn claim(pod_claim_name: Option<&str>) -> ClaimIdentity {
    ClaimIdentity {
        namespace: "gpu-test1".into(),
        name: "pod0-gpu-2kqrd".into(),
        uid: "c7e7b22e-239b-4498-b27c-7f1344481e14".into(),
        pod_claim_name: pod_claim_name.map(Into::into),
    }
}

fn gpu() -> MetadataDevice {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "hal.dra.dev/uuid".to_string(),
        DeviceAttribute {
            string: Some("GPU-18db0e85".into()),
            ..DeviceAttribute::default()
        },
    );
    attributes.insert(
        "hal.dra.dev/numaNode".to_string(),
        DeviceAttribute {
            int: Some(1),
            ..DeviceAttribute::default()
        },
    );
    MetadataDevice {
        driver: "hal.dra.dev".into(),
        pool: "worker-0".into(),
        name: "gpu-0000-c1-00-0".into(),
        attributes,
        network_data: None,
    }
}

#[test]
fn paths_follow_the_protocol_for_claims_and_templates() {
    assert_eq!(
        container_path("hal.dra.dev", &claim(None), "gpu"),
        "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/pod0-gpu-2kqrd/gpu/hal.dra.dev-metadata.json"
    );
    // A claim made from a template is found under the pod's name for it, and a subrequest is
    // dropped from the path.
    assert_eq!(
        container_path("hal.dra.dev", &claim(Some("gpu")), "gpus/high-memory"),
        "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpu/gpus/hal.dra.dev-metadata.json"
    );
    let data = Path::new("/var/lib/kubelet/plugins/hal.dra.dev");
    assert_eq!(
        host_path(data, "uid-1", "gpus/high-memory").unwrap(),
        data.join("dra-device-metadata/uid-1/gpus/metadata.json")
    );
}

#[test]
fn hostile_names_never_leave_the_data_directory() {
    let data = Path::new("/data");
    for uid in ["", ".", "..", "a/../../etc", "x\0y"] {
        assert!(
            matches!(host_path(data, uid, "gpu"), Err(MetadataError::BadUid(_))),
            "{uid:?}"
        );
    }
    for request in ["", ".", "..", "/gpu"] {
        assert!(
            matches!(
                host_path(data, "uid", request),
                Err(MetadataError::BadRequest(_))
            ),
            "{request:?}"
        );
    }
}

#[test]
fn the_document_is_a_versioned_device_metadata_object() {
    let doc = document(&claim(Some("gpu")), 1, "gpu/high-memory", &[gpu()]);
    assert_eq!(doc["kind"], "DeviceMetadata");
    assert_eq!(doc["apiVersion"], "metadata.resource.k8s.io/v1alpha1");
    assert_eq!(doc["metadata"]["name"], "pod0-gpu-2kqrd");
    assert_eq!(doc["metadata"]["namespace"], "gpu-test1");
    assert_eq!(doc["metadata"]["generation"], 1);
    assert_eq!(doc["podClaimName"], "gpu");
    // The full request reference stays in the JSON.
    assert_eq!(doc["requests"][0]["name"], "gpu/high-memory");
    let device = &doc["requests"][0]["devices"][0];
    assert_eq!(device["driver"], "hal.dra.dev");
    assert_eq!(device["pool"], "worker-0");
    assert_eq!(
        device["attributes"]["hal.dra.dev/uuid"]["string"],
        "GPU-18db0e85"
    );
    assert_eq!(device["attributes"]["hal.dra.dev/numaNode"]["int"], 1);
    assert!(device.get("networkData").is_none());
    assert!(
        document(&claim(None), 1, "gpu", &[])
            .get("podClaimName")
            .is_none()
    );
}

#[test]
fn a_rewrite_raises_the_generation_and_the_file_is_readable_by_any_user() {
    let dir = tempfile::tempdir().unwrap();
    let c = claim(None);
    let mount = write_request(dir.path(), "hal.dra.dev", &c, "gpu", &[gpu()], Synced).unwrap();
    assert_eq!(mount.options, ["ro", "bind"]);
    assert_eq!(
        mount.container_path,
        container_path("hal.dra.dev", &c, "gpu")
    );
    let path = PathBuf::from(&mount.host_path);
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    assert_eq!(read(&path)["metadata"]["generation"], 1);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let mut second = gpu();
    second.network_data = Some(NetworkDeviceData {
        interface_name: Some("net1".into()),
        ips: Some(vec!["192.0.2.10/24".into()]),
        hardware_address: None,
    });
    write_request(dir.path(), "hal.dra.dev", &c, "gpu", &[second], Unsynced).unwrap();
    let doc = read(&path);
    assert_eq!(doc["metadata"]["generation"], 2);
    assert_eq!(
        doc["requests"][0]["devices"][0]["networkData"]["interfaceName"],
        "net1"
    );
    remove_claim(dir.path(), &c.uid).unwrap();
    assert!(!path.exists());
    // Removing what is not there is not an error.
    remove_claim(dir.path(), &c.uid).unwrap();
}

#[test]
fn a_full_disk_is_reported_with_its_kind_and_path() {
    // A file where the directory should be: the write fails, naming the path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(HOST_SUBDIR), b"not a directory").unwrap();
    let error = write_request(
        dir.path(),
        "hal.dra.dev",
        &claim(None),
        "gpu",
        &[gpu()],
        Synced,
    )
    .unwrap_err();
    assert!(error.io_kind().is_some(), "{error}");
    assert!(error.to_string().contains(HOST_SUBDIR), "{error}");
}

#[test]
fn a_fifo_where_the_metadata_file_was_is_replaced_without_waiting_for_a_writer() {
    // Reading the previous generation opened the path blocking: a FIFO there held the prepare.
    let dir = tempfile::tempdir().unwrap();
    let c = claim(None);
    let path = host_path(dir.path(), &c.uid, "gpu").unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    let data_dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = done.send(write_request(
            &data_dir,
            "hal.dra.dev",
            &c,
            "gpu",
            &[gpu()],
            Unsynced,
        ));
    });
    let written = wait
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("write_request waited on the FIFO");
    let mount = written.unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mount.host_path).unwrap()).unwrap();
    assert_eq!(doc["metadata"]["generation"], 1);
    assert!(std::fs::metadata(&path).unwrap().is_file());
}
