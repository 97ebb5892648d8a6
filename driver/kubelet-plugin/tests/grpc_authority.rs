//! Every `:authority` a real client sends on a Unix socket reaches the plugin's services: the
//! percent-encoded socket path of the kubelet's plugin watcher (grpc-go with a bare path target) and
//! Python grpcio, a raw path, `localhost` (grpc-go's `unix:` targets, the kubelet's DRA client), an
//! empty value, and none. The client here writes HTTP/2 frames itself, so it sends exactly these
//! values, which no HTTP library's client lets a caller do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod grpc_support;

use std::path::Path;

use dra_kubelet_plugin::grpc::pluginregistration::{InfoRequest, PluginInfo};
use dra_kubelet_plugin::grpc::{HealthService, v1};
use dra_kubelet_plugin::handler::{DeviceHealth, HealthReport, HealthStatus};
use grpc_support::{DRIVER, Plugin, WAIT};
use loona_hpack::{Decoder, Encoder};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// The socket path as grpc-go's passthrough resolver puts it in `:authority`: every byte outside
/// RFC 3986's unreserved set percent-encoded (so `/` is `%2F`).
fn percent_encoded(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend(format!("%{b:02X}").into_bytes());
        }
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How a call ended, as the client saw it (the codes are shown when a test fails).
#[derive(Debug)]
#[allow(dead_code)]
enum Outcome {
    /// `grpc-status` from the trailers and the response message.
    Answered { status: String, message: Vec<u8> },
    /// The server reset the stream (`RST_STREAM`) with this error code.
    Reset(u32),
    /// The server closed the connection (`GOAWAY`) with this error code.
    GoAway(u32),
}

