//! An in-memory Kubernetes API server for tests, at the HTTP level: it answers the requests the driver
//! makes (Nodes, ResourceSlices, ResourceClaims, NetworkAttachmentDefinitions) the way the real one
//! does, keeps every request in a log that tests compare exactly, and can be told to fail a request or
//! to hang.
//!
//! It is the request → [`Reply`] logic, with two front ends (module `serve`): [`FakeApi::serve_mock`]
//! behind a `tower_test` mock service (for `kube::Client::new`), and [`FakeApi::serve_http`] (in the
//! clear) or [`FakeApi::serve_https`] (TLS, HTTP/2 offered as kube-apiserver does) on a TCP port for
//! another process. Built for the driver's tests and with the `fake-api` feature.
//!
//! What it does as the real API server does (`k8s.io/apiserver`, `k8s.io/apimachinery`):
//! * every write bumps one resource-version counter; an object carries the version of its last write,
//!   a list carries the current one (`metadata.resourceVersion`);
//! * `PUT` with another `resourceVersion` than the stored one is `409 Conflict`, `POST` of an existing
//!   name is `409 AlreadyExists`, a missing object is `404`;
//! * `DELETE` of one object with `preconditions` (`uid`, `resourceVersion`) in its body is `409
//!   Conflict` when the stored object differs ("Precondition failed: UID in precondition: ...";
//!   `Preconditions.Check` in `k8s.io/apiserver/pkg/storage/interfaces.go`, made a conflict by
//!   `InterpretDeleteError` in `k8s.io/apiserver/pkg/storage/errors`);
//! * a status apply of a ResourceClaim whose `metadata.uid` is not the stored claim's (deleted and
//!   re-created under its name) is `422 Invalid`, "metadata.uid: ... field is immutable" (module
//!   `claims`);
//! * ResourceSlices take the field selectors `spec.nodeName` and `spec.driver` (and any other field
//!   path here; the real server knows `spec.nodeName`, `spec.driver`, `spec.pool.name`) on list, watch
//!   and delete-collection;
//! * `DELETE` of the collection with a field selector deletes every match: what the kubelet does at its
//!   start (`wipeResourceSlices` in `pkg/kubelet/cm/dra/plugin/dra_plugin_manager.go`:
//!   `ResourceSlices().DeleteCollection(ctx, {}, {FieldSelector: "spec.nodeName=<node>"})`);
//! * fields of a disabled feature gate are dropped from a slice on create and update
//!   (`dropDisabledFields` in `pkg/registry/resource/resourceslice/strategy.go`):
//!   [`FakeApi::disabled_device_fields`] (upstream keeps them on an update of a slice that already
//!   has them; not modelled);
//! * `?watch=true`: one JSON event a line (`{"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object":
//!   ...}`). From `resourceVersion=N`, every change after N that matches the selector, then changes as
//!   they happen; without one (or `0`), a synthetic `ADDED` for each matching object first. A deleted
//!   object comes with the version of its deletion. A version older than the kept history is answered
//!   with an `ERROR` event carrying `410 Expired` ("too old resource version"), and the stream ends, as
//!   the watch cache does. `timeoutSeconds` ends the stream after that long.
//!
//! JSON is read and written with `Value` indexing: a missing field reads as `null`, and bodies are
//! checked to be objects before fields are set.
#![allow(clippy::indexing_slicing)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

