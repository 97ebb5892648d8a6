//! NRI's two framings, on one Unix socket:
//!
//! - the multiplexer (containerd/nri `pkg/net/multiplex`): frames of a 4-byte connection id and a 4-byte
//!   payload length (both big-endian), then the payload. Connection 1 carries the plugin service (the
//!   runtime calls the plugin), connection 2 the runtime service (the plugin calls the runtime). Each
//!   connection is a byte stream: a ttrpc message may span frames, a frame may hold several messages.
//! - ttrpc (containerd/ttrpc) inside each connection: a 10-byte header (data length and stream id,
//!   big-endian; message type; flags), then the data: a `ttrpc.Request` or `ttrpc.Response`.
//!
//! Everything read is bounded: a frame or message over ttrpc's 4 MiB limit ends the connection.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The mux connection the runtime calls the plugin on.
pub const PLUGIN_CONN: u32 = 1;
/// The mux connection the plugin calls the runtime on.
pub const RUNTIME_CONN: u32 = 2;
/// ttrpc's limit on the data of one message.
pub const MAX_DATA: usize = 4 << 20;
/// The mux header: connection id, payload length.
const MUX_HEADER: usize = 8;
/// The ttrpc header: length, stream id, type, flags.
const TTRPC_HEADER: usize = 10;
/// The largest mux payload: one whole ttrpc message.
const MAX_FRAME: usize = TTRPC_HEADER + MAX_DATA;
/// The most a Go ttrpc peer reads from a mux connection at the start of a message: its 4 KiB
/// `bufio.Reader`. The mux hands over whole frames and fails a read whose buffer is smaller (ENOMEM),
/// so a longer message is sent as Go's 4 KiB `bufio.Writer` sends it: its first 4096 bytes, then the
/// rest in one frame.
pub const GO_READ_BUFFER: usize = 4096;

/// ttrpc message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Starts a stream: a `ttrpc.Request`.
    Request,
    /// Ends a stream: a `ttrpc.Response`.
    Response,
    /// Stream data (not used by NRI's unary calls).
    Data,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Response => 2,
            Kind::Data => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            3 => Some(Kind::Data),
            _ => None,
        }
    }
}

/// One ttrpc message on one mux connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The mux connection.
    pub conn: u32,
    /// The ttrpc stream: a client numbers its calls 1, 3, 5, ...; the answer carries the same number.
    pub stream: u32,
    /// Request, response or data.
    pub kind: Kind,
    /// ttrpc flags.
    pub flags: u8,
    /// The encoded `ttrpc.Request` or `ttrpc.Response`.
    pub data: Vec<u8>,
}

/// What breaks a connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A mux frame larger than any ttrpc message.
    #[error("mux frame of {0} bytes on connection {1} (at most {MAX_FRAME})")]
    FrameTooLarge(usize, u32),
    /// A ttrpc message larger than ttrpc allows.
    #[error("ttrpc message of {0} bytes on connection {1} (at most {MAX_DATA})")]
    MessageTooLarge(usize, u32),
    /// A frame a Go peer's read buffer cannot take (strict mode).
    #[error(
        "mux frame of {0} bytes on connection {1}: a Go ttrpc reader takes at most {2} here (ENOMEM)"
    )]
    UnreadableFrame(usize, u32, usize),
    /// An unknown ttrpc message type.
    #[error("ttrpc message type {0} on connection {1}")]
    UnknownKind(u8, u32),
}

/// Encodes a message as mux frames: one when it fits in [`GO_READ_BUFFER`] bytes, else the first 4096
/// bytes and then the rest, as a Go peer writes it (and can read it).
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    let len = message.data.len();
    if len > MAX_DATA {
        return Err(WireError::MessageTooLarge(len, message.conn));
    }
    let mut ttrpc = Vec::with_capacity(TTRPC_HEADER + len);
    ttrpc.extend_from_slice(&(len as u32).to_be_bytes());
    ttrpc.extend_from_slice(&message.stream.to_be_bytes());
    ttrpc.push(message.kind.byte());
    ttrpc.push(message.flags);
    ttrpc.extend_from_slice(&message.data);
    let (first, rest) = ttrpc.split_at(ttrpc.len().min(GO_READ_BUFFER));
    let mut out = Vec::with_capacity(2 * MUX_HEADER + ttrpc.len());
    for part in [first, rest].into_iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(&message.conn.to_be_bytes());
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Reads one mux frame: `Ok(None)` at a clean end of the socket (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(u32, Vec<u8>)>> {
    let mut header = [0u8; MUX_HEADER];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let [c0, c1, c2, c3, l0, l1, l2, l3] = header;
    let conn = u32::from_be_bytes([c0, c1, c2, c3]);
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            WireError::FrameTooLarge(len, conn),
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some((conn, payload)))
}

