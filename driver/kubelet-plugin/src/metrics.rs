//! Prometheus metrics and a health endpoint, served over plain HTTP on a configurable address.
//!
//! `GET /metrics`: counters of prepared and unprepared claims and their errors, a latency histogram
//! per call, the number of devices published. `GET /healthz`: `ok` while the plugin serves and the
//! kubelet has not refused its registration. Written by hand (a few atomics and a text format): no
//! metrics framework is needed for this handful of series.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::handler::{BoxFuture, ClaimRef, DraHandler, PrepareResults, UnprepareResults};

/// Latency buckets in seconds (the upper bounds of a Prometheus histogram).
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The plugin's metrics.
#[derive(Default)]
pub struct Metrics {
    prepared: AtomicU64,
    prepare_errors: AtomicU64,
    unprepared: AtomicU64,
    unprepare_errors: AtomicU64,
    prepare_seconds: Histogram,
    unprepare_seconds: Histogram,
    devices_published: AtomicU64,
    healthy: AtomicBool,
    nri: std::sync::OnceLock<Arc<dra_nri::stats::NriStats>>,
    status_forbidden: std::sync::OnceLock<Arc<AtomicU64>>,
}

impl Metrics {
    /// Sets the number of devices in the published slices.
    pub fn set_devices_published(&self, count: usize) {
        self.devices_published
            .store(count as u64, Ordering::Relaxed);
    }

    /// Marks the plugin healthy (serving and registered) or not.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Renders the NRI plugin's metrics too (with `--nri`).
    pub fn set_nri(&self, stats: Arc<dra_nri::stats::NriStats>) {
        let _ = self.nri.set(stats);
    }

    /// Whether `/healthz` answers ok.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Counts the device status writes the API server forbade (the preparer's counter).
    pub fn set_status_forbidden(&self, counter: Arc<AtomicU64>) {
        let _ = self.status_forbidden.set(counter);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "dra_hal_prepared_claims_total",
                "Claims prepared successfully.",
                &self.prepared,
            ),
            (
                "dra_hal_prepare_errors_total",
                "Claims whose prepare failed.",
                &self.prepare_errors,
            ),
            (
                "dra_hal_unprepared_claims_total",
                "Claims unprepared successfully.",
                &self.unprepared,
            ),
            (
                "dra_hal_unprepare_errors_total",
                "Claims whose unprepare failed.",
                &self.unprepare_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(forbidden) = self.status_forbidden.get() {
            let _ = writeln!(
                out,
                "# HELP dra_hal_status_write_forbidden_total Device status writes the API server \
                 forbade (missing RBAC: a configuration error).\n\
                 # TYPE dra_hal_status_write_forbidden_total counter\n\
                 dra_hal_status_write_forbidden_total {}",
                forbidden.load(Ordering::Relaxed)
            );
        }
        self.prepare_seconds.render(
            &mut out,
            "dra_hal_prepare_duration_seconds",
            "NodePrepareResources call latency.",
        );
        self.unprepare_seconds.render(
            &mut out,
            "dra_hal_unprepare_duration_seconds",
            "NodeUnprepareResources call latency.",
        );
        let _ = writeln!(
            out,
            "# HELP dra_hal_devices_published Devices in this node's ResourceSlices.\n\
             # TYPE dra_hal_devices_published gauge\ndra_hal_devices_published {}",
            self.devices_published.load(Ordering::Relaxed)
        );
        if let Some(nri) = self.nri.get() {
            nri.render(&mut out);
        }
        out
    }
}

/// A [`DraHandler`] that counts and times the calls of another.
pub struct Metered<H> {
    inner: H,
    metrics: Arc<Metrics>,
}

impl<H: DraHandler> Metered<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

impl<H: DraHandler> DraHandler for Metered<H> {
    fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults> {
        Box::pin(async move {
            let start = Instant::now();
            let results = self.inner.prepare(claims).await;
            self.metrics
                .prepare_seconds
                .observe(start.elapsed().as_secs_f64());
            let failed = results.values().filter(|r| r.is_err()).count() as u64;
            self.metrics
                .prepare_errors
                .fetch_add(failed, Ordering::Relaxed);
            self.metrics
                .prepared
                .fetch_add(results.len() as u64 - failed, Ordering::Relaxed);
            results
        })
    }

    fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults> {
        Box::pin(async move {
            let start = Instant::now();
            let results = self.inner.unprepare(claims).await;
            self.metrics
                .unprepare_seconds
                .observe(start.elapsed().as_secs_f64());
            let failed = results.values().filter(|r| r.is_err()).count() as u64;
            self.metrics
                .unprepare_errors
                .fetch_add(failed, Ordering::Relaxed);
            self.metrics
                .unprepared
                .fetch_add(results.len() as u64 - failed, Ordering::Relaxed);
            results
        })
    }
}

