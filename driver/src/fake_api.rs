//! An in-memory Kubernetes API server for tests, at the HTTP level: it answers the requests the driver
//! makes (Nodes, ResourceSlices, ResourceClaims) the way the real one does, keeps every request in a
//! log that tests compare exactly, and can be told to fail a request.
//!
//! It is the request → response logic, with two front ends: [`FakeApi::serve_mock`] behind a
//! `tower_test` mock service (for `kube::Client::new`), and [`FakeApi::serve_http`] on a TCP port for
//! another process. Built for the driver's tests and with the `fake-api` feature.
//!
//! JSON is read and written with `Value` indexing: a missing field reads as `null`, and bodies are
//! checked to be objects before fields are set.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET`, `POST`, `PUT`, `DELETE`, `PATCH`.
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
}

impl Logged {
    /// `"PUT /apis/.../name"`, without the query.
    pub fn short(&self) -> String {
        let path = self.uri.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method)
    }
}

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
const CLAIMS: &str = "/apis/resource.k8s.io/v1/namespaces/";
const NODES: &str = "/api/v1/nodes/";

/// The server's state: objects by kind and name, a resource-version counter, the request log.
#[derive(Debug, Default)]
pub struct FakeApi {
    /// Node name → uid.
    pub nodes: BTreeMap<String, String>,
    /// ResourceSlices by name.
    pub slices: BTreeMap<String, Value>,
    /// ResourceClaims by `namespace/name`.
    pub claims: BTreeMap<String, Value>,
    /// Every request, in order.
    pub log: Vec<Logged>,
    /// Requests (by [`Logged::short`]) to answer with this status once, e.g. a 409 conflict.
    pub fail_once: Vec<(String, u16)>,
    version: u64,
}

impl FakeApi {
    /// A server that knows the node `name`.
    pub fn with_node(name: &str) -> Self {
        let mut api = FakeApi::default();
        api.nodes.insert(name.to_owned(), format!("uid-{name}"));
        api
    }

