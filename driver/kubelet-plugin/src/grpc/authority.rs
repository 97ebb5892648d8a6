//! The HTTP/2 `:authority` values real kubelet clients send on a Unix socket, made acceptable to h2.
//!
//! Why this exists: the kubelet's plugin watcher dials the registration socket as
//! `grpc.DialContext(ctx, "<socket path>", WithContextDialer(unix))`
//! (`pkg/kubelet/pluginmanager/operationexecutor/operation_generator.go`). With a bare path, grpc-go's
//! passthrough resolver sends the *percent-encoded socket path* as `:authority`
//! (`%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2F...`), and Python grpcio (C-core) does the same for
//! `unix:` targets. h2, the HTTP/2 server under tonic, parses `:authority` as an
//! [`http::uri::Authority`], which refuses a `%` that is not part of userinfo and any `/`, and answers
//! such a request with `RST_STREAM(PROTOCOL_ERROR)`: the kubelet's `GetInfo` fails and the plugin is
//! never registered. The fix upstream (hyperium/h2#487) is not merged, and no hook of h2, hyper or
//! tonic lets a server accept the request.
//!
//! On a Unix socket the authority names nothing (there is one peer), so this module fixes the request
//! where it is parsed: at the transport. Each accepted connection is wrapped in [`AuthorityFix`],
//! whose read side passes the client's bytes to h2 frame by frame and re-encodes every header block
//! (HPACK) with each `:authority` that [`http::uri::Authority`] cannot parse replaced by `localhost`,
//! the value grpc-go sends for `unix:` targets. Valid authorities, a missing authority and every other
//! header reach h2 with the same names and values, in the same order (the header blocks themselves are
//! re-encoded: padding is dropped, blocks are re-split into frames, never-indexed literals become
//! indexed ones, which only matters to intermediaries); every other frame reaches h2 byte for byte,
//! and the server's writes are not touched.
//!
//! Header blocks are decoded against the client's HPACK context and re-encoded against a second
//! context shared with h2's decoder, so both dynamic tables stay consistent. Both use 4096 bytes, the
//! `SETTINGS_HEADER_TABLE_SIZE` h2 advertises by default (RFC 9113 §6.5.2), which tonic does not
//! change. Re-encoded blocks go out in frames of at most 16384 bytes, the smallest
//! `SETTINGS_MAX_FRAME_SIZE` a peer may set (RFC 9113 §4.2), so they always fit. A connection that is
//! not HTTP/2 (no client preface) is passed through untouched for h2 to refuse.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Length of a HEADERS frame's priority fields (stream dependency and weight).
const PRIORITY_LEN: usize = 5;
/// Payload size of the frames a re-encoded block is written in (see the module docs).
const OUT_FRAME_LEN: usize = 16_384;
/// The HPACK dynamic table size of both contexts (see the module docs).
const HPACK_TABLE_SIZE: usize = 4096;
/// The most bytes of one header block (all its fragments, encoded) held in memory. A kubelet request's
/// block is a few hundred bytes; h2 itself refuses header lists over 16 KiB by default.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The largest decoded header list (RFC 9113 §6.5.2 sizes: name + value + 32 per field) accepted,
/// which also bounds what an HPACK "bomb" (one byte per reference to a large table entry) expands to.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// What replaces an authority h2 cannot parse.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection whose client-to-server HTTP/2 bytes have every `:authority` h2 would
/// refuse replaced by `localhost` (see the module docs). Serve it with tonic in place of the accepted
/// stream.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    inner_done: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(),
            inner_done: false,
        }
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rewriter.has_output() || this.inner_done {
                this.rewriter.take_output(buf);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.inner_done = true;
                this.rewriter.finish();
            } else {
                this.rewriter.feed(read.filled())?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the end of the connection preface.
    Preface,
    /// At a frame boundary, or `pass` bytes into a frame payload that is passed on unchanged.
    Frames { pass: usize },
    /// Not HTTP/2, or the input ended: everything is passed on unchanged.
    Passthrough,
}

/// A header block whose fragments are still arriving (HEADERS without END_HEADERS).
#[derive(Debug)]
struct OpenBlock {
    stream_id: u32,
    /// END_STREAM and PRIORITY of the HEADERS frame.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragments: Vec<u8>,
}

