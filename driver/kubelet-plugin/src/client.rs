//! What every call to the API server shares: a deadline, an error kind that survives up to where a retry
//! is decided, and the backoff between retries.
//!
//! One `kube::Client` serves the publisher and the kubelet's calls (the claim reads and status writes of
//! Prepare). Requests on it do not queue behind each other (hyper opens another connection, or another
//! HTTP/2 stream, for each request in flight), so a hung request only costs its own caller; but without a
//! deadline that caller waits for ever: kube's defaults have no read timeout, and an API server that
//! accepts the connection and never answers holds a claim's Prepare until the kubelet gives up. So the
//! client gets [`call_timeout_layer`]: every response (its headers; for a watch, the start of the stream)
//! must come within [`CALL_TIMEOUT`]. The publisher also bounds each whole call, body included, with
//! [`CALL_TIMEOUT`], and a watch still open 300 s after it started (the server was asked to end it
//! after 290 s) is dropped and started again, whatever its traffic.
//!
//! Every response body is also bounded ([`LineLimited`]): at most [`MAX_LINE`] bytes without a line
//! break, as kube's client reads a body whole and a watch's lines with no length limit.
//!
//! The client sends a call again by itself only when the API server said when to come back: a 429,
//! 503 or 504 with `Retry-After`, after that long plus jitter, at most [`MAX_RETRIES`] times within
//! [`RETRY_BUDGET`] ([`RetryAfter`], whose documentation says why neither kube's retries nor none).
//! Every other failure goes to the caller at once, with its kind; the callers back off themselves.
//!
//! At a plugin's start: [`connect()`] makes the client (a kubeconfig file, else in-cluster) with that
//! layer, and [`server_version_of`] reads the API server's version, retried until it answers, failing
//! at once on a refusal ([`VersionRefused`]).

use std::time::Duration;

mod connect;
mod line_limit;
mod retry;
mod version;

pub use connect::{ConnectError, connect};
pub use line_limit::{LineLimited, LineTooLong, MAX_LINE};
pub use retry::{MAX_RETRIES, MIN_RETRY_DELAY, RETRY_BUDGET, RETRY_JITTER, RetryAfter};
pub use version::{VersionRefused, major_minor, server_version_of, server_version_once};

/// The most any single request/response call may take.
///
/// Well under the kubelet's deadline for a Prepare (`defaultClientCallTimeout`, 45 s, in
/// `pkg/kubelet/cm/dra/plugin`), so a claim whose read timed out fails with its own error, and long
/// enough for a loaded API server.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A layer for `kube::client::ClientBuilder::with_layer`: each response must start within
/// [`CALL_TIMEOUT`]; past it the call fails with a [`ErrorKind::Timeout`] error.
pub fn call_timeout_layer() -> tower::timeout::TimeoutLayer {
    tower::timeout::TimeoutLayer::new(CALL_TIMEOUT)
}

/// Idle HTTP/1.1 connections to the API server kept for reuse. Over TLS the client speaks HTTP/2 when
/// the server offers it (as every kube-apiserver does, and as client-go does): one connection carries
/// every call in flight. Over HTTP/1.1 (a plain `http://` server, or one without HTTP/2) each call in
/// flight has a connection of its own: 128 claims prepared at once open 128 connections, and hyper's
/// default pool keeps every one of them for 90 s (about 75 KiB of buffers each in the plugin, measured
/// with the `prepare_socket` bench: 135 idle connections held 10 MiB of its RSS). Past this many, a
/// connection that becomes idle is closed.
///
/// The pool keeps its connections with no time limit, until the server closes them or (HTTP/2) a
/// health check fails: hyper's pool counts a shared HTTP/2 connection as idle from the last call that
/// took it, even while a watch streams on it, so with an idle timeout the plugin's one connection left
/// the pool between bursts, and the next burst's calls, finding none, each opened a connection and
/// did a TLS handshake (hyper knows that a server speaks HTTP/2 only after one handshake ends).
/// client-go keeps an HTTP/2 connection for as long as a stream is open on it.
pub const MAX_IDLE_CONNECTIONS: usize = 8;

/// On an HTTP/2 connection, a PING is sent after this long without a frame from the server (also
/// while no call is in flight), and the connection is closed when its answer does not come within
/// [`HTTP2_PING_TIMEOUT`]: a connection that died silently (a node's network reconfigured, an API
/// server gone without a FIN) is found within 45 s and the next calls open a new one. Calls sent on
/// it before that fail at their own [`CALL_TIMEOUT`]. client-go's defaults (`ReadIdleTimeout` 30 s,
/// `PingTimeout` 15 s in `k8s.io/client-go/transport`, from `golang.org/x/net/http2`'s health check).
pub const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// See [`HTTP2_PING_INTERVAL`].
pub const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(15);

