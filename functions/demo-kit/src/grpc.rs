//! gRPC for the demo's services, next to their JSON API: messages are prost
//! types; this module is the one place that knows gRPC's wire shape around
//! them (each message behind a 5-byte prefix, the outcome in `grpc-status`
//! and `grpc-message` trailers).
//!
//! Unary calls read the one request message whole (bounded like JSON
//! bodies); streaming requests are read message by message ([`Incoming`]);
//! streaming replies go out message by message as the handler sends them,
//! with the status as the trailers that end the stream.
//!
//! [`call`] is the client side of a unary call, for one service calling
//! another (through service chaining, over h2c).

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::stream::LocalBoxStream;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{BoxBody, Request};

/// What a gRPC handler answers with: HTTP 200 and a body of framed messages
/// ending in trailers, or trailers only.
pub type Reply = http::Response<BoxBody>;

/// Request messages larger than this are refused with `RESOURCE_EXHAUSTED`.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The length prefix: a compression flag byte and a big-endian `u32`.
const PREFIX_BYTES: usize = 5;

/// How many streamed messages may wait for the client before `send` waits.
const STREAM_BUFFER: usize = 16;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const CONTENT_TYPE_GRPC: &str = "application/grpc";

/// gRPC status codes, as numbered by the gRPC spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// A status this module has no name for.
    Unknown = 2,
    /// The request is malformed or fails validation.
    InvalidArgument = 3,
    /// The call ran out of time.
    DeadlineExceeded = 4,
    /// Nothing with that name.
    NotFound = 5,
    /// It exists already.
    AlreadyExists = 6,
    /// Authenticated, but not allowed to do this.
    PermissionDenied = 7,
    /// A message over the size limit.
    ResourceExhausted = 8,
    /// No such method.
    Unimplemented = 12,
    /// The service failed.
    Internal = 13,
    /// A dependency is down; the call may be retried.
    Unavailable = 14,
    /// No credentials, or credentials that do not check out.
    Unauthenticated = 16,
}

impl Code {
    /// The code numbered `number`; [`Code::Unknown`] for one not listed.
    fn from_number(number: u16) -> Self {
        [
            Code::Ok,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::Unauthenticated,
        ]
        .into_iter()
        .find(|code| *code as u16 == number)
        .unwrap_or(Code::Unknown)
    }
}

/// A call's outcome when it is not OK: a code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The gRPC status code.
    pub code: Code,
    /// What went wrong, for people (sent as `grpc-message`).
    pub message: String,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }

    /// The trailers that end a call with this status.
    fn trailers(&self) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from(self.code as u16));
        if !self.message.is_empty()
            && let Ok(message) = HeaderValue::from_str(&percent_encode(&self.message))
        {
            trailers.insert(GRPC_MESSAGE, message);
        }
        trailers
    }
}

/// Maps the JSON API's errors onto gRPC statuses, so both faces of a
/// service say the same thing with the same message.
impl From<crate::api::ApiError> for Status {
    fn from(error: crate::api::ApiError) -> Self {
        let code = match error.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        };
        Status::new(code, error.message)
    }
}

/// Whether `request` is a gRPC call (by its content type).
pub fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(CONTENT_TYPE_GRPC.as_bytes()))
}

/// The method a gRPC path names: `/pkg.Service/Method` → `("pkg.Service",
/// "Method")`.
pub fn method(request: &Request) -> Option<(&str, &str)> {
    request.uri().path().strip_prefix('/')?.split_once('/')
}

/// Reads the one request message of a unary (or server-streaming) call.
pub async fn read_message<M: Message + Default>(request: Request) -> Result<M, Status> {
    let body =
        request.into_body().bytes().await.map_err(|error| {
            Status::new(Code::Internal, format!("reading the request: {error:?}"))
        })?;
    decode_one(&body)
}

/// The one message in `body`: a 5-byte prefix (uncompressed) and exactly the
/// bytes it announces.
pub fn decode_one<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    let invalid = |why: &str| Status::new(Code::InvalidArgument, why);
    if body.len() < PREFIX_BYTES {
        return Err(invalid("the request holds no message"));
    }
    let (prefix, message) = body.split_at(PREFIX_BYTES);
    if prefix[0] != 0 {
        return Err(Status::new(
            Code::Unimplemented,
            "compressed messages are not supported",
        ));
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!("request message over {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    if length != message.len() {
        return Err(invalid("the request must hold exactly one message"));
    }
    M::decode(message).map_err(|error| invalid(&format!("not a valid message: {error}")))
}

