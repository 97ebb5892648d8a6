//! The plugin's `kube::Client`: from a kubeconfig file, else in-cluster, through
//! [`client_from_config`].

use std::path::{Path, PathBuf};

use hal::ErrorKind;

use super::client_from_config;

/// Why no client could be made.
///
/// No variant keeps kube's parse error of a kubeconfig: its text quotes the file's lines around the
/// error, and a kubeconfig holds tokens and keys. A file that does not parse is named with the line,
/// the column and a short reason only ([`ConnectError::ParseKubeconfig`]), in `Display` and `Debug`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file could not be read.
    #[error("reading kubeconfig {}{}", path.display(), single_file_hint(path))]
    ReadKubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig file is not YAML, or not a kubeconfig.
    #[error("kubeconfig {}{}: {reason} (the file's text is not shown: it may hold credentials)",
        path.display(), at_line(*location))]
    ParseKubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// Where the parser stopped: line and column, from 1.
        location: Option<(u64, u64)>,
        /// The parser's reason, without the file's text (quoted values are left out).
        reason: String,
    },
    /// The kubeconfig file was read but does not make a configuration (no current context, a bad
    /// certificate, ...).
    #[error("using kubeconfig {}: {error}", path.display())]
    UseKubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// What went wrong (its text holds its causes: it is not kept as a source, which would
        /// print them twice).
        error: kube::config::KubeconfigError,
    },
    /// No file was named and there is neither an in-cluster configuration nor a usable default
    /// kubeconfig (`~/.kube/config`).
    #[error(
        "no --kubeconfig (or KUBECONFIG), no in-cluster configuration ({in_cluster}) and no \
             usable default kubeconfig ({kubeconfig})"
    )]
    NoConfiguration {
        /// Why there is no in-cluster configuration.
        in_cluster: String,
        /// Why the default kubeconfig made no configuration (a file that does not parse: as
        /// [`ConnectError::ParseKubeconfig`] says it).
        kubeconfig: String,
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
            ConnectError::ReadKubeconfig { source, .. } => ErrorKind::from_io(source),
            ConnectError::NoConfiguration { .. } => ErrorKind::Unsupported,
            ConnectError::ParseKubeconfig { .. }
            | ConnectError::UseKubeconfig { .. }
            | ConnectError::Build { .. } => ErrorKind::Malformed,
        }
    }
}

/// A hint after a path with a `:` in it: `KUBECONFIG` is read as one file here, not as kubectl's
/// list of files.
fn single_file_hint(path: &Path) -> &'static str {
    match path.as_os_str().as_encoded_bytes().contains(&b':') {
        true => " (a single file: KUBECONFIG is not read as a ':'-separated list)",
        false => "",
    }
}

fn at_line(location: Option<(u64, u64)>) -> String {
    location
        .map(|(line, column)| format!(", line {line}, column {column}"))
        .unwrap_or_default()
}

/// Longest reason kept from a parse error, in characters.
const MAX_REASON: usize = 120;

/// [`ConnectError`] of a kubeconfig `path` that `Kubeconfig::read_from` refused.
fn read_error(path: &Path, error: kube::config::KubeconfigError) -> ConnectError {
    use kube::config::KubeconfigError;
    let path = path.to_owned();
    match error {
        KubeconfigError::ReadConfig(source, _) => ConnectError::ReadKubeconfig { path, source },
        KubeconfigError::Parse(parse) => ConnectError::ParseKubeconfig {
            path,
            location: parse.location().map(|at| (at.line(), at.column())),
            // The first line of the message without its snippet ("expected sequence start at line
            // 6, column 11"), without the place (kept above) and without quoted values (`invalid
            // type: string "...", expected a sequence`).
            reason: short_reason(&parse.without_snippet().to_string()),
        },
        // Several YAML documents in the file that do not merge: no text of the file.
        other => ConnectError::ParseKubeconfig {
            path,
            location: None,
            reason: other.to_string(),
        },
    }
}