/// The plugin's client of the API server: kube's stack (the cluster URL, TLS with the configuration's
/// certificates, authentication, impersonation headers) over a connection pool that speaks HTTP/2
/// over TLS where the server offers it (ALPN `h2`, else `http/1.1`), keeps at most
/// [`MAX_IDLE_CONNECTIONS`] idle HTTP/1.1 connections, pings an HTTP/2
/// connection as client-go does ([`HTTP2_PING_INTERVAL`]), with [`call_timeout_layer`] on every call
/// and every response body limited to [`MAX_LINE`] bytes between line breaks ([`LineLimited`]).
/// A 429, 503 or 504 with `Retry-After` is sent again ([`RetryAfter`]) when the configuration asks
/// for retries (`default_retry`, on by default), in place of kube's retries.
///
/// Why HTTP/2: with HTTP/1.1 a burst of 128 prepares opens up to 128 connections (and as many TLS
/// handshakes, on the API server too), whose buffers were a third of the plugin's heap at its peak.
/// With one multiplexed connection its RSS with 1000 live claims settled about 1.5 MiB lower on
/// average, within the spread of single runs (docs/perf.md, "Prepare at scale").
///
/// The stack is kube's default one (`ClientBuilder::try_from`) with the same connect timeout
/// (`connect_timeout`), less three things: kube's retries (replaced by [`RetryAfter`]), kube's trace
/// layer (debug spans, and an error event for each 5xx or transport failure; the callers log their
/// own failures) and its connector's read and write timeouts (unset in kube's defaults; the call
/// timeout bounds the connect and the response's start). With a proxy or an exec credential plugin
/// in the configuration the client is kube's own (HTTP/1.1), with the call timeouts and
/// [`RetryAfter`] in place of kube's retries, and the pool keeps hyper's defaults.
pub fn client_from_config(config: kube::Config) -> Result<kube::Client, kube::Error> {
    client_with(config, HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT, MAX_LINE)
}

/// [`client_from_config`] with the HTTP/2 health check's interval and timeout and the line limit
/// given (the tests' dead connections are found in seconds, not in 45 s; their endless lines are cut
/// after kilobytes).
fn client_with(
    config: kube::Config,
    ping_interval: Duration,
    ping_timeout: Duration,
    max_line: usize,
) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use kube::client::ConfigExt as _;

    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(RetryAfter::default()));
    // kube's own stack for what it does and this one does not: proxies, and client certificates
    // from an exec credential plugin (kube rebuilds its connector when they expire).
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        let mut config = config;
        config.default_retry = false;
        let limit_lines = tower::util::MapResponseLayer::new(
            move |response: http::Response<Box<kube::client::DynBody>>| {
                response.map(|body| LineLimited::new(body, max_line))
            },
        );
        // Retrying needs a service that clones: kube's stack is boxed, so it goes behind a
        // buffer (tower's, as deep as the one of kube's `Client`).
        let retry = retry.map(|retry| {
            tower::ServiceBuilder::new()
                .layer(retry)
                .layer(tower::buffer::BufferLayer::new(1024))
                .into_inner()
        });
        return Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&limit_lines)
            .with_layer(&tower::util::option_layer(retry))
            .with_layer(&call_timeout_layer())
            .build());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    // As Go's net package does for every TCP connection (client-go's too): HTTP/2 writes a request
    // as several small frames, and with Nagle's algorithm a frame behind an unacknowledged one waits
    // for the server's delayed ACK (40 ms on Linux; measured: 48 ms a prepare instead of 2.4 ms).
    http.set_nodelay(true);
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(kube::client::RustlsTlsError::InvalidServerName)
            .map_err(kube::Error::RustlsTls)?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let connector = https.enable_all_versions().wrap_connector(http);
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .pool_idle_timeout(None)
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(ping_interval)
        .http2_keep_alive_timeout(ping_timeout)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .map_response(move |response: http::Response<hyper::body::Incoming>| {
            response.map(|body| LineLimited::new(body, max_line))
        })
        .service(pool);
    Ok(
        kube::client::ClientBuilder::new(service, config.default_namespace)
            .with_layer(&call_timeout_layer())
            .build(),
    )
}

