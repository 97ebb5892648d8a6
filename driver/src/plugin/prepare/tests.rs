use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::resource::v1::ResourceClaim;
use serde_json::json;

use crate::plugin::api::BoxFuture;

use super::*;

const DRIVER: &str = "hal.dra.dev";
const NODE: &str = "node-1";

/// Claims held in memory, as the API server would return them, the device statuses written (also
/// in the claims' `status.devices`), how many of the next reads of a claim get no answer (a timeout;
/// by `namespace/name`), the names read (in order), and how many of the next status writes of a
/// claim fail (a 5xx; by `namespace/name`).
#[derive(Default)]
struct Claims(
    Mutex<BTreeMap<String, ResourceClaim>>,
    Mutex<BTreeMap<String, Vec<serde_json::Value>>>,
    Mutex<BTreeMap<String, usize>>,
    Mutex<Vec<String>>,
    Mutex<BTreeMap<String, usize>>,
);

impl Claims {
    fn add(&self, uid: &str, results: &[(&str, &str)], config: serde_json::Value) {
        let results: Vec<serde_json::Value> = results
            .iter()
            .map(|(request, device)| json!({"request": request, "driver": DRIVER, "pool": NODE, "device": device}))
            .collect();
        self.add_results(uid, results, config);
    }

    fn add_cpus(&self, uid: &str, device: &str, cpus: u32, config: serde_json::Value) {
        let share = format!("share-{uid}");
        let results = vec![
            json!({"request": "cpus", "driver": DRIVER, "pool": NODE, "device": device,
                                   "shareID": share, "consumedCapacity": {"cpu": cpus.to_string()}}),
        ];
        self.add_results(uid, results, config);
    }

    fn add_results(&self, uid: &str, results: Vec<serde_json::Value>, config: serde_json::Value) {
        let claim: ResourceClaim = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": format!("claim-{uid}"), "uid": uid},
            "spec": {"devices": {"requests": []}},
            "status": {"allocation": {"devices": {"results": results, "config": config}},
                       "reservedFor": [{"resource": "pods", "name": format!("pod-{uid}"), "uid": format!("pod-{uid}")}]}
        }))
        .unwrap();
        self.0
            .lock()
            .unwrap()
            .insert(format!("ns/claim-{uid}"), claim);
    }

    /// The claim `uid` is reserved for the pod `pod` too (a pod that came to share it).
    fn reserve_for(&self, uid: &str, pod: &str) {
        let mut claims = self.0.lock().unwrap();
        let claim = claims.get_mut(&format!("ns/claim-{uid}")).unwrap();
        let reserved = claim
            .status
            .as_mut()
            .unwrap()
            .reserved_for
            .get_or_insert_default();
        reserved.push(
            serde_json::from_value(json!({"resource": "pods", "name": pod, "uid": pod})).unwrap(),
        );
    }

    /// The pod `pod` is no longer among the claim `uid`'s reservations (it ended).
    fn unreserve(&self, uid: &str, pod: &str) {
        let mut claims = self.0.lock().unwrap();
        let claim = claims.get_mut(&format!("ns/claim-{uid}")).unwrap();
        let status = claim.status.as_mut().unwrap();
        if let Some(reserved) = status.reserved_for.as_mut() {
            reserved.retain(|r| r.uid != pod);
        }
    }

    fn remove(&self, uid: &str) {
        self.0.lock().unwrap().remove(&format!("ns/claim-{uid}"));
    }
}

impl ClaimSource for Claims {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, super::ClaimReadError>> {
        let key = format!("{namespace}/{name}");
        self.3.lock().unwrap().push(key.clone());
        let times_out = self.2.lock().unwrap().get_mut(&key).is_some_and(|n| {
            let left = n.checked_sub(1);
            *n = left.unwrap_or(0);
            left.is_some()
        });
        if times_out {
            let error = super::ClaimReadError::Timeout {
                claim: format!("{namespace}/{name}"),
                after: super::CALL_LIMIT,
            };
            return Box::pin(async move { Err(error) });
        }
        let found = self
            .0
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn set_device_status(
        &self,
        claim: &ClaimRef,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), super::StatusWriteError>> {
        assert_eq!(driver, DRIVER);
        let (namespace, name) = (&claim.namespace, &claim.name);
        // A claim named for it stands for a cluster whose RBAC lacks the status permissions.
        if name.ends_with("-forbidden") {
            let error = super::StatusWriteError::Forbidden(format!("{namespace}/{name}: 403"));
            return Box::pin(async move { Err(error) });
        }
        let key = format!("{namespace}/{name}");
        let fails = self.4.lock().unwrap().get_mut(&key).is_some_and(|n| {
            let left = n.checked_sub(1);
            *n = left.unwrap_or(0);
            left.is_some()
        });
        if fails {
            let error = super::StatusWriteError::Failed(format!("{key}: 503"));
            return Box::pin(async move { Err(error) });
        }
        // Server-side apply by one field manager: its list replaces its entries (the only ones);
        // bound to the claim's UID, as the API server's source writes it (another is a 422).
        if let Some(stored) = self.0.lock().unwrap().get_mut(&key) {
            if stored.metadata.uid.as_deref() != Some(claim.uid.as_str()) {
                let error = super::StatusWriteError::Replaced(format!("{key}: 422"));
                return Box::pin(async move { Err(error) });
            }
            let status = stored.status.get_or_insert_default();
            status.devices = Some(serde_json::from_value(json!(devices)).unwrap());
        }
        self.1.lock().unwrap().insert(key, devices);
        Box::pin(async { Ok(()) })
    }
}

fn reference(uid: &str) -> ClaimRef {
    ClaimRef {
        namespace: "ns".into(),
        uid: uid.into(),
        name: format!("claim-{uid}"),
    }
}

struct Setup {
    dir: tempfile::TempDir,
    claims: Arc<Claims>,
    inventory: Arc<RwLock<Inventory>>,
    machine: hal_mock::MaterializedFixture,
    binder: Arc<dyn hal::SriovPf>,
}

impl Setup {
    fn new() -> Setup {
        Setup::on("gb300")
    }

    fn on(name: &str) -> Setup {
        let fixture = hal_mock::by_name(name).unwrap();
        let machine = fixture.materialize().unwrap();
        let root = backends::SysfsRoot::new(machine.root());
        let inventory = Inventory::from_sysfs(&root, None);
        let kernel = Arc::new(fixture.kernel(machine.root()));
        Setup {
            dir: tempfile::tempdir().unwrap(),
            claims: Arc::new(Claims::default()),
            inventory: Arc::new(RwLock::new(inventory)),
            binder: Arc::new(backends::SysfsSriov::with_writer(root, kernel)),
            machine,
        }
    }

    /// The driver bound to `address` now, from the tree.
    fn driver_of(&self, address: &str) -> Option<String> {
        let link = self
            .machine
            .root()
            .join(format!("sys/bus/pci/devices/{address}/driver"));
        std::fs::canonicalize(link)
            .ok()?
            .file_name()?
            .to_str()
            .map(str::to_owned)
    }

    fn cdi_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cdi")
    }

    /// Reads the inventory from the tree again, as a plugin does at start (tests that restart the
    /// preparer after changing drivers behind its back, as a reboot does).
    fn reread_inventory(&self) {
        let root = backends::SysfsRoot::new(self.machine.root());
        *self.inventory.write().unwrap() = Inventory::from_sysfs(&root, None);
    }

    fn preparer(&self, boot_id: &str) -> Preparer {
        self.preparer_with(boot_id, SliceConfig::new(NODE))
    }

    fn preparer_with(&self, boot_id: &str, slices: SliceConfig) -> Preparer {
        let config = self.config(boot_id, slices);
        Preparer::new(config, self.claims.clone(), self.inventory.clone()).unwrap()
    }

    fn config(&self, boot_id: &str, slices: SliceConfig) -> PreparerConfig {
        PreparerConfig {
            slices,
            cdi: CdiDir::new(self.cdi_dir()),
            checkpoint: CheckpointFile::new(self.checkpoint_path()),
            boot_id: boot_id.into(),
            binder: self.binder.clone(),
            gpus: Arc::new(backends::SysfsGpu::new(backends::SysfsRoot::new(
                self.machine.root(),
            ))),
            dev_root: None,
            pod_networking: true,
        }
    }

    fn checkpoint_path(&self) -> std::path::PathBuf {
        self.dir.path().join("plugin/checkpoint")
    }

