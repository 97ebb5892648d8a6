//! What the API server's version decides: the counter layout of the slices and the taint effects.

use crate::api::{ErrorKind, kind_of};

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

/// The API server's version (`major`, `minor`), which decides the counter layout and the taint
/// effects: asked until it answers, never guessed. A refusal (401, 403) fails at once: retrying
/// cannot change the plugin's credentials or RBAC.
pub(super) async fn server_version_of(
    client: &kube::Client,
) -> Result<(String, String), VersionRefused> {
    let mut backoff = crate::api::Backoff::default();
    loop {
        match client.apiserver_version().await {
            Ok(info) => return Ok((info.major, info.minor)),
            Err(source) => {
                if let ErrorKind::Rejected(code @ (401 | 403)) = kind_of(&source) {
                    return Err(VersionRefused { code, source });
                }
                let delay = backoff.next_delay();
                // Guessing the 1.34 layout would make every partitioned GPU invisible to a 1.35+
                // scheduler, which reads a slice with counters as counters only.
                tracing::warn!(error = %source, kind = %kind_of(&source), retry_in_ms = delay.as_millis(),
                    "cannot read the API server's version, which decides the counter layout and taint effects; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether API server version `major.minor` is 1.35 or later: where counter sets get slices of their
/// own and the taint effect `None` is accepted.
fn at_least_1_35(major: &str, minor: &str) -> bool {
    let minor: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    matches!((major, minor), ("1", m) if m >= 35)
}

/// The counter layout the scheduler of API server version `major.minor` reads: counter sets in
/// their own slice from 1.35 on.
pub(super) fn counter_layout_for(major: &str, minor: &str) -> crate::slices::CounterLayout {
    use crate::slices::CounterLayout;
    match at_least_1_35(major, minor) {
        true => CounterLayout::OwnSlice,
        false => CounterLayout::SameSlice,
    }
}

/// Whether API server version `major.minor` accepts the informational taint effect `None` (1.35
/// and later): degraded devices are tainted with it there, and not at all on 1.34, whose API
/// server refuses the effect.
pub(super) fn informational_taints_for(major: &str, minor: &str) -> bool {
    at_least_1_35(major, minor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{counter_layout_for, informational_taints_for, server_version_of};
    use crate::fake_api::FakeApi;
    use crate::slices::CounterLayout;

    #[test]
    fn counter_sets_get_slices_of_their_own_from_1_35() {
        assert_eq!(counter_layout_for("1", "34"), CounterLayout::SameSlice);
        assert_eq!(counter_layout_for("1", "35"), CounterLayout::OwnSlice);
        assert_eq!(counter_layout_for("1", "37+"), CounterLayout::OwnSlice);
    }

    #[test]
    fn the_informational_taint_effect_is_used_from_1_35() {
        assert!(!informational_taints_for("1", "34"));
        assert!(informational_taints_for("1", "35"));
        assert!(informational_taints_for("1", "36+"));
        assert!(!informational_taints_for("2", "x"));
    }

    /// The layout is never guessed: an API server that fails the version read is asked again, after
    /// a backoff, until it answers (the fake answers 1.34).
    #[tokio::test(start_paused = true)]
    async fn the_counter_layout_waits_for_the_api_servers_version() {
        let mut api = FakeApi::with_node("n");
        api.fail_once.push(("GET /version".into(), 503));
        api.fail_once.push(("GET /version".into(), 503));
        let state = Arc::new(Mutex::new(api));
        let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
        let started = tokio::time::Instant::now();
        let (major, minor) = server_version_of(&client).await.unwrap();
        assert_eq!(counter_layout_for(&major, &minor), CounterLayout::SameSlice);
        let asked = state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.short() == "GET /version")
            .count();
        assert_eq!(asked, 3);
        assert!(
            started.elapsed() >= crate::api::Backoff::START * 3,
            "{:?}",
            started.elapsed()
        );
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
            let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
            let started = tokio::time::Instant::now();
            let error = server_version_of(&client).await.unwrap_err();
            assert_eq!(
                started.elapsed(),
                std::time::Duration::ZERO,
                "{code}: no wait"
            );
            assert_eq!(error.code, code);
            assert_eq!(error.kind(), crate::api::ErrorKind::Rejected(code));
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
        let client = FakeApi::mock_client(state.clone(), &crate::api::call_timeout_layer());
        assert!(server_version_of(&client).await.is_ok());
    }
}
