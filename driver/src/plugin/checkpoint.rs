//! This driver's record of a prepared claim ([`ClaimRecord`]) in the kit's checkpoint
//! ([`dra_kubelet_plugin::checkpoint`]: one crash-safe file per claim in the plugin's checkpoint
//! directory, `<plugin-dir>/checkpoint/<claim-uid>.json`, a header line and the record's JSON). A
//! record holds the boot id of the node when the claim was prepared.
//!
//! A claim is recorded in two phases: `Started` before any device or CDI change is made, `Completed`
//! once everything is in place. Only the `Completed` write is fsynced (file and directory: two
//! fsyncs per prepare); the `Started` record and the claim's CDI spec need no fsync: a crash of the
//! process keeps the page cache (the record is there), and a power loss reboots the node, which
//! undoes every device change a `Started` record could describe. After a crash a `Started` claim is
//! rolled back and redone; a `Completed` one is answered again with the same devices (its CDI spec
//! is rewritten: after a reboot `/var/run/cdi` is empty), unless it changed a device in an earlier
//! boot: such a record is forgotten at start and the claim prepared afresh.
//!
//! A record file that is not a record is moved aside by the kit and reported with its claim; the
//! preparer rebuilds that claim from its CDI spec. One that cannot be read (EIO, EACCES) is left in
//! place and reported ([`Unreadable`]); the preparer rebuilds its claim from its CDI spec too, in
//! memory only (see `Preparer::new`). What one claim may store is bounded
//! ([`MAX_CLAIM_BYTES`]). The single `checkpoint.json` of earlier
//! versions is moved into the directory at start (or aside, when it is not a valid checkpoint).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use dra_kubelet_plugin::checkpoint::{self, Checkpoint, Record, io_at};

use super::api::{ClaimRef, PreparedDevice};

pub use dra_kubelet_plugin::checkpoint::{
    CheckpointError, Discarded, MAX_CLAIM_BYTES, ReadFault, Unreadable, Valid, WriteFault, crc32,
};
pub use dra_kubelet_plugin::files;

mod legacy;

/// How far the preparation of a claim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Recorded before any change; the claim may be half prepared.
    Started,
    /// Every device prepared and the CDI spec written.
    Completed,
}

/// One claim in the checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRecord {
    /// The claim.
    pub claim: ClaimRef,
    /// Started or completed.
    pub phase: Phase,
    /// The boot (`/proc/sys/kernel/random/boot_id`) in which the claim was last prepared.
    pub boot_id: String,
    /// What the kubelet was (or will be) told.
    pub devices: Vec<PreparedDevice>,
    /// The CDI spec of the claim, so it can be written again without recomputing it.
    pub cdi_spec: SpecJson,
    /// Per-device state needed to undo the preparation (original drivers, ...), by device name.
    #[serde(default)]
    pub undo: BTreeMap<String, serde_json::Value>,
    /// The CPUs given to the claim, by allocation result (the device's name; `<device>_2` for a
    /// second request on the same device): reserved here before any I/O, the same after a restart or
    /// a reboot.
    #[serde(default)]
    pub cpus: BTreeMap<String, hal::CpuSet>,
    /// The real-time tasks placed for the claim, by allocation result (as `cpus`). Left out when
    /// empty, so records written before it existed serialize (and checksum) as they did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rt: BTreeMap<String, Vec<super::rt::RtTask>>,
    /// UIDs of the pods the claim was reserved for when prepared (`status.reservedFor`): the NRI plugin
    /// pins only their containers to the claim's CPUs. Left out when empty, as `rt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// The direct-mode network configuration (`kind: NetworkConfig`) of each network function, by
    /// device name, with the name the netdev gets in the pod: what the NRI plugin applies at pod
    /// sandbox start. Left out when empty, as `rt`, so records without it read and checksum as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network: BTreeMap<String, crate::podnet::config::Checked>,
    /// Devices the claim holds only with admin access (`adminAccess: true` on every result that
    /// names them; KEP-5018): they are shared with the claim that uses the device. Left out when
    /// empty, as `rt`. (A claim rebuilt from its spec holds every device as its own.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin: Vec<String>,
    /// Rebuilt from the claim's CDI spec after the checkpoint was lost: `devices` lack their
    /// requests and `undo` the original drivers, so a prepare asked again redoes the claim. Left out
    /// when false, as `rt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// A CDI spec kept as its compact JSON text: in memory a record holds the few KB the spec is, not a
