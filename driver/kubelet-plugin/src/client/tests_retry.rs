//! The retries of [`client_from_config`] against a real server on loopback (hyper's), counted by the
//! server: a 429, 503 or 504 without `Retry-After` reaches the caller at once, with its kind; one with
//! `Retry-After` is sent again after that long (plus up to 20%), at most [`MAX_RETRIES`] times, never
//! past [`RETRY_BUDGET`]; concurrent calls told to come back in a second come back apart. The same
//! through kube's own stack (an exec credential plugin in the configuration).
//!
//! The tests of the waits run on paused time (`start_paused`): the client's waits are tokio's
//! timers, the server stamps each request with tokio's clock, so a gap is the wait drawn (to the
//! timer's millisecond) however loaded the machine, and no test waits for real. The one with the
//! exec plugin runs on real time: the plugin is a process, which paused time would not wait for.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::retry::{MAX_RETRIES, RETRY_BUDGET, RETRY_JITTER};
use super::{ErrorKind, client_from_config, kind_of};

const OK: &str = r#"{"major":"1"}"#;

/// What the server answers: the first `failures` requests for each path get `status` (with
/// `Retry-After: retry_after` when given), the next ones `200`.
#[derive(Clone, Copy)]
struct Script {
    status: u16,
    retry_after: Option<&'static str>,
    failures: usize,
}

/// The requests the server saw: path and arrival (tokio's clock: virtual time on paused time).
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

async fn serve(script: Script) -> (kube::Config, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let path = request.uri().path().to_owned();
                    let earlier = {
                        let mut log = log.lock().unwrap();
                        let earlier = log.iter().filter(|(p, _)| *p == path).count();
                        log.push((path, Instant::now()));
                        earlier
                    };
                    let mut response =
                        http::Response::builder().header("content-type", "application/json");
                    let body = if earlier < script.failures {
                        response = response.status(script.status);
                        if let Some(after) = script.retry_after {
                            response = response.header("retry-after", after);
                        }
                        format!(
                            r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"come back later","code":{}}}"#,
                            script.status
                        )
                    } else {
                        OK.to_owned()
                    };
                    let response = response.body(Full::new(Bytes::from(body))).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (kube::Config::new(url.parse().unwrap()), seen)
}

fn get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(Vec::new()).unwrap()
}

/// The gaps between the requests for `path`.
fn gaps(seen: &Seen, path: &str) -> Vec<Duration> {
    let at: Vec<Instant> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, at)| *at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

fn sent(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

/// A 429, 503 or 504 that does not say when to come back goes to the caller at once, with its status
/// (kube's retries sent a 503 again 10 times and the caller saw a timeout after 10 s).
#[tokio::test]
async fn an_answer_without_retry_after_reaches_the_caller_at_once() {
    for status in [429, 503, 504] {
        let (config, seen) = serve(Script {
            status,
            retry_after: None,
            failures: usize::MAX,
        })
        .await;
        let client = client_from_config(config).unwrap();
        let start = Instant::now();
        let error = client.request_text(get("/a")).await.unwrap_err();
        assert_eq!(kind_of(&error), ErrorKind::Server(status), "{error}");
        assert_eq!(sent(&seen), 1, "{status} sent again");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}

/// Paused time fires a timer at its millisecond: a gap is the wait drawn, up to this much more.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The server says when: the call is sent again after that long, plus at most 20%.
#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_is_sent_again_after_that_long() {
    let (config, seen) = serve(Script {
        status: 503,
        retry_after: Some("1"),
        failures: 2,
    })
    .await;
    let client = client_from_config(config).unwrap();
    assert_eq!(client.request_text(get("/a")).await.unwrap(), OK);
    assert_eq!(sent(&seen), 3);
    let most = Duration::from_secs(1).mul_f64(1.0 + RETRY_JITTER) + TIMER_TICK;
    for gap in gaps(&seen, "/a") {
        assert!(gap >= Duration::from_secs(1) && gap <= most, "{gap:?}");
    }
}

/// A server that keeps asking gets [`MAX_RETRIES`] retries, then the caller its answer; one that
/// asks for longer than [`RETRY_BUDGET`] is not waited for.
#[tokio::test(start_paused = true)]
async fn retries_stop_after_three_and_before_the_calls_window_ends() {
    let (config, seen) = serve(Script {
        status: 503,
        retry_after: Some("0"),
        failures: usize::MAX,
    })
    .await;
    let client = client_from_config(config).unwrap();
    let error = client.request_text(get("/a")).await.unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Server(503), "{error}");
    assert_eq!(sent(&seen), 1 + MAX_RETRIES as usize);
    let most = super::MIN_RETRY_DELAY.mul_f64(1.0 + RETRY_JITTER) + TIMER_TICK;
    for gap in gaps(&seen, "/a") {
        assert!(gap >= super::MIN_RETRY_DELAY && gap <= most, "{gap:?}");
    }

    assert!(RETRY_BUDGET < Duration::from_secs(30));
    let (config, seen) = serve(Script {
        status: 429,
        retry_after: Some("30"),
        failures: usize::MAX,
    })
    .await;
    let client = client_from_config(config).unwrap();
    let start = Instant::now();
    let error = client.request_text(get("/a")).await.unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Server(429), "{error}");
    assert_eq!(sent(&seen), 1);
    // Virtual time: any wait for the retry would show here in full.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

