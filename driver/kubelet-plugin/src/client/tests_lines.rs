//! [`LineLimited`](super::LineLimited) on the plugin's client against a real server on loopback
//! (hyper's): a read and a watch whose body never breaks its line fail with [`ErrorKind::Other`]
//! after the limit instead of growing the plugin's memory, while a watch of many short lines
//! passes more bytes in all than the limit; both through kube's stack and through kube's own
//! (the proxy / exec credential path).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body::Frame;
use http_body_util::StreamBody;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, WatchEvent, WatchParams};

use super::{ErrorKind, kind_of, line_limit::is_line_too_long};

/// The limit in these tests.
const LIMIT: usize = 64 << 10;

/// Without the limit the calls below would read for ever (until the memory runs out).
const ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// A watch event line of about 1 KiB.
fn event(n: usize) -> Bytes {
    let padding = "x".repeat(900);
    Bytes::from(format!(
        r#"{{"type":"ADDED","object":{{"apiVersion":"resource.k8s.io/v1","kind":"ResourceSlice","metadata":{{"name":"s{n}","annotations":{{"pad":"{padding}"}}}},"spec":{{"driver":"d","pool":{{"name":"p","generation":1,"resourceSliceCount":1}},"nodeName":"n"}}}}}}
"#
    ))
}

/// Serves every request with `lines` short lines, then (when `endless`) bytes without a break for
/// ever, in 8 KiB chunks.
async fn serve(lines: usize, endless: bool) -> kube::Config {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(move |_: http::Request<hyper::body::Incoming>| async move {
                        let head = (0..lines).map(event);
                        let tail = std::iter::repeat_with(|| Bytes::from(vec![b'a'; 8 << 10]))
                            .take_while(move |_| endless);
                        let frames = head
                            .chain(tail)
                            .map(|data| Ok::<_, Infallible>(Frame::data(data)));
                        let body = StreamBody::new(tokio_stream::iter(frames));
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    kube::Config::new(url.parse().unwrap())
}

fn client(config: kube::Config) -> kube::Client {
    super::client_with(
        config,
        super::HTTP2_PING_INTERVAL,
        super::HTTP2_PING_TIMEOUT,
        LIMIT,
    )
    .unwrap()
}

fn get() -> http::Request<Vec<u8>> {
    http::Request::get("/version").body(Vec::new()).unwrap()
}

/// Reads the watch to its end or first error: the names of the slices seen, and the error.
async fn watch(client: kube::Client) -> (usize, Option<kube::Error>) {
    let api: Api<ResourceSlice> = Api::all(client);
    let mut events = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut seen = 0;
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Added(_)) => seen += 1,
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(error) => return (seen, Some(error)),
        }
    }
    (seen, None)
}

#[tokio::test]
async fn a_read_whose_body_never_breaks_its_line_fails_after_the_limit() {
    let client = client(serve(0, true).await);
    let error = tokio::time::timeout(ENDS_WITHIN, client.request_text(get()))
        .await
        .expect("the read ends")
        .unwrap_err();
    assert!(is_line_too_long(&error), "{error:?}");
    assert_eq!(kind_of(&error), ErrorKind::Other, "{error}");
}

#[tokio::test]
async fn a_watch_passes_more_than_the_limit_in_short_lines_then_fails_on_an_endless_one() {
    // 200 lines of about 1 KiB: three times the limit in all.
    let (seen, error) = watch(client(serve(200, false).await)).await;
    assert_eq!(seen, 200);
    assert!(error.is_none(), "{error:?}");

    let (seen, error) = tokio::time::timeout(ENDS_WITHIN, watch(client(serve(200, true).await)))
        .await
        .expect("the watch ends");
    assert_eq!(seen, 200);
    let error = error.expect("the endless line ends the watch with an error");
    assert!(is_line_too_long(&error), "{error:?}");
    assert_eq!(kind_of(&error), ErrorKind::Other, "{error}");
}

#[tokio::test]
async fn kubes_own_stack_is_limited_too() {
    // An exec credential plugin in the configuration: the client is kube's own stack. The plugin
    // here is `sh` printing a token.
    let mut config = serve(0, true).await;
    let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0ken"}}"#;
    config.auth_info.exec = Some(kube::config::ExecConfig {
        api_version: Some("client.authentication.k8s.io/v1".to_owned()),
        command: Some("sh".to_owned()),
        args: Some(vec!["-c".to_owned(), format!("echo '{credential}'")]),
        ..Default::default()
    });
    let error = tokio::time::timeout(ENDS_WITHIN, client(config).request_text(get()))
        .await
        .expect("the read ends")
        .unwrap_err();
    assert!(is_line_too_long(&error), "{error:?}");
    assert_eq!(kind_of(&error), ErrorKind::Other, "{error}");
}