/// Turns the payloads of mux frames back into ttrpc messages, per connection.
#[derive(Debug, Default)]
pub struct Demux {
    pending: BTreeMap<u32, Vec<u8>>,
    strict: bool,
}

impl Demux {
    /// A demultiplexer that also refuses what a Go peer cannot read: a frame starting a message that
    /// is larger than [`GO_READ_BUFFER`], or a later frame larger than both that and the rest of its
    /// message (the test runtime reads this way, so the plugin is held to the real limits).
    pub fn strict() -> Demux {
        Demux {
            strict: true,
            ..Demux::default()
        }
    }

    /// Adds a frame's payload and returns the messages it completes. A frame on a connection other
    /// than [`PLUGIN_CONN`] and [`RUNTIME_CONN`] is dropped unread: NRI uses no other, and a peer
    /// could otherwise leave a partial message of up to 4 MiB on each of 2^32 connections.
    pub fn push(&mut self, conn: u32, payload: &[u8]) -> Result<Vec<Message>, WireError> {
        if conn != PLUGIN_CONN && conn != RUNTIME_CONN {
            tracing::debug!(
                conn,
                bytes = payload.len(),
                "a frame on an unknown mux connection; dropped"
            );
            return Ok(Vec::new());
        }
        let buffer = self.pending.entry(conn).or_default();
        if self.strict {
            let room = match buffer.get(..4) {
                Some(&[l0, l1, l2, l3]) => {
                    let total = TTRPC_HEADER + u32::from_be_bytes([l0, l1, l2, l3]) as usize;
                    total.saturating_sub(buffer.len()).max(GO_READ_BUFFER)
                }
                _ => GO_READ_BUFFER,
            };
            if payload.len() > room {
                return Err(WireError::UnreadableFrame(payload.len(), conn, room));
            }
        }
        buffer.extend_from_slice(payload);
        let mut out = Vec::new();
        // The messages are taken from `start` on and the buffer is shifted once at the end: a frame
        // packed with small messages costs its length, not its length times their number.
        let mut start = 0;
        while let Some(header) = buffer.get(start..start + TTRPC_HEADER) {
            let &[l0, l1, l2, l3, s0, s1, s2, s3, kind, flags] = header else {
                break;
            };
            let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            if len > MAX_DATA {
                return Err(WireError::MessageTooLarge(len, conn));
            }
            let kind = Kind::from_byte(kind).ok_or(WireError::UnknownKind(kind, conn))?;
            let end = start + TTRPC_HEADER + len;
            let Some(data) = buffer.get(start + TTRPC_HEADER..end) else {
                break;
            };
            out.push(Message {
                conn,
                stream: u32::from_be_bytes([s0, s1, s2, s3]),
                kind,
                flags,
                data: data.to_vec(),
            });
            start = end;
        }
        buffer.drain(..start);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn message(conn: u32, stream: u32, data: &[u8]) -> Message {
        Message {
            conn,
            stream,
            kind: Kind::Request,
            flags: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_frame_is_the_mux_header_then_the_ttrpc_header_then_the_data() {
        let bytes = encode(&message(2, 7, b"abc")).unwrap();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 2, 0, 0, 0, 13, // connection 2, 13 bytes
                0, 0, 0, 3, 0, 0, 0, 7, 1, 0, // 3 bytes, stream 7, request, no flags
                b'a', b'b', b'c'
            ]
        );
    }

    #[tokio::test]
    async fn messages_split_across_frames_and_frames_holding_two_messages_both_decode() {
        let one = encode(&message(1, 1, b"first")).unwrap();
        let two = encode(&message(1, 3, b"second")).unwrap();
        // The ttrpc bytes of both, re-framed: the first frame ends mid-header of the second message.
        let mut stream: Vec<u8> = one[8..].to_vec();
        stream.extend_from_slice(&two[8..]);
        let cut = one.len() - 8 + 4;
        let mut frames = Vec::new();
        for part in [&stream[..cut], &stream[cut..]] {
            frames.extend_from_slice(&1u32.to_be_bytes());
            frames.extend_from_slice(&(part.len() as u32).to_be_bytes());
            frames.extend_from_slice(part);
        }
        let mut reader = frames.as_slice();
        let mut demux = Demux::default();
        let mut got = Vec::new();
        while let Some((conn, payload)) = read_frame(&mut reader).await.unwrap() {
            got.extend(demux.push(conn, &payload).unwrap());
        }
        assert_eq!(got, vec![message(1, 1, b"first"), message(1, 3, b"second")]);
    }

    #[tokio::test]
    async fn oversized_frames_and_messages_are_refused_before_allocation() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = read_frame(&mut frame.as_slice()).await.unwrap_err();
        assert!(
            error.to_string().contains("mux frame of 4294967295 bytes"),
            "{error}"
        );

        let mut header = Vec::new();
        header.extend_from_slice(&(MAX_DATA as u32 + 1).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        let error = Demux::default().push(2, &header).unwrap_err();
        assert_eq!(error, WireError::MessageTooLarge(MAX_DATA + 1, 2));
        assert!(encode(&message(1, 1, &vec![0; MAX_DATA + 1])).is_err());
    }

    #[test]
    fn a_message_longer_than_a_go_read_buffer_is_sent_in_two_frames_a_go_peer_can_read() {
        let long = message(2, 5, &vec![7; 10_000]);
        let bytes = encode(&long).unwrap();
        assert_eq!(bytes.len(), 8 + 4096 + 8 + (10_010 - 4096));
        assert_eq!(&bytes[..8], &[0, 0, 0, 2, 0, 0, 16, 0]);
        let second = 8 + 4096;
        let rest = u32::from_be_bytes(bytes[second + 4..second + 8].try_into().unwrap());
        assert_eq!(rest as usize, 10_010 - 4096);
        let mut strict = Demux::strict();
        assert!(strict.push(2, &bytes[8..second]).unwrap().is_empty());
        assert_eq!(
            strict.push(2, &bytes[second + 8..]).unwrap(),
            vec![long.clone()]
        );
        // The same message in one frame is what a Go reader fails on.
        let whole: Vec<u8> = [&bytes[8..second], &bytes[second + 8..]].concat();
        let error = Demux::strict().push(2, &whole).unwrap_err();
        assert_eq!(error, WireError::UnreadableFrame(10_010, 2, 4096));
        assert_eq!(Demux::default().push(2, &whole).unwrap(), vec![long]);
    }

    #[test]
    fn frames_on_unknown_connections_are_dropped_unbuffered() {
        let mut demux = Demux::default();
        let mut header = Vec::new();
        // A message header announcing 4 MiB, never completed, on connections 3 to 1002.
        header.extend_from_slice(&(MAX_DATA as u32).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 1, 1, 0, 7, 7]);
        for conn in 3..1003 {
            assert!(demux.push(conn, &header).unwrap().is_empty());
        }
        assert!(demux.pending.is_empty(), "{:?}", demux.pending.keys());
        // The known connections still work.
        let bytes = encode(&message(1, 1, b"x")).unwrap();
        assert_eq!(
            demux.push(1, &bytes[8..]).unwrap(),
            vec![message(1, 1, b"x")]
        );
    }

