//! A checkpoint of prepared claims: one file per claim in a directory (`<dir>/<claim-uid>.json`), so
//! a prepare or unprepare writes only the claim it changes. Generic over the driver's record
//! ([`Record`]: its claim UID, how the claim is named in messages, and serde).
//!
//! Each file is a header line (format version, CRC-32 and length of the record) and the record's
//! JSON; it is written atomically (an exclusively created temp file with an unpredictable name,
//! renamed over the record; mode 0600 in a 0700 directory). [`files::Durability::Synced`] fsyncs the
//! file and the directory; a driver that records a claim in two phases (before any change, and once
//! everything is in place) fsyncs only the second.
//!
//! A record file that is not a record (corrupt, truncated, oversized, of another claim, a directory)
//! is moved aside (`<uid>.json.bad-*`, the newest [`files::KEEP_ASIDE`] kept per claim) and reported
//! with its claim, never a crash loop. A record file that cannot be read at all (an I/O error other
//! than "not found": EIO from a bad block, EACCES) is left where it is, for it may read later, and
//! reported with its claim ([`Unreadable`]); so is an intact record this version does not understand
//! (a later version's format or fields, after a rollback of the plugin: `InvalidData`), which holds
//! what undoing its claim needs and reads again once that version is back: neither [`Checkpoint::load`] nor
//! [`Checkpoint::read_valid`] fails on it. What one claim may store is bounded ([`MAX_CLAIM_BYTES`]).
//! Before anything is moved aside (or when the directory is missing) a rebuild is marked in the
//! directory (`.rebuild-pending`, synced): the driver rebuilds what was lost from elsewhere (its CDI
//! specs), writes it, and calls [`Checkpoint::rebuild_done`]; a start that finds the mark knows an
//! earlier rebuild did not finish (`Loaded::rebuild_interrupted`), though the moved file is gone.
//!
//! ```
//! use dra_kubelet_plugin::checkpoint::{Checkpoint, Record};
//! use dra_kubelet_plugin::files::Durability;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Prepared { uid: String, devices: Vec<String> }
//!
//! impl Record for Prepared {
//!     fn uid(&self) -> &str { &self.uid }
//!     fn describe(&self) -> String { self.uid.clone() }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let checkpoint = Checkpoint::<Prepared>::new(dir.path().join("checkpoint"));
//! let record = Prepared { uid: "u1".into(), devices: vec!["gpu-0".into()] };
//! checkpoint.put(&record, Durability::Synced)?;
//! assert_eq!(checkpoint.load()?.claims["u1"].devices, ["gpu-0"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hal::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::files;

/// The format version of a record file.
const VERSION: u32 = 2;
/// The most one claim's record may take. A claim that needs more is refused at prepare.
pub const MAX_CLAIM_BYTES: usize = 256 * 1024;
/// The most a record file may take: the record and its header line. Anything bigger is not ours.
pub const MAX_FILE_BYTES: usize = MAX_CLAIM_BYTES + 256;
/// The extension of record files.
const RECORD_EXT: &str = ".json";
/// The file that says a rebuild of records from elsewhere began and has not finished (hidden: not
/// a record).
const REBUILD_PENDING: &str = ".rebuild-pending";

/// What the checkpoint needs from a driver's record of one claim.
pub trait Record: Serialize + DeserializeOwned {
    /// The claim's UID: the name of its record file.
    fn uid(&self) -> &str;
    /// The claim as messages name it (for example `namespace/name (uid)`).
    fn describe(&self) -> String;
}

/// The header line of a record file. Fields it does not know are let through: a later version may
/// add some, and says with `version` whether this one may read the record.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// The claim whose record it was; `None` for the whole checkpoint (the directory, or a file a
    /// driver's earlier versions kept).
    pub uid: Option<String>,
    /// What was wrong, naming the file and where it was moved.
    pub why: String,
    /// Where it was moved (kept for inspection).
    pub moved_to: PathBuf,
}

