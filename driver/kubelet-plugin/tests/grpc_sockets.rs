//! The plugin's gRPC side as the kubelet sees it: real tonic clients over the real Unix sockets in a
//! temporary kubelet root dir, against a fake claim handler.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod grpc_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dra_kubelet_plugin::handler::ClaimRef;

use dra_kubelet_plugin::grpc::pluginregistration::registration_client::RegistrationClient;
use dra_kubelet_plugin::grpc::pluginregistration::{InfoRequest, RegistrationStatus};
use dra_kubelet_plugin::grpc::{
    MAX_SOCKET_PATH_BYTES, PluginSockets, RegistrationState, SocketError, acquire_instance_lock,
    v1, v1beta1,
};
use grpc_support::{DRIVER, FakeHandler, Plugin, WAIT, accepts, channel, is_socket, spawn_serve};
use tokio::sync::oneshot;

fn claim(uid: &str, name: &str) -> (String, String, String) {
    ("default".to_owned(), uid.to_owned(), name.to_owned())
}

fn v1_claims(claims: &[(String, String, String)]) -> Vec<v1::Claim> {
    claims
        .iter()
        .map(|(namespace, uid, name)| v1::Claim {
            namespace: namespace.clone(),
            uid: uid.clone(),
            name: name.clone(),
        })
        .collect()
}

fn v1beta1_claims(claims: &[(String, String, String)]) -> Vec<v1beta1::Claim> {
    claims
        .iter()
        .map(|(namespace, uid, name)| v1beta1::Claim {
            namespace: namespace.clone(),
            uid: uid.clone(),
            name: name.clone(),
        })
        .collect()
}

#[tokio::test]
async fn get_info_advertises_the_dra_socket_and_both_versions() {
    let plugin = Plugin::start().await;
    let mut client = RegistrationClient::new(channel(plugin.sockets.registration()).await);
    let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, DRIVER);
    let dra = plugin
        .root
        .path()
        .join("plugins")
        .join(DRIVER)
        .join("dra.sock");
    assert_eq!(Path::new(&info.endpoint), dra);
    assert!(Path::new(&info.endpoint).is_absolute());
    assert_eq!(
        info.supported_versions,
        ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    );
    assert_eq!(
        plugin.sockets.registration(),
        plugin
            .root
            .path()
            .join("plugins_registry")
            .join(format!("{DRIVER}-reg.sock"))
    );
    plugin.stop().await;
}

#[tokio::test]
async fn registration_status_is_recorded() {
    let mut plugin = Plugin::start().await;
    assert_eq!(*plugin.status.borrow(), RegistrationState::Pending);
    let mut client = RegistrationClient::new(channel(plugin.sockets.registration()).await);

    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: false,
            error: "plugin name collides".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, plugin.status.changed())
        .await
        .unwrap()
        .unwrap();
    let state = plugin.status.borrow_and_update().clone();
    assert_eq!(
        state,
        RegistrationState::Failed("plugin name collides".into())
    );
    assert_eq!(
        state.to_string(),
        "registration failed: plugin name collides"
    );

    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, plugin.status.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*plugin.status.borrow(), RegistrationState::Registered);
    plugin.stop().await;
}

#[tokio::test]
async fn v1_prepare_and_unprepare_answer_every_claim() {
    let plugin = Plugin::start().await;
    let mut client =
        v1::dra_plugin_client::DraPluginClient::new(channel(plugin.sockets.dra()).await);
    let claims = [
        claim("uid-good", "good"),
        claim("uid-broken", "broken"),
        claim("", "nameless"),
    ];

    let response = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: v1_claims(&claims),
        })
        .await
        .unwrap()
        .into_inner();
    let answers: BTreeMap<_, _> = response.claims.into_iter().collect();
    assert_eq!(
        answers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["", "uid-broken", "uid-good"]
    );
    let good = &answers["uid-good"];
    assert_eq!(good.error, "");
    assert_eq!(
        good.devices,
        [v1::Device {
            request_names: vec!["gpu".into()],
            pool_name: "node-1".into(),
            device_name: "gpu-0".into(),
            cdi_device_ids: vec!["example.com/gpu=uid-good-gpu-0".into()],
            share_id: Some("share-7".into()),
        }]
    );
    let broken = &answers["uid-broken"];
    assert_eq!(broken.error, "cannot prepare broken: no such device");
    assert!(broken.devices.is_empty());
    assert_eq!(answers[""].error, "claim without a UID: default/nameless");

    let response = client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: v1_claims(&claims),
        })
        .await
        .unwrap()
        .into_inner();
    let answers: BTreeMap<_, _> = response
        .claims
        .into_iter()
        .map(|(uid, answer)| (uid, answer.error))
        .collect();
    assert_eq!(
        answers,
        BTreeMap::from([
            (
                String::new(),
                "claim without a UID: default/nameless".to_owned()
            ),
            ("uid-broken".to_owned(), "cannot unprepare: busy".to_owned()),
            ("uid-good".to_owned(), String::new()),
        ])
    );

    // The claim without a UID never reached the handler.
    let calls = plugin.handler.calls();
    let seen: Vec<(&str, Vec<&str>)> = calls
        .iter()
        .map(|(call, claims)| (*call, claims.iter().map(|c| c.uid.as_str()).collect()))
        .collect();
    assert_eq!(
        seen,
        [
            ("prepare", vec!["uid-good", "uid-broken"]),
            ("unprepare", vec!["uid-good", "uid-broken"]),
        ]
    );
    assert_eq!(
        calls[0].1[0],
        ClaimRef {
            namespace: "default".into(),
            uid: "uid-good".into(),
            name: "good".into(),
        }
    );
    plugin.stop().await;
}

