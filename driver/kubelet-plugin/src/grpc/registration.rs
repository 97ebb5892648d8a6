//! The plugin-registration service the kubelet's plugin watcher calls on `<driver>-reg.sock`.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::PluginSockets;
use super::pluginregistration::registration_server::{Registration, RegistrationServer};
use super::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

/// The plugin type a DRA driver registers as.
pub const PLUGIN_TYPE: &str = "DRAPlugin";

/// The DRA service versions advertised, most preferred first: the kubelet takes the first entry of
/// this list that it supports.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];

/// What the kubelet last said about this plugin's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// No `NotifyRegistrationStatus` call yet.
    Pending,
    /// The kubelet registered the plugin.
    Registered,
    /// The kubelet refused the plugin, with its reason.
    Failed(String),
}

impl fmt::Display for RegistrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationState::Pending => {
                f.write_str("waiting for the kubelet to register the plugin")
            }
            RegistrationState::Registered => f.write_str("registered"),
            RegistrationState::Failed(error) => write!(f, "registration failed: {error}"),
        }
    }
}

/// The `pluginregistration.Registration` service: answers `GetInfo` with type `DRAPlugin`, the
/// driver name, the DRA socket and [`SUPPORTED_VERSIONS`], and records `NotifyRegistrationStatus`
/// for [`status`](Self::status) watchers.
#[derive(Debug, Clone)]
pub struct RegistrationService {
    info: PluginInfo,
    state: Arc<watch::Sender<RegistrationState>>,
}

impl RegistrationService {
    /// The service for the driver and DRA socket of `sockets`.
    pub fn new(sockets: &PluginSockets) -> Self {
        let info = PluginInfo {
            r#type: PLUGIN_TYPE.to_owned(),
            name: sockets.driver_name().to_owned(),
            endpoint: sockets.dra_endpoint().to_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        };
        RegistrationService {
            info,
            state: Arc::new(watch::Sender::new(RegistrationState::Pending)),
        }
    }

    /// Also advertises the health services ([`HEALTH_VERSIONS`](super::HEALTH_VERSIONS)), after the DRA
    /// versions: the kubelet picks its DRA version from the first entries and opens a health stream
    /// when it finds a health service it knows.
    pub fn with_health(mut self) -> Self {
        self.info
            .supported_versions
            .extend(super::HEALTH_VERSIONS.iter().map(|v| (*v).to_owned()));
        self
    }

    /// The last registration status the kubelet sent; `changed()` wakes on every notification.
    pub fn status(&self) -> watch::Receiver<RegistrationState> {
        self.state.subscribe()
    }

    /// The server, for `tonic::transport::Server::add_service`.
    pub fn server(&self) -> RegistrationServer<Self> {
        RegistrationServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::debug!(driver = %self.info.name, "kubelet asked for plugin info");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let state = if status.plugin_registered {
            RegistrationState::Registered
        } else {
            RegistrationState::Failed(status.error)
        };
        tracing::debug!(driver = %self.info.name, %state, "kubelet sent registration status");
        // `send_replace` stores the state even while nobody watches.
        self.state.send_replace(state);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