/// tree of maps and strings many times that size. In the file it is the spec's JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecJson(Box<str>);

impl SpecJson {
    /// The JSON of `spec`.
    pub fn of<T: serde::Serialize>(spec: &T) -> Result<Self, serde_json::Error> {
        Ok(SpecJson(serde_json::to_string(spec)?.into()))
    }

    /// Whether the spec's JSON text holds `text` (a quoted string, as `"/dev/vfio/12"`).
    pub fn mentions(&self, text: &str) -> bool {
        self.0.contains(text)
    }

    /// The spec, decoded.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl From<serde_json::Value> for SpecJson {
    fn from(value: serde_json::Value) -> Self {
        SpecJson(value.to_string().into())
    }
}

impl serde::Serialize for SpecJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value: serde_json::Value =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SpecJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(SpecJson::from)
    }
}

impl Record for ClaimRecord {
    fn uid(&self) -> &str {
        &self.claim.uid
    }

    fn describe(&self) -> String {
        let c = &self.claim;
        format!("{}/{} ({})", c.namespace, c.name, c.uid)
    }
}

/// What [`CheckpointFile::load`] found.
pub type Loaded = checkpoint::Loaded<ClaimRecord>;

/// The checkpoint directory of [`ClaimRecord`]s (the kit's [`Checkpoint`], whose methods it
/// offers), and where earlier versions kept their single file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    records: Checkpoint<ClaimRecord>,
    legacy: PathBuf,
}

impl std::ops::Deref for CheckpointFile {
    type Target = Checkpoint<ClaimRecord>;

    fn deref(&self) -> &Self::Target {
        &self.records
    }
}

