//! One side of an NRI socket: it serves the calls arriving on one mux connection and makes calls on the
//! other. The plugin serves [`PLUGIN_CONN`](super::wire::PLUGIN_CONN) and calls on
//! [`RUNTIME_CONN`](super::wire::RUNTIME_CONN); the test runtime does the opposite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::proto::ttrpc::{Request, Response, Status};
use super::wire::{Demux, Kind, MAX_DATA, Message, WireError, encode, read_frame};

/// gRPC status codes used in answers.
pub mod code {
    /// The call failed; the message says why.
    pub const UNKNOWN: i32 = 2;
    /// The request could not be decoded.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// An answer too large to send (as a Go ttrpc server answers one over its limit).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Refused: the state does not allow it (an empty shared pool, a claim of another pod).
    pub const FAILED_PRECONDITION: i32 = 9;
    /// No such service or method.
    pub const UNIMPLEMENTED: i32 = 12;
}

/// A call that arrived.
#[derive(Debug)]
pub struct Incoming {
    /// The ttrpc stream to answer on.
    pub stream: u32,
    /// Service, method and payload.
    pub request: Request,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket is gone.
    #[error("the NRI connection is closed")]
    Closed,
    /// No answer in time.
    #[error("no answer to {0} within {1:?}")]
    Timeout(String, Duration),
    /// The other side answered with an error status.
    #[error("{method} failed (code {code}): {message}")]
    Status {
        /// The method called.
        method: String,
        /// gRPC code.
        code: i32,
        /// The other side's message.
        message: String,
    },
    /// Bytes that are not the expected message.
    #[error("{0}")]
    Decode(String),
    /// Writing failed.
    #[error("writing to the NRI socket: {0}")]
    Io(String),
    /// The message is over ttrpc's limit: a Go peer would refuse it, so it is not sent.
    #[error("a message of {size} bytes is over ttrpc's limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl CallError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            CallError::Closed | CallError::Timeout(..) | CallError::Io(_) => hal::ErrorKind::Io,
            CallError::Status { code, .. } => match *code {
                code::UNIMPLEMENTED => hal::ErrorKind::Unsupported,
                code::INVALID_ARGUMENT => hal::ErrorKind::InvalidInput,
                code::FAILED_PRECONDITION => hal::ErrorKind::Busy,
                _ => hal::ErrorKind::Io,
            },
            CallError::Decode(_) => hal::ErrorKind::Malformed,
            CallError::TooLarge { .. } => hal::ErrorKind::InvalidInput,
        }
    }
}

/// Why a connection ended, as its reader saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The other side closed the socket.
    #[error("closed by the other side")]
    Closed,
    /// The other side sent a message over ttrpc's limit (a mux frame or a ttrpc message).
    #[error("a message of {size} bytes on mux connection {conn}, over the limit of {limit} bytes")]
    TooLarge {
        /// The size announced by its header.
        size: usize,
        /// The limit.
        limit: usize,
        /// The mux connection.
        conn: u32,
    },
    /// Bytes that break the framing.
    #[error("{0}")]
    Protocol(String),
    /// Reading the socket failed.
    #[error("reading the NRI socket: {0}")]
    Io(String),
}

impl Ended {
    /// The coarse kind of this reason.
    pub fn kind(&self) -> hal::ErrorKind {
        match self {
            Ended::Closed | Ended::Io(_) => hal::ErrorKind::Io,
            Ended::TooLarge { .. } => hal::ErrorKind::InvalidInput,
            Ended::Protocol(_) => hal::ErrorKind::Malformed,
        }
    }

    fn from_wire(error: &WireError) -> Ended {
        match *error {
            WireError::FrameTooLarge(size, conn) | WireError::MessageTooLarge(size, conn) => {
                Ended::TooLarge {
                    size,
                    limit: MAX_DATA,
                    conn,
                }
            }
            _ => Ended::Protocol(error.to_string()),
        }
    }

    fn from_io(error: &std::io::Error) -> Ended {
        match error.get_ref().and_then(|e| e.downcast_ref::<WireError>()) {
            Some(wire) => Ended::from_wire(wire),
            None => Ended::Io(error.to_string()),
        }
    }
}

