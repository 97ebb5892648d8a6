//! Running the DRA and registration servers on their sockets until shutdown.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::Server;

use super::limits::{ConnectionLimits, Limited, limited};

use super::sockets::bind_socket;
use super::{
    AuthorityFix, DraService, HealthService, PluginSockets, RegistrationService, SocketError,
};
use crate::handler::DraHandler;

/// Serves the DRA services (`v1.DRAPlugin`, `v1beta1.DRAPlugin`) over `handler`, and `health` (both
/// `DRAResourceHealth` versions) when given, on [`PluginSockets::dra`], and `registration` on
/// [`PluginSockets::registration`], until `shutdown` completes or a server fails, then removes both
/// socket files (which deregisters the plugin). Give `registration` [`RegistrationService::with_health`]
/// when serving health, so the kubelet knows to open the stream.
///
/// The DRA socket listens before the registration socket appears, since the kubelet connects to the
/// DRA endpoint right after registering. Stale sockets are replaced, anything else at a socket path
/// is an error, and both sockets are made 0600. Hold the [`InstanceLock`](super::InstanceLock)
/// while calling this. The sockets are also removed if this future is dropped. Connections are
/// bounded by the default [`ConnectionLimits`]; see [`serve_with_limits`].
pub async fn serve(
    sockets: &PluginSockets,
    handler: Arc<dyn DraHandler>,
    health: Option<HealthService>,
    registration: RegistrationService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SocketError> {
    let limits = ConnectionLimits::default();
    serve_with_limits(sockets, handler, health, registration, limits, shutdown).await
}

/// [`serve`], with the connections to each socket bounded by `limits` (a cap on open connections, an
/// idle timeout and HTTP/2 keepalive pings; see [`ConnectionLimits`]).
pub async fn serve_with_limits(
    sockets: &PluginSockets,
    handler: Arc<dyn DraHandler>,
    health: Option<HealthService>,
    registration: RegistrationService,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SocketError> {
    let dra_listener = bind_socket(sockets.dra())?;
    let dra_socket = RemoveOnDrop(sockets.dra().to_owned());
    let registration_listener = bind_socket(sockets.registration())?;
    // Declared after `dra_socket`, so dropped (deregistered) first.
    let registration_socket = RemoveOnDrop(sockets.registration().to_owned());
    tracing::info!(
        registration = %sockets.registration().display(),
        dra = %sockets.dra().display(),
        "kubelet plugin sockets listening"
    );

    // One stop signal for both servers: the caller's shutdown, or either server ending.
    let (stop, _) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = stop.wait_for(|stopped| *stopped).await;
    };

    let dra = DraService::new(handler);
    let health = health.map(|health| health.until(stop.subscribe()));
    let dra_server = async {
        let result = server(limits)
            .add_service(dra.v1_server())
            .add_service(dra.v1beta1_server())
            .add_optional_service(health.as_ref().map(HealthService::v1alpha1_server))
            .add_optional_service(health.as_ref().map(HealthService::v1_server))
            .serve_with_incoming_shutdown(
                connections(dra_listener, limits),
                stopped(stop.subscribe()),
            )
            .await;
        stop.send_replace(true);
        result.map_err(|source| SocketError::Serve {
            path: dra_socket.0.clone(),
            source,
        })
    };
    let registration_server = async {
        let result = server(limits)
            .add_service(registration.server())
            .serve_with_incoming_shutdown(
                connections(registration_listener, limits),
                stopped(stop.subscribe()),
            )
            .await;
        stop.send_replace(true);
        result.map_err(|source| SocketError::Serve {
            path: registration_socket.0.clone(),
            source,
        })
    };
    let trigger = async {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down the kubelet plugin servers"),
            () = stopped(stop.subscribe()) => {}
        }
        stop.send_replace(true);
    };
    let (dra_result, registration_result, ()) =
        tokio::join!(dra_server, registration_server, trigger);

    drop(registration_socket);
    drop(dra_socket);
    dra_result.and(registration_result)
}

/// A server builder with `limits`' HTTP/2 keepalive pings and calls per connection.
fn server(limits: ConnectionLimits) -> Server {
    Server::builder()
        .max_concurrent_streams(Some(limits.max_streams.max(1)))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}

/// The connections a listener accepts within `limits`, each behind [`AuthorityFix`]: the kubelet's
/// plugin watcher (grpc-go) and Python grpcio send an `:authority` that h2 refuses (see its module).
fn connections(
    listener: UnixListener,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = io::Result<AuthorityFix<Limited<UnixStream>>>> {
    limited(listener, limits).map(|accepted| accepted.map(AuthorityFix::new))
}

/// Removes a socket file when dropped: on shutdown, on error and on cancellation alike.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove_socket(&self.0);
    }
}

fn remove_socket(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(socket = %path.display(), "removed socket"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(socket = %path.display(), %error, "failed to remove socket");
        }
    }
}
