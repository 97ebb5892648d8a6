//! [`Preparer`]: NodePrepareResources and NodeUnprepareResources for this driver's devices.
//!
//! Per claim: read the ResourceClaim, take this driver's devices on this node and their strictly
//! decoded configuration, record the claim as `Started` in the checkpoint (before any change), prepare
//! the devices, write the claim's CDI spec atomically, record it as `Completed`, answer with CDI ids.
//! Calls are serialized (one claim at a time, as the kubelet helper does by default), so the state is
//! never torn and no device goes to two claims that do not share it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::Api;

use super::api::{
    BoxFuture, ClaimRef, DraHandler, PrepareResults, PreparedDevice, UnprepareResults,
};
use super::cdi::{CdiDir, Device as CdiDevice, Spec, qualified_device};
use super::checkpoint::files::Durability;
use super::checkpoint::{CheckpointFile, ClaimRecord, Phase};
use super::claims::{Allocated, allocated_devices};
use super::cpus::{Placement, allocate};
use crate::inventory::Inventory;
use crate::nri::policy::ClaimCpus;
use crate::slices::SliceConfig;
use crate::slices::devices::{DeviceSource, devices_with_sources};
use edits::{claim_env, container_edits};

mod edits;
mod recover;

/// The points between the writes of a prepare, where tests inject a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The claim is recorded as started.
    Started,
    /// The devices are prepared.
    DevicesPrepared,
    /// The CDI spec is written.
    CdiWritten,
    /// The claim is recorded as completed.
    Completed,
}

/// A test hook called after each step; an error stops the prepare right there, as a crash would.
pub type FaultHook = Arc<dyn Fn(Step) -> Result<(), String> + Send + Sync>;

/// Where claims are read from.
pub trait ClaimSource: Send + Sync {
    /// The ResourceClaim `namespace/name`; `Ok(None)` when it does not exist.
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, String>>;

    /// Replaces this driver's entries in the claim's `status.devices` (server-side apply with the driver
    /// as field manager; an empty list removes them). Sources that cannot write do nothing.
    fn set_device_status(
        &self,
        _namespace: &str,
        _name: &str,
        _driver: &str,
        _devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why a claim's device status was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusWriteError {
    /// The API server refused the plugin the write (403): a configuration error of the cluster, not of
    /// the claim. Kubernetes 1.36+ checks, besides `patch` on `resourceclaims/status`,
    /// `associated-node:patch` on `resourceclaims/driver` for the driver's name.
    #[error("{0}")]
    Forbidden(String),
    /// Any other failure (unreachable, timed out, a conflict).
    #[error("{0}")]
    Failed(String),
}

/// Claims from the API server.
pub struct KubeClaims(pub kube::Client);

impl ClaimSource for KubeClaims {
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<Option<ResourceClaim>, String>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.0.clone(), namespace);
        let name = name.to_owned();
        let namespace = namespace.to_owned();
        Box::pin(async move {
            api.get_opt(&name)
                .await
                .map_err(|e| format!("reading ResourceClaim {namespace}/{name}: {e}"))
        })
    }

    fn set_device_status(
        &self,
        namespace: &str,
        name: &str,
        driver: &str,
        devices: Vec<serde_json::Value>,
    ) -> BoxFuture<'_, Result<(), StatusWriteError>> {
        let api: Api<ResourceClaim> = Api::namespaced(self.0.clone(), namespace);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let params = kube::api::PatchParams::apply(driver).force();
        let driver = driver.to_owned();
        Box::pin(async move {
            let body = serde_json::json!({
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "status": {"devices": devices}
            });
            api.patch_status(&name, &params, &kube::api::Patch::Apply(body))
                .await
                .map(|_| ())
                .map_err(|e| match &e {
                    kube::Error::Api(status) if status.code == 403 => {
                        StatusWriteError::Forbidden(format!(
                            "the API server forbids writing the device status of ResourceClaim \
                             {namespace}/{name} ({e}): grant patch on resourceclaims/status and, on \
                             Kubernetes 1.36+, associated-node:patch on resourceclaims/driver for \
                             resourceNames [{driver}] (the chart's ClusterRole does)"
                        ))
                    }
                    _ => StatusWriteError::Failed(format!(
                        "writing the device status of ResourceClaim {namespace}/{name}: {e}"
                    )),
                })
        })
    }
}

/// Everything the preparer needs besides the claims.
pub struct PreparerConfig {
    /// Driver name, pool name and the rest of the slice model (device names come from it).
    pub slices: SliceConfig,
    /// The CDI spec directory.
    pub cdi: CdiDir,
    /// The checkpoint file.
    pub checkpoint: CheckpointFile,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Driver binding of network functions and VF creation (`SysfsSriov` with a writer on a node, the
    /// emulated kernel of a fixture).
    pub binder: Arc<dyn hal::SriovPf>,
    /// GPUs as they are now (the VFs of a GPU partition appear after its first prepare).
    pub gpus: Arc<dyn hal::GpuDevice>,
    /// Where device nodes are on the host when not at their container paths (stand-in nodes for a
    /// fixture): CDI device nodes get `hostPath` under it.
    pub dev_root: Option<std::path::PathBuf>,
}

/// The driver to bind a device to, and the one to give it back on unprepare.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebind {
    /// The function.
    pub function: hal::PciAddress,
    /// Bound for the claim.
    pub driver: String,
    /// Bound before (none: unbound).
    pub original: Option<String>,
}

