//! The API server's version, read at a plugin's start (a driver decides what it publishes by it:
//! e.g. the counter layout of its ResourceSlices), retried until it answers; a refusal fails at once.

use super::{Backoff, CALL_TIMEOUT, ErrorKind, kind_of};

/// The API server refused to tell its version (401 or 403): asking again cannot help, so the plugin
/// stops at start and says what it needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "reading the API server's version (GET /version) was refused: {source}; {}",
    match code {
        401 => "the API server does not accept the plugin's credentials (its service account token \
                or --kubeconfig)",
        _ => "the plugin's service account needs RBAC `get` on the non-resource URL `/version` \
              (a ClusterRole rule `nonResourceURLs: [\"/version\"], verbs: [\"get\"]`; Kubernetes \
              grants it to every client through the ClusterRole `system:public-info-viewer` unless \
              that binding was removed)",
    }
)]
pub struct VersionRefused {
    /// 401 or 403.
    pub code: u16,
    /// The API server's answer.
    #[source]
    pub source: kube::Error,
}

impl VersionRefused {
    /// The coarse kind of this error: the API server rejected the call.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected(self.code)
    }
}

/// The `major` and `minor` of a version answer, as decimal numbers: its `major`/`minor` fields
/// (`minor` may end in `+`, as managed clusters' do), else its `gitVersion` (`v1.35.0-alpha.1+abc`:
/// source builds answer empty fields); `None` when neither says.
pub fn major_minor(
    info: &k8s_openapi::apimachinery::pkg::version::Info,
) -> Option<(String, String)> {
    let number = |text: &str| {
        let digits = text.trim_end_matches('+');
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.to_owned())
    };
    if let (Some(major), Some(minor)) = (number(&info.major), number(&info.minor)) {
        return Some((major, minor));
    }
    let release = info.git_version.strip_prefix('v')?;
    let mut parts = release.split(['.', '-', '+']);
    Some((number(parts.next()?)?, number(parts.next()?)?))
}

/// One read of the API server's version (`major`, `minor`, [`major_minor`]): the refusal
/// (`Err(Ok)`), or why there is none this time and of what kind (`Err(Err)`).
pub async fn server_version_once(
    client: &kube::Client,
) -> Result<(String, String), Result<VersionRefused, (String, ErrorKind)>> {
    // The whole call, body included, within CALL_TIMEOUT: the client's own timeout covers only
    // the answer's headers, and a server that sends them and stalls would hold the caller.
    match tokio::time::timeout(CALL_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(info)) => major_minor(&info).ok_or_else(|| {
            let why = format!(
                "its answer names no version (major {:?}, minor {:?}, gitVersion {:?})",
                info.major, info.minor, info.git_version
            );
            Err((why, ErrorKind::Other))
        }),
        Ok(Err(source)) => match kind_of(&source) {
            ErrorKind::Rejected(code @ (401 | 403)) => Err(Ok(VersionRefused { code, source })),
            kind => Err(Err((source.to_string(), kind))),
        },
        Err(_) => Err(Err(("no answer".to_owned(), ErrorKind::Timeout))),
    }
}

