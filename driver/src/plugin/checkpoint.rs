//! The checkpoint of prepared claims: one JSON file in the plugin's data directory, written atomically
//! (an exclusively created temp file with an unpredictable name, fsync, rename, fsync of the
//! directory; mode 0600 in a 0700 directory), with a checksum of its content and the boot id of the
//! node when each claim was prepared.
//!
//! A claim is recorded in two phases: `Started` before any device or CDI change is made, `Completed`
//! once everything is in place. After a crash a `Started` claim is rolled back and redone; a
//! `Completed` one is answered again with the same devices (its CDI spec is rewritten: after a reboot
//! `/var/run/cdi` is empty). A file that is not a checkpoint (corrupt, truncated, oversized, a
//! directory) is moved aside (`checkpoint.json.bad-*`, the newest [`files::KEEP_ASIDE`] kept) and
//! reported, never a crash loop. What one claim may store is bounded ([`MAX_CLAIM_BYTES`]) and a
//! store that would exceed [`MAX_BYTES`] is refused, so a written checkpoint always loads again.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hal::ErrorKind;

use super::api::{ClaimRef, PreparedDevice};

pub use dra_kubelet_plugin::files;

/// The format version written.
const VERSION: u32 = 1;
/// The largest checkpoint written or read: anything bigger is not ours.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// The most one claim's record may take in the checkpoint (its CDI spec included): 256 claims of
/// this size fit in [`MAX_BYTES`]. A claim that needs more is refused at prepare.
pub const MAX_CLAIM_BYTES: usize = 256 * 1024;

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
    pub cdi_spec: serde_json::Value,
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
    /// Rebuilt from the claim's CDI spec after the checkpoint was lost: `devices` lack their
    /// requests and `undo` the original drivers, so a prepare asked again redoes the claim. Left out
    /// when false, as `rt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnDisk {
    version: u32,
    /// CRC-32 (IEEE) of the JSON of `claims`, as 8 hex digits.
    checksum: String,
    claims: BTreeMap<String, ClaimRecord>,
}

/// What [`CheckpointFile::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records by claim UID.
    pub claims: BTreeMap<String, ClaimRecord>,
    /// Why the file on disk was not used (corrupt, wrong version, not a file), naming it and where it
    /// was moved; it is replaced on the next store.
    pub discarded: Option<String>,
    /// Where the unusable file was moved (kept for inspection).
    pub moved_to: Option<PathBuf>,
    /// Temp files of interrupted writes that were removed.
    pub removed_temps: Vec<PathBuf>,
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
        /// The checkpoint file.
        path: PathBuf,
        /// `namespace/name` (uid) of the claim.
        claim: String,
        /// Its size.
        bytes: usize,
        /// [`MAX_CLAIM_BYTES`].
        max: usize,
    },
    /// The whole checkpoint would be larger than [`MAX_BYTES`].
    #[error("{}: {bytes} bytes would be written, more than the {max} a checkpoint may hold", path.display())]
    TooLarge {
        /// The checkpoint file.
        path: PathBuf,
        /// The size it would have.
        bytes: usize,
        /// [`MAX_BYTES`].
        max: usize,
    },
    /// The records could not be serialized.
    #[error("serializing {}: {source}", path.display())]
    Serialize {
        /// The checkpoint file.
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
            CheckpointError::ClaimTooLarge { .. } | CheckpointError::TooLarge { .. } => {
                ErrorKind::InvalidInput
            }
            CheckpointError::Serialize { .. } => ErrorKind::Malformed,
        }
    }
}

/// A test hook run before each write of the checkpoint; an error fails the write as the disk would.
pub type WriteFault = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// The checkpoint file.
#[derive(Clone)]
pub struct CheckpointFile {
    path: PathBuf,
    fault: Option<WriteFault>,
}

impl fmt::Debug for CheckpointFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointFile")
            .field("path", &self.path)
            .field("fault", &self.fault.is_some())
            .finish()
    }
}

