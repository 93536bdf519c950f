//! Checks `fermyon:spin/mqtt@2.0.0` as an app built with this spin-sdk uses
//! it: `POST /` publishes the body on the broker named by `x-mqtt-address`
//! (topic `x-mqtt-topic`, QoS `x-mqtt-qos` 0, 1 or 2, optional
//! `x-mqtt-username` and `x-mqtt-password`) and answers 200 `ok` once the
//! host has the broker's acknowledgement, or 500 with what went wrong. An
//! address the host refuses at `open` answers 403 with the interface's
//! error name; the test subscribes on the broker to see the message arrive.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::mqtt::{Connection, Error, Qos};

#[http_component]
fn handle(request: Request) -> Response {
    let header = |name: &str| {
        request
            .header(name)
            .and_then(|value| value.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let qos = match header("x-mqtt-qos").as_str() {
        "0" => Qos::AtMostOnce,
        "2" => Qos::ExactlyOnce,
        _ => Qos::AtLeastOnce,
    };
    let connection = match Connection::open(
        &header("x-mqtt-address"),
        &header("x-mqtt-username"),
        &header("x-mqtt-password"),
        30,
    ) {
        Ok(connection) => connection,
        Err(error) => return Response::new(403, name(&error)),
    };
    match connection.publish(&header("x-mqtt-topic"), request.body(), qos) {
        Ok(()) => Response::new(200, "ok"),
        Err(error) => Response::new(500, format!("publish: {}: {error:?}", name(&error))),
    }
    .into_response()
}

/// The interface's name for the error's case.
fn name(error: &Error) -> &'static str {
    match error {
        Error::InvalidAddress => "invalid-address",
        Error::TooManyConnections => "too-many-connections",
        Error::ConnectionFailed(_) => "connection-failed",
        Error::Other(_) => "other",
    }
}