/// The API server's version (`major`, `minor`, decimal, [`major_minor`]): asked until it answers
/// with one (with [`Backoff`] between tries), never guessed. A refusal (401, 403) fails at once:
/// retrying cannot change the plugin's credentials or RBAC.
pub async fn server_version_of(client: &kube::Client) -> Result<(String, String), VersionRefused> {
    let mut backoff = Backoff::default();
    loop {
        let error = match server_version_once(client).await {
            Ok(version) => return Ok(version),
            Err(Ok(refused)) => return Err(refused),
            Err(Err(failed)) => failed,
        };
        let delay = backoff.next_delay();
        // A driver must not guess: e.g. guessing the 1.34 counter layout would make every
        // partitioned GPU invisible to a 1.35+ scheduler, which reads a slice with counters as
        // counters only.
        tracing::warn!(error = %error.0, kind = %error.1, retry_in_ms = delay.as_millis(),
            "cannot read the API server's version; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::server_version_of;
    use crate::client::{Backoff, ErrorKind, call_timeout_layer};
    use crate::fake_api::FakeApi;

    #[test]
    fn the_version_is_read_from_its_fields_else_from_its_git_version() {
        let info =
            |major: &str, minor: &str, git: &str| k8s_openapi::apimachinery::pkg::version::Info {
                major: major.into(),
                minor: minor.into(),
                git_version: git.into(),
                ..Default::default()
            };
        let pair = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        assert_eq!(
            super::major_minor(&info("1", "35", "v1.35.1")),
            pair("1", "35")
        );
        assert_eq!(
            super::major_minor(&info("1", "34+", "v1.34.2-eks-1")),
            pair("1", "34")
        );
        // Source builds answer empty fields: the release in gitVersion says it.
        assert_eq!(
            super::major_minor(&info("", "", "v1.35.0-alpha.1+0123abc")),
            pair("1", "35")
        );
        assert_eq!(
            super::major_minor(&info("1", "x", "v1.36.0")),
            pair("1", "36")
        );
        assert_eq!(super::major_minor(&info("", "", "")), None);
        assert_eq!(super::major_minor(&info("", "", "v1")), None);
    }

    /// The version is never guessed: an API server that fails the version read is asked again, after
    /// a backoff, until it answers (the fake answers 1.34).
    #[tokio::test(start_paused = true)]
    async fn the_version_read_waits_for_the_api_servers_answer() {
        let mut api = FakeApi::with_node("n");
        api.fail_once.push(("GET /version".into(), 503));
        api.fail_once.push(("GET /version".into(), 503));
        let state = Arc::new(Mutex::new(api));
        let client = FakeApi::mock_client(state.clone(), &call_timeout_layer());
        let started = tokio::time::Instant::now();
        let (major, minor) = server_version_of(&client).await.unwrap();
        assert_eq!((major.as_str(), minor.as_str()), ("1", "34"));
        let asked = state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.short() == "GET /version")
            .count();
        assert_eq!(asked, 3);
        assert!(
            started.elapsed() >= Backoff::START * 3,
            "{:?}",
            started.elapsed()
        );
    }

    /// A server that never finishes its answer does not hold the start: each try ends after
    /// `CALL_TIMEOUT` (here no client layer bounds the call) and the next gets the version.
    #[tokio::test(start_paused = true)]
    async fn a_version_read_that_is_never_answered_is_retried_after_the_call_timeout() {
        let state = Arc::new(Mutex::new(FakeApi::with_node("n")));
        state.lock().unwrap().set_hung(true);
        let client = FakeApi::mock_client(state.clone(), &tower::layer::util::Identity::new());
        let read = tokio::spawn(async move { server_version_of(&client).await });
        let asked = || {
            let api = state.lock().unwrap();
            api.log
                .iter()
                .filter(|l| l.short() == "GET /version")
                .count()
        };
        tokio::time::sleep(crate::client::CALL_TIMEOUT * 2 + Backoff::START * 4).await;
        assert!(asked() >= 2, "asked {} times", asked());
        state.lock().unwrap().set_hung(false);
        let (major, minor) = read.await.unwrap().unwrap();
        assert_eq!((major.as_str(), minor.as_str()), ("1", "34"));
    }

    /// 401 and 403 are not retried: the start fails at once, naming what the plugin needs. Other
    /// errors (here a 404 and a 500 first) keep being retried.
    #[tokio::test(start_paused = true)]
    async fn a_refused_version_read_fails_at_once_naming_the_rbac_needed() {
        for (code, needs) in [
            (403, "RBAC `get` on the non-resource URL `/version`"),
            (401, "does not accept the plugin's credentials"),
        ] {
            let mut api = FakeApi::with_node("n");
            api.fail_once.push(("GET /version".into(), code));
            let state = Arc::new(Mutex::new(api));
            let client = FakeApi::mock_client(state.clone(), &call_timeout_layer());
            let started = tokio::time::Instant::now();
            let error = server_version_of(&client).await.unwrap_err();
            assert_eq!(
                started.elapsed(),
                std::time::Duration::ZERO,
                "{code}: no wait"
            );
            assert_eq!(error.code, code);
            assert_eq!(error.kind(), ErrorKind::Rejected(code));
            let text = error.to_string();
            assert!(
                text.contains("GET /version") && text.contains(needs),
                "{text}"
            );
            let asked = state.lock().unwrap().log.len();
            assert_eq!(asked, 1, "{code}: asked once");
        }
        // Errors that may pass are retried, as before.
        let mut api = FakeApi::with_node("n");
        api.fail_once.push(("GET /version".into(), 500));
        let state = Arc::new(Mutex::new(api));
        let client = FakeApi::mock_client(state.clone(), &call_timeout_layer());
        assert!(server_version_of(&client).await.is_ok());
    }
}