/// The messages of a client-streaming (or bidirectional) call, read one by
/// one as they arrive; whole messages only are decoded, and none is held
/// longer than it takes to decode it.
pub struct Incoming {
    chunks: LocalBoxStream<'static, Result<Bytes, String>>,
    buffer: BytesMut,
}

impl Incoming {
    /// The messages of `request`'s body.
    pub fn new(request: Request) -> Self {
        let chunks = request
            .into_body()
            .stream()
            .map(|chunk| chunk.map_err(|error| format!("{error:?}")));
        Incoming {
            chunks: chunks.boxed_local(),
            buffer: BytesMut::new(),
        }
    }

    /// The next message, `None` once the client has sent its last one.
    pub async fn next<M: Message + Default>(&mut self) -> Option<Result<M, Status>> {
        loop {
            if let Some(framed) = self.whole_message() {
                return Some(framed.and_then(|framed| decode_one(&framed)));
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => {
                    let message = format!("reading the request: {error}");
                    return Some(Err(Status::new(Code::Internal, message)));
                }
                None if self.buffer.is_empty() => return None,
                None => {
                    let status = Status::new(Code::InvalidArgument, "the last message is cut off");
                    return Some(Err(status));
                }
            }
        }
    }

    /// The first whole framed message in the buffer, if one is there.
    fn whole_message(&mut self) -> Option<Result<Bytes, Status>> {
        let prefix = self.buffer.get(..PREFIX_BYTES)?;
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if length > MAX_MESSAGE_BYTES {
            let message = format!("request message over {MAX_MESSAGE_BYTES} bytes");
            return Some(Err(Status::new(Code::ResourceExhausted, message)));
        }
        (self.buffer.len() >= PREFIX_BYTES + length)
            .then(|| Ok(self.buffer.split_to(PREFIX_BYTES + length).freeze()))
    }
}

/// `message` behind its 5-byte prefix.
pub fn encode(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(PREFIX_BYTES + length);
    framed.put_u8(0);
    // Messages come from this service and stay far below 4 GiB.
    framed.put_u32(length as u32);
    // `BytesMut` grows as needed, so encoding cannot run out of room.
    let _ = message.encode(&mut framed);
    framed.freeze()
}

/// The reply to a unary call: the message and an OK status, or the status
/// alone (trailers-only).
pub fn unary(result: Result<impl Message, Status>) -> Reply {
    unary_with_trailers(result, HeaderMap::new())
}

/// Like [`unary`], with custom metadata sent in the trailers beside the
/// status.
pub fn unary_with_trailers(result: Result<impl Message, Status>, metadata: HeaderMap) -> Reply {
    match result {
        Ok(message) => {
            let mut trailers = metadata;
            trailers.extend(Status::new(Code::Ok, "").trailers());
            let frames = [Frame::data(encode(&message)), Frame::trailers(trailers)];
            reply(StreamBody::new(futures::stream::iter(
                frames.map(Ok::<_, Infallible>),
            )))
        }
        Err(status) => status_only(&status),
    }
}

/// A trailers-only reply: the status in the headers, no messages.
pub fn status_only(status: &Status) -> Reply {
    let mut response = reply(http_body_util::Empty::new());
    response.headers_mut().extend(status.trailers());
    response
}

/// A server-streaming reply, and the sender its messages go through.
pub fn server_stream() -> (Sender, Reply) {
    let (frames, receiver) = mpsc::channel(STREAM_BUFFER);
    (
        Sender { frames },
        reply(StreamBody::new(receiver.map(Ok::<_, Infallible>))),
    )
}

/// Sends the messages of a server-streaming reply; [`Sender::finish`] ends
/// the stream with a status. A stream dropped unfinished ends as `INTERNAL`
/// on the client's side (no status trailers).
pub struct Sender {
    frames: mpsc::Sender<Frame<Bytes>>,
}

/// The client has gone away; stop sending.
#[derive(Debug)]
pub struct Gone;

