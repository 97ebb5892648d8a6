//! The preparer's start: the checkpoint loaded, claims rebuilt from their CDI specs where their
//! records were lost or cannot be read, claims an earlier boot undid forgotten, claims a crash left
//! `Started` rolled back.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use super::*;
use crate::plugin::checkpoint::CheckpointError;

impl Preparer {
    /// Loads the checkpoint (a corrupt one is reported through `tracing` and replaced; a record
    /// that cannot be read is left in place and its claim rebuilt from its CDI spec), forgets the
    /// claims an earlier boot undid (a file that cannot be removed then is logged, not fatal), rolls
    /// back claims a crash left `Started` (one whose rollback fails keeps its record, and is rolled
    /// back at its next prepare or unprepare), and serves the devices of `inventory` (shared with the publisher,
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
        // A record file that could not be read (EIO from a bad block, EACCES) is treated as a spec
        // that could not be: the plugin starts without it (every other claim served), its claim is
        // rebuilt from its CDI spec as one whose record was bad, and no spec is cleaned as an
        // orphan (`rebuilt`). The file is left in place, and the rebuilt record is held in memory
        // only, not written over it: the file is not known to be bad and may read at the next start,
        // with what a spec cannot tell (the drivers to give functions back to, the RT placement).
        // The claim's next write (its completion from its ResourceClaim at the cleaning, a prepare,
        // its unprepare) replaces or removes it, as any record: from then on the preparer's record
        // is the claim's state.
        let unreadable: BTreeSet<&str> = loaded.unreadable.iter().map(|u| u.uid.as_str()).collect();
        let read_again: BTreeSet<String> = unreadable.iter().map(|u| (*u).to_owned()).collect();
        for bad in &loaded.unreadable {
            tracing::warn!(claim = %bad.uid, file = %bad.path.display(), error = %bad.error,
                "a checkpoint record could not be read; left in place, its claim rebuilt from its \
                CDI spec");
        }
        // A lost or unusable checkpoint: the specs on disk are claims this driver prepared, not
        // orphans. The whole of it: every spec without a record; one claim's file: that claim. A
        // rebuild that an earlier start began and did not finish: the files that said what was
        // lost are gone, so every spec without a record.
        if loaded.rebuild_interrupted {
            tracing::warn!(dir = %config.checkpoint.path().display(),
                "an earlier rebuild of the checkpoint did not finish; rebuilding every claim \
                that has a CDI spec and no record");
        }
        let whole = loaded.missing
            || loaded.rebuild_interrupted
            || loaded.discarded.iter().any(|d| d.uid.is_none());
        let lost: Vec<&str> = loaded
            .discarded
            .iter()
            .filter_map(|d| d.uid.as_deref())
            .chain(unreadable.iter().copied())
            .collect();
        let mut rebuilt_any = false;
        let wanted = |uid: &str| !claims.contains_key(uid) && (whole || lost.contains(&uid));
        let recovered = match whole || !lost.is_empty() {
            true => recover::from_cdi_specs(&config, &kind, &wanted),
            false => recover::Rebuilt::default(),
        };
        let mut unstored = 0;
        for (uid, record) in recovered.claims {
            // Not written over a record file that could not be read (see above).
            if unreadable.contains(uid.as_str()) {
                claims.insert(uid, record);
                rebuilt_any = true;
                continue;
            }
            match config.checkpoint.put(&record, Durability::Synced) {
                Ok(()) => {}
                // A spec that makes a record over the size limit (written by hand, or by a build
                // without the limit) would stop every start: the claim is held in memory only, and
                // rebuilt from its spec again at the next start.
                Err(error @ CheckpointError::ClaimTooLarge { .. }) => {
                    tracing::warn!(claim = %uid, %error,
                        "claim rebuilt from its CDI spec held in memory only");
                    unstored += 1;
                }
                Err(error) => return Err(std::io::Error::other(error)),
            }
            claims.insert(uid, record);
            rebuilt_any = true;
        }
        // A spec that failed to read may be a claim's: the rebuild stays pending (its specs are
        // not orphans) until a start reads every one, and stores every record.
        match (recovered.unreadable, unstored) {
            (0, 0) => config.checkpoint.rebuild_done(),
            (unreadable, unstored) => {
                tracing::warn!(
                    specs = unreadable,
                    records = unstored,
                    "CDI specs could not be read, or records not stored; the rebuild \
                    runs again at the next start, and no spec is removed as an orphan until then"
                );
                config.checkpoint.mark_rebuild()
            }
        }
        .map_err(std::io::Error::other)?;
        for uid in unreadable.iter().filter(|uid| !claims.contains_key(**uid)) {
            tracing::warn!(claim = %uid, "a claim whose record could not be read has no readable \
                CDI spec: not rebuilt, its devices are not held until the kubelet prepares it again");
        }
        // Specs no record owns are then kept, not cleaned as orphans, until a start without a
        // rebuild: a spec that could not be read may be a claim's too.
        let rebuilt = !loaded.discarded.is_empty()
            || !loaded.unreadable.is_empty()
            || loaded.rebuild_interrupted
            || loaded.missing && rebuilt_any
            || recovered.unreadable > 0;
        // A reboot undid the device changes (driver bindings, the VFs of GPU partitions) of the
        // claims prepared in an earlier boot: their records would answer with devices that are not
        // there any more, and undoing them again could fail on VFs that are gone. They are forgotten,
        // and the claims prepared afresh when the kubelet asks again, which it does after a reboot.
        // A claim that changed no device keeps its record (its CPUs, its RT placement) and gets its
        // CDI spec rewritten when asked.
        let undone: Vec<String> = claims
            .iter()
            .filter(|(_, r)| undone_by_reboot(r, &config.boot_id))
            .map(|(uid, _)| uid.clone())
            .collect();
        //
        // Forgotten in memory whatever the files say: a removal that fails (a read-only
        // /var/lib/kubelet after the reboot, a directory at the spec's path) is logged and the
        // start goes on, as a failed rollback below does. The spec goes first, then the record: a
        // record left (its removal failed, or the spec's did) is of an earlier boot at the next
        // start too, which forgets it and tries again; a spec left without its record could be
        // taken for a live claim's by a rebuild. Until then the kubelet's next prepare of the claim
        // prepares it afresh (its `Started` record replaces the one left), never from the stale
        // record.
        for uid in &undone {
            tracing::info!(claim = %uid, "prepared in an earlier boot, which undid its device changes: \
                forgotten, prepared afresh when the kubelet asks");
            claims.remove(uid);
            if let Err(error) = config.cdi.remove_claim_spec(&kind, uid) {
                tracing::error!(claim = %uid, %error,
                    "removing the CDI spec of a claim prepared in an earlier boot failed; its \
                    record is kept, and both are removed at the next start");
                continue;
            }
            if let Err(error) = config.checkpoint.remove(uid) {
                tracing::error!(claim = %uid, %error,
                    "removing the checkpoint record of a claim prepared in an earlier boot failed; \
                    forgotten in memory, removed at the next start");
            }
        }
        let started: Vec<String> = claims
            .iter()
            .filter(|(_, r)| r.phase == Phase::Started)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &started {
            tracing::info!(claim = %uid, "rolling back a claim whose prepare was interrupted");
            let Some(record) = claims.get(uid) else {
                continue;
            };
            // One claim that cannot be rolled back now (a driver that refuses its function back)
            // must not keep the plugin from starting: it keeps its record, and with it its devices
            // and what to undo, and the rollback runs again at its next prepare or unprepare, or
            // at the next start.
            let undone = undo_record(&config, &kind, &inventory, record);
            if let Err(error) = undone.and_then(|()| Ok(config.checkpoint.remove(uid)?)) {
                let kind = error.kind();
                tracing::error!(claim = %uid, %error, ?kind,
                    "rolling back failed; kept, and tried again when the claim is next prepared or unprepared");
                continue;
            }
            if let Some(record) = claims.remove(uid) {
                for error in
                    crate::plugin::partitions::release(config.binder.as_ref(), &claims, &record)
                {
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
            state: Mutex::new(claims),
            locks: dra_kubelet_plugin::locks::KeyedLocks::default(),
            inflight: Mutex::default(),
            faults: None,
            cpu_claims,
            rebuilt,
            unreadable: Mutex::new(read_again),
            status_forbidden: Arc::default(),
            status_writes: Mutex::default(),
            metadata_dir: None,
        })
    }
}
