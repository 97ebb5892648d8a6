//! The one retry the client makes by itself: an answer 429, 503 or 504 that says when to come back
//! (`Retry-After`, in seconds) is sent again after that long, plus up to [`RETRY_JITTER`], at most
//! [`MAX_RETRIES`] times and only while the waits of the call add up to at most [`RETRY_BUDGET`]
//! (before jitter). Any other answer, and one of these without `Retry-After` or asking for longer,
//! goes to the caller at once, with its status ([`ErrorKind::Server`](super::ErrorKind::Server)).
//!
//! That is client-go's rule (`checkWait` in `k8s.io/client-go/rest`: a 429 or 5xx is retried only
//! with a `Retry-After`, after that many seconds), narrowed to kube's three statuses and bounded by
//! the call's window. The API server sends `Retry-After` when it did not serve the request (priority
//! and fairness or max-in-flight rejecting it with a 429, a server shutting down), so sending it
//! again is safe for every verb, as client-go does.
//!
//! It replaces kube's `RetryPolicy::server_retry()` (kube-client 5.0.0, `client/retry.rs`), which
//! kube's own stack puts in when `Config::default_retry` is set (the default):
//! - it retried every 429, 503 and 504, with or without `Retry-After`, after 5 ms doubling, times
//!   1 to 3 at random, up to 15 times: a 503 without `Retry-After` (an API server starting, a load
//!   balancer with no backend) cost each call 10 or 11 requests (5 or 6 in the first 0.3 s)
//!   before the call's [`CALL_TIMEOUT`](super::CALL_TIMEOUT) ended it, and the caller then saw a
//!   timeout rather than the 503;
//! - tower's `Retry` clones the policy for each call, its random number generator included: every
//!   call of the process drew the same jitter, so concurrent calls (a burst of claim reads) failed
//!   and came back at the same instants;
//! - a `Retry-After` longer than the call's window was waited out until the call timed out.
//!
//! Tuning kube's policy cannot fix the last two. Dropping retries altogether would fail a claim's
//! Prepare on every 429 the API server answers under load (with `Retry-After: 1`), where client-go
//! based drivers wait a second and go on; the kubelet retries a failed Prepare only at the pod's next
//! sync. What the callers do with an error that reaches them: the publisher and the version read
//! back off ([`Backoff`](super::Backoff): 1 s doubling to 30 s, with jitter); a claim's read or
//! status write fails its Prepare, which the kubelet retries.

use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;

/// The most times one call is sent again.
pub const MAX_RETRIES: u32 = 3;

/// The most one call waits for its retries in all, before jitter: half of
/// [`CALL_TIMEOUT`](super::CALL_TIMEOUT), which bounds the whole call, so that with the jitter the
/// last try still has 4 s to be answered. A `Retry-After` that does not fit is not waited for.
pub const RETRY_BUDGET: Duration = Duration::from_secs(5);

/// The shortest wait, for a `Retry-After: 0`.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Up to this fraction of the wait is added at random, drawn afresh for each retry of each call,
/// so that calls told to come back at the same time do not all come back at once.
pub const RETRY_JITTER: f64 = 0.2;

/// The retry policy of the plugin's client (see the module's documentation), for
/// `tower::retry::RetryLayer`. Its state is one call's: tower clones it for each call.
#[derive(Debug, Clone, Default)]
pub struct RetryAfter {
    /// Retries of this call so far.
    retries: u32,
    /// Their waits, before jitter.
    waited: Duration,
}

impl RetryAfter {
    /// The wait before sending the call again after an answer `status` with `headers`, with `unit`
    /// (in [0, 1)) for the jitter; `None` when the answer goes to the caller.
    fn next_wait(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        unit: f64,
    ) -> Option<Duration> {
        let retryable = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        if !retryable || self.retries >= MAX_RETRIES {
            return None;
        }
        // Seconds, as the API server sends it; an HTTP date is not waited for.
        let seconds: u64 = headers
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let base = Duration::from_secs(seconds).max(MIN_RETRY_DELAY);
        let waited = self
            .waited
            .checked_add(base)
            .filter(|waited| *waited <= RETRY_BUDGET)?;
        self.retries += 1;
        self.waited = waited;
        Some(base.mul_f64(1.0 + RETRY_JITTER * unit.clamp(0.0, 1.0)))
    }
}