/// The byte-stream rewriter behind [`AuthorityFix`], without the I/O.
pub(crate) struct Rewriter {
    state: State,
    input: BytesMut,
    output: BytesMut,
    block: Option<OpenBlock>,
    /// The client's HPACK context.
    decoder: Decoder<'static>,
    /// The HPACK context shared with h2's decoder.
    encoder: Encoder<'static>,
    /// How many authorities were replaced on this connection.
    replaced: u64,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .field("block", &self.block)
            .field("replaced", &self.replaced)
            .finish_non_exhaustive()
    }
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(HPACK_TABLE_SIZE);
        Rewriter {
            state: State::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder,
            encoder,
            replaced: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    #[cfg(test)]
    pub(crate) fn replaced(&self) -> u64 {
        self.replaced
    }

    fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    fn take_output(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.output.len().min(buf.remaining());
        let chunk = self.output.split_to(n);
        buf.put_slice(&chunk);
    }

    /// Output ready for h2, taken whole (tests).
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<u8> {
        self.output.split().to_vec()
    }

    /// Takes bytes read from the client; a protocol error the rewriter cannot pass on (a header
    /// block over the bounds, bad HPACK, a frame inside a header block) ends the connection.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(bytes);
        self.process().inspect_err(|error| {
            tracing::debug!(%error, "closing a kubelet plugin connection");
            // Whatever follows is not read again.
            self.state = State::Passthrough;
            self.input.clear();
        })
    }

    /// The client closed its side: whatever is left (a truncated frame) goes to h2 as it is.
    pub(crate) fn finish(&mut self) {
        self.state = State::Passthrough;
        if let Some(block) = self.block.take() {
            tracing::debug!(
                stream = block.stream_id,
                "connection ended inside a header block"
            );
        }
        let rest = self.input.split();
        self.output.unsplit(rest);
    }

    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Passthrough => {
                    let rest = self.input.split();
                    self.output.unsplit(rest);
                    return Ok(());
                }
                State::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input.get(..n) != PREFACE.get(..n) {
                        self.state = State::Passthrough;
                    } else if n == PREFACE.len() {
                        self.pass(n);
                        self.state = State::Frames { pass: 0 };
                    } else {
                        return Ok(());
                    }
                }
                State::Frames { pass } if pass > 0 => {
                    let n = pass.min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    self.pass(n);
                    self.state = State::Frames { pass: pass - n };
                }
                State::Frames { .. } => {
                    let Some(header) = self.input.get(..FRAME_HEADER_LEN) else {
                        return Ok(());
                    };
                    let frame = FrameHeader::parse(header);
                    if frame.kind != FRAME_HEADERS && frame.kind != FRAME_CONTINUATION {
                        if let Some(block) = &self.block {
                            return Err(protocol_error(format!(
                                "frame of type {:#x} inside the header block of stream {}",
                                frame.kind, block.stream_id
                            )));
                        }
                        self.pass(FRAME_HEADER_LEN);
                        self.state = State::Frames { pass: frame.len };
                        continue;
                    }
                    let buffered = self.block.as_ref().map_or(0, |b| b.fragments.len());
                    if buffered + frame.len > MAX_HEADER_BLOCK {
                        return Err(protocol_error(format!(
                            "header block of stream {} is over {MAX_HEADER_BLOCK} bytes",
                            frame.stream_id
                        )));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + frame.len {
                        return Ok(());
                    }
                    self.input.advance(FRAME_HEADER_LEN);
                    let payload = self.input.split_to(frame.len);
                    self.header_frame(&frame, &payload)?;
                }
            }
        }
    }

    /// Moves `n` input bytes to the output unchanged.
    fn pass(&mut self, n: usize) {
        let bytes = self.input.split_to(n);
        self.output.unsplit(bytes);
    }

    fn header_frame(&mut self, frame: &FrameHeader, payload: &[u8]) -> io::Result<()> {
        let fragment = if frame.kind == FRAME_HEADERS {
            if let Some(block) = &self.block {
                return Err(protocol_error(format!(
                    "HEADERS for stream {} inside the header block of stream {}",
                    frame.stream_id, block.stream_id
                )));
            }
            let (priority, fragment) = headers_payload(frame, payload)?;
            self.block = Some(OpenBlock {
                stream_id: frame.stream_id,
                flags: frame.flags & (FLAG_END_STREAM | FLAG_PRIORITY),
                priority,
                fragments: Vec::new(),
            });
            fragment
        } else {
            match &self.block {
                Some(block) if block.stream_id == frame.stream_id => payload,
                _ => {
                    return Err(protocol_error(format!(
                        "CONTINUATION for stream {} outside its header block",
                        frame.stream_id
                    )));
                }
            }
        };
        let Some(block) = self.block.as_mut() else {
            return Ok(());
        };
        block.fragments.extend_from_slice(fragment);
        if frame.flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.rewrite_block(&block)?;
        }
        Ok(())
    }

    /// Decodes a complete header block, replaces authorities h2 refuses, and writes the block
    /// re-encoded for h2's context.
    fn rewrite_block(&mut self, block: &OpenBlock) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        let mut replaced = 0u64;
        self.decoder
            .decode_with_cb(&block.fragments, |name, value| {
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size > MAX_HEADER_LIST {
                    return;
                }
                let value = if name.as_ref() == b":authority" && !is_valid_authority(&value) {
                    replaced += 1;
                    REPLACEMENT_AUTHORITY.to_vec()
                } else {
                    value.into_owned()
                };
                fields.push((name.into_owned(), value));
            })
            .map_err(|error| {
                protocol_error(format!(
                    "header block of stream {}: HPACK: {error}",
                    block.stream_id
                ))
            })?;
        if list_size > MAX_HEADER_LIST {
            return Err(protocol_error(format!(
                "header list of stream {} is over {MAX_HEADER_LIST} bytes",
                block.stream_id
            )));
        }
        if replaced > 0 {
            tracing::trace!(
                stream = block.stream_id,
                "replaced an :authority h2 cannot parse"
            );
        }
        self.replaced += replaced;
        let encoded = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.write_block(block, &encoded);
        Ok(())
    }

    /// Writes an encoded block as one HEADERS frame and as many CONTINUATION frames as needed.
    fn write_block(&mut self, block: &OpenBlock, encoded: &[u8]) {
        let mut rest = encoded;
        let mut first = true;
        loop {
            let priority = if first { block.priority } else { None };
            let room = OUT_FRAME_LEN - priority.map_or(0, |p| p.len());
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            let mut flags = if first { block.flags } else { 0 };
            if tail.is_empty() {
                flags |= FLAG_END_HEADERS;
            }
            let kind = if first {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            };
            let len = chunk.len() + priority.map_or(0, |p| p.len());
            // `len` is at most OUT_FRAME_LEN, so it fits the 24-bit length field.
            self.output.put_uint(len as u64, 3);
            self.output.put_u8(kind);
            self.output.put_u8(flags);
            self.output.put_u32(block.stream_id);
            if let Some(priority) = priority {
                self.output.put_slice(&priority);
            }
            self.output.put_slice(chunk);
            rest = tail;
            first = false;
            if rest.is_empty() {
                return;
            }
        }
    }
}

