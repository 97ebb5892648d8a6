//! The checkpoint of prepared claims: one file per claim in the plugin's checkpoint directory
//! (`<plugin-dir>/checkpoint/<claim-uid>.json`), so a prepare or unprepare writes only the claim it
//! changes. Each file is a header line (format version, CRC-32 and length of the record) and the
//! record's JSON; it is written atomically (an exclusively created temp file with an unpredictable
//! name, renamed over the record; mode 0600 in a 0700 directory), with the boot id of the node when
//! the claim was prepared.
//!
//! A claim is recorded in two phases: `Started` before any device or CDI change is made, `Completed`
//! once everything is in place. Only the `Completed` write is fsynced (file and directory: two
//! fsyncs per prepare); the `Started` record and the claim's CDI spec need no fsync: a crash of the
//! process keeps the page cache (the record is there), and a power loss reboots the node, which
//! undoes every device change a `Started` record could describe. After a crash a `Started` claim is
//! rolled back and redone; a `Completed` one is answered again with the same devices (its CDI spec
//! is rewritten: after a reboot `/var/run/cdi` is empty).
//!
//! A record file that is not a record (corrupt, truncated, oversized, of another claim, a directory)
//! is moved aside (`<uid>.json.bad-*`, the newest [`files::KEEP_ASIDE`] kept per claim) and reported
//! with its claim, never a crash loop; the preparer rebuilds that claim from its CDI spec. What one
//! claim may store is bounded ([`MAX_CLAIM_BYTES`]). The single `checkpoint.json` of earlier
//! versions is moved into the directory at start (or aside, when it is not a valid checkpoint).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hal::ErrorKind;

use super::api::{ClaimRef, PreparedDevice};

pub use dra_kubelet_plugin::files;

mod legacy;

/// The format version of a record file.
const VERSION: u32 = 2;
/// The most one claim's record may take (its CDI spec included). A claim that needs more is refused
/// at prepare.
pub const MAX_CLAIM_BYTES: usize = 256 * 1024;
/// The most a record file may take: the record and its header line. Anything bigger is not ours.
const MAX_FILE_BYTES: usize = MAX_CLAIM_BYTES + 256;
/// The extension of record files.
const RECORD_EXT: &str = ".json";

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
    /// The CPUs given to the claim, by device: reserved here before any I/O, the same after a restart
    /// or a reboot.
    #[serde(default)]
    pub cpus: BTreeMap<String, hal::CpuSet>,
    /// The real-time tasks placed for the claim, by device. Left out when empty, so records written
    /// before it existed serialize (and checksum) as they did.
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

/// The header line of a record file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    version: u32,
    /// CRC-32 (IEEE) of the record's JSON (the rest of the file), as 8 hex digits.
    checksum: String,
    /// Length of the record's JSON.
    bytes: usize,
}

/// A file that was not a valid checkpoint, moved aside.
#[derive(Debug, Clone)]
pub struct Discarded {
    /// The claim whose record it was; `None` for the whole checkpoint (the directory, or the single
    /// file of earlier versions).
    pub uid: Option<String>,
    /// What was wrong, naming the file and where it was moved.
    pub why: String,
    /// Where it was moved (kept for inspection).
    pub moved_to: PathBuf,
}