/// A number in [0, 1) that no other call shares: from a new `RandomState` (std gives each one other
/// keys), never from state cloned with the policy.
fn fresh_unit() -> f64 {
    super::Backoff::default().random_unit()
}

impl<B> tower::retry::Policy<Request<Body>, Response<B>, BoxError> for RetryAfter {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        let wait = self.next_wait(response.status(), response.headers(), fresh_unit())?;
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        // A streamed body cannot be sent twice: such a call is not retried.
        let mut clone = Request::new(request.body().try_clone()?);
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

    #[test]
    fn only_429_503_and_504_with_retry_after_in_seconds_are_retried() {
        for code in [429, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            let wait = RetryAfter::default().next_wait(status, &after("1"), 0.0);
            assert_eq!(wait, Some(Duration::from_secs(1)), "{code}");
            let none = RetryAfter::default().next_wait(status, &HeaderMap::new(), 0.0);
            assert_eq!(none, None, "{code} without Retry-After");
        }
        for code in [500, 502, 404, 409, 200] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                RetryAfter::default().next_wait(status, &after("1"), 0.0),
                None
            );
        }
        for value in ["Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5", ""] {
            let wait = RetryAfter::default().next_wait(UNAVAILABLE, &after(value), 0.0);
            assert_eq!(wait, None, "{value:?}");
        }
    }

    #[test]
    fn the_wait_is_retry_after_plus_at_most_20_percent_and_at_least_the_minimum() {
        let wait = |value, unit| RetryAfter::default().next_wait(UNAVAILABLE, &after(value), unit);
        assert_eq!(wait("2", 0.0), Some(Duration::from_secs(2)));
        assert_eq!(wait("2", 0.5), Some(Duration::from_millis(2200)));
        assert!(wait("2", 0.999_999).unwrap() < Duration::from_millis(2400));
        assert_eq!(wait("0", 0.0), Some(MIN_RETRY_DELAY));
    }

    #[test]
    fn a_call_is_retried_at_most_three_times_and_never_past_the_budget() {
        let mut policy = RetryAfter::default();
        let waits: Vec<_> = (0..5)
            .map_while(|_| policy.next_wait(UNAVAILABLE, &after("0"), 0.0))
            .collect();
        assert_eq!(waits, vec![MIN_RETRY_DELAY; MAX_RETRIES as usize]);

        // 2 s + 2 s fit in 5 s, a third does not.
        let mut policy = RetryAfter::default();
        assert!(policy.next_wait(UNAVAILABLE, &after("2"), 0.9).is_some());
        assert!(policy.next_wait(UNAVAILABLE, &after("2"), 0.9).is_some());
        assert_eq!(policy.next_wait(UNAVAILABLE, &after("2"), 0.0), None);

        // Asked to come back after the call's window: the answer goes to the caller now.
        for value in ["6", "30", &u64::MAX.to_string()] {
            let wait = RetryAfter::default().next_wait(UNAVAILABLE, &after(value), 0.0);
            assert_eq!(wait, None, "{value}");
        }
        assert_eq!(
            RetryAfter::default().next_wait(UNAVAILABLE, &after("5"), 0.0),
            Some(RETRY_BUDGET)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_clone_of_the_policy_draws_its_own_jitter() {
        // tower clones the policy for each call: the clones' waits must differ.
        let policy = RetryAfter::default();
        let now = tokio::time::Instant::now();
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                let mut result: Result<Response<()>, BoxError> = Ok(Response::builder()
                    .status(UNAVAILABLE)
                    .header("retry-after", "1")
                    .body(())
                    .unwrap());
                let mut request = Request::new(Body::empty());
                let sleep =
                    tower::retry::Policy::retry(&mut policy.clone(), &mut request, &mut result)
                        .expect("retried");
                sleep.deadline() - now
            })
            .collect();
        for wait in &waits {
            assert!(
                *wait >= Duration::from_secs(1) && *wait < Duration::from_millis(1200),
                "{wait:?}"
            );
        }
        assert!(waits.windows(2).all(|w| w[0] != w[1]), "{waits:?}");
    }
}