    fn spec_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cdi_dir())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn spec(&self, uid: &str) -> serde_json::Value {
        let path = self
            .cdi_dir()
            .join(format!("hal.dra.dev-device_{uid}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

fn node_paths(spec: &serde_json::Value, device: usize) -> Vec<String> {
    spec["devices"][device]["containerEdits"]["deviceNodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn prepares_a_gpu_and_an_ib_only_nic_with_exactly_their_nodes() {
    let s = Setup::new();
    s.claims.add(
        "u1",
        &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        json!([]),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("u1")]).await;
    let devices = results["u1"].as_ref().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].device_name, "gpu-0008-06-00-0");
    assert_eq!(devices[0].request_names, ["gpu"]);
    assert_eq!(devices[0].pool_name, NODE);
    assert_eq!(
        devices[1].cdi_device_ids,
        ["hal.dra.dev/device=u1-rdma-0101-00-00-0"]
    );
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_u1.json"]);
    let spec = s.spec("u1");
    assert_eq!(spec["kind"], "hal.dra.dev/device");
    assert_eq!(
        node_paths(&spec, 0),
        [
            "/dev/nvidia0",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools"
        ]
    );
    assert_eq!(
        node_paths(&spec, 1),
        [
            "/dev/infiniband/uverbs0",
            "/dev/infiniband/umad0",
            "/dev/infiniband/issm0",
            "/dev/infiniband/rdma_cm"
        ]
    );
    let uverbs = &spec["devices"][1]["containerEdits"]["deviceNodes"][0];
    assert_eq!(
        (
            uverbs["type"].as_str(),
            uverbs["major"].as_i64(),
            uverbs["minor"].as_i64()
        ),
        (Some("c"), Some(231), Some(192))
    );
    let env: Vec<&str> = spec["devices"][1]["containerEdits"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"DRA_HAL_RDMA_DEVICE=mlx5_0"), "{env:?}");
    assert!(
        env.contains(&"DRA_HAL_DEVICES=gpu-0008-06-00-0,rdma-0101-00-00-0"),
        "{env:?}"
    );
    assert_eq!(
        preparer.recorded().await,
        BTreeMap::from([("u1".to_owned(), Phase::Completed)])
    );

    let done = preparer
        .unprepare(vec![reference("u1"), reference("never-seen")])
        .await;
    assert_eq!(
        done,
        BTreeMap::from([("never-seen".to_owned(), Ok(())), ("u1".to_owned(), Ok(()))])
    );
    assert!(s.spec_files().is_empty());
    assert!(preparer.recorded().await.is_empty());
}

#[tokio::test]
async fn prepare_is_idempotent_and_rewrites_the_spec_after_a_reboot() {
    let s = Setup::new();
    s.claims
        .add("u1", &[("gpu", "gpu-0009-06-00-0")], json!([]));
    let first = s.preparer("boot-1").prepare(vec![reference("u1")]).await;
    // The node reboots: /var/run/cdi is a tmpfs, so the spec is gone; the kubelet prepares again.
    std::fs::remove_dir_all(s.cdi_dir()).unwrap();
    let after_reboot = s.preparer("boot-2");
    let again = after_reboot.prepare(vec![reference("u1")]).await;
    assert_eq!(first, again);
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_u1.json"]);
    let twice = after_reboot.prepare(vec![reference("u1")]).await;
    assert_eq!(first, twice);
}

