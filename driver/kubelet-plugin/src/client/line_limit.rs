//! A bound on what the API server may send without a line break: [`LineLimited`] wraps every
//! response body of the plugin's client.
//!
//! Why: kube's client reads a response whole (`Client::request_text`) and splits a watch into lines
//! with tokio-util's `LinesCodec::new()`, whose line length has no limit (kube-client 5.0,
//! `client/mod.rs`). An API server (or a proxy in front of it) that sends an endless body, or a
//! watch line that never ends, grows the plugin's memory until the node kills it. The API server's
//! own objects are small: a request body is at most 3 MiB (`MaxRequestBodyBytes` in
//! `k8s.io/apiserver/pkg/server/config.go`), etcd keeps at most 1.5 MiB per object, and each watch
//! event is one line of compact JSON; the longest line the plugin reads is a list of its own node's
//! slices. [`MAX_LINE`] leaves room for several such objects on one line.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The most bytes a response may carry between two line breaks (or before the first): 16 MiB.
pub const MAX_LINE: usize = 16 << 20;

/// The error a body gives once more than its limit came without a line break; the call fails with
/// it (a read as a `kube::Error::Service`, a watch as `kube::Error::ReadEvents`).
#[derive(Debug, thiserror::Error)]
#[error(
    "the API server sent more than {limit} bytes without a line break; the response is dropped"
)]
pub struct LineTooLong {
    /// The limit that was passed.
    pub limit: usize,
}

/// A response body that fails with [`LineTooLong`] once more than `limit` bytes came without a
/// line break, and ends after that error.
#[derive(Debug)]
pub struct LineLimited<B> {
    inner: B,
    limit: usize,
    /// Bytes since the last line break.
    since_break: usize,
    failed: bool,
}

impl<B> LineLimited<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limit: usize) -> Self {
        LineLimited {
            inner,
            limit,
            since_break: 0,
            failed: false,
        }
    }
}

impl<B> Body for LineLimited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            self.since_break = match data.iter().rposition(|&b| b == b'\n') {
                Some(at) => data.len() - at - 1,
                None => self.since_break.saturating_add(data.len()),
            };
            if self.since_break > self.limit {
                self.failed = true;
                let limit = self.limit;
                return Poll::Ready(Some(Err(Box::new(LineTooLong { limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// Whether `error`, or an error in its chain of sources, is [`LineTooLong`].
pub(crate) fn is_line_too_long(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<LineTooLong>() {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use http_body_util::StreamBody;

    fn body(chunks: &[&'static str]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn lines_up_to_the_limit_pass_across_chunks() {
        // 4 bytes then a break, a line split over three chunks of 2 + 2 bytes, no trailing break.
        let limited = LineLimited::new(body(&["abcd\nef", "gh\nij", "kl"]), 4);
        let all = limited.collect().await.unwrap().to_bytes();
        assert_eq!(all, Bytes::from_static(b"abcd\nefgh\nijkl"));
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_fails_and_the_body_ends() {
        let mut limited = LineLimited::new(body(&["ab\ncd", "efg", "more\n"]), 4);
        let first = limited.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"ab\ncd"));
        let error = limited.frame().await.unwrap().unwrap_err();
        assert!(is_line_too_long(error.as_ref()), "{error}");
        assert!(error.to_string().contains("more than 4 bytes"), "{error}");
        assert!(limited.is_end_stream());
        assert!(limited.frame().await.is_none(), "nothing after the error");
    }

    #[test]
    fn the_error_is_found_behind_other_errors() {
        let inner: tower::BoxError = Box::new(LineTooLong { limit: 1 });
        let io = std::io::Error::other(kube::Error::Service(inner));
        assert!(is_line_too_long(&io));
        assert!(!is_line_too_long(&std::io::Error::other("x")));
    }
}
