//! The health stream as the kubelet sees it (`DRAResourceHealth`, both packages): a tonic client
//! generated from this project's protos, which carry upstream's packages and field numbers, over the
//! real DRA socket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod grpc_support;

use dra_kubelet_plugin::grpc::pluginregistration::InfoRequest;
use dra_kubelet_plugin::grpc::pluginregistration::registration_client::RegistrationClient;
use dra_kubelet_plugin::grpc::{HealthService, health_v1, health_v1alpha1};
use dra_kubelet_plugin::handler::{DeviceHealth, HealthReport, HealthStatus};
use grpc_support::{Plugin, WAIT, channel};
use tokio::sync::watch;

fn device(name: &str, status: HealthStatus, message: &str, at: i64) -> DeviceHealth {
    DeviceHealth {
        pool_name: "node-1".into(),
        device_name: name.into(),
        status,
        last_updated: at,
        message: message.into(),
    }
}

fn report(devices: Vec<DeviceHealth>) -> HealthReport {
    HealthReport {
        devices,
        timeout_seconds: 180,
    }
}

/// (device, health, message, last updated) of a v1alpha1 answer.
fn seen_v1alpha1(
    answer: &health_v1alpha1::NodeWatchResourcesResponse,
) -> Vec<(String, i32, String, i64)> {
    answer
        .devices
        .iter()
        .map(|d| {
            let id = d.device.clone().unwrap();
            assert_eq!(id.pool_name, "node-1");
            assert_eq!(d.health_check_timeout_seconds, 180);
            (
                id.device_name,
                d.health,
                d.message.clone(),
                d.last_updated_time,
            )
        })
        .collect()
}

fn seen_v1(answer: &health_v1::NodeWatchResourcesResponse) -> Vec<(String, i32, String, i64)> {
    answer
        .devices
        .iter()
        .map(|d| {
            let id = d.device.clone().unwrap();
            (
                id.device_name,
                d.health,
                d.message.clone(),
                d.last_updated_time,
            )
        })
        .collect()
}

const HEALTHY: i32 = 1;
const UNHEALTHY: i32 = 2;

#[tokio::test]
async fn kubelet_streams_get_the_full_state_at_connect_and_on_every_change() {
    let (reports, stream) = watch::channel(report(vec![
        device("gpu-0", HealthStatus::Healthy, "", 100),
        device("nic-0", HealthStatus::Healthy, "", 100),
    ]));
    let root = tempfile::tempdir().unwrap();
    let plugin = Plugin::start_with(root, Some(HealthService::new(stream))).await;

    // The registration advertises both health services after the DRA versions.
    let mut registration = RegistrationClient::new(channel(plugin.sockets.registration()).await);
    let info = registration
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.supported_versions,
        [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1alpha1.DRAResourceHealth",
            "v1.DRAResourceHealth"
        ]
    );

    // Two kubelet streams at once, one per package; each gets the whole state at connect.
    let mut alpha = health_v1alpha1::dra_resource_health_client::DraResourceHealthClient::new(
        channel(plugin.sockets.dra()).await,
    )
    .node_watch_resources(health_v1alpha1::NodeWatchResourcesRequest {})
    .await
    .unwrap()
    .into_inner();
    let mut v1 = health_v1::dra_resource_health_client::DraResourceHealthClient::new(
        channel(plugin.sockets.dra()).await,
    )
    .node_watch_resources(health_v1::NodeWatchResourcesRequest {})
    .await
    .unwrap()
    .into_inner();
    let next_alpha =
        async |s: &mut tonic::Streaming<health_v1alpha1::NodeWatchResourcesResponse>| {
            tokio::time::timeout(WAIT, s.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        };
    let next_v1 = async |s: &mut tonic::Streaming<health_v1::NodeWatchResourcesResponse>| {
        tokio::time::timeout(WAIT, s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let at_connect = vec![
        ("gpu-0".to_owned(), HEALTHY, String::new(), 100),
        ("nic-0".to_owned(), HEALTHY, String::new(), 100),
    ];
    assert_eq!(seen_v1alpha1(&next_alpha(&mut alpha).await), at_connect);
    assert_eq!(seen_v1(&next_v1(&mut v1).await), at_connect);

    // A critical XID on the GPU, then the NIC's link down: each change reaches both streams whole.
    let xid = "NVML reported critical XID 79; the GPU likely needs a reset";
    reports.send_replace(report(vec![
        device("gpu-0", HealthStatus::Unhealthy, xid, 160),
        device("nic-0", HealthStatus::Healthy, "", 160),
    ]));
    let expected = vec![
        ("gpu-0".to_owned(), UNHEALTHY, xid.to_owned(), 160),
        ("nic-0".to_owned(), HEALTHY, String::new(), 160),
    ];
    assert_eq!(seen_v1alpha1(&next_alpha(&mut alpha).await), expected);
    assert_eq!(seen_v1(&next_v1(&mut v1).await), expected);

    // A message longer than the kubelet keeps is cut to 1024 characters.
    let long = "x".repeat(5000);
    reports.send_replace(report(vec![device(
        "gpu-0",
        HealthStatus::Unknown,
        &long,
        220,
    )]));
    let answer = next_v1(&mut v1).await;
    assert_eq!(answer.devices[0].message.chars().count(), 1024);
    assert_eq!(answer.devices[0].health, 0);
    let _ = next_alpha(&mut alpha).await;

    // A kubelet that reconnects (a restart) gets the current state at once.
    drop(alpha);
    let mut again = health_v1alpha1::dra_resource_health_client::DraResourceHealthClient::new(
        channel(plugin.sockets.dra()).await,
    )
    .node_watch_resources(health_v1alpha1::NodeWatchResourcesRequest {})
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        next_alpha(&mut again).await.devices[0].last_updated_time,
        220
    );
    plugin.stop().await;
}

#[tokio::test]
async fn without_health_nothing_is_advertised_and_the_service_is_not_served() {
    let plugin = Plugin::start().await;
    let mut registration = RegistrationClient::new(channel(plugin.sockets.registration()).await);
    let info = registration
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.supported_versions,
        ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    );
    let status = health_v1::dra_resource_health_client::DraResourceHealthClient::new(
        channel(plugin.sockets.dra()).await,
    )
    .node_watch_resources(health_v1::NodeWatchResourcesRequest {})
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    plugin.stop().await;
}
