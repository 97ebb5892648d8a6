//! The HTTP server of `/metrics`, `/healthz` and `/readyz`: hyper's HTTP/1 server, one request per connection,
//! with a header read timeout (a client that connects and sends nothing, or trickles its headers,
//! is closed), a deadline per connection (a client that does not take the answer) and a cap on the
//! connections served at once. When the cap is reached, a new connection closes the oldest one that
//! has not sent its request yet: the kubelet's probes of `/healthz` (a 1 s timeout by default) send
//! theirs at once, so a flood of silent connections cannot keep them out and have the plugin
//! restarted. Only when every connection served has sent its request does a new one wait.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::task::AbortHandle;

use super::Metrics;

/// Connections served at once; past it, a new connection closes the oldest one that has not sent its
/// request yet.
pub const MAX_CONNECTIONS: usize = 32;
/// How long one connection may take to send its request headers, and to send its request and take
/// the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of `/metrics` (what `prometheus-client` writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The pause after a failed accept (out of descriptors), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How much the metrics endpoint serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Header read timeout and deadline of one connection, request and answer ([`IO_TIMEOUT`]).
    pub io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            io_timeout: IO_TIMEOUT,
        }
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves, with the default
/// [`Limits`]. Any other path is a 404.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, metrics, shutdown, Limits::default()).await;
}

/// [`serve`] on a thread and current-thread runtime of their own, so that no load on the metrics
/// port (a flood of connections, slow clients) takes CPU time or tasks from the kubelet's sockets.
/// `listener` must be non-blocking. The thread ends when `shutdown` resolves.
pub fn serve_on_thread(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, metrics, shutdown).await,
                    Err(error) => tracing::error!(%error, "metrics listener unusable"),
                }
            });
        })
}

/// [`serve`] with explicit limits: at most `max_connections` connections at once, each closed when
/// its headers have not arrived within `io_timeout` and in any case after `io_timeout`, so idle or
/// slow clients cannot hold descriptors or memory.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
    limits: Limits,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let served = Arc::new(Served::default());
    for id in 0u64.. {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection failed");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => return,
            Err(TryAcquireError::NoPermits) => {
                served.close_oldest_silent();
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    () = &mut shutdown => return,
                };
                let Ok(slot) = slot else {
                    return;
                };
                slot
            }
        };
        let metrics = metrics.clone();
        let asked = Arc::new(AtomicBool::new(false));
        let leave = Leave {
            served: served.clone(),
            id,
        };
        let flag = asked.clone();
        // Listed before the task can end (and unlist itself): the list stays locked meanwhile.
        let mut list = served.lock();
        let task = tokio::spawn(async move {
            let _slot = slot;
            let _leave = leave;
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                flag.store(true, Ordering::Relaxed);
                let response = respond(request.uri().path(), &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.io_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection at the deadline closes it.
            let _ = tokio::time::timeout(limits.io_timeout, connection).await;
        });
        list.push_back((id, asked, task.abort_handle()));
    }
}

/// The connections being served, oldest first: whether each has sent its request, and how to close
/// it (aborting its task drops the connection and its slot).
#[derive(Default)]
struct Served(Mutex<VecDeque<(u64, Arc<AtomicBool>, AbortHandle)>>);

impl Served {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, Arc<AtomicBool>, AbortHandle)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the oldest connection that has not sent its request yet, if any.
    fn close_oldest_silent(&self) {
        let mut served = self.lock();
        let silent = served
            .iter()
            .position(|(_, asked, _)| !asked.load(Ordering::Relaxed));
        if let Some((_, _, task)) = silent.and_then(|i| served.remove(i)) {
            task.abort();
        }
    }
}

/// Takes a connection off [`Served`] when its task ends, however it ends.
struct Leave {
    served: Arc<Served>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.served.lock().retain(|(id, _, _)| *id != self.id);
    }
}