type Pending = Arc<Mutex<BTreeMap<u32, oneshot::Sender<Response>>>>;

/// The writing half and the calls waiting for answers; the reading half runs in a task of its own.
#[derive(Clone)]
pub struct Endpoint {
    /// The socket's writing half and the next stream id, under one lock: a ttrpc server refuses a
    /// stream id that is not above the last one it saw, so ids go out in the order they are taken.
    writer: Arc<tokio::sync::Mutex<(OwnedWriteHalf, u32)>>,
    pending: Pending,
    serve_conn: u32,
    call_conn: u32,
    /// Why the reader stopped, once it has.
    ended: Arc<Mutex<Option<Ended>>>,
    /// Set when a write was cut short (it timed out, or its caller dropped it): the peer may hold
    /// part of a frame, so nothing more is written and the reader stops.
    broken: Arc<watch::Sender<Option<String>>>,
}

/// How long an answer may take to write (the lock on the socket's writing half included). The
/// runtime waits for an answer only its own request timeout (containerd's default: 2 s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Endpoint {
    /// Starts reading `socket`. Calls arriving on `serve_conn` come out of the receiver, which ends when
    /// the socket closes or breaks (calls still waiting then fail with [`CallError::Closed`]). Calls
    /// made with [`Endpoint::call`] go out on `call_conn`.
    pub fn start(
        socket: UnixStream,
        serve_conn: u32,
        call_conn: u32,
    ) -> (Endpoint, mpsc::Receiver<Incoming>) {
        Endpoint::start_with(socket, serve_conn, call_conn, false)
    }

    /// As [`Endpoint::start`], reading as strictly as a Go peer does: frames its 4 KiB read buffer
    /// cannot take, and calls whose stream id is not above the previous one, end the connection.
    pub fn start_strict(
        socket: UnixStream,
        serve_conn: u32,
        call_conn: u32,
    ) -> (Endpoint, mpsc::Receiver<Incoming>) {
        Endpoint::start_with(socket, serve_conn, call_conn, true)
    }

    fn start_with(
        socket: UnixStream,
        serve_conn: u32,
        call_conn: u32,
        strict: bool,
    ) -> (Endpoint, mpsc::Receiver<Incoming>) {
        let (mut reader, writer) = socket.into_split();
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::channel(64);
        let ended: Arc<Mutex<Option<Ended>>> = Arc::default();
        let (broken, mut cut) = watch::channel(None);
        let endpoint = Endpoint {
            writer: Arc::new(tokio::sync::Mutex::new((writer, 1))),
            pending: pending.clone(),
            serve_conn,
            call_conn,
            ended: ended.clone(),
            broken: Arc::new(broken),
        };
        tokio::spawn(async move {
            let mut demux = match strict {
                true => Demux::strict(),
                false => Demux::default(),
            };
            let mut last_stream = 0;
            let reason = loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut reader) => frame,
                    Ok(()) = cut.changed() => {
                        let reason = cut.borrow().clone().unwrap_or_default();
                        break Ended::Io(reason);
                    }
                };
                let (conn, payload) = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break Ended::Closed,
                    Err(e) => break Ended::from_io(&e),
                };
                let messages = match demux.push(conn, &payload) {
                    Ok(messages) => messages,
                    Err(e) => break Ended::from_wire(&e),
                };
                let mut refused = None;
                for message in messages {
                    if strict && message.kind == Kind::Request && message.conn == serve_conn {
                        if message.stream <= last_stream {
                            refused = Some(format!(
                                "stream id {} after {last_stream}: ttrpc stream ids must increase",
                                message.stream
                            ));
                            break;
                        }
                        last_stream = message.stream;
                    }
                    dispatch(message, serve_conn, call_conn, &pending, &tx).await;
                }
                if let Some(reason) = refused {
                    break Ended::Protocol(reason);
                }
            };
            match reason {
                Ended::TooLarge { size, limit, conn } => tracing::warn!(
                    size,
                    limit,
                    conn,
                    "the NRI peer sent a message over ttrpc's size limit; the connection ends"
                ),
                ref other => tracing::debug!(reason = %other, "NRI connection ended"),
            }
            if let Ok(mut ended) = ended.lock() {
                *ended = Some(reason);
            }
            // Dropping the senders fails every waiting call.
            if let Ok(mut pending) = pending.lock() {
                pending.clear();
            }
        });
        (endpoint, rx)
    }

    /// Calls `service`/`method` with `request` and decodes the answer as `R`.
    pub async fn call<R: prost::Message + Default>(
        &self,
        service: &str,
        method: &str,
        request: &impl prost::Message,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let envelope = Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload: request.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
            metadata: Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        // `timeout` bounds the whole call: the wait for the writing half, the write, the answer.
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, async {
            let mut writer = self.writer.lock().await;
            let stream = writer.1;
            writer.1 = stream.wrapping_add(2);
            self.pending
                .lock()
                .map_err(|_| CallError::Closed)?
                .insert(stream, tx);
            // The reader may have ended before the insertion (and cleared the calls): fail now
            // rather than wait for an answer that cannot come.
            if self.ended().is_some() {
                self.forget(stream);
                return Err(CallError::Closed);
            }
            let message = Message {
                conn: self.call_conn,
                stream,
                kind: Kind::Request,
                flags: 0,
                data: envelope.encode_to_vec(),
            };
            if let Err(e) = self.write(&mut writer.0, &message).await {
                self.forget(stream);
                return Err(e);
            }
            Ok(stream)
        })
        .await;
        let stream = match sent {
            Ok(sent) => sent?,
            // Cut mid-write, the connection is broken (see `write`) and its reader clears the call.
            Err(_) => return Err(CallError::Timeout(method.to_owned(), timeout)),
        };
        let response = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => return Err(CallError::Closed),
            Err(_) => {
                self.forget(stream);
                return Err(CallError::Timeout(method.to_owned(), timeout));
            }
        };
        if let Some(status) = response.status.filter(|s| s.code != 0) {
            return Err(CallError::Status {
                method: method.to_owned(),
                code: status.code,
                message: status.message,
            });
        }
        R::decode(response.payload.as_slice())
            .map_err(|e| CallError::Decode(format!("the answer to {method}: {e}")))
    }

    /// Why the connection ended; `None` while it is open (the receiver of calls ends after this is
    /// set).
    pub fn ended(&self) -> Option<Ended> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    /// Answers the call on `stream` with a message, or with an error status. An answer over ttrpc's
    /// limit is logged and replaced by a `RESOURCE_EXHAUSTED` status, as a Go ttrpc server does, so
    /// the caller is not left waiting; the error says so.
    pub async fn answer(
        &self,
        stream: u32,
        result: Result<Vec<u8>, Status>,
    ) -> Result<(), CallError> {
        match self.answer_once(stream, result).await {
            Err(CallError::TooLarge { size, limit }) => {
                let refused = Status {
                    code: code::RESOURCE_EXHAUSTED,
                    message: format!("the answer of {size} bytes is over ttrpc's limit of {limit}"),
                };
                self.answer_once(stream, Err(refused)).await?;
                Err(CallError::TooLarge { size, limit })
            }
            other => other,
        }
    }

    async fn answer_once(
        &self,
        stream: u32,
        result: Result<Vec<u8>, Status>,
    ) -> Result<(), CallError> {
        let response = match result {
            // An explicit OK status: older ttrpc clients refuse an answer without one.
            Ok(payload) => Response {
                status: Some(Status {
                    code: 0,
                    message: String::new(),
                }),
                payload,
            },
            Err(status) => Response {
                status: Some(status),
                payload: Vec::new(),
            },
        };
        self.send(Message {
            conn: self.serve_conn,
            stream,
            kind: Kind::Response,
            flags: 0,
            data: response.encode_to_vec(),
        })
        .await
    }

    /// Writes `message` within [`WRITE_TIMEOUT`].
    async fn send(&self, message: Message) -> Result<(), CallError> {
        let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.write(&mut self.writer.lock().await.0, &message).await
        });
        sent.await.unwrap_or_else(|_| {
            Err(CallError::Io(format!(
                "no progress writing to the NRI socket within {WRITE_TIMEOUT:?}"
            )))
        })
    }

    /// Encodes and writes one message, unless the connection is broken. A write that does not end
    /// (timed out or dropped by its caller) breaks the connection: the peer may hold part of a
    /// frame, after which no frame would read right.
    async fn write(&self, writer: &mut OwnedWriteHalf, message: &Message) -> Result<(), CallError> {
        if self.broken.borrow().is_some() {
            return Err(CallError::Closed);
        }
        let mut cut = BreakOnDrop(Some(&self.broken));
        let written = write(writer, message).await;
        cut.0 = None;
        written
    }

    /// Stops waiting for the answer on `stream`.
    fn forget(&self, stream: u32) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&stream);
        }
    }

    /// Closes the writing half: the other side sees the socket end. A write that holds the half
    /// ends within 10 s (then breaking the connection), so this waits at most that long.
    pub async fn close(&self) {
        let closed = tokio::time::timeout(WRITE_TIMEOUT, async {
            let _ = self.writer.lock().await.0.shutdown().await;
        });
        if closed.await.is_err() {
            self.broken
                .send_replace(Some("closed while a write was stuck".to_owned()));
        }
    }
}