impl CheckpointFile {
    /// The checkpoint directory `dir` (the plugin uses `<kubelet-root>/plugins/<driver>/checkpoint`);
    /// the single file of earlier versions is `dir` with the extension `.json`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        CheckpointFile {
            legacy: dir.with_extension("json"),
            records: Checkpoint::new(dir),
        }
    }

    /// Runs `fault` before every write and removal of a record (tests: a full disk).
    pub fn with_write_fault(mut self, fault: WriteFault) -> Self {
        self.records = self.records.with_write_fault(fault);
        self
    }

    /// Runs `fault` where a synced write fsyncs the directory, after the rename (tests).
    pub fn with_dir_sync_fault(mut self, fault: WriteFault) -> Self {
        self.records = self.records.with_dir_sync_fault(fault);
        self
    }

    /// Runs `fault` before every read of a record file, with its path (tests: EIO, EACCES).
    pub fn with_read_fault(mut self, fault: ReadFault) -> Self {
        self.records = self.records.with_read_fault(fault);
        self
    }

    /// Reads every record ([`Checkpoint::load`]), after removing the temp files of interrupted
    /// writes of the legacy `checkpoint.json` and moving its claims into the directory (or it aside,
    /// when it is not a valid checkpoint). Only I/O failures are errors.
    pub fn load(&self) -> Result<Loaded, CheckpointError> {
        let removed = files::remove_stale_temps(&self.legacy)
            .map_err(io_at("remove stale temp files of", &self.legacy))?;
        let legacy = legacy::read(&self.legacy).map_err(io_at("read", &self.legacy))?;
        let mut loaded = self.records.load()?;
        loaded.removed_temps.splice(0..0, removed);
        match legacy {
            legacy::Found::Missing => {}
            legacy::Found::Bad(why) => {
                loaded.missing = false;
                self.records
                    .discard(&mut loaded, None, &self.legacy, &why)?;
            }
            legacy::Found::Claims(claims) => {
                loaded.missing = false;
                self.discard_stale(&claims, &mut loaded)?;
                self.migrate(claims, &mut loaded)?;
            }
        }
        Ok(loaded)
    }

    /// A legacy file beside records: a build that knows only that file ran after the records were
    /// written (a downgrade, then this upgrade again), so the file is the newer state. A record of a
    /// claim it does not list is of a claim unprepared meanwhile, whose devices may be another
    /// claim's now: undoing it would take them from that claim's pod. It is moved aside.
    fn discard_stale(
        &self,
        claims: &BTreeMap<String, ClaimRecord>,
        loaded: &mut Loaded,
    ) -> Result<(), CheckpointError> {
        let listed: Vec<&str> = claims.values().map(|r| r.claim.uid.as_str()).collect();
        // A record that could not be read is of a claim too: stale as well when not listed.
        let stale: Vec<String> = loaded
            .claims
            .keys()
            .chain(loaded.unreadable.iter().map(|u| &u.uid))
            .filter(|uid| !listed.contains(&uid.as_str()))
            .cloned()
            .collect();
        for uid in stale {
            loaded.claims.remove(&uid);
            loaded.unreadable.retain(|u| u.uid != uid);
            let path = self.records.record_path(&uid);
            let why = format!(
                "{}: claim {uid} is not in {}, which a build that ran after this record wrote (a \
                 downgrade): unprepared since",
                path.display(),
                self.legacy.display()
            );
            self.records.discard(loaded, Some(uid), &path, &why)?;
        }
        Ok(())
    }

    /// Writes the legacy file's claims as records (flushed to the disk), then removes the file: a
    /// crash meanwhile leaves it, moved again at the next start. A claim that cannot be a record
    /// (listed under another UID than its own, a UID that is not a file name, larger than
    /// [`MAX_CLAIM_BYTES`]) is reported in `loaded.discarded`, so the preparer rebuilds it from its
    /// CDI spec as any claim whose record was bad, and the file is moved aside instead of removed.
    fn migrate(
        &self,
        claims: BTreeMap<String, ClaimRecord>,
        loaded: &mut Loaded,
    ) -> Result<(), CheckpointError> {
        let mut unfit: Vec<(String, String)> = Vec::new();
        let mut fit = Vec::new();
        for (key, record) in claims {
            if key == record.claim.uid {
                fit.push(record);
            } else {
                let why = format!("listed under {key:?}");
                unfit.push((record.claim.uid, why));
            }
        }
        let refused: Vec<String> = self
            .records
            .import(&fit)?
            .into_iter()
            .map(|(record, why)| {
                unfit.push((record.claim.uid.clone(), why.to_string()));
                record.claim.uid.clone()
            })
            .collect();
        fit.retain(|record| !refused.contains(&record.claim.uid));
        if unfit.is_empty() {
            fs::remove_file(&self.legacy).map_err(io_at("remove", &self.legacy))?;
            checkpoint::sync_dir(files::parent_of(&self.legacy))?;
        } else {
            self.records.mark_rebuild()?;
            let aside =
                files::move_aside(&self.legacy).map_err(io_at("move aside", &self.legacy))?;
            for (uid, why) in unfit {
                let why = format!(
                    "{}: claim {uid} not moved into the checkpoint directory: {why}; the file was \
                     moved to {}",
                    self.legacy.display(),
                    aside.display()
                );
                let (uid, moved_to) = (Some(uid), aside.clone());
                loaded.discarded.push(Discarded { uid, why, moved_to });
            }
        }
        loaded.migrated = fit.len();
        // A record that could not be read was written over by the file's (the newer state).
        loaded
            .unreadable
            .retain(|u| !fit.iter().any(|r| r.claim.uid == u.uid));
        let fit = fit.into_iter().map(|r| (r.claim.uid.clone(), r));
        loaded.claims.extend(fit);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