/// Calls told at the same instant to come back in a second come back apart: each draws its own
/// jitter (with kube's retries all eight came back within the same millisecond).
#[tokio::test(start_paused = true)]
async fn concurrent_calls_told_to_come_back_do_not_come_back_at_once() {
    let (config, seen) = serve(Script {
        status: 503,
        retry_after: Some("1"),
        failures: 1,
    })
    .await;
    let client = client_from_config(config).unwrap();
    let paths: Vec<String> = (0..8).map(|i| format!("/c{i}")).collect();
    let calls: Vec<_> = paths
        .iter()
        .map(|path| {
            let (client, path) = (client.clone(), path.clone());
            tokio::spawn(async move { client.request_text(get(&path)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), OK);
    }
    let waits: Vec<Duration> = paths.iter().map(|path| gaps(&seen, path)[0]).collect();
    let (least, most) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    // Eight waits drawn in [1 s, 1.2 s): all within 20 ms of each other once in a million runs.
    assert!(
        *most - *least > Duration::from_millis(20),
        "retried in lockstep: {waits:?}"
    );
    assert!(*least >= Duration::from_secs(1), "{waits:?}");
    let bound = Duration::from_secs(1).mul_f64(1.0 + RETRY_JITTER) + TIMER_TICK;
    assert!(*most <= bound, "{waits:?}");
}

/// kube's own stack (an exec credential plugin in the configuration: `sh` printing a token) retries
/// the same way, not as kube does.
#[tokio::test]
async fn kubes_own_stack_retries_only_what_says_when() {
    let exec = |config: &mut kube::Config| {
        let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0ken"}}"#;
        config.auth_info.exec = Some(kube::config::ExecConfig {
            api_version: Some("client.authentication.k8s.io/v1".to_owned()),
            command: Some("sh".to_owned()),
            args: Some(vec!["-c".to_owned(), format!("echo '{credential}'")]),
            ..Default::default()
        });
    };
    let (mut config, seen) = serve(Script {
        status: 503,
        retry_after: None,
        failures: usize::MAX,
    })
    .await;
    exec(&mut config);
    let error = client_from_config(config)
        .unwrap()
        .request_text(get("/a"))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Server(503), "{error}");
    assert_eq!(sent(&seen), 1);

    let (mut config, seen) = serve(Script {
        status: 503,
        retry_after: Some("0"),
        failures: 1,
    })
    .await;
    exec(&mut config);
    let client = client_from_config(config).unwrap();
    assert_eq!(client.request_text(get("/a")).await.unwrap(), OK);
    assert_eq!(sent(&seen), 2);

    let (mut config, seen) = serve(Script {
        status: 503,
        retry_after: Some("0"),
        failures: 1,
    })
    .await;
    exec(&mut config);
    config.default_retry = false;
    let error = client_from_config(config)
        .unwrap()
        .request_text(get("/a"))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&error), ErrorKind::Server(503), "{error}");
    assert_eq!(sent(&seen), 1);
}
