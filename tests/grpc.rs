//! gRPC to components end to end: a real gRPC client (tonic, h2c) against
//! the real binary serving the `grpc-echo` guest. Statuses and trailers pass
//! between client and guest, replies stream, `grpc-timeout` is the call's
//! deadline, and what the host says itself (overload, trap) is a gRPC status.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use http_body_util::BodyExt;
use support::{App, Spindle, guest_wasm};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

/// The guest's `EchoRequest`, as its crate declares it.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(uint32, tag = "2")]
    delay_ms: u32,
}

/// The guest's `EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
}

/// The guest's `CountRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(uint32, tag = "1")]
    count: u32,
    #[prost(uint32, tag = "2")]
    interval_ms: u32,
}

fn manifest(max_concurrency: u32) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "grpc"

[[trigger.http]]
route = "/spindle.test.echo.v1.Echo/..."
component = "echo"

[component.echo]
source = "{}"
[component.echo.tool.spindle]
max_concurrency = {max_concurrency}
timeout = "10s"
"#,
        guest_wasm("grpc-echo").display()
    )
}

/// A gRPC client over h2c to the app listener.
async fn client(spindle: &Spindle) -> tonic::client::Grpc<Channel> {
    let channel = Endpoint::from_shared(spindle.base_url().to_string())
        .expect("the base URL is a URI")
        .connect()
        .await
        .expect("connecting with HTTP/2 prior knowledge");
    tonic::client::Grpc::new(channel)
}

/// Calls a unary method of the echo service.
async fn call<Req, Reply>(
    grpc: &mut tonic::client::Grpc<Channel>,
    method: &'static str,
    request: Request<Req>,
) -> Result<tonic::Response<Reply>, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Reply: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await.expect("the channel is ready");
    grpc.unary(
        request,
        PathAndQuery::from_static(method),
        ProstCodec::default(),
    )
    .await
}

const SAY: &str = "/spindle.test.echo.v1.Echo/Say";
const SLOW: &str = "/spindle.test.echo.v1.Echo/Slow";
const COUNT: &str = "/spindle.test.echo.v1.Echo/Count";
const TRAP: &str = "/spindle.test.echo.v1.Echo/Trap";