/// The DRA handler of the plugin.
pub struct Preparer {
    config: PreparerConfig,
    kind: String,
    claims: Arc<dyn ClaimSource>,
    inventory: Arc<RwLock<Inventory>>,
    state: tokio::sync::Mutex<BTreeMap<String, ClaimRecord>>,
    faults: Option<FaultHook>,
    cpu_claims: tokio::sync::watch::Sender<BTreeMap<String, ClaimCpus>>,
    /// The checkpoint was rebuilt at start: CDI specs no record owns may belong to live claims and
    /// are kept.
    rebuilt: bool,
    /// Device status writes the API server forbade (a configuration error).
    status_forbidden: Arc<std::sync::atomic::AtomicU64>,
}

impl Preparer {
    /// Loads the checkpoint (a corrupt one is reported through `tracing` and replaced), rolls back
    /// claims a crash left `Started`, and serves the devices of `inventory` (shared with the publisher,
    /// which refreshes it).
    pub fn new(
        config: PreparerConfig,
        claim_source: Arc<dyn ClaimSource>,
        inventory: Arc<RwLock<Inventory>>,
    ) -> std::io::Result<Preparer> {
        let loaded = config.checkpoint.load().map_err(std::io::Error::other)?;
        for temp in &loaded.removed_temps {
            tracing::info!(file = %temp.display(), "removed a temp file of an interrupted write");
        }
        if loaded.migrated > 0 {
            tracing::info!(claims = loaded.migrated, dir = %config.checkpoint.path().display(),
                "moved the claims of checkpoint.json into one file per claim");
        }
        let kind = format!("{}/device", config.slices.driver_name);
        let mut claims = loaded.claims;
        for bad in &loaded.discarded {
            tracing::warn!(reason = %bad.why, "checkpoint discarded; rebuilding from the CDI specs");
        }
        // A lost or unusable checkpoint: the specs on disk are claims this driver prepared, not
        // orphans. The whole of it: every spec without a record; one claim's file: that claim.
        let whole = loaded.missing || loaded.discarded.iter().any(|d| d.uid.is_none());
        let lost: Vec<&str> = loaded
            .discarded
            .iter()
            .filter_map(|d| d.uid.as_deref())
            .collect();
        let mut rebuilt_any = false;
        let wanted = |uid: &str| !claims.contains_key(uid) && (whole || lost.contains(&uid));
        let recovered = match whole || !lost.is_empty() {
            true => recover::from_cdi_specs(&config, &kind, &wanted),
            false => BTreeMap::new(),
        };
        for (uid, record) in recovered {
            config
                .checkpoint
                .put(&record, Durability::Synced)
                .map_err(std::io::Error::other)?;
            claims.insert(uid, record);
            rebuilt_any = true;
        }
        let rebuilt = !loaded.discarded.is_empty() || loaded.missing && rebuilt_any;
        let started: Vec<String> = claims
            .iter()
            .filter(|(_, r)| r.phase == Phase::Started)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &started {
            tracing::info!(claim = %uid, "rolling back a claim whose prepare was interrupted");
            if let Some(record) = claims.remove(uid) {
                undo_record(&config, &kind, &record).map_err(std::io::Error::other)?;
                config
                    .checkpoint
                    .remove(uid)
                    .map_err(std::io::Error::other)?;
                for error in super::partitions::release(config.binder.as_ref(), &claims, &record) {
                    tracing::warn!(claim = %uid, %error, "GPU partitions not released");
                }
            }
        }
        let (cpu_claims, _) = tokio::sync::watch::channel(cpu_claims_of(&claims));
        Ok(Preparer {
            config,
            kind,
            claims: claim_source,
            inventory,
            state: tokio::sync::Mutex::new(claims),
            faults: None,
            cpu_claims,
            rebuilt,
            status_forbidden: Arc::default(),
        })
    }

    /// How many device status writes the API server forbade, for `/metrics`.
    pub fn status_forbidden(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.status_forbidden.clone()
    }

    /// Injects a crash after a step (tests).
    pub fn with_faults(mut self, hook: FaultHook) -> Self {
        self.faults = Some(hook);
        self
    }

    /// The CDI kind of this driver's specs (`<driver>/device`).
    pub fn cdi_kind(&self) -> &str {
        &self.kind
    }

    /// The CPUs each claim holds, updated whenever the checkpoint is written (for the NRI plugin).
    pub fn cpu_claims(&self) -> tokio::sync::watch::Receiver<BTreeMap<String, ClaimCpus>> {
        self.cpu_claims.subscribe()
    }

    /// UIDs of the claims in the checkpoint, with their phase.
    pub async fn recorded(&self) -> BTreeMap<String, Phase> {
        self.state
            .lock()
            .await
            .iter()
            .map(|(uid, r)| (uid.clone(), r.phase))
            .collect()
    }