mod claims;
mod serve;
pub use serve::{FakeTls, FakeTlsError, MockBody, kubeconfig};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET`, `POST`, `PUT`, `DELETE`, `PATCH`.
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// When it arrived (tokio's clock, so paused-time tests can check retry delays).
    pub at: tokio::time::Instant,
}

impl Logged {
    /// `"PUT /apis/.../name"`, without the query.
    pub fn short(&self) -> String {
        let path = self.uri.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method)
    }

    /// Whether this is a watch (`?watch=true`).
    pub fn is_watch(&self) -> bool {
        query(&self.uri)
            .iter()
            .any(|(k, v)| k == "watch" && v == "true")
    }
}

const SLICES: &str = "/apis/resource.k8s.io/v1/resourceslices";
const CLAIMS: &str = "/apis/resource.k8s.io/v1/namespaces/";
const NODES: &str = "/api/v1/nodes/";
const NADS: &str = "/apis/k8s.cni.cncf.io/v1/namespaces/";
/// How many changes are kept for watches that resume from a resource version.
const HISTORY: usize = 1000;

/// How the server answers a request.
#[derive(Debug)]
pub enum Reply {
    /// A status and a JSON body.
    Json(u16, Value),
    /// A watch stream: `200`, then each event as a line, until `timeout` or the server drops it.
    Watch {
        /// Events (`{"type", "object"}`), in order.
        events: UnboundedReceiver<Value>,
        /// The request's `timeoutSeconds`.
        timeout: Option<Duration>,
        /// Set when the server hangs: the stream then never ends, not even at `timeout`.
        frozen: Arc<AtomicBool>,
    },
    /// No answer, ever (a hung API server).
    Hang,
}

impl Reply {
    /// The status, for a JSON reply.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Json(code, _) => Some(*code),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Watcher {
    selector: Vec<(String, String)>,
    events: UnboundedSender<Value>,
    frozen: Arc<AtomicBool>,
}

/// etcd's revision, the source of resource versions: it starts at 1, so a list of an empty server has
/// `resourceVersion: "1"`, never `"0"` (which a watch reads as "from any version", without the history).
#[derive(Debug)]
struct Revision(u64);

impl Default for Revision {
    fn default() -> Self {
        Revision(1)
    }
}

/// The server's state: objects by kind and name, a resource-version counter, the request log.
#[derive(Debug, Default)]
pub struct FakeApi {
    /// Node name → uid.
    pub nodes: BTreeMap<String, String>,
    /// Node name → its `InternalIP` addresses (`status.addresses`).
    pub node_ips: BTreeMap<String, Vec<String>>,
    /// ResourceSlices by name. Changed through requests, so that watches see the changes.
    pub slices: BTreeMap<String, Value>,
    /// ResourceClaims by `namespace/name`.
    pub claims: BTreeMap<String, Value>,
    /// NetworkAttachmentDefinitions (`k8s.cni.cncf.io/v1`) by `namespace/name`: read only.
    pub nads: BTreeMap<String, Value>,
    /// Every request, in order.
    pub log: Vec<Logged>,
    /// Requests (by [`Logged::short`]) to answer with this status once, e.g. a 409 conflict; an entry
    /// per failure.
    pub fail_once: Vec<(String, u16)>,
    /// Device fields the server drops from slices it stores, as it does for a feature gate that is off
    /// (`allowMultipleAllocations` without `DRAConsumableCapacity`, `taints` without `DRADeviceTaints`).
    pub disabled_device_fields: Vec<String>,
    /// How long the HTTP front end waits before answering each GET that is not a watch, as a
    /// loaded or distant API server would (benchmarks). The state is not locked meanwhile, so
    /// concurrent GETs wait side by side.
    pub get_latency: Option<std::time::Duration>,
    /// The minor version `/version` answers (1.`minor`); `None` is 34.
    pub server_minor: Option<u32>,
    /// TCP connections the TCP front ends accepted.
    pub connections: usize,
    version: Revision,
    /// Changes to slices: (resource version, event), oldest first.
    history: VecDeque<(u64, Value)>,
    /// Versions up to this one are no longer in `history`.
    compacted: u64,
    watchers: Vec<Watcher>,
    /// Watches open when the server hung: never written to again.
    frozen: Vec<Watcher>,
    hung: bool,
}

impl FakeApi {
    /// A server that knows the node `name`.
    pub fn with_node(name: &str) -> Self {
        let mut api = FakeApi::default();
        api.nodes.insert(name.to_owned(), format!("uid-{name}"));
        api
    }

    /// Makes the server hang (`true`): it accepts requests and never answers, and open watches go
    /// silent for good; or answer again (`false`) new requests.
    pub fn set_hung(&mut self, hung: bool) {
        self.hung = hung;
        if hung {
            for watcher in &self.watchers {
                watcher.frozen.store(true, Ordering::SeqCst);
            }
            self.frozen.append(&mut self.watchers);
        }
    }

    /// Ends every open watch, as a restarting API server does.
    pub fn end_watches(&mut self) {
        self.watchers.clear();
    }

    /// Forgets the history of changes, as etcd's compaction does: a watch from an older version gets
    /// `410 Expired`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.version.0;
    }

    /// Answers one request.
    pub fn handle(&mut self, method: &str, uri: &str, body: &[u8]) -> Reply {
        let logged = Logged {
            method: method.to_owned(),
            uri: uri.to_owned(),
            at: tokio::time::Instant::now(),
        };
        let short = logged.short();
        self.log.push(logged);
        if self.hung {
            return Reply::Hang;
        }
        if let Some(i) = self.fail_once.iter().position(|(r, _)| *r == short) {
            let (_, code) = self.fail_once.remove(i);
            return status(code, "injected failure");
        }
        let (path, _) = uri.split_once('?').unwrap_or((uri, ""));
        let params = query(uri);
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if path == "/version" && method == "GET" {
            let minor = self.server_minor.unwrap_or(34);
            return Reply::Json(
                200,
                json!({"major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0"), "gitCommit": "",
                       "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "",
                       "platform": "linux/amd64"}),
            );
        }
        if let Some(name) = path.strip_prefix(NODES) {
            return match (method, self.nodes.get(name)) {
                ("GET", Some(uid)) => {
                    let addresses: Vec<Value> = self
                        .node_ips
                        .get(name)
                        .into_iter()
                        .flatten()
                        .map(|ip| json!({"type": "InternalIP", "address": ip}))
                        .collect();
                    Reply::Json(
                        200,
                        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": uid},
                               "status": {"addresses": addresses}}),
                    )
                }
                _ => not_found("", "nodes", name),
            };
        }
        if let Some(rest) = path.strip_prefix(SLICES) {
            let name = rest.strip_prefix('/');
            let watch = params.iter().any(|(k, v)| k == "watch" && v == "true");
            return match (method, name) {
                ("GET", None) if watch => self.watch_slices(&params),
                ("GET", None) => self.list_slices(&params),
                ("POST", None) => self.create_slice(body),
                ("DELETE", None) => self.delete_slices(&params),
                (_, Some(name)) => {
                    let name = name.to_owned();
                    self.slice_by_name(method, &name, body)
                }
                _ => status(405, "method not allowed"),
            };
        }
        if let Some(rest) = path.strip_prefix(CLAIMS)
            && let Some(reply) = self.claim_request(method, rest, &body)
        {
            return reply;
        }
        if let Some(rest) = path.strip_prefix(NADS)
            && let [namespace, "network-attachment-definitions", name] =
                rest.split('/').collect::<Vec<_>>().as_slice()
        {
            return match (method, self.nads.get(&format!("{namespace}/{name}"))) {
                ("GET", Some(nad)) => Reply::Json(200, nad.clone()),
                ("GET", None) => status(
                    404,
                    &format!("network-attachment-definitions.k8s.cni.cncf.io \"{name}\" not found"),
                ),
                _ => status(405, "method not allowed"),
            };
        }
        status(404, "the server could not find the requested resource")
    }

    /// Stores a NetworkAttachmentDefinition `namespace/name` whose `spec.config` is `config`.
    pub fn add_nad(&mut self, namespace: &str, name: &str, config: &str) {
        let version = self.next_version();
        self.nads.insert(
            format!("{namespace}/{name}"),
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": name, "namespace": namespace,
                                "resourceVersion": version.to_string(), "uid": format!("uid-nad-{name}")},
                   "spec": {"config": config}}),
        );
    }

    fn next_version(&mut self) -> u64 {
        self.version.0 += 1;
        self.version.0
    }

    /// Records a change to a slice and sends it to the watches it matches.
    fn emit(&mut self, kind: &str, object: &Value) {
        let event = json!({"type": kind, "object": object});
        self.history.push_back((self.version.0, event.clone()));
        while self.history.len() > HISTORY {
            if let Some((version, _)) = self.history.pop_front() {
                self.compacted = version;
            }
        }
        self.watchers
            .retain(|w| !matches(&w.selector, object) || w.events.send(event.clone()).is_ok());
    }

    fn matching(&self, selector: &[(String, String)]) -> Vec<Value> {
        self.slices
            .values()
            .filter(|s| matches(selector, s))
            .cloned()
            .collect()
    }

    fn list_slices(&mut self, params: &[(String, String)]) -> Reply {
        let items = self.matching(&selector(params));
        let version = self.version.0.to_string();
        Reply::Json(
            200,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                   "metadata": {"resourceVersion": version}, "items": items}),
        )
    }

    fn watch_slices(&mut self, params: &[(String, String)]) -> Reply {
        let selector = selector(params);
        let timeout = param(params, "timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        let (sender, events) = unbounded_channel();
        let frozen = Arc::new(AtomicBool::new(false));
        let from = param(params, "resourceVersion").filter(|v| !v.is_empty() && *v != "0");
        match from.map(str::parse::<u64>) {
            None => {
                for object in self.matching(&selector) {
                    let _ = sender.send(json!({"type": "ADDED", "object": object}));
                }
            }
            Some(Err(_)) => return status(400, "invalid resourceVersion"),
            Some(Ok(from)) if from < self.compacted => {
                let gone = status_body(
                    410,
                    &format!("too old resource version: {from} ({})", self.compacted + 1),
                );
                let _ = sender.send(json!({"type": "ERROR", "object": gone}));
                return Reply::Watch {
                    events,
                    timeout,
                    frozen,
                };
            }
            Some(Ok(from)) => {
                for (_, event) in self.history.iter().filter(|(v, _)| *v > from) {
                    if matches(&selector, &event["object"]) {
                        let _ = sender.send(event.clone());
                    }
                }
            }
        }
        self.watchers.push(Watcher {
            selector,
            events: sender,
            frozen: frozen.clone(),
        });
        Reply::Watch {
            events,
            timeout,
            frozen,
        }
    }

    fn create_slice(&mut self, mut body: Value) -> Reply {
        if !body["metadata"].is_object() {
            return status(400, "a ResourceSlice object is required");
        }
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "metadata.name is required");
        };
        if self.slices.contains_key(&name) {
            return status(409, &format!("resourceslices \"{name}\" already exists"));
        }
        self.drop_disabled(&mut body);
        let version = self.next_version();
        body["metadata"]["resourceVersion"] = json!(version.to_string());
        body["metadata"]["uid"] = json!(format!("uid-{name}-{version}"));
        self.slices.insert(name, body.clone());
        self.emit("ADDED", &body);
        Reply::Json(201, body)
    }

    fn drop_disabled(&self, slice: &mut Value) {
        if let Some(devices) = slice["spec"]["devices"].as_array_mut() {
            for device in devices.iter_mut().filter_map(Value::as_object_mut) {
                for field in &self.disabled_device_fields {
                    device.remove(field);
                }
            }
        }
    }

    fn remove_slice(&mut self, name: &str) -> Option<Value> {
        let mut removed = self.slices.remove(name)?;
        let version = self.next_version();
        removed["metadata"]["resourceVersion"] = json!(version.to_string());
        self.emit("DELETED", &removed);
        Some(removed)
    }

    fn delete_slices(&mut self, params: &[(String, String)]) -> Reply {
        let names: Vec<String> = self
            .matching(&selector(params))
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let items: Vec<Value> = names.iter().filter_map(|n| self.remove_slice(n)).collect();
        let version = self.version.0.to_string();
        Reply::Json(
            200,
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                   "metadata": {"resourceVersion": version}, "items": items}),
        )
    }

    fn delete_slice(&mut self, name: &str) -> Reply {
        match self.remove_slice(name) {
            Some(removed) => Reply::Json(200, removed),
            None => not_found("resource.k8s.io", "resourceslices", name),
        }
    }

    fn slice_by_name(&mut self, method: &str, name: &str, mut body: Value) -> Reply {
        let Some(stored) = self.slices.get(name).cloned() else {
            return not_found("resource.k8s.io", "resourceslices", name);
        };
        match method {
            "GET" => Reply::Json(200, stored),
            "DELETE" => {
                if let Some(failed) = precondition_failed(&body["preconditions"], &stored) {
                    return status(
                        409,
                        &format!(
                            "Operation cannot be fulfilled on resourceslices \"{name}\": {failed}"
                        ),
                    );
                }
                self.delete_slice(name)
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
                self.drop_disabled(&mut body);
                body["metadata"]["resourceVersion"] = json!(self.next_version().to_string());
                body["metadata"]["uid"] = stored["metadata"]["uid"].clone();
                self.slices.insert(name.to_owned(), body.clone());
                self.emit("MODIFIED", &body);
                Reply::Json(200, body)
            }
            _ => status(405, "method not allowed"),
        }
    }
}

/// The query's parameters, percent-decoded.
fn query(uri: &str) -> Vec<(String, String)> {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `fieldSelector=a.b=x,c=y` as (`a.b`, `x`), (`c`, `y`).
fn selector(params: &[(String, String)]) -> Vec<(String, String)> {
    param(params, "fieldSelector")
        .unwrap_or_default()
        .split(',')
        .filter_map(|term| term.split_once('='))
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
        .collect()
}

fn matches(selector: &[(String, String)], object: &Value) -> bool {
    selector.iter().all(|(field, value)| {
        let mut v = object;
        for p in field.split('.') {
            v = &v[p];
        }
        v.as_str() == Some(value.as_str())
    })
}

fn status_body(code: u16, message: &str) -> Value {
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        _ => "InternalError",
    };
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status(code: u16, message: &str) -> Reply {
    Reply::Json(code, status_body(code, message))
}

/// The API server's 404 for a missing object (`NewNotFound` in apimachinery's
/// `pkg/api/errors/errors.go`): its message, and details naming the object, which a 404 for a path
/// the server does not serve lacks.
fn not_found(group: &str, resource: &str, name: &str) -> Reply {
    let qualified = match group {
        "" => resource.to_owned(),
        group => format!("{resource}.{group}"),
    };
    let mut body = status_body(404, &format!("{qualified} \"{name}\" not found"));
    body["details"] = json!({"name": name, "group": group, "kind": resource});
    Reply::Json(404, body)
}

/// Why `preconditions` (a `DeleteOptions.preconditions` object, or `null`) do not hold for `stored`,
/// in upstream's words; `None` when they hold or there are none.
fn precondition_failed(preconditions: &Value, stored: &Value) -> Option<String> {
    let uid = &stored["metadata"]["uid"];
    let version = &stored["metadata"]["resourceVersion"];
    if let Some(want) = preconditions["uid"]
        .as_str()
        .filter(|w| Some(*w) != uid.as_str())
    {
        let have = uid.as_str().unwrap_or_default();
        return Some(format!(
            "Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
        ));
    }
    if let Some(want) = preconditions["resourceVersion"]
        .as_str()
        .filter(|w| Some(*w) != version.as_str())
    {
        let have = version.as_str().unwrap_or_default();
        return Some(format!(
            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"
        ));
    }
    None
}
