//! Transient (per-claim) spec files in a CDI spec directory, written atomically.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::validate::{kind_parts, validate};
use super::{CdiError, Spec};
use crate::files::{Durability, Step, replace};

/// The longest claim UID accepted in a file name (Kubernetes UIDs are 36-byte UUIDs).
/// The largest spec [`CdiDir::read_claim_spec`] reads.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// A CDI spec directory holding one transient spec per prepared claim,
/// `<dir>/<vendor>-<class>_<claimUID>.json` (the upstream transient-spec naming).
///
/// Writes go through [`crate::files::write_atomically`] (the helper the checkpoint also uses) to a hidden temp file
/// in the same directory (`.<name>.json.<random>.tmp`, which CDI runtimes ignore: they load only
/// `*.json` and `*.yaml`), are fsynced, renamed over the final name and the directory is fsynced: a reader sees the old spec or the new one, never a partial one, and
/// a crash leaves at most a stray temp file, removed by [`CdiDir::remove_claim_spec`].
///
/// Claim UIDs must be plain file-name parts: 1 to 128 bytes of ASCII letters, digits, `_ . -`, not
/// starting with `.` and without `..` (so no `/`, NUL or path traversal). Upstream replaces `/` by
/// `_` in transient ids; rejecting it instead keeps [`CdiDir::list_claim_specs`] lossless, and
/// Kubernetes UIDs never contain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiDir {
    dir: PathBuf,
    durability: Durability,
}

/// Where an injected failure happens (tests of the crash-safety guarantees; only tests construct
/// the failing variants).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailAt {
    Never,
    Write,
    Rename,
}

