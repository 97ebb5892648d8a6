//! Device metadata (`--device-metadata`, KEP-5304): each request's file, its mount device in the
//! claim's spec, its ID in the answer, its removal; and a real container reading it (podman).

use super::*;

fn metadata_preparer(s: &Setup, data_dir: &Path) -> Preparer {
    s.preparer("boot-1").with_device_metadata(data_dir)
}

/// The files of a claim with no record (forgotten at start after a reboot, its pod gone, so the
/// kubelet never unprepares it) are removed when metadata is turned on at start; a recorded claim's
/// stay, and names that cannot be a claim UID are left alone.
#[tokio::test]
async fn metadata_of_claims_with_no_record_is_removed_at_start() {
    let s = Setup::new();
    let data = s.dir.path().join("plugin");
    s.claims
        .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let preparer = metadata_preparer(&s, &data);
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    drop(preparer);
    let root = data.join("dra-device-metadata");
    std::fs::create_dir_all(root.join("forgotten/gpu")).unwrap();
    std::fs::write(root.join("forgotten/gpu/metadata.json"), "{}").unwrap();
    std::fs::write(root.join(".not-a-claim"), "").unwrap();
    let _restarted = metadata_preparer(&s, &data);
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".not-a-claim", "u1"]);
    assert!(root.join("u1/gpu/metadata.json").exists());
}

#[tokio::test]
async fn each_request_gets_its_metadata_file_and_mount_and_unprepare_removes_them() {
    let s = Setup::new();
    let data = s.dir.path().join("plugin");
    s.claims.add(
        "u1",
        &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        json!([]),
    );
    let preparer = metadata_preparer(&s, &data);
    let devices = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap();
    // Each device carries its own CDI device and its request's metadata device, and only that.
    assert_eq!(
        devices[0].cdi_device_ids,
        [
            "hal.dra.dev/device=u1-gpu-0008-06-00-0",
            "hal.dra.dev/device=u1-metadata-gpu"
        ]
    );
    assert_eq!(
        devices[1].cdi_device_ids,
        [
            "hal.dra.dev/device=u1-rdma-0101-00-00-0",
            "hal.dra.dev/device=u1-metadata-nic"
        ]
    );
    let spec = s.spec("u1");
    let mount_device = spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "u1-metadata-gpu")
        .expect("the gpu request's metadata device");
    let mount = &mount_device["containerEdits"]["mounts"][0];
    assert_eq!(
        mount["containerPath"],
        "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/claim-u1/gpu/hal.dra.dev-metadata.json"
    );
    assert_eq!(mount["options"], json!(["ro", "bind"]));
    let host = data.join("dra-device-metadata/u1/gpu/metadata.json");
    assert_eq!(mount["hostPath"], host.to_string_lossy().as_ref());
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&host).unwrap()).unwrap();
    assert_eq!(file["apiVersion"], "metadata.resource.k8s.io/v1alpha1");
    assert_eq!(file["metadata"]["name"], "claim-u1");
    assert_eq!(file["metadata"]["namespace"], "ns");
    let device = &file["requests"][0]["devices"][0];
    assert_eq!(device["name"], "gpu-0008-06-00-0");
    assert_eq!(device["pool"], NODE);
    // The attributes the slice publishes for that GPU.
    let published =
        crate::slices::devices::devices(&s.inventory.read().unwrap(), &SliceConfig::new(NODE))
            .into_iter()
            .find(|d| d.name == "gpu-0008-06-00-0")
            .unwrap();
    assert_eq!(
        device["attributes"],
        serde_json::to_value(published.attributes.unwrap()).unwrap()
    );
    assert!(
        device["attributes"]["uuid"]["string"].is_string(),
        "{device}"
    );
    let nic: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("dra-device-metadata/u1/nic/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        nic["requests"][0]["devices"][0]["name"],
        "rdma-0101-00-00-0"
    );

    preparer.unprepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap();
    assert!(!data.join("dra-device-metadata/u1").exists());
}

#[tokio::test]
async fn without_the_flag_no_metadata_is_written_and_a_lost_checkpoint_keeps_the_devices_apart() {
    let s = Setup::new();
    let data = s.dir.path().join("plugin");
    s.claims
        .add("u1", &[("gpu", "gpu-0009-06-00-0")], json!([]));
    let plain = s.preparer("boot-1").prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap();
    assert_eq!(plain[0].cdi_device_ids.len(), 1);
    assert!(!data.join("dra-device-metadata").exists());
    s.preparer("boot-1").unprepare(vec![reference("u1")]).await;

    // With metadata, then the checkpoint is lost: the claim is rebuilt from its spec, and the mount
    // device is not taken for an allocated device.
    let first = metadata_preparer(&s, &data)
        .prepare(vec![reference("u1")])
        .await["u1"]
        .clone()
        .unwrap();
    std::fs::remove_dir_all(s.checkpoint_path()).unwrap();
    let again = metadata_preparer(&s, &data)
        .prepare(vec![reference("u1")])
        .await["u1"]
        .clone()
        .unwrap();
    assert_eq!(again, first);
}

