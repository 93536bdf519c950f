//! Raw TCP clients for the listener limits: connections that stall halfway
//! through their headers, and a check that the host closed a connection.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT`.
fn address(base_url: &str) -> &str {
    base_url.trim_start_matches("http://").trim_end_matches('/')
}

/// Opens a plain TCP connection to the listener at `base_url`.
pub async fn connect(base_url: &str) -> TcpStream {
    TcpStream::connect(address(base_url))
        .await
        .unwrap_or_else(|error| panic!("connecting to {base_url}: {error}"))
}

/// Opens `count` connections to `base_url` that each send half a request
/// line and then nothing more.
pub async fn stalled_connections(base_url: &str, count: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = connect(base_url).await;
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a request");
        stalled.push(stream);
    }
    stalled
}

/// Whether the host closed `stream` (read gives end of file or an error)
/// within `deadline`.
pub async fn closed_by_host(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buffer = [0u8; 256];
    loop {
        match tokio::time::timeout(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

/// Gives the host until one shared `deadline` to close every one of
/// `streams`; returns how many it left open.
pub async fn left_open(streams: &mut [TcpStream], deadline: Duration) -> usize {
    let until = Instant::now() + deadline;
    let mut open = 0;
    for stream in streams {
        let left = until.saturating_duration_since(Instant::now());
        if !closed_by_host(stream, left).await {
            open += 1;
        }
    }
    open
}

/// Sends `request` (raw HTTP/1.1) and reads until the answer contains
/// `ending` and, for a chunked answer, its last chunk; returns what was
/// read. Panics if the host closes the connection first or takes longer
/// than 10 s.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], ending: &str) -> String {
    stream.write_all(request).await.expect("send the request");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(10);
    while !answered(&String::from_utf8_lossy(&seen), ending) {
        let left = until.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {ending:?} within 10 s; got {:?}",
                    String::from_utf8_lossy(&seen)
                )
            })
            .expect("read the answer");
        assert_ne!(
            read,
            0,
            "closed before {ending:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Whether `seen` holds a whole answer ending in `ending`. A chunked body's
/// empty last chunk may come in a later write than the text before it; left
/// unread, it would be taken for the start of the next answer.
fn answered(seen: &str, ending: &str) -> bool {
    let Some(at) = seen.find(ending) else {
        return false;
    };
    let chunked = seen[..at]
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    !chunked || seen[at..].contains("\r\n0\r\n\r\n")
}
