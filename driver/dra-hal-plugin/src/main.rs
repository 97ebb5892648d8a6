//! `dra-hal-plugin`: the DRA kubelet plugin. Publishes this node's devices as ResourceSlices, serves the
//! kubelet's registration and DRA gRPC services, prepares claims through CDI. The wiring of the
//! driver's parts and the kit's is [`app`]; the policy is the `driver` library's.

mod app;

use std::process::ExitCode;
use std::time::Duration;

use app::{PluginArgs, init_logging, kube_client, run};
use clap::Parser;

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
    let args = PluginArgs::parse();
    init_logging(args.log_format);
    raise_open_files_limit();
    let stopping = shutdown_signal();
    let result = async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        run(args, client, stopping).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("dra-hal-plugin: {error:#}");
            ExitCode::FAILURE
        }
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

/// Becomes true at SIGTERM (the kubelet stopping the pod) or SIGINT. The handlers are installed
/// here, before the startup: the plugin runs as PID 1, for which the kernel drops a signal without
/// one, and the startup can wait long (an API server that does not answer, another instance).
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (terminate, interrupt) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tokio::spawn(async move {
        let wait = |signal: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM: shutting down"),
            () = wait(interrupt, "SIGINT") => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
    });
    stopping
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

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
