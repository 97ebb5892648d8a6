//! The connection limits of the plugin's sockets, as a flood and the kubelet see them: idle
//! connections beyond the cap wait, the cap holds the kubelet back only until the idle ones time out,
//! and then its call gets through.
//!
//! The idle timeout, the keepalive pings and the tests' own waits are tokio's timers, and the sockets
//! are Unix sockets in this process (a byte written is readable at once): the idle test runs on
//! paused time (`start_paused`), where the timeouts fire in the order of their deadlines however
//! loaded the machine, and waiting is free.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod grpc_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dra_kubelet_plugin::grpc::pluginregistration::InfoRequest;
use dra_kubelet_plugin::grpc::pluginregistration::registration_client::RegistrationClient;
use dra_kubelet_plugin::grpc::v1;
use dra_kubelet_plugin::grpc::{
    ConnectionLimits, PluginSockets, RegistrationService, serve_with_limits,
};
use dra_kubelet_plugin::handler::{
    BoxFuture, ClaimRef, DraHandler, PrepareResults, UnprepareResults,
};
use grpc_support::{DRIVER, FakeHandler, WAIT, channel, is_socket, stop_serving, wait_for};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

const IDLE: Duration = Duration::from_millis(800);

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: 2,
        max_streams: 200,
        idle_timeout: IDLE,
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_secs(5),
    }
}

/// The plugin's servers on `sockets`, until stopped.
struct Serving {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), dra_kubelet_plugin::grpc::SocketError>>,
}

impl Serving {
    fn start(
        sockets: &PluginSockets,
        handler: Arc<dyn DraHandler>,
        limits: ConnectionLimits,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let sockets = sockets.clone();
        let registration = RegistrationService::new(&sockets);
        let task = tokio::spawn(async move {
            serve_with_limits(&sockets, handler, None, registration, limits, async {
                let _ = stopped.await;
            })
            .await
        });
        Serving { stop, task }
    }

    async fn stop(self) {
        stop_serving(self.stop, self.task).await;
    }
}

/// Reads until the server closes `stream` (EOF or an error), or fails after `within`.
async fn closed_within(stream: &mut UnixStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes an idle connection");
    start.elapsed()
}

/// A channel like the kubelet's that counts the connections it opens.
async fn counting_channel(path: &Path, connects: Arc<AtomicUsize>) -> Channel {
    let path: PathBuf = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            connects.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}

async fn prepare(channel: Channel) -> Result<usize, tonic::Status> {
    let mut client = v1::dra_plugin_client::DraPluginClient::new(channel);
    let answer = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![v1::Claim {
                namespace: "default".into(),
                uid: "uid-1".into(),
                name: "claim-1".into(),
            }],
        })
        .await?;
    Ok(answer.into_inner().claims.len())
}

