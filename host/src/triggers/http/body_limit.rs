//! The per-component cap on request bodies (`[component.x.tool.spindle]
//! max_request_body`).
//!
//! A declared `content-length` over the cap is refused before the component
//! runs. A body that grows past it (chunked, or HTTP/2 frames) is cut off:
//! the guest's read that crosses the cap fails with `HttpRequestBodySize`,
//! and the trigger answers 413 if the response has not started. Frames are
//! passed on as they come, so the host never holds more than one of them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::WasiBody;

/// The cap of a component that sets no `max_request_body`: 16 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 16 << 20;

/// Whether `headers` declare a body longer than `limit` bytes. A missing
/// or unreadable `content-length` declares nothing (hyper has already
/// refused malformed ones); the body is then limited as it is read.
pub fn declared_over(headers: &HeaderMap, limit: u64) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > limit)
}

/// Wraps `body` so that reading more than `limit` bytes from it fails; the
/// returned [`Overrun`] tells whether that happened.
pub fn limit(body: WasiBody, limit: u64) -> (WasiBody, Overrun) {
    let overrun = Overrun::default();
    let limited = LimitedBody {
        inner: body,
        limit,
        remaining: limit,
        overrun: overrun.clone(),
    };
    (limited.boxed_unsync(), overrun)
}

/// Set once a limited body was cut off; the trigger reads it after the call.
#[derive(Clone, Default)]
pub struct Overrun(Arc<AtomicBool>);

impl Overrun {
    /// Whether the body went past its limit.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A body that fails, for good, at the frame that takes it past `limit`.
struct LimitedBody {
    inner: WasiBody,
    limit: u64,
    remaining: u64,
    overrun: Overrun,
}

impl LimitedBody {
    fn too_large(&self) -> wasmtime_wasi_http::Error {
        wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit))
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Every read after the cut fails the same way: ending cleanly
        // would pass a truncated body off as complete.
        if self.overrun.happened() {
            return Poll::Ready(Some(Err(self.too_large())));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let length = frame.data_ref().map_or(0, |data| data.len() as u64);
        match self.remaining.checked_sub(length) {
            Some(remaining) => {
                self.remaining = remaining;
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                self.overrun.0.store(true, Ordering::Release);
                Poll::Ready(Some(Err(self.too_large())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.overrun.happened() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn body_of(chunks: &[&'static [u8]]) -> WasiBody {
        let frames = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))));
        StreamBody::new(futures::stream::iter(frames.collect::<Vec<_>>())).boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_up_to_the_limit_passes_whole() {
        let (body, overrun) = limit(body_of(&[b"abc", b"def"]), 6);
        let bytes = body.collect().await.expect("under the limit").to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
        assert!(!overrun.happened());
    }

    #[tokio::test]
    async fn the_read_that_crosses_the_limit_fails_and_so_does_every_later_one() {
        let (mut body, overrun) = limit(body_of(&[b"abc", b"def", b"ghi"]), 5);
        let first = body
            .frame()
            .await
            .expect("a frame")
            .expect("under the limit");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"abc"[..]));
        for _ in 0..2 {
            let error = body.frame().await.expect("not a clean end");
            assert!(
                matches!(
                    error,
                    Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(5)))
                ),
                "{error:?}"
            );
        }
        assert!(overrun.happened());
    }

    #[test]
    fn only_a_declared_length_over_the_limit_is_refused_up_front() {
        let headers = |length: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_LENGTH,
                length.parse().expect("a header value"),
            );
            headers
        };
        assert!(declared_over(&headers("1025"), 1024));
        assert!(!declared_over(&headers("1024"), 1024));
        assert!(!declared_over(&headers("not a number"), 1024));
        assert!(!declared_over(&HeaderMap::new(), 1024));
    }
}