/// A record file that could not be read (an I/O error other than "not found": EIO, EACCES, ...).
/// It is left in place: it is not known to be bad, and a later read may succeed.
#[derive(Debug)]
pub struct Unreadable {
    /// The claim whose record it is (its file name).
    pub uid: String,
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub error: io::Error,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the record of claim {} ({}) could not be read: {}",
            self.uid,
            self.path.display(),
            self.error
        )
    }
}

/// What [`Checkpoint::read_valid`] found.
#[derive(Debug)]
pub struct Valid<R> {
    /// The valid records, by claim UID.
    pub claims: BTreeMap<String, R>,
    /// The record files it could not read, left out of `claims`.
    pub unreadable: Vec<Unreadable>,
}

/// What [`Checkpoint::load`] found.
#[derive(Debug)]
pub struct Loaded<R> {
    /// Records by claim UID.
    pub claims: BTreeMap<String, R>,
    /// Files that were not valid records, moved aside.
    pub discarded: Vec<Discarded>,
    /// Record files that could not be read, left in place (not in `claims`, not moved aside): what
    /// they hold is not known to be lost. No rebuild is marked for them: the file itself says so
    /// at every load until it reads, or is replaced or removed.
    pub unreadable: Vec<Unreadable>,
    /// Temp files of interrupted writes that were removed.
    pub removed_temps: Vec<PathBuf>,
    /// There was no checkpoint at all: a new plugin directory, or one removed by hand.
    pub missing: bool,
    /// A rebuild of records ([`Checkpoint::mark_rebuild`]) began at an earlier start and did not
    /// finish (a crash, a full disk): the records it was to write may be missing, so every claim
    /// the driver finds elsewhere (its CDI specs) and has no record of is one to rebuild.
    pub rebuild_interrupted: bool,
    /// How many claims were moved from a checkpoint of a driver's earlier versions (set by the
    /// driver that migrates one).
    pub migrated: usize,
}

impl<R> Default for Loaded<R> {
    fn default() -> Self {
        Loaded {
            claims: BTreeMap::new(),
            discarded: Vec::new(),
            unreadable: Vec::new(),
            removed_temps: Vec::new(),
            missing: false,
            rebuild_interrupted: false,
            migrated: 0,
        }
    }
}

impl<R> Loaded<R> {
    /// Moves `path` aside as not a valid checkpoint (of the claim `uid`, or of the whole checkpoint)
    /// and reports it in [`Loaded::discarded`] with `why`.
    fn discard(
        &mut self,
        uid: Option<String>,
        path: &Path,
        why: &str,
    ) -> Result<(), CheckpointError> {
        let aside = files::move_aside(path).map_err(io_at("move aside", path))?;
        self.discarded.push(Discarded {
            uid,
            why: format!("{}: {why}; moved to {}", path.display(), aside.display()),
            moved_to: aside,
        });
        Ok(())
    }
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
        /// The claim, as [`Record::describe`] names it.
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

/// A test hook run before each read of a record file, with its path; an error fails the read as the
/// disk would (EIO from a bad block, EACCES).
pub type ReadFault = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// The checkpoint directory of records `R`.
pub struct Checkpoint<R> {
    dir: PathBuf,
    fault: Option<WriteFault>,
    dir_sync_fault: Option<WriteFault>,
    read_fault: Option<ReadFault>,
    record: PhantomData<fn() -> R>,
}

impl<R> Clone for Checkpoint<R> {
    fn clone(&self) -> Self {
        Checkpoint {
            dir: self.dir.clone(),
            fault: self.fault.clone(),
            dir_sync_fault: self.dir_sync_fault.clone(),
            read_fault: self.read_fault.clone(),
            record: PhantomData,
        }
    }
}

impl<R> fmt::Debug for Checkpoint<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("fault", &self.fault.is_some())
            .field("dir_sync_fault", &self.dir_sync_fault.is_some())
            .field("read_fault", &self.read_fault.is_some())
            .finish()
    }
}

/// An [`CheckpointError::Io`] of `op` on `path`.
pub fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

