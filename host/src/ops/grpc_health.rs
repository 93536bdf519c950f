//! `grpc.health.v1.Health/Check` on the ops listener: the standard gRPC
//! health checking protocol over the same probes as `GET /ready`, so gRPC
//! tooling (grpc-health-probe, Kubernetes' gRPC probes) can ask too.
//!
//! The empty service name is the whole app; a component's id is that
//! component (serving while it is loaded and the app's dependencies are
//! up); any other name is `NOT_FOUND`, as the protocol says.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use http_body_util::StreamBody;
use hyper::body::Frame;
use prost::Message;

use super::ready::Readiness;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The 5-byte length prefix of a gRPC message.
const PREFIX_BYTES: usize = 5;

/// gRPC's `NOT_FOUND` and `INVALID_ARGUMENT`.
const NOT_FOUND: u16 = 5;
const INVALID_ARGUMENT: u16 = 3;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; empty for the whole server.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// A `ServingStatus`: 1 `SERVING`, 2 `NOT_SERVING`.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// `POST /grpc.health.v1.Health/Check`.
pub async fn check(State(readiness): State<Arc<Readiness>>, body: Bytes) -> Response<Body> {
    let Some(request) = decode(&body) else {
        return status_only(INVALID_ARGUMENT, "the request is not a HealthCheckRequest");
    };
    let report = readiness.report().await;
    match report.serving(&request.service) {
        Some(serving) => {
            let status = if serving { SERVING } else { NOT_SERVING };
            reply(&HealthCheckResponse { status })
        }
        None => status_only(NOT_FOUND, "unknown service"),
    }
}

/// The one message of a unary request body.
fn decode(body: &[u8]) -> Option<HealthCheckRequest> {
    let (prefix, message) = body.split_at_checked(PREFIX_BYTES)?;
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if prefix[0] != 0 || usize::try_from(length).ok()? != message.len() {
        return None;
    }
    HealthCheckRequest::decode(message).ok()
}

/// The reply message, then `grpc-status: 0` in the trailers.
fn reply(message: &HealthCheckResponse) -> Response<Body> {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(PREFIX_BYTES + encoded.len());
    framed.push(0);
    // A health response is a few bytes.
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let mut trailers = HeaderMap::new();
    trailers.insert(GRPC_STATUS, HeaderValue::from(0u16));
    let frames = [Frame::data(Bytes::from(framed)), Frame::trailers(trailers)];
    let body = StreamBody::new(futures::stream::iter(
        frames.map(Ok::<_, std::convert::Infallible>),
    ));
    grpc_response(Body::new(body))
}

/// A trailers-only reply: the status in the headers.
fn status_only(code: u16, message: &'static str) -> Response<Body> {
    let mut response = grpc_response(Body::empty());
    let headers = response.headers_mut();
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    response
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_request_decodes_and_anything_else_does_not() {
        let message = HealthCheckRequest {
            service: "users".into(),
        }
        .encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        assert_eq!(decode(&framed).map(|r| r.service), Some("users".into()));
        assert_eq!(decode(&framed[..framed.len() - 1]), None);
        assert_eq!(decode(b"\0\0"), None);
    }
}
