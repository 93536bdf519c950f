//! HTTP/2 with prior knowledge (h2c) to upstreams whose
//! `allowed_outbound_hosts` entry is `http+h2c://...`: what gRPC over plain
//! TCP needs (trailers, streamed bodies, many calls on one connection).
//!
//! Unlike HTTP/1.1 (one connection per request, as wasmtime's default
//! sender does), h2c keeps one connection per `host:port` for the whole app
//! and multiplexes every instance's calls over it, as a gRPC channel does; a
//! closed connection is replaced on the next call. Timeouts follow the
//! guest's request options, with wasmtime's defaults.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::{SendResult, no_io};

/// wasmtime's default for each of the guest's request timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The app's open h2c connections, by `host:port`.
#[derive(Default)]
pub struct Connections(Mutex<HashMap<String, SendRequest<WasiBody>>>);

impl Connections {
    /// A sender on the open connection to `authority`, or on a new one.
    async fn sender(
        &self,
        authority: &str,
        connect_timeout: Duration,
    ) -> Result<SendRequest<WasiBody>, Error> {
        if let Some(sender) = self.lock().get(authority).filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?;
        // gRPC messages are small writes that must not wait for Nagle.
        stream.set_nodelay(true).map_err(Error::Connect)?;
        let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, WasiBody>(TokioIo::new(stream));
        let (sender, connection) = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        let peer = authority.to_string();
        tokio::spawn(async move {
            // Its calls see their own errors; this is only the connection's end.
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "h2c connection ended: {error}");
            }
        });
        // Two first calls racing both connect; the later one is kept, and
        // the other connection closes when its calls end.
        self.lock().insert(authority.to_string(), sender.clone());
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SendRequest<WasiBody>>> {
        // A panic while holding the map cannot leave it inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends `request` (an absolute `http://` URI) over h2c. Its I/O runs on
/// the connection's own task, so there is nothing for the caller to drive.
pub async fn send(
    connections: &Connections,
    mut request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
    };
    let authority = request
        .uri()
        .authority()
        .ok_or(Error::HttpRequestUriInvalid)?;
    let authority = match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:80"),
    };
    let mut sender = connections
        .sender(&authority, timeout(|o| o.connect_timeout))
        .await?;
    // `:authority` comes from the URI; HTTP/2 has no use for `Host`.
    *request.version_mut() = Version::HTTP_2;
    request.headers_mut().remove(http::header::HOST);
    let response = tokio::time::timeout(
        timeout(|o| o.first_byte_timeout),
        sender.send_request(request),
    )
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let between_bytes = timeout(|o| o.between_bytes_timeout);
    let response = response.map(|incoming| {
        ResponseBody {
            incoming,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
            between_bytes,
        }
        .boxed_unsync()
    });
    Ok((response, no_io()))
}

/// An h2c response body that fails when the upstream falls silent for
/// longer than the guest's `between-bytes-timeout`.
struct ResponseBody {
    incoming: Incoming,
    /// Fires `between_bytes` after the last frame.
    idle: Pin<Box<tokio::time::Sleep>>,
    between_bytes: Duration,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Error::from(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