fn echo(message: &str, delay_ms: u32) -> Request<EchoRequest> {
    Request::new(EchoRequest {
        message: message.into(),
        delay_ms,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unary_call_gets_its_reply_and_the_guests_trailers() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let mut grpc = client(&spindle).await;

    let reply: tonic::Response<EchoReply> = call(&mut grpc, SAY, echo("hello", 0))
        .await
        .expect("Say succeeds");
    // tonic merges the trailers into the metadata of a unary reply.
    assert_eq!(
        reply.metadata().get("echo-length").map(|v| v.to_str().ok()),
        Some(Some("5")),
        "the guest's trailer: {:?}",
        reply.metadata()
    );
    assert_eq!(reply.into_inner().message, "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_error_status_reaches_the_client_with_its_message() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let mut grpc = client(&spindle).await;

    let status = call::<_, EchoReply>(&mut grpc, SAY, echo("", 0))
        .await
        .expect_err("an empty message is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "message must not be empty");

    let status = call::<_, EchoReply>(&mut grpc, "/spindle.test.echo.v1.Echo/Nope", echo("x", 0))
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_trailers_reach_the_guest() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let address = spindle.base_url().trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connecting to the app listener");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake");
    tokio::spawn(connection);

    let message = prost::Message::encode_to_vec(&EchoRequest {
        message: "hi".into(),
        delay_ms: 0,
    });
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("echo-request-trailer", "sent-last".parse().unwrap());
    let frames = [
        hyper::body::Frame::data(bytes::Bytes::from(framed)),
        hyper::body::Frame::trailers(trailers),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(
        frames.map(Ok::<_, std::convert::Infallible>),
    ));
    let request = http::Request::post(format!("http://{address}{SAY}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("the body");
    let trailers = body.trailers().expect("response trailers").clone();
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    assert_eq!(
        trailers["echo-request-trailer"], "sent-last",
        "the guest saw the request's trailer: {trailers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_stream_delivers_each_message_as_it_is_sent() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let mut grpc = client(&spindle).await;
    grpc.ready().await.expect("the channel is ready");

    let started = Instant::now();
    let request = Request::new(CountRequest {
        count: 3,
        interval_ms: 700,
    });
    let response = grpc
        .server_streaming(
            request,
            PathAndQuery::from_static(COUNT),
            ProstCodec::<CountRequest, EchoReply>::default(),
        )
        .await
        .expect("Count starts");
    let mut stream = response.into_inner();
    let mut arrivals = Vec::new();
    while let Some(reply) = stream.next().await {
        let reply = reply.expect("every message arrives");
        arrivals.push((reply.message, started.elapsed()));
    }
    let messages: Vec<&str> = arrivals.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(messages, ["1", "2", "3"]);
    let (first, last) = (arrivals[0].1, arrivals[2].1);
    assert!(
        last >= Duration::from_millis(1400),
        "the stream lasts two intervals: {arrivals:?}"
    );
    assert!(
        first + Duration::from_millis(1000) < last,
        "the first message arrived long before the stream ended, not buffered: {arrivals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_timeout_shorter_than_the_call_gives_deadline_exceeded() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let mut grpc = client(&spindle).await;

    // tonic's channel would end the call itself at the deadline; this
    // client keeps no timer, so only the host can.
    let connector =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<tonic::body::Body>();
    let origin = spindle.base_url().parse().expect("the base URL is a URI");
    let mut untimed = tonic::client::Grpc::with_origin(connector, origin);
    untimed.ready().await.expect("the client is ready");
    let mut request = echo("late", 3_000);
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().expect("a metadata value"));
    let started = Instant::now();
    let status = untimed
        .unary::<_, EchoReply, _>(
            request,
            PathAndQuery::from_static(SLOW),
            ProstCodec::default(),
        )
        .await
        .expect_err("the guest takes longer than the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "answered at the deadline, not when the guest finished: {:?}",
        started.elapsed()
    );

    let reply: tonic::Response<EchoReply> = call(&mut grpc, SLOW, echo("on time", 50))
        .await
        .expect("a call within the component's timeout succeeds");
    assert_eq!(reply.into_inner().message, "on time");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_answers_unavailable_when_the_component_is_overloaded() {
    let app = App::new(&manifest(1));
    let spindle = app.start();
    let grpc = client(&spindle).await;

    let calls = (0..20).map(|_| {
        let mut grpc = grpc.clone();
        async move { call::<_, EchoReply>(&mut grpc, SLOW, echo("busy", 300)).await }
    });
    let outcomes = join_all(calls).await;
    let served = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let unavailable: Vec<_> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .collect();
    assert!(served >= 1, "the admitted calls are served: {outcomes:?}");
    assert!(
        !unavailable.is_empty(),
        "20 calls at once against a limit of 1 must turn some away"
    );
    for status in unavailable {
        // The host's own status (HTTP 200 + grpc-status), not a bare 503
        // that the client would only guess at.
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            status.message(),
            "the component is at its concurrency limit; retry later"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_answers_internal_and_the_component_keeps_serving() {
    let app = App::new(&manifest(16));
    let spindle = app.start();
    let mut grpc = client(&spindle).await;

    let status = call::<_, EchoReply>(&mut grpc, TRAP, echo("boom", 0))
        .await
        .expect_err("the guest traps");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "the component failed");

    let reply: tonic::Response<EchoReply> = call(&mut grpc, SAY, echo("still here", 0))
        .await
        .expect("the next call is served");
    assert_eq!(reply.into_inner().message, "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_http1_is_refused_with_a_clear_error() {
    let app = App::new(&manifest(16));
    let spindle = app.start();

    let reply = spindle
        .send_with_headers(
            reqwest::Method::POST,
            SAY,
            &[("content-type", "application/grpc")],
            Some(String::new()),
        )
        .await;
    assert_eq!(reply.status, 505, "{reply:?}");
    assert!(reply.body.contains("gRPC needs HTTP/2"), "{reply:?}");
}
