//! Serving HTTP/1 and HTTP/2 (h2c) connections under limits, for the app
//! listener and the ops listener alike: a header-read timeout, an idle
//! timeout for kept-alive connections, a cap on open connections, and
//! graceful shutdown.
//!
//! hyper has no idle timer, and its header-read timer starts only once a
//! connection is known to speak HTTP/1. So each connection counts its
//! requests in flight (until the response body is sent) and is shut down
//! gracefully once that count has stayed zero for too long: the header
//! timeout before its first request, the idle timeout after. A client that
//! then does not let it close is dropped after another header timeout.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long to wait before accepting again after `accept` failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What one client may hold open on a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that has not sent a request's headers within this long
    /// is closed (slow-loris clients hold nothing for long).
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight for this long is
    /// closed, so idle clients do not hold connection slots. (On HTTP/1,
    /// hyper restarts the header timer while it waits for the next request,
    /// so the shorter of the two applies there.)
    pub idle_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

/// Serves connections from `listener` until `shutdown` resolves, each with
/// the service `service_for(client address)` makes; then stops accepting
/// and gives in-flight requests up to 30 s to finish. `name` labels the
/// listener in logs.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    limits: ConnectionLimits,
    service_for: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    // A permit per open connection: past the cap, new connections wait in
    // the kernel's backlog until one closes.
    let open = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    // Every connection holds a receiver; once all are gone, all are closed.
    let (stop, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!("{name} listener: accept failed: {error}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            client,
            limits,
            stop: stop.subscribe(),
            _open: permit,
        };
        tokio::spawn(connection.serve(stream, service_for(client)));
    }
    drop(listener);
    tracing::info!("{name} listener shutting down: finishing in-flight requests");
    stop.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "{name} listener: in-flight requests still running after {SHUTDOWN_GRACE:?}; exiting"
        );
    }
    Ok(())
}

/// One accepted connection and what it needs while it is open.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    client: SocketAddr,
    limits: ConnectionLimits,
    /// Turns `true` when the listener shuts down; dropped when this
    /// connection is closed, which is what the listener waits for.
    stop: watch::Receiver<bool>,
    /// Frees a connection slot when dropped.
    _open: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves `stream` until the client closes it, or shuts it down
    /// gracefully (in-flight requests finish) when it stays quiet too long
    /// or the listener stops.
    async fn serve<S, B>(mut self, stream: TcpStream, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let in_flight = Arc::new(watch::Sender::new(0));
        let mut activity = in_flight.subscribe();
        let service = Counted {
            inner: service,
            in_flight,
        };
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let limits = self.limits;
        // Before the first request the header timeout applies too: hyper's
        // own header timer does not run while the protocol is detected.
        let before_first = limits.header_timeout.min(limits.idle_timeout);
        let ended = tokio::select! {
            ended = connection.as_mut() => Some(ended),
            () = quiet(&mut activity, before_first, limits.idle_timeout) => {
                tracing::debug!(client = %self.client, "closing a quiet connection");
                None
            }
            _ = self.stop.wait_for(|stop| *stop) => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                connection.as_mut().graceful_shutdown();
                // An HTTP/2 client that never answers the GOAWAY's ping would
                // keep the connection open: it is dropped once nothing has
                // been in flight for the header timeout.
                tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = quiet(&mut activity, limits.header_timeout, limits.header_timeout) => {
                        tracing::debug!(client = %self.client, "dropping a connection that did not close");
                        Ok(())
                    }
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(client = %self.client, "connection ended: {error}");
        }
    }
}

/// Resolves once no request has been in flight for `first` (counted from
/// now), or later for `then` (counted from the end of the last request).
async fn quiet(in_flight: &mut watch::Receiver<usize>, first: Duration, then: Duration) {
    let mut allowed = first;
    loop {
        // The sender is shared by the service and every response body in
        // flight: once it is gone, nothing is in flight or can start.
        if in_flight.wait_for(|count| *count == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(allowed, in_flight.changed())
            .await
            .is_err()
        {
            return;
        }
        allowed = then;
    }
}

/// `inner`, counting each request as in flight until its response body has
/// been sent (or dropped).
struct Counted<S> {
    inner: S,
    in_flight: Arc<watch::Sender<usize>>,
}

impl<S, B> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.in_flight);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody {
                body,
                _in_flight: guard,
            }))
        })
    }
}