/// Calls `method` on the socket at `socket` with a request header block carrying `authority` (or
/// none), as one unary gRPC call on a new connection.
async fn call(socket: &Path, authority: Option<&[u8]>, method: &str, request: &[u8]) -> Outcome {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", method.as_bytes()),
    ];
    if let Some(authority) = authority {
        fields.push((b":authority", authority));
    }
    fields.extend([
        (&b"content-type"[..], &b"application/grpc"[..]),
        (b"te", b"trailers"),
    ]);
    let block = Encoder::new().encode(fields);
    let mut message = vec![0u8];
    message.extend_from_slice(&(request.len() as u32).to_be_bytes());
    message.extend_from_slice(request);

    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out.extend(frame(DATA, END_STREAM, 1, &message));
    stream.write_all(&out).await.unwrap();

    let mut decoder = Decoder::new();
    let mut body = Vec::new();
    let mut status = None;
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).await.is_err() {
            panic!("the server closed the connection without an answer");
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let id = u32::from_be_bytes([header[5] & 0x7f, header[6], header[7], header[8]]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        match kind {
            SETTINGS if flags & ACK == 0 => {
                stream
                    .write_all(&frame(SETTINGS, ACK, 0, &[]))
                    .await
                    .unwrap();
            }
            RST_STREAM if id == 1 => {
                return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            GOAWAY => {
                return Outcome::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
            HEADERS if id == 1 => {
                assert_ne!(
                    flags & END_HEADERS,
                    0,
                    "the server sends small header blocks"
                );
                for (name, value) in decoder.decode(&payload).unwrap() {
                    if name == b"grpc-status" {
                        status = Some(String::from_utf8(value).unwrap());
                    }
                }
            }
            DATA if id == 1 => body.extend_from_slice(&payload),
            _ => {}
        }
        if id == 1 && flags & END_STREAM != 0 && matches!(kind, HEADERS | DATA) {
            let message = body.get(5..).unwrap_or_default().to_vec();
            return Outcome::Answered {
                status: status.expect("trailers carry grpc-status"),
                message,
            };
        }
    }
}

/// The authorities real clients send, by who sends them.
fn authorities(socket: &Path) -> Vec<(&'static str, Option<Vec<u8>>)> {
    vec![
        (
            "percent-encoded path (kubelet plugin watcher, grpcio)",
            Some(percent_encoded(socket)),
        ),
        (
            "raw path",
            Some(socket.as_os_str().as_encoded_bytes().to_vec()),
        ),
        (
            "localhost (grpc-go unix: targets)",
            Some(b"localhost".to_vec()),
        ),
        ("empty", Some(Vec::new())),
        ("none", None),
    ]
}

#[tokio::test]
async fn get_info_answers_every_authority_a_client_sends() {
    let plugin = Plugin::start().await;
    let socket = plugin.sockets.registration().to_owned();
    for (who, authority) in authorities(&socket) {
        let outcome = tokio::time::timeout(
            WAIT,
            call(
                &socket,
                authority.as_deref(),
                "/pluginregistration.Registration/GetInfo",
                &InfoRequest::default().encode_to_vec(),
            ),
        )
        .await
        .expect("an answer in time");
        let Outcome::Answered { status, message } = outcome else {
            panic!("{who}: {outcome:?}");
        };
        assert_eq!(status, "0", "{who}");
        let info = PluginInfo::decode(message.as_slice()).unwrap();
        assert_eq!(info.r#type, "DRAPlugin", "{who}");
        assert_eq!(info.name, DRIVER, "{who}");
        assert_eq!(
            info.endpoint,
            plugin.sockets.dra().to_str().unwrap(),
            "{who}"
        );
    }
    plugin.stop().await;
}

#[tokio::test]
async fn node_prepare_answers_every_authority_a_client_sends() {
    let plugin = Plugin::start().await;
    let socket = plugin.sockets.dra().to_owned();
    for (i, (who, authority)) in authorities(&socket).into_iter().enumerate() {
        let uid = format!("uid-{i}");
        let request = v1::NodePrepareResourcesRequest {
            claims: vec![v1::Claim {
                namespace: "default".into(),
                uid: uid.clone(),
                name: "claim".into(),
            }],
        };
        let outcome = tokio::time::timeout(
            WAIT,
            call(
                &socket,
                authority.as_deref(),
                "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
                &request.encode_to_vec(),
            ),
        )
        .await
        .expect("an answer in time");
        let Outcome::Answered { status, message } = outcome else {
            panic!("{who}: {outcome:?}");
        };
        assert_eq!(status, "0", "{who}");
        let response = v1::NodePrepareResourcesResponse::decode(message.as_slice()).unwrap();
        let prepared = &response.claims[&uid];
        assert_eq!(prepared.error, "", "{who}");
        assert_eq!(prepared.devices.len(), 1, "{who}");
    }
    let prepared: Vec<String> = plugin
        .handler
        .calls()
        .into_iter()
        .flat_map(|(_, claims)| claims.into_iter().map(|c| c.uid))
        .collect();
    assert_eq!(prepared, ["uid-0", "uid-1", "uid-2", "uid-3", "uid-4"]);
    plugin.stop().await;
}

/// Python grpcio, a real gRPC client, registers, prepares and opens the health stream as the kubelet
/// does: its default `:authority` for `unix:` targets is the percent-encoded socket path, like the
/// kubelet's plugin watcher's (grpc-go). Needs `python3 -m pip install grpcio grpcio-tools` (CI
/// installs them).
#[tokio::test]
#[ignore = "needs Python grpcio and grpcio-tools"]
async fn python_grpcio_registers_and_prepares_needs_grpcio() {
    let report = HealthReport {
        devices: vec![DeviceHealth {
            pool_name: "node-1".into(),
            device_name: "gpu-0".into(),
            status: HealthStatus::Unhealthy,
            last_updated: 100,
            message: "xid 79".into(),
        }],
        timeout_seconds: 180,
    };
    let (_reports, stream) = tokio::sync::watch::channel(report);
    let root = tempfile::tempdir().unwrap();
    let plugin = Plugin::start_with(root, Some(HealthService::new(stream))).await;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut client = std::process::Command::new("python3");
    client
        .arg(manifest.join("tests/data/grpcio_kubelet.py"))
        .arg(manifest.join("proto"))
        .arg(plugin.sockets.registration())
        .arg(plugin.sockets.dra());
    // The client's calls have 10 s deadlines of their own.
    let output = tokio::task::spawn_blocking(move || client.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("{result}");
    assert_eq!(result["info"]["type"], "DRAPlugin");
    assert_eq!(result["info"]["name"], DRIVER);
    assert_eq!(
        result["info"]["endpoint"],
        plugin.sockets.dra().to_str().unwrap()
    );
    assert_eq!(result["notified"], true);
    assert_eq!(result["raw_path_info_name"], DRIVER);
    assert_eq!(result["prepared"]["error"], "");
    assert_eq!(
        result["prepared"]["cdi_device_ids"][0],
        "example.com/gpu=uid-grpcio-gpu-0"
    );
    assert_eq!(result["unprepared_error"], "");
    assert_eq!(
        result["health"],
        serde_json::json!([["node-1", "gpu-0", 2, "xid 79"]])
    );
    plugin.stop().await;
}
