//! `client_from_config` against real servers on loopback (hyper's): over HTTP/1.1 the pool's idle
//! cap; over TLS one HTTP/2 connection for the calls in flight, one kept after a first burst that
//! opened many, and a connection that died silently (a TCP proxy that stops passing bytes) replaced
//! once its health check fails; kube's stack kept (authentication), its retries replaced (a 503 with
//! `Retry-After` sent again: [`super::RetryAfter`]; `tests_retry` has the rest).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{ErrorKind, MAX_IDLE_CONNECTIONS, client_from_config, kind_of};

const VERSION: &str = r#"{"major":"1"}"#;
const UNAVAILABLE: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"overloaded","reason":"ServiceUnavailable","code":503}"#;

/// What the server saw.
#[derive(Default)]
struct Seen {
    opened: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
    authorized: AtomicUsize,
}

/// Serves `GET /version` (each answer after `delay`); the first `failures` requests get a 503 with
/// `Retry-After: 0`.
async fn serve(delay: Duration, failures: usize) -> (kube::Config, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let server = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = server.clone();
            seen.opened.fetch_add(1, Ordering::SeqCst);
            seen.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|request: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                        if request
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == "Bearer t0ken")
                        {
                            seen.authorized.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(delay).await;
                        let (status, body) = if n < failures {
                            (503, UNAVAILABLE)
                        } else {
                            (200, VERSION)
                        };
                        let response = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .header("retry-after", "0")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (kube::Config::new(url.parse().unwrap()), seen)
}

fn version() -> http::Request<Vec<u8>> {
    http::Request::get("/version").body(Vec::new()).unwrap()
}