/// One request in flight on a connection; dropping it ends the request.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(in_flight: &Arc<watch::Sender<usize>>) -> Self {
        in_flight.send_modify(|count| *count += 1);
        Self(in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// A response body that keeps its request in flight while it is sent.
struct CountedBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::convert::Infallible;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A listener on a free port whose every response takes `respond_after`.
    struct TestListener {
        address: SocketAddr,
        /// Shuts the listener down.
        stop: oneshot::Sender<()>,
        /// Notified when a request reaches the service.
        started: Arc<Notify>,
    }

    async fn start(limits: ConnectionLimits, respond_after: Duration) -> TestListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let started = Arc::new(Notify::new());
        let notify = started.clone();
        let service_for = move |_client| {
            let notify = notify.clone();
            hyper::service::service_fn(move |_request| {
                notify.notify_one();
                async move {
                    tokio::time::sleep(respond_after).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            })
        };
        tokio::spawn(serve("test", listener, limits, service_for, async {
            let _ = stopped.await;
        }));
        TestListener {
            address,
            stop,
            started,
        }
    }

    fn limits(header_timeout: u64, idle_timeout: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(header_timeout),
            idle_timeout: Duration::from_millis(idle_timeout),
            max_connections: 10,
        }
    }

    /// Reads one `ok` response from `stream`.
    async fn read_response(stream: &mut TcpStream) {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 512];
        while !seen.ends_with(b"\r\n\r\nok") {
            let read = stream.read(&mut buffer).await.expect("read the response");
            assert_ne!(read, 0, "closed before the response: {seen:?}");
            seen.extend_from_slice(&buffer[..read]);
        }
    }

    /// How long until the server closes `stream` (what it sends before, a
    /// GOAWAY say, is skipped), waiting up to 5 s.
    async fn closed_after(stream: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buffer = [0u8; 512];
        loop {
            let left = Duration::from_secs(5).saturating_sub(started.elapsed());
            match tokio::time::timeout(left, stream.read(&mut buffer)).await {
                Err(_) => panic!("still open after 5 s"),
                Ok(Ok(0) | Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_once_idle_for_the_idle_timeout() {
        let server = start(limits(10_000, 300), Duration::ZERO).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        // Kept alive: a second request on the same connection is served.
        for _ in 0..2 {
            stream.write_all(REQUEST).await.expect("send");
            read_response(&mut stream).await;
        }
        let idle = closed_after(&mut stream).await;
        assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    }

    #[tokio::test]
    async fn a_request_running_longer_than_the_idle_timeout_is_answered() {
        let server = start(limits(10_000, 200), Duration::from_millis(600)).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream.write_all(REQUEST).await.expect("send");
        read_response(&mut stream).await;
        closed_after(&mut stream).await;
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
        let server = start(limits(300, 60_000), Duration::ZERO).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let quiet = closed_after(&mut stream).await;
        assert!(
            quiet >= Duration::from_millis(250),
            "closed after {quiet:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_http2_client_that_ignores_goaway_is_dropped() {
        let server = start(limits(300, 300), Duration::ZERO).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        // The HTTP/2 preface and an empty SETTINGS frame; then no answer to
        // anything, the server's closing PING included.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .expect("send the preface");
        let idle = closed_after(&mut stream).await;
        assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish_then_closes_its_connection() {
        let server = start(limits(10_000, 60_000), Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream.write_all(REQUEST).await.expect("send");
        server.started.notified().await;
        server.stop.send(()).expect("the listener is running");
        read_response(&mut stream).await;
        closed_after(&mut stream).await;
    }
}
