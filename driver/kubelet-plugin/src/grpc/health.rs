//! The DRA resource-health service (`v1alpha1.DRAResourceHealth`, `v1.DRAResourceHealth`) on the DRA
//! socket: each `NodeWatchResources` stream gets the health of every published device when it opens
//! and again on every new report, so several kubelet streams at once (a kubelet restart, two
//! connections) each have the full state.

use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{health_v1, health_v1alpha1};
use crate::handler::{HealthReport, HealthStatus};

/// The service names added to the registration's supported versions when health is served.
pub const HEALTH_VERSIONS: [&str; 2] = ["v1alpha1.DRAResourceHealth", "v1.DRAResourceHealth"];

/// The longest `message` the kubelet keeps; longer ones are cut to 1021 characters and `...`
/// (Kubernetes 1.36, `DeviceHealth.message`).
const MAX_MESSAGE_CHARS: usize = 1024;

/// Serves the reports of a [`watch`] channel: the sender publishes a new [`HealthReport`] after every
/// check (a rescan, an XID), and each open stream sends it to its kubelet.
#[derive(Debug, Clone)]
pub struct HealthService {
    reports: watch::Receiver<HealthReport>,
    stop: Option<watch::Receiver<bool>>,
}

impl HealthService {
    /// A service streaming what `reports` holds.
    pub fn new(reports: watch::Receiver<HealthReport>) -> Self {
        HealthService {
            reports,
            stop: None,
        }
    }

    /// Ends every stream once `stop` holds true: a graceful shutdown waits for open calls, and a
    /// kubelet's health stream never ends by itself.
    pub(crate) fn until(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The `v1alpha1.DRAResourceHealth` server.
    pub fn v1alpha1_server(
        &self,
    ) -> health_v1alpha1::dra_resource_health_server::DraResourceHealthServer<Self> {
        health_v1alpha1::dra_resource_health_server::DraResourceHealthServer::new(self.clone())
    }

    /// The `v1.DRAResourceHealth` server.
    pub fn v1_server(
        &self,
    ) -> health_v1::dra_resource_health_server::DraResourceHealthServer<Self> {
        health_v1::dra_resource_health_server::DraResourceHealthServer::new(self.clone())
    }

    /// The reports, current one first, then one per change, until the sender is gone.
    fn reports(&self) -> impl Stream<Item = HealthReport> + Send + 'static {
        let stop = self.stop.clone();
        let stopped = async move {
            match stop {
                Some(mut stop) => {
                    // An error means the sender is gone, which also means stop.
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
                None => std::future::pending().await,
            }
        };
        futures_util::StreamExt::take_until(
            tokio_stream::wrappers::WatchStream::new(self.reports.clone()),
            stopped,
        )
    }
}

/// Cuts a message to what the kubelet keeps, on a character boundary.
fn kubelet_message(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

/// The v1alpha1 and v1 messages are the same; this writes either from a report.
macro_rules! health_api {
    ($module:ident) => {
        impl From<&HealthReport> for $module::NodeWatchResourcesResponse {
            fn from(report: &HealthReport) -> Self {
                let devices = report
                    .devices
                    .iter()
                    .map(|device| $module::DeviceHealth {
                        device: Some($module::DeviceIdentifier {
                            pool_name: device.pool_name.clone(),
                            device_name: device.device_name.clone(),
                        }),
                        health: match device.status {
                            HealthStatus::Unknown => $module::HealthStatus::Unknown,
                            HealthStatus::Healthy => $module::HealthStatus::Healthy,
                            HealthStatus::Unhealthy => $module::HealthStatus::Unhealthy,
                        } as i32,
                        last_updated_time: device.last_updated,
                        health_check_timeout_seconds: report.timeout_seconds,
                        message: kubelet_message(&device.message),
                    })
                    .collect();
                $module::NodeWatchResourcesResponse { devices }
            }
        }

        #[tonic::async_trait]
        impl $module::dra_resource_health_server::DraResourceHealth for HealthService {
            type NodeWatchResourcesStream = Pin<
                Box<
                    dyn Stream<Item = Result<$module::NodeWatchResourcesResponse, Status>>
                        + Send
                        + 'static,
                >,
            >;

            async fn node_watch_resources(
                &self,
                _: Request<$module::NodeWatchResourcesRequest>,
            ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
                tracing::debug!(api = stringify!($module), "kubelet opened a health stream");
                let stream = tokio_stream::StreamExt::map(self.reports(), |report| {
                    Ok($module::NodeWatchResourcesResponse::from(&report))
                });
                Ok(Response::new(Box::pin(stream)))
            }
        }
    };
}

health_api!(health_v1alpha1);
health_api!(health_v1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_as_the_kubelet_cuts_them() {
        assert_eq!(kubelet_message("xid-79"), "xid-79");
        let exact = "é".repeat(1024);
        assert_eq!(kubelet_message(&exact), exact);
        let long = "é".repeat(1025);
        let cut = kubelet_message(&long);
        assert_eq!(cut.chars().count(), 1024);
        assert!(cut.ends_with("é..."));
    }
}