/// Waits until `done` holds, checking every 10 ms; fails naming `what` (and `state`, what was seen
/// last) when it does not within 10 s, a bound far above the time the tests wait on.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 10 s ({})",
            state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn after_a_burst_at_most_the_idle_cap_of_connections_stay_open_and_are_reused() {
    let (config, seen) = serve(Duration::from_millis(300), 0).await;
    let client = client_from_config(config).unwrap();
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request_text(version()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // HTTP/1.1: each call in flight had a connection of its own (a call started late on a loaded
    // machine may have reused one).
    let opened = seen.opened.load(Ordering::SeqCst);
    assert!(opened > MAX_IDLE_CONNECTIONS, "{opened} connections opened");
    let start = Instant::now();
    while seen.open.load(Ordering::SeqCst) > MAX_IDLE_CONNECTIONS {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} connections still open",
            seen.open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The ones kept serve the next calls.
    client.request_text(version()).await.unwrap();
    assert_eq!(seen.opened.load(Ordering::SeqCst), opened);
}

#[tokio::test]
async fn the_token_is_sent_and_a_503_with_retry_after_is_retried() {
    let (mut config, seen) = serve(Duration::ZERO, 1).await;
    config.auth_info.token = Some("t0ken".to_owned().into());
    let client = client_from_config(config).unwrap();
    assert_eq!(client.request_text(version()).await.unwrap(), VERSION);
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        2,
        "the 503 was not retried"
    );
    assert_eq!(seen.authorized.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_default_retry_a_503_reaches_the_caller_with_its_kind() {
    let (mut config, seen) = serve(Duration::ZERO, 1).await;
    config.default_retry = false;
    let client = client_from_config(config).unwrap();
    let error = client.request_text(version()).await.unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Server(503), "{error}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn over_tls_the_calls_in_flight_share_one_http2_connection() {
    use crate::fake_api::{FakeApi, FakeTls};
    let tls = FakeTls::new().unwrap();
    let mut api = FakeApi::with_node("node-1");
    api.get_latency = Some(Duration::from_millis(300));
    let state = Arc::new(std::sync::Mutex::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_https(state.clone(), listener, tls.clone()));
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&tls.kubeconfig(port)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = client_from_config(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    // The first call connects (as the plugin's version read and slice watch do before any claim):
    // calls started before any connection exists each open one, hyper not knowing yet that the
    // server speaks HTTP/2.
    nodes.get("node-1").await.unwrap();
    let start = Instant::now();
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let nodes = nodes.clone();
            tokio::spawn(async move { nodes.get("node-1").await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().metadata.name.as_deref(),
            Some("node-1")
        );
    }
    // All 32 were in flight at once (each waited 300 ms at the server), on one connection.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(state.lock().unwrap().connections, 1);
    assert_eq!(state.lock().unwrap().log.len(), 33);
}

/// A TCP proxy in front of a server: counts the connections it accepted and those still open, and
/// can freeze the open ones (their bytes are swallowed from then on and the sockets stay open until
/// the client closes its end): a connection that died silently, as behind a NAT that forgot it or
/// an API server host gone without a FIN.
struct Proxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// Connections numbered below this one are frozen.
    frozen_below: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let frozen_below = Arc::new(AtomicUsize::new(0));
        let (counter, opened, frozen) = (accepted.clone(), open.clone(), frozen_below.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                opened.fetch_add(1, Ordering::SeqCst);
                let server = tokio::net::TcpStream::connect(("127.0.0.1", target))
                    .await
                    .unwrap();
                let (open, frozen) = (opened.clone(), frozen.clone());
                tokio::spawn(async move {
                    let pump =
                        |mut from: tokio::net::tcp::OwnedReadHalf,
                         mut to: tokio::net::tcp::OwnedWriteHalf| {
                            let frozen = frozen.clone();
                            async move {
                                let mut buf = vec![0; 16 * 1024];
                                loop {
                                    let n = match from.read(&mut buf).await {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => n,
                                    };
                                    if id < frozen.load(Ordering::SeqCst) {
                                        continue;
                                    }
                                    if to.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown().await;
                            }
                        };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write) => {}
                        () = pump(server_read, client_write) => {}
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy {
            port,
            accepted,
            open,
            frozen_below,
        }
    }

    /// From now on the connections open so far pass nothing.
    fn freeze_open_connections(&self) {
        let accepted = self.accepted.load(Ordering::SeqCst);
        self.frozen_below.store(accepted, Ordering::SeqCst);
    }
}

/// The fake API server over TLS behind a [`Proxy`], and a kubeconfig for the proxy.
async fn fake_api_behind_proxy() -> (Proxy, kube::Config) {
    use crate::fake_api::{FakeApi, FakeTls};
    let tls = FakeTls::new().unwrap();
    let state = Arc::new(std::sync::Mutex::new(FakeApi::with_node("node-1")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().port();
    tokio::spawn(FakeApi::serve_https(state, listener, tls.clone()));
    let proxy = Proxy::start(target).await;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&tls.kubeconfig(proxy.port)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    (proxy, config)
}

#[tokio::test]
async fn an_http2_connection_that_died_silently_is_replaced_after_its_health_check_fails() {
    let (proxy, config) = fake_api_behind_proxy().await;
    let interval = Duration::from_millis(500);
    let client = super::client_with(config, interval, interval, super::MAX_LINE).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    nodes.get("node-1").await.unwrap();
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);

    // The connection goes dead without a FIN. Its PING goes unanswered: within interval + timeout
    // the client closes it (the proxy sees its end close), so the next call opens a new connection
    // and is answered at once, where without the health check it would go out on the dead one and
    // fail at the call timeout (10 s).
    proxy.freeze_open_connections();
    let frozen = Instant::now();
    wait_until(
        "the client closes the dead connection",
        || proxy.open.load(Ordering::SeqCst) == 0,
        || format!("{} open", proxy.open.load(Ordering::SeqCst)),
    )
    .await;
    // Not before its health check could fail.
    assert!(frozen.elapsed() >= interval, "{:?}", frozen.elapsed());
    let start = Instant::now();
    let node = nodes.get("node-1").await.unwrap();
    assert_eq!(node.metadata.name.as_deref(), Some("node-1"));
    // A new connection and handshake take milliseconds; the bound leaves room for a loaded machine
    // and stays well under the call timeout that the dead connection would cost.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 2);
}

/// The calls of a burst.
const BURST: usize = 16;

#[tokio::test]
async fn a_first_burst_opens_a_connection_per_call_and_keeps_one() {
    let (proxy, config) = fake_api_behind_proxy().await;
    let client = client_from_config(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let burst = || {
        let calls: Vec<_> = (0..BURST)
            .map(|_| {
                let nodes = nodes.clone();
                tokio::spawn(async move { nodes.get("node-1").await })
            })
            .collect();
        async move {
            for call in calls {
                call.await.unwrap().unwrap();
            }
        }
    };
    // Before any connection exists hyper cannot know that the server speaks HTTP/2 (ALPN ends with
    // the handshake), so each call of the first burst starts a connection (those still connecting
    // when the first one is ready go on in the background); the ones that negotiated h2 after the
    // first are dropped. Every call starts its connect: the test's runtime has one thread, on which
    // each call's task runs (and connects) before any handshake can go on. The proxy accepts one
    // connection at a time, some after the burst is answered.
    burst().await;
    let counts = || {
        format!(
            "{} accepted, {} open",
            proxy.accepted.load(Ordering::SeqCst),
            proxy.open.load(Ordering::SeqCst)
        )
    };
    wait_until(
        "a connection per call of the first burst, one kept",
        || proxy.accepted.load(Ordering::SeqCst) >= BURST && proxy.open.load(Ordering::SeqCst) == 1,
        counts,
    )
    .await;
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), BURST);
    // Later bursts share the one left.
    for _ in 0..3 {
        burst().await;
        assert_eq!(proxy.accepted.load(Ordering::SeqCst), BURST, "{}", counts());
        assert_eq!(proxy.open.load(Ordering::SeqCst), 1, "{}", counts());
    }
}