/// What kind of failure an API call had, for deciding what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the object is not there.
    NotFound,
    /// 409: written meanwhile (stale `resourceVersion`) or already exists.
    Conflict,
    /// 410: the `resourceVersion` a watch asked for is gone from the server's history; list again.
    Gone,
    /// Another 4xx: refused (RBAC, validation).
    Rejected(u16),
    /// 5xx or 429: the server failed or is overloaded.
    Server(u16),
    /// No answer in time.
    Timeout,
    /// Connecting, TLS, or the connection broke.
    Transport,
    /// Anything else (a body that does not decode or has a line over [`MAX_LINE`], ...).
    Other,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::NotFound => f.write_str("not found"),
            ErrorKind::Conflict => f.write_str("conflict"),
            ErrorKind::Gone => f.write_str("gone"),
            ErrorKind::Rejected(code) => write!(f, "rejected ({code})"),
            ErrorKind::Server(code) => write!(f, "server error ({code})"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Transport => f.write_str("transport error"),
            ErrorKind::Other => f.write_str("error"),
        }
    }
}

/// The kind of a kube client error.
pub fn kind_of(error: &kube::Error) -> ErrorKind {
    if line_limit::is_line_too_long(error) {
        return ErrorKind::Other;
    }
    match error {
        kube::Error::Api(status) => match status.code {
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            410 => ErrorKind::Gone,
            429 => ErrorKind::Server(429),
            code if code >= 500 => ErrorKind::Server(code),
            // An error body that is JSON but not a Status (a proxy's `{"error": ...}`): kube reads
            // it as a Status without a code, and the HTTP status is lost; not a refusal.
            0 => ErrorKind::Other,
            code => ErrorKind::Rejected(code),
        },
        kube::Error::Service(source) if source.is::<tower::timeout::error::Elapsed>() => {
            ErrorKind::Timeout
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => ErrorKind::Transport,
        _ => ErrorKind::Other,
    }
}

/// Exponential backoff with jitter, like the kubelet's own retries of slice deletion
/// (`wait.Backoff{Duration: 1s, Factor: 2, Jitter: 0.2}` in `dra_plugin_manager.go`), capped at
/// [`Backoff::CAP`].
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random seed from std's per-process random hash keys: enough to spread nodes' retries.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0);
        Backoff {
            failures: 0,
            seed: hasher.finish(),
        }
    }
}

impl Backoff {
    /// The first delay.
    pub const START: Duration = Duration::from_secs(1);
    /// The longest delay (before jitter).
    pub const CAP: Duration = Duration::from_secs(30);
    /// Up to this fraction of the delay is added at random.
    pub const JITTER: f64 = 0.2;

    /// The delay before the next attempt: 1 s, 2 s, 4 s, ... up to [`Backoff::CAP`], each plus up to 20%.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = Self::START.saturating_mul(1u32 << exponent).min(Self::CAP);
        base.mul_f64(1.0 + Self::JITTER * self.random_unit())
    }

    /// After a success: the next failure waits [`Backoff::START`] again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// A number in [0, 1) (splitmix64 of the seed and the failure count).
    fn random_unit(&mut self) -> f64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_pool;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_lines;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_retry;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_with_at_most_20_percent_jitter_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let bases = [1, 2, 4, 8, 16, 30, 30, 30];
        for base in bases {
            let delay = backoff.next_delay();
            let base = Duration::from_secs(base);
            assert!(
                delay >= base && delay <= base.mul_f64(1.2),
                "{delay:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(1200));
    }

    #[test]
    fn jitter_differs_between_attempts_and_processes() {
        let delays: Vec<Duration> = {
            let mut backoff = Backoff::default();
            (0..8)
                .map(|_| {
                    backoff.reset();
                    backoff.next_delay()
                })
                .collect()
        };
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "no jitter: {delays:?}"
        );
        let first = |b: &mut Backoff| b.next_delay();
        let (mut a, mut b) = (Backoff::default(), Backoff::default());
        assert_ne!(first(&mut a), first(&mut b), "two nodes retry apart");
    }

    #[test]
    fn error_kinds_keep_the_status_code_and_recognise_timeouts() {
        let api = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(kind_of(&api(404)), ErrorKind::NotFound);
        assert_eq!(kind_of(&api(409)), ErrorKind::Conflict);
        assert_eq!(kind_of(&api(410)), ErrorKind::Gone);
        assert_eq!(kind_of(&api(403)), ErrorKind::Rejected(403));
        assert_eq!(kind_of(&api(503)), ErrorKind::Server(503));
        assert_eq!(kind_of(&api(429)), ErrorKind::Server(429));
        let proxy: kube::core::Status = serde_json::from_str(r#"{"error":"upstream"}"#).unwrap();
        assert_eq!(kind_of(&kube::Error::Api(proxy.boxed())), ErrorKind::Other);
        let elapsed = kube::Error::Service(Box::new(tower::timeout::error::Elapsed::new()));
        assert_eq!(kind_of(&elapsed), ErrorKind::Timeout);
        let other = kube::Error::Service("connection refused".into());
        assert_eq!(kind_of(&other), ErrorKind::Transport);
    }
}
