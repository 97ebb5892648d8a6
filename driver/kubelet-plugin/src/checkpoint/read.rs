//! Reading one record file: the header (format version, CRC-32, length), the checksum, the record,
//! the claim it names; and what a file that does not read as a record is ([`Unusable`]).

use std::fs;
use std::io;
use std::path::Path;

use super::{Header, MAX_FILE_BYTES, Record, VERSION, crc32, files, not_a_file};

/// Why a record file is not used.
pub(super) enum Unusable {
    /// Not read (an I/O error), or not understood (a later version's record): left in place.
    Io(io::Error),
    /// Not a valid record: moved aside.
    Bad(String),
}

/// An intact record this version does not understand, as an error that leaves it in place
/// ([`super::Unreadable`], `InvalidData`).
fn not_understood(why: String) -> Unusable {
    Unusable::Io(io::Error::new(io::ErrorKind::InvalidData, why))
}

/// Reads the record file of `uid`: its header, checksum and the claim it names are checked.
pub(super) fn read_record<R: Record>(path: &Path, uid: &str) -> Result<R, Unusable> {
    let meta = fs::symlink_metadata(path).map_err(Unusable::Io)?;
    if let Some(what) = not_a_file(&meta) {
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
    // Written by a later version (this one rolled back to): left in place, as a file that cannot
    // be read, and not moved aside: it holds what undoing the claim needs, which the later version
    // reads again once it is back. A record the claim's calls cannot use until then.
    if header.version > VERSION {
        return Err(not_understood(format!(
            "written by a later version of the plugin (record format {}, this one reads {VERSION})",
            header.version
        )));
    }
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
    // Intact (the checksum matches) but not a record this version understands: a field or a value
    // a later version added. Left in place, as above, not moved aside as a corrupt one is.
    let record: R = serde_json::from_slice(body).map_err(|e| {
        not_understood(format!(
            "not a claim record this version of the plugin understands (written by a later \
             one?): {e}"
        ))
    })?;
    if record.uid() != uid {
        return Err(bad(format!(
            "holds the record of claim {}, not of {uid}",
            record.uid()
        )));
    }
    Ok(record)
}
