//! The checkpoint of prepared claims: one JSON file in the plugin's data directory, written atomically
//! (temp file, fsync, rename, fsync of the directory), with a checksum of its content and the boot id
//! of the node when each claim was prepared.
//!
//! A claim is recorded in two phases: `Started` before any device or CDI change is made, `Completed`
//! once everything is in place. After a crash a `Started` claim is rolled back and redone; a
//! `Completed` one is answered again with the same devices (its CDI spec is rewritten: after a reboot
//! `/var/run/cdi` is empty). A file that does not parse or whose checksum does not match is reported
//! and replaced by an empty checkpoint, never a crash loop.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::api::{ClaimRef, PreparedDevice};

/// The format version written.
const VERSION: u32 = 1;
/// Checkpoints are small (a record per prepared claim); anything bigger is not ours.
const MAX_BYTES: u64 = 64 * 1024 * 1024;

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
    /// Why the file on disk was not used (corrupt, wrong version); it is replaced on the next store.
    pub discarded: Option<String>,
}

/// The checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint at `path` (usually `<kubelet-root>/plugins/<driver>/checkpoint.json`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint. A missing file is an empty checkpoint; a corrupt one is empty with the
    /// reason in `discarded`. Only an unreadable file (permissions, I/O) is an error.
    pub fn load(&self) -> io::Result<Loaded> {
        let bytes = match fs::File::open(&self.path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(file, MAX_BYTES + 1), &mut bytes)?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => return Err(e),
        };
        let discard = |why: String| Loaded {
            claims: BTreeMap::new(),
            discarded: Some(format!("{}: {why}", self.path.display())),
        };
        if bytes.len() as u64 > MAX_BYTES {
            return Ok(discard("larger than 64 MiB".into()));
        }
        let on_disk: OnDisk = match serde_json::from_slice(&bytes) {
            Ok(on_disk) => on_disk,
            Err(e) => return Ok(discard(format!("not a checkpoint: {e}"))),
        };
        if on_disk.version != VERSION {
            return Ok(discard(format!(
                "version {} (expected {VERSION})",
                on_disk.version
            )));
        }
        let checksum = checksum_of(&on_disk.claims)?;
        if checksum != on_disk.checksum {
            return Ok(discard(format!(
                "checksum {} does not match the content ({checksum})",
                on_disk.checksum
            )));
        }
        Ok(Loaded {
            claims: on_disk.claims,
            discarded: None,
        })
    }

    /// Replaces the checkpoint with `claims`, atomically: a crash leaves either the old or the new file.
    pub fn store(&self, claims: &BTreeMap<String, ClaimRecord>) -> io::Result<()> {
        let on_disk = OnDisk {
            version: VERSION,
            checksum: checksum_of(claims)?,
            claims: claims.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&on_disk).map_err(io::Error::other)?;
        write_atomically(&self.path, &bytes)
    }
}

fn checksum_of(claims: &BTreeMap<String, ClaimRecord>) -> io::Result<String> {
    let bytes = serde_json::to_vec(claims).map_err(io::Error::other)?;
    Ok(format!("{:08x}", crc32(&bytes)))
}

/// CRC-32 (IEEE 802.3, reflected, the one of zlib and `cksum -a crc32b`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// Writes `bytes` to `path` through a temp file in the same directory, fsyncs it, renames it over
/// `path` and fsyncs the directory. The temp file is removed on failure.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn records_without_rt_tasks_serialize_as_before_so_old_checkpoints_keep_their_checksum() {
        let json = serde_json::to_value(record("u1", Phase::Completed)).unwrap();
        assert!(json.get("rt").is_none(), "{json}");
        let old: ClaimRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(old).unwrap(), json);
    }

    fn record(uid: &str, phase: Phase) -> ClaimRecord {
        ClaimRecord {
            claim: ClaimRef {
                namespace: "ns".into(),
                uid: uid.into(),
                name: format!("claim-{uid}"),
            },
            phase,
            boot_id: "boot-1".into(),
            devices: vec![PreparedDevice {
                request_names: vec!["gpu".into()],
                pool_name: "node-1".into(),
                device_name: "gpu-0008-06-00-0".into(),
                cdi_device_ids: vec![format!("hal.dra.dev/device={uid}-gpu-0008-06-00-0")],
                share_id: None,
            }],
            cdi_spec: serde_json::json!({"cdiVersion": "0.5.0"}),
            undo: BTreeMap::new(),
            rt: BTreeMap::new(),
            pods: Vec::new(),
            cpus: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path().join("sub/checkpoint.json"));
        let loaded = file.load().unwrap();
        assert!(loaded.claims.is_empty() && loaded.discarded.is_none());
        let mut claims = BTreeMap::new();
        claims.insert("a".to_owned(), record("a", Phase::Started));
        claims.insert("b".to_owned(), record("b", Phase::Completed));
        file.store(&claims).unwrap();
        assert_eq!(file.load().unwrap().claims, claims);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["checkpoint.json"]);
    }

    #[test]
    fn corruption_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        let file = CheckpointFile::new(&path);
        let mut claims = BTreeMap::new();
        claims.insert("a".to_owned(), record("a", Phase::Completed));
        file.store(&claims).unwrap();

        // A flipped byte inside the content: valid JSON, wrong checksum.
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("claim-a", "claim-x");
        fs::write(&path, text).unwrap();
        let loaded = file.load().unwrap();
        assert!(loaded.claims.is_empty());
        assert!(loaded.discarded.unwrap().contains("checksum"));

        for garbage in [
            "",
            "{",
            "null",
            "{\"version\": 9, \"checksum\": \"\", \"claims\": {}}",
        ] {
            fs::write(&path, garbage).unwrap();
            let loaded = file.load().unwrap();
            assert!(loaded.claims.is_empty(), "{garbage}");
            assert!(loaded.discarded.is_some(), "{garbage}");
        }
        file.store(&claims).unwrap();
        assert_eq!(
            file.load().unwrap().claims,
            claims,
            "replaced by the next store"
        );
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