    /// Applies a VF provisioning policy while holding the claim state, so no prepare runs meanwhile:
    /// PFs whose VFs are prepared are left alone. The caller rescans and republishes afterwards.
    pub async fn provision(
        &self,
        policy: &super::provision::VfPolicy,
        source: &std::path::Path,
    ) -> Vec<super::provision::Outcome> {
        let state = self.state.lock().await;
        let Ok(inventory) = self.inventory.read() else {
            return Vec::new();
        };
        let published: BTreeMap<String, DeviceSource> =
            devices_with_sources(&inventory, &self.config.slices)
                .into_iter()
                .map(|(d, s)| (d.name, s))
                .collect();
        let in_use: std::collections::BTreeSet<hal::PciAddress> = state
            .values()
            .flat_map(|r| r.devices.iter())
            .filter_map(|d| match published.get(&d.device_name) {
                Some(DeviceSource::Nic { function, .. }) => Some(function.address),
                _ => None,
            })
            .chain(
                state
                    .values()
                    .flat_map(|r| r.undo.values())
                    .filter_map(|v| serde_json::from_value::<Rebind>(v.clone()).ok())
                    .map(|r| r.function),
            )
            .collect();
        super::provision::apply(
            policy,
            source,
            &inventory,
            self.config.binder.as_ref(),
            &in_use,
        )
    }

    /// Unprepares the recorded claims that no longer exist (deleted, or re-created with another UID)
    /// and removes CDI specs of this driver that no recorded claim owns. Returns the UIDs cleaned.
    pub async fn clean_stale(&self) -> Vec<String> {
        let recorded: Vec<ClaimRef> = self
            .state
            .lock()
            .await
            .values()
            .map(|r| r.claim.clone())
            // A claim rebuilt from a spec that does not name it is kept until the kubelet
            // unprepares it.
            .filter(|c| !c.namespace.is_empty() && !c.name.is_empty())
            .collect();
        let mut stale = Vec::new();
        for claim in recorded {
            match self.claims.get(&claim.namespace, &claim.name).await {
                Ok(Some(found)) if found.metadata.uid.as_deref() == Some(claim.uid.as_str()) => {}
                Ok(_) => stale.push(claim),
                Err(error) => tracing::warn!(%error, "cannot check whether a claim still exists"),
            }
        }
        let uids: Vec<String> = stale.iter().map(|c| c.uid.clone()).collect();
        for (uid, result) in self.unprepare_claims(stale).await {
            if let Err(error) = result {
                tracing::warn!(claim = %uid, %error, "cleaning a stale claim failed");
            }
        }
        let owned: Vec<String> = self.state.lock().await.keys().cloned().collect();
        let orphans = match self.rebuilt {
            true => Vec::new(),
            false => self.config.cdi.list_claim_specs(&self.kind),
        };
        for uid in orphans {
            if !owned.contains(&uid)
                && let Err(error) = self.config.cdi.remove_claim_spec(&self.kind, &uid)
            {
                tracing::warn!(claim = %uid, %error, "removing a stale CDI spec failed");
            }
        }
        uids
    }

    async fn prepare_claims(&self, claims: Vec<ClaimRef>) -> PrepareResults {
        let mut results = BTreeMap::new();
        for claim in claims {
            let uid = claim.uid.clone();
            let result = self.prepare_one(claim).await;
            if let Err(error) = &result {
                tracing::warn!(claim = %uid, %error, "prepare failed");
            }
            results.insert(uid, result);
        }
        results
    }