#[tokio::test]
async fn v1beta1_prepare_and_unprepare_answer_every_claim_without_share_id() {
    let plugin = Plugin::start().await;
    let mut client =
        v1beta1::dra_plugin_client::DraPluginClient::new(channel(plugin.sockets.dra()).await);
    let claims = [claim("uid-good", "good"), claim("uid-broken", "broken")];

    let response = client
        .node_prepare_resources(v1beta1::NodePrepareResourcesRequest {
            claims: v1beta1_claims(&claims),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.claims.len(), 2);
    assert_eq!(
        response.claims["uid-good"],
        v1beta1::NodePrepareResourceResponse {
            devices: vec![v1beta1::Device {
                request_names: vec!["gpu".into()],
                pool_name: "node-1".into(),
                device_name: "gpu-0".into(),
                cdi_device_ids: vec!["example.com/gpu=uid-good-gpu-0".into()],
            }],
            error: String::new(),
        }
    );
    assert_eq!(
        response.claims["uid-broken"].error,
        "cannot prepare broken: no such device"
    );

    let response = client
        .node_unprepare_resources(v1beta1::NodeUnprepareResourcesRequest {
            claims: v1beta1_claims(&claims),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.claims.len(), 2);
    assert_eq!(response.claims["uid-good"].error, "");
    assert_eq!(
        response.claims["uid-broken"].error,
        "cannot unprepare: busy"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn sockets_are_private_and_removed_on_shutdown() {
    let plugin = Plugin::start().await;
    for socket in [plugin.sockets.registration(), plugin.sockets.dra()] {
        let mode = std::fs::metadata(socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", socket.display());
        let dir = std::fs::metadata(socket.parent().unwrap()).unwrap();
        assert_eq!(
            dir.permissions().mode() & 0o777,
            0o700,
            "{}",
            socket.display()
        );
    }
    // Shutdown also works with a kubelet connection still open.
    let mut client = RegistrationClient::new(channel(plugin.sockets.registration()).await);
    client.get_info(InfoRequest {}).await.unwrap();

    let (_root, sockets) = plugin.stop().await;
    assert!(!sockets.registration().exists());
    assert!(!sockets.dra().exists());
    assert!(sockets.plugin_dir().is_dir());
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
    // A crashed instance leaves both socket files behind.
    for socket in [sockets.registration(), sockets.dra()] {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(socket).unwrap());
        assert!(is_socket(socket));
        assert!(!accepts(socket));
    }
    let plugin = Plugin::start_in(root).await;
    let mut client = RegistrationClient::new(channel(plugin.sockets.registration()).await);
    assert_eq!(
        client
            .get_info(InfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .name,
        DRIVER
    );
    let mut dra = v1::dra_plugin_client::DraPluginClient::new(channel(plugin.sockets.dra()).await);
    dra.node_unprepare_resources(v1::NodeUnprepareResourcesRequest { claims: vec![] })
        .await
        .unwrap();
    plugin.stop().await;
}

#[tokio::test]
async fn a_file_at_the_socket_path_is_an_error_and_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
    std::fs::create_dir_all(sockets.plugin_dir()).unwrap();
    std::fs::write(sockets.dra(), "not a socket").unwrap();

    let (_stop, stopped) = oneshot::channel::<()>();
    let (task, _) = spawn_serve(&sockets, Arc::new(FakeHandler::default()), stopped);
    let error = tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, SocketError::NotASocket { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("dra.sock"), "{message}");
    assert!(message.contains("not a socket"), "{message}");
    assert_eq!(
        std::fs::read_to_string(sockets.dra()).unwrap(),
        "not a socket"
    );
    // The registration socket never appeared.
    assert!(!sockets.registration().exists());
}

#[tokio::test]
async fn a_directory_at_the_registration_path_fails_and_removes_the_dra_socket() {
    let root = tempfile::tempdir().unwrap();
    let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
    std::fs::create_dir_all(sockets.registration()).unwrap();

    let (_stop, stopped) = oneshot::channel::<()>();
    let (task, _) = spawn_serve(&sockets, Arc::new(FakeHandler::default()), stopped);
    let error = tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, SocketError::NotASocket { .. }), "{error:?}");
    assert!(sockets.registration().is_dir());
    assert!(!sockets.dra().exists());
}

#[test]
fn a_too_long_socket_path_is_rejected_with_its_length() {
    let root = PathBuf::from("/").join("k".repeat(80));
    let error = PluginSockets::new(&root, DRIVER).unwrap_err();
    let registration = root
        .join("plugins_registry")
        .join(format!("{DRIVER}-reg.sock"));
    let len = registration.as_os_str().len();
    assert!(len > MAX_SOCKET_PATH_BYTES);
    let message = error.to_string();
    assert!(
        message.contains(&registration.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&format!("{len} bytes")), "{message}");
    assert!(message.contains("107"), "{message}");
    assert!(
        message.contains("shorter kubelet root dir or driver name"),
        "{message}"
    );
}

#[tokio::test]
async fn a_second_instance_waits_for_the_first_to_exit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("plugins").join(DRIVER);
    let first = acquire_instance_lock(&dir).await.unwrap();
    assert_eq!(first.path(), dir.join("serialize.lock"));

    let second = tokio::spawn({
        let dir = dir.clone();
        async move { acquire_instance_lock(&dir).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!second.is_finished(), "the second instance must wait");

    drop(first);
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("the second instance takes over once the first exits")
        .unwrap()
        .unwrap();
    assert_eq!(second.path(), dir.join("serialize.lock"));
    let mode = std::fs::metadata(second.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