fn respond(path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match path {
        "/metrics" => (StatusCode::OK, metrics.render(), CONTENT_TYPE),
        "/healthz" if metrics.is_healthy() => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/readyz" if metrics.is_ready() => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/healthz" | "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".to_owned(),
            "text/plain",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    /// The thread serves without any runtime of the caller's, and ends when told to.
    #[test]
    fn serve_on_thread_answers_and_ends_at_shutdown() {
        use std::io::{Read, Write};
        let metrics = Arc::new(Metrics::default());
        metrics.set_healthy(true);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = serve_on_thread(listener, metrics, async move {
            let _ = stopped.await;
        })
        .unwrap();
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    async fn server(max_connections: usize) -> (std::net::SocketAddr, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        metrics.set_healthy(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections,
            io_timeout: IO_TIMEOUT,
        };
        tokio::spawn(serve_with(
            listener,
            metrics.clone(),
            std::future::pending(),
            limits,
        ));
        (address, metrics)
    }

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// Reads until the server closes; `None` when it has not after `limit` (virtual time).
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
        let mut rest = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut rest))
            .await
            .ok()
            .map(|read| {
                // A reset is a close too.
                let _ = read;
                rest
            })
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_does_not_block_others_and_is_closed_after_the_timeout() {
        let (address, _) = server(4).await;
        let mut silent = TcpStream::connect(address).await.unwrap();
        let start = Instant::now();
        let answer = get(address, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert!(
            start.elapsed() < IO_TIMEOUT,
            "served while the silent client is connected: {:?}",
            start.elapsed()
        );
        let rest = closed_within(&mut silent, IO_TIMEOUT * 10).await;
        let rest = rest.expect("a silent connection is never closed");
        // hyper may answer 408 on a header timeout; it never answers the request it did not get.
        let text = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
        assert!(start.elapsed() >= IO_TIMEOUT, "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_trickling_its_headers_is_closed_after_the_timeout() {
        let (address, _) = server(4).await;
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let start = Instant::now();
        let trickle = async {
            // One header byte a second, forever: each read succeeds, the headers never end.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if slow.write_all(b"x").await.is_err() {
                    return;
                }
            }
        };
        let closed = tokio::time::timeout(IO_TIMEOUT * 10, trickle).await;
        assert!(closed.is_ok(), "a trickling client is never closed");
        assert!(start.elapsed() >= IO_TIMEOUT, "{:?}", start.elapsed());
        assert!(
            start.elapsed() <= IO_TIMEOUT + Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    /// At the cap, a new connection closes the oldest silent one: a flood of silent connections,
    /// renewed faster than the header timeout, cannot keep a health check out.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_silent_connections_cannot_keep_a_health_check_out() {
        let (address, _) = server(2).await;
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        let answer = get(address, "/healthz").await;
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "answered within a probe's timeout: {:?}",
            start.elapsed()
        );
        // The oldest silent connection made room; the other is still served.
        let closed = closed_within(&mut silent[0], Duration::from_millis(100)).await;
        assert!(closed.is_some(), "the oldest silent connection was closed");
        let open = closed_within(&mut silent[1], Duration::from_millis(100)).await;
        assert!(open.is_none(), "the newer silent connection is still open");
        // Renewed without end: every check is still answered at once.
        for _ in 0..20 {
            for _ in 0..4 {
                silent.push(TcpStream::connect(address).await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let start = Instant::now();
            let answer = get(address, "/healthz").await;
            assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_and_unknown_paths_are_404() {
        let (address, metrics) = server(4).await;
        metrics.set_devices_published(3);
        let answer = get(address, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("content-type: {CONTENT_TYPE}")),
            "{answer}"
        );
        assert!(
            answer.contains("\ndra_hal_devices_published 3\n"),
            "{answer}"
        );
        assert!(answer.ends_with("# EOF\n"), "{answer}");
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
        // Not HTTP at all: an error answer or a close, and the server goes on.
        let mut garbage = TcpStream::connect(address).await.unwrap();
        garbage.write_all(b"\x00\xff\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = garbage.read_to_end(&mut rest).await;
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