    async fn prepare_one(&self, claim: ClaimRef) -> Result<Vec<PreparedDevice>, String> {
        super::claims::check_claim_ref(&claim).map_err(|e| e.to_string())?;
        let mut state = self.state.lock().await;
        if let Some(record) = state.get(&claim.uid).cloned() {
            if record.phase == Phase::Completed && record.recovered {
                // Rebuilt from its CDI spec: completed with what the claim says, keeping its CPUs
                // and spec, when the devices match; redone otherwise.
                let resource_claim = self.claims.get(&claim.namespace, &claim.name).await?;
                let completed =
                    recover::complete(record.clone(), &claim, resource_claim, &self.config);
                if let Some(record) = completed {
                    self.commit(&mut state, &claim.uid, Some(record.clone()))?;
                    return self.redo_completed(&mut state, record);
                }
            }
            match record.phase {
                Phase::Completed if !record.recovered => {
                    return self.redo_completed(&mut state, record);
                }
                // Started, or rebuilt from a spec that does not match the claim: redone.
                _ => {
                    self.undo(&record)
                        .map_err(|e| format!("rolling back: {e}"))?;
                    self.commit(&mut state, &claim.uid, None)?;
                    self.release_partitions(&state, &record);
                }
            }
        }
        let resource_claim = self
            .claims
            .get(&claim.namespace, &claim.name)
            .await?
            .ok_or_else(|| format!("ResourceClaim {}/{} not found", claim.namespace, claim.name))?;
        let allocated = allocated_devices(
            &claim,
            &resource_claim,
            &self.config.slices.driver_name,
            &self.config.slices.node_name,
        )
        .map_err(|e| e.to_string())?;
        let (mut sources, shareable) = self.sources(&allocated)?;
        self.check_exclusive(&state, &claim.uid, &allocated, &shareable)?;
        let partitioned = {
            let inventory = self
                .inventory
                .read()
                .map_err(|_| "inventory lock poisoned".to_owned())?;
            inventory
                .gpus
                .iter()
                .filter(|g| {
                    crate::slices::partitions::partition_count(g, &inventory, &self.config.slices)
                        .is_some()
                })
                .map(|g| g.pci_address)
                .collect()
        };
        let partition_undo = super::partitions::prepare(
            self.config.binder.as_ref(),
            self.config.gpus.as_ref(),
            &state,
            &claim.uid,
            &mut sources,
            &partitioned,
        )?;
        let planned = (|| {
            let rebinds = {
                let inventory = self
                    .inventory
                    .read()
                    .map_err(|_| "inventory lock poisoned".to_owned())?;
                rebinds(&allocated, &sources, &inventory)?
            };
            let cpus = self.place_cpus(&state, &claim.uid, &allocated, &sources)?;
            let rt = self.place_rt(&state, &claim.uid, &allocated, &sources, &cpus)?;
            let (spec, devices) = self.plan(&claim, &allocated, &sources, &cpus, &rt)?;
            Ok::<_, String>((rebinds, cpus, rt, spec, devices))
        })();
        let planned = planned.and_then(|(rebinds, cpus, rt, spec, devices)| {
            let record = ClaimRecord {
                claim: claim.clone(),
                phase: Phase::Started,
                boot_id: self.config.boot_id.clone(),
                devices: devices.clone(),
                cdi_spec: serde_json::to_value(&spec).map_err(|e| e.to_string())?,
                undo: rebinds
                    .iter()
                    .filter_map(|r| Some((r.function.to_string(), serde_json::to_value(r).ok()?)))
                    .chain(partition_undo.clone())
                    .collect(),
                cpus,
                rt,
                pods: reserved_pods(&resource_claim),
                recovered: false,
            };
            self.config
                .checkpoint
                .check_claim(&record)
                .map_err(|e| e.to_string())?;
            // Recorded before the first write, with what undoes it: a crash at any point can be
            // rolled back. A failed write leaves memory as the file is.
            self.commit(&mut state, &claim.uid, Some(record.clone()))?;
            Ok((rebinds, spec, devices, record))
        });
        let (rebinds, spec, devices, mut record) = match planned {
            Ok(planned) => planned,
            Err(error) => {
                // VFs made for partitions above go again when no claim holds them.
                let keys = partition_undo.keys().cloned().collect::<Vec<_>>();
                for e in super::partitions::release_keys(
                    self.config.binder.as_ref(),
                    &state,
                    &claim.uid,
                    &keys,
                ) {
                    tracing::warn!(claim = %claim.uid, error = %e, "GPU partitions not released");
                }
                return Err(error);
            }
        };
        self.fault(Step::Started)?;
        for rebind in &rebinds {
            if let Err(e) = self
                .config
                .binder
                .bind_driver(rebind.function, &rebind.driver)
            {
                let error = format!("binding {} to {}: {e}", rebind.function, rebind.driver);
                return Err(self.abandon(&mut state, &record, error));
            }
        }
        self.fault(Step::DevicesPrepared)?;
        if let Err(e) = self.config.cdi.write_claim_spec(&claim.uid, &spec) {
            // A real failure (a full disk), not a crash: undo now so nothing is left half done.
            let error = format!("writing the CDI spec: {e}");
            return Err(self.abandon(&mut state, &record, error));
        }
        self.fault(Step::CdiWritten)?;
        let started = record.clone();
        record.phase = Phase::Completed;
        if let Err(error) = self.commit(&mut state, &claim.uid, Some(record)) {
            // The file still says started: undo now rather than answer from memory.
            return Err(self.abandon(&mut state, &started, error));
        }
        self.fault(Step::Completed)?;
        // What a CNI needs to attach the network functions, in the claim's device status. Not fatal:
        // the API server may not allow it (an older release, RBAC); the CDI env says the same.
        let statuses = self.network_status(&allocated, &sources);
        if !statuses.is_empty() {
            let driver = &self.config.slices.driver_name;
            if let Err(error) = self
                .claims
                .set_device_status(&claim.namespace, &claim.name, driver, statuses)
                .await
            {
                match error {
                    StatusWriteError::Forbidden(error) => {
                        self.status_forbidden
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(claim = %claim.uid, %error,
                            "configuration error: device status not written");
                    }
                    StatusWriteError::Failed(error) => {
                        tracing::warn!(claim = %claim.uid, %error, "device status not written");
                    }
                }
            }
        }
        Ok(devices)
    }