    #[test]
    fn a_frame_packed_with_small_messages_yields_each_and_keeps_a_partial_rest() {
        let mut payload = Vec::new();
        for stream in 0..10_000u32 {
            payload.extend_from_slice(&encode(&message(2, stream, b"")).unwrap()[8..]);
        }
        let next = encode(&message(2, 10_000, b"abc")).unwrap();
        payload.extend_from_slice(&next[8..12]);
        let mut demux = Demux::default();
        let got = demux.push(2, &payload).unwrap();
        assert_eq!(got.len(), 10_000);
        assert!(got.iter().enumerate().all(|(i, m)| m.stream == i as u32));
        assert_eq!(
            demux.push(2, &next[12..]).unwrap(),
            vec![message(2, 10_000, b"abc")]
        );
    }

    #[test]
    fn an_unknown_message_type_is_an_error() {
        let mut bytes = encode(&message(1, 1, b"x")).unwrap();
        bytes[16] = 9;
        let error = Demux::default().push(1, &bytes[8..]).unwrap_err();
        assert_eq!(error, WireError::UnknownKind(9, 1));
    }

    #[tokio::test]
    async fn a_socket_that_ends_between_frames_is_a_clean_end_and_mid_frame_an_error() {
        let empty: &[u8] = &[];
        assert!(read_frame(&mut &*empty).await.unwrap().is_none());
        let bytes = encode(&message(1, 1, b"abc")).unwrap();
        assert!(read_frame(&mut &bytes[..bytes.len() - 1]).await.is_err());
    }
}
