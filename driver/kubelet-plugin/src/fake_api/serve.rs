//! The fake API server's front ends: a `tower_test` mock service, and hyper's HTTP/1.1 and HTTP/2 on
//! TCP, in the clear or over TLS.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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

    /// A JSON document's exact length, so HTTP/1.1 answers carry `content-length` as the real
    /// server's do; a watch's is unknown (chunked).
    fn size_hint(&self) -> http_body::SizeHint {
        match (&self.whole, &self.events) {
            (Some(whole), None) => http_body::SizeHint::with_exact(whole.len() as u64),
            (None, None) => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none() && self.events.is_none()
    }

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
            match response_of(reply) {
                Some(response) => send.send_response(response),
                None => hung.push(send),
            }
        }
    }
}

impl FakeApi {
    /// Serves HTTP/1.1 (and HTTP/2 with prior knowledge) in the clear on `listener`, so a separate
    /// process, such as the plugin binary with a kubeconfig from [`kubeconfig`], can use it.
    pub async fn serve_http(state: Arc<Mutex<FakeApi>>, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            count_connection(&state);
            tokio::spawn(serve_connection(state.clone(), stream));
        }
    }

    /// Serves HTTPS on `listener` with `tls`'s certificate, offering HTTP/2 and HTTP/1.1 (ALPN `h2`,
    /// `http/1.1`) as kube-apiserver does; a kubeconfig for it is [`FakeTls::kubeconfig`].
    pub async fn serve_https(
        state: Arc<Mutex<FakeApi>>,
        listener: tokio::net::TcpListener,
        tls: FakeTls,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            count_connection(&state);
            let (state, acceptor) = (state.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve_connection(state, stream).await;
                }
            });
        }
    }
}

fn count_connection(state: &Mutex<FakeApi>) {
    if let Ok(mut api) = state.lock() {
        api.connections += 1;
    }
}

/// One connection, by hyper: HTTP/1.1 or HTTP/2, whichever the client speaks.
async fn serve_connection<S>(state: Arc<Mutex<FakeApi>>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let service = hyper::service::service_fn(move |request| respond(state.clone(), request));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The largest request body read; a larger one (or one that breaks off) is answered with a 413.
const MAX_BODY: usize = 16 << 20;

/// Answers one request from the state: after [`FakeApi::get_latency`] for a GET that is not a watch,
/// never for a [`Reply::Hang`].
async fn respond(
    state: Arc<Mutex<FakeApi>>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<MockBody>, Infallible> {
    use http_body_util::BodyExt as _;
    let method = request.method().to_string();
    // HTTP/2 requests carry the whole URI; the state knows paths.
    let uri = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body = http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes());
    let (reply, latency) = match (body, state.lock()) {
        (Ok(body), Ok(mut api)) => (api.handle(&method, &uri, &body), api.get_latency),
        (Err(_), _) => (status(413, "request body over 16 MiB or broken off"), None),
        (_, Err(_)) => (status(500, "fake API server state poisoned"), None),
    };
    if let (Some(latency), "GET", Reply::Json(..)) = (latency, method.as_str(), &reply) {
        tokio::time::sleep(latency).await;
    }
    match response_of(reply) {
        Some(response) => Ok(response),
        // Accepted, never answered: hold the stream (and, in HTTP/1.1, its connection).
        None => std::future::pending().await,
    }
}

/// The response to `reply`; `None` for [`Reply::Hang`].
fn response_of(reply: Reply) -> Option<http::Response<MockBody>> {
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
        Reply::Hang => return None,
    };
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(body)
        .ok()
}

/// TLS for [`FakeApi::serve_https`]: a CA, and a certificate for `127.0.0.1` and `localhost` signed
/// by it, both made when this is (rcgen, ECDSA P-256); the server offers ALPN `h2` then `http/1.1`.
#[derive(Clone)]
pub struct FakeTls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

/// Why [`FakeTls::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FakeTlsError {
    /// Making a key or a certificate.
    #[error("making the fake API server's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused them.
    #[error("the fake API server's TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl FakeTls {
    /// A new CA and server certificate.
    pub fn new() -> Result<Self, FakeTlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fake API server CA");
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut server = CertificateParams::new(["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "fake API server");
        let certificate = server.signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(FakeTls {
            ca_pem,
            config: Arc::new(config),
        })
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig whose only cluster is the server at `https://127.0.0.1:<port>`, trusting this CA,
    /// without credentials.
    pub fn kubeconfig(&self, port: u16) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        config_with(
            &format!("https://127.0.0.1:{port}"),
            &format!("\n    certificate-authority-data: {ca}"),
        )
    }
}

/// A kubeconfig whose only cluster is this server at `http://127.0.0.1:<port>`, without credentials.
pub fn kubeconfig(port: u16) -> String {
    config_with(&format!("http://127.0.0.1:{port}"), "")
}

fn config_with(server: &str, cluster_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}{cluster_extra}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n\
         current-context: c\n"
    )
}