impl CdiDir {
    /// The spec directory `dir` (the plugin uses `/var/run/cdi`); it is created (0700) on the first
    /// write. Specs are written 0600: only the runtime (root) reads them, and config env may be secret.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CdiDir {
            dir: dir.into(),
            durability: Durability::Synced,
        }
    }

    /// Writes specs without fsync (still atomically: the old spec or the new one, never a partial
    /// one). For a plugin whose own checkpoint holds each spec and writes it again when a claim is
    /// asked for after a reboot, so a spec lost to a power loss costs nothing.
    pub fn unsynced(mut self) -> Self {
        self.durability = Durability::Unsynced;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<vendor>-<class>_<claimUID>.json`; fails on an invalid kind or an unsafe claim UID.
    pub fn claim_spec_path(&self, kind: &str, claim_uid: &str) -> Result<PathBuf, CdiError> {
        Ok(self.dir.join(claim_file_name(kind, claim_uid)?))
    }

    /// Writes `spec` as the spec of `claim_uid` (replacing any previous one) and returns its path.
    /// `cdiVersion` is raised to [`super::minimum_version`] when lower, empty or unknown; the spec
    /// is then validated, so nothing is written for an invalid one. On any error the previous spec
    /// file, if any, is left as it was. An I/O error names the path and keeps the OS error
    /// ([`CdiError::io_kind`], e.g. `StorageFull` for ENOSPC).
    pub fn write_claim_spec(&self, claim_uid: &str, spec: &Spec) -> Result<PathBuf, CdiError> {
        self.write_claim_spec_failing(claim_uid, spec, FailAt::Never)
    }

    pub(super) fn write_claim_spec_failing(
        &self,
        claim_uid: &str,
        spec: &Spec,
        fail: FailAt,
    ) -> Result<PathBuf, CdiError> {
        let mut spec = spec.clone();
        spec.raise_version_to_minimum();
        validate(&spec)?;
        let file_name = claim_file_name(&spec.kind, claim_uid)?;
        let mut bytes = serde_json::to_vec_pretty(&spec).map_err(CdiError::Serialize)?;
        bytes.push(b'\n');

        let final_path = self.dir.join(&file_name);
        let fault = |step| match (step, fail) {
            (Step::Write, FailAt::Write) | (Step::Rename, FailAt::Rename) => {
                Err(io::Error::from_raw_os_error(28)) // ENOSPC, as a full disk would report
            }
            _ => Ok(()),
        };
        replace(&final_path, &bytes, &fault, self.durability).map_err(|e| CdiError::Io {
            action: e.step.action(),
            path: e.path,
            source: e.source,
        })?;
        Ok(final_path)
    }

    /// Removes the spec of `claim_uid` and any temp file a crashed write of it left behind. A missing
    /// file or directory is success.
    pub fn remove_claim_spec(&self, kind: &str, claim_uid: &str) -> Result<(), CdiError> {
        let file_name = claim_file_name(kind, claim_uid)?;
        let path = self.dir.join(&file_name);
        remove_if_present(&path)?;

        let temp_prefix = format!(".{file_name}.");
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(io_error("read directory", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.starts_with(&temp_prefix) && n.ends_with(".tmp"))
            {
                remove_if_present(&entry.path())?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Reads back the spec of `claim_uid` (to rebuild a lost checkpoint). Only a regular file of at
    /// most `MAX_SPEC_BYTES` (1 MiB) is read, never through a link, and only a spec of `kind`.
    pub fn read_claim_spec(&self, kind: &str, claim_uid: &str) -> Result<Spec, CdiError> {
        let path = self.claim_spec_path(kind, claim_uid)?;
        let file = crate::files::open_no_follow(&path).map_err(io_error("open", &path))?;
        if !file.metadata().map_err(io_error("stat", &path))?.is_file() {
            return Err(CdiError::invalid(
                path.display().to_string(),
                "not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(
            &mut io::Read::take(file, MAX_SPEC_BYTES as u64 + 1),
            &mut bytes,
        )
        .map_err(io_error("read", &path))?;
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(CdiError::invalid(
                path.display().to_string(),
                format!("larger than {MAX_SPEC_BYTES} bytes"),
            ));
        }
        let spec: Spec = serde_json::from_slice(&bytes)
            .map_err(|e| CdiError::invalid(path.display().to_string(), e.to_string()))?;
        // A spec of another kind under this kind's name (edited by hand) is not this driver's: a
        // claim rebuilt from it would write it back under the other kind's name.
        if spec.kind != kind {
            return Err(CdiError::invalid(
                path.display().to_string(),
                format!("its kind is {:?}, not {kind:?}", spec.kind),
            ));
        }
        Ok(spec)
    }

    /// The claim UIDs that have a spec of `kind` in the directory, sorted (to find stale ones after a
    /// restart). Best effort, for cleanup: an invalid kind or an unreadable directory is logged as a
    /// warning and yields no UIDs; [`CdiDir::try_list_claim_specs`] returns the error.
    pub fn list_claim_specs(&self, kind: &str) -> Vec<String> {
        self.try_list_claim_specs(kind).unwrap_or_else(|error| {
            tracing::warn!(dir = %self.dir.display(), %error, "listing CDI claim specs failed");
            Vec::new()
        })
    }

    /// [`CdiDir::list_claim_specs`] with errors. A missing directory has no specs; temp files and
    /// names that are not ours are skipped.
    ///
    /// File names cannot tell `vendor-x/class` from `vendor/x-class`, nor a class containing `_` from
    /// a claim UID; a kind whose `<vendor>-<class>_` prefix is shared with another driver's kind would
    /// see that driver's specs, so keep kinds distinct beyond `-`/`_` (vendors own their domain).
    pub fn try_list_claim_specs(&self, kind: &str) -> Result<Vec<String>, CdiError> {
        let (vendor, class) = kind_parts(kind)?;
        let prefix = format!("{vendor}-{class}_");
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read directory", &self.dir)(e)),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let is_file = entry
                .file_type()
                .map_err(io_error("stat", &entry.path()))?
                .is_file();
            if is_file && check_claim_uid(uid).is_ok() {
                uids.push(uid.to_owned());
            }
        }
        uids.sort();
        Ok(uids)
    }
}

/// Removes `path`; a file that is not there (nor could be: a component is not a directory) is
/// removed already.
fn remove_if_present(path: &Path) -> Result<(), CdiError> {
    match fs::remove_file(path) {
        Err(e) if !absent(&e) => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Whether an error says the path does not exist: `ENOENT`, or `ENOTDIR` (a component is a file).
fn absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CdiError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CdiError {
    let path = path.to_path_buf();
    move |source| CdiError::Io {
        action,
        path,
        source,
    }
}

fn claim_file_name(kind: &str, claim_uid: &str) -> Result<String, CdiError> {
    let (vendor, class) = kind_parts(kind)?;
    check_claim_uid(claim_uid)?;
    Ok(format!("{vendor}-{class}_{claim_uid}.json"))
}

fn check_claim_uid(uid: &str) -> Result<(), CdiError> {
    crate::handler::check_claim_uid(uid)
        .map_err(|problem| CdiError::invalid("claimUID", format!("{uid:?} {problem}")))
}
