//! Checks `wasi:sockets` TCP as an app built with spin-sdk 5.x reaches it,
//! through `std::net` (wasi:sockets on wasm32-wasip2): `GET /?addr=HOST:PORT`
//! connects there, sends `ping\n`, expects the line back, and answers 200
//! `ok`, 500 with what went wrong, or 403 `access-denied: ...` when the host
//! refuses the address.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let address = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("addr="))
        .unwrap_or_default()
        .to_owned();
    match exchange(&address) {
        Ok(line) if line == "ping\n" => Response::new(200, "ok"),
        Ok(line) => Response::new(500, format!("got {line:?} back, want \"ping\\n\"")),
        Err(error) if error.kind() == ErrorKind::PermissionDenied => {
            Response::new(403, format!("access-denied: {error}"))
        }
        Err(error) => Response::new(500, format!("{:?}: {error}", error.kind())),
    }
    .into_response()
}

fn exchange(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(b"ping\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}
