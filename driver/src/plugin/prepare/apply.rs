//! Carrying out a planned prepare, and unprepare: the I/O (checkpoint records, driver rebinds, the
//! CDI spec, the API server) runs with no lock held but the claim's own, so claims are prepared side
//! by side; the claim-state lock is taken only to commit or give back a record. A failure after the
//! `Started` record is written goes through one rollback path ([`Preparer::abandon`]).

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::plan::Planned;
use super::{PrepareError, Preparer, PreparerConfig, Rebind, Step, recover, status};
use crate::inventory::Inventory;
use crate::nri::policy::ClaimCpus;
use crate::plugin::api::{ClaimRef, PreparedDevice};
use crate::plugin::cdi::Spec;
use crate::plugin::checkpoint::files::Durability;
use crate::plugin::checkpoint::{ClaimRecord, Phase};
use crate::plugin::claims::allocated_devices;

/// Runs blocking file and sysfs I/O off the async workers where the runtime allows it (a
/// multi-threaded one), inline otherwise.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Preparer {
    /// Prepares one claim while holding its claim lock.
    pub(super) async fn prepare_locked(
        &self,
        claim: ClaimRef,
    ) -> Result<Vec<PreparedDevice>, PrepareError> {
        self.read_again(&claim.uid)?;
        // The first try of a status write of a prepare given up on ends first: the answer must not
        // come before the status a CNI reads. A clear of an unprepare (given up on, or trying
        // again) goes on until this prepare writes the status again (below): a prepare that fails
        // before must not leave the entries of the unprepared claim.
        self.status_settled(&claim.uid, false).await;
        let existing = self.state().get(&claim.uid).cloned();
        if let Some(record) = existing {
            if record.phase == Phase::Completed && record.recovered {
                // Rebuilt from its CDI spec: completed with what the claim says, keeping its CPUs
                // and spec, when the devices match; redone otherwise.
                let resource_claim = self.claims.get(&claim.namespace, &claim.name).await?;
                let completed =
                    recover::complete(record.clone(), &claim, resource_claim, &self.config);
                if let Some(record) = completed {
                    return blocking(|| {
                        self.commit(Some(record.clone()))?;
                        self.redo_completed(record)
                    });
                }
            }
            match record.phase {
                Phase::Completed if !record.recovered => {
                    return blocking(|| self.redo_completed(record));
                }
                // Started, or rebuilt from a spec that does not match the claim: redone. A started
                // record's file says so (synced) before anything is undone: one whose completed
                // write failed after its rename may still say "completed".
                _ => blocking(|| {
                    if record.phase == Phase::Started {
                        self.config.checkpoint.put(&record, Durability::Synced)?;
                    }
                    undo_record(&self.config, &self.kind, &self.inventory, &record)
                        .map_err(|e| PrepareError::RollingBack(Box::new(e)))?;
                    self.drop_record(&record)
                })?,
            }
        }
        let resource_claim = self
            .claims
            .get(&claim.namespace, &claim.name)
            .await?
            .ok_or_else(|| PrepareError::ClaimNotFound {
                namespace: claim.namespace.clone(),
                name: claim.name.clone(),
            })?;
        let allocated = allocated_devices(
            &claim,
            &resource_claim,
            &self.config.slices.driver_name,
            &self.config.slices.node_name,
        )?;
        // Off the async worker: the reservation may wait for the claim state, or create a GPU
        // partition's VFs, and the writes follow.
        let (planned, devices) = blocking(|| {
            let planned = self.reserve(&claim, &allocated, &resource_claim)?;
            let devices = self.apply(&planned)?;
            Ok::<_, PrepareError>((planned, devices))
        })?;
        // What a CNI needs to attach the network functions, in the claim's device status. Not fatal:
        // the API server may not allow it (an older release, RBAC); the CDI env says the same.
        // Written by a task of its own, which goes on when the kubelet gives up on this call (its
        // deadline drops this future: the retry finds the claim completed and waits for the first
        // try) and tries again after a failure ([`super::status`]); the answer waits for the first.
        if !planned.statuses.is_empty() {
            let target = status::Target {
                claims: self.claims.clone(),
                forbidden: self.status_forbidden.clone(),
                claim: claim.clone(),
                driver: self.config.slices.driver_name.clone(),
            };
            // A clear still trying must not land after this write.
            self.status_stopped(&claim.uid).await;
            let write = status::StatusWrite::start(target, planned.statuses);
            self.status_tracked(&claim.uid, write).await;
        }
        Ok(devices)
    }

    /// Settles the status task of the claim `uid` under way (one whose prepare or unprepare the
    /// kubelet gave up on, or trying again) before a prepare (`unprepare` false) or an unprepare
    /// goes on, each wait at most a little over an API call's limit. Before a prepare: a write's
    /// first try ends (its tries again write what the prepare would); a clear goes on, and is
    /// stopped only where the prepare writes ([`Self::status_stopped`]: a prepare that fails before
    /// must not leave the entries of the unprepared claim). Before an unprepare: a write is stopped (its
    /// clear comes after it); a clear's first try ends (a second unprepare finds no record and
    /// answers after it, as the first would have). Called under the claim's lock, as are the tasks'
    /// starts.
    async fn status_settled(&self, uid: &str, unprepare: bool) {
        let pending = self.status_writes().get(uid).cloned();
        let Some(task) = pending else {
            return;
        };
        match (task.clearing(), unprepare) {
            (true, false) => {}
            (clearing, unprepare) if clearing == unprepare => {
                task.first_tried().await;
                if task.ended() {
                    self.status_writes().remove(uid);
                }
            }
            _ => self.status_stopped(uid).await,
        }
    }

    /// Stops the status task of the claim `uid` (its tries again), waits for its end (at most a
    /// little over an API call's limit), then forgets it: a call the kubelet gives up on meanwhile
    /// leaves it in the map, for the next call to stop. Called under the claim's lock.
    async fn status_stopped(&self, uid: &str) {
        let pending = self.status_writes().get(uid).cloned();
        if let Some(task) = pending {
            task.stop().await;
            self.status_writes().remove(uid);
        }
    }

    /// Keeps `task` as the status task of the claim `uid` and waits for its first try (at most a
    /// little over an API call's limit); the task goes on when this future is dropped. Tasks that
    /// ended are forgotten. Called under the claim's lock.
    async fn status_tracked(&self, uid: &str, task: status::StatusWrite) {
        {
            let mut tasks = self.status_writes();
            tasks.retain(|_, t| !t.ended());
            // One still trying (an unprepare that failed after it started its clear, then ran
            // again) is stopped, not left trying untracked.
            if let Some(replaced) = tasks.insert(uid.to_owned(), task.clone()) {
                replaced.cancel();
            }
        }
        task.first_tried().await;
        if task.ended() {
            self.status_writes().remove(uid);
        }
    }

    fn status_writes(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, status::StatusWrite>> {
        self.status_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writes of a reserved prepare: the `Started` record (no fsync), the driver rebinds, the CDI
    /// spec (no fsync), the `Completed` record (fsynced: the one durable point), then the record in
    /// memory. Any failure after the first write is rolled back by [`Preparer::abandon`]; a crash
    /// (a fault hook) stops right there, as a killed process would.
    fn apply(&self, planned: &Planned) -> Result<Vec<PreparedDevice>, PrepareError> {
        let started = &planned.record;
        if let Err(error) = self.config.checkpoint.put(started, Durability::Unsynced) {
            // Nothing was changed: give the reservation back.
            self.forget(started);
            return Err(error.into());
        }
        self.fault(Step::Started)?;
        for rebind in &planned.rebinds {
            if let Err(source) = self
                .config
                .binder
                .bind_driver(rebind.function, &rebind.driver)
            {
                let context = format!("binding {} to {}", rebind.function, rebind.driver);
                let error = PrepareError::Device { context, source };
                return Err(self.abandon(started, error));
            }
            // `bind_driver` leaves the override naming the driver.
            let bound = Some(rebind.driver.as_str());
            note_driver(&self.inventory, rebind.function, bound, bound);
        }
        self.fault(Step::DevicesPrepared)?;
        let uid = &started.claim.uid;
        if let Some(metadata) = &planned.metadata
            && let Err(error) = self.write_metadata(metadata)
        {
            return Err(self.abandon(started, error));
        }
        if let Err(source) = self.config.cdi.write_claim_spec(uid, &planned.spec) {
            // A real failure (a full disk), not a crash: undo now so nothing is left half done.
            let context = "writing the CDI spec";
            return Err(self.abandon(started, PrepareError::Cdi { context, source }));
        }
        self.fault(Step::CdiWritten)?;
        let mut completed = started.clone();
        completed.phase = Phase::Completed;
        if let Err(error) = self.commit(Some(completed)) {
            // A write that failed after its rename (the directory's fsync: an EIO, after which ext4
            // often goes read-only) left "completed" in the file. It must say started before
            // anything is undone: a restart would answer "completed" as prepared. When it cannot,
            // the devices stay as the file says (memory keeps the started record, which the next
            // prepare or unprepare rolls back once the file can say so).
            if let Err(also) = self.config.checkpoint.put(started, Durability::Synced) {
                return Err(PrepareError::Abandoned {
                    cause: Box::new(error),
                    also: vec![also.into()],
                });
            }
            return Err(self.abandon(started, error));
        }
        self.fault(Step::Completed)?;
        Ok(planned.devices.clone())
    }

    /// A completed claim asked again (kubelet restart, node reboot): the same devices, and its CDI spec
    /// written again (after a reboot `/var/run/cdi` is empty).
    fn redo_completed(&self, mut record: ClaimRecord) -> Result<Vec<PreparedDevice>, PrepareError> {
        let spec: Spec = record
            .cdi_spec
            .parse()
            .map_err(PrepareError::CheckpointedSpec)?;
        self.config
            .cdi
            .write_claim_spec(&record.claim.uid, &spec)
            .map_err(|source| PrepareError::Cdi {
                context: "writing the CDI spec",
                source,
            })?;
        if record.boot_id != self.config.boot_id {
            record.boot_id = self.config.boot_id.clone();
            let devices = record.devices.clone();
            self.commit(Some(record))?;
            return Ok(devices);
        }
        Ok(record.devices)
    }

    /// Writes `record`'s file (a completed record is fsynced, a started one is not: see
    /// [`crate::plugin::checkpoint`]), then sets it in memory. When the write fails memory keeps what
    /// it had, which is what the file still says.
    pub(super) fn commit(&self, record: Option<ClaimRecord>) -> Result<(), PrepareError> {
        let Some(record) = record else {
            return Ok(());
        };
        let durability = match record.phase {
            Phase::Completed => Durability::Synced,
            Phase::Started => Durability::Unsynced,
        };
        self.config.checkpoint.put(&record, durability)?;
        let mut state = self.state();
        state.insert(record.claim.uid.clone(), record);
        self.publish_cpus(&state);
        Ok(())
    }

    /// Removes the record's file, then the record from memory (giving back GPU partitions no claim
    /// holds). When the removal fails the record stays in both.
    fn drop_record(&self, record: &ClaimRecord) -> Result<(), PrepareError> {
        self.config.checkpoint.remove(&record.claim.uid)?;
        self.forget(record);
        Ok(())
    }

    /// Removes the record from memory only (a reservation whose file was never written).
    fn forget(&self, record: &ClaimRecord) {
        let mut state = self.state();
        state.remove(&record.claim.uid);
        for error in crate::plugin::partitions::release(self.config.binder.as_ref(), &state, record)
        {
            tracing::warn!(claim = %record.claim.uid, %error, "GPU partitions not released");
        }
        self.publish_cpus(&state);
    }

    /// Gives up a claim whose prepare failed after it was recorded as started: undoes what was done
    /// and forgets it. When the undo fails (a driver refuses its function back) or the checkpoint
    /// cannot be written, the started record stays: it is what says what to undo, and the next
    /// prepare, unprepare or restart rolls it back. Its file is written again, because a completed
    /// write that failed after its rename (the directory's fsync) left "completed" there, which a
    /// restart would answer as prepared. Returns `error`, with what else failed.
    fn abandon(&self, record: &ClaimRecord, error: PrepareError) -> PrepareError {
        let mut also = Vec::new();
        self.remove_metadata(&record.claim.uid);
        let dropped = undo_record(&self.config, &self.kind, &self.inventory, record)
            .map_err(|e| PrepareError::RollingBack(Box::new(e)))
            .and_then(|()| self.drop_record(record));
        if let Err(e) = dropped {
            also.push(e);
            if let Err(e) = self.config.checkpoint.put(record, Durability::Synced) {
                also.push(e.into());
            }
        }
        match also.is_empty() {
            true => error,
            false => PrepareError::Abandoned {
                cause: Box::new(error),
                also,
            },
        }
    }

    fn fault(&self, step: Step) -> Result<(), PrepareError> {
        match &self.faults {
            Some(hook) => hook(step).map_err(PrepareError::from),
            None => Ok(()),
        }
    }

    /// Tells the NRI plugin when the claims' CPUs changed. CPUs count from the moment a claim is
    /// reserved: before any I/O.
    pub(super) fn publish_cpus(&self, state: &BTreeMap<String, ClaimRecord>) {
        let now = cpu_claims_of(state);
        self.cpu_claims.send_if_modified(|old| {
            let changed = *old != now;
            *old = now;
            changed
        });
    }

    /// Unprepares one claim while holding its claim lock: undo, remove the record, clear the
    /// device status this driver wrote.
    pub(super) async fn unprepare_locked(&self, claim: &ClaimRef) -> Result<(), PrepareError> {
        // The status is cleared below: a write of the prepare (or its tries again) lands first.
        self.status_settled(&claim.uid, true).await;
        self.read_again(&claim.uid)?;
        // Unknown claims (never prepared here, already unprepared, or forgotten after a reboot) are
        // done, once metadata files a forgotten claim left are gone.
        let Some(record) = self.state().get(&claim.uid).cloned() else {
            self.remove_metadata(&claim.uid);
            return Ok(());
        };
        blocking(|| undo_record(&self.config, &self.kind, &self.inventory, &record))?;
        self.remove_metadata(&claim.uid);
        let stored = blocking(|| self.drop_record(&record));
        // In turn with the NRI side's `networkData` writes of the claim (the claims source's lock),
        // which write nothing once the entries are gone. A task of its own ([`status`]): it goes on
        // when the kubelet gives up on this call (its deadline drops this future; the record is
        // gone, so its retry would not clear), and tries again after a failure until the claim's
        // next prepare. Not fatal: the unprepare answers after the first try.
        let target = status::Target {
            claims: self.claims.clone(),
            forbidden: self.status_forbidden.clone(),
            claim: claim.clone(),
            driver: self.config.slices.driver_name.clone(),
        };
        self.status_tracked(&claim.uid, status::StatusWrite::clear(target))
            .await;
        stored
    }
}

/// The CPUs of each claim that holds some, with the pods it is reserved for.
pub(super) fn cpu_claims_of(state: &BTreeMap<String, ClaimRecord>) -> BTreeMap<String, ClaimCpus> {
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

/// Gives back what a claim changed: the original driver of every rebound function that still
/// exists (none to a function that had none), then the CDI spec.
pub(super) fn undo_record(
    config: &PreparerConfig,
    kind: &str,
    inventory: &RwLock<Inventory>,
    record: &ClaimRecord,
) -> Result<(), PrepareError> {
    for rebind in rebinds_to_undo(record)? {
        // Its driver (none: left without one, as it was), unless someone bound another since, and
        // its override as it was.
        let put_back = super::overrides::to_put_back(&rebind);
        let result = config.binder.restore_driver(
            rebind.function,
            &rebind.driver,
            rebind.original.as_deref(),
            put_back,
        );
        // A function that is gone (its PF's VF count changed, the card was removed) has nothing
        // to give back: a function that comes back is a new device, bound by the kernel's rules.
        // Gone is NotFound naming the function's own directory; a file of it missing (its driver
        // unbound meanwhile) is a failure, tried again.
        let function = rebind.function.to_string();
        let result = result.or_else(|error| match &error {
            hal::Error::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::NotFound
                    && path.file_name() == Some(std::ffi::OsStr::new(&function)) =>
            {
                Ok(())
            }
            _ => Err(error),
        });
        result.map_err(|source| PrepareError::Device {
            context: format!(
                "restoring {} to its driver {:?}",
                rebind.function, rebind.original
            ),
            source,
        })?;
        note_driver(
            inventory,
            rebind.function,
            rebind.original.as_deref(),
            put_back,
        );
    }
    config
        .cdi
        .remove_claim_spec(kind, &record.claim.uid)
        .map_err(|source| PrepareError::Cdi {
            context: "removing the CDI spec",
            source,
        })
}

/// The rebinds of `record` to give back, checked before anything is given back. Its undo entries
/// are keyed by what they undo: a function's address (a [`Rebind`]), `partitions:<pf>` (released with
/// the claim's state), `metadata` (the device metadata files) and `rebuilt` (a note of a claim rebuilt
/// from its CDI spec). An entry of another key, or a function's entry that is not a rebind, was
/// written by a later version this one was rolled back from: the undo fails before any change, and
/// the record stays for that version (skipped, the change it undoes would stay for good once the
/// record is gone).
fn rebinds_to_undo(record: &ClaimRecord) -> Result<Vec<Rebind>, PrepareError> {
    let not_known = |key: &str, why: String| {
        PrepareError::Internal(format!(
            "claim {}: the undo entry {key:?} of its checkpoint record is not one this version of \
             the plugin knows ({why}; written by a later version?): nothing undone, the record \
             kept",
            record.claim.uid
        ))
    };
    let mut rebinds = Vec::new();
    for (key, value) in &record.undo {
        if hal::PciAddress::parse(key).is_ok() {
            let rebind = serde_json::from_value::<Rebind>(value.clone())
                .map_err(|e| not_known(key, e.to_string()))?;
            rebinds.push(rebind);
        } else if !(key.starts_with(crate::plugin::partitions::UNDO_PREFIX)
            || key == super::metadata::UNDO_KEY
            || key == super::recover::REBUILT_UNDO_KEY)
        {
            return Err(not_known(key, "an entry of another kind".into()));
        }
    }
    Ok(rebinds)
}

/// Sets the driver of the function at `address` in `inventory` to `driver`, which this process just
/// bound it to (or left it without), and its `driver_override` to `driver_override`, which that
/// left. The inventory is read at start and at rescans; a plan made before the next rescan must see
/// the drivers as they are now: a rollback at start (the inventory is read before it), or of a
/// `Started` record at the claim's next prepare, changed them, and a function taken for one still on
/// the claim's driver would get no rebind (and one whose override was taken for the claim's driver
/// would get it back at the next unprepare).
pub(super) fn note_driver(
    inventory: &RwLock<Inventory>,
    address: hal::PciAddress,
    driver: Option<&str>,
    driver_override: Option<&str>,
) {
    let Ok(mut inventory) = inventory.write() else {
        return;
    };
    let driver = driver.map(str::to_owned);
    for function in inventory.pci.iter_mut().filter(|f| f.address == address) {
        function.driver.clone_from(&driver);
        function.driver_override = driver_override.map(str::to_owned);
    }
    for gpu in inventory
        .gpus
        .iter_mut()
        .filter(|g| g.pci_address == address)
    {
        gpu.driver.clone_from(&driver);
    }
}
