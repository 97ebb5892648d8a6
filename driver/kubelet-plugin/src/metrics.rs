//! Prometheus metrics and a health endpoint, served over plain HTTP on a configurable address.
//!
//! `GET /metrics`: counters of prepared and unprepared claims and their errors, a latency histogram
//! per call, the number of devices published, in the OpenMetrics text format written by
//! `prometheus-client`. `GET /healthz`: `ok` while the plugin runs (the driver says from when: this
//! project's plugin from the start, while it still waits for the API server), the kubelet has not
//! refused its registration, and the driver's async runtime beats ([`Metrics::beat`], at most
//! [`HEARTBEAT_STALE`] ago, once it began) (liveness). `GET /readyz`: `ok` once the kubelet has registered it too
//! (readiness: a plugin the kubelet never registered publishes devices no pod can be prepared with),
//! and, with NRI, while the runtime's NRI connection is up. The HTTP server ([`serve`]) is hyper's,
//! with a header read timeout, a deadline per connection and a connection cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::handler::{BoxFuture, ClaimRef, DraHandler, PrepareResults, UnprepareResults};

mod http;
pub use http::{
    CONTENT_TYPE, IO_TIMEOUT, Limits, MAX_CONNECTIONS, serve, serve_on_thread, serve_with,
};

/// Latency buckets in seconds (the upper bounds of a Prometheus histogram).
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

fn stale_millis() -> u64 {
    u64::try_from(HEARTBEAT_STALE.as_millis()).unwrap_or(u64::MAX)
}

/// The plugin's metrics.
pub struct Metrics {
    prepared: Counter,
    prepare_errors: Counter,
    unprepared: Counter,
    unprepare_errors: Counter,
    prepare_seconds: Histogram,
    unprepare_seconds: Histogram,
    devices_published: Gauge,
    healthy: AtomicBool,
    registered: AtomicBool,
    nri: std::sync::OnceLock<Arc<dra_nri::stats::NriStats>>,
    status_forbidden: std::sync::OnceLock<Arc<AtomicU64>>,
    /// What [`Metrics::beat`] measures from.
    created: tokio::time::Instant,
    /// Milliseconds from `created` to the last [`Metrics::beat`] plus one; 0: none yet.
    last_beat: AtomicU64,
}

