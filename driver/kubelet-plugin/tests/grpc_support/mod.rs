//! What the gRPC socket tests share: a fake claim handler and a plugin serving in a temporary
//! kubelet root dir.

#![allow(dead_code)]

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dra_kubelet_plugin::grpc::{
    HealthService, PluginSockets, RegistrationService, RegistrationState, SocketError, serve,
};
use dra_kubelet_plugin::handler::{
    BoxFuture, ClaimRef, DraHandler, PrepareResults, PreparedDevice, UnprepareResults,
};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

pub const DRIVER: &str = "gpu.example.com";
pub const WAIT: Duration = Duration::from_secs(10);

/// Prepares every claim to one device with a share id, except claims named `broken`, which fail;
/// records the claims of every call.
#[derive(Default)]
pub struct FakeHandler {
    calls: Mutex<Vec<(&'static str, Vec<ClaimRef>)>>,
}

impl FakeHandler {
    pub fn calls(&self) -> Vec<(&'static str, Vec<ClaimRef>)> {
        self.calls.lock().unwrap().clone()
    }
}

impl DraHandler for FakeHandler {
    fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults> {
        self.calls.lock().unwrap().push(("prepare", claims.clone()));
        Box::pin(async move {
            claims
                .into_iter()
                .map(|claim| {
                    let result = if claim.name == "broken" {
                        Err(format!("cannot prepare {}: no such device", claim.name))
                    } else {
                        Ok(vec![PreparedDevice {
                            request_names: vec!["gpu".into()],
                            pool_name: "node-1".into(),
                            device_name: "gpu-0".into(),
                            cdi_device_ids: vec![format!("example.com/gpu={}-gpu-0", claim.uid)],
                            share_id: Some("share-7".into()),
                        }])
                    };
                    (claim.uid, result)
                })
                .collect()
        })
    }

    fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults> {
        self.calls
            .lock()
            .unwrap()
            .push(("unprepare", claims.clone()));
        Box::pin(async move {
            claims
                .into_iter()
                .map(|claim| {
                    let result = if claim.name == "broken" {
                        Err("cannot unprepare: busy".to_owned())
                    } else {
                        Ok(())
                    };
                    (claim.uid, result)
                })
                .collect()
        })
    }
}

/// A running plugin in a temporary kubelet root.
pub struct Plugin {
    pub root: TempDir,
    pub sockets: PluginSockets,
    pub handler: Arc<FakeHandler>,
    pub status: watch::Receiver<RegistrationState>,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<(), SocketError>>,
}

impl Plugin {
    pub async fn start() -> Plugin {
        let root = tempfile::tempdir().unwrap();
        Plugin::start_in(root).await
    }

    /// Starts serving in `root` and waits until both sockets accept connections (a stale socket
    /// left in `root` refuses them).
    pub async fn start_in(root: TempDir) -> Plugin {
        Plugin::start_with(root, None).await
    }

    /// Starts serving, with `health` when given (and advertised in the registration).
    pub async fn start_with(root: TempDir, health: Option<HealthService>) -> Plugin {
        let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
        let handler = Arc::new(FakeHandler::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let (task, status) = spawn_serve_with(&sockets, handler.clone(), health, stopped);
        wait_for(|| accepts(sockets.registration()) && accepts(sockets.dra())).await;
        Plugin {
            root,
            sockets,
            handler,
            status,
            stop,
            task,
        }
    }

    pub async fn stop(self) -> (TempDir, PluginSockets) {
        stop_serving(self.stop, self.task).await;
        (self.root, self.sockets)
    }
}

/// Tells a serving task to stop and waits (at most [`WAIT`]) for it to end without an error.
pub async fn stop_serving(stop: oneshot::Sender<()>, task: JoinHandle<Result<(), SocketError>>) {
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("serve ends after shutdown")
        .unwrap()
        .unwrap();
}

pub fn spawn_serve(
    sockets: &PluginSockets,
    handler: Arc<FakeHandler>,
    stopped: oneshot::Receiver<()>,
) -> (
    JoinHandle<Result<(), SocketError>>,
    watch::Receiver<RegistrationState>,
) {
    spawn_serve_with(sockets, handler, None, stopped)
}

pub fn spawn_serve_with(
    sockets: &PluginSockets,
    handler: Arc<FakeHandler>,
    health: Option<HealthService>,
    stopped: oneshot::Receiver<()>,
) -> (
    JoinHandle<Result<(), SocketError>>,
    watch::Receiver<RegistrationState>,
) {
    let mut registration = RegistrationService::new(sockets);
    if health.is_some() {
        registration = registration.with_health();
    }
    let status = registration.status();
    let sockets = sockets.clone();
    let task = tokio::spawn(async move {
        serve(&sockets, handler, health, registration, async {
            let _ = stopped.await;
        })
        .await
    });
    (task, status)
}

pub fn accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

pub fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

pub async fn wait_for(mut ready: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition within the timeout");
}

/// A gRPC channel over the Unix socket at `path`, the way the kubelet dials plugins.
pub async fn channel(path: &Path) -> Channel {
    let path: PathBuf = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}
