//! `client_from_config` against real servers on loopback (hyper's): over HTTP/1.1 the pool's idle
//! cap; over TLS one HTTP/2 connection for the calls in flight; kube's stack kept (authentication,
//! retries of 503).

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

/// Serves `GET /version` (each answer after `delay`); the first `failures` requests get a 503.
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
async fn the_token_is_sent_and_a_503_is_retried_as_kube_does() {
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
