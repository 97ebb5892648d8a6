//! [`Preparer`]: NodePrepareResources and NodeUnprepareResources for this driver's devices.
//!
//! Per claim: read the ResourceClaim (no lock held), take this driver's devices on this node and their
//! strictly decoded configuration, plan and reserve under a short lock (exclusivity against every
//! record, in flight ones included; the `Started` record goes into memory), then with no lock held
//! record it as `Started` in the checkpoint, prepare the devices, write the claim's CDI spec, record
//! it as `Completed`, answer with CDI ids; or roll back through one path. Claims are prepared side by
//! side; one claim's prepare and unprepare are ordered by its claim lock, and a claim asked again
//! while its prepare runs waits for it and gets the same answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use futures_util::future::join_all;

use k8s_openapi::api::resource::v1::ResourceClaim;

use super::api::{ClaimRef, DraHandler, PrepareResults, PreparedDevice, UnprepareResults};
use super::cdi::CdiDir;
use super::checkpoint::files::Durability;
use super::checkpoint::{CheckpointFile, ClaimRecord, Phase};
use crate::inventory::Inventory;
use crate::nri::policy::ClaimCpus;
use crate::slices::SliceConfig;
use crate::slices::devices::{DeviceSource, devices_with_sources};
use apply::{cpu_claims_of, undo_record};
pub use dra_kubelet_plugin::claims::status;
pub use dra_kubelet_plugin::claims::{
    CALL_LIMIT, ClaimReadError, ClaimSource, KubeClaims, StatusChange, StatusWriteError,
};
pub use error::{ErrorKind, InjectedFault, PrepareError};

mod apply;
mod edits;
mod error;
mod metadata;
mod network;
mod overrides;
mod plan;
mod recover;
mod start;

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
pub type FaultHook = Arc<dyn Fn(Step) -> Result<(), InjectedFault> + Send + Sync>;

/// Everything the preparer needs besides the claims.
pub struct PreparerConfig {
    /// Driver name, pool name and the rest of the slice model (device names come from it).
    pub slices: SliceConfig,
    /// The CDI spec directory.
    pub cdi: CdiDir,
    /// The checkpoint file.
    pub checkpoint: CheckpointFile,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`); empty when it could not be read (then a
    /// reboot cannot be told from a restart).
    pub boot_id: String,
    /// Driver binding of network functions and VF creation (`SysfsSriov` with a writer on a node, the
    /// emulated kernel of a fixture).
    pub binder: Arc<dyn hal::SriovPf>,
    /// GPUs as they are now (the VFs of a GPU partition appear after its first prepare).
    pub gpus: Arc<dyn hal::GpuDevice>,
    /// Where device nodes are on the host when not at their container paths (stand-in nodes for a
    /// fixture): CDI device nodes get `hostPath` under it.
    pub dev_root: Option<std::path::PathBuf>,
    /// Whether pod networking runs (`--pod-networking`, with `--nri`): a claim that asks for its
    /// function's netdev in the pod (`netAttachDefName`, a `NetworkConfig`) is refused without it, as
    /// nothing would attach it.
    pub pod_networking: bool,
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
    /// `driver_override` before, put back by the undo; absent in records of earlier versions and
    /// for a function the inventory lacks (see `overrides::to_put_back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_override: Option<overrides::DriverOverride>,
}

/// What one [`Preparer::clean_stale`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// UIDs of the recorded claims unprepared because their ResourceClaim is gone (or re-created
    /// with another UID).
    pub unprepared: Vec<String>,
    /// Recorded claims to clean again: their ResourceClaim could not be read, their unprepare
    /// failed, or, for one rebuilt from its CDI spec, its completed record could not be written
    /// (an I/O error; a record over the size limit waits for the claim's next prepare instead).
    pub left: Vec<ClaimRef>,
}