/// What [`CheckpointFile::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records by claim UID.
    pub claims: BTreeMap<String, ClaimRecord>,
    /// Files that were not valid records, moved aside.
    pub discarded: Vec<Discarded>,
    /// Temp files of interrupted writes that were removed.
    pub removed_temps: Vec<PathBuf>,
    /// There was no checkpoint at all (neither the directory nor a legacy file): a new plugin
    /// directory, or one removed by hand.
    pub missing: bool,
    /// How many claims were moved from a legacy `checkpoint.json`.
    pub migrated: usize,
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `move aside`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error (`StorageFull` for ENOSPC).
        #[source]
        source: io::Error,
    },
    /// One claim's record is larger than [`MAX_CLAIM_BYTES`].
    #[error(
        "{}: claim {claim} would store {bytes} bytes (its devices, CDI spec and config), more than \
         the {max} one claim may; use fewer or smaller config env variables or fewer devices",
        path.display()
    )]
    ClaimTooLarge {
        /// The claim's record file.
        path: PathBuf,
        /// `namespace/name` (uid) of the claim.
        claim: String,
        /// Its size.
        bytes: usize,
        /// [`MAX_CLAIM_BYTES`].
        max: usize,
    },
    /// The record could not be serialized.
    #[error("serializing {}: {source}", path.display())]
    Serialize {
        /// The claim's record file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl CheckpointError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::Io { source, .. } => ErrorKind::from_io(source),
            CheckpointError::ClaimTooLarge { .. } => ErrorKind::InvalidInput,
            CheckpointError::Serialize { .. } => ErrorKind::Malformed,
        }
    }
}

/// A test hook run before each write or removal of a record; an error fails it as the disk would.
pub type WriteFault = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// The checkpoint directory, and where earlier versions kept their single file.
#[derive(Clone)]
pub struct CheckpointFile {
    dir: PathBuf,
    legacy: PathBuf,
    fault: Option<WriteFault>,
}

impl fmt::Debug for CheckpointFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointFile")
            .field("dir", &self.dir)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