    /// Answers one request: status and JSON body.
    pub fn handle(&mut self, method: &str, uri: &str, body: &[u8]) -> (u16, Value) {
        let logged = Logged {
            method: method.to_owned(),
            uri: uri.to_owned(),
        };
        let short = logged.short();
        self.log.push(logged);
        if let Some(i) = self.fail_once.iter().position(|(r, _)| *r == short) {
            let (_, code) = self.fail_once.remove(i);
            return status(code, "injected failure");
        }
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if path == "/version" && method == "GET" {
            return (
                200,
                json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "",
                       "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "",
                       "platform": "linux/amd64"}),
            );
        }
        if let Some(name) = path.strip_prefix(NODES) {
            return match (method, self.nodes.get(name)) {
                ("GET", Some(uid)) => (
                    200,
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": uid}}),
                ),
                _ => status(404, &format!("nodes \"{name}\" not found")),
            };
        }
        if let Some(rest) = path.strip_prefix(SLICES) {
            let name = rest.strip_prefix('/');
            return match (method, name) {
                ("GET", None) => self.list_slices(query),
                ("POST", None) => self.create_slice(body),
                (_, Some(name)) => {
                    let name = name.to_owned();
                    self.slice_by_name(method, &name, body)
                }
                _ => status(405, "method not allowed"),
            };
        }
        if let Some(rest) = path.strip_prefix(CLAIMS) {
            // namespaces/<ns>/resourceclaims/<name>[/status]
            let parts: Vec<&str> = rest.split('/').collect();
            if let [namespace, "resourceclaims", name, "status"] = parts.as_slice() {
                let key = format!("{namespace}/{name}");
                let Some(claim) = self.claims.get_mut(&key) else {
                    return status(404, &format!("resourceclaims \"{name}\" not found"));
                };
                if method != "PATCH" || !body["status"].is_object() {
                    return status(400, "a PATCH with a status is expected");
                }
                // Server-side apply by one field manager: its list replaces what it owned.
                claim["status"]["devices"] = body["status"]["devices"].clone();
                return (200, claim.clone());
            }
            if let [namespace, "resourceclaims", name] = parts.as_slice() {
                let key = format!("{namespace}/{name}");
                return match (method, self.claims.get(&key)) {
                    ("GET", Some(claim)) => (200, claim.clone()),
                    _ => status(404, &format!("resourceclaims \"{name}\" not found")),
                };
            }
        }
        status(404, "the server could not find the requested resource")
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn list_slices(&mut self, query: &str) -> (u16, Value) {
        let selector = query
            .split('&')
            .find_map(|p| p.strip_prefix("fieldSelector="))
            .map(|s| {
                s.replace("%3D", "=")
                    .replace("%2C", ",")
                    .replace("%2F", "/")
            })
            .unwrap_or_default();
        let wanted: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|term| term.split_once('='))
            .collect();
        let items: Vec<Value> = self
            .slices
            .values()
            .filter(|s| {
                wanted.iter().all(|(field, value)| {
                    let path: Vec<&str> = field.split('.').collect();
                    let mut v = *s;
                    for p in &path {
                        v = &v[*p];
                    }
                    v.as_str() == Some(*value)
                })
            })
            .cloned()
            .collect();
        let version = self.version.to_string();
        (
            200,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                   "metadata": {"resourceVersion": version}, "items": items}),
        )
    }

    fn create_slice(&mut self, mut body: Value) -> (u16, Value) {
        if !body["metadata"].is_object() {
            return status(400, "a ResourceSlice object is required");
        }
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "metadata.name is required");
        };
        if self.slices.contains_key(&name) {
            return status(409, &format!("resourceslices \"{name}\" already exists"));
        }
        body["metadata"]["resourceVersion"] = json!(self.next_version());
        body["metadata"]["uid"] = json!(format!("uid-{name}"));
        self.slices.insert(name, body.clone());
        (201, body)
    }

    fn slice_by_name(&mut self, method: &str, name: &str, mut body: Value) -> (u16, Value) {
        let Some(stored) = self.slices.get(name).cloned() else {
            return status(404, &format!("resourceslices \"{name}\" not found"));
        };
        match method {
            "GET" => (200, stored),
            "DELETE" => {
                self.slices.remove(name);
                (200, stored)
            }
            "PUT" => {
                if !body["metadata"].is_object() {
                    return status(400, "a ResourceSlice object is required");
                }
                if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                    return status(
                        409,
                        &format!(
                            "Operation cannot be fulfilled on resourceslices \"{name}\": the object has been modified"
                        ),
                    );
                }
                body["metadata"]["resourceVersion"] = json!(self.next_version());
                body["metadata"]["uid"] = stored["metadata"]["uid"].clone();
                self.slices.insert(name.to_owned(), body.clone());
                (200, body)
            }
            _ => status(405, "method not allowed"),
        }
    }

    /// Serves a `tower_test` mock handle until the client side is dropped; the state is shared so a test
    /// can inspect it (and change it) between calls.
    pub async fn serve_mock(
        state: std::sync::Arc<std::sync::Mutex<FakeApi>>,
        handle: tower_test::mock::Handle<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >,
    ) {
        let mut handle = Box::pin(handle);
        while let Some((request, send)) = handle.as_mut().next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let body = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let (code, value) = match state.lock() {
                Ok(mut api) => api.handle(&method, &uri, &body),
                Err(_) => status(500, "fake API server state poisoned"),
            };
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            let response = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(bytes));
            if let Ok(response) = response {
                send.send_response(response);
            }
        }
    }
}

fn status(code: u16, message: &str) -> (u16, Value) {
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    };
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApi {
    /// Serves plain HTTP/1.1 on `listener` (keep-alive, `content-length` or chunked request bodies), so
    /// a separate process, such as the plugin binary with a kubeconfig whose server is
    /// `http://127.0.0.1:<port>`, can use it.
    pub async fn serve_http(
        state: std::sync::Arc<std::sync::Mutex<FakeApi>>,
        listener: tokio::net::TcpListener,
    ) {
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
    state: std::sync::Arc<std::sync::Mutex<FakeApi>>,
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
        let (code, value) = match state.lock() {
            Ok(mut api) => api.handle(&method, &uri, &body),
            Err(_) => status(500, "fake API server state poisoned"),
        };
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            bytes.len()
        );
        // One write: a head and a body in two segments meet Nagle and delayed ACKs (40 ms a request).
        let mut response = head.into_bytes();
        response.extend_from_slice(&bytes);
        reader.get_mut().write_all(&response).await?;
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