/// The DRA handler of the plugin.
pub struct Preparer {
    config: PreparerConfig,
    kind: String,
    claims: Arc<dyn ClaimSource>,
    inventory: Arc<RwLock<Inventory>>,
    /// Every record: completed, and reserved by a prepare in flight (`Started`). Locked only for
    /// short, I/O-free sections.
    state: Mutex<BTreeMap<String, ClaimRecord>>,
    /// One lock per claim being prepared or unprepared.
    locks: dra_kubelet_plugin::locks::KeyedLocks,
    /// The prepares in flight, whose answer a second ask of the same claim waits for.
    inflight: Mutex<HashMap<String, Arc<PrepareOnce>>>,
    faults: Option<FaultHook>,
    cpu_claims: tokio::sync::watch::Sender<BTreeMap<String, ClaimCpus>>,
    /// The checkpoint was rebuilt at start: CDI specs no record owns may belong to live claims and
    /// are kept.
    rebuilt: bool,
    /// Claims whose record file could not be read at start (EIO, EACCES): read again before anything
    /// is decided for them ([`Preparer::read_again`]).
    unreadable: Mutex<BTreeSet<String>>,
    /// Device status writes the API server forbade (a configuration error).
    status_forbidden: Arc<std::sync::atomic::AtomicU64>,
    /// Device status writes and clears under way or ended, by claim UID ([`status`]). A write
    /// outlives a prepare the kubelet gave up on (the claim's next prepare waits for its first try)
    /// and tries again after a failure until the claim's unprepare stops it; the unprepare's clear
    /// outlives it likewise, until the claim's next prepare stops it.
    status_writes: Mutex<HashMap<String, status::StatusWrite>>,
    /// The plugin's data directory when device metadata is on (`--device-metadata`).
    metadata_dir: Option<std::path::PathBuf>,
}

impl Preparer {
    /// How many device status writes the API server forbade, for `/metrics`.
    pub fn status_forbidden(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.status_forbidden.clone()
    }