/// `message`'s first line, without a location prefix or suffix and with every quoted span
/// (`` `...` ``, `"..."`) replaced by `…`, control characters escaped, at most [`MAX_REASON`]
/// characters.
fn short_reason(message: &str) -> String {
    let mut line = message.lines().next().unwrap_or_default().trim();
    line = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        line = after;
    }
    if let Some((before, _)) = line.rsplit_once(" at line ") {
        line = before;
    }
    let mut reason = String::with_capacity(line.len());
    let mut open: Option<char> = None;
    for c in line.chars() {
        match open {
            Some(quote) if c == quote => {
                reason.push('…');
                reason.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                reason.push(c);
                if c == '`' || c == '"' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        reason.push('…');
    }
    let reason = if reason.is_empty() {
        "not a valid kubeconfig"
    } else {
        &reason
    };
    hal::text::escape_where(reason, hal::text::acts_on_terminal, MAX_REASON).into_owned()
}

/// A client from the kubeconfig file `kubeconfig`, else from the default kubeconfig
/// (`~/.kube/config`), else in-cluster (kube's `Config::infer`, with its errors told without the
/// text of a file). Every response must start within [`super::CALL_TIMEOUT`]
/// ([`super::call_timeout_layer`]): a hung API server fails the call instead of holding it, and
/// with it a claim's Prepare. Idle connections past [`super::MAX_IDLE_CONNECTIONS`] are closed
/// ([`client_from_config`]).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, ConnectError> {
    let options = kube::config::KubeConfigOptions::default();
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|error| read_error(path, error))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|error| ConnectError::UseKubeconfig {
                    path: path.to_owned(),
                    error,
                })?
        }
        None => {
            // As `Config::infer`: the default kubeconfig first, then in-cluster.
            let from_file = match kube::config::Kubeconfig::read() {
                Ok(file) => kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|error| error.to_string()),
                Err(kube::config::KubeconfigError::ReadConfig(io, path)) => {
                    Err(format!("reading {}: {io}", path.display()))
                }
                Err(error) => Err(read_error(Path::new("~/.kube/config"), error).to_string()),
            };
            let mut config = match from_file {
                Ok(config) => config,
                Err(kubeconfig) => kube::Config::incluster().map_err(|in_cluster| {
                    ConnectError::NoConfiguration {
                        in_cluster: in_cluster.to_string(),
                        kubeconfig,
                    }
                })?,
            };
            config.apply_debug_overrides();
            config
        }
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

    /// Every text of `error`: its `Display`, its causes as `{:#}` joins them, its `Debug`.
    fn every_text(error: &ConnectError) -> String {
        let mut text = format!("{error}\n{error:?}\n");
        let mut cause = std::error::Error::source(error);
        while let Some(error) = cause {
            text += &format!(": {error} / {error:?}");
            cause = error.source();
        }
        text
    }

    /// kube's parse error quotes the lines around the error (`5 |   user: {token: ...}`): the
    /// error of a kubeconfig that does not parse names its file, line and column, never its text.
    #[tokio::test]
    async fn a_kubeconfig_that_does_not_parse_is_named_without_its_text() {
        const SECRET: &str = "SECRET-TOKEN-abc123";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubeconfig");
        let head = "apiVersion: v1\nkind: Config\nusers:\n- name: u\n";
        for (body, line) in [
            (format!("  user: {{token: {SECRET}}}\nclusters: 5\n"), 6),
            (format!("  user: {{token: {SECRET}\nclusters: []\n"), 6),
            (format!("  user: {SECRET}\n"), 5),
            (format!("  user: {{token: [{SECRET}]}}\n"), 5),
            (format!("clusters: \"{SECRET}\"\n"), 5),
            (format!("current-context: [`{SECRET}`]\n"), 5),
        ] {
            std::fs::write(&file, format!("{head}{body}")).unwrap();
            let error = connect(Some(&file)).await.err().unwrap();
            let text = every_text(&error);
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains(" | "), "no quoted lines: {text}");
            assert!(
                matches!(error, ConnectError::ParseKubeconfig { location: Some((l, _)), .. } if l == line),
                "{text}"
            );
            assert!(text.contains(&*file.to_string_lossy()), "{text}");
            assert!(text.contains(&format!("line {line}, column ")), "{text}");
            assert_eq!(error.kind(), ErrorKind::Malformed);
        }
        // A short reason is kept.
        std::fs::write(&file, format!("{head}clusters: 5\n")).unwrap();
        let error = connect(Some(&file)).await.err().unwrap();
        assert!(
            error.to_string().ends_with(
                ", line 5, column 11: expected sequence start (the file's text is not shown: it \
                 may hold credentials)"
            ),
            "{error}"
        );
    }

    /// A file that is not there: its path, the OS error once, and for a `:` in the path that
    /// KUBECONFIG names a single file.
    #[tokio::test]
    async fn a_kubeconfig_list_is_read_as_one_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let list = format!("{0}/a:{0}/b", dir.path().display());
        let error = connect(Some(Path::new(&list))).await.err().unwrap();
        let text = every_text(&error);
        assert!(
            text.starts_with(&format!("reading kubeconfig {list} (a single file")),
            "{text}"
        );
        assert_eq!(error.kind(), ErrorKind::NotFound);
        // As `{:#}` shows it.
        let mut shown = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(error) = cause {
            shown += &format!(": {error}");
            cause = error.source();
        }
        assert_eq!(shown.matches("os error").count(), 1, "{shown}");
        let plain = dir.path().join("a");
        let error = connect(Some(&plain)).await.err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("reading kubeconfig {}", plain.display())
        );
    }

    #[test]
    fn a_reason_keeps_no_quoted_value() {
        assert_eq!(
            short_reason(
                "invalid type: string \"s3cr3t\", expected a sequence at line 3, column 4"
            ),
            "invalid type: string \"…\", expected a sequence"
        );
        assert_eq!(short_reason("unknown field `s3cr3t"), "unknown field `…");
        assert_eq!(
            short_reason("error: line 6 column 9: did not find expected ',' or '}'\n 5 | x"),
            "did not find expected ',' or '}'"
        );
        assert_eq!(short_reason(""), "not a valid kubeconfig");
        assert!(short_reason(&"x".repeat(500)).chars().count() <= MAX_REASON + 1);
    }
}
