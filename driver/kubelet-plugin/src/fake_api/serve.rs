//! The fake API server's front ends: a `tower_test` mock service and plain HTTP/1.1 on TCP.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{FakeApi, Reply, status};

/// The mock service's response body: a JSON document, or a watch's events as they come.
#[derive(Debug)]
pub struct MockBody {
    whole: Option<Bytes>,
    events: Option<UnboundedReceiver<Value>>,
    end: Option<Pin<Box<tokio::time::Sleep>>>,
    frozen: Option<Arc<AtomicBool>>,
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(whole) = self.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        if let Some(end) = self.end.as_mut()
            && end.as_mut().poll(cx).is_ready()
        {
            self.end = None;
            // A hung server does not end its watches either.
            if !self
                .frozen
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                self.events = None;
            }
        }
        let Some(events) = self.events.as_mut() else {
            return Poll::Ready(None);
        };
        match events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
            Poll::Ready(None) => {
                self.events = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The mock pair's handle, as `FakeApi::serve_mock` serves it.
pub type MockHandle =
    tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<MockBody>>;

async fn deadline(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

impl FakeApi {
    /// A `kube::Client` (through `layer`, e.g. the driver's call timeouts) served by this state on a
    /// mock service, and the task serving it. Tests inspect and change the state between calls.
    pub fn mock_client<L>(state: Arc<Mutex<FakeApi>>, layer: &L) -> kube::Client
    where
        L: tower::Layer<
                tower_test::mock::Mock<http::Request<kube::client::Body>, http::Response<MockBody>>,
            >,
        L::Service: tower::Service<http::Request<kube::client::Body>, Response = http::Response<MockBody>>
            + Send
            + 'static,
        <L::Service as tower::Service<http::Request<kube::client::Body>>>::Future: Send + 'static,
        <L::Service as tower::Service<http::Request<kube::client::Body>>>::Error:
            Into<tower::BoxError>,
    {
        let (service, handle) = tower_test::mock::pair();
        tokio::spawn(FakeApi::serve_mock(state, handle));
        kube::client::ClientBuilder::new(layer.layer(service), "default").build()
    }

    /// Serves a `tower_test` mock handle until the client side is dropped; the state is shared so a test
    /// can inspect it (and change it) between calls. Hung requests are held, never answered.
    pub async fn serve_mock(state: Arc<Mutex<FakeApi>>, handle: MockHandle) {
        let mut handle = Box::pin(handle);
        let mut hung = Vec::new();
        while let Some((request, send)) = handle.as_mut().next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let body = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let reply = match state.lock() {
                Ok(mut api) => api.handle(&method, &uri, &body),
                Err(_) => status(500, "fake API server state poisoned"),
            };
            let (code, body) = match reply {
                Reply::Json(code, value) => (
                    code,
                    MockBody {
                        whole: Some(Bytes::from(serde_json::to_vec(&value).unwrap_or_default())),
                        events: None,
                        end: None,
                        frozen: None,
                    },
                ),
                Reply::Watch {
                    events,
                    timeout,
                    frozen,
                } => (
                    200,
                    MockBody {
                        whole: None,
                        events: Some(events),
                        end: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                        frozen: Some(frozen),
                    },
                ),
                Reply::Hang => {
                    hung.push(send);
                    continue;
                }
            };
            let response = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(body);
            if let Ok(response) = response {
                send.send_response(response);
            }
        }
    }
}

impl FakeApi {
    /// Serves plain HTTP/1.1 on `listener` (keep-alive, `content-length` or chunked request bodies), so
    /// a separate process, such as the plugin binary with a kubeconfig whose server is
    /// `http://127.0.0.1:<port>`, can use it.
    pub async fn serve_http(state: Arc<Mutex<FakeApi>>, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let _ = connection(state, stream).await;
            });
        }
    }
}

async fn connection(
    state: Arc<Mutex<FakeApi>>,
    stream: tokio::net::TcpStream,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(uri)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        let (method, uri) = (method.to_owned(), uri.to_owned());
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk).await?;
                chunk.truncate(size);
                if size == 0 {
                    break;
                }
                body.extend(chunk);
            }
        } else {
            body.resize(length.min(16 << 20), 0);
            reader.read_exact(&mut body).await?;
        }
        let (reply, latency) = match state.lock() {
            Ok(mut api) => (api.handle(&method, &uri, &body), api.get_latency),
            Err(_) => (status(500, "fake API server state poisoned"), None),
        };
        if let (Some(latency), "GET", Reply::Json(..)) = (latency, method.as_str(), &reply) {
            tokio::time::sleep(latency).await;
        }
        let stream = reader.get_mut();
        match reply {
            Reply::Json(code, value) => {
                let bytes = serde_json::to_vec(&value).unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    bytes.len()
                );
                // One write: a head and a body in two segments meet Nagle and delayed ACKs (40 ms a
                // request).
                let mut response = head.into_bytes();
                response.extend_from_slice(&bytes);
                stream.write_all(&response).await?;
            }
            Reply::Watch {
                mut events,
                timeout,
                frozen,
            } => {
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                    )
                    .await?;
                let end = deadline(timeout);
                tokio::pin!(end);
                loop {
                    tokio::select! {
                        event = events.recv() => {
                            let Some(event) = event else { break };
                            let mut line = serde_json::to_vec(&event).unwrap_or_default();
                            line.push(b'\n');
                            let mut chunk = format!("{:x}\r\n", line.len()).into_bytes();
                            chunk.extend_from_slice(&line);
                            chunk.extend_from_slice(b"\r\n");
                            stream.write_all(&chunk).await?;
                        }
                        () = &mut end => {
                            if frozen.load(Ordering::SeqCst) {
                                // A hung server does not end its watches either.
                                std::future::pending::<()>().await;
                            }
                            break;
                        }
                    }
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
            // Accepted, never answered: hold the connection.
            Reply::Hang => std::future::pending::<()>().await,
        }
    }
}

/// A kubeconfig whose only cluster is this server at `http://127.0.0.1:<port>`, without credentials.
pub fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n\
         current-context: c\n"
    )
}
