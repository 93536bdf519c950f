//! The HTTP side every service shares: JSON bodies in, JSON bodies out, and
//! errors as `{"error": "<code>", "message": "<for people>"}` with a 4xx
//! status for anything the caller can fix.

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request};

/// What every handler answers with.
pub type Reply = http::Response<FullBody<Bytes>>;

/// Request bodies larger than this are refused (413) before parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error the caller sees: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short, stable, machine-readable code (`invalid_request`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), when it helps.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed or fails validation.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no credentials, or credentials that do not check out.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: nothing here (or nothing this caller may see).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not supported here",
        )
    }

    /// 409: the request conflicts with what is stored.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413: the body is over [`MAX_BODY_BYTES`].
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    /// 422: well-formed, but it contradicts an earlier request.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429: too many attempts; try again after `seconds`.
    pub fn too_many(message: impl Into<String>, seconds: u64) -> Self {
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
        }
    }

    /// 503: a dependency did not answer; the request can be retried as is.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 500: the service's configuration is wrong in a way only its operator
    /// can fix; `message` tells them how. Retrying does not help.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured", message)
    }

    /// The response carrying this error.
    pub fn into_reply(self) -> Reply {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut reply = json(self.status, &body);
        if let Some(seconds) = self.retry_after {
            reply
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        reply
    }
}

impl From<spindle_sdk::sql::Error> for ApiError {
    /// Database trouble is never the caller's fault: it is 503 and logged.
    fn from(error: spindle_sdk::sql::Error) -> Self {
        eprintln!("database error: {error:?}");
        ApiError::unavailable("the database did not answer; try again")
    }
}

/// A JSON response with `status`.
pub fn json(status: StatusCode, body: &impl Serialize) -> Reply {
    // Serialising our own plain structs cannot fail; an empty body would
    // still be a valid answer if it did.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut reply = http::Response::new(FullBody::new(Bytes::from(bytes)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

/// Reads and parses a JSON request body. A body over 64 KiB is refused with
/// 413 as soon as that is known (from `content-length`, or once more than
/// 64 KiB have arrived), never read to its end; anything else wrong (not
/// JSON, a field missing or of the wrong type) is a 400 that says what.
pub async fn read_json<T: DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    if announced_length(&request).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large());
    }
    let body = read_body(request).await?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::invalid(format!("the body is not the expected JSON: {error}")))
}

/// What `content-length` says, if it is a number.
fn announced_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body, chunk by chunk, up to [`MAX_BODY_BYTES`]. Counting as it
/// arrives is what stops a client that sends more than it announced, or a
/// body that never ends, from holding the instance and its memory.
async fn read_body(request: Request) -> Result<Vec<u8>, ApiError> {
    let mut chunks = request.into_body().stream();
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::invalid(format!("could not read the body: {error:?}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The path's segments after `prefix`, for routes like `/orders/{id}`.
pub fn path_after<'a>(request: &'a Request, prefix: &str) -> Option<&'a str> {
    request
        .uri()
        .path()
        .strip_prefix(prefix)
        .map(|rest| rest.trim_end_matches('/'))
}