impl Sender {
    /// Sends one message as soon as the client takes it.
    pub async fn send(&mut self, message: &impl Message) -> Result<(), Gone> {
        self.frames
            .send(Frame::data(encode(message)))
            .await
            .map_err(|_| Gone)
    }

    /// Ends the stream with `status` (OK when every message was sent).
    pub async fn finish(mut self, status: Result<(), Status>) {
        let status = status.err().unwrap_or(Status::new(Code::Ok, ""));
        let _ = self.frames.send(Frame::trailers(status.trailers())).await;
    }
}

/// Calls the unary method `url` names (`http://host/pkg.Service/Method`)
/// with `message`, passing the caller's `authorization` on as metadata.
/// The host must be in the component's `allowed_outbound_hosts` as
/// `http+h2c://host`: gRPC needs HTTP/2. A failure is the callee's status,
/// or `UNAVAILABLE` when it could not be reached.
pub async fn call<M: Message + Default>(
    url: &str,
    message: &impl Message,
    authorization: Option<&HeaderValue>,
) -> Result<M, Status> {
    let mut request = http::Request::post(url)
        .header(header::CONTENT_TYPE, CONTENT_TYPE_GRPC)
        .header(header::TE, "trailers");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(spin_sdk::http::FullBody::new(encode(message)))
        .map_err(|error| Status::new(Code::Internal, format!("calling {url}: {error}")))?;
    let unreachable =
        |error: String| Status::new(Code::Unavailable, format!("calling {url}: {error}"));
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|error| unreachable(format!("{error:?}")))?;
    if response.status() != StatusCode::OK {
        return Err(unreachable(format!("HTTP {}", response.status())));
    }
    let (head, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| unreachable(format!("reading the reply: {error:?}")))?;
    // A trailers-only reply carries its status in the headers.
    let trailers = body.trailers().cloned().unwrap_or(head.headers);
    status_of(&trailers)?;
    decode_one(&body.to_bytes()).map_err(|status| {
        Status::new(
            Code::Internal,
            format!("the reply of {url}: {}", status.message),
        )
    })
}

/// The status `trailers` end a call with: `Ok(())` for OK, and `INTERNAL`
/// when they hold none.
fn status_of(trailers: &HeaderMap) -> Result<(), Status> {
    let Some(code) = trailers.get(GRPC_STATUS) else {
        return Err(Status::new(
            Code::Internal,
            "the reply carries no grpc-status",
        ));
    };
    let code = code
        .to_str()
        .ok()
        .and_then(|code| code.parse().ok())
        .map_or(Code::Unknown, Code::from_number);
    if code == Code::Ok {
        return Ok(());
    }
    let message = trailers
        .get(GRPC_MESSAGE)
        .map(|message| percent_encoding::percent_decode(message.as_bytes()).decode_utf8_lossy())
        .unwrap_or_default();
    Err(Status::new(code, message))
}

fn reply<B>(body: B) -> Reply
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let mut response = http::Response::new(body.map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_GRPC),
    );
    response
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and
/// `%` itself.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Note {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn a_message_survives_its_framing() {
        let note = Note {
            text: "hello".into(),
        };
        let framed = encode(&note);
        assert_eq!(framed[0], 0);
        assert_eq!(decode_one::<Note>(&framed), Ok(note));
    }

    #[test]
    fn a_truncated_or_padded_body_is_invalid() {
        let framed = encode(&Note { text: "hi".into() });
        let short = decode_one::<Note>(&framed[..framed.len() - 1]).unwrap_err();
        assert_eq!(short.code, Code::InvalidArgument);
        let mut long = framed.to_vec();
        long.push(0);
        assert_eq!(
            decode_one::<Note>(&long).unwrap_err().code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn a_status_is_read_back_from_the_trailers_it_makes() {
        let sent = Status::new(Code::NotFound, "no user 42, ça va");
        assert_eq!(status_of(&sent.trailers()), Err(sent));
        assert_eq!(status_of(&Status::new(Code::Ok, "").trailers()), Ok(()));
        let mut odd = HeaderMap::new();
        odd.insert(GRPC_STATUS, HeaderValue::from_static("10"));
        assert_eq!(status_of(&odd).unwrap_err().code, Code::Unknown);
        assert_eq!(
            status_of(&HeaderMap::new()).unwrap_err().code,
            Code::Internal
        );
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% off, ça va"), "50%25 off, %C3%A7a va");
    }
}
