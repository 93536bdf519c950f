//! gRPC calls on the HTTP trigger: the few things the host itself says to a
//! gRPC client, in gRPC's terms instead of bare HTTP statuses.
//!
//! The guest speaks gRPC on its own (framing, trailers); the host only
//! notices a gRPC request by its `content-type`, takes its `grpc-timeout` as
//! the call's deadline, and answers what it decides itself (overload, trap,
//! deadline, no route) as a trailers-only response: HTTP 200 with
//! `grpc-status` and `grpc-message` in the headers, as gRPC servers do.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::WasiBody;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC's own content type; `application/grpc+proto` and the like share it.
const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// The gRPC status codes the host answers with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The call ran out of time (its `grpc-timeout` or the component's).
    DeadlineExceeded = 4,
    /// The request body went over the component's `max_request_body`.
    ResourceExhausted = 8,
    /// No route for this method.
    Unimplemented = 12,
    /// The component failed (a trap) or the request was malformed.
    Internal = 13,
    /// The component is at its concurrency limit; the client may retry.
    Unavailable = 14,
}

/// A gRPC call as the host sees it: only its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// From `grpc-timeout`, when the client sent one that parses.
    pub timeout: Option<Duration>,
}

impl Call {
    /// The call described by `headers`, or `None` for a request that is not
    /// gRPC. Non-gRPC requests cost one header lookup.
    pub fn of(headers: &HeaderMap) -> Option<Call> {
        let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
        if !content_type.starts_with(GRPC_CONTENT_TYPE.as_bytes()) {
            return None;
        }
        let timeout = headers
            .get(GRPC_TIMEOUT)
            .and_then(|value| parse_timeout(value.as_bytes()));
        Some(Call { timeout })
    }

    /// The call's deadline: its own `grpc-timeout` when that is shorter than
    /// the component's `timeout`.
    pub fn deadline(call: Option<Call>, component_timeout: Duration) -> Duration {
        call.and_then(|call| call.timeout)
            .map_or(component_timeout, |timeout| timeout.min(component_timeout))
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), as the gRPC-over-HTTP/2 spec writes it.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Eight digits at most: the number fits in a u64 with room to spare.
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The gRPC status that tells a client what the host's HTTP `status` would.
pub fn code_for(status: StatusCode) -> Code {
    match status {
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// What the client is told with `code`; never internal detail.
fn message_for(code: Code) -> &'static str {
    match code {
        Code::DeadlineExceeded => "deadline exceeded",
        Code::ResourceExhausted => "request message larger than the component accepts",
        Code::Unimplemented => "no such method",
        Code::Internal => "the component failed",
        Code::Unavailable => "the component is at its concurrency limit; retry later",
    }
}

/// A trailers-only gRPC response: HTTP 200 whose headers end the call with
/// `code`.
pub fn status_response(code: Code) -> Response<WasiBody> {
    let body = Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(GRPC_CONTENT_TYPE),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code as u16));
    // The messages are plain ASCII without `%`, so need no percent-encoding.
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message_for(code)));
    response
}

/// Whether `version` can carry gRPC, which needs HTTP/2's trailers and
/// streams.
pub fn carried_by(version: Version) -> bool {
    version == Version::HTTP_2
}

/// The answer to gRPC over HTTP/1.x: `505` naming what to use instead.
pub fn http1_refused() -> Response<WasiBody> {
    const TEXT: &str = "gRPC needs HTTP/2: call this listener with HTTP/2 \
                        prior knowledge (h2c), e.g. `grpcurl -plaintext`\n";
    let body = Full::new(Bytes::from_static(TEXT.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for value in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"123456789S",
            b"-1S",
            b"1.5S",
        ] {
            assert_eq!(parse_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn only_grpc_content_types_make_a_grpc_call() {
        assert_eq!(
            Call::of(&headers(&[("content-type", "application/json")])),
            None
        );
        assert_eq!(Call::of(&headers(&[])), None);
        let call = Call::of(&headers(&[("content-type", "application/grpc+proto")]));
        assert_eq!(call, Some(Call { timeout: None }));
    }

    #[test]
    fn the_shorter_of_grpc_timeout_and_component_timeout_is_the_deadline() {
        let call = Call::of(&headers(&[
            ("content-type", "application/grpc"),
            ("grpc-timeout", "100m"),
        ]));
        let long = Duration::from_secs(30);
        assert_eq!(Call::deadline(call, long), Duration::from_millis(100));
        assert_eq!(
            Call::deadline(call, Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        assert_eq!(Call::deadline(None, long), long);
    }

    #[test]
    fn host_statuses_map_to_grpc_codes() {
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
        assert_eq!(code_for(StatusCode::INTERNAL_SERVER_ERROR), Code::Internal);
        assert_eq!(code_for(StatusCode::NOT_FOUND), Code::Unimplemented);
    }

    #[test]
    fn a_status_response_is_trailers_only_with_http_200() {
        let response = status_response(Code::Unavailable);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["content-type"], "application/grpc");
    }
}
