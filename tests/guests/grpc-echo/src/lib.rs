//! Test guest: `spindle.test.echo.v1.Echo`, a gRPC service built on
//! demo-kit's framing, for the host's gRPC tests.
//!
//! - `Say`: echoes the message with an `echo-length` trailer (and the
//!   request's `echo-request-trailer` trailer, if it has one); an empty
//!   message is `INVALID_ARGUMENT`;
//! - `Count`: streams `count` replies, `interval_ms` apart;
//! - `Slow`: answers after `delay_ms`;
//! - `Trap`: panics (a wasm trap).
//!
//! The messages are prost types declared here; the test declares the same.

use std::time::Duration;

use demo_kit::grpc::{self, Code, Reply, Status};
use http_body_util::BodyExt;
use spin_sdk::http::{HeaderMap, HeaderValue, Request};
use spin_sdk::http_service;

/// `Say`, `Slow` and `Trap`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// What to echo.
    #[prost(string, tag = "1")]
    pub message: String,
    /// How long `Slow` waits before answering.
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
}

/// Every method's reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The echoed message, or the number counted.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// `Count`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    /// How many replies to stream.
    #[prost(uint32, tag = "1")]
    pub count: u32,
    /// The pause before each reply after the first.
    #[prost(uint32, tag = "2")]
    pub interval_ms: u32,
}

const SERVICE: &str = "spindle.test.echo.v1.Echo";

/// A request trailer `Say` sends back in its own trailers.
const REQUEST_TRAILER: &str = "echo-request-trailer";

#[http_service]
async fn serve(request: Request) -> Reply {
    let method = match grpc::method(&request) {
        Some((SERVICE, method)) => method.to_string(),
        _ => return grpc::status_only(&Status::new(Code::Unimplemented, "no such service")),
    };
    match method.as_str() {
        "Say" => say(request).await,
        "Count" => count(request).await,
        "Slow" => grpc::unary(slow(request).await),
        "Trap" => panic!("the guest asked for a trap"),
        _ => grpc::status_only(&Status::new(Code::Unimplemented, "no such method")),
    }
}

async fn say(request: Request) -> Reply {
    // Read whole (not with `grpc::read_message`) to keep the trailers.
    let body = match request.into_body().collect().await {
        Ok(body) => body,
        Err(error) => {
            let status = Status::new(Code::Internal, format!("reading the request: {error:?}"));
            return grpc::status_only(&status);
        }
    };
    let mut trailers = HeaderMap::new();
    if let Some(value) = body.trailers().and_then(|t| t.get(REQUEST_TRAILER)) {
        trailers.insert(REQUEST_TRAILER, value.clone());
    }
    let echo: EchoRequest = match grpc::decode_one(&body.to_bytes()) {
        Ok(echo) => echo,
        Err(status) => return grpc::status_only(&status),
    };
    if echo.message.is_empty() {
        return grpc::status_only(&Status::new(
            Code::InvalidArgument,
            "message must not be empty",
        ));
    }
    trailers.insert("echo-length", HeaderValue::from(echo.message.len()));
    let reply = EchoReply {
        message: echo.message,
    };
    grpc::unary_with_trailers(Ok(reply), trailers)
}

async fn slow(request: Request) -> Result<EchoReply, Status> {
    let echo: EchoRequest = grpc::read_message(request).await?;
    spin_sdk::time::sleep(Duration::from_millis(echo.delay_ms.into())).await;
    Ok(EchoReply {
        message: echo.message,
    })
}

async fn count(request: Request) -> Reply {
    let wanted: CountRequest = match grpc::read_message(request).await {
        Ok(wanted) => wanted,
        Err(status) => return grpc::status_only(&status),
    };
    let (mut sender, reply) = grpc::server_stream();
    spin_sdk::wasip3::spawn(async move {
        for n in 1..=wanted.count {
            if n > 1 {
                spin_sdk::time::sleep(Duration::from_millis(wanted.interval_ms.into())).await;
            }
            let message = EchoReply {
                message: n.to_string(),
            };
            if sender.send(&message).await.is_err() {
                return;
            }
        }
        sender.finish(Ok(())).await;
    });
    reply
}