#[tokio::test]
async fn a_claim_with_metadata_files_is_prepared_afresh_after_a_reboot_which_rewrites_them() {
    let s = Setup::new();
    let data = s.dir.path().join("plugin");
    s.claims
        .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let first = metadata_preparer(&s, &data)
        .prepare(vec![reference("u1")])
        .await["u1"]
        .clone()
        .unwrap();
    let host = data.join("dra-device-metadata/u1/gpu/metadata.json");
    let record = s.checkpoint_path().join("u1.json");
    let undo_of = |path: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap();
        let body: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        body["undo"].clone()
    };
    assert!(
        undo_of(&record).get("metadata").is_some(),
        "{}",
        undo_of(&record)
    );

    // The files were written without fsync and a power loss took this one; the node reboots.
    std::fs::remove_file(&host).unwrap();
    std::fs::remove_dir_all(s.cdi_dir()).unwrap();
    let rebooted = s.preparer("boot-2").with_device_metadata(&data);
    assert!(
        !record.exists(),
        "forgotten at start: its files may be gone"
    );
    let again = rebooted.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap();
    assert_eq!(again, first);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&host).unwrap()).unwrap();
    assert_eq!(file["metadata"]["name"], "claim-u1");

    // A claim rebuilt from its spec (the checkpoint lost) is marked the same way.
    drop(rebooted);
    std::fs::remove_dir_all(s.checkpoint_path()).unwrap();
    let rebuilt = s.preparer("boot-2").with_device_metadata(&data);
    assert!(
        undo_of(&record).get("metadata").is_some(),
        "{}",
        undo_of(&record)
    );
    drop(rebuilt);

    // Rebooted again, and the claim deleted meanwhile: the files the forgotten claim left are
    // removed at start (the kubelet may never unprepare it), and its unprepare is done.
    let rebooted = s.preparer("boot-3").with_device_metadata(&data);
    assert!(!record.exists());
    assert!(!data.join("dra-device-metadata/u1").exists());
    rebooted.unprepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap();
}

/// A real container reads its request's metadata through the CDI mount: podman with runc, the CDI
/// ids Prepare returned for the `gpu` request only. Needs root, podman, runc and busybox-static.
#[tokio::test]
#[ignore = "needs root, podman, runc and busybox-static (run by .ci/run)"]
async fn podman_reads_the_device_metadata_of_its_request_needs_root() {
    assert!(rustix::process::geteuid().is_root(), "run as root");
    let _one_at_a_time = PODMAN.lock().await;
    let work = tempfile::tempdir().unwrap();
    let image = busybox_image(work.path());
    let s = Setup::on("gb300");
    let uid = format!("metadata-{}", std::process::id());
    s.claims.add(
        &uid,
        &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        json!([]),
    );
    let dev_root = work.path().join("host");
    let mut config = s.config("boot-1", SliceConfig::new(NODE));
    config.cdi = CdiDir::new("/var/run/cdi");
    config.dev_root = Some(dev_root);
    let data = work.path().join("plugin");
    let preparer = Preparer::new(config, s.claims.clone(), s.inventory.clone())
        .unwrap()
        .with_device_metadata(&data);
    let devices = preparer.prepare(vec![reference(&uid)]).await[&uid]
        .clone()
        .unwrap();
    make_stand_in_nodes(&uid);
    let mut args = PODMAN_RUN.to_vec();
    args.extend(["--user", "1000:1000"]);
    for id in &devices[0].cdi_device_ids {
        args.extend(["--device", id.as_str()]);
    }
    let dir = "/var/run/kubernetes.io/dra-device-attributes/resourceclaims";
    let script = format!(
        "cat {dir}/claim-{uid}/gpu/hal.dra.dev-metadata.json; ls {dir}/claim-{uid}; echo x > {dir}/claim-{uid}/gpu/hal.dra.dev-metadata.json && echo WRITABLE"
    );
    args.extend([image, "sh", "-c", &script]);
    let output = std::process::Command::new("podman")
        .args(&args)
        .output()
        .unwrap();
    preparer.unprepare(vec![reference(&uid)]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json_end = stdout.rfind('}').map_or(0, |i| i + 1);
    let metadata: serde_json::Value = serde_json::from_str(&stdout[..json_end])
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(metadata["kind"], "DeviceMetadata");
    assert_eq!(metadata["metadata"]["uid"], uid.as_str());
    let device = &metadata["requests"][0]["devices"][0];
    assert_eq!(device["name"], "gpu-0008-06-00-0");
    assert!(
        device["attributes"]["uuid"]["string"].is_string(),
        "{device}"
    );
    // Only the gpu request's directory is there (the container did not ask for the nic), and the
    // file is read-only.
    let rest = &stdout[json_end..];
    assert_eq!(rest.split_whitespace().next(), Some("gpu"), "{stdout}");
    assert!(!rest.contains("nic"), "{stdout}");
    assert!(!rest.contains("WRITABLE"), "{stdout}");
    assert!(!data.join(format!("dra-device-metadata/{uid}")).exists());
}
