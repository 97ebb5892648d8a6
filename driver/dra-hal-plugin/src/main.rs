//! `dra-hal-plugin`: the DRA kubelet plugin. Publishes this node's devices as ResourceSlices, serves the
//! kubelet's registration and DRA gRPC services, prepares claims through CDI. The wiring of the
//! driver's parts and the kit's is [`app`]; the policy is the `driver` library's.

mod app;

use std::process::ExitCode;
use std::time::Duration;

use app::{PluginArgs, Usage, check_flags, init_logging, kube_client, run};

/// An idle blocking thread ends after this long (tokio's default: 10 s), so the threads a burst of
/// prepares started, and their stacks, are gone soon after it. The pool's size stays tokio's default
/// (512): prepare's file and sysfs I/O runs in `block_in_place`, and an earlier measurement with 8 or
/// 32 blocking sections saved 4-7 MiB but pushed the p99 of 128 concurrent prepares to 196-586 ms
/// (target 300 ms; docs/perf.md).
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// glibc's malloc arenas: at most this many (its default is 8 per core, and every thread that
/// allocates while another holds its arena gets one, each keeping freed memory of its own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas ([`MALLOC_ARENAS`]). Why: with 1000 live claims (the `prepare_socket`
/// bench, release build) the plugin's VmRSS was 39-42 MiB, 25-27 MiB of it anonymous, much of that
/// freed memory kept in the arenas of the blocking threads the prepares ran on; the environment's
/// `MALLOC_ARENA_MAX=1` alone gave 34.9 MiB. With this cap and the 1 s keep-alive: 28.8-31.6 MiB,
/// fewer than with mimalloc or jemalloc (docs/perf.md, "Prepare at scale").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator; it is called first thing in
    // main, before any other thread exists, and any value is valid (it returns 0 when refused).
    #[allow(unsafe_code)]
    let accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    if accepted == 0 {
        eprintln!("dra-hal-plugin: glibc refused M_ARENA_MAX={MALLOC_ARENAS}; using its default");
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    cap_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve()),
        Err(error) => {
            eprintln!("dra-hal-plugin: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    let args = PluginArgs::parse_checked();
    if let Err(error) = init_logging(args.log_format) {
        // No log to write it to.
        eprintln!("dra-hal-plugin: {error}");
        return ExitCode::from(USAGE);
    }
    raise_open_files_limit();
    let stopping = shutdown_signal();
    let checked = match check_flags(&args) {
        Ok(checked) => checked,
        Err(error) => {
            fatal(&anyhow::Error::new(error));
            return ExitCode::from(USAGE);
        }
    };
    let result = async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        run(args, checked, client, stopping).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            fatal(&error);
            match error.is::<Usage>() {
                true => ExitCode::from(USAGE),
                false => ExitCode::FAILURE,
            }
        }
    }
}

/// The exit status of bad usage (clap's): a flag's value or `RUST_LOG` refused at start.
const USAGE: u8 = 2;

/// Tells the error that ends the process once: as a log event (one JSON line with `--log-format
/// json`) when the log shows errors, else on stderr as plain text (`RUST_LOG=off`).
fn fatal(error: &anyhow::Error) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{error:#}");
    } else {
        eprintln!("dra-hal-plugin: {error:#}");
    }
}

/// Raises the soft limit of open files to the hard one, as Go programs do at start (Go 1.19+): a
/// container's soft limit is often 1024 (containerd 2's default), and the plugin's open files grow
/// with what the node does at once (gRPC and API connections, CNI plugin pipes, network namespaces,
/// checkpoint and CDI files). A read that fails with EMFILE fails a prepare, or a rescan. Refused or
/// already there: left as it is.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(hard)) = (limit.current, limit.maximum) else {
        return;
    };
    if current >= hard {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(from = current, to = hard, "open files limit raised"),
        Err(error) => tracing::info!(%error, current, hard, "open files limit not raised"),
    }
}

/// Becomes true at SIGTERM (the kubelet stopping the pod) or SIGINT; a second one of either exits
/// the process at once with status 1 ([`on_signals`]). The handlers are installed here, before the
/// startup: the plugin may run as PID 1 (in a PID namespace of its own), for which the kernel drops
/// a signal without one, and the startup can wait long (an API server that does not answer,
/// another instance). They stay installed until the process ends: tokio never gives a signal back
/// to its default action.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (signals, received) = tokio::sync::mpsc::channel(4);
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        match signal(kind) {
            Ok(mut signal) => {
                let signals = signals.clone();
                tokio::spawn(async move {
                    while signal.recv().await.is_some() {
                        if signals.send(name).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for {name}"),
        }
    }
    tokio::spawn(on_signals(received, stop, || std::process::exit(1)));
    stopping
}

/// The first signal of `received` turns `stop` true (a clean shutdown); the second calls `exit`,
/// for an operator whose shutdown is stuck (a call that does not end, a runtime that does not
/// answer). With no signal source left, `stop` is kept (dropping it would read as a shutdown).
async fn on_signals(
    mut received: tokio::sync::mpsc::Receiver<&'static str>,
    stop: tokio::sync::watch::Sender<bool>,
    exit: impl FnOnce(),
) {
    let Some(first) = received.recv().await else {
        return std::future::pending().await;
    };
    tracing::info!("{first}: shutting down (another SIGTERM or SIGINT exits at once)");
    let _ = stop.send(true);
    let Some(second) = received.recv().await else {
        return std::future::pending().await;
    };
    tracing::warn!("{second} during the shutdown: exiting at once (status 1)");
    exit();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    /// The first signal asks for a clean shutdown; the second exits at once.
    #[tokio::test]
    async fn a_second_signal_exits_at_once() {
        let (signals, received) = tokio::sync::mpsc::channel(4);
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let exited = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(super::on_signals(received, stop, {
            let exited = exited.clone();
            move || exited.store(true, Ordering::SeqCst)
        }));
        signals.send("SIGTERM").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), stopping.wait_for(|stop| *stop))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!exited.load(Ordering::SeqCst), "exited at the first signal");
        signals.send("SIGINT").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("no exit at the second signal")
            .unwrap();
        assert!(exited.load(Ordering::SeqCst));
    }

    /// Without any signal source (neither handler installed), the shutdown is not started.
    #[tokio::test]
    async fn no_signal_source_is_no_shutdown() {
        let (signals, received) = tokio::sync::mpsc::channel::<&'static str>(1);
        drop(signals);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(super::on_signals(received, stop, || {}));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());
        assert!(!*stopping.borrow());
        assert!(stopping.has_changed().is_ok(), "the sender is kept");
        task.abort();
    }

    /// This test binary's own limit, lowered and raised again (to 1024, which the other tests of
    /// this binary, running meanwhile, do not come near).
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let Some(hard) = getrlimit(Resource::Nofile).maximum.filter(|h| *h > 1024) else {
            eprintln!("a hard limit of open files of at most 1024: nothing to raise here");
            return;
        };
        let low = Rlimit {
            current: Some(1024),
            maximum: Some(hard),
        };
        setrlimit(Resource::Nofile, low).unwrap();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(1024));
        super::raise_open_files_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