impl<R: Record> Checkpoint<R> {
    /// The checkpoint directory `dir` (a plugin uses `<kubelet-root>/plugins/<driver>/checkpoint`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoint {
            dir: dir.into(),
            fault: None,
            dir_sync_fault: None,
            read_fault: None,
            record: PhantomData,
        }
    }

    /// Runs `fault` before every write and removal of a record (tests: a full disk).
    pub fn with_write_fault(mut self, fault: WriteFault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Runs `fault` where a synced write fsyncs the directory, after the rename (tests: an EIO
    /// that fails the write although the new record is in place).
    pub fn with_dir_sync_fault(mut self, fault: WriteFault) -> Self {
        self.dir_sync_fault = Some(fault);
        self
    }

    /// Runs `fault` before every read of a record file, with its path (tests: a bad block, a file
    /// the plugin may not read).
    pub fn with_read_fault(mut self, fault: ReadFault) -> Self {
        self.read_fault = Some(fault);
        self
    }

    /// Reads the record file of `uid` at `path` ([`read_record`]), after the read fault.
    fn read(&self, path: &Path, uid: &str) -> Result<R, Unusable> {
        if let Some(fault) = &self.read_fault {
            fault(path).map_err(Unusable::Io)?;
        }
        read_record(path, uid)
    }

    /// Reads the record of `uid` again (one that could not be read at [`Self::load`]): `None` when
    /// there is no such file, or when it reads but is not a valid record (what the caller rebuilt
    /// instead stands, and its next write replaces it). A file that still cannot be read is an
    /// error.
    pub fn read_again(&self, uid: &str) -> Result<Option<R>, CheckpointError> {
        let path = self.record_path(uid);
        check_uid(uid, &path)?;
        match self.read(&path, uid) {
            Ok(record) => Ok(Some(record)),
            Err(Unusable::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(Unusable::Io(e)) => Err(io_at("read", &path)(e)),
            Err(Unusable::Bad(_)) => Ok(None),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file of the claim `uid`.
    pub fn record_path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}{RECORD_EXT}"))
    }

    /// Reads every record, after removing the temp files of interrupted writes. A missing directory
    /// is an empty checkpoint (`missing`); a record file that is not a valid record, or a directory
    /// path that is not a directory, is moved aside and reported in `discarded`; a record file that
    /// cannot be read (EIO, EACCES) is left in place and reported in `unreadable`. Only I/O failures
    /// of the directory or of what is removed or moved (permissions, a failed rename) are errors.
    ///
    /// Whenever something is to be rebuilt (`missing`, `discarded`), a rebuild is marked
    /// ([`Self::mark_rebuild`]) before anything is moved aside; the driver writes the records it
    /// rebuilds, then calls [`Self::rebuild_done`]. A start that finds the mark (a crash or a full
    /// disk came between) says so in `rebuild_interrupted`: the evidence of what was lost (the
    /// moved file, the missing directory) is gone by then, the mark is not.
    pub fn load(&self) -> Result<Loaded<R>, CheckpointError> {
        let mut loaded = Loaded::default();
        let dir_exists = match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => true,
            Ok(meta) => {
                let what = if meta.is_symlink() {
                    "a symbolic link"
                } else {
                    "not a directory"
                };
                // Moved before it is marked: the mark lives in the directory. A crash between the
                // two leaves no directory, which is a whole rebuild as well.
                loaded.discard(None, &self.dir, what)?;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_at("inspect", &self.dir)(e)),
        };
        loaded.missing = !dir_exists && loaded.discarded.is_empty();
        if dir_exists {
            loaded.rebuild_interrupted = fs::symlink_metadata(self.rebuild_mark()).is_ok();
            self.read_dir(&mut loaded)?;
        } else {
            self.mark_rebuild()?;
        }
        Ok(loaded)
    }

    fn rebuild_mark(&self) -> PathBuf {
        self.dir.join(REBUILD_PENDING)
    }

    /// Marks, durably, that records are about to be rebuilt from elsewhere (creating the directory
    /// if need be). [`Self::load`] does it before moving a record aside; a driver does it before
    /// discarding a checkpoint of its own (a file of its earlier versions).
    pub fn mark_rebuild(&self) -> Result<(), CheckpointError> {
        let mark = self.rebuild_mark();
        if fs::symlink_metadata(&mark).is_ok() {
            return Ok(());
        }
        files::replace(&mark, b"", &|_| Ok(()), files::Durability::Synced)
            .map_err(|e| io_at(e.step.action(), &mark)(e.source))
    }

    /// Says the rebuild is over: every record it was to write is written. Removes the mark of
    /// [`Self::mark_rebuild`], if any.
    pub fn rebuild_done(&self) -> Result<(), CheckpointError> {
        let mark = self.rebuild_mark();
        // Whatever it is: a directory in its place (made by hand) counts as the mark, and one that
        // could not be removed would stop every start.
        let removed = match fs::symlink_metadata(&mark) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&mark),
            _ => fs::remove_file(&mark),
        };
        match removed {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at("remove", &mark)(e)),
        }
    }

    /// Moves `path` aside as not a valid checkpoint (of the claim `uid`, or of the whole
    /// checkpoint: a file of the driver's earlier versions) and reports it in `loaded`, after
    /// marking a rebuild ([`Self::mark_rebuild`]).
    pub fn discard(
        &self,
        loaded: &mut Loaded<R>,
        uid: Option<String>,
        path: &Path,
        why: &str,
    ) -> Result<(), CheckpointError> {
        self.mark_rebuild()?;
        loaded.discard(uid, path, why)
    }

    fn read_dir(&self, loaded: &mut Loaded<R>) -> Result<(), CheckpointError> {
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
            if let Some(uid) = record_uid(&name) {
                records.push(uid.to_owned());
            }
            // Files moved aside (`*.json.bad-*`) and anything else that is not a record are left.
        }
        for uid in records {
            let path = self.record_path(&uid);
            match self.read(&path, &uid) {
                Ok(record) => {
                    loaded.claims.insert(uid, record);
                }
                // Removed since the listing: no record.
                Err(Unusable::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                // Not known to be bad: left for a later read, reported for the driver to decide.
                Err(Unusable::Io(error)) => loaded.unreadable.push(Unreadable { uid, path, error }),
                Err(Unusable::Bad(why)) => self.discard(loaded, Some(uid), &path, &why)?,
            }
        }
        Ok(())
    }

    /// The file content of `record`: its header line and its JSON; refused when the record is larger
    /// than [`MAX_CLAIM_BYTES`].
    pub fn encode(&self, record: &R) -> Result<Vec<u8>, CheckpointError> {
        let path = self.record_path(record.uid());
        let body = serde_json::to_vec(record).map_err(|source| CheckpointError::Serialize {
            path: path.clone(),
            source,
        })?;
        if body.len() > MAX_CLAIM_BYTES {
            return Err(CheckpointError::ClaimTooLarge {
                path,
                claim: record.describe(),
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
    pub fn check_claim(&self, record: &R) -> Result<(), CheckpointError> {
        self.encode(record).map(drop)
    }

    /// Writes the record of its claim, atomically: a crash or a failed write leaves the old record
    /// (or none). [`files::Durability::Synced`] fsyncs the file and the directory.
    pub fn put(&self, record: &R, durability: files::Durability) -> Result<(), CheckpointError> {
        let path = self.record_path(record.uid());
        check_uid(record.uid(), &path)?;
        let bytes = self.encode(record)?;
        let fault = |step| match (step, &self.fault, &self.dir_sync_fault) {
            (files::Step::Write, Some(fault), _) | (files::Step::SyncDir, _, Some(fault)) => {
                fault()
            }
            _ => Ok(()),
        };
        files::replace(&path, &bytes, &fault, durability)
            .map_err(|e| io_at(e.step.action(), &path)(e.source))
    }

    /// Writes `records` (unsynced, without the write fault), then flushes the directory's file
    /// system once (`syncfs(2)`): how a driver moves the claims of an earlier checkpoint format in.
    /// When it returns, the records' contents and names are on the disk, so the earlier file may
    /// be removed (one fsync per record would cost a thousand for a thousand claims).
    ///
    /// A record that cannot be stored (a UID that is not a plain file name, a claim larger than
    /// [`MAX_CLAIM_BYTES`]) is not written: it comes back with why, for the driver to report,
    /// and the others are written. Only failures of the file system are errors.
    pub fn import<'a>(
        &self,
        records: impl IntoIterator<Item = &'a R>,
    ) -> Result<Vec<(&'a R, CheckpointError)>, CheckpointError>
    where
        R: 'a,
    {
        let mut refused = Vec::new();
        let mut written = 0usize;
        for record in records {
            let path = self.record_path(record.uid());
            let bytes = match check_uid(record.uid(), &path).and_then(|()| self.encode(record)) {
                Ok(bytes) => bytes,
                Err(why) => {
                    refused.push((record, why));
                    continue;
                }
            };
            files::replace(&path, &bytes, &|_| Ok(()), files::Durability::Unsynced)
                .map_err(|e| io_at(e.step.action(), &e.path)(e.source))?;
            written += 1;
        }
        if written > 0 {
            fs::File::open(&self.dir)
                .and_then(|dir| rustix::fs::syncfs(&dir).map_err(io::Error::from))
                .map_err(io_at("flush the file system of", &self.dir))?;
        }
        Ok(refused)
    }

    /// Every valid record, read without side effects (no temp file removed, nothing moved aside:
    /// that is [`load`](Self::load)'s, at the preparer's start). For readers beside the preparer,
    /// such as a pod-network handler. A record being replaced at this moment is read whole (old or
    /// new: writes are renames); a bad one is left out. One that cannot be read (EIO, EACCES) is
    /// left out too and named in `unreadable`: one record must not keep a reader from the others.
    /// Only a directory that cannot be listed is an error.
    pub fn read_valid(&self) -> Result<Valid<R>, CheckpointError> {
        let mut valid = Valid {
            claims: BTreeMap::new(),
            unreadable: Vec::new(),
        };
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(valid),
            Err(e) => return Err(io_at("list", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_at("list", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(uid) = record_uid(&name) else {
                continue;
            };
            let path = self.record_path(uid);
            match self.read(&path, uid) {
                Ok(record) => {
                    valid.claims.insert(uid.to_owned(), record);
                }
                // Gone since the listing (unprepared meanwhile), or bad: not a prepared claim.
                Err(Unusable::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(Unusable::Io(error)) => valid.unreadable.push(Unreadable {
                    uid: uid.to_owned(),
                    path,
                    error,
                }),
                Err(Unusable::Bad(_)) => {}
            }
        }
        Ok(valid)
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

/// The claim UID of the record file `name`: `<uid>.json`, a valid claim UID
/// ([`crate::handler::check_claim_uid`]; hidden files and anything else are not records).
fn record_uid(name: &str) -> Option<&str> {
    let uid = name.strip_suffix(RECORD_EXT)?;
    crate::handler::check_claim_uid(uid).is_ok().then_some(uid)
}

/// A UID that is not a valid claim UID never names a file (claim references are checked before;
/// this keeps a record of a rebuilt or hand-made claim inside the directory too).
fn check_uid(uid: &str, path: &Path) -> Result<(), CheckpointError> {
    crate::handler::check_claim_uid(uid).map_err(|problem| {
        io_at("name a record", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the claim UID {uid:?} {problem}"),
        ))
    })
}

/// Fsyncs the directory `dir` (after a rename or a removal in it).
pub fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("sync directory", dir))
}

/// What is at `path` when it is not a plain file: `a directory`, `a symbolic link`, `a special file`.
pub fn not_a_file(meta: &fs::Metadata) -> Option<&'static str> {
    match meta.file_type() {
        t if t.is_file() => None,
        t if t.is_dir() => Some("a directory"),
        t if t.is_symlink() => Some("a symbolic link"),
        _ => Some("a special file"),
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, the one of zlib and `cksum -a crc32b`),
/// computed by `crc32fast` (SIMD where the CPU has it).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

mod read;
use read::{Unusable, read_record};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
