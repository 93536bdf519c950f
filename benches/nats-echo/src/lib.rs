//! Benchmark guest for the NATS trigger: replies `echo: <body>` to each
//! message's reply subject. `benches/load nats-echo` does the same natively.

use spindle_sdk::messaging;

spindle_sdk::message_handler_bindings!();

use exports::spindle::platform::message_handler::{Guest, HandlerError, Message};

struct Echo;

impl Guest for Echo {
    async fn handle(message: Message) -> Result<(), HandlerError> {
        let reply_to = message
            .reply_to
            .ok_or_else(|| HandlerError::Reject("no reply subject".into()))?;
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&message.body);
        messaging::publish(reply_to, reply, Vec::new())
            .await
            .map_err(|error| HandlerError::Reject(format!("{error:?}")))
    }
}

export!(Echo);