impl CheckpointFile {
    /// The checkpoint directory `dir` (the plugin uses `<kubelet-root>/plugins/<driver>/checkpoint`);
    /// the single file of earlier versions is `dir` with the extension `.json`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        CheckpointFile {
            legacy: dir.with_extension("json"),
            dir,
            fault: None,
        }
    }

    /// Runs `fault` before every write and removal of a record (tests: a full disk).
    pub fn with_write_fault(mut self, fault: WriteFault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file of the claim `uid`.
    pub fn record_path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}{RECORD_EXT}"))
    }

    /// Reads every record, after removing the temp files of interrupted writes and moving a legacy
    /// `checkpoint.json` into the directory. A missing directory is an empty checkpoint; a record file
    /// that is not a valid record, or a directory path that is not a directory, is moved aside and
    /// reported in `discarded`. Only I/O failures (permissions, a failed rename) are errors.
    pub fn load(&self) -> Result<Loaded, CheckpointError> {
        let mut loaded = Loaded {
            removed_temps: files::remove_stale_temps(&self.legacy)
                .map_err(io_at("remove stale temp files of", &self.legacy))?,
            ..Loaded::default()
        };
        let legacy = legacy::read(&self.legacy).map_err(io_at("read", &self.legacy))?;
        let dir_exists = match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => true,
            Ok(meta) => {
                let what = if meta.is_symlink() {
                    "a symbolic link"
                } else {
                    "not a directory"
                };
                self.discard(&mut loaded, None, &self.dir, what.to_owned())?;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_at("inspect", &self.dir)(e)),
        };
        loaded.missing = !dir_exists && loaded.discarded.is_empty();
        if dir_exists {
            self.read_dir(&mut loaded)?;
        }
        match legacy {
            legacy::Found::Missing => {}
            legacy::Found::Bad(why) => {
                loaded.missing = false;
                self.discard(&mut loaded, None, &self.legacy, why)?;
            }
            legacy::Found::Claims(claims) => {
                loaded.missing = false;
                self.migrate(&claims)?;
                loaded.migrated = claims.len();
                loaded.claims.extend(claims);
            }
        }
        Ok(loaded)
    }

    /// Writes the legacy file's claims as records, then removes it: a crash meanwhile leaves the
    /// legacy file, moved again at the next start.
    fn migrate(&self, claims: &BTreeMap<String, ClaimRecord>) -> Result<(), CheckpointError> {
        for record in claims.values() {
            let bytes = self.encode(record)?;
            let path = self.record_path(&record.claim.uid);
            files::replace(&path, &bytes, &|_| Ok(()), files::Durability::Unsynced)
                .map_err(|e| io_at(e.step.action(), &e.path)(e.source))?;
        }
        sync_dir(&self.dir)?;
        fs::remove_file(&self.legacy).map_err(io_at("remove", &self.legacy))?;
        sync_dir(files::parent_of(&self.legacy))
    }

    fn read_dir(&self, loaded: &mut Loaded) -> Result<(), CheckpointError> {
        let entries = fs::read_dir(&self.dir).map_err(io_at("list", &self.dir))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at("list", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') && name.ends_with(".tmp") {
                let temp = entry.path();
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&temp),
                    _ => fs::remove_file(&temp),
                };
                match removed {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_at("remove", &temp)(e));
                    }
                    _ => loaded.removed_temps.push(temp),
                }
                continue;
            }
            match name.strip_suffix(RECORD_EXT) {
                Some(uid) if !uid.is_empty() && !name.starts_with('.') => {
                    records.push(uid.to_owned());
                }
                // Files moved aside (`*.json.bad-*`) and anything else that is not a record.
                _ => {}
            }
        }
        for uid in records {
            let path = self.record_path(&uid);
            match read_record(&path, &uid) {
                Ok(record) => {
                    loaded.claims.insert(uid, record);
                }
                Err(Unusable::Io(e)) => return Err(io_at("read", &path)(e)),
                Err(Unusable::Bad(why)) => self.discard(loaded, Some(uid), &path, why)?,
            }
        }
        Ok(())
    }

    fn discard(
        &self,
        loaded: &mut Loaded,
        uid: Option<String>,
        path: &Path,
        why: String,
    ) -> Result<(), CheckpointError> {
        let aside = files::move_aside(path).map_err(io_at("move aside", path))?;
        loaded.discarded.push(Discarded {
            uid,
            why: format!("{}: {why}; moved to {}", path.display(), aside.display()),
            moved_to: aside,
        });
        Ok(())
    }

    /// The file content of `record`: its header line and its JSON; refused when the record is larger
    /// than [`MAX_CLAIM_BYTES`].
    pub fn encode(&self, record: &ClaimRecord) -> Result<Vec<u8>, CheckpointError> {
        let path = self.record_path(&record.claim.uid);
        let body = serde_json::to_vec(record).map_err(|source| CheckpointError::Serialize {
            path: path.clone(),
            source,
        })?;
        if body.len() > MAX_CLAIM_BYTES {
            let c = &record.claim;
            return Err(CheckpointError::ClaimTooLarge {
                path,
                claim: format!("{}/{} ({})", c.namespace, c.name, c.uid),
                bytes: body.len(),
                max: MAX_CLAIM_BYTES,
            });
        }
        let header = Header {
            version: VERSION,
            checksum: format!("{:08x}", crc32(&body)),
            bytes: body.len(),
        };
        let mut bytes = serde_json::to_vec(&header)
            .map_err(|source| CheckpointError::Serialize { path, source })?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Checks that `record` fits in [`MAX_CLAIM_BYTES`].
    pub fn check_claim(&self, record: &ClaimRecord) -> Result<(), CheckpointError> {
        self.encode(record).map(drop)
    }

    /// Writes the record of its claim, atomically: a crash or a failed write leaves the old record
    /// (or none). [`files::Durability::Synced`] fsyncs the file and the directory.
    pub fn put(
        &self,
        record: &ClaimRecord,
        durability: files::Durability,
    ) -> Result<(), CheckpointError> {
        let path = self.record_path(&record.claim.uid);
        check_uid(&record.claim.uid, &path)?;
        let bytes = self.encode(record)?;
        let fault = |step| match &self.fault {
            Some(fault) if step == files::Step::Write => fault(),
            _ => Ok(()),
        };
        files::replace(&path, &bytes, &fault, durability)
            .map_err(|e| io_at(e.step.action(), &path)(e.source))
    }

    /// Every valid record, read without side effects (no temp file removed, nothing moved aside, no
    /// legacy file migrated: that is [`load`](Self::load)'s, at the preparer's start). For readers
    /// beside the preparer, such as the pod-network handler. A record being replaced at this moment
    /// is read whole (old or new: writes are renames); a bad one is left out.
    pub fn read_valid(&self) -> Result<BTreeMap<String, ClaimRecord>, CheckpointError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_at("list", &self.dir)(e)),
        };
        let mut claims = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(io_at("list", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(uid) = name.strip_suffix(RECORD_EXT) else {
                continue;
            };
            if uid.is_empty() || name.starts_with('.') {
                continue;
            }
            match read_record(&self.record_path(uid), uid) {
                Ok(record) => {
                    claims.insert(uid.to_owned(), record);
                }
                // Gone since the listing (unprepared meanwhile), or bad: not a prepared claim.
                Err(Unusable::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(Unusable::Io(e)) => return Err(io_at("read", &entry.path())(e)),
                Err(Unusable::Bad(_)) => {}
            }
        }
        Ok(claims)
    }

    /// Removes the record of `uid` (none is success) and fsyncs the directory.
    pub fn remove(&self, uid: &str) -> Result<(), CheckpointError> {
        let path = self.record_path(uid);
        check_uid(uid, &path)?;
        if let Some(fault) = &self.fault {
            fault().map_err(io_at("remove", &path))?;
        }
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at("remove", &path)(e)),
        }
    }
}

