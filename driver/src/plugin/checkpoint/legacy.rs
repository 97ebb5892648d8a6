//! The checkpoint of earlier versions: one `checkpoint.json` holding every claim (version 1, with a
//! CRC-32 of the claims' JSON). Read once at start and moved into the per-claim directory.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use super::{ClaimRecord, crc32, files};

/// The largest legacy checkpoint read: anything bigger is not ours.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnDisk {
    version: u32,
    /// CRC-32 (IEEE) of the JSON of `claims`, as 8 hex digits.
    checksum: String,
    claims: BTreeMap<String, ClaimRecord>,
}

/// What is at the legacy path.
pub enum Found {
    /// Nothing.
    Missing,
    /// A valid checkpoint's claims.
    Claims(BTreeMap<String, ClaimRecord>),
    /// Something that is not a checkpoint, and why.
    Bad(String),
}

/// Reads the legacy checkpoint at `path`; only I/O failures are errors.
pub fn read(path: &Path) -> io::Result<Found> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    if let Some(what) = dra_kubelet_plugin::checkpoint::not_a_file(&meta) {
        return Ok(Found::Bad(format!("is {what}, not a file")));
    }
    let mut bytes = Vec::new();
    let file = files::open_no_follow(path)?;
    io::Read::read_to_end(&mut io::Read::take(file, MAX_BYTES as u64 + 1), &mut bytes)?;
    if bytes.len() > MAX_BYTES {
        return Ok(Found::Bad("larger than 64 MiB".into()));
    }
    let on_disk: OnDisk = match serde_json::from_slice(&bytes) {
        Ok(on_disk) => on_disk,
        Err(e) => return Ok(Found::Bad(format!("not a checkpoint: {e}"))),
    };
    if on_disk.version != 1 {
        return Ok(Found::Bad(format!(
            "version {} (expected 1)",
            on_disk.version
        )));
    }
    let checksum = serde_json::to_vec(&on_disk.claims)
        .map(|b| format!("{:08x}", crc32(&b)))
        .map_err(io::Error::other)?;
    if checksum != on_disk.checksum {
        return Ok(Found::Bad(format!(
            "checksum {} does not match the content ({checksum})",
            on_disk.checksum
        )));
    }
    Ok(Found::Claims(on_disk.claims))
}

/// A legacy checkpoint of `claims`, as earlier versions wrote it (tests of the migration).
#[cfg(test)]
pub fn encode(claims: &BTreeMap<String, ClaimRecord>) -> Vec<u8> {
    let compact = serde_json::to_vec(claims).unwrap_or_default();
    let on_disk = serde_json::json!({
        "version": 1,
        "checksum": format!("{:08x}", crc32(&compact)),
        "claims": claims,
    });
    serde_json::to_vec_pretty(&on_disk).unwrap_or_default()
}
