//! Test guest: `GET /?addr=HOST:PORT` connects a TCP socket there (through
//! `std::net`, which is `wasi:sockets` on wasm32-wasip2), sends `ping\n` and
//! answers 200 with the first line it reads back. A refused connection
//! answers 403 `access-denied: ...` when the host denied it, else 502 with
//! the error.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn connect(req: Request) -> Result<impl IntoResponse, http::Error> {
    let query = req.uri().query().unwrap_or_default();
    let Some(address) = query.strip_prefix("addr=") else {
        return http::Response::builder()
            .status(400)
            .body("expected ?addr=HOST:PORT".to_string());
    };
    let (status, body) = match exchange(address) {
        Ok(line) => (200, line),
        Err(error) if error.kind() == ErrorKind::PermissionDenied => {
            (403, format!("access-denied: {error}"))
        }
        Err(error) => (502, format!("{:?}: {error}", error.kind())),
    };
    http::Response::builder().status(status).body(body)
}

fn exchange(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(b"ping\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}