/// A UID that is not a plain file name never names a file (claim references are checked before; this
/// keeps a record of a rebuilt or hand-made claim inside the directory too).
fn check_uid(uid: &str, path: &Path) -> Result<(), CheckpointError> {
    if uid.is_empty() || uid.starts_with('.') || uid.contains(['/', '\0']) {
        return Err(io_at("name a record", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the claim UID {uid:?} is not a plain file name"),
        )));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("sync directory", dir))
}

enum Unusable {
    Io(io::Error),
    Bad(String),
}

/// Reads the record file of `uid`: its header, checksum and the claim it names are checked.
fn read_record(path: &Path, uid: &str) -> Result<ClaimRecord, Unusable> {
    let meta = fs::symlink_metadata(path).map_err(Unusable::Io)?;
    if !meta.file_type().is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.is_symlink() {
            "a symbolic link"
        } else {
            "a special file"
        };
        return Err(Unusable::Bad(format!("is {what}, not a file")));
    }
    let file = files::open_no_follow(path).map_err(Unusable::Io)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(file, MAX_FILE_BYTES as u64 + 1),
        &mut bytes,
    )
    .map_err(Unusable::Io)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Unusable::Bad(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let bad = |why: String| Unusable::Bad(why);
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line".into()))?;
    let (head, rest) = bytes.split_at(newline);
    let header: Header =
        serde_json::from_slice(head).map_err(|e| bad(format!("not a record header: {e}")))?;
    if header.version != VERSION {
        return Err(bad(format!(
            "version {} (expected {VERSION})",
            header.version
        )));
    }
    let body = rest.get(1..).unwrap_or_default();
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.len() != header.bytes {
        return Err(bad(format!(
            "{} bytes of record, the header says {} (truncated?)",
            body.len(),
            header.bytes
        )));
    }
    let checksum = format!("{:08x}", crc32(body));
    if checksum != header.checksum {
        return Err(bad(format!(
            "checksum {} does not match the content ({checksum})",
            header.checksum
        )));
    }
    let record: ClaimRecord =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a claim record: {e}")))?;
    if record.claim.uid != uid {
        return Err(bad(format!(
            "holds the record of claim {}, not of {uid}",
            record.claim.uid
        )));
    }
    Ok(record)
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, the one of zlib and `cksum -a crc32b`),
/// computed by `crc32fast` (SIMD where the CPU has it).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