/// On paused time: the flood's first two connections time out at `IDLE`, the next two from the
/// backlog at `2 * IDLE`, and only then does the kubelet's connection get a slot.
#[tokio::test(start_paused = true)]
async fn idle_connections_beyond_the_cap_wait_and_the_kubelet_gets_through_once_they_time_out() {
    let root = tempfile::tempdir().unwrap();
    let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
    let handler = Arc::new(FakeHandler::default());
    let serving = Serving::start(&sockets, handler, limits());
    wait_for(|| is_socket(sockets.registration()) && is_socket(sockets.dra())).await;

    // A flood: five connections to the DRA socket that never send a byte. Two take the slots; the
    // other three wait in the listen backlog.
    let flooded = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(UnixStream::connect(sockets.dra()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // While both slots are held, a kubelet call cannot be served: the cap is real. (Virtual time:
    // the window ends before the first idle timeout however slowly the machine runs.)
    let held = tokio::time::timeout(Duration::from_millis(300), async {
        prepare(channel(sockets.dra()).await).await
    })
    .await;
    assert!(held.is_err(), "served past the cap: {held:?}");
    assert!(flooded.elapsed() < IDLE, "{:?}", flooded.elapsed());

    // The registration socket has slots of its own: the flood on the DRA socket does not hold it.
    let mut registration = RegistrationClient::new(channel(sockets.registration()).await);
    let info = tokio::time::timeout(WAIT, registration.get_info(InfoRequest {}))
        .await
        .expect("registration answers during a flood of the DRA socket")
        .unwrap();
    assert_eq!(info.into_inner().name, DRIVER);

    // Once the idle connections time out (two at a time: the first two at IDLE, the two next in
    // the backlog at 2 * IDLE), the kubelet's call gets through.
    let claims = tokio::time::timeout(WAIT, async { prepare(channel(sockets.dra()).await).await })
        .await
        .expect("the kubelet is served once the idle connections timed out")
        .unwrap();
    assert_eq!(claims, 1);
    let served = flooded.elapsed();
    assert!(
        served >= IDLE * 2,
        "served {served:?} after the flood, before four idle connections could time out"
    );
    assert!(
        served < IDLE * 3,
        "served {served:?} after the flood, not as the second pair's slots freed"
    );

    // Every flood connection is closed by the server, none is kept open.
    for stream in &mut flood {
        let after = closed_within(stream, WAIT).await;
        assert!(after < WAIT);
    }

    // A live HTTP/2 client answers the keepalive pings, so its connection, left without calls for
    // ten idle timeouts, is not closed: the next call goes over the same connection.
    let connects = Arc::new(AtomicUsize::new(0));
    let live = counting_channel(sockets.dra(), connects.clone()).await;
    assert_eq!(prepare(live.clone()).await.unwrap(), 1);
    tokio::time::sleep(IDLE * 10).await;
    assert_eq!(prepare(live).await.unwrap(), 1);
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "the connection was closed while idle"
    );

    serving.stop().await;
}

/// Holds every prepare until released, counting how many are inside at once.
struct Held {
    inside: AtomicUsize,
    release: watch::Receiver<bool>,
}

impl DraHandler for Held {
    fn prepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, PrepareResults> {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let mut release = self.release.clone();
        Box::pin(async move {
            let _ = release.wait_for(|released| *released).await;
            self.inside.fetch_sub(1, Ordering::SeqCst);
            claims.into_iter().map(|c| (c.uid, Ok(vec![]))).collect()
        })
    }

    fn unprepare(&self, claims: Vec<ClaimRef>) -> BoxFuture<'_, UnprepareResults> {
        Box::pin(async move { claims.into_iter().map(|c| (c.uid, Ok(()))).collect() })
    }

    fn concurrent(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn one_connection_opens_at_most_the_capped_calls_at_once_and_the_rest_wait_their_turn() {
    let root = tempfile::tempdir().unwrap();
    let sockets = PluginSockets::new(root.path(), DRIVER).unwrap();
    let (released, release) = watch::channel(false);
    let handler = Arc::new(Held {
        inside: AtomicUsize::new(0),
        release,
    });
    let capped = ConnectionLimits {
        max_streams: 4,
        ..limits()
    };
    let serving = Serving::start(&sockets, handler.clone(), capped);
    wait_for(|| is_socket(sockets.dra())).await;

    // 40 calls at once over one connection: the server lets 4 in, the client holds the rest back.
    let connects = Arc::new(AtomicUsize::new(0));
    let one = counting_channel(sockets.dra(), connects.clone()).await;
    // One call first, so the client has the server's SETTINGS (its stream limit): before them h2
    // allows 100 streams, and the server refuses those over its cap (REFUSED_STREAM; grpc-go
    // retries such a call, tonic fails it).
    released.send(true).unwrap();
    assert_eq!(prepare(one.clone()).await.unwrap(), 1);
    released.send(false).unwrap();
    let calls: Vec<_> = (0..40)
        .map(|_| tokio::spawn(prepare(one.clone())))
        .collect();
    wait_for(|| handler.inside.load(Ordering::SeqCst) == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.inside.load(Ordering::SeqCst), 4, "past the cap");

    // Released, every call is answered: waiting for a stream is not a failure.
    released.send(true).unwrap();
    for call in calls {
        let answered = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
        assert_eq!(answered.unwrap(), 1);
    }
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "all over one connection"
    );

    serving.stop().await;
}