    /// A completed claim asked again (kubelet restart, node reboot): the same devices, and its CDI spec
    /// written again (after a reboot `/var/run/cdi` is empty).
    fn redo_completed(
        &self,
        state: &mut BTreeMap<String, ClaimRecord>,
        mut record: ClaimRecord,
    ) -> Result<Vec<PreparedDevice>, String> {
        let spec: Spec = serde_json::from_value(record.cdi_spec.clone())
            .map_err(|e| format!("checkpointed CDI spec: {e}"))?;
        self.config
            .cdi
            .write_claim_spec(&record.claim.uid, &spec)
            .map_err(|e| e.to_string())?;
        if record.boot_id != self.config.boot_id {
            record.boot_id = self.config.boot_id.clone();
            let devices = record.devices.clone();
            let uid = record.claim.uid.clone();
            self.commit(state, &uid, Some(record))?;
            return Ok(devices);
        }
        Ok(record.devices)
    }

    /// The machine side of each allocated device, and whether each is published with
    /// `allowMultipleAllocations`; a device this node does not publish is an error.
    fn sources(&self, allocated: &[Allocated]) -> Result<(Vec<DeviceSource>, Vec<bool>), String> {
        let inventory = self
            .inventory
            .read()
            .map_err(|_| "inventory lock poisoned".to_owned())?;
        let published: BTreeMap<String, (DeviceSource, bool)> =
            devices_with_sources(&inventory, &self.config.slices)
                .into_iter()
                .map(|(d, s)| (d.name, (s, d.allow_multiple_allocations == Some(true))))
                .collect();
        allocated
            .iter()
            .map(|a| {
                let (source, shareable) = published.get(&a.device).cloned().ok_or_else(|| {
                    format!(
                        "device {} is not published on this node (any more)",
                        a.device
                    )
                })?;
                if let DeviceSource::Gpu(gpu) = &source
                    && let Some(unhealthy) = inventory.gpu_health.get(&gpu.pci_address)
                    && unhealthy.reason == crate::health::MISSING
                {
                    return Err(format!(
                        "device {}: the GPU is gone from the machine (tainted unhealthy=missing)",
                        a.device
                    ));
                }
                Ok((source, shareable))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(|pairs| pairs.into_iter().unzip())
    }

    /// `status.devices` entries for the claim's network functions: `networkData.interfaceName` (the
    /// requested name in the pod, else the host netdev) and `data` with the PCI address, netdev, RDMA
    /// device and network attachment.
    fn network_status(
        &self,
        allocated: &[Allocated],
        sources: &[DeviceSource],
    ) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (a, source) in allocated.iter().zip(sources) {
            let DeviceSource::Nic { function, rdma } = source else {
                continue;
            };
            let vf = a.vf.as_ref();
            let netdev = function.netdevs.first();
            let mut data = serde_json::Map::new();
            data.insert("pciAddress".into(), function.address.to_string().into());
            if let Some(netdev) = netdev {
                data.insert("netdev".into(), netdev.clone().into());
            }
            if let Some(rdma) = rdma {
                data.insert("rdmaDevice".into(), rdma.name.clone().into());
            }
            if let Some(network) = vf.and_then(|v| v.net_attach_def_name.clone()) {
                let namespace = vf.and_then(|v| v.net_attach_def_namespace.clone());
                let full = namespace.map_or(network.clone(), |ns| format!("{ns}/{network}"));
                data.insert("network".into(), full.into());
            }
            let mut entry = serde_json::json!({
                "driver": self.config.slices.driver_name,
                "pool": self.config.slices.node_name,
                "device": a.device,
                "data": data,
            });
            if let Some(name) = vf
                .and_then(|v| v.if_name.clone())
                .or_else(|| netdev.cloned())
                && let Some(map) = entry.as_object_mut()
            {
                map.insert(
                    "networkData".into(),
                    serde_json::json!({"interfaceName": name}),
                );
            }
            out.push(entry);
        }
        out
    }

    /// The CPUs of each CPU device of the claim: an individual CPU is itself; a group gives the CPUs the
    /// claim's `CpuConfig` names (checked: in the group, free, as many as consumed) or those the
    /// topology-aware policy picks, never one another claim holds.
    fn place_cpus(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        sources: &[DeviceSource],
    ) -> Result<BTreeMap<String, hal::CpuSet>, String> {
        // Other claims' exclusive CPUs, and the CPUs their real-time tasks run on.
        let mut taken: hal::CpuSet = state
            .iter()
            .filter(|(other, _)| other.as_str() != uid)
            .flat_map(|(_, r)| {
                r.cpus
                    .values()
                    .flat_map(hal::CpuSet::iter)
                    .chain(r.rt.values().flatten().map(|t| t.cpu))
                    .collect::<Vec<_>>()
            })
            .collect();
        let inventory = self
            .inventory
            .read()
            .map_err(|_| "inventory lock poisoned".to_owned())?;
        let mut placed = BTreeMap::new();
        for (a, source) in allocated.iter().zip(sources) {
            let cpus = match source {
                DeviceSource::Cpu(id) => hal::CpuSet::from_iter([*id]),
                DeviceSource::CpuGroup(group) => {
                    let want = a.consumed_cpus.unwrap_or(group.len());
                    match &a.cpu {
                        Some(config) => {
                            let asked = &config.cpuset;
                            if !asked.is_subset(group) {
                                return Err(format!(
                                    "{}: CpuConfig cpuset {asked} is not within the group's allocatable CPUs {group} (offline or reserved CPUs are not)",
                                    a.device
                                ));
                            }
                            let busy = asked.intersection(&taken);
                            if !busy.is_empty() {
                                return Err(format!(
                                    "{}: CPUs {busy} are held by another claim",
                                    a.device
                                ));
                            }
                            if asked.len() != want {
                                return Err(format!(
                                    "{}: CpuConfig cpuset {asked} has {} CPUs, the claim consumes {want}",
                                    a.device,
                                    asked.len()
                                ));
                            }
                            asked.clone()
                        }
                        None => {
                            let topology = inventory
                                .cpu
                                .as_ref()
                                .ok_or("the CPU topology could not be read")?;
                            allocate(topology, group, &taken, want, Placement::Packed)
                                .map_err(|e| format!("{}: {e}", a.device))?
                        }
                    }
                }
                _ => continue,
            };
            taken = taken.union(&cpus);
            placed.insert(a.device.clone(), cpus);
        }
        Ok(placed)
    }

    /// The real-time tasks of each `rt-<group>` device of the claim: placed worst-fit on the group's
    /// CPUs that no claim holds exclusively (this one included), with the other claims' tasks counted.
    fn place_rt(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        sources: &[DeviceSource],
        own: &BTreeMap<String, hal::CpuSet>,
    ) -> Result<BTreeMap<String, Vec<super::rt::RtTask>>, String> {
        let others = state.iter().filter(|(other, _)| other.as_str() != uid);
        let exclusive: hal::CpuSet = others
            .clone()
            .flat_map(|(_, r)| {
                r.cpus
                    .values()
                    .flat_map(hal::CpuSet::iter)
                    .collect::<Vec<_>>()
            })
            .chain(own.values().flat_map(hal::CpuSet::iter))
            .collect();
        let mut placed_tasks: Vec<super::rt::RtTask> = others
            .flat_map(|(_, r)| r.rt.values().flatten().copied())
            .collect();
        let mut placed = BTreeMap::new();
        for (a, source) in allocated.iter().zip(sources) {
            let DeviceSource::RtGroup { cpus, per_cpu } = source else {
                continue;
            };
            let config = a.rt.as_ref().ok_or_else(|| {
                format!(
                    "{}: an RT bandwidth device needs an RtConfig (runtimeUs, periodUs, tasks)",
                    a.device
                )
            })?;
            let free: hal::CpuSet = cpus.iter().filter(|c| !exclusive.contains(*c)).collect();
            let tasks = super::rt::place(
                config,
                &free,
                &placed_tasks,
                *per_cpu,
                a.consumed_rt,
                &a.device,
            )?;
            placed_tasks.extend(tasks.iter().copied());
            placed.insert(a.device.clone(), tasks);
        }
        Ok(placed)
    }

    /// A device given exclusively must not be in another claim (the scheduler ensures it; a stale
    /// checkpoint or a race with a re-created claim must not break it).
    fn check_exclusive(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        shareable: &[bool],
    ) -> Result<(), String> {
        // Devices published with `allowMultipleAllocations` (CPU groups, RT bandwidth) are shared by
        // design; CPUs and tasks are checked one by one. A `shareID` on any other device (a GPU, a
        // VF) gives it no second owner.
        let exclusive = allocated
            .iter()
            .zip(shareable)
            .filter(|(a, shareable)| !**shareable && !a.admin_access)
            .map(|(a, _)| a);
        for a in exclusive {
            for (other, record) in state.iter().filter(|(other, _)| other.as_str() != uid) {
                if record.devices.iter().any(|d| d.device_name == a.device) {
                    return Err(format!(
                        "device {} is already prepared for claim {other}",
                        a.device
                    ));
                }
            }
        }
        Ok(())
    }

    /// The claim's CDI spec and the answer to the kubelet.
    fn plan(
        &self,
        claim: &ClaimRef,
        allocated: &[Allocated],
        sources: &[DeviceSource],
        cpus: &BTreeMap<String, hal::CpuSet>,
        rt: &BTreeMap<String, Vec<super::rt::RtTask>>,
    ) -> Result<(Spec, Vec<PreparedDevice>), String> {
        let mut cdi_devices = Vec::new();
        let mut prepared = Vec::new();
        let mut claim_env = claim_env(allocated, sources);
        let tasks: Vec<super::rt::RtTask> = rt.values().flatten().copied().collect();
        claim_env.extend(super::rt::env(&tasks));
        // Names the claim in its spec, so a lost checkpoint can be rebuilt from the specs.
        claim_env.push(format!(
            "{}={}/{}",
            recover::CLAIM_ENV,
            claim.namespace,
            claim.name
        ));
        let all_cpus: hal::CpuSet = cpus.values().flat_map(hal::CpuSet::iter).collect();
        if !all_cpus.is_empty() {
            claim_env.push(format!(
                "DRA_CPUSET_{}={}",
                claim.uid,
                all_cpus.to_cpulist()
            ));
            claim_env.push(format!("DRA_HAL_CPUSET={}", all_cpus.to_cpulist()));
        }
        // A config env that applies to every device of the claim is written once, in the spec's own
        // edits (applied whenever any of its devices is), not once per device.
        let shared_config = match allocated {
            [first, rest @ ..]
                if !rest.is_empty()
                    && !first.config.env.is_empty()
                    && rest.iter().all(|a| a.config.env == first.config.env) =>
            {
                Some(&first.config.env)
            }
            _ => None,
        };
        for (a, source) in allocated.iter().zip(sources) {
            let name = format!("{}-{}", claim.uid, a.device);
            let vfio = a.vf.as_ref().and_then(|v| v.driver.as_deref()) == Some("vfio-pci")
                || a.gpu.as_ref().and_then(|g| g.driver.as_deref()) == Some("vfio-pci");
            let vfio_group = match source {
                _ if !vfio => None,
                DeviceSource::Nic { function, .. } => Some(function.iommu_group),
                DeviceSource::Gpu(gpu) => Some(
                    self.inventory
                        .read()
                        .ok()
                        .and_then(|i| i.function(gpu.pci_address).and_then(|f| f.iommu_group)),
                ),
                _ => None,
            };
            let mut edits = container_edits(source, vfio_group);
            if let Some(root) = &self.config.dev_root {
                for node in &mut edits.device_nodes {
                    let host = root.join(node.path.trim_start_matches('/'));
                    node.host_path = Some(host.to_string_lossy().into_owned());
                }
            }
            edits.env.extend(claim_env.iter().cloned());
            if shared_config.is_none() {
                edits
                    .env
                    .extend(a.config.env.iter().map(|(k, v)| format!("{k}={v}")));
            }
            cdi_devices.push(CdiDevice {
                name: name.clone(),
                annotations: None,
                container_edits: edits,
            });
            prepared.push(PreparedDevice {
                request_names: vec![a.request.clone()],
                pool_name: self.config.slices.node_name.clone(),
                device_name: a.device.clone(),
                cdi_device_ids: vec![qualified_device(&self.kind, &name)],
                share_id: a.share_id.clone(),
            });
        }
        let mut spec = Spec::new(&self.kind, cdi_devices);
        if let Some(env) = shared_config {
            spec.container_edits = Some(super::cdi::ContainerEdits {
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                ..Default::default()
            });
        }
        Ok((spec, prepared))
    }

    /// Removes the VFs of GPUs whose partitions no claim holds any more (after `record` left `state`).
    fn release_partitions(&self, state: &BTreeMap<String, ClaimRecord>, record: &ClaimRecord) {
        for error in super::partitions::release(self.config.binder.as_ref(), state, record) {
            tracing::warn!(claim = %record.claim.uid, %error, "GPU partitions not released");
        }
    }

    fn undo(&self, record: &ClaimRecord) -> Result<(), String> {
        undo_record(&self.config, &self.kind, record)
    }

    /// Tells the NRI plugin when the claims' CPUs changed. CPUs count from the moment a claim is
    /// recorded as started: they are reserved before any I/O.
    fn publish_cpus(&self, state: &BTreeMap<String, ClaimRecord>) {
        let now = cpu_claims_of(state);
        self.cpu_claims.send_if_modified(|old| {
            let changed = *old != now;
            *old = now;
            changed
        });
    }

    /// Sets (or with `None` removes) the record of `uid` and writes (or removes) its file: a
    /// completed record is fsynced, a started one is not (see [`super::checkpoint`]). When the write
    /// fails the record is put back as it was, so memory always says what the file says.
    fn commit(
        &self,
        state: &mut BTreeMap<String, ClaimRecord>,
        uid: &str,
        record: Option<ClaimRecord>,
    ) -> Result<(), String> {
        let stored = match &record {
            Some(record) => {
                let durability = match record.phase {
                    Phase::Completed => Durability::Synced,
                    Phase::Started => Durability::Unsynced,
                };
                self.config.checkpoint.put(record, durability)
            }
            None => self.config.checkpoint.remove(uid),
        };
        stored.map_err(|e| e.to_string())?;
        match record {
            Some(record) => state.insert(uid.to_owned(), record),
            None => state.remove(uid),
        };
        self.publish_cpus(state);
        Ok(())
    }

    /// Gives up a claim whose prepare failed after it was recorded as started: undoes what was done
    /// and forgets it. When the checkpoint cannot be written, the started record stays (memory and
    /// file agree) and is rolled back by the next prepare or restart. Returns `error`, with what
    /// else failed.
    fn abandon(
        &self,
        state: &mut BTreeMap<String, ClaimRecord>,
        record: &ClaimRecord,
        error: String,
    ) -> String {
        let mut error = error;
        if let Err(e) = self.undo(record) {
            error = format!("{error}; rolling back: {e}");
        }
        match self.commit(state, &record.claim.uid, None) {
            Ok(()) => self.release_partitions(state, record),
            Err(e) => error = format!("{error}; {e}"),
        }
        error
    }

    fn fault(&self, step: Step) -> Result<(), String> {
        match &self.faults {
            Some(hook) => hook(step),
            None => Ok(()),
        }
    }

    async fn unprepare_claims(&self, claims: Vec<ClaimRef>) -> UnprepareResults {
        let mut results = BTreeMap::new();
        for claim in claims {
            if let Err(error) = super::claims::check_claim_ref(&claim) {
                results.insert(claim.uid, Err(error.to_string()));
                continue;
            }
            let mut state = self.state.lock().await;
            let result = match state.get(&claim.uid).cloned() {
                // Unknown claims (never prepared here, or already unprepared) are done.
                None => Ok(()),
                Some(record) => match self.undo(&record) {
                    Ok(()) => {
                        let stored = self.commit(&mut state, &claim.uid, None);
                        if stored.is_ok() {
                            self.release_partitions(&state, &record);
                        }
                        let driver = &self.config.slices.driver_name;
                        let cleared = self
                            .claims
                            .set_device_status(&claim.namespace, &claim.name, driver, Vec::new())
                            .await;
                        if let Err(error) = cleared {
                            tracing::debug!(claim = %claim.uid, %error, "device status not cleared");
                        }
                        stored
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(error) = &result {
                tracing::warn!(claim = %claim.uid, %error, "unprepare failed");
            }
            results.insert(claim.uid, result);
        }
        results
    }
}

/// The CPUs of each claim that holds some, with the pods it is reserved for.
fn cpu_claims_of(state: &BTreeMap<String, ClaimRecord>) -> BTreeMap<String, ClaimCpus> {
    state
        .iter()
        .map(|(uid, r)| {
            let cpus: hal::CpuSet = r.cpus.values().flat_map(hal::CpuSet::iter).collect();
            (uid, cpus, &r.pods)
        })
        .filter(|(_, cpus, _)| !cpus.is_empty())
        .map(|(uid, cpus, pods)| {
            let pods = pods.clone();
            (uid.clone(), ClaimCpus { cpus, pods })
        })
        .collect()
}

/// UIDs of the pods in the claim's `status.reservedFor`.
fn reserved_pods(claim: &ResourceClaim) -> Vec<String> {
    claim
        .status
        .iter()
        .flat_map(|s| s.reserved_for.iter().flatten())
        .filter(|r| r.resource == "pods" && r.api_group.as_deref().unwrap_or_default().is_empty())
        .map(|r| r.uid.clone())
        .collect()
}

/// Gives back what a claim changed: the original driver of every rebound function, then the CDI spec.
fn undo_record(config: &PreparerConfig, kind: &str, record: &ClaimRecord) -> Result<(), String> {
    for value in record.undo.values() {
        let Ok(rebind) = serde_json::from_value::<Rebind>(value.clone()) else {
            continue;
        };
        let result = match &rebind.original {
            Some(original) => config.binder.bind_driver(rebind.function, original),
            None => Ok(()),
        };
        result.map_err(|e| {
            format!(
                "restoring {} to its driver {:?}: {e}",
                rebind.function, rebind.original
            )
        })?;
    }
    config
        .cdi
        .remove_claim_spec(kind, &record.claim.uid)
        .map_err(|e| format!("removing the CDI spec: {e}"))
}

/// The driver changes the claim's VfConfigs ask for. `vfio-pci` is refused for a PF with VFs enabled
/// (unbinding it would destroy them).
fn rebinds(
    allocated: &[Allocated],
    sources: &[DeviceSource],
    inventory: &Inventory,
) -> Result<Vec<Rebind>, String> {
    let mut out = Vec::new();
    for (a, source) in allocated.iter().zip(sources) {
        let wanted =
            a.vf.as_ref()
                .and_then(|vf| vf.driver.clone())
                .or_else(|| a.gpu.as_ref().and_then(|g| g.driver.clone()));
        let Some(driver) = wanted else {
            continue;
        };
        let (address, current) = match source {
            DeviceSource::Nic { function, .. } if a.vf.is_some() => {
                (function.address, function.driver.clone())
            }
            DeviceSource::Gpu(gpu) if a.gpu.is_some() => (gpu.pci_address, gpu.driver.clone()),
            _ => {
                return Err(format!(
                    "{}: a VfConfig applies to network functions, a GpuConfig to GPUs",
                    a.device
                ));
            }
        };
        if current.as_deref() == Some(driver.as_str()) {
            continue;
        }
        let vfs = inventory
            .sriov
            .iter()
            .find(|s| s.pf == address)
            .map_or(0, |s| s.num_vfs);
        if vfs > 0 {
            return Err(format!(
                "{}: {address} has {vfs} VFs enabled; binding it to {driver} would remove them",
                a.device
            ));
        }
        out.push(Rebind {
            function: address,
            driver,
            original: current,
        });
    }
    Ok(out)
}

impl DraHandler for Preparer {
    fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults> {
        Box::pin(self.prepare_claims(claims))
    }

    fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults> {
        Box::pin(self.unprepare_claims(claims))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
