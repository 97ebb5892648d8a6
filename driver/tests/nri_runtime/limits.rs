//! Messages over ttrpc's 4 MiB limit, and the reconnection backoff: containerd 1.7 (NRI 0.6.1) sends
//! its whole state in one `Synchronize`, fails to send one over the limit and drops the plugin, at
//! every attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use driver::nri::endpoint::CallError;
use driver::nri::fake_runtime::{FakeRuntime, container, pod};
use driver::nri::wire::MAX_DATA;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use super::start;

/// What the plugin logs, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Collects this thread's logs (the tests run on one thread) until the guard drops.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    /// The lines at WARN.
    fn warnings(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains("WARN"))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn a_message_over_the_limit_is_logged_at_warn_with_its_size_and_the_limit() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let node = start(&socket, &[]);
    let (mut runtime, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    // A ttrpc request on the plugin's mux connection whose header announces 5 MiB of data.
    let mut frame = Vec::new();
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&10u32.to_be_bytes());
    frame.extend_from_slice(&(5u32 << 20).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&[1, 0]);
    runtime.write_all(&frame).await.unwrap();
    // The plugin hangs up.
    let mut rest = Vec::new();
    timeout(Duration::from_secs(10), runtime.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    node.stop().await;
    let warnings = logs.warnings();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("over ttrpc's size limit")
                && l.contains("size=5242880")
                && l.contains(&format!("limit={MAX_DATA}"))),
        "{warnings:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_runtime_that_drops_the_plugin_at_every_synchronize_is_retried_with_backoff() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nri.sock");
    let runtime = FakeRuntime::listen(&socket).unwrap();
    let node = start(&socket, &[]);
    // About 5 MiB of state, in one Synchronize as NRI 0.6.1 sends it.
    let p = pod("s", "uid-p");
    let env = format!("BIG={}", "x".repeat(2048));
    let containers: Vec<_> = (0..2600)
        .map(|i| container(&format!("c{i}"), &p, &[env.as_str()], ""))
        .collect();
    let mut accepted = Vec::new();
    for _ in 0..8 {
        let (conn, _) = runtime
            .accept_within(Duration::from_secs(120))
            .await
            .unwrap();
        accepted.push(Instant::now());
        let error = conn
            .synchronize(vec![p.clone()], containers.clone(), usize::MAX)
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::TooLarge { size, limit } if size > limit && limit == MAX_DATA),
            "{error}"
        );
    }
    node.stop().await;
    // The waits between attempts double from 1 s to the 30 s cap, each in [step / 2, step].
    let waits: Vec<Duration> = accepted.windows(2).map(|w| w[1] - w[0]).collect();
    let steps = [1, 2, 4, 8, 16, 30, 30];
    assert_eq!(waits.len(), steps.len());
    for (wait, step) in waits.iter().zip(steps) {
        let step = Duration::from_secs(step);
        assert!(step / 2 <= *wait && *wait <= step, "{waits:?}");
    }
    let warnings = logs.warnings();
    let dropped = warnings
        .iter()
        .filter(|l| l.contains("closed the connection before Synchronize"))
        .count();
    assert!(dropped >= 7, "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&format!("limit={MAX_DATA}"))),
        "{warnings:#?}"
    );
}