impl CheckpointFile {
    /// The checkpoint at `path` (usually `<kubelet-root>/plugins/<driver>/checkpoint.json`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile {
            path: path.into(),
            fault: None,
        }
    }

    /// Runs `fault` before every write (tests: a full disk).
    pub fn with_write_fault(mut self, fault: WriteFault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> CheckpointError {
        let path = self.path.clone();
        move |source| CheckpointError::Io { op, path, source }
    }

    /// Reads the checkpoint, after removing the temp files of interrupted writes. A missing file is
    /// an empty checkpoint; anything that is not a valid checkpoint (corrupt, another version,
    /// larger than [`MAX_BYTES`], a directory, a link) is moved aside and reported in `discarded`.
    /// Only I/O failures (permissions, a failed rename) are errors.
    pub fn load(&self) -> Result<Loaded, CheckpointError> {
        let removed_temps =
            files::remove_stale_temps(&self.path).map_err(self.io("remove stale temp files of"))?;
        let empty = Loaded {
            removed_temps,
            ..Loaded::default()
        };
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(empty),
            Err(e) => return Err(self.io("inspect")(e)),
        };
        if !meta.file_type().is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.is_symlink() {
                "a symbolic link"
            } else {
                "a special file"
            };
            return self.discard(empty, format!("is {what}, not a file"));
        }
        let mut bytes = Vec::new();
        let file = files::open_no_follow(&self.path).map_err(self.io("open"))?;
        io::Read::read_to_end(&mut io::Read::take(file, MAX_BYTES as u64 + 1), &mut bytes)
            .map_err(self.io("read"))?;
        if bytes.len() > MAX_BYTES {
            return self.discard(empty, "larger than 64 MiB".into());
        }
        let on_disk: OnDisk = match serde_json::from_slice(&bytes) {
            Ok(on_disk) => on_disk,
            Err(e) => return self.discard(empty, format!("not a checkpoint: {e}")),
        };
        if on_disk.version != VERSION {
            let why = format!("version {} (expected {VERSION})", on_disk.version);
            return self.discard(empty, why);
        }
        let checksum =
            checksum_of(&on_disk.claims).map_err(|source| CheckpointError::Serialize {
                path: self.path.clone(),
                source,
            })?;
        if checksum != on_disk.checksum {
            let why = format!(
                "checksum {} does not match the content ({checksum})",
                on_disk.checksum
            );
            return self.discard(empty, why);
        }
        Ok(Loaded {
            claims: on_disk.claims,
            ..empty
        })
    }

    fn discard(&self, mut loaded: Loaded, why: String) -> Result<Loaded, CheckpointError> {
        let aside = files::move_aside(&self.path).map_err(self.io("move aside"))?;
        loaded.discarded = Some(format!(
            "{}: {why}; moved to {}",
            self.path.display(),
            aside.display()
        ));
        loaded.moved_to = Some(aside);
        Ok(loaded)
    }

    /// Checks that `record` fits in [`MAX_CLAIM_BYTES`].
    pub fn check_claim(&self, record: &ClaimRecord) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| CheckpointError::Serialize {
                path: self.path.clone(),
                source,
            })?
            .len();
        if bytes > MAX_CLAIM_BYTES {
            let c = &record.claim;
            return Err(CheckpointError::ClaimTooLarge {
                path: self.path.clone(),
                claim: format!("{}/{} ({})", c.namespace, c.name, c.uid),
                bytes,
                max: MAX_CLAIM_BYTES,
            });
        }
        Ok(())
    }

    /// Replaces the checkpoint with `claims`, atomically: a crash or a failed write leaves the old
    /// file. A checkpoint larger than [`MAX_BYTES`] is refused (nothing written).
    pub fn store(&self, claims: &BTreeMap<String, ClaimRecord>) -> Result<(), CheckpointError> {
        let serialize = |source| CheckpointError::Serialize {
            path: self.path.clone(),
            source,
        };
        let too_large = |bytes| CheckpointError::TooLarge {
            path: self.path.clone(),
            bytes,
            max: MAX_BYTES,
        };
        let compact = serde_json::to_vec(claims).map_err(serialize)?;
        if compact.len() > MAX_BYTES {
            return Err(too_large(compact.len()));
        }
        let on_disk = OnDisk {
            version: VERSION,
            checksum: format!("{:08x}", crc32(&compact)),
            claims: claims.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&on_disk).map_err(serialize)?;
        if bytes.len() > MAX_BYTES {
            return Err(too_large(bytes.len()));
        }
        let fault = |step| match &self.fault {
            Some(fault) if step == files::Step::Write => fault(),
            _ => Ok(()),
        };
        files::write_atomically(&self.path, &bytes, &fault)
            .map_err(|e| self.io(e.step.action())(e.source))
    }
}

fn checksum_of(claims: &BTreeMap<String, ClaimRecord>) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(claims)?;
    Ok(format!("{:08x}", crc32(&bytes)))
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, the one of zlib and `cksum -a crc32b`),
/// computed by `crc32fast` (SIMD where the CPU has it): the same value the bit-at-a-time loop of
/// earlier versions wrote, so existing checkpoints still verify.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
