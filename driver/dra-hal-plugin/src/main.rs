//! `dra-hal-plugin`: the DRA kubelet plugin. Publishes this node's devices as ResourceSlices, serves the
//! kubelet's registration and DRA gRPC services, prepares claims through CDI.

use std::process::ExitCode;

use clap::Parser;
use driver::plugin::app::{PluginArgs, init_logging, kube_client, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = PluginArgs::parse();
    init_logging(args.log_format);
    let result = async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        run(args, client, shutdown_signal()).await
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

/// SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