/// How long `/healthz` waits for a heartbeat of the driver's async runtime ([`Metrics::beat`]) before
/// it answers 503: a runtime whose worker threads are lost or blocked (a `spawn_blocking` refused a
/// thread inside `block_in_place`, a deadlock) serves no kubelet call, while the HTTP server, on a
/// thread of its own, would still say ok.
pub const HEARTBEAT_STALE: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            prepared: Counter::default(),
            prepare_errors: Counter::default(),
            unprepared: Counter::default(),
            unprepare_errors: Counter::default(),
            prepare_seconds: Histogram::new(BUCKETS),
            unprepare_seconds: Histogram::new(BUCKETS),
            devices_published: Gauge::default(),
            healthy: AtomicBool::default(),
            registered: AtomicBool::default(),
            nri: std::sync::OnceLock::new(),
            status_forbidden: std::sync::OnceLock::new(),
            created: tokio::time::Instant::now(),
            last_beat: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Sets the number of devices in the published slices.
    pub fn set_devices_published(&self, count: usize) {
        self.devices_published
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Marks the plugin healthy (serving and registered) or not.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Renders the NRI plugin's metrics too (with `--nri`).
    pub fn set_nri(&self, stats: Arc<dra_nri::stats::NriStats>) {
        let _ = self.nri.set(stats);
    }

    /// Whether `/healthz` answers ok: marked healthy ([`Metrics::set_healthy`]), and, once the driver
    /// beats ([`Metrics::beat`]), a beat within [`HEARTBEAT_STALE`].
    pub fn is_healthy(&self) -> bool {
        let last = self.last_beat.load(Ordering::Relaxed);
        let fresh = last == 0 || self.millis_now().saturating_sub(last - 1) <= stale_millis();
        fresh && self.healthy.load(Ordering::Relaxed)
    }

    /// A heartbeat of the driver's async runtime: called from a task of it ([`Metrics::keep_beating`]).
    pub fn beat(&self) {
        self.last_beat
            .store(self.millis_now().saturating_add(1), Ordering::Relaxed);
    }

    /// Beats every `every` for as long as the future runs (spawn it on the runtime that serves the
    /// kubelet; `every` well under [`HEARTBEAT_STALE`]).
    pub async fn keep_beating(self: Arc<Self>, every: std::time::Duration) {
        loop {
            self.beat();
            tokio::time::sleep(every).await;
        }
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks the plugin registered with the kubelet (or not, again).
    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers ok: healthy and registered, and with NRI ([`Metrics::set_nri`])
    /// connected to the runtime (without it, claims that need NRI are prepared but their
    /// containers are neither pinned nor given their netdevs).
    pub fn is_ready(&self) -> bool {
        self.is_healthy()
            && self.registered.load(Ordering::Relaxed)
            && self.nri.get().is_none_or(|nri| nri.connected())
    }

    /// Counts the device status writes the API server forbade (the preparer's counter).
    pub fn set_status_forbidden(&self, counter: Arc<AtomicU64>) {
        let _ = self.status_forbidden.set(counter);
    }

    /// The exposition (OpenMetrics text, [`CONTENT_TYPE`]). Counters are registered without their
    /// `_total` suffix, which the format adds to the sample: the series keep their names
    /// (`dra_hal_prepared_claims_total`, ...). Help texts have no final period: prometheus-client
    /// adds one.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        let counters = [
            (
                "dra_hal_prepared_claims",
                "Claims prepared successfully",
                &self.prepared,
            ),
            (
                "dra_hal_prepare_errors",
                "Claims whose prepare failed",
                &self.prepare_errors,
            ),
            (
                "dra_hal_unprepared_claims",
                "Claims unprepared successfully",
                &self.unprepared,
            ),
            (
                "dra_hal_unprepare_errors",
                "Claims whose unprepare failed",
                &self.unprepare_errors,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        if let Some(forbidden) = self.status_forbidden.get() {
            registry.register(
                "dra_hal_status_write_forbidden",
                "Device status writes the API server forbade (missing RBAC: a configuration error)",
                ConstCounter::new(forbidden.load(Ordering::Relaxed)),
            );
        }
        registry.register(
            "dra_hal_prepare_duration_seconds",
            "NodePrepareResources call latency",
            self.prepare_seconds.clone(),
        );
        registry.register(
            "dra_hal_unprepare_duration_seconds",
            "NodeUnprepareResources call latency",
            self.unprepare_seconds.clone(),
        );
        registry.register(
            "dra_hal_devices_published",
            "Devices in this node's ResourceSlices",
            self.devices_published.clone(),
        );
        if let Some(nri) = self.nri.get() {
            nri.register(&mut registry);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
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
            self.metrics.prepare_errors.inc_by(failed);
            self.metrics.prepared.inc_by(results.len() as u64 - failed);
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
            self.metrics.unprepare_errors.inc_by(failed);
            self.metrics
                .unprepared
                .inc_by(results.len() as u64 - failed);
            results
        })
    }

    fn concurrent(&self) -> bool {
        self.inner.concurrent()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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
        // Ready only once the kubelet has registered the plugin too.
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_registered(true);
        assert!(get(address, "/readyz").await.ends_with("\r\n\r\nok\n"));
        metrics.set_healthy(false);
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_healthy(true);
        // With NRI: ready only while connected to the runtime.
        let nri = Arc::new(dra_nri::stats::NriStats::default());
        metrics.set_nri(nri.clone());
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        nri.set_connected(true);
        assert!(get(address, "/readyz").await.ends_with("\r\n\r\nok\n"));
        nri.set_connected(false);
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
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

    /// prometheus-client ends every help text with a period: one of its own is a `..` in `# HELP`.
    #[test]
    fn every_help_line_ends_in_one_period() {
        let metrics = Metrics::default();
        metrics.set_status_forbidden(Arc::new(AtomicU64::new(0)));
        metrics.set_nri(Arc::new(dra_nri::stats::NriStats::default()));
        let text = metrics.render();
        let help: Vec<_> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(help.len(), 12, "{text}");
        for line in help {
            assert!(line.ends_with('.') && !line.ends_with(".."), "{line}");
        }
    }

    /// A runtime that stops beating (its workers lost or blocked) turns `/healthz` 503 after
    /// `HEARTBEAT_STALE`, and ok again when it beats; before any beat, only `set_healthy` counts.
    #[tokio::test(start_paused = true)]
    async fn healthz_fails_when_the_runtime_stops_beating() {
        let metrics = Arc::new(Metrics::default());
        metrics.set_healthy(true);
        tokio::time::advance(HEARTBEAT_STALE * 3).await;
        assert!(metrics.is_healthy(), "no beat yet: not required");
        let beating = tokio::spawn(metrics.clone().keep_beating(HEARTBEAT_STALE / 10));
        tokio::time::sleep(HEARTBEAT_STALE * 2).await;
        assert!(metrics.is_healthy());
        beating.abort();
        tokio::time::sleep(HEARTBEAT_STALE - HEARTBEAT_STALE / 5).await;
        assert!(metrics.is_healthy(), "within the limit");
        tokio::time::sleep(HEARTBEAT_STALE / 2).await;
        assert!(!metrics.is_healthy(), "no beat for longer than the limit");
        assert!(!metrics.is_ready());
        metrics.beat();
        assert!(metrics.is_healthy());
        metrics.set_healthy(false);
        assert!(
            !metrics.is_healthy(),
            "a beat does not override set_healthy"
        );
    }
}