/// The fields of a frame header.
#[derive(Debug)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    /// Parses the first [`FRAME_HEADER_LEN`] bytes of `bytes` (the caller checked there are enough).
    fn parse(bytes: &[u8]) -> FrameHeader {
        let byte = |i: usize| bytes.get(i).copied().unwrap_or(0);
        FrameHeader {
            len: usize::from(byte(0)) << 16 | usize::from(byte(1)) << 8 | usize::from(byte(2)),
            kind: byte(3),
            flags: byte(4),
            stream_id: u32::from_be_bytes([byte(5) & 0x7f, byte(6), byte(7), byte(8)]),
        }
    }
}

/// A HEADERS payload's priority fields and its header block fragment, without padding
/// (RFC 9113 §6.2).
fn headers_payload<'a>(
    frame: &FrameHeader,
    payload: &'a [u8],
) -> io::Result<(Option<[u8; PRIORITY_LEN]>, &'a [u8])> {
    let malformed = || {
        protocol_error(format!(
            "HEADERS frame of stream {} is shorter than its padding and priority fields",
            frame.stream_id
        ))
    };
    let mut rest = payload;
    let mut pad_len = 0;
    if frame.flags & FLAG_PADDED != 0 {
        let (&pad, tail) = rest.split_first().ok_or_else(malformed)?;
        pad_len = usize::from(pad);
        rest = tail;
    }
    let mut priority = None;
    if frame.flags & FLAG_PRIORITY != 0 {
        let (fields, tail) = rest.split_at_checked(PRIORITY_LEN).ok_or_else(malformed)?;
        let mut bytes = [0u8; PRIORITY_LEN];
        bytes.copy_from_slice(fields);
        priority = Some(bytes);
        rest = tail;
    }
    let end = rest.len().checked_sub(pad_len).ok_or_else(malformed)?;
    let fragment = rest.get(..end).ok_or_else(malformed)?;
    Ok((priority, fragment))
}

/// Whether h2 accepts `value` as `:authority`: it parses it with [`http::uri::Authority`] too.
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn protocol_error(message: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 protocol error: {message}"),
    )
}

#[cfg(test)]
#[path = "authority/tests.rs"]
mod tests;