/// Connections served at once; more wait in the kernel's accept queue, holding no descriptor of
/// the plugin.
pub const MAX_CONNECTIONS: usize = 32;
/// How long one connection may take to send its request and take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request read.
const MAX_REQUEST: usize = 8192;
/// The pause after a failed accept (out of descriptors), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How much the metrics endpoint serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Deadline of one connection, request and answer ([`IO_TIMEOUT`]).
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
/// [`Limits`]. Requests are read up to 8 KiB; anything else is a 404.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, metrics, shutdown, Limits::default()).await;
}

/// [`serve`] with explicit limits: at most `max_connections` connections at once, each closed after
/// `io_timeout`, so idle or slow clients cannot hold descriptors or memory.
pub async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
    limits: Limits,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => return,
        };
        let Ok(slot) = slot else {
            return;
        };
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
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(limits.io_timeout, answer(stream, &metrics)).await;
        });
    }
}

/// Reads one request (up to the end of its headers or [`MAX_REQUEST`] bytes) and answers it.
async fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buffer.len() < MAX_REQUEST && !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let request = String::from_utf8_lossy(&buffer);
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let (status, body, content_type) = match path {
        "/metrics" => ("200 OK", metrics.render(), "text/plain; version=0.0.4"),
        "/healthz" if metrics.is_healthy() => ("200 OK", "ok\n".to_owned(), "text/plain"),
        "/healthz" => (
            "503 Service Unavailable",
            "not ready\n".to_owned(),
            "text/plain",
        ),
        _ => ("404 Not Found", "not found\n".to_owned(), "text/plain"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fixed;

    impl DraHandler for Fixed {
        fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults> {
            Box::pin(async move {
                claims
                    .into_iter()
                    .map(|c| {
                        let r = if c.uid == "bad" {
                            Err("no".into())
                        } else {
                            Ok(Vec::new())
                        };
                        (c.uid, r)
                    })
                    .collect()
            })
        }
        fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults> {
            Box::pin(async move {
                claims
                    .into_iter()
                    .map(|c| (c.uid, Ok(())))
                    .collect::<BTreeMap<_, _>>()
            })
        }
    }

    fn claim(uid: &str) -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            uid: uid.into(),
            name: "c".into(),
        }
    }

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn counts_times_and_serves_over_http() {
        let metrics = Arc::new(Metrics::default());
        let handler = Metered::new(Fixed, metrics.clone());
        handler
            .prepare(vec![claim("a"), claim("bad"), claim("c")])
            .await;
        handler.unprepare(vec![claim("a")]).await;
        metrics.set_devices_published(10);
        let text = metrics.render();
        for line in [
            "dra_hal_prepared_claims_total 2",
            "dra_hal_prepare_errors_total 1",
            "dra_hal_unprepared_claims_total 1",
            "dra_hal_prepare_duration_seconds_count 1",
            "dra_hal_prepare_duration_seconds_bucket{le=\"+Inf\"} 1",
            "dra_hal_devices_published 10",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 503"));
        metrics.set_healthy(true);
        assert!(get(address, "/healthz").await.ends_with("\r\n\r\nok\n"));
        assert!(
            get(address, "/metrics")
                .await
                .contains("dra_hal_devices_published 10")
        );
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    /// A server with 4 slots and the default timeout, on virtual time.
    async fn small_server(metrics: Arc<Metrics>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 4,
            io_timeout: IO_TIMEOUT,
        };
        tokio::spawn(serve_with(
            listener,
            metrics,
            std::future::pending(),
            limits,
        ));
        address
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_timeout() {
        let address = small_server(Arc::new(Metrics::default())).await;
        let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
        let start = tokio::time::Instant::now();
        let mut rest = Vec::new();
        // Virtual time: the server's deadline passes without waiting for it.
        let closed = tokio::time::timeout(IO_TIMEOUT * 10, idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "an idle connection is never closed");
        assert!(rest.is_empty());
        assert!(start.elapsed() >= IO_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_cap_wait_for_a_slot_and_are_then_answered() {
        let metrics = Arc::new(Metrics::default());
        metrics.set_healthy(true);
        let address = small_server(metrics).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        let start = tokio::time::Instant::now();
        let answer = get(address, "/healthz").await;
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert!(
            start.elapsed() >= IO_TIMEOUT,
            "served only once the idle connections' slots were freed: {:?}",
            start.elapsed()
        );
    }
}
