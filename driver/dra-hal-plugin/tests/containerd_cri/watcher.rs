//! The kubelet's plugin watcher as it dials: grpc-go with a bare socket path target, which sends the
//! percent-encoded path as `:authority`. No `http::Uri` holds that value, so the calls here write
//! their HTTP/2 frames themselves (as `grpc_authority.rs` does), one unary call per connection.

use std::path::Path;

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// The socket path as grpc-go's passthrough resolver puts it in `:authority`: every byte outside
/// RFC 3986's unreserved set percent-encoded.
pub fn percent_encoded(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend(format!("%{b:02X}").into_bytes());
        }
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Calls `method` on `socket` with the plugin watcher's `:authority`; the answer message, or the
/// way the call failed.
pub async fn call<Q: prost::Message, A: prost::Message + Default>(
    socket: &Path,
    method: &str,
    request: &Q,
) -> Result<A, String> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let authority = percent_encoded(socket);
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method.as_bytes()),
        (b":authority", &authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    let block = Encoder::new().encode(fields);
    let request = request.encode_to_vec();
    let mut message = vec![0u8];
    message.extend_from_slice(&(request.len() as u32).to_be_bytes());
    message.extend_from_slice(&request);
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out.extend(frame(DATA, END_STREAM, 1, &message));
    stream.write_all(&out).await.map_err(|e| e.to_string())?;

    let mut decoder = Decoder::new();
    let mut body = Vec::new();
    let mut status = None;
    loop {
        let mut header = [0u8; 9];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| format!("the plugin closed the connection: {e}"))?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let id = u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                let ack = frame(SETTINGS, ACK, 0, &[]);
                stream.write_all(&ack).await.map_err(|e| e.to_string())?;
            }
            RST_STREAM if id == 1 => return Err(format!("RST_STREAM {payload:?}")),
            GOAWAY => return Err(format!("GOAWAY {payload:?}")),
            HEADERS if id == 1 => {
                for (name, value) in decoder.decode(&payload).map_err(|e| format!("{e:?}"))? {
                    if name == b"grpc-status" {
                        status = Some(String::from_utf8_lossy(&value).into_owned());
                    }
                }
            }
            DATA if id == 1 => body.extend_from_slice(&payload),
            _ => {}
        }
        if id == 1 && flags & END_STREAM != 0 && matches!(kind, HEADERS | DATA) {
            if status.as_deref() != Some("0") {
                return Err(format!("grpc-status {status:?}"));
            }
            return A::decode(body.get(5..).unwrap_or_default()).map_err(|e| e.to_string());
        }
    }
}
