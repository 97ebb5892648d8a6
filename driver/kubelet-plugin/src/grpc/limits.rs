//! What bounds the connections to the plugin's sockets: a cap on how many are open at once, an idle
//! timeout, and HTTP/2 keepalive pings.
//!
//! The sockets are 0600, so only root connects, but a buggy or hostile root process that opens
//! connections and never sends anything would otherwise hold a file descriptor and a task each, without
//! end (as 1100 idle TCP connections did to the metrics port). The design keeps the kubelet working:
//!
//! * **Cap, by waiting, not refusing.** At most [`ConnectionLimits::max_connections`] connections per
//!   socket are served at once. When all are taken, the server stops accepting: further connections
//!   wait in the kernel's listen backlog (and once that is full, `connect` fails with `EAGAIN`), costing
//!   this process nothing. A refused kubelet would fail its call; a waiting one is served as soon as a
//!   slot frees.
//! * **Idle timeout.** A connection on which no byte has moved, in either direction, for
//!   [`ConnectionLimits::idle_timeout`] is closed, which frees its slot. A peer that connects and sends
//!   nothing (not even the HTTP/2 preface) is gone after that time.
//! * **Keepalive pings.** The server sends an HTTP/2 PING every
//!   [`ConnectionLimits::keepalive_interval`] (shorter than the idle timeout) and closes a connection
//!   whose peer does not answer within [`ConnectionLimits::keepalive_timeout`]. A live HTTP/2 client (the
//!   kubelet, grpc-go) answers every PING, so its connection never goes idle, also while a health stream
//!   has nothing to send; a dead or silent one is closed.
//!
//! * **Calls per connection.** At most [`ConnectionLimits::max_streams`] calls are open at once on a
//!   connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`); without it tonic lets one connection open
//!   any number, each holding its decoded request (up to 4 MiB) while it waits.
//!
//! A peer that speaks HTTP/2 and answers pings keeps its slot; with the caps, such peers can make the
//! kubelet wait but cannot exhaust the process. Each in-flight call is still bounded by the kubelet's
//! own deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// How the connections to each of the plugin's sockets are bounded (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The most connections served at once per socket; more wait to be accepted.
    pub max_connections: usize,
    /// The most calls (HTTP/2 streams) open at once on one connection; a client opens more only as
    /// earlier ones end (grpc-go and tonic wait for a free stream, they do not fail the call). Before
    /// a client has read the server's SETTINGS it may open more, and the server refuses those
    /// (`REFUSED_STREAM`), which grpc-go retries transparently.
    pub max_streams: u32,
    /// A connection on which nothing was read or written for this long is closed.
    pub idle_timeout: Duration,
    /// How often the server pings each HTTP/2 connection; keep it below `idle_timeout`.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 64 connections per socket (the kubelet holds one or two), 200 calls at once on each (hyper's
    /// own default, which tonic replaces by no limit), pings every 30 s answered within 20 s, and 90 s
    /// of silence closes a connection.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 64,
            max_streams: 200,
            idle_timeout: Duration::from_secs(90),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// The connections `listener` accepts, at most `limits.max_connections` open at once, each closed
/// after `limits.idle_timeout` of silence.
pub(super) fn limited(
    listener: UnixListener,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = io::Result<Limited<UnixStream>>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        // Wait for a free slot before accepting: at the cap, newcomers wait in the listen backlog.
        let permit = match slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; end the stream if it ever is.
            Err(_) => return None,
        };
        let accepted = listener
            .accept()
            .await
            .map(|(stream, _)| Limited::new(stream, permit, limits.idle_timeout));
        Some((paused_on_error(accepted).await, (listener, slots)))
    })
}

/// How long the listener rests after a failed `accept`.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// `accepted`, after [`ACCEPT_ERROR_PAUSE`] when it is an error. Why: tonic only logs a failed accept
/// and asks again at once, and the listener stays ready while a connection waits (out of file
/// descriptors, `EMFILE`), so without a pause the loop would spin a core until descriptors free up
/// (hyper's and axum's servers pause for the same reason).
async fn paused_on_error<T>(accepted: io::Result<T>) -> io::Result<T> {
    if let Err(error) = &accepted {
        tracing::warn!(%error, pause_ms = ACCEPT_ERROR_PAUSE.as_millis(),
            "accepting a connection failed; pausing before the next");
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }
    accepted
}

/// An accepted connection that holds one of its socket's slots until dropped, and fails its reads with
/// `TimedOut` once nothing has been read or written for the idle timeout.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Limited<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Limited {
            inner,
            _slot: slot,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn active(&mut self) {
        let next = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<S: Connected> Connected for Limited<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connection idle for {:?}; closed to free its slot",
                        this.idle_timeout
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        written
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_accept_pauses_the_listener_and_a_connection_does_not() {
        let start = Instant::now();
        let emfile = io::Error::from_raw_os_error(24);
        assert!(paused_on_error::<()>(Err(emfile)).await.is_err());
        assert_eq!(start.elapsed(), ACCEPT_ERROR_PAUSE);
        let start = Instant::now();
        assert_eq!(paused_on_error(Ok(7)).await.unwrap(), 7);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