/// Breaks the connection when dropped during a write (see [`Endpoint::write`]); forgotten once the
/// write has ended.
struct BreakOnDrop<'a>(Option<&'a watch::Sender<Option<String>>>);

impl Drop for BreakOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(broken) = self.0.take() {
            tracing::warn!("a write to the NRI socket did not end in time; the connection ends");
            broken.send_replace(Some(
                "a write to the NRI socket did not end in time".to_owned(),
            ));
        }
    }
}

/// Encodes and writes one message; one over ttrpc's limit is logged at WARN and not sent.
async fn write(writer: &mut OwnedWriteHalf, message: &Message) -> Result<(), CallError> {
    let bytes = encode(message).map_err(|e| match e {
        WireError::MessageTooLarge(size, conn) => {
            tracing::warn!(
                size,
                limit = MAX_DATA,
                conn,
                "an NRI message over ttrpc's size limit is not sent (a Go peer would refuse it)"
            );
            CallError::TooLarge {
                size,
                limit: MAX_DATA,
            }
        }
        other => CallError::Io(other.to_string()),
    })?;
    writer
        .write_all(&bytes)
        .await
        .map_err(|e| CallError::Io(e.to_string()))
}

/// Routes a message: answers to our calls to their waiter, calls to the receiver, the rest is dropped.
async fn dispatch(
    message: Message,
    serve_conn: u32,
    call_conn: u32,
    pending: &Pending,
    incoming: &mpsc::Sender<Incoming>,
) {
    match message.kind {
        Kind::Response if message.conn == call_conn => {
            let waiter = pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&message.stream));
            match (waiter, Response::decode(message.data.as_slice())) {
                (Some(waiter), Ok(response)) => {
                    let _ = waiter.send(response);
                }
                (Some(waiter), Err(error)) => {
                    tracing::warn!(%error, "an undecodable answer from the NRI runtime");
                    // The caller learns why, rather than that the connection closed (it did not).
                    let _ = waiter.send(Response {
                        status: Some(Status {
                            code: code::UNKNOWN,
                            message: format!("an undecodable answer: {error}"),
                        }),
                        payload: Vec::new(),
                    });
                }
                (None, _) => tracing::debug!(stream = message.stream, "an answer nobody waits for"),
            }
        }
        Kind::Request if message.conn == serve_conn => {
            match Request::decode(message.data.as_slice()) {
                Ok(request) => {
                    let _ = incoming
                        .send(Incoming {
                            stream: message.stream,
                            request,
                        })
                        .await;
                }
                Err(error) => tracing::warn!(%error, "an undecodable NRI request"),
            }
        }
        kind => tracing::debug!(?kind, conn = message.conn, "ignored ttrpc message"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::super::wire::{PLUGIN_CONN, RUNTIME_CONN};
    use super::*;

    /// An answer that does not decode fails its call with that reason, not as a closed connection.
    #[tokio::test]
    async fn an_undecodable_answer_fails_its_call_naming_it() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (endpoint, _incoming) = Endpoint::start(ours, PLUGIN_CONN, RUNTIME_CONN);
        let call = tokio::spawn(async move {
            let request = Status::default();
            let timeout = Duration::from_secs(5);
            endpoint.call::<Status>("svc", "M", &request, timeout).await
        });
        let (conn, payload) = read_frame(&mut theirs).await.unwrap().unwrap();
        let asked = Demux::default().push(conn, &payload).unwrap();
        let answer = Message {
            conn: RUNTIME_CONN,
            stream: asked[0].stream,
            kind: Kind::Response,
            flags: 0,
            data: vec![0xff, 0xff, 0xff],
        };
        theirs.write_all(&encode(&answer).unwrap()).await.unwrap();
        let error = call.await.unwrap().unwrap_err();
        assert!(
            matches!(&error, CallError::Status { code: code::UNKNOWN, message, .. }
                if message.contains("undecodable")),
            "{error}"
        );
    }

    /// A peer that stops reading (a stopped or wedged runtime) fills the socket's buffer: a call then
    /// fails at its timeout, the connection ends (a frame may be cut), and later writes fail at once.
    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_times_out_and_ends_the_connection() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (endpoint, mut incoming) = Endpoint::start(ours, PLUGIN_CONN, RUNTIME_CONN);
        let request = Status {
            code: 0,
            message: "x".repeat(3 << 20),
        };
        let started = tokio::time::Instant::now();
        let timeout = Duration::from_secs(1);
        let error = endpoint
            .call::<Status>("svc", "Update", &request, timeout)
            .await
            .unwrap_err();
        assert!(matches!(error, CallError::Timeout(..)), "{error}");
        assert_eq!(started.elapsed(), timeout);
        assert!(incoming.recv().await.is_none(), "the connection ended");
        assert!(
            matches!(endpoint.ended(), Some(Ended::Io(ref why)) if why.contains("did not end")),
            "{:?}",
            endpoint.ended()
        );
        let again = endpoint.call::<Status>("svc", "Update", &request, timeout);
        assert!(matches!(again.await, Err(CallError::Closed)));
        assert!(endpoint.answer(3, Ok(vec![1])).await.is_err());
    }

    /// The same for an answer: it gives up after [`WRITE_TIMEOUT`], so the serve loop (and its stop)
    /// is not held longer.
    #[tokio::test(start_paused = true)]
    async fn an_answer_the_peer_never_reads_ends_the_connection_after_the_write_timeout() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (endpoint, mut incoming) = Endpoint::start(ours, PLUGIN_CONN, RUNTIME_CONN);
        let started = tokio::time::Instant::now();
        let error = endpoint.answer(7, Ok(vec![0; 3 << 20])).await.unwrap_err();
        assert!(matches!(error, CallError::Io(_)), "{error}");
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        assert!(incoming.recv().await.is_none(), "the connection ended");
        let closing = tokio::time::Instant::now();
        endpoint.close().await;
        assert_eq!(closing.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_not_sent_and_the_caller_gets_an_error_status() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (endpoint, _incoming) = Endpoint::start(ours, PLUGIN_CONN, RUNTIME_CONN);
        let error = endpoint
            .answer(7, Ok(vec![0; MAX_DATA + 1]))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::TooLarge { size, limit: MAX_DATA } if size > MAX_DATA),
            "{error}"
        );
        // The caller reads one answer on its stream: RESOURCE_EXHAUSTED, naming the limit.
        let (conn, payload) = read_frame(&mut theirs).await.unwrap().unwrap();
        let messages = Demux::default().push(conn, &payload).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            (messages[0].conn, messages[0].stream, messages[0].kind),
            (PLUGIN_CONN, 7, Kind::Response)
        );
        let status = Response::decode(messages[0].data.as_slice())
            .unwrap()
            .status
            .unwrap();
        assert_eq!(status.code, code::RESOURCE_EXHAUSTED);
        assert!(status.message.contains("4194304"), "{}", status.message);
        // The connection goes on: a small answer still gets through.
        endpoint.answer(9, Ok(b"ok".to_vec())).await.unwrap();
        let (conn, payload) = read_frame(&mut theirs).await.unwrap().unwrap();
        let messages = Demux::default().push(conn, &payload).unwrap();
        assert_eq!(messages[0].stream, 9);
    }
}
