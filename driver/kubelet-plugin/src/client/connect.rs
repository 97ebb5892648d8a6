//! The plugin's `kube::Client`: from a kubeconfig file, else in-cluster, through
//! [`client_from_config`].

use std::path::{Path, PathBuf};

use hal::ErrorKind;

use super::client_from_config;

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file could not be read or parsed.
    #[error("reading kubeconfig {}", path.display())]
    ReadKubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig file was read but does not make a configuration (no current context, a bad
    /// certificate, ...).
    #[error("using kubeconfig {}", path.display())]
    UseKubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No file was named and there is neither an in-cluster configuration nor a default kubeconfig.
    #[error("no --kubeconfig and no in-cluster configuration")]
    NoConfiguration {
        /// What was tried.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The configuration does not make a client (e.g. its TLS settings).
    #[error("building the Kubernetes client")]
    Build {
        /// What went wrong.
        #[source]
        source: kube::Error,
    },
}

impl ConnectError {
    /// The coarse kind of this error: a kubeconfig file that is not there is [`ErrorKind::NotFound`],
    /// no configuration at all is [`ErrorKind::Unsupported`], the rest is [`ErrorKind::Malformed`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectError::ReadKubeconfig {
                source: kube::config::KubeconfigError::ReadConfig(io, _),
                ..
            } => ErrorKind::from_io(io),
            ConnectError::NoConfiguration { .. } => ErrorKind::Unsupported,
            ConnectError::ReadKubeconfig { .. }
            | ConnectError::UseKubeconfig { .. }
            | ConnectError::Build { .. } => ErrorKind::Malformed,
        }
    }
}

/// A client from the kubeconfig file `kubeconfig`, else in-cluster (or the default kubeconfig). Every
/// response must start within [`super::CALL_TIMEOUT`] ([`super::call_timeout_layer`]): a hung API server
/// fails the call instead of holding it, and with it a claim's Prepare. Idle connections past
/// [`super::MAX_IDLE_CONNECTIONS`] are closed ([`client_from_config`]).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ConnectError::ReadKubeconfig {
                    path: path.to_owned(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ConnectError::UseKubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|source| ConnectError::NoConfiguration { source })?,
    };
    client_from_config(config).map_err(|source| ConnectError::Build { source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kubeconfig_file_makes_a_client_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubeconfig");
        std::fs::write(&file, crate::fake_api::kubeconfig(1)).unwrap();
        assert!(connect(Some(&file)).await.is_ok());

        let missing = dir.path().join("missing");
        let error = connect(Some(&missing)).await.err().unwrap();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        assert!(
            error.to_string().contains(&*missing.to_string_lossy()),
            "{error}"
        );

        std::fs::write(&file, "kind: Config\ncurrent-context: nowhere\n").unwrap();
        let error = connect(Some(&file)).await.err().unwrap();
        assert!(
            matches!(error, ConnectError::UseKubeconfig { .. }),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Malformed);
    }
}