    /// Writes device metadata (KEP-5304) under `data_dir` for every claim prepared from now on, and
    /// removes there the files of claims with no record (call it before serving).
    pub fn with_device_metadata(mut self, data_dir: impl Into<std::path::PathBuf>) -> Self {
        let data_dir = data_dir.into();
        // The files of claims with no record: forgotten at start after a reboot, whose unprepare
        // the kubelet may never send (their pods gone). Removed before anything is served.
        match dra_kubelet_plugin::metadata::claims_with_files(&data_dir) {
            Ok(uids) => {
                let forgotten: Vec<String> = {
                    let state = self.state();
                    uids.into_iter()
                        .filter(|uid| !state.contains_key(uid))
                        .collect()
                };
                for uid in forgotten {
                    match dra_kubelet_plugin::metadata::remove_claim(&data_dir, &uid) {
                        Ok(()) => tracing::info!(claim = %uid,
                            "device metadata of a claim with no record removed"),
                        Err(error) => tracing::warn!(claim = %uid, %error,
                            "device metadata of a claim with no record not removed"),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "device metadata directory not listed"),
        }
        self.metadata_dir = Some(data_dir);
        self
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
        self.state()
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
        let state = self.state();
        // A copy: the inventory's lock is not held over the writes below, or a rescan waiting to
        // write it (and every reader queued behind that) would wait for the kernel too.
        let Ok(inventory) = self.inventory.read().map(|i| i.clone()) else {
            return Vec::new();
        };
        let published: BTreeMap<String, DeviceSource> =
            devices_with_sources(&inventory, &self.config.slices)
                .into_iter()
                .map(|(d, s)| (d.name, s))
                .collect();
        // A GPU partition's PF and every VF of it (read now: the partitions create them): its count
        // changes through 0, which would destroy the VFs the claims hold.
        let partitioned: BTreeSet<hal::PciAddress> = state
            .values()
            .flat_map(|r| r.devices.iter())
            .filter_map(|d| match published.get(&d.device_name) {
                Some(DeviceSource::GpuPartition { pf, .. }) => Some(pf.pci_address),
                _ => None,
            })
            .collect();
        let binder = self.config.binder.as_ref();
        let partition_vfs = partitioned.iter().flat_map(|pf| {
            let vfs = binder.sriov_state(*pf).ok().flatten().map(|s| s.vfs);
            vfs.unwrap_or_default().into_iter().map(|vf| vf.address)
        });
        let in_use: BTreeSet<hal::PciAddress> = state
            .values()
            .flat_map(|r| r.devices.iter())
            .filter_map(|d| match published.get(&d.device_name) {
                Some(DeviceSource::Nic { function, .. }) => Some(function.address),
                Some(DeviceSource::Gpu(gpu)) => Some(gpu.pci_address),
                _ => None,
            })
            .chain(partitioned.iter().copied())
            .chain(partition_vfs)
            .chain(
                state
                    .values()
                    .flat_map(|r| r.undo.values())
                    .filter_map(|v| serde_json::from_value::<Rebind>(v.clone()).ok())
                    .map(|r| r.function),
            )
            .collect();
        // The kernel may take seconds over a count: the worker goes to the other tasks meanwhile.
        apply::blocking(|| {
            super::provision::apply(
                policy,
                source,
                &inventory,
                self.config.binder.as_ref(),
                &in_use,
            )
        })
    }

    /// [`Preparer::clean_stale`], then the claims it left, again after `first`, then twice as long
    /// each time up to `most`, until none is left. Only the claims left are read again. Returns the
    /// UIDs unprepared over all rounds. Never ends while a claim stays left (the API server
    /// unreachable or refusing the read, an unprepare failing): run it beside the plugin's other
    /// tasks; each round logs what it left.
    pub async fn clean_stale_until_checked(
        &self,
        first: std::time::Duration,
        most: std::time::Duration,
    ) -> Vec<String> {
        // A zero wait would spin.
        let least = std::time::Duration::from_millis(100);
        let mut wait = first.max(least);
        let mut round = self.clean_stale().await;
        let mut unprepared = std::mem::take(&mut round.unprepared);
        while !round.left.is_empty() {
            tracing::info!(claims = round.left.len(), retry_in = ?wait,
                "some recorded claims are left to clean; trying them again");
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(most).max(least);
            round = self.clean(Some(round.left)).await;
            unprepared.append(&mut round.unprepared);
        }
        unprepared
    }

    /// [`Preparer::clean_stale_until_checked`], then [`Preparer::clean_stale`] every `period` for as
    /// long as the plugin runs: the kubelet unprepares a claim before it is deleted, but one whose
    /// own checkpoint was lost never does, and the claim's devices stayed held (refusing the claims
    /// they are allocated to next) until the plugin's next start. Logs what it unprepares; never
    /// ends.
    pub async fn keep_clean(
        &self,
        first: std::time::Duration,
        most: std::time::Duration,
        period: std::time::Duration,
    ) {
        let cleaned = self.clean_stale_until_checked(first, most).await;
        if !cleaned.is_empty() {
            tracing::info!(claims = ?cleaned, "unprepared claims that no longer exist");
        }
        let start = tokio::time::Instant::now() + period;
        let mut every = tokio::time::interval_at(start, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let round = self.clean_stale().await;
            if !round.unprepared.is_empty() {
                tracing::warn!(claims = ?round.unprepared,
                    "unprepared claims that no longer exist and the kubelet did not unprepare");
            }
        }
    }

    /// Unprepares the recorded claims that no longer exist (deleted, or re-created with another UID),
    /// completes those rebuilt from their CDI specs, and removes CDI specs of this driver that no
    /// recorded claim owns.
    pub async fn clean_stale(&self) -> Cleaned {
        self.clean(None).await
    }

    /// [`Preparer::clean_stale`] for the recorded claims among `only` (all: `None`).
    async fn clean(&self, only: Option<Vec<ClaimRef>>) -> Cleaned {
        let only: Option<BTreeSet<String>> = only.map(|o| o.into_iter().map(|c| c.uid).collect());
        let recorded: Vec<ClaimRef> = self
            .state()
            .values()
            .map(|r| r.claim.clone())
            .filter(|c| only.as_ref().is_none_or(|o| o.contains(&c.uid)))
            // A claim rebuilt from a spec that does not name it is kept until the kubelet
            // unprepares it.
            .filter(|c| !c.namespace.is_empty() && !c.name.is_empty())
            .collect();
        let mut stale = Vec::new();
        let mut left = Vec::new();
        for claim in recorded {
            match self.claims.get(&claim.namespace, &claim.name).await {
                Ok(Some(found)) if found.metadata.uid.as_deref() == Some(claim.uid.as_str()) => {
                    if !self.complete_rebuilt(&claim, found).await {
                        left.push(claim);
                    }
                }
                // Re-created under its name (another UID), or gone.
                Ok(Some(found)) if found.metadata.uid.is_some() => stale.push(claim),
                Ok(None) => stale.push(claim),
                // An answer without a UID (a `{}` from a proxy decodes as a claim with every field
                // empty) says nothing about the claim: unpreparing would take a running pod's
                // devices.
                Ok(Some(_)) => {
                    tracing::warn!(claim = %claim.uid, namespace = %claim.namespace,
                        name = %claim.name,
                        "the API server's answer for a claim has no UID; checked again later");
                    left.push(claim);
                }
                Err(error) => {
                    let kind = error.kind();
                    tracing::warn!(%error, %kind, "cannot check whether a claim still exists");
                    left.push(claim);
                }
            }
        }
        let mut unprepared = Vec::new();
        let results = self.unprepare_claims(stale.clone()).await;
        for claim in stale {
            match results.get(&claim.uid) {
                Some(Ok(())) => unprepared.push(claim.uid),
                Some(Err(error)) => {
                    tracing::warn!(claim = %claim.uid, %error, "cleaning a stale claim failed");
                    left.push(claim);
                }
                None => left.push(claim),
            }
        }
        let orphans = match self.rebuilt {
            true => Vec::new(),
            false => self.config.cdi.list_claim_specs(&self.kind),
        };
        for uid in orphans {
            // Under the claim's lock: a prepare of it that runs meanwhile holds the lock from before
            // its record goes into memory until its spec is written, so a spec is removed only
            // when no record owns it and no prepare is writing it.
            let _claim = self.locks.lock(&uid).await;
            if !self.state().contains_key(&uid)
                && let Err(error) = self.config.cdi.remove_claim_spec(&self.kind, &uid)
            {
                tracing::warn!(claim = %uid, %error, "removing a stale CDI spec failed");
            }
        }
        Cleaned { unprepared, left }
    }

    /// A claim whose record file could not be read at start is read again (under the claim's lock)
    /// before anything is decided for it: read, the record takes the place of what memory holds
    /// (rebuilt from its CDI spec, or nothing), so its undo state (the drivers to give functions back
    /// to, a `Started` record's rollback) is used; one prepared in an earlier boot is forgotten, as at
    /// start. Still unreadable, the call fails with its I/O error and the kubelet tries again: a
    /// prepare would write over the file, an unprepare remove it, losing what only it says (remove
    /// the file by hand to let them go on without it).
    fn read_again(&self, uid: &str) -> Result<(), PrepareError> {
        if !self.unreadable().contains(uid) {
            return Ok(());
        }
        let record = apply::blocking(|| self.config.checkpoint.read_again(uid))?;
        self.unreadable().remove(uid);
        let Some(record) = record else {
            return Ok(());
        };
        tracing::info!(claim = %uid, "a checkpoint record that could not be read at start reads now");
        if undone_by_reboot(&record, &self.config.boot_id) {
            self.config
                .cdi
                .remove_claim_spec(&self.kind, uid)
                .map_err(|source| PrepareError::Cdi {
                    context: "removing the CDI spec of a claim prepared in an earlier boot",
                    source,
                })?;
            self.config.checkpoint.remove(uid)?;
            let mut state = self.state();
            state.remove(uid);
            self.publish_cpus(&state);
            return Ok(());
        }
        let mut state = self.state();
        state.insert(uid.to_owned(), record);
        self.publish_cpus(&state);
        Ok(())
    }

    fn unreadable(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Completes a record rebuilt from its CDI spec with what its ResourceClaim says (the pods it
    /// is reserved for: until then the NRI plugin lets any pod's containers use its CPUs), as its
    /// next prepare would; the kubelet does not prepare a running pod's claims again after a
    /// restart. A claim whose devices differ from the spec's is left for that prepare to redo.
    /// False when the completed record could not be written and trying again may help.
    async fn complete_rebuilt(&self, claim: &ClaimRef, found: ResourceClaim) -> bool {
        let rebuilt = |r: &ClaimRecord| r.recovered && r.phase == Phase::Completed;
        if !self.state().get(&claim.uid).is_some_and(rebuilt) {
            return true;
        }
        let _claim = self.locks.lock(&claim.uid).await;
        if let Err(error) = self.read_again(&claim.uid) {
            tracing::warn!(claim = %claim.uid, %error, "a claim whose record cannot be read is not completed");
            return false;
        }
        let record = self.state().get(&claim.uid).cloned();
        let Some(record) = record.filter(rebuilt) else {
            return true;
        };
        let Some(completed) = recover::complete(record, claim, Some(found), &self.config) else {
            return true;
        };
        match apply::blocking(|| self.commit(Some(completed))) {
            Ok(()) => {
                tracing::info!(claim = %claim.uid, "claim rebuilt from its CDI spec completed from its ResourceClaim");
                true
            }
            // Too large for a record: trying again would not help.
            Err(error) if error.kind() == ErrorKind::InvalidClaim => {
                tracing::warn!(claim = %claim.uid, %error,
                    "completing a claim rebuilt from its CDI spec refused; left for its next prepare");
                true
            }
            Err(error) => {
                tracing::warn!(claim = %claim.uid, %error, "completing a claim rebuilt from its CDI spec failed");
                false
            }
        }
    }

    /// Adds to a prepared claim's pods those its ResourceClaim has been reserved for since: the
    /// kubelet prepares a claim once on a node, and a pod that comes to share it later gets no
    /// prepare of its own (`prepareResources` in the kubelet's `pkg/kubelet/cm/dra/manager.go` only
    /// adds the pod to a claim it has prepared). The NRI plugin asks for this when a container's pod
    /// is not among its claim's pods, before refusing it. True when pods were added. The pods become
    /// those of the claim's `reservedFor`: a pod that ended has left it (the resource claim
    /// controller removes it), and a claim that stays prepared while pods come and go (a CronJob's
    /// beside a long-running one) would otherwise keep every pod it ever had.
    pub async fn add_reserved_pods(&self, uid: &str) -> Result<bool, PrepareError> {
        let claim = match self.state().get(uid) {
            Some(record) if record.phase == Phase::Completed && !record.pods.is_empty() => {
                record.claim.clone()
            }
            _ => return Ok(false),
        };
        // Read under the claim's lock: two asks at once must not commit an older read over a newer
        // one (a pod that joined between them would be dropped).
        let _claim = self.locks.lock(uid).await;
        let found = self.claims.get(&claim.namespace, &claim.name).await?;
        let Some(found) = found.filter(|c| c.metadata.uid.as_deref() == Some(uid)) else {
            return Ok(false);
        };
        let reserved = plan::reserved_pods(&found);
        let record = self.state().get(uid).cloned();
        let Some(mut record) = record.filter(|r| r.phase == Phase::Completed) else {
            return Ok(false);
        };
        if reserved.iter().all(|pod| record.pods.contains(pod)) {
            return Ok(false);
        }
        record.pods = reserved;
        apply::blocking(|| self.commit(Some(record)))?;
        Ok(true)
    }

    /// [`crate::nri::plugin::CpuSource::reserved_again`] for a preparer shared as `owner`; `inner`
    /// reaches the preparer in it (`Metered::inner`, or `|p| p`). What it does is logged.
    pub fn reserved_again<T: Send + Sync + 'static>(
        owner: Arc<T>,
        inner: fn(&T) -> &Preparer,
    ) -> crate::nri::plugin::ReservedAgain {
        Arc::new(move |uid: String| {
            let owner = owner.clone();
            Box::pin(async move {
                match inner(&owner).add_reserved_pods(&uid).await {
                    Ok(true) => {
                        tracing::info!(claim = %uid, "pods that came to share the claim added to it")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(claim = %uid, %error, "reading the claim's pods again failed")
                    }
                }
            })
        })
    }

    /// The claim state. A wait for it (a VF count or a GPU partition being written under it, which
    /// the kernel may take seconds over) leaves the async worker to the other tasks.
    fn state(&self) -> MutexGuard<'_, BTreeMap<String, ClaimRecord>> {
        match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                apply::blocking(|| self.state.lock().unwrap_or_else(PoisonError::into_inner))
            }
        }
    }