#[tokio::test]
async fn one_bad_claim_gets_its_own_error_and_the_others_succeed() {
    let s = Setup::new();
    s.claims
        .add("good", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    s.claims
        .add("ghost-device", &[("gpu", "gpu-0fff-00-00-0")], json!([]));
    s.claims.add(
        "bad-config",
        &[("gpu", "gpu-0009-06-00-0")],
        json!([{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": {"apiVersion": "hal.dra.dev/v1alpha1", "kind": "DeviceConfig", "envv": {}}}}]),
    );
    let mut other_node = s.claims.0.lock().unwrap()["ns/claim-good"].clone();
    other_node.metadata.uid = Some("elsewhere".into());
    other_node.metadata.name = Some("claim-elsewhere".into());
    if let Some(results) = other_node
        .status
        .as_mut()
        .and_then(|st| st.allocation.as_mut())
        .and_then(|a| a.devices.as_mut())
        .and_then(|d| d.results.as_mut())
    {
        results[0].pool = "node-2".into();
    }
    s.claims
        .0
        .lock()
        .unwrap()
        .insert("ns/claim-elsewhere".into(), other_node);
    let preparer = s.preparer("boot-1");
    let empty = ClaimRef {
        namespace: "ns".into(),
        uid: String::new(),
        name: "x".into(),
    };
    let results = preparer
        .prepare(vec![
            reference("good"),
            reference("ghost-device"),
            reference("bad-config"),
            reference("elsewhere"),
            reference("missing"),
            empty,
        ])
        .await;
    assert!(results["good"].is_ok());
    let error = |uid: &str| results[uid].clone().unwrap_err();
    assert!(error("ghost-device").contains("gpu-0fff-00-00-0 is not published"));
    assert!(
        error("bad-config").contains("parameters.envv: unknown field `envv`"),
        "{}",
        error("bad-config")
    );
    assert!(error("elsewhere").contains("no device of driver hal.dra.dev in pool node-1"));
    assert!(error("missing").contains("ResourceClaim ns/claim-missing not found"));
    assert!(
        error("").starts_with("claim reference uid \"\""),
        "{}",
        error("")
    );
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_good.json"]);
    assert_eq!(
        preparer.recorded().await.len(),
        1,
        "failed claims leave nothing behind"
    );
}

#[tokio::test]
async fn a_device_is_never_given_to_two_claims() {
    let s = Setup::new();
    s.claims
        .add("a", &[("nic", "rdma-0102-00-00-0")], json!([]));
    s.claims
        .add("b", &[("nic", "rdma-0102-00-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("a"), reference("b")]).await;
    assert!(results["a"].is_ok());
    assert!(
        results["b"]
            .clone()
            .unwrap_err()
            .contains("already prepared for claim a")
    );
}

#[tokio::test]
async fn concurrent_prepares_never_tear_the_checkpoint() {
    let s = Setup::new();
    let devices = [
        "gpu-0008-06-00-0",
        "gpu-0009-06-00-0",
        "gpu-0018-06-00-0",
        "gpu-0019-06-00-0",
        "rdma-0101-00-00-0",
        "rdma-0102-00-00-0",
        "rdma-0103-00-00-0",
        "rdma-0104-00-00-0",
    ];
    for (i, device) in devices.iter().enumerate() {
        s.claims.add(&format!("c{i}"), &[("r", device)], json!([]));
    }
    let preparer = Arc::new(s.preparer("boot-1"));
    let tasks: Vec<_> = (0..devices.len())
        .map(|i| {
            let p = preparer.clone();
            tokio::spawn(async move { p.prepare(vec![reference(&format!("c{i}"))]).await })
        })
        .collect();
    for task in tasks {
        let results = task.await.unwrap();
        assert!(results.values().all(Result::is_ok), "{results:?}");
    }
    let reloaded = CheckpointFile::new(s.checkpoint_path()).load().unwrap();
    assert_eq!(reloaded.claims.len(), devices.len());
    assert!(reloaded.discarded.is_empty());
    assert_eq!(s.spec_files().len(), devices.len());
}

#[tokio::test]
async fn a_crash_after_any_step_leaves_a_consistent_state_and_prepare_succeeds_again() {
    for step in [
        Step::Started,
        Step::DevicesPrepared,
        Step::CdiWritten,
        Step::Completed,
    ] {
        let s = Setup::new();
        s.claims
            .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
        let reference_result = {
            let clean = Setup::new();
            clean
                .claims
                .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
            clean
                .preparer("boot-1")
                .prepare(vec![reference("u1")])
                .await
        };
        let crashing = s.preparer("boot-1").with_faults(Arc::new(move |at| {
            if at == step {
                Err(format!("crash after {at:?}").into())
            } else {
                Ok(())
            }
        }));
        let crashed = crashing.prepare(vec![reference("u1")]).await;
        assert!(crashed["u1"].is_err(), "{step:?}");
        drop(crashing);

        // The process restarts.
        let restarted = s.preparer("boot-1");
        let recorded = restarted.recorded().await;
        match step {
            Step::Completed => {
                assert_eq!(recorded["u1"], Phase::Completed, "{step:?}");
                assert_eq!(s.spec_files(), ["hal.dra.dev-device_u1.json"], "{step:?}");
            }
            _ => {
                assert!(
                    recorded.is_empty(),
                    "{step:?}: a started claim is rolled back"
                );
                assert!(s.spec_files().is_empty(), "{step:?}: {:?}", s.spec_files());
            }
        }
        let again = restarted.prepare(vec![reference("u1")]).await;
        assert_eq!(again, reference_result, "{step:?}");
        assert_eq!(restarted.recorded().await["u1"], Phase::Completed);
    }
}

#[tokio::test]
async fn a_corrupt_checkpoint_is_replaced_not_a_crash_loop() {
    let s = Setup::new();
    let path = s.checkpoint_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path.with_extension("json"), "{ this is not json").unwrap();
    let preparer = s.preparer("boot-1");
    assert!(preparer.recorded().await.is_empty());
    let loaded = CheckpointFile::new(&path).load().unwrap();
    assert!(
        loaded.discarded.is_empty(),
        "replaced by a valid empty checkpoint"
    );
}

/// An answer that decodes as a claim but has no UID (a proxy's `{}`: k8s-openapi fills every field
/// with its default) is not "re-created under another UID": the claim is kept and checked again.
#[tokio::test]
async fn a_claim_answered_without_a_uid_is_kept_not_unprepared() {
    let s = Setup::new();
    s.claims
        .add("kept", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("kept")]).await["kept"].is_ok());
    let empty: ResourceClaim = serde_json::from_value(json!({})).unwrap();
    s.claims
        .0
        .lock()
        .unwrap()
        .insert("ns/claim-kept".into(), empty);
    let cleaned = preparer.clean_stale().await;
    assert!(cleaned.unprepared.is_empty(), "{cleaned:?}");
    assert_eq!(cleaned.left, [reference("kept")]);
    assert_eq!(
        preparer.recorded().await.keys().collect::<Vec<_>>(),
        ["kept"]
    );
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_kept.json"]);
}

#[tokio::test]
async fn stale_claims_and_specs_are_cleaned() {
    let s = Setup::new();
    s.claims
        .add("kept", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    s.claims
        .add("gone", &[("gpu", "gpu-0009-06-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    preparer
        .prepare(vec![reference("kept"), reference("gone")])
        .await;
    s.claims.remove("gone");
    std::fs::write(s.cdi_dir().join("hal.dra.dev-device_orphan.json"), "{}").unwrap();
    assert_eq!(preparer.clean_stale().await.unprepared, ["gone"]);
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_kept.json"]);
    assert_eq!(
        preparer.recorded().await.keys().collect::<Vec<_>>(),
        ["kept"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_is_not_cleaned_while_its_claim_is_being_prepared() {
    let s = Setup::new();
    s.claims
        .add("u9", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    // A spec no record owns (left by an earlier run), and a prepare of that claim in flight: it
    // holds the claim's lock from before its record goes into memory until its spec is written.
    std::fs::create_dir_all(s.cdi_dir()).unwrap();
    std::fs::write(s.cdi_dir().join("hal.dra.dev-device_u9.json"), "{}").unwrap();
    let in_flight = preparer.locks.lock("u9").await;
    let (cleaned, prepared) = tokio::join!(preparer.clean_stale(), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            s.spec_files(),
            ["hal.dra.dev-device_u9.json"],
            "not removed while the claim's prepare holds its lock"
        );
        let prepared = preparer.prepare_locked(reference("u9")).await;
        drop(in_flight);
        prepared
    });
    assert_eq!(cleaned, Cleaned::default());
    assert!(prepared.is_ok(), "{prepared:?}");
    assert_eq!(s.spec_files(), ["hal.dra.dev-device_u9.json"]);
    assert_eq!(s.spec("u9")["devices"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_cdi_write_failure_is_a_clear_per_claim_error_and_nothing_is_left_half_done() {
    let s = Setup::new();
    s.claims
        .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    // The CDI "directory" is a file: every write fails, as on a full or read-only disk.
    std::fs::write(s.cdi_dir(), "not a directory").unwrap();
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("u1")]).await;
    let error = results["u1"].clone().unwrap_err();
    assert!(error.starts_with("writing the CDI spec: "), "{error}");
    assert!(
        error.contains(&s.cdi_dir().display().to_string()),
        "names the path: {error}"
    );
    assert!(preparer.recorded().await.is_empty());
    assert!(Path::new(&s.checkpoint_path()).exists());
}

fn vf_config(driver: Option<&str>, if_name: &str) -> serde_json::Value {
    let mut parameters = json!({"apiVersion": "hal.dra.dev/v1alpha1", "kind": "VfConfig", "ifName": if_name,
                                "netAttachDefName": "vf-test1", "netAttachDefNamespace": "vf-test5"});
    if let Some(driver) = driver {
        parameters["driver"] = json!(driver);
    }
    json!([{"source": "FromClaim", "requests": ["vf"], "opaque": {"driver": DRIVER, "parameters": parameters}}])
}

/// Without pod networking (`--pod-networking`, with `--nri`) a claim that asks for its netdev in the
/// pod would have its sandbox fail (or run without its interface): it is refused, and nothing is
/// changed.
#[tokio::test]
async fn a_claim_for_a_netdev_in_the_pod_is_refused_without_pod_networking() {
    let s = Setup::on("xeon");
    s.claims
        .add("u1", &[("vf", "nic-0000-3b-01-1")], vf_config(None, "net1"));
    let mut config = s.config("boot-1", SliceConfig::new(NODE));
    config.pod_networking = false;
    let preparer = Preparer::new(config, s.claims.clone(), s.inventory.clone()).unwrap();
    let error = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(
        error.contains("without pod networking (--pod-networking"),
        "{error}"
    );
    assert!(preparer.recorded().await.is_empty());
    assert!(s.spec_files().is_empty());
}

/// A function without a driver (a VF of a PF whose autoprobe is off) that a claim binds to vfio-pci
/// is left without one at unprepare, its override cleared, as it was (it stayed on vfio-pci).
#[tokio::test]
async fn a_function_that_had_no_driver_has_none_after_unprepare() {
    let s = Setup::on("xeon");
    let vf = hal::PciAddress::parse("0000:3b:01.1").unwrap();
    s.binder.unbind_driver(vf, "iavf").unwrap();
    assert_eq!(s.driver_of("0000:3b:01.1"), None);
    let root = backends::SysfsRoot::new(s.machine.root());
    *s.inventory.write().unwrap() = Inventory::from_sysfs(&root, None);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("vfio-pci"));
    let results = preparer.unprepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1"), None);
    let override_path = s
        .machine
        .root()
        .join("sys/bus/pci/devices/0000:3b:01.1/driver_override");
    assert_eq!(
        std::fs::read_to_string(&override_path).unwrap().trim(),
        "(null)"
    );
    // Bound again by the claim, then by someone else (an operator, another tool) to iavf before
    // the unprepare: left on iavf.
    let results = preparer.prepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    s.binder.bind_driver(vf, "iavf").unwrap();
    s.reread_inventory();
    let results = preparer.unprepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("iavf"));
    assert_eq!(
        std::fs::read_to_string(&override_path).unwrap().trim(),
        "iavf"
    );
}

#[tokio::test]
async fn a_vf_for_vfio_is_bound_exposed_through_its_group_and_given_back() {
    let s = Setup::on("xeon");
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-1"), ("gpu", "gpu-0000-4b-00-0")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("iavf"));
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("u1")]).await;
    assert!(results["u1"].is_ok(), "{results:?}");
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("vfio-pci"));
    let spec = s.spec("u1");
    let group = s
        .inventory
        .read()
        .unwrap()
        .function(hal::PciAddress::parse("0000:3b:01.1").unwrap())
        .unwrap()
        .iommu_group
        .unwrap();
    assert_eq!(
        node_paths(&spec, 0),
        [format!("/dev/vfio/{group}"), "/dev/vfio/vfio".to_owned()]
    );
    let env: Vec<&str> = spec["devices"][0]["containerEdits"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for expected in [
        "DRA_HAL_NIC_0_PCI_ADDRESS=0000:3b:01.1",
        "DRA_HAL_NIC_0_IFNAME=net1",
        "DRA_HAL_NIC_0_NETWORK=vf-test5/vf-test1",
        "GPU_DEVICE_0=gpu-0000-4b-00-0",
    ] {
        assert!(env.contains(&expected), "{expected}: {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.starts_with("DRA_HAL_NIC_0_NETDEV")),
        "a vfio VF has no netdev: {env:?}"
    );

    preparer.unprepare(vec![reference("u1")]).await;
    assert_eq!(
        s.driver_of("0000:3b:01.1").as_deref(),
        Some("iavf"),
        "the original driver is back"
    );
}

#[tokio::test]
async fn after_a_reboot_a_claim_that_changed_a_device_is_prepared_afresh_and_the_others_keep_their_record()
 {
    let s = Setup::on("xeon");
    s.claims.add(
        "vfio",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    s.claims.add_cpus("cpus", "cpus-numa-0", 4, json!([]));
    let both = || vec![reference("vfio"), reference("cpus")];
    let first = s.preparer("boot-1").prepare(both()).await;
    assert!(first.values().all(Result::is_ok), "{first:?}");
    let cpus = cpuset_of(&s, "cpus");
    let vf = hal::PciAddress::parse("0000:3b:01.1").unwrap();

    // The node reboots: the VF is back on its kernel driver and /var/run/cdi is empty.
    s.binder.bind_driver(vf, "iavf").unwrap();
    s.reread_inventory();
    std::fs::remove_dir_all(s.cdi_dir()).unwrap();
    let rebooted = s.preparer("boot-2");
    let records = |uid: &str| s.checkpoint_path().join(format!("{uid}.json")).exists();
    assert!(
        !records("vfio"),
        "its binding was undone by the reboot: forgotten"
    );
    assert!(records("cpus"), "changed no device: kept");

    // The kubelet prepares both again: the VF is bound again, the CPUs are the same.
    let again = rebooted.prepare(both()).await;
    assert_eq!(first, again);
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("vfio-pci"));
    assert_eq!(cpuset_of(&s, "cpus"), cpus);
    rebooted.unprepare(vec![reference("vfio")]).await;
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("iavf"));

    // A restart within the same boot answers from the record, as before.
    let again = rebooted.prepare(vec![reference("vfio")]).await;
    assert!(again["vfio"].is_ok(), "{again:?}");
    drop(rebooted);
    let restarted = s.preparer("boot-2");
    assert!(records("vfio"));
    assert_eq!(restarted.prepare(vec![reference("vfio")]).await, again);
}

#[test]
fn a_boot_id_is_known_unless_empty_or_recorded_as_unknown() {
    assert!(super::boot_id_known("5c1a6b7e-2f7d-4c0e-9a51-0d3f2f4a8e21"));
    assert!(!super::boot_id_known(""));
    assert!(!super::boot_id_known("unknown"));
}

#[tokio::test]
async fn an_unknown_boot_id_never_counts_as_a_reboot() {
    let s = Setup::on("xeon");
    s.claims.add(
        "vfio",
        &[("vf", "nic-0000-3b-01-1")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let record = s.checkpoint_path().join("vfio.json");
    // Recorded with no boot id, then started with one, then without again: kept each time.
    let first = s.preparer("").prepare(vec![reference("vfio")]).await;
    assert!(first["vfio"].is_ok(), "{first:?}");
    drop(s.preparer("boot-2"));
    assert!(record.exists());
    let unknown = s.preparer("");
    assert!(record.exists());
    unknown.unprepare(vec![reference("vfio")]).await;
    // Earlier versions recorded an unreadable boot id as "unknown".
    s.preparer("unknown").prepare(vec![reference("vfio")]).await;
    drop(s.preparer("boot-3"));
    assert!(record.exists());
}

#[tokio::test]
async fn a_kernel_driver_vf_passes_its_netdev_and_network_and_a_pf_with_vfs_is_never_unbound() {
    let s = Setup::on("xeon");
    s.claims
        .add("k", &[("vf", "nic-0000-b1-00-2")], vf_config(None, "net1"));
    s.claims.add(
        "pf",
        &[("vf", "nic-0000-3b-00-0")],
        vf_config(Some("vfio-pci"), "net2"),
    );
    let preparer = s.preparer("boot-1");
    let results = preparer
        .prepare(vec![reference("k"), reference("pf")])
        .await;
    assert!(results["k"].is_ok());
    let env = s.spec("k")["devices"][0]["containerEdits"]["env"].clone();
    for expected in [
        "DRA_HAL_NIC_0_NETDEV=ens2f0v0",
        "DRA_HAL_NIC_0_IFNAME=net1",
        "NCCL_IB_HCA==mlx5_1",
    ] {
        assert!(
            env.as_array().unwrap().iter().any(|e| e == expected),
            "{expected}: {env}"
        );
    }
    assert!(
        results["pf"]
            .clone()
            .unwrap_err()
            .contains("has 8 VFs enabled"),
        "{results:?}"
    );
    assert_eq!(s.driver_of("0000:3b:00.0").as_deref(), Some("ice"));
}

#[tokio::test]
async fn a_crash_after_binding_is_rolled_back_to_the_original_driver() {
    let s = Setup::on("xeon");
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-2")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let crashing = s.preparer("boot-1").with_faults(Arc::new(|at| {
        if at == Step::DevicesPrepared {
            Err("crash".into())
        } else {
            Ok(())
        }
    }));
    assert!(crashing.prepare(vec![reference("u1")]).await["u1"].is_err());
    assert_eq!(
        s.driver_of("0000:3b:01.2").as_deref(),
        Some("vfio-pci"),
        "the crash left it bound"
    );
    drop(crashing);
    let restarted = s.preparer("boot-1");
    assert!(restarted.recorded().await.is_empty());
    assert_eq!(
        s.driver_of("0000:3b:01.2").as_deref(),
        Some("iavf"),
        "rolled back at start"
    );
}

#[tokio::test]
async fn a_refused_bind_is_the_claims_error_and_nothing_stays_changed() {
    let mut s = Setup::on("xeon");
    // The kernel refuses (the module is not loaded): the function stays with its driver.
    let mut refusing = hal_mock::mocks::MockSriovPf::new();
    refusing
        .expect_bind_driver()
        .withf(|_, driver| driver == "no-such-driver")
        .times(1)
        .returning(|function, driver| {
            Err(hal::Error::Unsupported(format!(
                "{function}: {driver} did not bind (bound now: none)"
            )))
        });
    // The rollback gives the function back to its original driver.
    refusing
        .expect_bind_driver()
        .withf(|function, driver| function.to_string() == "0000:3b:01.3" && driver == "iavf")
        .times(1)
        .returning(|_, _| Ok(()));
    s.binder = Arc::new(refusing);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-3")],
        vf_config(Some("no-such-driver"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(
        error.starts_with("binding 0000:3b:01.3 to no-such-driver: "),
        "{error}"
    );
    assert!(preparer.recorded().await.is_empty());
    assert!(s.spec_files().is_empty());
}

#[tokio::test]
async fn a_rollback_that_fails_keeps_the_record_so_the_undo_is_tried_again() {
    let mut s = Setup::on("xeon");
    // The bind fails, and so does the first try to give the function back to its driver.
    let mut refusing = hal_mock::mocks::MockSriovPf::new();
    refusing
        .expect_bind_driver()
        .withf(|_, driver| driver == "no-such-driver")
        .times(1)
        .returning(|function, driver| {
            Err(hal::Error::Unsupported(format!(
                "{function}: {driver} did not bind"
            )))
        });
    let restores = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = restores.clone();
    refusing
        .expect_bind_driver()
        .withf(|function, driver| function.to_string() == "0000:3b:01.3" && driver == "iavf")
        .times(2)
        .returning(move |function, driver| {
            match counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Err(hal::Error::Unsupported(format!(
                    "{function}: {driver} is busy"
                ))),
                _ => Ok(()),
            }
        });
    s.binder = Arc::new(refusing);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-3")],
        vf_config(Some("no-such-driver"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(error.contains("iavf is busy"), "{error}");
    // The record is what says the function must go back to iavf: kept, in memory and on disk.
    assert_eq!(
        preparer.recorded().await,
        BTreeMap::from([("u1".to_owned(), Phase::Started)])
    );
    assert!(s.checkpoint_path().join("u1.json").exists());
    // The kubelet unprepares (or a restart rolls back): the undo runs again and succeeds.
    let results = preparer.unprepare(vec![reference("u1")]).await;
    assert_eq!(results["u1"], Ok(()));
    assert_eq!(restores.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(preparer.recorded().await.is_empty());
    assert!(!s.checkpoint_path().join("u1.json").exists());
}

#[tokio::test]
async fn a_start_whose_rollback_fails_still_serves_and_rolls_back_at_the_next_unprepare() {
    let mut s = Setup::on("xeon");
    // The claim is bound to vfio-pci, then the plugin crashes; at the next start the function
    // cannot be given back to iavf (busy), later it can.
    let mut binder = hal_mock::mocks::MockSriovPf::new();
    binder
        .expect_bind_driver()
        .withf(|_, driver| driver == "vfio-pci")
        .times(1)
        .returning(|_, _| Ok(()));
    let restores = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = restores.clone();
    binder
        .expect_bind_driver()
        .withf(|function, driver| function.to_string() == "0000:3b:01.2" && driver == "iavf")
        .times(2)
        .returning(move |function, driver| {
            match counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Err(hal::Error::Unsupported(format!(
                    "{function}: {driver} is busy"
                ))),
                _ => Ok(()),
            }
        });
    s.binder = Arc::new(binder);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-2")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    s.claims.add("u2", &[("vf", "nic-0000-3b-01-2")], json!([]));
    let crashing = s.preparer("boot-1").with_faults(Arc::new(|at| match at {
        Step::DevicesPrepared => Err("crash".into()),
        _ => Ok(()),
    }));
    assert!(crashing.prepare(vec![reference("u1")]).await["u1"].is_err());
    drop(crashing);
    // The start does not fail on it: it serves, and the claim keeps its record and its device.
    let restarted = s.preparer("boot-1");
    assert_eq!(restores.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        restarted.recorded().await,
        BTreeMap::from([("u1".to_owned(), Phase::Started)])
    );
    let taken = restarted.prepare(vec![reference("u2")]).await["u2"].clone();
    assert!(
        taken.is_err_and(|e| e.contains("u1")),
        "the VF is still u1's"
    );
    assert_eq!(
        restarted.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert_eq!(restores.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(restarted.recorded().await.is_empty());
}

#[tokio::test]
async fn a_function_gone_from_the_machine_counts_as_given_back() {
    let mut s = Setup::on("xeon");
    // The claim rebinds the VF to vfio-pci; then the PF's VF count changes and the VF is gone,
    // so giving it back to iavf finds no such function.
    let mut binder = hal_mock::mocks::MockSriovPf::new();
    binder
        .expect_bind_driver()
        .withf(|_, driver| driver == "vfio-pci")
        .times(1)
        .returning(|_, _| Ok(()));
    binder
        .expect_bind_driver()
        .withf(|function, driver| function.to_string() == "0000:3b:01.2" && driver == "iavf")
        .times(1)
        .returning(|function, _| {
            Err(hal::Error::Io {
                op: "find",
                path: format!("sys/bus/pci/devices/{function}").into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        });
    s.binder = Arc::new(binder);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-2")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(
        preparer.unprepare(vec![reference("u1")]).await["u1"],
        Ok(())
    );
    assert!(preparer.recorded().await.is_empty());
    assert!(!s.checkpoint_path().join("u1.json").exists());
    assert!(s.spec_files().is_empty());
}

#[tokio::test]
async fn a_file_of_the_function_missing_is_not_the_function_gone() {
    let mut s = Setup::on("xeon");
    // Giving the VF back finds its driver's `unbind` missing (the driver went away meanwhile): the
    // function is still there, so the undo failed and its record is kept.
    let mut binder = hal_mock::mocks::MockSriovPf::new();
    binder
        .expect_bind_driver()
        .withf(|_, driver| driver == "vfio-pci")
        .times(1)
        .returning(|_, _| Ok(()));
    binder
        .expect_bind_driver()
        .withf(|_, driver| driver == "iavf")
        .times(1)
        .returning(|function, _| {
            Err(hal::Error::Io {
                op: "write",
                path: format!("sys/bus/pci/devices/{function}/driver/unbind").into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        });
    s.binder = Arc::new(binder);
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-3b-01-2")],
        vf_config(Some("vfio-pci"), "net1"),
    );
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert!(preparer.unprepare(vec![reference("u1")]).await["u1"].is_err());
    assert_eq!(preparer.recorded().await.keys().collect::<Vec<_>>(), ["u1"]);
    assert!(s.checkpoint_path().join("u1.json").exists());
}

fn env_of(spec: &serde_json::Value) -> Vec<String> {
    spec["devices"][0]["containerEdits"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

fn cpuset_of(s: &Setup, uid: &str) -> String {
    let env = env_of(&s.spec(uid));
    let prefix = format!("DRA_CPUSET_{uid}=");
    env.iter()
        .find_map(|e| e.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {prefix} in {env:?}"))
}

#[tokio::test]
async fn cpu_group_claims_get_disjoint_whole_cores_that_survive_restarts() {
    let s = Setup::on("xeon");
    s.claims.add_cpus("a", "cpus-numa-0", 4, json!([]));
    s.claims.add_cpus("b", "cpus-numa-0", 3, json!([]));
    let preparer = s.preparer("boot-1");
    let results = preparer.prepare(vec![reference("a"), reference("b")]).await;
    assert!(results.values().all(Result::is_ok), "{results:?}");
    assert_eq!(cpuset_of(&s, "a"), "0-1,112-113");
    assert_eq!(cpuset_of(&s, "b"), "2-3,114");
    assert!(env_of(&s.spec("a")).contains(&"DRA_HAL_CPUSET=0-1,112-113".to_owned()));
    // A restart, then a reboot (empty CDI dir): the same CPUs.
    drop(preparer);
    std::fs::remove_dir_all(s.cdi_dir()).unwrap();
    let rebooted = s.preparer("boot-2");
    rebooted.prepare(vec![reference("b"), reference("a")]).await;
    assert_eq!(cpuset_of(&s, "a"), "0-1,112-113");
    assert_eq!(cpuset_of(&s, "b"), "2-3,114");
    // A third claim takes the split core's free sibling first.
    s.claims.add_cpus("c", "cpus-numa-0", 1, json!([]));
    rebooted.prepare(vec![reference("c")]).await;
    assert_eq!(cpuset_of(&s, "c"), "115");
    // Freed CPUs go back to the pool.
    rebooted.unprepare(vec![reference("a")]).await;
    s.claims.add_cpus("d", "cpus-numa-0", 4, json!([]));
    rebooted.prepare(vec![reference("d")]).await;
    assert_eq!(cpuset_of(&s, "d"), "0-1,112-113");
}

#[tokio::test]
async fn an_explicit_cpuset_is_checked_against_the_group_and_other_claims() {
    let s = Setup::on("xeon");
    let config = |cpuset: &str| {
        json!([{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters":
            {"apiVersion": "hal.dra.dev/v1alpha1", "kind": "CpuConfig", "cpuset": cpuset}}}])
    };
    s.claims.add_cpus("ok", "cpus-numa-0", 2, config("10,122"));
    s.claims
        .add_cpus("taken", "cpus-numa-0", 2, config("10-11"));
    s.claims
        .add_cpus("remote", "cpus-numa-0", 2, config("60-61"));
    s.claims.add_cpus("size", "cpus-numa-0", 2, config("20-22"));
    s.claims
        .add_cpus("garbage", "cpus-numa-0", 2, config("x-y"));
    let preparer = s.preparer("boot-1");
    let results = preparer
        .prepare(
            ["ok", "taken", "remote", "size", "garbage"]
                .map(reference)
                .to_vec(),
        )
        .await;
    assert_eq!(cpuset_of(&s, "ok"), "10,122");
    let error = |uid: &str| results[uid].clone().unwrap_err();
    assert!(
        error("taken").contains("CPUs 10 are held by another claim"),
        "{}",
        error("taken")
    );
    assert!(
        error("remote").contains("not within the group"),
        "{}",
        error("remote")
    );
    assert!(
        error("size").contains("has 3 CPUs, the claim consumes 2"),
        "{}",
        error("size")
    );
    assert!(
        error("garbage").contains("parameters.cpuset"),
        "{}",
        error("garbage")
    );
}

/// Provisioning leaves a PF alone while a claim holds one of its VFs; the kept policy is applied
/// at every tick, not only when its file changes, so the PF gets it once the claim is unprepared,
/// with the file as it was.
#[tokio::test]
async fn provisioning_waits_until_no_vf_of_the_pf_is_prepared_and_then_applies_the_kept_policy() {
    use super::super::provision::{KeptPolicy, Outcome};
    let s = Setup::on("xeon");
    s.claims.add("u1", &[("vf", "nic-0000-3b-01-1")], json!([]));
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    let path = s.dir.path().join("policy.json");
    std::fs::write(
        &path,
        r#"{"pfs": [{"selector": {"netdev": "ens1f0"}, "numVfs": 2}]}"#,
    )
    .unwrap();
    let mut kept = KeptPolicy::new(&path);
    let e810 = hal::PciAddress::parse("0000:3b:00.0").unwrap();
    let vf = hal::PciAddress::parse("0000:3b:01.1").unwrap();
    let mut tick = async || {
        let policy = kept.policy().unwrap().unwrap();
        let outcomes = preparer.provision(&policy, &path).await;
        kept.report(outcomes)
    };
    let busy = Outcome::Busy(e810, vec![vf]);
    assert_eq!(tick().await, (vec![busy.clone()], false));
    // Reported once while nothing changes.
    assert_eq!(tick().await, (vec![], false));
    preparer.unprepare(vec![reference("u1")]).await;
    assert_eq!(tick().await, (vec![Outcome::Changed(e810, 8, 2)], true));
    let sriov = hal::SriovPf::sriov_state(s.binder.as_ref(), e810)
        .unwrap()
        .unwrap();
    assert_eq!(sriov.num_vfs, 2);
}

fn gpu_vfio() -> serde_json::Value {
    json!([{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters":
        {"apiVersion": "hal.dra.dev/v1alpha1", "kind": "GpuConfig", "driver": "vfio-pci"}}}])
}

#[tokio::test]
async fn a_gpu_for_a_vm_is_bound_to_vfio_and_given_back_and_refused_while_it_has_vfs() {
    let s = Setup::on("i915");
    s.claims
        .add("vm", &[("gpu", "gpu-0000-4d-00-0")], gpu_vfio());
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("vm")]).await["vm"].is_ok());
    assert_eq!(s.driver_of("0000:4d:00.0").as_deref(), Some("vfio-pci"));
    let group = s
        .inventory
        .read()
        .unwrap()
        .function(hal::PciAddress::parse("0000:4d:00.0").unwrap())
        .unwrap()
        .iommu_group
        .unwrap();
    assert_eq!(
        node_paths(&s.spec("vm"), 0),
        [format!("/dev/vfio/{group}"), "/dev/vfio/vfio".to_owned()]
    );
    preparer.unprepare(vec![reference("vm")]).await;
    assert_eq!(s.driver_of("0000:4d:00.0").as_deref(), Some("i915"));

    // With VFs enabled the GPU is not taken away from them.
    let sriov = backends::SysfsSriov::with_writer(
        backends::SysfsRoot::new(s.machine.root()),
        Arc::new(hal_mock::by_name("i915").unwrap().kernel(s.machine.root())),
    );
    hal::SriovPf::set_num_vfs(&sriov, hal::PciAddress::parse("0000:4d:00.0").unwrap(), 2).unwrap();
    *s.inventory.write().unwrap() =
        Inventory::from_sysfs(&backends::SysfsRoot::new(s.machine.root()), None);
    let error = preparer.prepare(vec![reference("vm")]).await["vm"]
        .clone()
        .unwrap_err();
    assert!(error.contains("has 2 VFs enabled"), "{error}");
}

#[tokio::test]
async fn a_gpu_config_on_a_network_function_is_refused_and_rebinds_nothing() {
    let s = Setup::on("xeon");
    s.claims
        .add("u1", &[("vf", "nic-0000-3b-01-1")], gpu_vfio());
    let preparer = s.preparer("boot-1");
    let error = preparer.prepare(vec![reference("u1")]).await["u1"]
        .clone()
        .unwrap_err();
    assert!(
        error.contains("a VfConfig applies to network functions, a GpuConfig to GPUs"),
        "{error}"
    );
    assert_eq!(s.driver_of("0000:3b:01.1").as_deref(), Some("iavf"));
}

#[tokio::test]
async fn an_intel_gpu_gets_its_drm_nodes_and_by_path_links_only() {
    let s = Setup::on("i915");
    s.claims
        .add("u1", &[("gpu", "gpu-0000-4d-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    assert_eq!(
        node_paths(&s.spec("u1"), 0),
        [
            "/dev/dri/card1",
            "/dev/dri/renderD128",
            "/dev/dri/by-path/pci-0000:4d:00.0-card",
            "/dev/dri/by-path/pci-0000:4d:00.0-render"
        ]
    );
    assert!(env_of(&s.spec("u1")).contains(&"GPU_DEVICE_0=gpu-0000-4d-00-0".to_owned()));
    assert!(
        !env_of(&s.spec("u1"))
            .iter()
            .any(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES"))
    );
}

#[tokio::test]
async fn a_forbidden_status_write_is_counted_as_a_configuration_error_and_the_claim_is_prepared() {
    let s = Setup::on("xeon");
    s.claims.add(
        "forbidden",
        &[("vf", "nic-0000-b1-00-2")],
        vf_config(None, "net1"),
    );
    let preparer = s.preparer("boot-1");
    let forbidden = preparer.status_forbidden();
    assert!(preparer.prepare(vec![reference("forbidden")]).await["forbidden"].is_ok());
    assert_eq!(forbidden.load(std::sync::atomic::Ordering::Relaxed), 1);
    let metrics = crate::plugin::metrics::Metrics::default();
    metrics.set_status_forbidden(forbidden);
    assert!(
        metrics
            .render()
            .contains("\ndra_hal_status_write_forbidden_total 1\n"),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn network_functions_are_described_in_the_claims_device_status() {
    let s = Setup::on("xeon");
    s.claims.add(
        "u1",
        &[("vf", "nic-0000-b1-00-2"), ("gpu", "gpu-0000-b3-00-0")],
        vf_config(None, "net1"),
    );
    let preparer = s.preparer("boot-1");
    assert!(preparer.prepare(vec![reference("u1")]).await["u1"].is_ok());
    let statuses = s.claims.1.lock().unwrap()["ns/claim-u1"].clone();
    assert_eq!(
        statuses,
        [
            json!({"driver": DRIVER, "pool": NODE, "device": "nic-0000-b1-00-2",
                "networkData": {"interfaceName": "net1"},
                "data": {"pciAddress": "0000:b1:00.2", "netdev": "ens2f0v0", "rdmaDevice": "mlx5_1",
                         "network": "vf-test5/vf-test1"}})
        ]
    );
    preparer.unprepare(vec![reference("u1")]).await;
    assert_eq!(
        s.claims.1.lock().unwrap()["ns/claim-u1"],
        Vec::<serde_json::Value>::new(),
        "cleared"
    );
}

/// A VF policy whose selector also matches a GPU (a vendor-only one, meant for the vendor's NICs)
/// leaves a GPU whose partitions are prepared alone: its count and its VFs' driver.
#[tokio::test]
async fn the_vf_policy_leaves_a_gpu_with_prepared_partitions_alone() {
    use super::super::provision::{Outcome, VfPolicy};
    let s = Setup::on("i915");
    let mut slices = SliceConfig::new(NODE);
    slices.gpu_partitions = 2;
    let pf = hal::PciAddress::parse("0000:4d:00.0").unwrap();
    s.claims
        .add("p0", &[("gpu", "gpu-0000-4d-00-0-vf0")], json!([]));
    let preparer = s.preparer_with("boot-1", slices);
    assert!(preparer.prepare(vec![reference("p0")]).await["p0"].is_ok());
    let vfs = || {
        hal::SriovPf::sriov_state(s.binder.as_ref(), pf)
            .unwrap()
            .unwrap()
            .vfs
    };
    let before = vfs();
    assert_eq!(before.len(), 2);
    // The rescan after the prepare: the inventory has the VFs.
    *s.inventory.write().unwrap() =
        Inventory::from_sysfs(&backends::SysfsRoot::new(s.machine.root()), None);
    for (num_vfs, with_driver) in [
        (8, r#", "vfDriver": "vfio-pci""#),
        (2, r#", "vfDriver": "vfio-pci""#),
    ] {
        let path = s.dir.path().join("policy.json");
        let policy = format!(
            r#"{{"pfs": [{{"selector": {{"vendorId": "0x8086"}}, "numVfs": {num_vfs}{with_driver}}}]}}"#
        );
        std::fs::write(&path, policy).unwrap();
        let policy = VfPolicy::load(&path).unwrap();
        // The other GPU, 0000:ca:00.0, holds no partition: it gets the policy.
        let outcomes = preparer.provision(&policy, &path).await;
        let ours = |o: &&Outcome| match o {
            Outcome::Busy(a, _) | Outcome::Unchanged(a) => *a == pf,
            _ => false,
        };
        // 8: a count change, refused; 2: the count it has, and its VFs are not rebound.
        let want_busy = num_vfs == 8;
        let found = outcomes.iter().find(ours);
        assert!(
            found.is_some_and(|o| matches!(o, Outcome::Busy(..)) == want_busy),
            "{outcomes:?}"
        );
        assert_eq!(vfs(), before, "the partitions' VFs are as they were");
        for vf in &before {
            assert_ne!(
                s.driver_of(&vf.address.to_string()).as_deref(),
                Some("vfio-pci"),
                "{}",
                vf.address
            );
        }
    }
}

#[tokio::test]
async fn intel_gpu_partitions_create_vfs_on_first_prepare_and_remove_them_after_the_last() {
    let s = Setup::on("i915");
    let mut slices = SliceConfig::new(NODE);
    slices.gpu_partitions = 2;
    let pf = hal::PciAddress::parse("0000:4d:00.0").unwrap();
    let num_vfs = || {
        std::fs::read_to_string(
            s.machine
                .root()
                .join("sys/bus/pci/devices/0000:4d:00.0/sriov_numvfs"),
        )
        .unwrap()
        .trim()
        .to_owned()
    };
    s.claims
        .add("p0", &[("gpu", "gpu-0000-4d-00-0-vf0")], json!([]));
    s.claims
        .add("p1", &[("gpu", "gpu-0000-4d-00-0-vf1")], json!([]));
    s.claims
        .add("whole", &[("gpu", "gpu-0000-4d-00-0")], json!([]));
    let preparer = s.preparer_with("boot-1", slices);

    assert!(preparer.prepare(vec![reference("p0")]).await["p0"].is_ok());
    assert_eq!(num_vfs(), "2", "the first partition created the VFs");
    let vfs = hal::SriovPf::sriov_state(s.binder.as_ref(), pf)
        .unwrap()
        .unwrap()
        .vfs;
    let p0 = node_paths(&s.spec("p0"), 0);
    assert!(
        p0.contains(&format!("/dev/dri/by-path/pci-{}-render", vfs[0].address)),
        "{p0:?}"
    );
    assert!(
        !p0.iter().any(|p| p.contains("0000:4d:00.0")),
        "not the PF's nodes: {p0:?}"
    );

    let error = preparer.prepare(vec![reference("whole")]).await["whole"]
        .clone()
        .unwrap_err();
    assert!(error.contains("claim p0 holds partitions"), "{error}");

    assert!(preparer.prepare(vec![reference("p1")]).await["p1"].is_ok());
    let p1 = node_paths(&s.spec("p1"), 0);
    assert!(
        p1.contains(&format!("/dev/dri/by-path/pci-{}-render", vfs[1].address)),
        "{p1:?}"
    );
    assert_ne!(p0, p1, "each partition its own VF");

    preparer.unprepare(vec![reference("p0")]).await;
    assert_eq!(num_vfs(), "2", "p1 still holds a partition");
    preparer.unprepare(vec![reference("p1")]).await;
    assert_eq!(num_vfs(), "0", "the last partition gave the GPU back");
    assert!(preparer.prepare(vec![reference("whole")]).await["whole"].is_ok());
    let error = preparer.prepare(vec![reference("p0")]).await["p0"]
        .clone()
        .unwrap_err();
    assert!(error.contains("claim whole holds the whole GPU"), "{error}");
    assert_eq!(num_vfs(), "0");
}

/// Runs `program` and returns its stdout; a failure fails the test with its stderr.
fn run_ok(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The podman tests write their specs to the one `/var/run/cdi` podman reads, and a preparer started
/// without a checkpoint takes every spec there for one of its own (rebuilding a lost checkpoint): they
/// run one at a time.
static PODMAN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `podman run` as the root tests start their containers.
const PODMAN_RUN: [&str; 11] = [
    "--runtime",
    "runc",
    "run",
    "--rm",
    "--cgroup-manager=cgroupfs",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "none",
];

/// Makes the stand-in device nodes the spec of claim `uid` in `/var/run/cdi` names (at their
/// `hostPath`, same type and numbers; `1:3` where the fixture gives none) and returns the spec's path.
fn make_stand_in_nodes(uid: &str) -> String {
    let spec_path = format!("/var/run/cdi/hal.dra.dev-device_{uid}.json");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    for device in spec["devices"].as_array().unwrap() {
        let nodes = device["containerEdits"]["deviceNodes"].as_array();
        for node in nodes.into_iter().flatten() {
            let host = Path::new(node["hostPath"].as_str().unwrap());
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            if !host.exists() {
                let major = node["major"].as_i64().unwrap_or(1).to_string();
                let minor = node["minor"].as_i64().unwrap_or(3).to_string();
                run_ok("mknod", &[host.to_str().unwrap(), "c", &major, &minor]);
            }
        }
    }
    spec_path
}

/// A busybox image of our own, from Debian's busybox-static, imported into podman (root tests).
fn busybox_image(work: &Path) -> &'static str {
    let run = run_ok;
    let rootfs = work.join("rootfs");
    for dir in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "env", "find", "sort", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = work.join("rootfs.tar");
    run(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let image = "localhost/hal-dra-busybox:test";
    run("podman", &["import", "-q", tar.to_str().unwrap(), image]);
    image
}

/// A real CDI consumer: podman (with runc) starts a busybox container with the CDI ids Prepare
/// returned, and the container sees exactly the prepared device nodes and environment. The specs go to
/// `/var/run/cdi` (where podman 4.3 looks); the nodes they name are stand-ins made with mknod under
/// `--dev-root` (same type and numbers as the fixture's; `1:3` where the fixture gives none). Needs
/// root, podman, runc and busybox-static (`.ci/run` installs them).
#[tokio::test]
#[ignore = "needs root, podman, runc and busybox-static (run by .ci/run)"]
async fn podman_sees_exactly_the_prepared_devices_and_env_needs_root() {
    assert!(rustix::process::geteuid().is_root(), "run as root");
    let _one_at_a_time = PODMAN.lock().await;

    let work = tempfile::tempdir().unwrap();
    let image = busybox_image(work.path());

    let s = Setup::on("gb300");
    let uid = format!("podman-{}", std::process::id());
    s.claims.add(
        &uid,
        &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        json!([]),
    );
    let dev_root = work.path().join("host");
    let config = PreparerConfig {
        slices: SliceConfig::new(NODE),
        cdi: CdiDir::new("/var/run/cdi"),
        checkpoint: CheckpointFile::new(s.checkpoint_path()),
        boot_id: "boot-1".into(),
        binder: s.binder.clone(),
        gpus: Arc::new(backends::SysfsGpu::new(backends::SysfsRoot::new(
            s.machine.root(),
        ))),
        dev_root: Some(dev_root.clone()),
        pod_networking: true,
    };
    let preparer = Preparer::new(config, s.claims.clone(), s.inventory.clone()).unwrap();
    let devices = preparer.prepare(vec![reference(&uid)]).await[&uid]
        .clone()
        .unwrap();
    let spec_path = make_stand_in_nodes(&uid);
    let mut args = PODMAN_RUN.to_vec();
    let ids: Vec<String> = devices
        .iter()
        .flat_map(|d| d.cdi_device_ids.clone())
        .collect();
    for id in &ids {
        args.extend(["--device", id.as_str()]);
    }
    args.extend([image, "sh", "-c", "find /dev/infiniband /dev -maxdepth 1 -name 'nvidia*' -o -path '/dev/infiniband/*' | sort; env"]);
    let output = run_ok("podman", &args);
    preparer.unprepare(vec![reference(&uid)]).await;
    assert!(
        !std::path::Path::new(&spec_path).exists(),
        "unprepare removed the spec"
    );

    let nodes: Vec<&str> = output.lines().filter(|l| l.starts_with("/dev/")).collect();
    assert_eq!(
        nodes,
        [
            "/dev/infiniband/issm0",
            "/dev/infiniband/rdma_cm",
            "/dev/infiniband/umad0",
            "/dev/infiniband/uverbs0",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia0",
            "/dev/nvidiactl",
        ],
        "{output}"
    );
    for variable in [
        "DRA_HAL_RDMA_DEVICE=mlx5_0",
        "NCCL_IB_HCA==mlx5_0",
        "GPU_DEVICE_0=gpu-0008-06-00-0",
        "NVIDIA_VISIBLE_DEVICES=GPU-",
    ] {
        assert!(
            output.lines().any(|l| l.starts_with(variable)),
            "{variable} in {output}"
        );
    }
}

fn rt_config(runtime_us: u64, period_us: u64, tasks: u32) -> serde_json::Value {
    json!([{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters":
        {"apiVersion": "hal.dra.dev/v1alpha1", "kind": "RtConfig",
         "runtimeUs": runtime_us, "periodUs": period_us, "tasks": tasks}}}])
}

fn add_rt(s: &Setup, uid: &str, bandwidth: &str, config: serde_json::Value) {
    let results = vec![
        json!({"request": "rt", "driver": DRIVER, "pool": NODE, "device": "rt-numa-0",
        "shareID": format!("share-{uid}"), "consumedCapacity": {"rtBandwidth": bandwidth}}),
    ];
    s.claims.add_results(uid, results, config);
}

#[tokio::test]
async fn rt_bandwidth_is_placed_worst_fit_admitted_per_cpu_and_kept_apart_from_exclusive_cpus() {
    let s = Setup::on("xeon");
    let mut slices = SliceConfig::new(NODE);
    slices.rt_bandwidth = true;
    let preparer = s.preparer_with("boot-1", slices);
    let task_cpus = |uid: &str| -> String {
        env_of(&s.spec(uid))
            .into_iter()
            .find_map(|e| e.strip_prefix("DRA_RT_TASK_CPUS=").map(str::to_owned))
            .unwrap()
    };

    add_rt(&s, "rt1", "600m", rt_config(300, 1000, 2));
    assert!(preparer.prepare(vec![reference("rt1")]).await["rt1"].is_ok());
    assert_eq!(task_cpus("rt1"), "0,1", "idle CPUs, lowest first");
    let env = env_of(&s.spec("rt1"));
    for wanted in [
        "DRA_RT_RUNTIME_US=300",
        "DRA_RT_PERIOD_US=1000",
        "DRA_RT_CPUS=0-1",
    ] {
        assert!(env.contains(&wanted.to_owned()), "{wanted} in {env:?}");
    }

    // Exclusive CPUs never land where RT tasks run.
    s.claims.add_cpus("excl", "cpus-numa-0", 2, json!([]));
    assert!(preparer.prepare(vec![reference("excl")]).await["excl"].is_ok());
    let exclusive = cpuset_of(&s, "excl");
    assert!(
        !exclusive.split([',', '-']).any(|c| c == "0" || c == "1"),
        "{exclusive}"
    );

    // ...and RT tasks never where exclusive CPUs are: 700k does not fit next to 300k (950k per CPU).
    add_rt(&s, "rt2", "700m", rt_config(700, 1000, 1));
    assert!(preparer.prepare(vec![reference("rt2")]).await["rt2"].is_ok());
    let cpu: u32 = task_cpus("rt2").parse().unwrap();
    let excl = hal::CpuSet::from_cpulist(&exclusive).unwrap();
    assert!(
        cpu > 1 && !excl.contains(cpu),
        "{cpu} (exclusive {exclusive})"
    );

    // More than the claim consumed, and more than the kernel admits on one CPU, are refused.
    add_rt(&s, "greedy", "100m", rt_config(300, 1000, 1));
    let error = preparer.prepare(vec![reference("greedy")]).await["greedy"]
        .clone()
        .unwrap_err();
    assert!(error.contains("the claim consumes 100000 ppm"), "{error}");
    add_rt(&s, "huge", "960m", rt_config(960, 1000, 1));
    let error = preparer.prepare(vec![reference("huge")]).await["huge"]
        .clone()
        .unwrap_err();
    assert!(
        error.contains("has 960000 ppm of RT bandwidth left"),
        "{error}"
    );
    add_rt(&s, "bare", "100m", json!([]));
    let error = preparer.prepare(vec![reference("bare")]).await["bare"]
        .clone()
        .unwrap_err();
    assert!(error.contains("needs an RtConfig"), "{error}");

    // The placement survives a restart; unprepared bandwidth is free again.
    drop(preparer);
    let mut slices = SliceConfig::new(NODE);
    slices.rt_bandwidth = true;
    let restarted = s.preparer_with("boot-2", slices);
    assert!(restarted.prepare(vec![reference("rt1")]).await["rt1"].is_ok());
    assert_eq!(task_cpus("rt1"), "0,1");
    restarted.unprepare(vec![reference("rt1")]).await;
    add_rt(&s, "rt3", "900m", rt_config(900, 1000, 1));
    assert!(restarted.prepare(vec![reference("rt3")]).await["rt3"].is_ok());
    assert_eq!(task_cpus("rt3"), "0");
}

#[tokio::test]
async fn a_gpu_gone_from_the_machine_is_refused_while_published_as_missing() {
    let s = Setup::new();
    let mut health = crate::health::Health::default();
    let mut seen = s.inventory.read().unwrap().clone();
    health.apply(&mut seen);
    let gone = hal::PciAddress::parse("0008:06:00.0").unwrap();
    let mut now = seen.clone();
    now.gpus.retain(|g| g.pci_address != gone);
    now.pci.retain(|f| f.address != gone);
    // Gone after two rescans in a row without it.
    let mut first = now.clone();
    health.apply(&mut first);
    health.apply(&mut now);
    *s.inventory.write().unwrap() = now;
    s.claims
        .add("u1", &[("gpu", "gpu-0008-06-00-0")], json!([]));
    s.claims
        .add("u2", &[("gpu", "gpu-0009-06-00-0")], json!([]));
    let preparer = s.preparer("boot-1");
    let results = preparer
        .prepare(vec![reference("u1"), reference("u2")])
        .await;
    let error = results["u1"].clone().unwrap_err();
    assert!(
        error.contains("the GPU was seen and is gone from the machine")
            && error.contains("(tainted unhealthy=missing)"),
        "{error}"
    );
    assert!(results["u2"].is_ok(), "the other GPUs are fine");
}

#[tokio::test]
async fn a_cpu_taken_offline_is_refused_while_published_as_offline() {
    let s = Setup::new();
    let mut health = crate::health::Health::default();
    let mut seen = s.inventory.read().unwrap().clone();
    health.apply(&mut seen);
    let mut now = seen.clone();
    for cpu in &mut now.cpu.as_mut().unwrap().cpus {
        if cpu.id == 3 {
            cpu.online = false;
        }
    }
    health.apply(&mut now);
    *s.inventory.write().unwrap() = now;
    s.claims.add("u1", &[("cpu", "cpu-3")], json!([]));
    s.claims.add("u2", &[("cpu", "cpu-4")], json!([]));
    let mut slices = SliceConfig::new(NODE);
    slices.cpu_mode = crate::slices::CpuMode::Individual;
    let preparer = s.preparer_with("boot-1", slices);
    let results = preparer
        .prepare(vec![reference("u1"), reference("u2")])
        .await;
    let error = results["u1"].clone().unwrap_err();
    assert!(
        error.contains("CPU 3 was online and is offline now")
            && error.contains("(tainted unhealthy=offline)"),
        "{error}"
    );
    assert!(results["u2"].is_ok(), "{:?}", results["u2"]);
}

#[tokio::test]
async fn vfs_made_for_a_prepare_that_then_fails_are_removed_and_orphans_go_before_a_whole_gpu() {
    let s = Setup::on("i915");
    let mut slices = SliceConfig::new(NODE);
    slices.gpu_partitions = 2;
    slices.rt_bandwidth = true;
    let pf = hal::PciAddress::parse("0000:4d:00.0").unwrap();
    let num_vfs = || {
        hal::SriovPf::sriov_state(s.binder.as_ref(), pf)
            .unwrap()
            .unwrap()
            .num_vfs
    };
    // The partition's VFs are made, then the RT device without an RtConfig fails the claim.
    s.claims.add(
        "fails",
        &[("gpu", "gpu-0000-4d-00-0-vf0"), ("rt", "rt-numa-0")],
        json!([]),
    );
    let preparer = s.preparer_with("boot-1", slices);
    let error = preparer.prepare(vec![reference("fails")]).await["fails"]
        .clone()
        .unwrap_err();
    assert!(error.contains("needs an RtConfig"), "{error}");
    assert_eq!(num_vfs(), 0, "the VFs made for it are gone");

    // VFs no claim holds (as after a crash) are removed before the whole GPU is given.
    hal::SriovPf::set_num_vfs(s.binder.as_ref(), pf, 2).unwrap();
    s.claims
        .add("whole", &[("gpu", "gpu-0000-4d-00-0")], json!([]));
    assert!(preparer.prepare(vec![reference("whole")]).await["whole"].is_ok());
    assert_eq!(num_vfs(), 0);
}

#[tokio::test]
async fn a_partition_claim_interrupted_by_a_crash_gives_its_vfs_back_at_restart() {
    let s = Setup::on("i915");
    let slices = || {
        let mut slices = SliceConfig::new(NODE);
        slices.gpu_partitions = 2;
        slices
    };
    let pf = hal::PciAddress::parse("0000:4d:00.0").unwrap();
    let num_vfs = || {
        hal::SriovPf::sriov_state(s.binder.as_ref(), pf)
            .unwrap()
            .unwrap()
            .num_vfs
    };
    s.claims
        .add("p0", &[("gpu", "gpu-0000-4d-00-0-vf0")], json!([]));
    let crashing = s
        .preparer_with("boot-1", slices())
        .with_faults(Arc::new(|at| {
            if at == Step::Started {
                Err("crash".into())
            } else {
                Ok(())
            }
        }));
    assert!(crashing.prepare(vec![reference("p0")]).await["p0"].is_err());
    assert_eq!(num_vfs(), 2, "the crash left the VFs");
    drop(crashing);
    // The restart rolls the started claim back, VFs included.
    let _restarted = s.preparer_with("boot-1", slices());
    assert_eq!(num_vfs(), 0);
}

/// The NRI plugin against the preparer: claims as they are prepared and unprepared.
mod claim_input;
mod concurrency;
mod demo;
mod direct;
mod durability;
mod error_kinds;
mod metadata;
mod nri;
mod overrides;
mod status_clear;
mod status_retry;
mod status_uid;
mod vfio;
