//! Local servers for outbound requests to reach. The HTTP one answers every
//! request the way a test asks and counts what it sees, so a test can tell
//! a request that reached it from one the host denied.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the server answers: from the request's head and its whole body.
pub type Respond = fn(&http::request::Parts, Bytes) -> Response<Full<Bytes>>;

/// A running upstream server; it stops with the test's runtime.
pub struct Upstream {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    /// Answers `200 hello from upstream <path>` to everything.
    pub async fn hello() -> Upstream {
        Upstream::start(|parts, _| hello_from(parts.uri.path(), StatusCode::OK)).await
    }

    /// Answers `respond(request)` to every request.
    pub async fn start(respond: Respond) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream server");
        let address = listener.local_addr().expect("the upstream's address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|collected| collected.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(respond(&parts, body))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Upstream { address, requests }
    }

    /// Its address, `127.0.0.1:PORT`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`, as a guest addresses it.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many requests reached it.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// `status` with the body `hello from upstream <path>`.
pub fn hello_from(path: &str, status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "hello from upstream {path}"
    ))));
    *response.status_mut() = status;
    response
}

/// A TCP server on 127.0.0.1 that sends back the first line each
/// connection sends; its port.
pub async fn tcp_echo_server() -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(reader).read_line(&mut line).await.is_ok() {
                    let _ = writer.write_all(line.as_bytes()).await;
                }
            });
        }
    });
    port
}
