//! Test guest: `GET /<path>` answers the bytes of the file at `/<path>` in
//! the component's filesystem (what `files` mounted), 404 when there is no
//! such file. `PUT /<path>` tries to write it and answers 500 with the
//! error, so tests can check that the mounts are read-only.

use spin_sdk::http::{FullBody, IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn serve(req: Request) -> Result<impl IntoResponse, http::Error> {
    let path = req.uri().path().to_owned();
    let (status, body) = if req.method() == http::Method::PUT {
        match std::fs::write(&path, b"overwritten") {
            Ok(()) => (200, b"written".to_vec()),
            Err(error) => (500, error.to_string().into_bytes()),
        }
    } else {
        match std::fs::read(&path) {
            Ok(bytes) => (200, bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (404, b"no such file".to_vec())
            }
            Err(error) => (500, error.to_string().into_bytes()),
        }
    };
    http::Response::builder()
        .status(status)
        .body(FullBody::new(bytes::Bytes::from(body)))
}