    fn inflight(&self) -> MutexGuard<'_, HashMap<String, Arc<PrepareOnce>>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims of one call, side by side.
    async fn prepare_claims(&self, claims: Vec<ClaimRef>) -> PrepareResults {
        join_all(claims.into_iter().map(|claim| async move {
            let uid = claim.uid.clone();
            let result = self.prepare_one(claim).await;
            if let Err(error) = &result {
                let kind = error.kind();
                tracing::warn!(claim = %uid, %error, ?kind, "prepare failed");
            }
            // The kubelet gets the message.
            (uid, result.map_err(|e| e.to_string()))
        }))
        .await
        .into_iter()
        .collect()
    }

    /// Prepares a claim once for everyone asking meanwhile: a second ask while the first runs waits
    /// for it and gets its answer.
    async fn prepare_one(&self, claim: ClaimRef) -> Result<Vec<PreparedDevice>, Arc<PrepareError>> {
        super::claims::check_claim_ref(&claim).map_err(|e| Arc::new(e.into()))?;
        let uid = claim.uid.clone();
        let once = self.inflight().entry(uid.clone()).or_default().clone();
        let asking = Asking {
            preparer: self,
            uid: &uid,
            once: once.clone(),
        };
        let result = once
            .get_or_init(|| async {
                let _claim = self.locks.lock(&uid).await;
                self.prepare_locked(claim).await.map_err(Arc::new)
            })
            .await
            .clone();
        drop(asking);
        result
    }

    async fn unprepare_claims(&self, claims: Vec<ClaimRef>) -> UnprepareResults {
        join_all(claims.into_iter().map(|claim| async move {
            let result = match super::claims::check_claim_ref(&claim) {
                Err(error) => Err(PrepareError::from(error)),
                Ok(()) => {
                    let _claim = self.locks.lock(&claim.uid).await;
                    self.unprepare_locked(&claim).await
                }
            };
            if let Err(error) = &result {
                let kind = error.kind();
                tracing::warn!(claim = %claim.uid, %error, ?kind, "unprepare failed");
            }
            // The kubelet gets the message.
            (claim.uid, result.map_err(|e| e.to_string()))
        }))
        .await
        .into_iter()
        .collect()
    }
}

/// The answer of a prepare in flight, shared with whoever asks for the claim meanwhile.
type PrepareOnce = tokio::sync::OnceCell<Result<Vec<PreparedDevice>, Arc<PrepareError>>>;

/// One ask of a prepare in flight: its entry goes when the ask ends, answered or dropped (the kubelet
/// gave up on the call), so the map holds only the claims being prepared. A later ask while another
/// still waits makes a new entry; the claim lock keeps the two prepares apart.
struct Asking<'a> {
    preparer: &'a Preparer,
    uid: &'a str,
    once: Arc<PrepareOnce>,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let mut inflight = self.preparer.inflight();
        if inflight
            .get(self.uid)
            .is_some_and(|o| Arc::ptr_eq(o, &self.once))
        {
            inflight.remove(self.uid);
        }
    }
}

impl DraHandler for Preparer {
    fn prepare(&self, claims: Vec<ClaimRef>) -> super::api::BoxFuture<'_, PrepareResults> {
        Box::pin(self.prepare_claims(claims))
    }

    fn unprepare(&self, claims: Vec<ClaimRef>) -> super::api::BoxFuture<'_, UnprepareResults> {
        Box::pin(self.unprepare_claims(claims))
    }

    fn concurrent(&self) -> bool {
        true
    }
}

/// Whether a boot id tells this boot from others: not empty (unreadable), nor `unknown` (as
/// earlier versions recorded an unreadable one). The one place that decides it.
fn boot_id_known(id: &str) -> bool {
    !id.is_empty() && id != "unknown"
}

/// Whether `record` describes device changes that a reboot since (this boot is `boot_id`) has
/// undone. An unknown boot id on either side counts as the same boot: forgetting the claim of a
/// running pod would be worse.
fn undone_by_reboot(record: &ClaimRecord, boot_id: &str) -> bool {
    let known = boot_id_known(boot_id) && boot_id_known(&record.boot_id);
    !record.undo.is_empty() && known && record.boot_id != boot_id
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
